//! The closed sets of words the schema stores in TEXT columns (each has a
//! CHECK constraint), as enums: a typo is a compile error, not a row that
//! matches nothing.

use super::db::{FromSql, FromSqlError, ToSql, Value};

/// An enum stored as one of a fixed set of words.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order (for filters and pickers;
            /// not every set is offered in one).
            #[allow(dead_code)]
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_value(&self) -> Value {
                Value::Text(self.as_str().to_string())
            }
        }

        impl FromSql for $name {
            fn from_value(v: &Value) -> Result<Self, FromSqlError> {
                let Value::Text(s) = v else { return Err(FromSqlError::invalid("text", v)) };
                $name::parse(s).ok_or_else(|| FromSqlError::Other(format!("unexpected {}: {s:?}", stringify!($name))))
            }
        }
    };
}

text_enum!(
    /// `users.status`.
    UserStatus { Active = "active", Banned = "banned" }
);

text_enum!(
    /// `users.role`: admins may sign in to the operator console.
    Role { User = "user", Admin = "admin" }
);

text_enum!(
    /// `api_keys.status` and `redemption_codes.status`.
    Switch { Active = "active", Disabled = "disabled" }
);

text_enum!(
    /// `subscriptions.status`.
    SubscriptionStatus { Active = "active", Replaced = "replaced", Revoked = "revoked" }
);

text_enum!(
    /// `ledger.account` and what a code grants (`redemption_codes.kind`).
    Account { Credits = "credits", Plan = "plan" }
);

text_enum!(
    /// `orders.status`: where an order stands.
    OrderStatus {
        /// Created; the user was sent to the provider.
        Pending = "pending",
        /// The provider confirmed the payment and the account was credited.
        Paid = "paid",
        /// The provider reported a failure, or its report did not match the order.
        Failed = "failed",
        /// Nobody paid in time.
        Expired = "expired",
        /// An operator refunded it and took the credits back.
        Refunded = "refunded",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_store_and_refuses_strangers() {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::store::open(dir.path().join("db")).unwrap();
        for s in OrderStatus::ALL {
            let back: OrderStatus = c.query_row("SELECT ?1", [s], |r| r.get(0)).unwrap();
            assert_eq!(back, *s);
        }
        let bad: crate::store::db::Result<UserStatus> = c.query_row("SELECT 'deleted'", (), |r| r.get(0));
        assert!(bad.is_err());
        assert_eq!(serde_json::to_string(&Role::Admin).unwrap(), "\"admin\"");
    }
}
