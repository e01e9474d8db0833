//! Table tests for the reconciliation rules, each run through `apply` as the leader would.

use crate::Command;
use crate::model::*;
use crate::synthetic;
use crate::testkit::*;

fn svc_tasks(state: &ClusterState, id: ServiceId) -> Vec<Task> {
    live(state, id).into_iter().cloned().collect()
}

#[test]
fn creates_missing_slots_and_is_idempotent() {
    let mut state = cluster(3);
    let id = create(&mut state, synthetic::spec("web", 5));
    let plan = pass(&mut state, 1);
    assert_eq!(plan.creates.len(), 5);
    let mut slots: Vec<u64> = svc_tasks(&state, id)
        .iter()
        .filter_map(|t| t.slot)
        .collect();
    slots.sort_unstable();
    assert_eq!(slots, vec![1, 2, 3, 4, 5]);
    assert!(
        svc_tasks(&state, id)
            .iter()
            .all(|t| t.status.state == TaskState::Assigned)
    );
    assert!(pass(&mut state, 1).is_empty());
}

#[test]
fn scale_down_stops_highest_slots_first() {
    let mut state = cluster(3);
    let id = create(&mut state, synthetic::spec("web", 5));
    pass(&mut state, 1);
    let mut spec = state.services[&id].spec.clone();
    spec.mode = ServiceMode::Replicated { replicas: 2 };
    state
        .apply(&Command::UpdateService {
            id,
            expected_revision: 1,
            spec,
            at: Timestamp(2),
        })
        .expect("scale");
    assert_eq!(state.services[&id].version, 1, "a scale keeps the version");
    let plan = pass(&mut state, 3);
    assert_eq!(plan.desired.len(), 3);
    let mut kept: Vec<u64> = svc_tasks(&state, id)
        .iter()
        .filter_map(|t| t.slot)
        .collect();
    kept.sort_unstable();
    assert_eq!(kept, vec![1, 2]);
    assert!(pass(&mut state, 3).is_empty());
}

/// Runs one task of a 1-replica service to an end state; returns the state and service id.
fn ended_task(condition: RestartCondition, end: TaskState) -> (ClusterState, ServiceId, TaskId) {
    let mut state = cluster(2);
    let mut spec = synthetic::spec("job", 1);
    spec.restart.condition = condition;
    let id = create(&mut state, spec);
    pass(&mut state, 1);
    let task = svc_tasks(&state, id)[0].id;
    report(&mut state, task, TaskState::Running, 2);
    report(&mut state, task, end, 3);
    (state, id, task)
}

#[test]
fn restart_condition_table() {
    use RestartCondition::*;
    use TaskState::*;
    for (condition, end, restarted) in [
        (None, Failed, false),
        (None, Complete, false),
        (OnFailure, Failed, true),
        (OnFailure, Complete, false),
        (OnFailure, Rejected, true),
        (Any, Complete, true),
        (Any, Failed, true),
    ] {
        let (mut state, id, old) = ended_task(condition, end);
        let plan = pass(&mut state, 4);
        assert_eq!(
            plan.creates.len(),
            usize::from(restarted),
            "{condition:?} {end:?}"
        );
        let live = svc_tasks(&state, id);
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].id != old, restarted);
        assert!(pass(&mut state, 4).is_empty());
    }
}

#[test]
fn restart_delay_waits_ready_then_runs() {
    let mut state = cluster(2);
    let mut spec = synthetic::spec("web", 1);
    spec.restart.delay_ms = 1_000;
    let id = create(&mut state, spec);
    pass(&mut state, 1);
    let task = svc_tasks(&state, id)[0].id;
    report(&mut state, task, TaskState::Failed, 10);
    let plan = pass(&mut state, 20);
    assert_eq!(plan.wake_at, Some(Timestamp(1_010)));
    let new = svc_tasks(&state, id)[0].clone();
    assert_eq!(new.desired, DesiredState::Ready);
    assert_eq!(
        new.status.state,
        TaskState::Assigned,
        "placed while it waits"
    );
    assert!(pass(&mut state, 500).is_empty());
    let plan = pass(&mut state, 1_010);
    assert_eq!(plan.desired.len(), 1);
    assert_eq!(state.tasks[&new.id].desired, DesiredState::Running);
}

#[test]
fn max_attempts_within_window() {
    let mut state = cluster(2);
    let mut spec = synthetic::spec("web", 1);
    spec.restart = RestartPolicy {
        condition: RestartCondition::Any,
        delay_ms: 0,
        max_attempts: 2,
        window_ms: 1_000,
    };
    let id = create(&mut state, spec);
    pass(&mut state, 1);
    let mut restarts = 0;
    for t in 0..5u64 {
        let task = svc_tasks(&state, id)[0].id;
        report(&mut state, task, TaskState::Failed, 10 + t);
        if !pass(&mut state, 10 + t).creates.is_empty() {
            restarts += 1;
        } else {
            break;
        }
    }
    assert_eq!(restarts, 2);
    // Once the window has passed, the slot is restarted again.
    let plan = pass(&mut state, 2_000);
    assert_eq!(plan.creates.len(), 1);
}

#[test]
fn tasks_on_a_down_node_are_replaced_and_stopped_when_it_returns() {
    let mut state = cluster(3);
    let id = create(&mut state, synthetic::spec("web", 6));
    pass(&mut state, 1);
    run_all(&mut state, 2);
    let down = first_node(&state);
    let lost: Vec<TaskId> = svc_tasks(&state, id)
        .iter()
        .filter(|t| t.node.as_ref() == Some(&down))
        .map(|t| t.id)
        .collect();
    assert_eq!(lost.len(), 2);
    state
        .apply(&Command::SetNodeStates {
            changes: vec![(down.clone(), NodeState::Down)],
            at: Timestamp(3),
        })
        .expect("down");
    assert!(
        lost.iter()
            .all(|t| state.tasks[t].status.state == TaskState::Orphaned)
    );
    let plan = pass(&mut state, 3);
    assert_eq!(plan.creates.len(), 2);
    assert!(
        svc_tasks(&state, id)
            .iter()
            .all(|t| t.node.as_ref() != Some(&down))
    );
    assert!(
        lost.iter()
            .all(|t| state.tasks[t].desired == DesiredState::Shutdown)
    );
    state
        .apply(&Command::SetNodeStates {
            changes: vec![(down, NodeState::Ready)],
            at: Timestamp(4),
        })
        .expect("up");
    assert!(pass(&mut state, 4).is_empty());
}

#[test]
fn drain_moves_tasks_pause_keeps_them() {
    let mut state = cluster(3);
    let mut spec = synthetic::spec("web", 6);
    spec.update.parallelism = 2;
    let id = create(&mut state, spec);
    pass(&mut state, 1);
    run_all(&mut state, 2);
    let nodes: Vec<NodeId> = state.nodes.keys().cloned().collect();
    let set = |state: &mut ClusterState, n: &NodeId, a| {
        let cmd = Command::UpdateNode {
            id: n.clone(),
            availability: Some(a),
            role: None,
            labels_set: vec![],
            labels_remove: vec![],
        };
        state.apply(&cmd).expect("update node");
    };
    set(&mut state, &nodes[0], Availability::Pause);
    assert!(pass(&mut state, 3).is_empty(), "pause keeps tasks");
    set(&mut state, &nodes[1], Availability::Drain);
    let plan = pass(&mut state, 4);
    assert_eq!(plan.desired.len(), 2);
    assert_eq!(plan.creates.len(), 2);
    // Stop-first: the replacements wait until the drained tasks stopped.
    assert!(
        plan.creates
            .iter()
            .all(|c| c.desired == DesiredState::Ready && c.node.as_ref() == Some(&nodes[2]))
    );
    stop_all(&mut state, 5);
    let plan = pass(&mut state, 5);
    assert_eq!(plan.desired.len(), 2, "replacements start");
    assert!(pass(&mut state, 5).is_empty());
    assert!(
        svc_tasks(&state, id)
            .iter()
            .all(|t| t.desired == DesiredState::Running)
    );
}

#[test]
fn drain_is_paced_by_the_update_parallelism() {
    let mut state = cluster(2);
    let id = create(&mut state, synthetic::spec("web", 4)); // parallelism 1
    pass(&mut state, 1);
    run_all(&mut state, 2);
    let drained = state.nodes.keys().next().cloned().expect("a node");
    let on_drained = |state: &ClusterState| {
        svc_tasks(state, id)
            .iter()
            .filter(|t| t.is_live() && t.node.as_ref() == Some(&drained))
            .count()
    };
    let before = on_drained(&state);
    assert_eq!(before, 2, "spread puts two of four on each node");
    let cmd = Command::UpdateNode {
        id: drained.clone(),
        availability: Some(Availability::Drain),
        role: None,
        labels_set: vec![],
        labels_remove: vec![],
    };
    state.apply(&cmd).expect("drain");
    let mut moved_at_once = Vec::new();
    for round in 0..10u64 {
        let left = on_drained(&state);
        if left == 0 {
            break;
        }
        pass(&mut state, 10 + round * 3);
        moved_at_once.push(left - on_drained(&state));
        stop_all(&mut state, 11 + round * 3);
        pass(&mut state, 11 + round * 3);
        run_all(&mut state, 12 + round * 3);
    }
    assert_eq!(on_drained(&state), 0, "every task left the drained node");
    assert_eq!(
        moved_at_once,
        vec![1, 1],
        "one slot in transition at a time"
    );
    assert_eq!(
        svc_tasks(&state, id).iter().filter(|t| t.is_live()).count(),
        4
    );
}

#[test]
fn global_one_task_per_eligible_node() {
    let mut state = cluster(6);
    let mut spec = synthetic::spec("agent", 0);
    spec.mode = ServiceMode::Global;
    spec.constraints.push(synthetic::gold_constraint());
    let id = create(&mut state, spec);
    pass(&mut state, 1);
    let gold = state
        .nodes
        .values()
        .filter(|n| n.labels["tier"] == "gold")
        .count();
    assert_eq!(gold, 2);
    assert_eq!(svc_tasks(&state, id).len(), gold);
    assert!(pass(&mut state, 1).is_empty());
    // A gold node loses its label: its task stops.
    let n = state
        .nodes
        .values()
        .find(|n| n.labels["tier"] == "gold")
        .map(|n| n.id.clone())
        .expect("gold");
    let cmd = Command::UpdateNode {
        id: n,
        availability: None,
        role: None,
        labels_set: vec![("tier".into(), "silver".into())],
        labels_remove: vec![],
    };
    state.apply(&cmd).expect("relabel");
    let plan = pass(&mut state, 2);
    assert_eq!(plan.desired.len(), 1);
    assert_eq!(svc_tasks(&state, id).len(), 1);
    // A new gold node gets one.
    let mut node = synthetic::node(&synthetic::ClusterShape::new(1, 99), 0);
    node.labels.insert("tier".into(), "gold".into());
    state.apply(&Command::UpsertNode { node }).expect("join");
    assert_eq!(pass(&mut state, 3).creates.len(), 1);
    assert_eq!(svc_tasks(&state, id).len(), 2);
}

#[test]
fn unplaceable_tasks_wait_with_a_reason_and_run_when_capacity_frees() {
    let mut state = cluster(2);
    let mut spec = synthetic::spec("big", 3);
    spec.resources.reservations.memory_bytes = 20 * synthetic::GIB;
    let id = create(&mut state, spec);
    pass(&mut state, 1);
    let pending: Vec<Task> = svc_tasks(&state, id)
        .into_iter()
        .filter(|t| t.status.state == TaskState::Pending)
        .collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].status.message,
        "no suitable node (insufficient memory on 2 nodes)"
    );
    assert!(pass(&mut state, 2).is_empty(), "same reason, nothing to do");
    let shape = synthetic::ClusterShape::new(1, 42);
    state
        .apply(&Command::UpsertNode {
            node: synthetic::node(&shape, 0),
        })
        .expect("join");
    let plan = pass(&mut state, 3);
    assert_eq!(plan.placements.len(), 1);
    assert_eq!(
        state.tasks[&pending[0].id].status.state,
        TaskState::Assigned
    );
}

#[test]
fn tasks_of_removed_services_stop() {
    let mut state = cluster(2);
    let id = create(&mut state, synthetic::spec("web", 2));
    pass(&mut state, 1);
    state
        .apply(&Command::RemoveService {
            id,
            at: Timestamp(2),
        })
        .expect("remove");
    assert!(live(&state, id).is_empty());
    assert!(pass(&mut state, 2).is_empty());
}

/// A 4-replica service, all running, then updated with `update`.
fn updating(update: UpdateConfig) -> (ClusterState, ServiceId) {
    let mut spec = synthetic::spec("web", 4);
    spec.update = update;
    spec.rollback = update;
    running_then_updated(4, spec)
}

fn versions(state: &ClusterState, id: ServiceId) -> Vec<u64> {
    let mut v: Vec<(u64, u64)> = svc_tasks(state, id)
        .iter()
        .map(|t| (t.slot.unwrap_or(0), t.spec_version))
        .collect();
    v.sort_unstable();
    v.dedup_by_key(|x| x.0);
    v.into_iter().map(|x| x.1).collect()
}

#[test]
fn rolling_update_stop_first_in_batches_with_delay() {
    let cfg = UpdateConfig {
        parallelism: 2,
        delay_ms: 100,
        monitor_ms: 50,
        ..UpdateConfig::default()
    };
    let (mut state, id) = updating(cfg);
    let plan = pass(&mut state, 10);
    assert_eq!((plan.creates.len(), plan.desired.len()), (2, 2));
    assert!(
        plan.creates
            .iter()
            .all(|c| c.desired == DesiredState::Ready)
    );
    assert!(pass(&mut state, 10).is_empty(), "batch in flight");
    stop_all(&mut state, 11);
    assert_eq!(
        pass(&mut state, 11).desired.len(),
        2,
        "new tasks start once old ones stopped"
    );
    run_all(&mut state, 12);
    let plan = pass(&mut state, 20);
    assert!(plan.is_empty());
    assert_eq!(plan.wake_at, Some(Timestamp(112)));
    assert_eq!(
        pass(&mut state, 112).creates.len(),
        2,
        "second batch after the delay"
    );
    stop_all(&mut state, 113);
    pass(&mut state, 113);
    run_all(&mut state, 114);
    assert_eq!(versions(&state, id), vec![2, 2, 2, 2]);
    assert!(pass(&mut state, 150).is_empty(), "monitoring");
    let plan = pass(&mut state, 164);
    assert_eq!(plan.services.len(), 1);
    assert_eq!(
        state.services[&id].update_status.as_ref().map(|u| u.state),
        Some(UpdateState::Completed)
    );
    assert!(pass(&mut state, 200).is_empty());
}

#[test]
fn rolling_update_slides_a_window_instead_of_waiting_for_the_batch() {
    let cfg = UpdateConfig {
        parallelism: 2,
        monitor_ms: 0,
        ..UpdateConfig::default()
    };
    let (mut state, id) = updating(cfg);
    let plan = pass(&mut state, 10);
    assert_eq!(plan.creates.len(), 2, "two lanes");
    let slot_task = |state: &ClusterState, slot: u64, version: u64| {
        state
            .tasks
            .values()
            .find(|t| t.service == id && t.slot == Some(slot) && t.spec_version == version)
            .map(|t| t.id)
            .expect("task")
    };
    // Slot 1's old task stops and its successor runs; slot 2's old task is still stopping.
    let old = slot_task(&state, 1, 1);
    report(&mut state, old, TaskState::Shutdown, 11);
    pass(&mut state, 11);
    let new = slot_task(&state, 1, 2);
    report(&mut state, new, TaskState::Running, 12);
    let plan = pass(&mut state, 12);
    assert_eq!(
        plan.creates.len(),
        1,
        "the free lane takes the next slot at once"
    );
    assert_eq!(plan.creates[0].slot, Some(3));
    assert!(pass(&mut state, 13).is_empty(), "both lanes busy");
}

#[test]
fn rolling_update_start_first_keeps_old_until_new_runs() {
    let cfg = UpdateConfig {
        parallelism: 1,
        order: UpdateOrder::StartFirst,
        monitor_ms: 0,
        ..UpdateConfig::default()
    };
    let (mut state, id) = updating(cfg);
    let plan = pass(&mut state, 10);
    assert_eq!((plan.creates.len(), plan.desired.len()), (1, 0));
    assert_eq!(plan.creates[0].desired, DesiredState::Running);
    assert_eq!(svc_tasks(&state, id).len(), 5);
    run_all(&mut state, 11);
    let plan = pass(&mut state, 11);
    assert_eq!(plan.desired.len(), 1, "old task of the slot stops");
    assert_eq!(plan.creates.len(), 1, "next slot starts");
}

#[test]
fn failed_update_pauses_or_rolls_back() {
    for (action, expect) in [
        (FailureAction::Pause, UpdateState::Paused),
        (FailureAction::Rollback, UpdateState::RollingBack),
    ] {
        let cfg = UpdateConfig {
            parallelism: 1,
            failure_action: action,
            monitor_ms: 0,
            ..UpdateConfig::default()
        };
        let (mut state, id) = updating(cfg);
        pass(&mut state, 10);
        stop_all(&mut state, 11);
        pass(&mut state, 11);
        let new = svc_tasks(&state, id)
            .into_iter()
            .find(|t| t.spec_version == 2)
            .map(|t| t.id)
            .expect("new task");
        report(&mut state, new, TaskState::Failed, 12);
        let plan = pass(&mut state, 12);
        assert_eq!(plan.services.len(), 1, "{action:?}");
        let svc = &state.services[&id];
        assert_eq!(svc.update_status.as_ref().map(|u| u.state), Some(expect));
        if action == FailureAction::Rollback {
            assert_eq!(
                (svc.version, svc.spec.image.as_str()),
                (3, "busybox:latest")
            );
            // The rollback replaces the updated slot in the next passes, then completes.
            for t in 13..40 {
                pass(&mut state, t * 10);
                stop_all(&mut state, t * 10);
                run_all(&mut state, t * 10);
            }
            assert_eq!(
                state.services[&id].update_status.as_ref().map(|u| u.state),
                Some(UpdateState::RolledBack)
            );
            assert!(svc_tasks(&state, id).iter().all(|t| state.services[&id].spec_for(t.spec_version).image == "busybox:latest"));
            let untouched = svc_tasks(&state, id)
                .iter()
                .filter(|t| t.spec_version == 1)
                .count();
            assert_eq!(untouched, 3, "slots never updated keep their tasks");
        } else {
            assert!(
                pass(&mut state, 13)
                    .creates
                    .iter()
                    .all(|c| c.slot == Some(1)),
                "only restarts while paused"
            );
        }
    }
}
