//! Helpers for the crate's tests: small clusters, running passes, reporting statuses.

use crate::model::*;
use crate::plan::Plan;
use crate::synthetic::{self, ClusterShape};
use crate::{Command, Outcome};

/// A cluster of `n` ready nodes (8 CPUs, 32 GiB, tiers and zones labelled).
pub fn cluster(n: usize) -> ClusterState {
    synthetic::cluster(&ClusterShape::new(n, 7))
}

/// Creates a service and returns its id.
pub fn create(state: &mut ClusterState, spec: ServiceSpec) -> ServiceId {
    synthetic::create_service(state, spec, Timestamp(0)).expect("valid spec")
}

/// Reconciles at `now`, applies the plan (which must be accepted), returns the plan.
pub fn pass(state: &mut ClusterState, now: u64) -> Plan {
    let plan = crate::reconcile(state, Timestamp(now));
    let out = state.apply(&Command::ApplyPlan {
        plan: plan.clone(),
        at: Timestamp(now),
    });
    assert!(out.is_ok(), "plan refused: {out:?}\n{plan:#?}");
    plan
}

/// Reports `state` for a task from its own node.
pub fn report(state: &mut ClusterState, task: TaskId, to: TaskState, at: u64) -> Outcome {
    let node = state.tasks[&task].node.clone().expect("assigned task");
    let status = TaskStatus {
        exit_code: None,
        ..status_at(to, Timestamp(at))
    };
    state
        .apply(&Command::ReportTaskStatus {
            node,
            reports: vec![(task, status)],
        })
        .expect("report")
}

/// Reports every assigned, unfinished, live task of the state as Running.
pub fn run_all(state: &mut ClusterState, at: u64) {
    let ids: Vec<TaskId> = state
        .tasks
        .values()
        .filter(|t| t.is_live() && t.node.is_some() && t.status.state == TaskState::Assigned)
        .map(|t| t.id)
        .collect();
    for id in ids {
        report(state, id, TaskState::Running, at);
    }
}

/// Reports every unfinished task told to shut down as Shutdown.
pub fn stop_all(state: &mut ClusterState, at: u64) {
    let ids: Vec<TaskId> = state
        .tasks
        .values()
        .filter(|t| !t.is_live() && t.holds_resources())
        .map(|t| t.id)
        .collect();
    for id in ids {
        report(state, id, TaskState::Shutdown, at);
    }
}

/// Live tasks of a service.
pub fn live(state: &ClusterState, svc: ServiceId) -> Vec<&Task> {
    state
        .tasks
        .values()
        .filter(|t| t.service == svc && t.is_live())
        .collect()
}

/// The first node id of the state.
pub fn first_node(state: &ClusterState) -> NodeId {
    state.nodes.keys().next().expect("a node").clone()
}

/// A service made from `spec` on `nodes` nodes, all its tasks running, then updated at time 10 to
/// a new image (version 2).
pub fn running_then_updated(nodes: usize, mut spec: ServiceSpec) -> (ClusterState, ServiceId) {
    let mut state = cluster(nodes);
    let id = create(&mut state, spec.clone());
    pass(&mut state, 1);
    run_all(&mut state, 2);
    spec.image = "busybox:2".into();
    state
        .apply(&Command::UpdateService {
            id,
            expected_revision: 1,
            spec,
            at: Timestamp(10),
        })
        .expect("update");
    (state, id)
}
