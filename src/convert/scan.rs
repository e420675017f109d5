//! Cheap scans of JSON text for the hot streaming path: looking for a key or
//! measuring string values without building a tree. They only ever inform
//! decisions that a full parse then confirms, or estimates. One linear pass,
//! no allocation, `memchr` between the bytes that matter: a chat stream runs
//! every event of every response through here, and per-key searches were a
//! fifth of the gateway's CPU on streams.

/// Every object key in `data`, at any depth, with the offset where its value
/// starts (after the colon and any whitespace). Keys are returned as written
/// (escapes not decoded); a string followed by anything but `:` is a value.
pub fn keys(data: &str) -> impl Iterator<Item = (&str, usize)> + '_ {
    let b = data.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            let Some(q) = memchr::memchr(b'"', &b[i..]) else {
                i = b.len();
                break;
            };
            let start = i + q + 1;
            let end = string_end(b, start);
            i = end + 1;
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if b.get(j) != Some(&b':') {
                continue;
            }
            j += 1;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            i = j;
            return Some((&data[start..end.min(b.len())], j));
        }
        None
    })
}

/// The index of the quote closing a string whose text starts at `from` (or
/// the end of the data).
fn string_end(b: &[u8], from: usize) -> usize {
    let mut j = from;
    while j < b.len() {
        match memchr::memchr2(b'\\', b'"', &b[j..]) {
            Some(k) if b[j + k] == b'"' => return j + k,
            Some(k) => j += k + 2,
            None => break,
        }
    }
    b.len()
}

/// The raw length of the string value starting at `at` (escapes counted as
/// written; close enough for a token estimate), or 0 when it is not a string.
pub fn string_len_at(data: &str, at: usize) -> u64 {
    let b = data.as_bytes();
    if b.get(at) != Some(&b'"') {
        return 0;
    }
    (string_end(b, at + 1) - (at + 1)) as u64
}

/// Whether the value starting at `at` is an object.
pub fn object_at(data: &str, at: usize) -> bool {
    data.as_bytes().get(at) == Some(&b'{')
}

/// Whether some `"key"` has an object value (`"usage":{`).
pub fn has_object(data: &str, key: &str) -> bool {
    keys(data).any(|(k, at)| k == key && object_at(data, at))
}

/// Sum of the raw lengths of every string value of `"key"`.
pub fn string_values_len(data: &str, key: &str) -> u64 {
    keys(data).filter(|(k, _)| *k == key).map(|(_, at)| string_len_at(data, at)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_objects_and_strings() {
        let d = r#"{"choices":[],"usage":{"prompt_tokens":1}}"#;
        assert!(has_object(d, "usage"));
        assert!(!has_object(r#"{"usage":null}"#, "usage"));
        assert!(has_object(r#"{"usage" : {}}"#, "usage"));
        let d = r#"{"delta":{"content":"Hel\"lo"},"x":{"content":"ab"}, "content": 5}"#;
        assert_eq!(string_values_len(d, "content"), 7 + 2);
        assert_eq!(string_values_len(d, "missing"), 0);
    }

    #[test]
    fn keys_skip_string_values_that_look_like_keys() {
        let d = r#"{"role":"content","text":"\"usage\": {","n":{"usage":{}}}"#;
        let found: Vec<&str> = keys(d).map(|(k, _)| k).collect();
        assert_eq!(found, ["role", "text", "n", "usage"]);
        assert!(has_object(d, "usage"));
        assert_eq!(string_values_len(d, "text"), 12, "escapes counted as written");
        // Truncated input ends the scan instead of panicking.
        assert_eq!(keys(r#"{"a":"b\"#).count(), 1);
        assert_eq!(keys(r#"{"unterminated"#).count(), 0);
    }
}
