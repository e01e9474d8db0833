//! `shoal bench scheduler`: one scheduling pass on a synthetic cluster, the same shapes as
//! SwarmKit's scheduler benchmarks. The timed figure covers reconciliation, placement and
//! applying the resulting plan to the cluster state through `ClusterState::apply` (SwarmKit's
//! benchmark likewise includes its in-memory store writes).

use std::time::Instant;

use shoal_scheduler::synthetic::{self, ClusterShape};
use shoal_scheduler::{Command, Outcome, Timestamp};

/// Arguments of `shoal bench scheduler`.
#[derive(clap::Args, Debug)]
pub struct SchedulerBenchArgs {
    /// Number of ready nodes (8 CPUs and 32 GiB each).
    #[arg(long, default_value_t = 1_000)]
    pub nodes: usize,
    /// Number of tasks: the replicas of one service (10 milli-CPUs and 16 MiB reserved each).
    #[arg(long, default_value_t = 10_000)]
    pub tasks: u64,
    /// Constrain the service to the third of the nodes labelled `tier=gold`.
    #[arg(long)]
    pub constraint: bool,
    /// Seed of the synthetic node ids.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Runs the benchmark and prints a human line, then the JSON result line last.
pub fn run(args: &SchedulerBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.nodes >= 1, "--nodes must be at least 1");
    let shape = ClusterShape::new(args.nodes, args.seed);
    let mut state = synthetic::cluster(&shape);
    let spec = synthetic::bench_service("bench", args.tasks, args.constraint);
    synthetic::create_service(&mut state, spec, Timestamp(1))?;

    let at = Timestamp(2);
    let start = Instant::now();
    let plan = shoal_scheduler::reconcile(&state, at);
    let planned = start.elapsed();
    let placed = plan.placed_count();
    let outcome = state.apply(&Command::ApplyPlan { plan, at })?;
    let seconds = start.elapsed().as_secs_f64();

    let created = match outcome {
        Outcome::PlanApplied { created } => created.len(),
        other => anyhow::bail!("unexpected outcome of the plan: {other:?}"),
    };
    anyhow::ensure!(
        created as u64 == args.tasks,
        "created {created} tasks, expected {}",
        args.tasks
    );
    println!(
        "scheduler: {} nodes x {} tasks{}: placed {placed} in {seconds:.3} s \
         (reconcile+placement {:.3} s, apply {:.3} s)",
        args.nodes,
        args.tasks,
        if args.constraint {
            " (constraint: 1/3 of nodes)"
        } else {
            ""
        },
        planned.as_secs_f64(),
        seconds - planned.as_secs_f64(),
    );
    println!(
        "{{\"bench\":\"scheduler\",\"nodes\":{},\"tasks\":{},\"placed\":{placed},\"seconds\":{seconds:.6}}}",
        args.nodes, args.tasks
    );
    Ok(())
}
