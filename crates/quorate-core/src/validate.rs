//! Bounds and canonicalisation of client input, before anything is proposed.
//! Every check here is a pure function of the input, so a rejected request
//! changes nothing anywhere (invariant 7). Cedar-specific syntax (entity UIDs,
//! policy text) is checked by `quorate-policy`.

use thiserror::Error;

use crate::canonical::canonical_json;

/// Limits on client input. The defaults are deliberately generous for real
/// workloads and small enough that no single request can hurt a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_domain_len: usize,
    pub max_id_len: usize,
    pub max_uid_len: usize,
    pub max_context_bytes: usize,
    pub max_json_depth: usize,
    pub max_entities_bytes: usize,
    pub max_entities: usize,
    pub max_policy_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_domain_len: 64,
            max_id_len: 128,
            max_uid_len: 512,
            max_context_bytes: 16 * 1024,
            max_json_depth: 16,
            max_entities_bytes: 256 * 1024,
            max_entities: 1000,
            max_policy_bytes: 1024 * 1024,
        }
    }
}

/// Why input was refused. Each variant becomes INVALID_ARGUMENT on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InputError {
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is {len} bytes; the limit is {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error(
        "domain {0:?} is not a valid name: use 1-64 characters from a-z, 0-9, '-', '_', '.', starting with a letter or digit"
    )]
    BadDomain(String),
    #[error("{field} contains control characters")]
    ControlChars { field: &'static str },
    #[error("{field} is not valid JSON: {message}")]
    BadJson {
        field: &'static str,
        message: String,
    },
    #[error("{field} must be a JSON {expected}")]
    WrongJsonType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("{field} nests deeper than {max} levels")]
    TooDeep { field: &'static str, max: usize },
    #[error("entities has {count} entries; the limit is {max}")]
    TooManyEntities { count: usize, max: usize },
    #[error("{field}: {message}")]
    Cedar {
        field: &'static str,
        message: String,
    },
}

/// Checks a domain name.
pub fn domain(name: &str, limits: &Limits) -> Result<(), InputError> {
    let ok_first = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok_rest = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if name.is_empty() {
        return Err(InputError::Empty { field: "domain" });
    }
    if name.len() > limits.max_domain_len || !ok_first || !ok_rest {
        return Err(InputError::BadDomain(name.to_string()));
    }
    Ok(())
}

/// Checks a client-chosen identifier (request id, parent, trace id).
pub fn identifier(field: &'static str, v: &str, limits: &Limits) -> Result<(), InputError> {
    if v.is_empty() {
        return Err(InputError::Empty { field });
    }
    bounded_text(field, v, limits.max_id_len)
}

/// Checks free text for length and control characters.
pub fn bounded_text(field: &'static str, v: &str, max: usize) -> Result<(), InputError> {
    if v.len() > max {
        return Err(InputError::TooLong {
            field,
            len: v.len(),
            max,
        });
    }
    if v.chars().any(char::is_control) {
        return Err(InputError::ControlChars { field });
    }
    Ok(())
}

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn parse_json(
    field: &'static str,
    text: &str,
    max_bytes: usize,
    max_depth: usize,
) -> Result<serde_json::Value, InputError> {
    if text.len() > max_bytes {
        return Err(InputError::TooLong {
            field,
            len: text.len(),
            max: max_bytes,
        });
    }
    // serde_json refuses nesting beyond 128 levels on its own, so parsing
    // cannot overflow the stack before the depth check below.
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| InputError::BadJson {
        field,
        message: e.to_string(),
    })?;
    if depth(&v) > max_depth {
        return Err(InputError::TooDeep {
            field,
            max: max_depth,
        });
    }
    Ok(v)
}

/// Validates a context (a JSON object, or empty for `{}`) and returns its
/// canonical form.
pub fn context(text: &str, limits: &Limits) -> Result<String, InputError> {
    if text.trim().is_empty() {
        return Ok("{}".to_string());
    }
    let v = parse_json(
        "context",
        text,
        limits.max_context_bytes,
        limits.max_json_depth,
    )?;
    if !v.is_object() {
        return Err(InputError::WrongJsonType {
            field: "context",
            expected: "object",
        });
    }
    Ok(canonical_json(&v))
}

/// Validates an entities document (a JSON array) and returns its canonical form.
pub fn entities(text: &str, limits: &Limits) -> Result<String, InputError> {
    let v = parse_json(
        "entities",
        text,
        limits.max_entities_bytes,
        limits.max_json_depth,
    )?;
    let Some(arr) = v.as_array() else {
        return Err(InputError::WrongJsonType {
            field: "entities",
            expected: "array",
        });
    };
    if arr.len() > limits.max_entities {
        return Err(InputError::TooManyEntities {
            count: arr.len(),
            max: limits.max_entities,
        });
    }
    Ok(canonical_json(&v))
}

/// A Cedar entity UID `Type::"id"` with `id` written as a Cedar string
/// literal (`"` and `\` escaped), so an id taken from the outside (a
/// username, a tool's name, a path) cannot change the UID's meaning. Used by
/// the integrations that build requests from other systems' documents.
/// Control characters are left as they are: the API edge's request check
/// (`quorate_policy::check_request`) refuses them.
pub fn entity_uid(type_name: &str, id: &str) -> String {
    let mut out = String::with_capacity(type_name.len() + id.len() + 4);
    out.push_str(type_name);
    out.push_str("::\"");
    for c in id.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        let l = Limits::default();
        assert!(domain("eu-payments", &l).is_ok());
        assert!(domain("demo", &l).is_ok());
        assert!(domain("", &l).is_err());
        assert!(domain("-x", &l).is_err());
        assert!(domain("Demo", &l).is_err());
        assert!(domain(&"a".repeat(65), &l).is_err());
    }

    #[test]
    fn context_is_canonicalised_and_bounded() {
        let l = Limits::default();
        assert_eq!(context(" ", &l).ok().as_deref(), Some("{}"));
        assert_eq!(
            context(r#"{"b":1, "a":2}"#, &l).ok().as_deref(),
            Some(r#"{"a":2,"b":1}"#)
        );
        assert!(matches!(
            context("[1]", &l),
            Err(InputError::WrongJsonType { .. })
        ));
        assert!(matches!(context("{", &l), Err(InputError::BadJson { .. })));
        let deep = format!(
            "{}{}",
            "{\"a\":".repeat(20),
            "1".to_string() + &"}".repeat(20)
        );
        assert!(matches!(
            context(&deep, &l),
            Err(InputError::TooDeep { .. })
        ));
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(l.max_context_bytes));
        assert!(matches!(context(&big, &l), Err(InputError::TooLong { .. })));
    }

    #[test]
    fn entity_count_is_bounded() {
        let l = Limits {
            max_entities: 2,
            ..Limits::default()
        };
        assert!(entities("[{},{}]", &l).is_ok());
        assert!(matches!(
            entities("[{},{},{}]", &l),
            Err(InputError::TooManyEntities { .. })
        ));
    }
}
