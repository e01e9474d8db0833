//! Agents in containers: each node of a test cluster is a container of its own, on a Docker
//! network the test creates, running the `shoal` binary this workspace built, started with the
//! flags (and environment) a user would give it. The nodes drive the test's Docker engine
//! through its mounted socket, each adopting only its own task containers (by label), and the
//! CLI runs inside a node (`docker exec`), as a user would on that machine.
//!
//! A [`DockerCluster`] removes every container (agents and their tasks) and the network it made
//! when dropped, also when a test fails; one left behind by a killed test run is removed by the
//! next run's harness (containers and networks are labelled with the creating process).

use std::process::{Command as Process, Output};
use std::sync::OnceLock;
use std::time::Duration;

use shoal_agent::control::views::NodeRow;

use crate::docker_cli::{docker, docker_ok, orphaned, release_shoal, workspace};

/// The image of a node, built from this workspace's binary by `tests/images/build-agent-image.sh`.
pub const AGENT_IMAGE: &str = "shoal-test/agent:latest";
/// The label every container and network of the harness carries: the creating process's id.
const OWNER_LABEL: &str = "io.shoal.test.owner";
/// The label of a task container: the node that runs it.
const NODE_LABEL: &str = "io.shoal.node.id";

/// The engine socket on this machine, as the nodes mount it.
fn engine_socket() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(host) => host
            .strip_prefix("unix://")
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("DOCKER_HOST={host}: the harness needs a unix socket")),
        Err(_) => "/var/run/docker.sock".to_owned(),
    }
}

/// Builds `shoal` (a no-op when it is fresh) and the node image from it, once per process.
pub fn ensure_agent_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        crate::ensure_test_image();
        let binary = release_shoal();
        let script = workspace().join("tests/images/build-agent-image.sh");
        let status = Process::new("bash")
            .arg(&script)
            .arg(&binary)
            .status()
            .expect("run the agent image script");
        assert!(status.success(), "building {AGENT_IMAGE} failed");
        remove_leftovers();
    });
}

/// Removes what harnesses of processes that no longer run left behind.
fn remove_leftovers() {
    for container in orphaned("container", OWNER_LABEL) {
        remove_with_tasks(&container);
    }
    for network in orphaned("network", OWNER_LABEL) {
        let _ = docker(&["network", "rm", &network]);
    }
}

/// The node id an agent container printed when it started, if it did.
fn node_id_of(container: &str) -> Option<String> {
    let logs = docker(&["logs", container]);
    let text = String::from_utf8_lossy(&logs.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("shoal agent "))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
}

/// Removes an agent container and every task container of its node. The agent goes first
/// (killed), so that it cannot start a replacement for a task container removed under it.
fn remove_with_tasks(container: &str) {
    let node = node_id_of(container);
    let _ = docker(&["kill", container]);
    if let Some(node) = node {
        let filter = format!("label={NODE_LABEL}={node}");
        let tasks = docker_ok(&["ps", "-aq", "--filter", &filter]);
        let ids: Vec<&str> = tasks.lines().filter(|l| !l.is_empty()).collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = docker(&args);
        }
    }
    let _ = docker(&["rm", "-f", container]);
}

/// A test cluster of agent containers on a network of its own.
pub struct DockerCluster {
    network: String,
    nodes: Vec<String>,
}

impl DockerCluster {
    /// Creates the network `shoal-t-<name>-<pid>`.
    pub fn new(name: &str) -> DockerCluster {
        ensure_agent_image();
        let network = format!("shoal-t-{name}-{}", std::process::id());
        let _ = docker(&["network", "rm", &network]);
        let owner = format!("{OWNER_LABEL}={}", std::process::id());
        docker_ok(&["network", "create", "--label", &owner, &network]);
        DockerCluster {
            network,
            nodes: Vec::new(),
        }
    }

    /// Starts a node: `shoal agent` with `args` (none is zero config) and `env`. Returns its
    /// container's name.
    pub fn start_node(&mut self, env: &[(&str, &str)], args: &[&str]) -> String {
        let name = format!("{}-n{}", self.network, self.nodes.len());
        let owner = format!("{OWNER_LABEL}={}", std::process::id());
        let socket = format!("{}:/var/run/docker.sock", engine_socket());
        let mut run = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--hostname",
            &name,
            "--network",
            &self.network,
            "--label",
            &owner,
            "-v",
            &socket,
            "--pull",
            "never",
        ];
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for pair in &env {
            run.extend(["-e", pair.as_str()]);
        }
        run.extend([AGENT_IMAGE, "agent", "--pull", "never"]);
        run.extend(args);
        docker_ok(&run);
        self.nodes.push(name.clone());
        name
    }

    /// The nodes' container names, in start order.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Runs the CLI inside `node`: `shoal ARGS`.
    pub fn shoal(&self, node: &str, args: &[&str]) -> Output {
        let mut exec = vec!["exec", node, "shoal"];
        exec.extend(args);
        docker(&exec)
    }

    /// `shoal node ls --format json` inside `node`, if it answers.
    pub fn node_ls(&self, node: &str) -> Option<Vec<NodeRow>> {
        let output = self.shoal(node, &["node", "ls", "--format", "json"]);
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// The node id of `node`, once its agent started.
    pub fn node_id(&self, node: &str) -> Option<String> {
        node_id_of(node)
    }

    /// The last lines of a node's log, for a failure message.
    pub fn logs(&self, node: &str, lines: usize) -> String {
        let output = docker(&["logs", "--tail", &lines.to_string(), node]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// Waits (bounded) until `check` holds for every node.
    pub async fn until_every_node(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(&DockerCluster, &str) -> bool,
    ) {
        let started = std::time::Instant::now();
        loop {
            let failing = self.nodes.iter().find(|n| !check(self, n));
            let Some(node) = failing else { return };
            if started.elapsed() > limit {
                panic!(
                    "timed out after {limit:?} waiting for: {what} (first failing: {node})\n{}",
                    self.logs(node, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            remove_with_tasks(node);
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}
