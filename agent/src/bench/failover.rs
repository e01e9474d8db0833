//! `shoal bench failover`: M managers in this process (real mesh on loopback, real redb in a
//! temp dir); K times, kill the leader like a crash and time until the next write commits on a
//! survivor. After each kill a fresh agent joins and the autopilot restores the manager count,
//! so every round starts from M healthy managers.

use std::path::Path;
use std::time::{Duration, Instant};

use shoal_consensus::{Quorum, QuorumConfig, RaftTiming};
use shoal_metrics::prometheus_client::registry::Registry;
use shoal_scheduler::{Command, NodeId, NodeState, Timestamp};

use super::raft::{
    BenchManager, BusyThreads, TimingArgs, bench_info, start_bench_mesh, start_managers, timing_ms,
};

/// Arguments of `shoal bench failover`.
#[derive(clap::Args, Debug)]
pub struct FailoverBenchArgs {
    /// Number of managers (raft voters).
    #[arg(long, default_value_t = 3)]
    pub managers: usize,
    /// How many leaders to kill.
    #[arg(long, default_value_t = 5)]
    pub kills: usize,
    /// Threads spinning on the CPU during the kills (real CPU load besides the cluster).
    #[arg(long, default_value_t = 0)]
    pub busy_threads: usize,
    /// Raft timing.
    #[command(flatten)]
    pub timing: TimingArgs,
}

/// Runs the benchmark and prints a human line, then the JSON result line last.
pub async fn run(args: &FailoverBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.managers >= 3 && args.managers % 2 == 1,
        "--managers must be odd and at least 3"
    );
    anyhow::ensure!(args.kills >= 1, "--kills must be at least 1");
    let root = std::env::temp_dir().join(format!("shoal-bench-failover-{}", std::process::id()));
    let result = measure(args, &root).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn probe(round: usize, seq: u64) -> Command {
    Command::SetNodeStates {
        changes: vec![(NodeId::new(format!("failover-{round}")), NodeState::Ready)],
        at: Timestamp(seq),
    }
}

async fn measure(args: &FailoverBenchArgs, root: &Path) -> anyhow::Result<()> {
    let timing = args.timing.timing();
    let mut managers = start_managers(root, args.managers, timing).await?;
    let busy = BusyThreads::start(args.busy_threads)?;
    let mut times = Vec::new();
    for round in 0..args.kills {
        let leader = managers
            .iter()
            .position(|m| m.quorum.is_leader())
            .ok_or_else(|| anyhow::anyhow!("no leader"))?;
        // A committed write right before the kill: the cluster is healthy and the leader is busy.
        let _before = managers[leader].quorum.write(probe(round, 0)).await?;
        let victim = managers.remove(leader);
        let survivor = managers[0].quorum.clone();
        let killed_at = Instant::now();
        victim.kill().await;
        let mut seq = 1;
        loop {
            match survivor.write(probe(round, seq)).await {
                Ok(_) => break,
                Err(e) => {
                    anyhow::ensure!(
                        killed_at.elapsed() < Duration::from_secs(30),
                        "no commit after the kill: {e}"
                    );
                    seq += 1;
                }
            }
        }
        let took = killed_at.elapsed();
        times.push(took.as_secs_f64());
        println!("failover {}: {:.3} s", round + 1, took.as_secs_f64());
        managers.push(replace(root, round, &managers, timing).await?);
        let q0 = managers[0].quorum.clone();
        let mut alive: Vec<_> = managers.iter().map(|m| m.quorum.peer_id()).collect();
        alive.sort();
        super::wait_until(
            "every live agent is a voter again",
            Duration::from_secs(30),
            || {
                let mut voters = q0.status().voters;
                voters.sort();
                voters == alive
            },
        )
        .await?;
        // Let the new voter settle (heartbeats, leases) before the next kill.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(busy);
    for m in managers {
        m.kill().await;
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let max = times.last().copied().unwrap_or(0.0);
    println!(
        "failover: {} managers, {} leader kills, {} busy threads: median {median:.3} s, max {max:.3} s (leader death -> next committed write)",
        args.managers, args.kills, args.busy_threads
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "failover",
            "kills": args.kills,
            "median_s": (median * 1000.0).round() / 1000.0,
            "max_s": (max * 1000.0).round() / 1000.0,
            "busy_threads": args.busy_threads,
            "timing_ms": timing_ms(timing),
        })
    );
    Ok(())
}

/// Starts a fresh agent that joins through a survivor.
async fn replace(
    root: &Path,
    round: usize,
    managers: &[BenchManager],
    timing: RaftTiming,
) -> anyhow::Result<BenchManager> {
    let name = format!("r{round}");
    let dir = root.join(&name);
    let seed = managers[0]
        .mesh
        .listen_addrs()
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no address"))?;
    let mesh = start_bench_mesh(&dir, &name, &[seed]).await?;
    let mut config = QuorumConfig::new(dir.join("raft"), bench_info(&name));
    config.timing = timing;
    config.bootstrap_window = Duration::from_millis(300);
    config.dead_manager_grace = Duration::from_secs(1);
    let mut registry = Registry::default();
    let quorum: Quorum = Quorum::start(config, mesh.clone(), &mut registry).await?;
    Ok(BenchManager { mesh, quorum })
}
