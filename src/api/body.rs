//! Request bodies: the few fields routing and billing need, read without building
//! a JSON tree, and byte-exact edits of top-level fields (rename `model`, add
//! `stream_options.include_usage`) so pass-through stays byte-for-byte otherwise.

use crate::error::GatewayError;
use serde::Deserialize;
use std::ops::Range;

/// How deeply a request body may nest arrays and objects: serde_json's own
/// limit, which the translators' parse would hit anyway. The skipping parse
/// (`IgnoredAny`) has no limit, and a body nested 100,000 deep went upstream.
pub const MAX_DEPTH: usize = 128;

/// Whether `body` nests arrays and objects deeper than `max`, by a scan that
/// builds nothing. Bodies with fewer brackets than that cannot, and are not
/// scanned (counting them is a vectorised pass); strings are skipped whole.
pub fn nested_deeper_than(body: &[u8], max: usize) -> bool {
    if memchr::memchr2_iter(b'[', b'{', body).nth(max).is_none() {
        return false;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                i += 1;
                // To the closing quote, past escapes.
                loop {
                    // Unterminated (or ending in a backslash): the parse reports it.
                    let Some(rest) = body.get(i..) else { return false };
                    match memchr::memchr2(b'"', b'\\', rest) {
                        Some(j) if body[i + j] == b'\\' => i += j + 2,
                        Some(j) => {
                            i += j;
                            break;
                        }
                        None => return false,
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// The fields of an LLM request body the gateway looks at. Everything else is
/// skipped by serde (`IgnoredAny`), so a 1 MiB body costs one validating scan.
#[derive(Debug, Default, Deserialize)]
pub struct Peek {
    #[serde(default)]
    pub model: Option<serde_json::Value>,
    #[serde(default)]
    pub stream: Option<serde_json::Value>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    #[serde(default)]
    pub prompt_cache_key: Option<String>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub previous_response_id: Option<serde_json::Value>,
    /// Presence checks only: skipped without building anything.
    #[serde(default)]
    pub messages: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub input: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub user_id: Option<String>,
}

impl Peek {
    /// Parses and validates a body: it must be a JSON object.
    pub fn parse(body: &[u8]) -> Result<Peek, GatewayError> {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_none() {
            return Err(GatewayError::InvalidJson("the request body is empty".into()));
        }
        if first != Some(&b'{') {
            return Err(GatewayError::InvalidJson("the request body must be a JSON object".into()));
        }
        if nested_deeper_than(body, MAX_DEPTH) {
            let message = format!("the request body is nested deeper than {MAX_DEPTH} levels");
            return Err(GatewayError::InvalidJson(message));
        }
        serde_json::from_slice::<Peek>(body).map_err(|e| GatewayError::InvalidJson(e.to_string()))
    }

    /// The `model` field: `Ok(None)` when absent or null, an error when not a string.
    pub fn model(&self) -> Result<Option<&str>, GatewayError> {
        match &self.model {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s)),
            Some(_) => Err(GatewayError::InvalidField { field: "model", message: "must be a non-empty string".into() }),
        }
    }

    pub fn stream(&self) -> Result<bool, GatewayError> {
        match &self.stream {
            None | Some(serde_json::Value::Null) => Ok(false),
            Some(serde_json::Value::Bool(b)) => Ok(*b),
            Some(_) => Err(GatewayError::InvalidField { field: "stream", message: "must be a boolean".into() }),
        }
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false)
    }

    /// The output cap the client asked for, whichever field its API names it.
    pub fn max_output(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_output_tokens).or(self.max_tokens)
    }
}

/// A top-level member of a JSON object: key (raw, without quotes) and the byte
/// range of its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub key: Range<usize>,
    pub value: Range<usize>,
}

/// Lists the members of the top-level object of `src`, which must be valid JSON
/// (call after `Peek::parse`). Returns `None` for anything else.
pub fn members(src: &[u8]) -> Option<(usize, Vec<Member>)> {
    let mut i = skip_ws(src, 0);
    if src.get(i) != Some(&b'{') {
        return None;
    }
    let open = i;
    i += 1;
    let mut out = Vec::new();
    loop {
        i = skip_ws(src, i);
        match src.get(i)? {
            b'}' => return Some((open, out)),
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {
                let kend = skip_string(src, i)?;
                let key = i + 1..kend - 1;
                i = skip_ws(src, kend);
                if src.get(i) != Some(&b':') {
                    return None;
                }
                let vstart = skip_ws(src, i + 1);
                let vend = skip_value(src, vstart)?;
                out.push(Member { key, value: vstart..vend });
                i = vend;
            }
            _ => return None,
        }
    }
}

fn skip_ws(src: &[u8], mut i: usize) -> usize {
    while i < src.len() && matches!(src[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// `src[i]` is `"`; returns the index just past the closing quote.
fn skip_string(src: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < src.len() {
        match src[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

fn skip_value(src: &[u8], i: usize) -> Option<usize> {
    match *src.get(i)? {
        b'"' => skip_string(src, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < src.len() {
                match src[j] {
                    b'"' => {
                        j = skip_string(src, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < src.len() && !matches!(src[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// Byte-exact edits of a JSON object body.
pub struct Edit<'a> {
    src: &'a [u8],
    open: usize,
    members: Vec<Member>,
}

impl<'a> Edit<'a> {
    pub fn new(src: &'a [u8]) -> Option<Edit<'a>> {
        let (open, members) = members(src)?;
        Some(Edit { src, open, members })
    }

    /// The value range of the last top-level member named `key` (JSON parsers keep
    /// the last duplicate, so the edit must too).
    pub fn find(&self, key: &str) -> Option<Range<usize>> {
        self.members.iter().rev().find(|m| &self.src[m.key.clone()] == key.as_bytes()).map(|m| m.value.clone())
    }

    /// Returns the body with `key` set to the raw JSON `value`: replaced in place
    /// when present, inserted first otherwise.
    pub fn set(&self, key: &str, value: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.src.len() + key.len() + value.len() + 4);
        match self.find(key) {
            Some(r) => {
                out.extend_from_slice(&self.src[..r.start]);
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(&self.src[r.end..]);
            }
            None => {
                out.extend_from_slice(&self.src[..=self.open]);
                out.extend_from_slice(format!("\"{key}\":{value}").as_bytes());
                if !self.members.is_empty() {
                    out.push(b',');
                }
                out.extend_from_slice(&self.src[self.open + 1..]);
            }
        }
        out
    }
}

/// Applies the pass-through edits: optional model rename, and for chat streams
/// `stream_options.include_usage: true` (so usage can be billed). Returns the
/// input itself (no copy) when there is nothing to change.
/// The whole body as a JSON tree (for translation and local estimates; the
/// pass-through path never needs it).
pub fn parse_value(body: &[u8]) -> Result<serde_json::Value, GatewayError> {
    serde_json::from_slice(body).map_err(|e| GatewayError::InvalidJson(e.to_string()))
}

pub fn rewrite_for_upstream(body: bytes::Bytes, model: Option<&str>, force_include_usage: bool) -> bytes::Bytes {
    let mut edited: Option<Vec<u8>> = None;
    if let Some(m) = model {
        if let Some(out) = set_model(&body, m) {
            edited = Some(out);
        }
    }
    if force_include_usage {
        if let Some(out) = set_include_usage(edited.as_deref().unwrap_or(&body)) {
            edited = Some(out);
        }
    }
    edited.map(bytes::Bytes::from).unwrap_or(body)
}

/// `None` when `model` already has this value.
fn set_model(src: &[u8], model: &str) -> Option<Vec<u8>> {
    let edit = Edit::new(src)?;
    let quoted = serde_json::to_string(model).ok()?;
    if edit.find("model").is_some_and(|r| src[r] == *quoted.as_bytes()) {
        return None;
    }
    Some(edit.set("model", &quoted))
}

/// `None` when `stream_options.include_usage` is already `true`.
fn set_include_usage(src: &[u8]) -> Option<Vec<u8>> {
    let edit = Edit::new(src)?;
    let Some(r) = edit.find("stream_options").filter(|r| src[r.start] == b'{') else {
        return Some(edit.set("stream_options", "{\"include_usage\":true}"));
    };
    let inner = &src[r.clone()];
    let inner_edit = Edit::new(inner)?;
    if inner_edit.find("include_usage").is_some_and(|ir| &inner[ir] == b"true") {
        return None;
    }
    let mut out = Vec::with_capacity(src.len() + 24);
    out.extend_from_slice(&src[..r.start]);
    out.extend_from_slice(&inner_edit.set("include_usage", "true"));
    out.extend_from_slice(&src[r.end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_without_a_parse() {
        let deep = |n: usize| format!(r#"{{"model":"m","messages":{}{}}}"#, "[".repeat(n), "]".repeat(n));
        assert!(!nested_deeper_than(deep(MAX_DEPTH - 1).as_bytes(), MAX_DEPTH));
        assert!(nested_deeper_than(deep(MAX_DEPTH).as_bytes(), MAX_DEPTH));
        let err = Peek::parse(deep(100_000).as_bytes()).unwrap_err();
        assert!(matches!(err, GatewayError::InvalidJson(ref m) if m.contains("nested deeper")), "{err:?}");
        // Brackets inside strings (escaped quotes too) do not count.
        let quoted = format!(r#"{{"a":"{}\"{}","b":[[1]]}}"#, "[".repeat(500), "{".repeat(500));
        assert!(!nested_deeper_than(quoted.as_bytes(), 3));
        assert!(nested_deeper_than(quoted.as_bytes(), 2));
        // Truncated input never reads past the end.
        assert!(!nested_deeper_than(format!("{}\"\\", "[".repeat(200)).as_bytes(), 300));
    }

    #[test]
    fn peek_reads_routing_fields() {
        let p = Peek::parse(br#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(p.model().unwrap(), Some("gpt-4o"));
        assert!(p.stream().unwrap());
        assert!(p.include_usage());
        assert_eq!(p.max_output(), Some(5));
    }

    #[test]
    fn peek_rejects_bad_bodies() {
        assert!(matches!(Peek::parse(b""), Err(GatewayError::InvalidJson(_))));
        assert!(matches!(Peek::parse(b"[1]"), Err(GatewayError::InvalidJson(_))));
        assert!(matches!(Peek::parse(b"{\"model\":"), Err(GatewayError::InvalidJson(_))));
        let p = Peek::parse(br#"{"model":5,"stream":"yes"}"#).unwrap();
        assert!(p.model().is_err());
        assert!(p.stream().is_err());
    }

    #[test]
    fn members_and_spans() {
        let src = br#" { "a" : 1 , "b":{"x":[1,"}"]},"c":"q\"uote", "d":null }"#;
        let (_, m) = members(src).unwrap();
        let keys: Vec<_> = m.iter().map(|m| std::str::from_utf8(&src[m.key.clone()]).unwrap()).collect();
        assert_eq!(keys, ["a", "b", "c", "d"]);
        assert_eq!(&src[m[1].value.clone()], br#"{"x":[1,"}"]}"#);
        assert_eq!(&src[m[2].value.clone()], br#""q\"uote""#);
        assert_eq!(&src[m[3].value.clone()], b"null");
    }

    #[test]
    fn model_rename_is_byte_exact() {
        let src = bytes::Bytes::from_static(b"{\n  \"model\" : \"gpt-4o\",\n  \"messages\": [ ]\n}");
        let out = rewrite_for_upstream(src.clone(), Some("gpt-4o-2024-08-06"), false);
        assert_eq!(&out[..], b"{\n  \"model\" : \"gpt-4o-2024-08-06\",\n  \"messages\": [ ]\n}");
        // Same name: no copy, same bytes.
        let out = rewrite_for_upstream(src.clone(), Some("gpt-4o"), false);
        assert_eq!(out, src);
    }

    #[test]
    fn model_is_inserted_when_missing() {
        let out = rewrite_for_upstream(
            bytes::Bytes::from_static(b"{\"input\":\"x\"}"),
            Some("text-embedding-3-small"),
            false,
        );
        assert_eq!(&out[..], br#"{"model":"text-embedding-3-small","input":"x"}"#);
        let out = rewrite_for_upstream(bytes::Bytes::from_static(b"{}"), Some("m"), false);
        assert_eq!(&out[..], br#"{"model":"m"}"#);
    }

    #[test]
    fn include_usage_injection() {
        let cases: [(&[u8], &[u8]); 4] = [
            (
                br#"{"model":"m","stream":true}"#,
                br#"{"stream_options":{"include_usage":true},"model":"m","stream":true}"#,
            ),
            (br#"{"stream_options":{},"stream":true}"#, br#"{"stream_options":{"include_usage":true},"stream":true}"#),
            (
                br#"{"stream_options":{"include_usage":false},"stream":true}"#,
                br#"{"stream_options":{"include_usage":true},"stream":true}"#,
            ),
            (br#"{"stream_options":{"include_usage":true}}"#, br#"{"stream_options":{"include_usage":true}}"#),
        ];
        for (input, want) in cases {
            let out = rewrite_for_upstream(bytes::Bytes::copy_from_slice(input), None, true);
            assert_eq!(std::str::from_utf8(&out).unwrap(), std::str::from_utf8(want).unwrap());
        }
        let out = rewrite_for_upstream(bytes::Bytes::from_static(br#"{"model":"a","stream":true}"#), Some("b"), true);
        assert_eq!(&out[..], br#"{"stream_options":{"include_usage":true},"model":"b","stream":true}"#);
    }
}
