//! Reads the `usage` of a relayed JSON response straight from its bytes.
//!
//! Every non-streaming response passes through here for billing. Parsing the
//! `usage` object into a `serde_json::Value` allocated a map and a string per
//! key — more instructions per request than the whole auth and routing path —
//! so this walks the body once, skips everything but `usage`, and keeps only
//! its integers (borrowing the keys from the body), one or two keys deep: all
//! any API's usage readers look at.

use super::UsageSource;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// The integer members of a `usage` object and of the objects inside it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UsageFields<'a> {
    object: bool,
    /// `(parent key or "", key, value when a non-negative integer)`, in body order.
    leaves: Vec<(Cow<'a, str>, Cow<'a, str>, Option<u64>)>,
}

impl<'a> UsageFields<'a> {
    /// The `usage` member of a JSON object body. None when the body is not one
    /// JSON object or its `usage` is missing or null.
    pub fn from_body(body: &'a [u8]) -> Option<UsageFields<'a>> {
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return None;
        }
        match Self::by_key(body) {
            Some(found) => found,
            None => ChatChunk::from_body(body)?.usage,
        }
    }

    /// The value after the last `"usage":` key, parsed alone: every API puts
    /// a whole answer's usage after its content, so the content (most of the
    /// body) is not parsed. An unescaped `"usage"` can only be a key or a
    /// string value; anything unexpected (an escaped match, a string value, a
    /// value that is not an object) returns None and the caller parses the
    /// whole body.
    fn by_key(body: &'a [u8]) -> Option<Option<UsageFields<'a>>> {
        let at = memchr::memmem::rfind(body, b"\"usage\"")?;
        let backslashes = body[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 1 {
            return None;
        }
        let rest = body[at + 7..].trim_ascii_start().strip_prefix(b":")?.trim_ascii_start();
        // A usage is an object (or null); `"usage"` before anything else is
        // some other key, or a key of another object.
        if !rest.starts_with(b"{") && !rest.starts_with(b"null") {
            return None;
        }
        let mut de = serde_json::Deserializer::from_slice(rest);
        Option::<UsageFields>::deserialize(&mut de).ok()
    }
}

/// The parts of a response body or stream chunk that billing looks at:
/// `usage` (any API) and, for chat, whether there are `choices`.
#[derive(serde::Deserialize)]
pub struct ChatChunk<'a> {
    #[serde(default, borrow)]
    pub usage: Option<UsageFields<'a>>,
    #[serde(default)]
    choices: Option<Count>,
}

impl<'a> ChatChunk<'a> {
    /// None when the body is not one JSON object.
    pub fn from_body(body: &'a [u8]) -> Option<ChatChunk<'a>> {
        // A derived struct would also accept a JSON array.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return None;
        }
        serde_json::from_slice(body).ok()
    }

    /// No `choices`, or not an array, or an empty one: the usage-only chunk
    /// of a chat stream.
    pub fn no_choices(&self) -> bool {
        self.choices.as_ref().is_none_or(|c| c.0.is_none_or(|n| n == 0))
    }
}

/// The length of an array value; None for anything else (skipped).
struct Count(Option<usize>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Count(match d.deserialize_any(Seeded(Level::Leaf))? {
            Found::Array(n) => Some(n),
            _ => None,
        }))
    }
}

impl UsageSource for UsageFields<'_> {
    fn is_object(&self) -> bool {
        self.object
    }
    fn num(&self, path: &[&str]) -> Option<u64> {
        let (parent, key) = match path {
            [key] => ("", *key),
            [parent, key] => (*parent, *key),
            _ => return None,
        };
        // The last occurrence wins, as in a parsed tree.
        self.leaves.iter().rev().find(|(p, k, _)| p == parent && k == key).and_then(|(_, _, v)| *v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for UsageFields<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UsageVisitor)
    }
}

/// Reads `usage` itself: its members are recorded.
struct UsageVisitor;

/// Which level below `usage` a value sits at.
#[derive(Clone, Copy)]
enum Level {
    /// A member of `usage`: an integer, or an object whose members are recorded.
    Member,
    /// Two levels down: only an integer counts.
    Leaf,
}

/// What a value below `usage` turned out to be.
enum Found<'de> {
    Int(u64),
    Object(Vec<(Cow<'de, str>, Option<u64>)>),
    /// An array of this many elements (skipped).
    Array(usize),
    Other,
}

impl<'de> Visitor<'de> for UsageVisitor {
    type Value = UsageFields<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = UsageFields { object: true, leaves: Vec::new() };
        while let Some(Key(key)) = map.next_key::<Key>()? {
            match map.next_value_seed(Seeded(Level::Member))? {
                Found::Int(v) => fields.leaves.push((Cow::Borrowed(""), key, Some(v))),
                Found::Object(inner) => {
                    fields.leaves.extend(inner.into_iter().map(|(k, v)| (key.clone(), k, v)));
                }
                Found::Array(_) | Found::Other => fields.leaves.push((Cow::Borrowed(""), key, None)),
            }
        }
        Ok(fields)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(UsageFields::default())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(UsageFields::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(UsageFields::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(UsageFields::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(UsageFields::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(UsageFields::default())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(UsageFields::default())
    }
}

/// A member or leaf value, read according to its level.
struct Seeded(Level);

impl<'de> serde::de::DeserializeSeed<'de> for Seeded {
    type Value = Found<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seeded {
    type Value = Found<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Found::Int(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        match self.0 {
            Level::Member => {
                let mut inner = Vec::new();
                while let Some(Key(key)) = map.next_key::<Key>()? {
                    let v = match map.next_value_seed(Seeded(Level::Leaf))? {
                        Found::Int(v) => Some(v),
                        _ => None,
                    };
                    inner.push((key, v));
                }
                Ok(Found::Object(inner))
            }
            Level::Leaf => {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Found::Other)
            }
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut n = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(Found::Array(n))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Found::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Found::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Found::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Found::Other)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Found::Other)
    }
}

/// An object key, borrowed from the body unless it had to be unescaped.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::Usage;
    use serde_json::Value;

    /// The body reader and the tree reader agree, whatever the body.
    fn same(body: &str) {
        let tree =
            serde_json::from_str::<Value>(body).ok().filter(Value::is_object).and_then(|v| v.get("usage").cloned());
        let tree = tree.filter(|u| !u.is_null());
        let fields = UsageFields::from_body(body.as_bytes());
        assert_eq!(fields.is_some(), tree.is_some(), "{body}");
        if let (Some(f), Some(t)) = (fields, tree) {
            assert_eq!(Usage::from_openai_chat(&f), Usage::from_openai_chat(&t), "{body}");
            assert_eq!(Usage::from_responses(&f), Usage::from_responses(&t), "{body}");
            assert_eq!(Usage::from_anthropic(&f), Usage::from_anthropic(&t), "{body}");
        }
    }

    #[test]
    fn usage_only_chat_chunk() {
        let no_choices = |body: &str| ChatChunk::from_body(body.as_bytes()).map(|c| c.no_choices());
        assert_eq!(no_choices(r#"{"choices":[],"usage":{"prompt_tokens":1}}"#), Some(true));
        assert_eq!(no_choices(r#"{"usage":{"prompt_tokens":1}}"#), Some(true));
        assert_eq!(no_choices(r#"{"choices":null,"usage":{}}"#), Some(true));
        assert_eq!(no_choices(r#"{"choices":"x","usage":{}}"#), Some(true));
        assert_eq!(no_choices(r#"{"choices":[{"index":0,"delta":{}}],"usage":{}}"#), Some(false));
        assert_eq!(no_choices(r#"[{"choices":[]}]"#), None);
    }

    #[test]
    fn agrees_with_the_tree_reader() {
        for body in [
            r#"{"id":"x","choices":[{"message":{"content":"usage: {\"prompt_tokens\": 9}"}}],"usage":{"prompt_tokens":19,"completion_tokens":16,"total_tokens":35,"prompt_tokens_details":{"cached_tokens":3,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":7}}}"#,
            r#"{"usage":{"input_tokens":500,"input_tokens_details":{"cached_tokens":128,"cache_write_tokens":2},"output_tokens":77,"output_tokens_details":{"reasoning_tokens":64}}}"#,
            r#"{"type":"message","usage":{"input_tokens":21,"cache_read_input_tokens":188086,"cache_creation_input_tokens":393,"output_tokens":1,"cache_creation":{"ephemeral_5m_input_tokens":393}}}"#,
            r#"{"usage":{"prompt_tokens":-1,"completion_tokens":2.5,"prompt_cache_hit_tokens":"3","cached_tokens":null,"x":[1,{"a":2}],"prompt_tokens_details":[1]}}"#,
            r#"{"usage":{"prompt_tokens":5,"prompt_tokens":6,"prompt_tokens_details":{"cached_tokens":{"deep":1}}}}"#,
            r#"{"usage":{"prompt\u005ftokens":12,"completion_tokens":18446744073709551615}}"#,
            r#"{"usage":{"prompt_tokens":1e3}}"#,
            r#"{"usage":7}"#,
            r#"{"usage":"none"}"#,
            r#"{"usage":[]}"#,
            r#"{"usage":null}"#,
            r#"{"usage":{}}"#,
            r#"{"object":"list","data":[]}"#,
            r#"[{"usage":{"prompt_tokens":1}}]"#,
            r#"{"text":"a \"usage\": {\"prompt_tokens\": 5}","usage":{"prompt_tokens":2}}"#,
            r#"{"usage":{"prompt_tokens":2},"text":"a \"usage\": {\"prompt_tokens\": 5}"}"#,
            r#"{"usage":{"prompt_tokens":2},"metadata":{"usage":"label"}}"#,
            r#"{"usage":{"prompt_tokens":2},"type":"usage"}"#,
            "",
        ] {
            same(body);
        }
    }

    #[test]
    fn a_body_cut_or_padded_after_its_usage_still_bills_it() {
        // The reader parses the usage value alone, not the rest of the body:
        // the client got these bytes, and the usage the upstream reported.
        for body in [r#"{"usage":{"prompt_tokens":1}} trailing"#, r#"{"choices":[],"usage":{"prompt_tokens":1}"#] {
            let u = UsageFields::from_body(body.as_bytes()).expect(body);
            assert_eq!(Usage::from_openai_chat(&u).map(|u| u.input), Some(1), "{body}");
        }
    }
}
