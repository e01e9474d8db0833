//! Variable interpolation, as Compose does it, on every scalar value of a file (keys are left
//! alone) before anything reads it.
//!
//! | written | gives |
//! | --- | --- |
//! | `$VAR`, `${VAR}` | the value, or an empty string when unset |
//! | `${VAR:-default}` | `default` when VAR is unset **or empty** |
//! | `${VAR-default}` | `default` only when VAR is unset |
//! | `${VAR:?message}` | an error with `message` when VAR is unset or empty |
//! | `${VAR?message}` | an error with `message` when VAR is unset |
//! | `${VAR:+other}` | `other` when VAR is set and not empty, else empty |
//! | `${VAR+other}` | `other` when VAR is set, else empty |
//! | `$$` | a literal `$` |
//!
//! Defaults and alternatives are interpolated themselves (`${A:-${B:-x}}`). Any other `$` is
//! an error, as in Compose (write `$$` for a shell's `$`).

use crate::env::Environment;
use crate::error::ComposeError;
use crate::yaml::{Node, Value};

/// Interpolates every scalar of `node` in place. A scalar whose text changes is no longer a
/// plain scalar, so an empty result stays an empty string rather than becoming null.
pub fn interpolate_tree(node: &mut Node, env: &Environment) -> Result<(), ComposeError> {
    match &mut node.value {
        Value::Scalar(s) => {
            if s.text.contains('$') {
                s.text =
                    interpolate(&s.text, env).map_err(|message| ComposeError::Interpolation {
                        at: node.mark.location(),
                        message,
                    })?;
                s.plain = false;
            }
            Ok(())
        }
        Value::Seq(items) => items.iter_mut().try_for_each(|n| interpolate_tree(n, env)),
        Value::Map(entries) => entries
            .iter_mut()
            .try_for_each(|(_, n)| interpolate_tree(n, env)),
    }
}

/// Interpolates one string; the error says what is wrong with which expression.
pub fn interpolate(text: &str, env: &Environment) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = closing_brace(body).ok_or_else(|| {
                format!("unclosed `${{` in {text:?} (write `$$` for a literal `$`)")
            })?;
            out.push_str(&braced(&body[..end], env, text)?);
            rest = &body[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                return Err(format!(
                    "invalid interpolation in {text:?}: `$` must start a variable such as $VAR or ${{VAR}} (write `$$` for a literal `$`)"
                ));
            }
            out.push_str(env.get(&after[..len]).unwrap_or(""));
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Length of the variable name at the start of `s` (`[A-Za-z_][A-Za-z0-9_]*`).
fn name_len(s: &str) -> usize {
    let mut len = 0;
    for (i, c) in s.char_indices() {
        let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
        if !ok {
            break;
        }
        len = i + c.len_utf8();
    }
    len
}

/// The index of the `}` that closes a `${` whose body starts `body`, counting nested braces.
fn closing_brace(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The value of `${inner}`.
fn braced(inner: &str, env: &Environment, text: &str) -> Result<String, String> {
    let len = name_len(inner);
    if len == 0 {
        return Err(format!(
            "invalid interpolation in {text:?}: `${{{inner}}}` does not start with a variable name"
        ));
    }
    let (name, op) = inner.split_at(len);
    let value = env.get(name);
    let set = value.is_some();
    let set_non_empty = value.is_some_and(|v| !v.is_empty());
    let value = value.unwrap_or("");
    let ops: [(&str, bool); 6] = [
        (":-", set_non_empty),
        ("-", set),
        (":?", set_non_empty),
        ("?", set),
        (":+", set_non_empty),
        ("+", set),
    ];
    if op.is_empty() {
        return Ok(value.to_string());
    }
    for (prefix, condition) in ops {
        let Some(arg) = op.strip_prefix(prefix) else {
            continue;
        };
        return match prefix.as_bytes()[prefix.len() - 1] {
            b'-' if condition => Ok(value.to_string()),
            b'-' => interpolate(arg, env),
            b'?' if condition => Ok(value.to_string()),
            b'?' => {
                let message = interpolate(arg, env)?;
                let what = if set { "is empty" } else { "is not set" };
                Err(if message.is_empty() {
                    format!("required variable {name} {what}")
                } else {
                    format!("required variable {name} {what}: {message}")
                })
            }
            _ if condition => interpolate(arg, env),
            _ => Ok(String::new()),
        };
    }
    Err(format!(
        "invalid interpolation in {text:?}: `${{{inner}}}` (expected ${{VAR}}, ${{VAR:-default}}, ${{VAR-default}}, ${{VAR:?message}}, ${{VAR?message}}, ${{VAR:+other}} or ${{VAR+other}})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment {
        Environment::from_vars([("SET", "yes"), ("EMPTY", ""), ("TAG", "1.2")])
    }

    fn i(text: &str) -> Result<String, String> {
        interpolate(text, &env())
    }

    #[test]
    fn plain_forms() {
        assert_eq!(i("img:${TAG}").as_deref(), Ok("img:1.2"));
        assert_eq!(i("$SET-$TAG.x").as_deref(), Ok("yes-1.2.x"));
        assert_eq!(i("a${UNSET}b$UNSET").as_deref(), Ok("ab"));
        assert_eq!(i("no dollars").as_deref(), Ok("no dollars"));
        assert_eq!(i("ünï${SET}ç").as_deref(), Ok("ünïyesç"));
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar() {
        assert_eq!(i("echo $$HOME $${SET}").as_deref(), Ok("echo $HOME ${SET}"));
        assert_eq!(i("$$$SET").as_deref(), Ok("$yes"));
    }

    #[test]
    fn colon_dash_versus_dash() {
        assert_eq!(i("${EMPTY:-d}").as_deref(), Ok("d"));
        assert_eq!(i("${EMPTY-d}").as_deref(), Ok(""));
        assert_eq!(i("${UNSET:-d}").as_deref(), Ok("d"));
        assert_eq!(i("${UNSET-d}").as_deref(), Ok("d"));
        assert_eq!(i("${SET:-d}").as_deref(), Ok("yes"));
        assert_eq!(i("${UNSET:-}").as_deref(), Ok(""));
        assert_eq!(i("${UNSET:-${TAG}}").as_deref(), Ok("1.2"));
        assert_eq!(i("${UNSET:-${ALSO:-deep}}").as_deref(), Ok("deep"));
        assert_eq!(i("${UNSET:-a:b/c}").as_deref(), Ok("a:b/c"));
    }

    #[test]
    fn required_variables() {
        assert_eq!(i("${SET:?boom}").as_deref(), Ok("yes"));
        assert_eq!(
            i("${UNSET:?set UNSET first}"),
            Err("required variable UNSET is not set: set UNSET first".into())
        );
        assert_eq!(
            i("${EMPTY:?}"),
            Err("required variable EMPTY is empty".into())
        );
        assert_eq!(i("${EMPTY?msg}").as_deref(), Ok(""));
        assert!(i("${UNSET?msg}").is_err());
    }

    #[test]
    fn alternatives() {
        assert_eq!(i("${SET:+on}").as_deref(), Ok("on"));
        assert_eq!(i("${EMPTY:+on}").as_deref(), Ok(""));
        assert_eq!(i("${EMPTY+on}").as_deref(), Ok("on"));
        assert_eq!(i("${UNSET+on}").as_deref(), Ok(""));
    }

    #[test]
    fn malformed() {
        for bad in [
            "$", "a $ b", "${", "${SET", "${}", "${1A}", "${SET/x}", "$(date)",
        ] {
            assert!(i(bad).is_err(), "{bad}");
        }
    }
}
