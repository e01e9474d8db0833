//! `shoal bench raft`: durable writes through a quorum of M managers in this process, over the
//! real mesh on loopback and real redb files in a temp dir. C clients write concurrently for S
//! seconds (each waits for its write to be committed and applied); reports writes/s and latency,
//! and where the time goes: the mean time from handing entries to the log store until they are
//! durable (`shoal_raft_log_append_seconds`) on the leader and on the followers, and the mean
//! time of one write round of the log, a redb commit and its fsync (`shoal_raft_log_sync_seconds`).
//!
//! `--busy-threads N` keeps N more threads spinning on the CPU during the window (a busy
//! machine); the result counts the elections (term bumps) and leader changes in the window,
//! which a healthy leader under load must not see.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shoal_consensus::{Quorum, QuorumConfig, RaftTiming};
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
    /// Threads spinning on the CPU during the window (real CPU load besides the cluster).
    #[arg(long, default_value_t = 0)]
    pub busy_threads: usize,
    /// Raft timing.
    #[command(flatten)]
    pub timing: TimingArgs,
}

/// Raft timing for a benchmark: the LAN defaults unless overridden (to compare settings).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct TimingArgs {
    /// Leader heartbeat interval in milliseconds [default: the LAN default].
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// Lower bound of the election timeout in milliseconds [default: the LAN default].
    #[arg(long)]
    pub election_min_ms: Option<u64>,
    /// Upper bound of the election timeout (also the leader lease) in milliseconds [default: the
    /// LAN default].
    #[arg(long)]
    pub election_max_ms: Option<u64>,
}

impl TimingArgs {
    /// The timing these arguments ask for.
    pub fn timing(&self) -> RaftTiming {
        let lan = RaftTiming::LAN;
        let or = |ms: Option<u64>, d: Duration| ms.map_or(d, Duration::from_millis);
        RaftTiming {
            heartbeat: or(self.heartbeat_ms, lan.heartbeat),
            election_min: or(self.election_min_ms, lan.election_min),
            election_max: or(self.election_max_ms, lan.election_max),
        }
    }
}

/// `[heartbeat, election min, election max]` in milliseconds, for the JSON line.
pub(crate) fn timing_ms(t: RaftTiming) -> [u128; 3] {
    [
        t.heartbeat.as_millis(),
        t.election_min.as_millis(),
        t.election_max.as_millis(),
    ]
}

/// Threads that keep the CPU busy until dropped: each spins on integer work and only looks up
/// from it to check whether to stop.
pub(crate) struct BusyThreads {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl BusyThreads {
    /// Starts `n` spinning threads (none for 0).
    pub(crate) fn start(n: usize) -> anyhow::Result<BusyThreads> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut busy = BusyThreads {
            stop: stop.clone(),
            threads: Vec::with_capacity(n),
        };
        for i in 0..n {
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("shoal-bench-busy-{i}"))
                .spawn(move || spin(&stop))?;
            busy.threads.push(thread);
        }
        Ok(busy)
    }
}

/// Burns CPU until `stop` is set.
fn spin(stop: &AtomicBool) {
    let mut x = 1u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..4096 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
}

impl Drop for BusyThreads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Elections seen by a set of managers: the term and the leader changes as each one sees them.
pub(crate) struct ElectionWatch {
    quorums: Vec<Quorum>,
    terms: Vec<u64>,
    changes: Vec<Arc<AtomicU64>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ElectionWatch {
    /// Starts counting from now.
    pub(crate) fn start(quorums: Vec<Quorum>) -> ElectionWatch {
        let terms = quorums.iter().map(|q| q.status().term).collect();
        let changes: Vec<Arc<AtomicU64>> = quorums.iter().map(|_| Arc::default()).collect();
        let tasks = quorums
            .iter()
            .zip(&changes)
            .map(|(q, count)| {
                let mut rx = q.leader();
                let count = count.clone();
                tokio::spawn(async move {
                    // A change is a different leader known, not the gap while there is none.
                    let mut last = *rx.borrow_and_update();
                    while rx.changed().await.is_ok() {
                        let now = *rx.borrow_and_update();
                        if now.is_some() && now != last {
                            if last.is_some() {
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            last = now;
                        }
                    }
                })
            })
            .collect();
        ElectionWatch {
            quorums,
            terms,
            changes,
            tasks,
        }
    }

    /// `(elections, leader changes)` since the start: the most term bumps and the most leader
    /// changes any one manager saw.
    pub(crate) fn stop(self) -> (u64, u64) {
        for t in &self.tasks {
            t.abort();
        }
        let elections = self
            .quorums
            .iter()
            .zip(&self.terms)
            .map(|(q, before)| q.status().term.saturating_sub(*before))
            .max()
            .unwrap_or(0);
        let leader_changes = self
            .changes
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        (elections, leader_changes)
    }
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
pub(crate) async fn start_managers(
    root: &Path,
    n: usize,
    timing: RaftTiming,
) -> anyhow::Result<Vec<BenchManager>> {
    Ok(start_managers_with_metrics(root, n, timing)
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
    timing: RaftTiming,
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
        config.timing = timing;
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
    Command::SetNodeStates {
        changes: vec![(NodeId::new(format!("bench-{client}")), NodeState::Ready)],
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
        start_managers_with_metrics(root, args.managers, args.timing.timing())
            .await?
            .into_iter()
            .unzip();
    let leader = managers
        .iter()
        .position(|m| m.quorum.is_leader())
        .unwrap_or(0);
    let window = Duration::from_secs(args.seconds);
    let elections = ElectionWatch::start(managers.iter().map(|m| m.quorum.clone()).collect());
    let busy = BusyThreads::start(args.busy_threads)?;
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
    drop(busy);
    let (elections, leader_changes) = elections.stop();
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
    // Mean of a histogram on the leader and over the followers.
    let leader_and_followers = |family: &str| {
        let followers = registries
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != leader)
            .map(|(_, r)| r);
        (
            mean_ms(registries.get(leader).into_iter(), family),
            mean_ms(followers, family),
        )
    };
    let (append_leader, append_followers) = leader_and_followers("shoal_raft_log_append_seconds");
    let (sync_leader, sync_followers) = leader_and_followers("shoal_raft_log_sync_seconds");
    println!(
        "raft: log append (submitted -> durable) mean {append_leader:.2} ms on the leader, {append_followers:.2} ms on the followers; one write round (redb commit + fsync) {sync_leader:.2} ms and {sync_followers:.2} ms"
    );
    println!(
        "raft: {} managers, {} clients, {} busy threads: {} durable writes in {elapsed:.1} s = {writes_per_s:.0} writes/s, p50 {p50:.2} ms, p99 {p99:.2} ms; {elections} elections, {leader_changes} leader changes",
        args.managers,
        args.clients,
        args.busy_threads,
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
            "log_sync_leader_ms": (sync_leader * 100.0).round() / 100.0,
            "log_sync_followers_ms": (sync_followers * 100.0).round() / 100.0,
            "busy_threads": args.busy_threads,
            "timing_ms": timing_ms(args.timing.timing()),
            "elections": elections,
            "leader_changes": leader_changes,
        })
    );
    Ok(())
}
