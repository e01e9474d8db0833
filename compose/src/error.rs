//! What can go wrong reading a Compose file. Every error about a place in a file names that
//! place as `file:line:column` (both 1-based), so a user can jump to it.

use std::fmt;
use std::path::PathBuf;

use crate::warnings::Warning;

/// A place in one of the Compose files: the file's name as given, its line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file's name as the caller gave it.
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Why a set of Compose files was refused. Nothing may be deployed from files with an error.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// The text is not valid YAML.
    #[error("{at}: invalid YAML: {message}")]
    Yaml {
        /// Where the parser stopped.
        at: Location,
        /// What the parser said.
        message: String,
    },
    /// The YAML is valid but is not a Compose file shoal can read (wrong shape, bad value,
    /// unknown key, reference to something undefined).
    #[error("{at}: {message}")]
    Invalid {
        /// Where the offending node starts.
        at: Location,
        /// What is wrong, naming the key (and the service).
        message: String,
    },
    /// A `${VAR:?message}` variable is unset or empty, or a `$` expression is malformed.
    #[error("{at}: {message}")]
    Interpolation {
        /// The scalar holding the expression.
        at: Location,
        /// What is wrong.
        message: String,
    },
    /// With `strict`, every key shoal does not support is an error; all of them are listed.
    #[error("{} unsupported setting(s) (strict mode):\n  {}", warnings.len(), list(warnings))]
    Strict {
        /// What would have been warnings.
        warnings: Vec<Warning>,
    },
    /// `depends_on` forms a cycle; the services are named in order, the first repeated last.
    #[error("depends_on cycle: {}", cycle.join(" -> "))]
    Cycle {
        /// e.g. `["a", "b", "a"]`.
        cycle: Vec<String>,
    },
    /// A file the Compose file names (an `env_file`, `.env`) could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A stack name is empty or has characters other than `a-z`, `0-9`, `_`, `-`, `.`.
    #[error(
        "invalid stack name {0:?} (expected lowercase letters, digits, '-', '_' or '.', starting with a letter or digit)"
    )]
    StackName(String),
    /// `load` was given no file.
    #[error("no Compose file given")]
    NoFiles,
}

fn list(warnings: &[Warning]) -> String {
    warnings
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// This crate's result.
pub type Result<T, E = ComposeError> = std::result::Result<T, E>;
