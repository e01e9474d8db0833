//! What the container harnesses ([`crate::containers`], [`crate::nodes`]) share: the Docker
//! CLI, one optimised build of `shoal` per test process, and the test of whether the process that
//! labelled a leftover container, network or volume still runs.

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output};
use std::sync::OnceLock;

/// Runs `docker ARGS` and returns what it did, whatever its exit status.
pub(crate) fn docker(args: &[&str]) -> Output {
    Process::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs")
}

/// Runs `docker ARGS`, panics unless it succeeds, and returns its trimmed standard output.
pub(crate) fn docker_ok(args: &[&str]) -> String {
    let output = docker(args);
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The workspace's root directory.
pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the optimised `shoal` binary (a no-op when it is fresh), once per process, and
/// returns its path; `SHOAL_TEST_BINARY=PATH` gives one built beforehand instead (nothing is
/// built then: a binary of another revision is the caller's choice).
///
/// The binary is an optimised one: twenty unoptimised agents starting at once saturate two
/// cores for a minute (their event loops stall for a second at a time, and raft cannot keep a
/// leader), which tests the build profile, not the cluster. `.ci/run` builds it in a step of
/// its own before the tests.
pub(crate) fn release_shoal() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(given) = std::env::var_os("SHOAL_TEST_BINARY") {
                return PathBuf::from(given);
            }
            let mut cargo = Process::new(env!("CARGO"));
            without_test_environment(&mut cargo);
            let built = cargo
                .args([
                    "build",
                    "--release",
                    "-p",
                    "shoal-agent",
                    "--bin",
                    "shoal",
                    "--locked",
                ])
                .current_dir(workspace())
                .status()
                .expect("cargo runs");
            assert!(built.success(), "building the shoal binary failed");
            workspace().join("target/release/shoal")
        })
        .clone()
}

/// Removes the variables cargo sets for a test process from a nested cargo's environment.
///
/// Build scripts (ring's, for one) rerun when `CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME` and the
/// like change, and cargo compares them with its own environment: a build started from a test
/// would see the test crate's values and rebuild half the tree, then the next plain build
/// would rebuild it back.
fn without_test_environment(command: &mut Process) {
    const SET_FOR_TESTS: [&str; 8] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "OUT_DIR",
    ];
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let set_for_tests = SET_FOR_TESTS.contains(&name)
            || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_CFG_")
            || name.starts_with("CARGO_BIN_EXE_")
            || name.starts_with("NEXTEST");
        if set_for_tests {
            command.env_remove(name);
        }
    }
}

/// Whether the process whose id is `owner` (a label's value) still runs on this machine.
pub(crate) fn owner_alive(owner: &str) -> bool {
    owner
        .parse::<u32>()
        .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// The objects of one kind (`container`, `network` or `volume`) that carry the label `label`
/// with the id of a process that no longer runs.
pub(crate) fn orphaned(kind: &str, label: &str) -> Vec<String> {
    let filter = format!("label={label}");
    let format = format!("{{{{.{}}}}} {{{{.Label \"{label}\"}}}}", id_field(kind));
    let listed = match kind {
        "container" => docker_ok(&["ps", "-a", "--filter", &filter, "--format", &format]),
        _ => docker_ok(&[kind, "ls", "--filter", &filter, "--format", &format]),
    };
    listed
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, owner)| !owner_alive(owner))
        .map(|(id, _)| id.to_owned())
        .collect()
}

/// The `--format` field that identifies an object of `kind` in its listing.
fn id_field(kind: &str) -> &'static str {
    match kind {
        "volume" => "Name",
        _ => "ID",
    }
}
