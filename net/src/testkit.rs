//! Fixtures of the crate's tests.

use shoal_scheduler::synthetic::{self, ClusterShape};
use shoal_scheduler::{ClusterState, Command, ServiceId, TaskState, Timestamp};

/// A cluster of `nodes` nodes running `services` (name, replicas), every task placed and running.
pub fn running(nodes: usize, services: &[(&str, u64)]) -> (ClusterState, Vec<ServiceId>) {
    let mut state = synthetic::cluster(&ClusterShape::new(nodes, 7));
    let ids = services
        .iter()
        .map(|(name, replicas)| {
            synthetic::create_service(&mut state, synthetic::spec(name, *replicas), Timestamp(0))
                .expect("valid spec")
        })
        .collect();
    let plan = shoal_scheduler::reconcile(&state, Timestamp(1));
    state
        .apply(&Command::ApplyPlan {
            plan,
            at: Timestamp(1),
        })
        .expect("plan");
    for task in state.tasks.values_mut() {
        task.status.state = TaskState::Running;
    }
    (state, ids)
}
