//! The variables a Compose file is interpolated with, and the `.env` / `env_file` format.
//!
//! [`Environment::for_project`] is what `shoal stack deploy` uses: the variables of a `.env`
//! file beside the first Compose file, overridden by the process environment (as Compose does:
//! the shell wins over `.env`).
//!
//! The file format (for `.env` and for a service's `env_file`): one `KEY=VALUE` a line; blank
//! lines and lines starting with `#` are skipped; `export ` before the key is allowed; a value
//! in single quotes is literal; a value in double quotes may hold `\n`, `\t`, `\"`, `\\` and
//! `${VAR}` references; an unquoted value is trimmed, loses a ` #comment` after it, and may hold
//! `${VAR}` references. References see the variables above them in the file, then the
//! environment given. A line `KEY` alone (no `=`) takes KEY's value from that environment.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::ComposeError;
use crate::interpolate::interpolate;

/// Variables for interpolation: name to value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl Environment {
    /// No variables at all.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The process environment (variables that are not UTF-8 are skipped).
    pub fn from_process() -> Self {
        Environment {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// These variables.
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Environment {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The process environment over the `.env` file in `project_dir` (if there is one):
    /// the process wins.
    pub fn for_project(project_dir: &Path) -> Result<Self, ComposeError> {
        let process = Self::from_process();
        let path = project_dir.join(".env");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let dotenv = parse_env_file(&text, &process).map_err(|(line, message)| {
                    ComposeError::Invalid {
                        at: crate::error::Location {
                            file: path.display().to_string(),
                            line,
                            column: 1,
                        },
                        message,
                    }
                })?;
                Ok(Self::from_vars(dotenv).overridden_by(&process))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(process),
            Err(source) => Err(ComposeError::Io { path, source }),
        }
    }

    /// These variables with `other`'s set over them.
    pub fn overridden_by(mut self, other: &Environment) -> Self {
        for (k, v) in &other.vars {
            self.vars.insert(k.clone(), v.clone());
        }
        self
    }

    /// A variable's value, `None` when unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Sets a variable.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.vars.insert(name.into(), value.into());
    }
}

/// Parses a `.env` / `env_file` text into its variables, in order. `KEY` alone takes its value
/// from `env` and is skipped when `env` does not have it. An error is `(line, message)`.
pub fn parse_env_file(
    text: &str,
    env: &Environment,
) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut seen = env.clone();
    let mut out: Vec<(String, String)> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim_start())),
            None => (line, None),
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err((line_no, format!("expected KEY=VALUE, got {raw:?}")));
        }
        let value = match value {
            None => match env.get(key) {
                Some(v) => v.to_string(),
                None => continue,
            },
            Some(v) => env_value(v, &seen).map_err(|m| (line_no, m))?,
        };
        seen.set(key, value.clone());
        out.retain(|(k, _)| k != key);
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn env_value(v: &str, env: &Environment) -> Result<String, String> {
    if let Some(rest) = v.strip_prefix('\'') {
        let end = rest
            .find('\'')
            .ok_or_else(|| format!("unclosed single quote in {v:?}"))?;
        return Ok(rest[..end].to_string());
    }
    if let Some(rest) = v.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        loop {
            match chars.next() {
                None => return Err(format!("unclosed double quote in {v:?}")),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(c) => out.push(c),
                    None => return Err(format!("unclosed double quote in {v:?}")),
                },
                Some(c) => out.push(c),
            }
        }
        return interpolate(&out, env);
    }
    let v = match v.find(" #") {
        Some(i) => &v[..i],
        None => v,
    };
    interpolate(v.trim_end(), env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_forms() {
        let env = Environment::from_vars([("FROM_SHELL", "shell"), ("HOME", "/root")]);
        let text = "# comment\n\nA=1\nexport B = two words  # trailing\nC='lit ${A} #x'\nD=\"q\\n${A}\\\"\"\nE=${A}-${HOME}\nFROM_SHELL\nNOT_SET\nF=\nA=3\n";
        let vars = parse_env_file(text, &env).expect("parse");
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("A"), Some("3"));
        assert_eq!(get("B"), Some("two words"));
        assert_eq!(get("C"), Some("lit ${A} #x"));
        assert_eq!(get("D"), Some("q\n1\""));
        assert_eq!(get("E"), Some("1-/root"));
        assert_eq!(get("FROM_SHELL"), Some("shell"));
        assert_eq!(get("NOT_SET"), None);
        assert_eq!(get("F"), Some(""));
    }

    #[test]
    fn env_file_errors_name_the_line() {
        let env = Environment::empty();
        assert_eq!(
            parse_env_file("A=1\nB C=2\n", &env).map_err(|e| e.0),
            Err(2)
        );
        assert_eq!(parse_env_file("A='x\n", &env).map_err(|e| e.0), Err(1));
    }

    #[test]
    fn dotenv_beside_the_file_is_overridden_by_the_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(".env"),
            "SHOAL_COMPOSE_TEST_ONLY_DOTENV=dot\nPATH=from-dotenv\n",
        )
        .expect("write");
        let env = Environment::for_project(dir.path()).expect("env");
        assert_eq!(env.get("SHOAL_COMPOSE_TEST_ONLY_DOTENV"), Some("dot"));
        assert_ne!(env.get("PATH"), Some("from-dotenv"));
        let none = tempfile::tempdir().expect("tempdir");
        assert!(Environment::for_project(none.path()).is_ok());
    }
}
