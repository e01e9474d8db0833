//! Bounded task history: ended tasks that were told to stop are forgotten beyond the newest
//! `keep_per_slot` of each slot; every ended task of a removed service is forgotten.
//!
//! Which tasks go is [`prunable`], a pure function of the state: the leader asks it whether a
//! [`Command::PruneTasks`] is due ([`due`]), and every replica applying that command removes
//! exactly the tasks it names, so all of them forget the same ones.

use std::collections::{BTreeMap, HashMap};

use crate::command::{Command, Outcome};
use crate::model::{ClusterState, ServiceId, SlotKey, Task, TaskId};

/// Whether `task` is history: it ended and the orchestrator no longer wants it. Only history is
/// ever pruned.
pub fn is_history(task: &Task) -> bool {
    task.status.state.is_terminal() && !task.is_live()
}

/// The tasks that pruning at `keep_per_slot` forgets, in id order: for each slot (or node, for a
/// global service) of a service that exists, its history beyond the newest `keep_per_slot`;
/// all the history of a removed service. A task the orchestrator still wants, or one that has
/// not ended yet, is never among them.
pub fn prunable(state: &ClusterState, keep_per_slot: u64) -> Vec<TaskId> {
    let mut per_slot: BTreeMap<(ServiceId, SlotKey), Vec<TaskId>> = BTreeMap::new();
    for task in state.tasks.values().filter(|t| is_history(t)) {
        per_slot
            .entry((task.service, task.slot_key()))
            .or_default()
            .push(task.id);
    }
    let keep = usize::try_from(keep_per_slot).unwrap_or(usize::MAX);
    let mut doomed = Vec::new();
    for ((service, _), ids) in per_slot {
        let keep = if state.services.contains_key(&service) {
            keep
        } else {
            0
        };
        // `state.tasks` is in id order and ids grow with creation: the newest are last.
        let drop = ids.len().saturating_sub(keep);
        doomed.extend_from_slice(&ids[..drop]);
    }
    doomed.sort_unstable();
    doomed
}

/// The prune the leader should commit now, if any task is beyond the cluster's
/// [`task_history_limit`](crate::ClusterSettings::task_history_limit): exactly when
/// [`prunable`] at that limit names a task, found without collecting them (the leader asks
/// after every pass).
pub fn due(state: &ClusterState) -> Option<Command> {
    let keep_per_slot = state.settings.task_history_limit;
    let prune = Command::PruneTasks { keep_per_slot };
    let mut counts: HashMap<(ServiceId, SlotKey), u64> = HashMap::new();
    for task in state.tasks.values().filter(|t| is_history(t)) {
        if !state.services.contains_key(&task.service) {
            return Some(prune);
        }
        let count = counts.entry((task.service, task.slot_key())).or_default();
        *count += 1;
        if *count > keep_per_slot {
            return Some(prune);
        }
    }
    None
}

/// Forgets the tasks [`prunable`] names.
pub fn prune(state: &mut ClusterState, keep_per_slot: u64) -> Outcome {
    for id in prunable(state, keep_per_slot) {
        state.tasks.remove(&id);
    }
    Outcome::Done
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::model::{DesiredState, NodeId, TaskState, Timestamp, status_at};
    use crate::synthetic;
    use crate::testkit::{cluster, create};

    /// A task of `service` in `slot` (a global one's node when `slot` is `None`).
    fn task(id: u64, service: ServiceId, slot: Option<u64>, desired: DesiredState) -> Task {
        Task {
            id: TaskId(id),
            service,
            slot,
            node: Some(NodeId::new("n1")),
            spec_version: 1,
            desired,
            status: status_at(TaskState::New, Timestamp(id)),
            created_at: Timestamp(id),
            not_before: Timestamp(0),
        }
    }

    fn with_state(mut t: Task, state: TaskState) -> Task {
        t.status.state = state;
        t
    }

    fn one_service() -> (ClusterState, ServiceId) {
        let mut state = cluster(1);
        let id = create(&mut state, synthetic::spec("a", 1));
        (state, id)
    }

    #[test]
    fn the_oldest_history_of_a_slot_goes_first() {
        let (mut state, svc) = one_service();
        for id in 1..=4 {
            let dead = with_state(
                task(id, svc, Some(1), DesiredState::Shutdown),
                TaskState::Shutdown,
            );
            state.tasks.insert(dead.id, dead);
        }
        let live = with_state(
            task(5, svc, Some(1), DesiredState::Running),
            TaskState::Running,
        );
        state.tasks.insert(live.id, live);
        assert_eq!(prunable(&state, 2), vec![TaskId(1), TaskId(2)]);
        assert_eq!(prunable(&state, 4), vec![]);
        assert_eq!(prunable(&state, 0).len(), 4, "never the live task");
    }

    #[test]
    fn a_task_still_stopping_or_still_wanted_is_kept() {
        let (mut state, svc) = one_service();
        let stopping = with_state(
            task(1, svc, Some(1), DesiredState::Shutdown),
            TaskState::Running,
        );
        let failed_awaiting_restart = with_state(
            task(2, svc, Some(2), DesiredState::Running),
            TaskState::Failed,
        );
        for t in [stopping, failed_awaiting_restart] {
            state.tasks.insert(t.id, t);
        }
        assert!(prunable(&state, 0).is_empty());
    }

    #[test]
    fn slots_and_nodes_are_counted_apart() {
        let (mut state, svc) = one_service();
        let mut id = 0;
        for slot in [Some(1), Some(2), None] {
            for _ in 0..3 {
                id += 1;
                let dead = with_state(
                    task(id, svc, slot, DesiredState::Shutdown),
                    TaskState::Failed,
                );
                state.tasks.insert(dead.id, dead);
            }
        }
        assert_eq!(prunable(&state, 1).len(), 3 * 2);
    }

    #[test]
    fn due_follows_the_cluster_setting() {
        let (mut state, svc) = one_service();
        for id in 1..=3 {
            let dead = with_state(
                task(id, svc, Some(1), DesiredState::Shutdown),
                TaskState::Complete,
            );
            state.tasks.insert(dead.id, dead);
        }
        assert_eq!(due(&state), None, "3 ended tasks under the default of 5");
        state.settings.task_history_limit = 1;
        assert_eq!(due(&state), Some(Command::PruneTasks { keep_per_slot: 1 }));
        state.apply(&due(&state).expect("due")).expect("prune");
        assert_eq!(state.tasks.len(), 1);
        assert_eq!(due(&state), None, "pruning once settles");
    }

    #[test]
    fn a_state_from_before_the_setting_keeps_five() {
        let settings: crate::ClusterSettings =
            serde_json::from_str(r#"{"allow_sensitive_mounts":true}"#).expect("decodes");
        assert_eq!(settings.task_history_limit, 5);
        let update: Command =
            serde_json::from_str(r#"{"UpdateClusterSettings":{"allow_sensitive_mounts":null}}"#)
                .expect("an older command decodes");
        let mut state = ClusterState::default();
        state.apply(&update).expect("applies");
        assert_eq!(state.settings.task_history_limit, 5);
    }

    /// A random task: `(slot 0..4 where 0 is a global task, desired 0..3, state 0..12)`.
    fn tasks() -> impl Strategy<Value = Vec<(u64, u8, u8)>> {
        prop::collection::vec((0..4u64, 0..3u8, 0..12u8), 0..40)
    }

    fn build(specs: &[(u64, u8, u8)], removed: bool) -> (ClusterState, ServiceId) {
        let (mut state, svc) = one_service();
        let states = [
            TaskState::New,
            TaskState::Pending,
            TaskState::Assigned,
            TaskState::Accepted,
            TaskState::Preparing,
            TaskState::Starting,
            TaskState::Running,
            TaskState::Complete,
            TaskState::Shutdown,
            TaskState::Failed,
            TaskState::Rejected,
            TaskState::Orphaned,
        ];
        for (i, &(slot, desired, observed)) in specs.iter().enumerate() {
            let desired = match desired {
                0 => DesiredState::Ready,
                1 => DesiredState::Running,
                _ => DesiredState::Shutdown,
            };
            let slot = (slot > 0).then_some(slot);
            let t = with_state(
                task(i as u64 + 100, svc, slot, desired),
                states[usize::from(observed)],
            );
            state.tasks.insert(t.id, t);
        }
        if removed {
            state.services.clear();
        }
        (state, svc)
    }

    proptest! {
        /// What a slot still wants is never pruned, and at most `keep` ended tasks stay per slot:
        /// the newest ones.
        #[test]
        fn pruning_keeps_the_live_task_and_at_most_keep_history(
            specs in tasks(),
            keep in 0..4u64,
            removed in prop::bool::weighted(0.2),
        ) {
            let (mut before, _) = build(&specs, removed);
            before.settings.task_history_limit = keep;
            prop_assert_eq!(due(&before).is_some(), !prunable(&before, keep).is_empty());
            let mut after = before.clone();
            after.apply(&Command::PruneTasks { keep_per_slot: keep }).expect("prune applies");
            for task in before.tasks.values().filter(|t| !is_history(t)) {
                prop_assert!(after.tasks.contains_key(&task.id), "{:?} was pruned", task.id);
            }
            let mut history: BTreeMap<SlotKey, Vec<TaskId>> = BTreeMap::new();
            for task in before.tasks.values().filter(|t| is_history(t)) {
                history.entry(task.slot_key()).or_default().push(task.id);
            }
            let keep = if removed { 0 } else { keep as usize };
            for ids in history.values() {
                let kept: Vec<TaskId> =
                    ids.iter().copied().filter(|id| after.tasks.contains_key(id)).collect();
                prop_assert_eq!(&kept[..], &ids[ids.len().saturating_sub(keep)..]);
            }
            let mut again = after.clone();
            again.apply(&Command::PruneTasks { keep_per_slot: keep as u64 }).expect("prune");
            prop_assert_eq!(again, after, "pruning its own result changes nothing");
        }
    }
}
