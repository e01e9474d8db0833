//! `shoal bench ...`: the benchmark programs. Each prints a line for people and, last, one JSON
//! line for scripts and the README's performance table.

use clap::Subcommand;

use crate::bench;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Placement and plan application on a synthetic cluster (the pure scheduler).
    Scheduler(bench::scheduler::SchedulerBenchArgs),
    /// Mesh convergence and idle traffic of N agents in one process on loopback.
    Mesh(bench::mesh::MeshBenchArgs),
    /// Durable raft writes over the real mesh on loopback.
    Raft(bench::raft::RaftBenchArgs),
    /// Time from a leader's death to the next committed write.
    Failover(bench::failover::FailoverBenchArgs),
    /// End to end on the local Docker engine: create, scale, update, replace.
    E2e(bench::e2e::E2eBenchArgs),
    /// N whole agents with the sim executor: formation, the raft group's size, placing and
    /// scaling a service.
    Cluster(bench::cluster::ClusterBenchArgs),
    /// The service network's paths on the local engine: straight to a task (the floor), through
    /// the service's virtual address, and through its published port.
    Net(bench::net::NetBenchArgs),
    /// What an idle manager and an idle worker cost: resident memory and CPU, measured from
    /// outside the two agent processes.
    Idle(bench::idle::IdleBenchArgs),
}

/// Runs a benchmark.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match command {
        BenchCommand::Scheduler(args) => bench::scheduler::run(&args),
        BenchCommand::Mesh(args) => runtime()?.block_on(bench::mesh::run(&args)),
        BenchCommand::Raft(args) => runtime()?.block_on(bench::raft::run(&args)),
        BenchCommand::Failover(args) => runtime()?.block_on(bench::failover::run(&args)),
        BenchCommand::E2e(args) => runtime()?.block_on(bench::e2e::run(&args)),
        BenchCommand::Cluster(args) => runtime()?.block_on(bench::cluster::run(&args)),
        BenchCommand::Idle(args) => runtime()?.block_on(bench::idle::run(&args)),
        BenchCommand::Net(args) => runtime()?.block_on(bench::net::run(&args)),
    }
}
