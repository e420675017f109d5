//! `${VAR}` / `${VAR:-default}` interpolation of configuration strings.
//!
//! Interpolation runs on the parsed YAML tree (string scalars only), never on the
//! raw text, so a secret containing `:` or `#` cannot change the document's shape.
//! `$$` is a literal `$`. An unset `${VAR}` without a default is an error naming
//! the variable; `${VAR:-}` means "empty when unset".

/// Why a string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    #[error("environment variable {0} is not set (write ${{{0}:-default}} to allow that)")]
    Unset(String),
    #[error("unterminated `${{` in {0:?}")]
    Unterminated(String),
    #[error("invalid variable name {0:?}")]
    BadName(String),
}

/// Replaces every `${NAME}` and `${NAME:-default}` in `input` using `lookup`.
pub fn interpolate(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, InterpolateError> {
    if !input.contains('$') {
        return Ok(input.to_string());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| InterpolateError::Unterminated(input.to_string()))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(InterpolateError::BadName(name.to_string()));
            }
            // `:-` (like the shell) also applies the default when the variable is empty.
            match (lookup(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(InterpolateError::Unset(name.to_string())),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Interpolates every string scalar of a YAML tree in place, collecting one error
/// per failing scalar together with its dotted path.
pub fn interpolate_tree(
    value: &mut serde_yaml::Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<(String, String)>,
) {
    use serde_yaml::Value;
    match value {
        Value::String(s) => match interpolate(s, lookup) {
            Ok(v) => *s = v,
            Err(e) => errors.push((path.to_string(), e.to_string())),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &format!("{path}[{i}]"), lookup, errors);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = k.as_str().map(str::to_string).unwrap_or_else(|| format!("{k:?}"));
                let child = if path.is_empty() { key } else { format!("{path}.{key}") };
                interpolate_tree(v, &child, lookup, errors);
            }
        }
        Value::Tagged(t) => interpolate_tree(&mut t.value, path, lookup, errors),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example.com".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn plain_strings_are_untouched() {
        assert_eq!(interpolate("abc", &env).unwrap(), "abc");
        assert_eq!(interpolate("cost $5", &env).unwrap(), "cost $5");
    }

    #[test]
    fn variables_and_defaults() {
        assert_eq!(interpolate("https://${HOST}/v1", &env).unwrap(), "https://example.com/v1");
        assert_eq!(interpolate("${MISSING:-0.0.0.0:8080}", &env).unwrap(), "0.0.0.0:8080");
        assert_eq!(interpolate("${EMPTY:-x}", &env).unwrap(), "x");
        assert_eq!(interpolate("${MISSING:-}", &env).unwrap(), "");
        assert_eq!(interpolate("$${HOST}", &env).unwrap(), "${HOST}");
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(interpolate("${MISSING}", &env), Err(InterpolateError::Unset("MISSING".into())));
        assert!(matches!(interpolate("${HOST", &env), Err(InterpolateError::Unterminated(_))));
        assert!(matches!(interpolate("${1X}", &env), Err(InterpolateError::BadName(_))));
    }

    #[test]
    fn tree_errors_carry_paths() {
        let mut v: serde_yaml::Value = serde_yaml::from_str("a:\n  b: [\"${HOST}\", \"${NOPE}\"]\n").unwrap();
        let mut errors = Vec::new();
        interpolate_tree(&mut v, "", &env, &mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "a.b[1]");
        assert_eq!(v["a"]["b"][0].as_str(), Some("example.com"));
    }
}
