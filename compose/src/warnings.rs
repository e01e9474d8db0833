//! Warnings: settings that are valid Compose but that shoal does not do (or does differently).
//! Each names the key, the service (when it is in one) and the place. With
//! [`LoadOptions::strict`](crate::LoadOptions) every warning is an error instead.

use std::fmt;

use crate::error::Location;
use crate::yaml::Mark;

/// One setting shoal does not apply as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where the key is.
    pub at: Location,
    /// The service it belongs to (`None` for top-level keys).
    pub service: Option<String>,
    /// The key's path inside the service or the file, e.g. `deploy.resources.limits.pids`.
    pub key: String,
    /// What shoal does instead.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.service {
            Some(s) => write!(
                f,
                "{}: service {s:?}: `{}` {}",
                self.at, self.key, self.message
            ),
            None => write!(f, "{}: `{}` {}", self.at, self.key, self.message),
        }
    }
}

/// Collects warnings while a file is read.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    pub list: Vec<Warning>,
}

impl Warnings {
    /// Records that `key` (at `mark`, in `service`) is not applied, and what happens instead.
    pub fn add(
        &mut self,
        mark: &Mark,
        service: Option<&str>,
        key: &str,
        message: impl Into<String>,
    ) {
        self.list.push(Warning {
            at: mark.location(),
            service: service.map(str::to_string),
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// The usual message: the key is ignored.
    pub fn ignored(&mut self, mark: &Mark, service: Option<&str>, key: &str) {
        self.add(
            mark,
            service,
            key,
            "is not supported by shoal and is ignored",
        );
    }
}
