//! `shoal bench raft`: durable writes through a quorum of M managers in this process, over the
//! real mesh on loopback and real redb files in a temp dir. C clients write concurrently for S
//! seconds (each waits for its write to be committed and applied); reports writes/s and latency,
//! and where the time goes: the mean time from handing entries to the log store until they are
//! durable (`shoal_raft_log_append_seconds`) on the leader and on the followers.

use std::path::Path;
use std::time::{Duration, Instant};

use shoal_consensus::{Quorum, QuorumConfig};
use shoal_discovery::{MemberState, Mesh, MeshConfig, Multiaddr, NodeInfo};
use shoal_metrics::prometheus_client::registry::Registry;
use shoal_scheduler::{Command, NodeId, NodeState, Timestamp};

/// Arguments of `shoal bench raft`.
#[derive(clap::Args, Debug)]
pub struct RaftBenchArgs {
    /// Number of managers (raft voters).
    #[arg(long, default_value_t = 3)]
    pub managers: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Measurement window in seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

/// One in-process agent: its mesh and its quorum.
pub(crate) struct BenchManager {
    pub(crate) mesh: Mesh,
    pub(crate) quorum: Quorum,
}

impl BenchManager {
    /// Stops it like a crash: the mesh dies without a goodbye, raft stops.
    pub(crate) async fn kill(self) {
        self.mesh.kill();
        self.quorum.shutdown().await;
    }
}

/// What a benchmark agent announces.
pub(crate) fn bench_info(name: &str) -> NodeInfo {
    NodeInfo {
        hostname: name.to_owned(),
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        runtime: "sim".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..NodeInfo::default()
    }
}

/// Starts a loopback mesh for a benchmark agent.
pub(crate) async fn start_bench_mesh(
    dir: &Path,
    name: &str,
    seeds: &[Multiaddr],
) -> anyhow::Result<Mesh> {
    let mut config = MeshConfig::for_tests(dir.join("mesh"));
    config.join = seeds.to_vec();
    config.heartbeat_interval = Duration::from_millis(100);
    config.suspect_after = Duration::from_millis(400);
    config.dead_after = Duration::from_millis(800);
    let mut registry = Registry::default();
    Ok(shoal_discovery::start(config, bench_info(name), &mut registry).await?)
}

/// Starts `n` managers (zero-config bootstrap through the first agent's address) and waits
/// until all `n` are voters.
pub(crate) async fn start_managers(root: &Path, n: usize) -> anyhow::Result<Vec<BenchManager>> {
    Ok(start_managers_with_metrics(root, n)
        .await?
        .into_iter()
        .map(|(manager, _)| manager)
        .collect())
}

/// [`start_managers`], keeping each manager's metrics registry. Logs to stderr when `RUST_LOG`
/// is set (the raft and failover benchmarks are otherwise silent).
async fn start_managers_with_metrics(
    root: &Path,
    n: usize,
) -> anyhow::Result<Vec<(BenchManager, Registry)>> {
    if std::env::var_os("RUST_LOG").is_some() {
        crate::daemon::init_logging();
    }
    let mut meshes = Vec::new();
    let first = start_bench_mesh(&root.join("m0"), "m0", &[]).await?;
    let seed = first
        .listen_addrs()
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no listen address"))?;
    meshes.push((root.join("m0"), first));
    for i in 1..n {
        let dir = root.join(format!("m{i}"));
        meshes.push((
            dir.clone(),
            start_bench_mesh(&dir, &format!("m{i}"), std::slice::from_ref(&seed)).await?,
        ));
    }
    for (_, mesh) in &meshes {
        let mesh = mesh.clone();
        let mut seen = 0;
        for _ in 0..200 {
            seen = mesh
                .members()
                .await?
                .iter()
                .filter(|m| m.state == MemberState::Alive)
                .count();
            if seen + 1 >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::ensure!(seen + 1 >= n, "the mesh did not form");
    }
    let starts = meshes.iter().enumerate().map(|(i, (dir, mesh))| {
        let mut config = QuorumConfig::new(dir.join("raft"), bench_info(&format!("m{i}")));
        config.bootstrap_window = Duration::from_millis(500);
        config.dead_manager_grace = Duration::from_secs(1);
        config.target_managers = if n % 2 == 1 { n } else { n - 1 };
        let mesh = mesh.clone();
        async move {
            let mut registry = Registry::default();
            let quorum = Quorum::start(config, mesh, &mut registry).await;
            quorum.map(|q| (q, registry))
        }
    });
    let quorums = futures::future::join_all(starts).await;
    let mut managers = Vec::new();
    for ((_, mesh), q) in meshes.into_iter().zip(quorums) {
        let (quorum, registry) = q?;
        managers.push((BenchManager { mesh, quorum }, registry));
    }
    // Every manager must see the final configuration: killing the leader while the change from
    // one voter to `want` is still joint would leave the old half (that leader alone) without
    // a majority, and the cluster without a leader for good.
    let quorums: Vec<Quorum> = managers.iter().map(|(m, _)| m.quorum.clone()).collect();
    let want = if n % 2 == 1 { n } else { n - 1 };
    super::wait_until("all managers are voters", Duration::from_secs(30), || {
        quorums.iter().all(|q| {
            let status = q.status();
            !status.changing && status.voters.len() == want
        })
    })
    .await?;
    Ok(managers)
}

/// A small command: a status change of the client's own (absent) node. Whether the state
/// machine accepts or refuses it, it is one durable, replicated, applied log entry, and the
/// state stays small so every write costs the same.
fn command(client: usize, seq: u64) -> Command {
    Command::SetNodeState {
        id: NodeId::new(format!("bench-{client}")),
        state: NodeState::Ready,
        at: Timestamp(seq),
    }
}

/// Runs the benchmark and prints a human line, then the JSON result line last.
pub async fn run(args: &RaftBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.managers >= 1 && args.clients >= 1 && args.seconds >= 1,
        "all arguments must be positive"
    );
    let root = std::env::temp_dir().join(format!("shoal-bench-raft-{}", std::process::id()));
    let result = measure(args, &root).await;
    remove_dir(&root).await;
    result
}

/// Removes a benchmark's directory. The agents' last files may still be closing just after
/// they stopped, which can make one removal fail half-way: try a few times.
pub(crate) async fn remove_dir(root: &Path) {
    for _ in 0..5 {
        if std::fs::remove_dir_all(root).is_ok() || !root.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sum and count of a histogram family in a registry's text encoding.
fn histogram_totals(registry: &Registry, family: &str) -> (f64, f64) {
    let mut text = String::new();
    if shoal_metrics::prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        return (0.0, 0.0);
    }
    let value = |suffix: &str| {
        let name = format!("{family}_{suffix} ");
        text.lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value("sum"), value("count"))
}

/// Mean of `family` in milliseconds over `registries`.
fn mean_ms<'a>(registries: impl Iterator<Item = &'a Registry>, family: &str) -> f64 {
    let (sum, count) = registries
        .map(|r| histogram_totals(r, family))
        .fold((0.0, 0.0), |(s, c), (s1, c1)| (s + s1, c + c1));
    if count > 0.0 {
        sum / count * 1000.0
    } else {
        0.0
    }
}

async fn measure(args: &RaftBenchArgs, root: &Path) -> anyhow::Result<()> {
    let (managers, registries): (Vec<BenchManager>, Vec<Registry>) =
        start_managers_with_metrics(root, args.managers)
            .await?
            .into_iter()
            .unzip();
    let leader = managers
        .iter()
        .position(|m| m.quorum.is_leader())
        .unwrap_or(0);
    let window = Duration::from_secs(args.seconds);
    let started = Instant::now();
    let clients = (0..args.clients).map(|c| {
        let q = managers[leader].quorum.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut seq = 0u64;
            while started.elapsed() < window {
                let t = Instant::now();
                // The inner result is the state machine's answer; either way it was committed.
                let _applied = q
                    .write(command(c, seq))
                    .await
                    .map_err(|e| anyhow::anyhow!("write: {e}"))?;
                latencies.push(t.elapsed());
                seq += 1;
            }
            anyhow::Ok(latencies)
        })
    });
    let mut latencies = Vec::new();
    for c in futures::future::join_all(clients).await {
        latencies.extend(c??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    for m in managers {
        m.kill().await;
    }
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies
            .get(i)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let writes_per_s = latencies.len() as f64 / elapsed;
    let (p50, p99) = (pct(0.50), pct(0.99));
    const APPEND: &str = "shoal_raft_log_append_seconds";
    let append_leader = mean_ms(registries.get(leader).into_iter(), APPEND);
    let followers = registries
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, r)| r);
    let append_followers = mean_ms(followers, APPEND);
    println!(
        "raft: log append (submitted -> durable) mean {append_leader:.2} ms on the leader, {append_followers:.2} ms on the followers"
    );
    println!(
        "raft: {} managers, {} clients: {} durable writes in {elapsed:.1} s = {writes_per_s:.0} writes/s, p50 {p50:.2} ms, p99 {p99:.2} ms",
        args.managers,
        args.clients,
        latencies.len()
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "raft",
            "managers": args.managers,
            "clients": args.clients,
            "writes_per_s": writes_per_s.round(),
            "p50_ms": (p50 * 100.0).round() / 100.0,
            "p99_ms": (p99 * 100.0).round() / 100.0,
            "log_append_leader_ms": (append_leader * 100.0).round() / 100.0,
            "log_append_followers_ms": (append_followers * 100.0).round() / 100.0,
        })
    );
    Ok(())
}
