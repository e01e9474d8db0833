//! Tests of [`load`](crate::load) as a whole: every form of every key, several files, anchors,
//! warnings and strict mode, errors with their places, and the sample stack in
//! `tests/fixtures/`.

use std::path::{Path, PathBuf};

use crate::{ComposeError, ComposeFile, Environment, LoadOptions, Stack, StackService, load};

mod deploy;
mod errors;
mod fixtures;
mod keys;
mod objects;

/// The test environment: a few variables, `HOME=/home/u`.
fn env() -> Environment {
    Environment::from_vars([("HOME", "/home/u"), ("TAG", "1.2"), ("EMPTY", "")])
}

/// Loads one file at `/project/compose.yaml`.
fn load_str(yaml: &str) -> Result<Stack, ComposeError> {
    load(
        "st",
        &[ComposeFile::new("/project/compose.yaml", yaml)],
        &env(),
        &LoadOptions::default(),
    )
}

/// Loads one file that must be valid.
fn ok(yaml: &str) -> Stack {
    match load_str(yaml) {
        Ok(s) => s,
        Err(e) => panic!("load failed: {e}\n{yaml}"),
    }
}

/// The error of a file that must be refused.
fn err(yaml: &str) -> String {
    match load_str(yaml) {
        Ok(_) => panic!("loaded, but should not have:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

/// One service `s` with `body` (indented by the caller as a service's keys, 4 spaces).
fn one(body: &str) -> StackService {
    let yaml = format!("services:\n  s:\n    image: busybox\n{body}");
    ok(&yaml).services.remove(0)
}

/// The directory of the fixtures.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}
