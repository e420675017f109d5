//! Cheap scans of JSON text for the hot streaming path: looking for a key or
//! measuring string values without building a tree. They only ever inform
//! decisions that a full parse then confirms, or estimates.

/// Positions just after `"key"` followed by optional whitespace and `:` and
/// optional whitespace, i.e. where the value starts.
fn value_starts<'a>(data: &'a str, key: &'a str) -> impl Iterator<Item = usize> + 'a {
    let pat = format!("\"{key}\"");
    let bytes = data.as_bytes();
    let mut from = 0;
    std::iter::from_fn(move || loop {
        let pos = data[from..].find(&pat)? + from;
        from = pos + pat.len();
        let mut i = from;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if bytes.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        return Some(i);
    })
}

/// Whether some `"key"` has an object value (`"usage":{`).
pub fn has_object(data: &str, key: &str) -> bool {
    value_starts(data, key).any(|i| data.as_bytes().get(i) == Some(&b'{'))
}

/// Sum of the raw lengths of every string value of `"key"` (escapes counted as
/// written; close enough for a token estimate).
pub fn string_values_len(data: &str, key: &str) -> u64 {
    let b = data.as_bytes();
    value_starts(data, key)
        .filter(|&i| b.get(i) == Some(&b'"'))
        .map(|i| {
            let mut j = i + 1;
            while j < b.len() {
                match b[j] {
                    b'\\' => j += 2,
                    b'"' => break,
                    _ => j += 1,
                }
            }
            (j.min(b.len()) - (i + 1)) as u64
        })
        .sum()
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
}
