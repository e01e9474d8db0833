//! Times one scheduling pass on a synthetic cluster: reconcile, placement, and applying the plan.
//!
//! `cargo run --release -p shoal-scheduler --example placement -- NODES TASKS [constraint]`

use std::time::Instant;

use shoal_scheduler::synthetic::{self, ClusterShape};
use shoal_scheduler::{Command, Timestamp};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = args.get(1).map_or(Ok(1000), |s| s.parse())?;
    let tasks: u64 = args.get(2).map_or(Ok(10_000), |s| s.parse())?;
    let constrained = args.get(3).is_some_and(|s| s == "constraint");
    let mut state = synthetic::cluster(&ClusterShape::new(nodes, 1));
    let spec = synthetic::bench_service("bench", tasks, constrained);
    synthetic::create_service(&mut state, spec, Timestamp(1))?;
    let start = Instant::now();
    let plan = shoal_scheduler::reconcile(&state, Timestamp(2));
    let planned = start.elapsed();
    let placed = plan.placed_count();
    state.apply(&Command::ApplyPlan {
        plan,
        at: Timestamp(2),
    })?;
    let total = start.elapsed();
    println!(
        "{nodes} nodes x {tasks} tasks{}: placed {placed} in {:.3} s (plan {:.3} s, apply {:.3} s)",
        if constrained { " (constraint)" } else { "" },
        total.as_secs_f64(),
        planned.as_secs_f64(),
        (total - planned).as_secs_f64()
    );
    Ok(())
}
