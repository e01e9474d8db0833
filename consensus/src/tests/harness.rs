//! In-process agents on loopback: a real mesh (shoal_discovery) and a real quorum on redb in a
//! temp dir per agent. Cluster tests take [`serial`] so that two clusters never share the two
//! cores at once (that would be a test of the machine, not of raft).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use openraft::raft::AppendEntriesRequest;
use shoal_discovery::{Mesh, MeshConfig, Multiaddr, NodeInfo, PeerId};
use shoal_metrics::prometheus_client::registry::Registry;
use shoal_scheduler::{Command, ServiceSpec, Timestamp};
use tokio::sync::{Mutex, MutexGuard};

use crate::types::{TypeConfig, Vote};
use crate::{ConsensusError, Quorum, QuorumConfig};

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Serialises cluster tests.
pub(crate) async fn serial() -> MutexGuard<'static, ()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    SERIAL.lock().await
}

/// One agent: its mesh and quorum.
pub(crate) struct Agent {
    pub(crate) mesh: Mesh,
    pub(crate) quorum: Quorum,
    pub(crate) dir: PathBuf,
}

impl Agent {
    /// A crash: the mesh dies without a goodbye, raft stops, storage closes.
    pub(crate) async fn kill(self) -> PathBuf {
        self.mesh.kill();
        self.quorum.shutdown().await;
        self.dir
    }
}

pub(crate) fn info(name: &str) -> NodeInfo {
    NodeInfo {
        hostname: name.to_owned(),
        os: "linux".into(),
        arch: "x86_64".into(),
        nano_cpus: 2_000_000_000,
        memory_bytes: 4 << 30,
        runtime: "sim".into(),
        version: "test".into(),
        ..NodeInfo::default()
    }
}

pub(crate) fn mesh_config(dir: &Path, seeds: &[Multiaddr], token: Option<String>) -> MeshConfig {
    let mut mc = MeshConfig::for_tests(dir.join("mesh"));
    mc.join = seeds.to_vec();
    mc.token = token;
    mc.heartbeat_interval = Duration::from_millis(150);
    mc.suspect_after = Duration::from_millis(600);
    mc.dead_after = Duration::from_millis(1200);
    mc
}

pub(crate) async fn start_mesh(
    dir: &Path,
    name: &str,
    seeds: &[Multiaddr],
    token: Option<String>,
) -> Mesh {
    let mut registry = Registry::default();
    match shoal_discovery::start(mesh_config(dir, seeds, token), info(name), &mut registry).await {
        Ok(m) => m,
        Err(e) => panic!("mesh start: {e}"),
    }
}

pub(crate) fn quorum_config(dir: &Path, name: &str) -> QuorumConfig {
    let mut config = QuorumConfig::for_tests(dir.join("raft"), info(name));
    // These tests check what survives, not how fast: on a loaded 2-core machine an election
    // among the survivors can take a few seconds.
    config.write_timeout = Duration::from_secs(15);
    config
}

pub(crate) async fn start_quorum(
    mesh: &Mesh,
    config: QuorumConfig,
) -> Result<Quorum, ConsensusError> {
    start_quorum_registered(mesh, config).await.map(|(q, _)| q)
}

/// [`start_quorum`], keeping the registry its metrics are in.
pub(crate) async fn start_quorum_registered(
    mesh: &Mesh,
    config: QuorumConfig,
) -> Result<(Quorum, Registry), ConsensusError> {
    let mut registry = Registry::default();
    let quorum = tokio::time::timeout(
        Duration::from_secs(30),
        Quorum::start(config, mesh.clone(), &mut registry),
    )
    .await
    .unwrap_or_else(|_| Err(ConsensusError::JoinFailed("start timed out".into())))?;
    Ok((quorum, registry))
}

/// The value of the sample `line` starts with (name and labels, exactly as exposed), or 0.
pub(crate) fn sample(registry: &Registry, line: &str) -> f64 {
    let mut text = String::new();
    if shoal_metrics::prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        return 0.0;
    }
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Starts an agent in `dir` (reusing its identity and raft data if present).
pub(crate) async fn start_agent(
    dir: &Path,
    name: &str,
    seeds: &[Multiaddr],
    tweak: impl FnOnce(&mut QuorumConfig),
) -> Agent {
    let mesh = start_mesh(dir, name, seeds, None).await;
    let mut config = quorum_config(dir, name);
    tweak(&mut config);
    let quorum = match start_quorum(&mesh, config).await {
        Ok(q) => q,
        Err(e) => panic!("quorum start of {name}: {e}"),
    };
    Agent {
        mesh,
        quorum,
        dir: dir.to_path_buf(),
    }
}

pub(crate) async fn addr(mesh: &Mesh) -> Multiaddr {
    match mesh.listen_addrs().await {
        Ok(a) if !a.is_empty() => a[0].clone(),
        other => panic!("no listen address: {other:?}"),
    }
}

/// Polls `f` every 20 ms until it holds or `limit` passes.
pub(crate) async fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A write that creates one service named `name`.
pub(crate) fn create(name: &str) -> Command {
    Command::CreateService {
        spec: spec(name),
        at: Timestamp(1),
    }
}

pub(crate) fn spec(name: &str) -> ServiceSpec {
    ServiceSpec {
        stop_grace_ms: 1000,
        ..ServiceSpec::new(name, "busybox")
    }
}

/// Service names in a state.
pub(crate) fn service_names(q: &Quorum) -> Vec<String> {
    let mut names: Vec<String> = q
        .state()
        .services
        .values()
        .map(|s| s.spec.name.clone())
        .collect();
    names.sort();
    names
}

/// Starts `n` agents with zero-config bootstrap: the first agent's mesh is the seed, all
/// quorums start at once, the lowest PeerId initialises and the others join. Returns once
/// `voters` managers exist.
pub(crate) async fn cluster(
    root: &Path,
    n: usize,
    voters: usize,
    tweak: impl Fn(&mut QuorumConfig),
) -> Vec<Agent> {
    let first = start_mesh(&root.join("a0"), "node0", &[], None).await;
    let seed = addr(&first).await;
    let mut meshes = vec![(root.join("a0"), first)];
    for i in 1..n {
        let dir = root.join(format!("a{i}"));
        meshes.push((
            dir.clone(),
            start_mesh(&dir, &format!("node{i}"), std::slice::from_ref(&seed), None).await,
        ));
    }
    // Let the meshes see each other before the bootstrap window starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    for (_, mesh) in &meshes {
        while Instant::now() < deadline {
            let seen = mesh.members().await.map(|m| {
                m.iter()
                    .filter(|m| m.state == shoal_discovery::MemberState::Alive)
                    .count()
            });
            if seen.is_ok_and(|c| c + 1 >= n) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let starts = meshes.iter().enumerate().map(|(i, (dir, mesh))| {
        let mut config = quorum_config(dir, &format!("node{i}"));
        tweak(&mut config);
        let mesh = mesh.clone();
        async move { start_quorum(&mesh, config).await }
    });
    let quorums = futures::future::join_all(starts).await;
    let mut agents = Vec::new();
    for ((dir, mesh), q) in meshes.into_iter().zip(quorums) {
        match q {
            Ok(quorum) => agents.push(Agent { mesh, quorum, dir }),
            Err(e) => panic!("quorum start: {e}"),
        }
    }
    // Every member must see the final, uniform configuration: killing managers while a joint
    // configuration is still in flight could leave its old half without a majority. An agent
    // the leader's membership does not hold is a plain worker (a learner autopilot removed
    // keeps the last membership it was sent, and is not waited on).
    let uniform = |quorum: &Quorum| {
        use openraft::async_runtime::WatchReceiver;
        let Some(raft) = quorum.raft() else {
            return false; // a plain worker
        };
        let metrics = raft.metrics().borrow_watched().clone();
        let single = metrics
            .membership_config
            .membership()
            .get_joint_config()
            .len()
            == 1;
        single && quorum.status().voters.len() == voters
    };
    eventually(
        &format!("a leader with {voters} voters, uniform"),
        Duration::from_secs(20),
        || {
            agents
                .iter()
                .any(|a| a.quorum.is_leader() && uniform(&a.quorum))
        },
    )
    .await;
    let members = agents
        .iter()
        .find(|a| a.quorum.is_leader())
        .map(|leader| {
            let status = leader.quorum.status();
            let mut members = status.voters;
            members.extend(status.learners);
            members
        })
        .unwrap_or_default();
    for agent in agents
        .iter()
        .filter(|a| members.contains(&a.quorum.peer_id()))
    {
        let quorum = agent.quorum.clone();
        eventually(
            &format!("{voters} voters, uniform"),
            Duration::from_secs(20),
            || uniform(&quorum),
        )
        .await;
    }
    agents
}

/// The index of the agent that is leader (as agent 0 sees it).
pub(crate) fn leader_index(agents: &[Agent]) -> Option<usize> {
    agents.iter().position(|a| a.quorum.is_leader())
}

/// An entry-less AppendEntries (a heartbeat) from the leader `from` of `term`.
pub(crate) fn heartbeat(term: u64, from: &PeerId) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(term, crate::raft_id_of_peer(from)),
        prev_log_id: None,
        leader_commit: None,
        entries: Vec::new(),
    }
}

/// A single-manager cluster, and a mesh agent of the same mesh that is no member of it.
pub(crate) async fn member_and_outsider(root: &Path) -> (Agent, Mesh) {
    let member = start_agent(&root.join("a0"), "node0", &[], |_| {}).await;
    let seed = addr(&member.mesh).await;
    let outsider = start_mesh(&root.join("a1"), "node1", &[seed], None).await;
    (member, outsider)
}
