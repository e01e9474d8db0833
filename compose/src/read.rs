//! Typed reads of tree nodes. Every failure is an [`ComposeError::Invalid`] at the node, naming
//! the key (`what`) and what was expected.
//!
//! Scalars are typed here, after interpolation: a number, a boolean or a duration may be
//! written plain (`replicas: 3`) or come out of a variable (`replicas: ${N:-3}`) alike.

use shoal_scheduler::parse;

use crate::error::ComposeError;
use crate::yaml::{Key, Node, Value};

type Result<T> = std::result::Result<T, ComposeError>;

/// A scalar's text (numbers and booleans included); not null, not a collection.
pub fn string(node: &Node, what: &str) -> Result<String> {
    match &node.value {
        Value::Scalar(s) if !node.is_null() => Ok(s.text.clone()),
        _ => Err(node
            .mark
            .invalid(format!("`{what}` must be a string, not {}", node.kind()))),
    }
}

/// A scalar's text, or `None` for null.
pub fn opt_string(node: &Node, what: &str) -> Result<Option<String>> {
    if node.is_null() {
        Ok(None)
    } else {
        string(node, what).map(Some)
    }
}

/// A whole number from 0.
pub fn uint(node: &Node, what: &str) -> Result<u64> {
    let text = string(node, what)?;
    text.trim().parse().map_err(|_| {
        node.mark.invalid(format!(
            "`{what}` must be a whole number from 0, not {text:?}"
        ))
    })
}

/// `true` or `false` (also `yes`/`no`, `on`/`off`, any case).
pub fn boolean(node: &Node, what: &str) -> Result<bool> {
    let text = string(node, what)?;
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Ok(true),
        "false" | "no" | "off" => Ok(false),
        _ => Err(node
            .mark
            .invalid(format!("`{what}` must be true or false, not {text:?}"))),
    }
}

/// A decimal number.
pub fn float(node: &Node, what: &str) -> Result<f64> {
    let text = string(node, what)?;
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(|| {
            node.mark
                .invalid(format!("`{what}` must be a number, not {text:?}"))
        })
}

/// A duration in milliseconds: shoal's form (`1m30s`, `500ms`) or Go's, which Compose uses
/// (`1.5s`, `100us`, `1h2m3.5s`; below a millisecond rounds down).
pub fn duration_ms(node: &Node, what: &str) -> Result<u64> {
    let text = string(node, what)?;
    parse::duration_ms(&text)
        .ok()
        .or_else(|| go_duration_ms(text.trim()))
        .ok_or_else(|| {
            node.mark.invalid(format!(
                "`{what}` must be a duration such as 10s, 1m30s or 500ms, not {text:?}"
            ))
        })
}

fn go_duration_ms(text: &str) -> Option<u64> {
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest[..num_end].parse().ok()?;
        let after = &rest[num_end..];
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let scale = match &after[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        nanos += number * scale;
        rest = &after[unit_end..];
    }
    (nanos.is_finite() && nanos < 1.8e19).then(|| (nanos / 1e6) as u64)
}

/// A mapping's entries.
pub fn map<'a>(node: &'a Node, what: &str) -> Result<&'a [(Key, Node)]> {
    node.as_map().ok_or_else(|| {
        node.mark
            .invalid(format!("`{what}` must be a mapping, not {}", node.kind()))
    })
}

/// A mapping's entries; null is an empty mapping.
pub fn opt_map<'a>(node: &'a Node, what: &str) -> Result<&'a [(Key, Node)]> {
    if node.is_null() {
        Ok(&[])
    } else {
        map(node, what)
    }
}

/// A sequence's items.
pub fn seq<'a>(node: &'a Node, what: &str) -> Result<&'a [Node]> {
    match &node.value {
        Value::Seq(items) => Ok(items),
        _ => Err(node
            .mark
            .invalid(format!("`{what}` must be a list, not {}", node.kind()))),
    }
}

/// A list of strings.
pub fn strings(node: &Node, what: &str) -> Result<Vec<String>> {
    seq(node, what)?
        .iter()
        .map(|n| string(n, &format!("{what}[]")))
        .collect()
}

/// `KEY: value` pairs written as a mapping or as a list of `KEY=value` (a value may be null or,
/// in the list form, have no `=`: `None`).
pub fn key_values(node: &Node, what: &str) -> Result<Vec<(String, Option<String>)>> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.name.clone(),
                    opt_string(v, &format!("{what}.{}", k.name))?,
                ))
            })
            .collect(),
        Value::Seq(items) => items
            .iter()
            .map(|item| {
                let text = string(item, &format!("{what}[]"))?;
                Ok(match text.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (text, None),
                })
            })
            .collect(),
        _ if node.is_null() => Ok(Vec::new()),
        _ => Err(node.mark.invalid(format!(
            "`{what}` must be a mapping or a list of KEY=VALUE, not {}",
            node.kind()
        ))),
    }
}

/// File permission bits: `0440` (a leading zero means octal, as Compose reads it), `0o440`, or
/// a decimal number (`292`).
pub fn mode(node: &Node, what: &str) -> Result<u32> {
    let text = string(node, what)?;
    let t = text.trim();
    let parsed = if let Some(oct) = t.strip_prefix("0o") {
        u32::from_str_radix(oct, 8).ok()
    } else if t.len() > 1 && t.starts_with('0') {
        u32::from_str_radix(&t[1..], 8).ok()
    } else {
        t.parse().ok()
    };
    parsed.filter(|m| *m <= 0o7777).ok_or_else(|| {
        node.mark.invalid(format!(
            "`{what}` must be permission bits such as 0440, not {text:?}"
        ))
    })
}

/// A command as Compose takes it: a list of words, or a string split into words like a shell
/// would (whitespace separates words; single quotes keep everything literally; double quotes
/// keep spaces and take `\"`, `\\` and `\$` escapes; a backslash outside quotes keeps the next
/// character). Nothing else of a shell happens: no variables (Compose interpolation has run
/// already), no globs, no `;`, `|` or `&&` (they are passed as words: write
/// `["sh", "-c", "a && b"]` for those).
pub fn command(node: &Node, what: &str) -> Result<Vec<String>> {
    match &node.value {
        Value::Seq(_) => strings(node, what),
        _ if node.is_null() => Ok(Vec::new()),
        _ => {
            let text = string(node, what)?;
            shlex::split(&text).ok_or_else(|| {
                node.mark.invalid(format!(
                    "`{what}` has an unclosed quote or a trailing backslash: {text:?}"
                ))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;

    fn node(yaml: &str) -> Node {
        parse("t", &format!("v: {yaml}\n"))
            .expect("parse")
            .get("v")
            .expect("v")
            .clone()
    }

    #[test]
    fn durations_in_both_forms() {
        for (text, ms) in [
            ("10s", 10_000),
            ("1m30s", 90_000),
            ("500ms", 500),
            ("1.5s", 1_500),
            ("100us", 0),
            ("1h0m2.5s", 3_602_500),
            ("0", 0),
        ] {
            assert_eq!(duration_ms(&node(text), "d").expect(text), ms, "{text}");
        }
        assert!(duration_ms(&node("soon"), "d").is_err());
        assert!(duration_ms(&node("10"), "d").is_err());
    }

    #[test]
    fn modes_read_octal_as_compose_does() {
        assert_eq!(mode(&node("0440"), "m").expect("m"), 0o440);
        assert_eq!(mode(&node("0o400"), "m").expect("m"), 0o400);
        assert_eq!(mode(&node("292"), "m").expect("m"), 292);
        assert!(mode(&node("0999"), "m").is_err());
    }

    #[test]
    fn commands_split_like_a_shell() {
        assert_eq!(
            command(&node(r#"'sh -c "echo \"a  b\" && echo ''x y''"'"#), "c").expect("c"),
            ["sh", "-c", "echo \"a  b\" && echo 'x y'"]
        );
        assert_eq!(
            command(&node("[a, 'b c', 3]"), "c").expect("c"),
            ["a", "b c", "3"]
        );
        assert!(command(&node("~"), "c").expect("c").is_empty());
        assert!(command(&node("'a \"b'"), "c").is_err());
    }

    #[test]
    fn type_errors_name_the_key_and_place() {
        let err = uint(&node("three"), "deploy.replicas").expect_err("bad");
        assert_eq!(
            err.to_string(),
            "t:1:4: `deploy.replicas` must be a whole number from 0, not \"three\""
        );
        assert!(string(&node("[a]"), "image").is_err());
        assert!(boolean(&node("maybe"), "b").is_err());
        assert!(boolean(&node("yes"), "b").expect("b"));
    }
}
