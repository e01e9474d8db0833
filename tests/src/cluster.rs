//! The set-up the multi-agent tests share: data dirs, agents joined to the first one, waiting for
//! ready nodes and voters, and a service of the in-memory executor created and running.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_agent::control::api::{self, CreateServiceRequest, CreateServiceResponse};
use shoal_agent::control::client::ControlClient;
use shoal_agent::daemon::Agent;
use shoal_scheduler::{ClusterState, NodeState, Service, ServiceSpec};

use crate::{eventually, join_addr, wait_running};

/// A service of the in-memory executor: `replicas` tasks of image `sim` with a short stop grace.
pub fn sim_spec(name: &str, replicas: u64) -> ServiceSpec {
    let mut spec = shoal_scheduler::synthetic::spec(name, replicas);
    spec.image = "sim".into();
    spec.stop_grace_ms = 100;
    spec
}

/// `n` fresh data dirs, removed when dropped.
pub fn temp_dirs(n: usize) -> Vec<tempfile::TempDir> {
    (0..n)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect()
}

/// Starts one agent per dir with `start(dir, join)`: the first forms the cluster, the others join
/// it through its address.
pub async fn start_joined<F, Fut>(dirs: &[tempfile::TempDir], start: F) -> Vec<Agent>
where
    F: Fn(PathBuf, Vec<String>) -> Fut,
    Fut: Future<Output = Agent>,
{
    let mut agents = Vec::with_capacity(dirs.len());
    let mut seed = Vec::new();
    for dir in dirs {
        let agent = start(dir.path().to_path_buf(), seed.clone()).await;
        if seed.is_empty() {
            seed = vec![join_addr(&agent).await];
        }
        agents.push(agent);
    }
    agents
}

/// Waits until `agent`'s state holds `n` ready nodes.
pub async fn wait_ready_nodes(agent: &Agent, n: usize) {
    eventually(
        &format!("{n} ready nodes"),
        Duration::from_secs(20),
        || async {
            let state = agent.quorum().state();
            let ready = state
                .nodes
                .values()
                .filter(|node| node.state == NodeState::Ready)
                .count();
            (ready == n).then_some(())
        },
    )
    .await
}

/// Waits until every agent sees `n` voters.
pub async fn wait_voters(agents: &[Agent], n: usize) {
    eventually(
        &format!("{n} voters everywhere"),
        Duration::from_secs(30),
        || async {
            agents
                .iter()
                .all(|a| a.quorum().status().voters.len() == n)
                .then_some(())
        },
    )
    .await
}

/// Waits until exactly `n` agents are raft members and each of them sees `n` voters (the
/// manager set settled; the other agents are plain workers).
pub async fn wait_managers(agents: &[Agent], n: usize) {
    eventually(
        &format!("{n} members, {n} voters"),
        Duration::from_secs(30),
        || async {
            let members: Vec<_> = agents.iter().filter(|a| a.quorum().is_member()).collect();
            (members.len() == n
                && members
                    .iter()
                    .all(|a| a.quorum().status().voters.len() == n))
            .then_some(())
        },
    )
    .await
}

/// The position of a raft member that does not lead.
pub fn follower_index(agents: &[Agent]) -> usize {
    let leader = leader_index(agents);
    (0..agents.len())
        .find(|i| *i != leader && agents[*i].quorum().is_member())
        .expect("a follower")
}

/// The position of an agent that is not a raft member (a plain worker).
pub fn worker_index(agents: &[Agent]) -> usize {
    (0..agents.len())
        .find(|i| !agents[*i].quorum().is_member())
        .expect("a worker")
}

/// The position of the current leader among `agents`.
pub fn leader_index(agents: &[Agent]) -> usize {
    let leader = agents[0].quorum().leader().borrow().expect("a leader");
    agents
        .iter()
        .position(|a| a.mesh().local_peer_id() == leader)
        .expect("the leader is one of us")
}

/// Creates `spec` through `client` and waits until its `replicas` tasks run.
pub async fn create_running(client: &ControlClient, spec: ServiceSpec) {
    let name = spec.name.clone();
    let replicas = spec.replicas().unwrap_or(0);
    let _: CreateServiceResponse = client
        .post(api::SERVICES, &CreateServiceRequest { spec })
        .await
        .expect("create");
    wait_running(client, &name, replicas, Duration::from_secs(20)).await;
}

/// Runs `shoal ARGS --socket SOCKET` on a blocking thread, as the binary would.
pub async fn shoal_cli(socket: PathBuf, args: &[&str]) -> anyhow::Result<()> {
    use clap::Parser as _;
    let mut argv: Vec<String> = std::iter::once("shoal")
        .chain(args.iter().copied())
        .map(str::to_owned)
        .collect();
    argv.extend(["--socket".to_owned(), socket.display().to_string()]);
    tokio::task::spawn_blocking(move || {
        shoal_agent::cli::run(shoal_agent::cli::Cli::try_parse_from(argv)?)
    })
    .await?
}

/// Writes `text` to `dir/name` and returns the path as text (a Compose file, an `.env`).
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

/// The service named `name` in `state`.
pub fn service_named<'s>(state: &'s ClusterState, name: &str) -> &'s Service {
    state
        .services
        .values()
        .find(|s| s.spec.name == name)
        .unwrap_or_else(|| panic!("no service {name}"))
}
