//! Compose files read into shoal service specs: the file half of `shoal stack deploy`.
//!
//! [`load`] takes one or more Compose files (already read: a name and the text), the variables to
//! interpolate with ([`Environment`]) and [`LoadOptions`], and returns a [`Stack`]: every service
//! as a [`shoal_scheduler::ServiceSpec`] named `STACK_SERVICE` and labelled
//! [`STACK_NAMESPACE_LABEL`]`=STACK`, with what the cluster does not keep in a spec beside it
//! (start dependencies, the file's names of secrets and configs, networks), the top-level
//! secrets, configs, volumes and networks, and the warnings. [`start_order`] gives the services in
//! `depends_on` order. Nothing here talks to a cluster; the only I/O is reading the `env_file`s a
//! service names (and `.env`, in [`Environment::for_project`]).
//!
//! # Layout
//! - [`yaml`]: text into a tree of nodes with line and column; anchors, aliases, merge keys.
//! - [`interpolate`]: `${VAR}`, `${VAR:-default}`, `${VAR:?error}`, `$$`, ... on every value.
//! - [`mod@env`]: the [`Environment`], and the `.env` / `env_file` format.
//! - [`merge`]: several files into one tree, as `docker compose` merges them.
//! - `convert` (with `ports`, `mounts`, `health`, `deploy`, `read`): the tree into the [`Stack`];
//!   every key is mapped, kept, warned about, or refused.
//! - [`model`]: the [`Stack`] and its parts.
//! - [`depends`]: the start order and its cycles.
//! - [`error`] and [`warnings`]: what went wrong, and what shoal does not do, each with its place.
//!
//! # How `shoal stack deploy -c a.yaml [-c b.yaml] [--strict] NAME` uses it
//! ```text
//! let files = paths.iter().map(ComposeFile::read).collect::<Result<Vec<_>>>()?;
//! let env = Environment::for_project(&project_dir(&files[0].path))?;   // .env, then the process
//! let stack = load(NAME, &files, &env, &LoadOptions { strict })?;       // nothing deployed on Err
//! for w in &stack.warnings { eprintln!("warning: {w}") }
//! // create the stack's secrets, configs (FileSource::File: read the file; Environment: env.get),
//! // volumes and networks that are not `external`, named as `stack.secrets[..].name` etc.;
//! for service in start_order(&stack)? {
//!     // wait until every `service.depends_on` entry has reached its `condition`, then create or
//!     // update `service.spec` (already named NAME_SERVICE, labelled io.shoal.stack.namespace=NAME)
//!     // with its `secrets` and `configs` mounted at their `target`s.
//! }
//! // remove the services labelled with the stack that `stack.services` no longer has.
//! ```
//!
//! # Order of work
//! Each file is parsed (YAML errors carry line and column) and interpolated on its own, then
//! the files are merged in order, then the result is converted. A value's place is the file and
//! line it came from, so an error found after the merge still points at the right file.

pub mod depends;
pub mod env;
pub mod error;
pub mod interpolate;
pub mod merge;
pub mod model;
pub mod warnings;
pub mod yaml;

mod convert;
mod deploy;
mod health;
mod mounts;
mod ports;
mod read;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use depends::start_order;
pub use env::Environment;
pub use error::{ComposeError, Location, Result};
pub use model::{
    Condition, Dependency, FileMount, FileObject, FileSource, Network, STACK_NAMESPACE_LABEL,
    Stack, StackService, Volume,
};
pub use warnings::Warning;

/// One Compose file: where it is (its directory resolves relative paths; its name is shown in
/// errors) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeFile {
    /// The file's path as the user gave it.
    pub path: PathBuf,
    /// Its contents.
    pub contents: String,
}

impl ComposeFile {
    /// A file from its path and text.
    pub fn new(path: impl Into<PathBuf>, contents: impl Into<String>) -> Self {
        ComposeFile {
            path: path.into(),
            contents: contents.into(),
        }
    }

    /// Reads a file from disk.
    pub fn read(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let contents = std::fs::read_to_string(&path).map_err(|source| ComposeError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(ComposeFile { path, contents })
    }
}

/// How strictly to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Every warning (a setting shoal does not apply as written) is an error instead.
    pub strict: bool,
}

/// The directory relative paths are resolved against: the first file's, made absolute with the
/// process's working directory if it is relative.
pub fn project_dir(first: &Path) -> PathBuf {
    let dir = first.parent().unwrap_or(Path::new(""));
    if dir.is_absolute() {
        return dir.to_path_buf();
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    mounts::join_clean(&cwd, &dir.display().to_string())
}

/// Reads `files` (merged in order, later ones overriding) as the stack `stack_name`.
///
/// `env` is what `${VAR}` expressions see (usually [`Environment::for_project`] of the first
/// file's directory). Relative paths (bind mounts, `env_file`, secret and config files) are
/// resolved against the first file's directory, as Compose does for override files too.
pub fn load(
    stack_name: &str,
    files: &[ComposeFile],
    env: &Environment,
    options: &LoadOptions,
) -> Result<Stack> {
    check_stack_name(stack_name)?;
    let Some(first) = files.first() else {
        return Err(ComposeError::NoFiles);
    };
    let mut root: Option<yaml::Node> = None;
    for file in files {
        let mut tree = yaml::parse(&file.path.display().to_string(), &file.contents)?;
        interpolate::interpolate_tree(&mut tree, env)?;
        if tree.as_map().is_none() {
            return Err(tree.mark.invalid(format!(
                "not a Compose file: the top level must be a mapping with a `services` key, not {}",
                tree.kind()
            )));
        }
        match &mut root {
            None => root = Some(tree),
            Some(base) => merge::merge(base, tree),
        }
    }
    let root = root.ok_or(ComposeError::NoFiles)?;
    let stack = convert::stack(stack_name, &root, &project_dir(&first.path), env)?;
    if options.strict && !stack.warnings.is_empty() {
        return Err(ComposeError::Strict {
            warnings: stack.warnings,
        });
    }
    Ok(stack)
}

/// A stack's name is lowercase letters, digits, `-`, `_` and `.`, starting with a letter or a
/// digit, as `docker stack` takes it.
pub fn check_stack_name(name: &str) -> Result<()> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ComposeError::StackName(name.to_string()))
    }
}
