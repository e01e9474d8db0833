//! Temporary runner of the agent's raft and failover benchmarks (agent/src/bench/{raft,failover}.rs)
//! until `shoal bench raft|failover` is wired: `cargo run --release -p shoal-consensus --example bench -- raft --clients 32`.

#![allow(missing_docs)]

use std::time::{Duration, Instant};

pub async fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while !done() {
        anyhow::ensure!(
            started.elapsed() < limit,
            "gave up after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

#[path = "../../agent/src/bench/raft.rs"]
mod raft;

#[path = "../../agent/src/bench/failover.rs"]
mod failover;

use clap::Parser;

#[derive(clap::Parser)]
enum Cli {
    Raft(raft::RaftBenchArgs),
    Failover(failover::FailoverBenchArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    match Cli::parse() {
        Cli::Raft(a) => raft::run(&a).await,
        Cli::Failover(a) => failover::run(&a).await,
    }
}
