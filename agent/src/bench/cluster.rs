//! `shoal bench cluster`: N whole agents in this process (mesh, quorum, dispatch, worker) with
//! the in-memory `sim` executor, joined through the first one's address. Figures: the time until
//! every node is ready, the raft group's size (voters and learners) once it settled, a service
//! of R replicas until every replica runs (and on how many nodes), and a scale to S replicas
//! until every replica runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_scheduler::{ClusterState, Command, DesiredState, NodeState, ServiceMode, TaskState};

use shoal_consensus::RaftTiming;

use crate::daemon::{Agent, AgentConfig, ExecutorKind};
use crate::worker::now;

/// Flags of `shoal bench cluster`.
#[derive(clap::Args, Debug)]
pub struct ClusterBenchArgs {
    /// Agents in the cluster.
    #[arg(long, default_value_t = 20)]
    pub agents: usize,
    /// Replicas of the service created once every node is ready.
    #[arg(long, default_value_t = 2_000)]
    pub replicas: u64,
    /// Then scale the service to this many replicas (0: no scale).
    #[arg(long, default_value_t = 0)]
    pub scale_to: u64,
    /// Agents started at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Raft timing (slower settings keep a leader while hundreds of agents share two cores).
    #[command(flatten)]
    pub timing: super::raft::TimingArgs,
}

/// Runs the benchmark and prints a human line, then the JSON result line last.
pub async fn run(args: &ClusterBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.agents >= 1, "--agents must be at least 1");
    if std::env::var_os("RUST_LOG").is_some() {
        crate::daemon::init_logging();
    }
    let root = std::env::temp_dir().join(format!("shoal-bench-cluster-{}", std::process::id()));
    let result = measure(args, &root).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn config(dir: PathBuf, join: Vec<String>, timing: RaftTiming) -> AgentConfig {
    let mut config = AgentConfig::for_tests(dir, ExecutorKind::Sim);
    config.join = join;
    config.raft_timing = timing;
    config
}

/// Starts `n` agents: the first forms the cluster, the others join it, `concurrency` at a time.
pub async fn start_cluster(
    root: &Path,
    n: usize,
    concurrency: usize,
    timing: RaftTiming,
) -> anyhow::Result<Vec<Agent>> {
    let first = Agent::start(config(root.join("agent-0"), Vec::new(), timing)).await?;
    let seed = first
        .mesh()
        .listen_addrs()
        .await?
        .first()
        .map(ToString::to_string)
        .ok_or_else(|| anyhow::anyhow!("the first agent has no listen address"))?;
    let mut agents = vec![first];
    let indexes: Vec<usize> = (1..n).collect();
    for wave in indexes.chunks(concurrency.max(1)) {
        let starts = wave.iter().map(|i| {
            let dir = root.join(format!("agent-{i}"));
            Agent::start(config(dir, vec![seed.clone()], timing))
        });
        for started in futures::future::join_all(starts).await {
            agents.push(started?);
        }
    }
    Ok(agents)
}

/// The agent that leads, as the first agent knows it.
pub fn leader_of(agents: &[Agent]) -> Option<&Agent> {
    let leader = (*agents[0].quorum().leader().borrow())?;
    agents.iter().find(|a| a.mesh().local_peer_id() == leader)
}

fn ready_nodes(state: &ClusterState) -> usize {
    state
        .nodes
        .values()
        .filter(|n| n.state == NodeState::Ready)
        .count()
}

/// Running tasks, and the number of nodes they run on.
pub fn running(state: &ClusterState) -> (u64, usize) {
    let mut nodes = BTreeSet::new();
    let mut count = 0;
    for task in state.tasks.values() {
        if task.desired == DesiredState::Running && task.status.state == TaskState::Running {
            count += 1;
            if let Some(node) = &task.node {
                nodes.insert(node.clone());
            }
        }
    }
    (count, nodes.len())
}

/// Polls the leader's state every 50 ms until `done` holds; fails after `limit`.
async fn wait_on_leader(
    agents: &[Agent],
    what: &str,
    limit: Duration,
    mut done: impl FnMut(&ClusterState) -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut shown = Instant::now();
    loop {
        if let Some(leader) = leader_of(agents)
            && done(&leader.quorum().state())
        {
            return Ok(started.elapsed());
        }
        if shown.elapsed() >= Duration::from_secs(5) {
            shown = Instant::now();
            if let Some(leader) = leader_of(agents) {
                eprintln!("  {what}: {}", progress(&leader.quorum().state()));
            }
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "gave up after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Tasks by observed state, for a progress line.
fn progress(state: &ClusterState) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for task in state.tasks.values() {
        *counts
            .entry(format!("{:?}", task.status.state))
            .or_insert(0u64) += 1;
    }
    format!("{counts:?}")
}

async fn measure(args: &ClusterBenchArgs, root: &Path) -> anyhow::Result<()> {
    let n = args.agents;
    let started = Instant::now();
    let agents = start_cluster(root, n, args.concurrency, args.timing.timing()).await?;
    // Generous on purpose: this is a check that every agent gets ready, and the time it took is
    // the figure; a slow machine should print a slow figure, not fail.
    let limit = Duration::from_secs(60) + Duration::from_secs(n as u64);
    wait_on_leader(&agents, "every node ready", limit, |s| ready_nodes(s) == n).await?;
    let formed = started.elapsed();
    // Let the autopilot settle the raft group (learners promoted or removed).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = leader_of(&agents)
        .ok_or_else(|| anyhow::anyhow!("no leader"))?
        .quorum()
        .status();
    let members = agents.iter().filter(|a| a.quorum().is_member()).count();

    let mut spec = shoal_scheduler::synthetic::spec("bench", args.replicas);
    spec.image = "sim".into();
    spec.stop_grace_ms = 100;
    let quorum = agents[0].quorum().clone();
    let placing = Instant::now();
    let created = quorum
        .write(Command::CreateService { spec, at: now() })
        .await?;
    anyhow::ensure!(created.is_ok(), "create refused: {created:?}");
    let replicas = args.replicas;
    let task_limit = Duration::from_secs(120) + Duration::from_millis(replicas / 20);
    wait_on_leader(&agents, "every replica running", task_limit, |s| {
        running(s).0 == replicas
    })
    .await?;
    let placed = placing.elapsed();
    let leader = leader_of(&agents).ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let (_, spread) = running(&leader.quorum().state());

    let mut scaled = None;
    if args.scale_to > 0 {
        let state = leader.quorum().state();
        let service = state
            .services
            .values()
            .next()
            .ok_or_else(|| anyhow::anyhow!("the service is gone"))?;
        let mut spec = service.spec.clone();
        spec.mode = ServiceMode::Replicated {
            replicas: args.scale_to,
        };
        let scaling = Instant::now();
        let update = Command::UpdateService {
            id: service.id,
            expected_revision: service.revision,
            spec,
            at: now(),
        };
        let answer = quorum.write(update).await?;
        anyhow::ensure!(answer.is_ok(), "scale refused: {answer:?}");
        let target = args.scale_to;
        let limit = Duration::from_secs(120) + Duration::from_millis(target / 10);
        wait_on_leader(&agents, "every scaled replica running", limit, |s| {
            running(s).0 == target
        })
        .await?;
        scaled = Some(scaling.elapsed());
    }
    println!(
        "{n} agents: all ready in {:.2}s; raft group {} voters + {} learners ({members} members); \
         {replicas} replicas running on {spread} nodes in {:.2}s{}",
        formed.as_secs_f64(),
        status.voters.len(),
        status.learners.len(),
        placed.as_secs_f64(),
        scaled.map_or(String::new(), |d| format!(
            "; scaled to {} in {:.2}s",
            args.scale_to,
            d.as_secs_f64()
        )),
    );
    let json = serde_json::json!({
        "bench": "cluster",
        "agents": n,
        "formed_s": formed.as_secs_f64(),
        "voters": status.voters.len(),
        "learners": status.learners.len(),
        "raft_members": members,
        "replicas": replicas,
        "placed_s": placed.as_secs_f64(),
        "nodes_with_tasks": spread,
        "scale_to": args.scale_to,
        "scaled_s": scaled.map(|d| d.as_secs_f64()),
    });
    println!("{json}");
    // All at once and without goodbyes: two hundred graceful leaves one after the other make
    // every survivor fold each Left and re-elect leaders, for minutes.
    futures::future::join_all(agents.into_iter().map(Agent::kill)).await;
    Ok(())
}
