//! One dynamic value for both backends, the way SQLite sees every cell: the
//! store's code reads and writes Rust types, and each backend maps them to
//! what its columns hold (see `postgres::Param` for the typed side).

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Integer(_) => "an integer",
            Value::Real(_) => "a real",
            Value::Text(_) => "text",
            Value::Blob(_) => "a blob",
        }
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_string())
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Integer(i)
    }
}

/// Why a cell could not become the Rust type asked for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FromSqlError {
    #[error("expected {expected}, found {found}")]
    InvalidType { expected: &'static str, found: &'static str },
    #[error("{0} is out of range")]
    OutOfRange(i64),
    #[error("{0}")]
    Other(String),
}

impl FromSqlError {
    pub fn invalid(expected: &'static str, v: &Value) -> FromSqlError {
        FromSqlError::InvalidType { expected, found: v.kind() }
    }
}

/// A Rust value that can be a statement's parameter.
pub trait ToSql {
    fn to_value(&self) -> Value;
}

/// A Rust value that can be read from a cell.
pub trait FromSql: Sized {
    fn from_value(v: &Value) -> Result<Self, FromSqlError>;
}

impl ToSql for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl<T: ToSql + ?Sized> ToSql for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl<T: ToSql> ToSql for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToSql::to_value)
    }
}

impl ToSql for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}

impl ToSql for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToSql for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToSql for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl ToSql for bool {
    fn to_value(&self) -> Value {
        Value::Integer(*self as i64)
    }
}

impl ToSql for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}

macro_rules! integers {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_value(&self) -> Value {
                // Wider than i64 (u64, usize) saturates: no count or id gets there.
                Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }

        impl FromSql for $t {
            fn from_value(v: &Value) -> Result<Self, FromSqlError> {
                match v {
                    Value::Integer(i) => <$t>::try_from(*i).map_err(|_| FromSqlError::OutOfRange(*i)),
                    other => Err(FromSqlError::invalid("an integer", other)),
                }
            }
        }
    )*};
}

integers!(i64, i32, u32, u64, usize, u16, u8);

impl FromSql for Value {
    fn from_value(v: &Value) -> Result<Self, FromSqlError> {
        Ok(v.clone())
    }
}

impl<T: FromSql> FromSql for Option<T> {
    fn from_value(v: &Value) -> Result<Self, FromSqlError> {
        match v {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

impl FromSql for String {
    fn from_value(v: &Value) -> Result<Self, FromSqlError> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            other => Err(FromSqlError::invalid("text", other)),
        }
    }
}

impl FromSql for Vec<u8> {
    fn from_value(v: &Value) -> Result<Self, FromSqlError> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.as_bytes().to_vec()),
            other => Err(FromSqlError::invalid("a blob", other)),
        }
    }
}

impl FromSql for bool {
    fn from_value(v: &Value) -> Result<Self, FromSqlError> {
        match v {
            Value::Integer(i) => Ok(*i != 0),
            other => Err(FromSqlError::invalid("an integer", other)),
        }
    }
}

impl FromSql for f64 {
    fn from_value(v: &Value) -> Result<Self, FromSqlError> {
        match v {
            Value::Real(f) => Ok(*f),
            Value::Integer(i) => Ok(*i as f64),
            other => Err(FromSqlError::invalid("a number", other)),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Real(r) => write!(f, "{r}"),
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Blob(b) => write!(f, "<{} bytes>", b.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_convert_within_range_only() {
        assert_eq!(u32::from_value(&Value::Integer(7)), Ok(7));
        assert_eq!(u32::from_value(&Value::Integer(-1)), Err(FromSqlError::OutOfRange(-1)));
        assert!(matches!(i64::from_value(&Value::Text("1".into())), Err(FromSqlError::InvalidType { .. })));
        assert_eq!(Option::<i64>::from_value(&Value::Null), Ok(None));
        assert_eq!(u64::MAX.to_value(), Value::Integer(i64::MAX));
        assert_eq!(Some("a").to_value(), Value::Text("a".into()));
        assert_eq!(None::<i64>.to_value(), Value::Null);
    }
}
