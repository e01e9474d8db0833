//! `shoal bench mesh`: N agents in one process on loopback bootstrap through one seed; measures
//! the time until every agent's view is complete, then the steady-state mesh traffic per agent.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shoal_discovery::{
    MemberState, MembershipChange, Mesh, MeshConfig, Multiaddr, NodeInfo, PeerId,
};
use shoal_metrics::prometheus_client::registry::Registry;
use tokio::sync::broadcast::{self, error::TryRecvError};

/// Arguments of `shoal bench mesh`.
#[derive(clap::Args, Debug)]
pub struct MeshBenchArgs {
    /// Number of agents started in this process.
    #[arg(long, default_value_t = 10)]
    pub agents: usize,
    /// Length of the steady-state measurement window, in seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

/// Wait between convergence and the traffic window (longer than a joiner's full announcements).
const SETTLE: Duration = Duration::from_secs(5);

/// One benchmark agent.
struct BenchAgent {
    mesh: Mesh,
    registry: Registry,
    /// Its membership changes, subscribed to as it started.
    changes: broadcast::Receiver<MembershipChange>,
}

/// The members one agent holds alive, kept from its change stream: watching convergence this
/// way costs the agents nothing, where asking 200 agents for their 200 members every few
/// milliseconds would take a good part of the two cores the agents themselves need.
#[derive(Default)]
struct TrackedView {
    alive: HashSet<PeerId>,
    /// The stream lagged: the view must be read again from the agent.
    stale: bool,
}

impl TrackedView {
    fn apply(&mut self, change: MembershipChange) {
        match change {
            MembershipChange::Joined(m) | MembershipChange::Updated { current: m, .. } => {
                if m.state == MemberState::Alive {
                    self.alive.insert(m.peer_id);
                } else {
                    self.alive.remove(&m.peer_id);
                }
            }
            MembershipChange::Alive(p) => {
                self.alive.insert(p);
            }
            MembershipChange::Suspect(p)
            | MembershipChange::Dead(p)
            | MembershipChange::Left(p) => {
                self.alive.remove(&p);
            }
        }
    }

    /// Folds in every change the agent published since the last call.
    fn drain(&mut self, changes: &mut broadcast::Receiver<MembershipChange>) {
        loop {
            match changes.try_recv() {
                Ok(change) => self.apply(change),
                Err(TryRecvError::Lagged(_)) => self.stale = true,
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    /// Reads the view from the agent itself.
    async fn resync(&mut self, mesh: &Mesh) -> anyhow::Result<()> {
        self.alive = alive_members(mesh).await?;
        self.stale = false;
        Ok(())
    }
}

async fn alive_members(mesh: &Mesh) -> anyhow::Result<HashSet<PeerId>> {
    Ok(mesh
        .members()
        .await?
        .into_iter()
        .filter(|m| m.state == MemberState::Alive)
        .map(|m| m.peer_id)
        .collect())
}

/// Traffic of all agents at one instant.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    messages: u64,
    payload_bytes: u64,
    wire_bytes: u64,
    connections_opened: u64,
}

/// Runs the benchmark and prints a human line, then the JSON result line last.
pub async fn run(args: &MeshBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.agents >= 2, "--agents must be at least 2");
    if std::env::var_os("RUST_LOG").is_some() {
        crate::daemon::init_logging();
    }
    anyhow::ensure!(args.seconds >= 1, "--seconds must be at least 1");
    let root = std::env::temp_dir().join(format!("shoal-bench-mesh-{}", std::process::id()));
    let result = measure(args, &root).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

async fn measure(args: &MeshBenchArgs, root: &std::path::Path) -> anyhow::Result<()> {
    let n = args.agents;
    let started = Instant::now();
    let seed = start_agent(root.join("agent-0"), &[]).await?;
    let seed_addr = seed
        .mesh
        .listen_addrs()
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the seed has no listen address"))?;
    let mut agents = vec![seed];
    let mut views: Vec<TrackedView> = vec![TrackedView::default()];
    for i in 1..n {
        agents.push(
            start_agent(
                root.join(format!("agent-{i}")),
                std::slice::from_ref(&seed_addr),
            )
            .await?,
        );
        views.push(TrackedView::default());
    }
    let all_started = started.elapsed();

    let limit = Duration::from_secs(30) + Duration::from_millis(200 * n as u64);
    let converged = wait_converged(&mut agents, &mut views, limit).await?;
    let converged_s = converged.as_secs_f64();

    // Joiners announce themselves in full every interval for a few seconds after they start:
    // the steady state begins after that.
    tokio::time::sleep(SETTLE).await;
    let before = sample(&agents);
    let window = Duration::from_secs(args.seconds);
    tokio::time::sleep(window).await;
    let after = sample(&agents);
    let per_agent_s = (n as f64) * window.as_secs_f64();
    let msgs = (after.messages - before.messages) as f64 / per_agent_s;
    let payload = (after.payload_bytes - before.payload_bytes) as f64 / per_agent_s;
    let wire = (after.wire_bytes - before.wire_bytes) as f64 / per_agent_s;
    let opened = (after.connections_opened - before.connections_opened) as f64 / per_agent_s;
    let complete = count_complete(&agents).await?;

    for agent in &agents {
        let _ = agent.mesh.shutdown().await;
    }
    println!(
        "mesh bench: {n} agents started in {:.2}s, every view complete after {converged_s:.2}s; \
         steady state over {}s from {}s after that: {msgs:.1} msgs, {payload:.0} payload B, {wire:.0} wire B, \
         {opened:.2} new connections per agent per s ({complete}/{n} views still complete at the end)",
        all_started.as_secs_f64(),
        args.seconds,
        SETTLE.as_secs()
    );
    println!(
        "{{\"bench\":\"mesh\",\"agents\":{n},\"converged_seconds\":{converged_s:.3},\
         \"msgs_per_agent_per_s\":{msgs:.2},\"bytes_per_agent_per_s\":{wire:.0}}}"
    );
    Ok(())
}

async fn start_agent(dir: PathBuf, join: &[Multiaddr]) -> anyhow::Result<BenchAgent> {
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut config = MeshConfig::for_tests(dir);
    config.join = join.to_vec();
    config.cluster = "bench".to_owned();
    let mut registry = Registry::default();
    let mesh = shoal_discovery::start(config, bench_info(&dir_name), &mut registry).await?;
    let changes = mesh.subscribe();
    Ok(BenchAgent {
        mesh,
        registry,
        changes,
    })
}

/// What a typical agent announces (so that heartbeat sizes are realistic).
fn bench_info(name: &str) -> NodeInfo {
    NodeInfo {
        hostname: format!("bench-{name}.example.internal"),
        labels: [
            ("zone".to_owned(), "eu-west-1a".to_owned()),
            ("rack".to_owned(), "r12".to_owned()),
            ("disk".to_owned(), "ssd".to_owned()),
        ]
        .into_iter()
        .collect(),
        os: "linux".to_owned(),
        arch: "x86_64".to_owned(),
        nano_cpus: 8_000_000_000,
        memory_bytes: 32 << 30,
        runtime: "sim".to_owned(),
        version: "0.1.0".to_owned(),
        ..NodeInfo::default()
    }
}

/// Agents whose view holds every other agent alive.
async fn count_complete(agents: &[BenchAgent]) -> anyhow::Result<usize> {
    let want = agents.len() - 1;
    let mut complete = 0;
    for agent in agents {
        complete += usize::from(alive_members(&agent.mesh).await?.len() == want);
    }
    Ok(complete)
}

/// Time from the call until every view is complete (bounded by `limit`). Views are followed
/// through the agents' change streams; the moment they all say complete is checked against
/// the agents' own views before it counts.
async fn wait_converged(
    agents: &mut [BenchAgent],
    views: &mut [TrackedView],
    limit: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let want = agents.len() - 1;
    for (agent, view) in agents.iter().zip(views.iter_mut()) {
        view.resync(&agent.mesh).await?;
    }
    loop {
        let mut complete = 0;
        for (agent, view) in agents.iter_mut().zip(views.iter_mut()) {
            view.drain(&mut agent.changes);
            if view.stale {
                view.resync(&agent.mesh).await?;
            }
            complete += usize::from(view.alive.len() == want);
        }
        if complete == agents.len() {
            let at = started.elapsed();
            if count_complete(agents).await? == agents.len() {
                return Ok(at);
            }
            for (agent, view) in agents.iter().zip(views.iter_mut()) {
                view.resync(&agent.mesh).await?;
            }
        }
        if started.elapsed() >= limit {
            report_views(agents).await;
            anyhow::bail!(
                "views incomplete after {limit:?}: {complete}/{} complete",
                agents.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prints every agent's view by state and its connection count (to diagnose a failed run).
async fn report_views(agents: &[BenchAgent]) {
    for (i, agent) in agents.iter().enumerate() {
        let Ok(members) = agent.mesh.members().await else {
            continue;
        };
        let count = |state: MemberState| members.iter().filter(|m| m.state == state).count();
        let connected = agent.mesh.connected_peers().await.map_or(0, |p| p.len());
        eprintln!(
            "agent {i}: alive {} suspect {} dead {} left {} connected {connected}",
            count(MemberState::Alive),
            count(MemberState::Suspect),
            count(MemberState::Dead),
            count(MemberState::Left),
        );
    }
}

fn sample(agents: &[BenchAgent]) -> Sample {
    let mut total = Sample::default();
    for agent in agents {
        let traffic = agent.mesh.traffic();
        total.messages += traffic.messages;
        total.payload_bytes += traffic.bytes;
        let text = exposition(&agent.registry);
        total.wire_bytes += sum_of(&text, "libp2p_bandwidth_bytes_total");
        total.connections_opened += sum_of(&text, "libp2p_swarm_connections_established_total");
    }
    total
}

fn exposition(registry: &Registry) -> String {
    let mut text = String::new();
    let _ = shoal_metrics::prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// Sum of every sample of the metric `name` (all label sets) in a text exposition.
fn sum_of(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}
