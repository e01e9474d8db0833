//! The worker's decision, as a pure function: given what the leader wants and what the executor
//! shows, which of the tasks to look at need an operation or a report. The worker asks only
//! about the tasks something happened to since it last looked (and about all of them now and
//! then), so one event costs the same with twenty tasks as with twenty thousand.

#[cfg(test)]
use std::collections::HashSet;
use std::collections::{BTreeMap, HashMap};

use shoal_scheduler::{DesiredState, TaskId, TaskState};

use crate::dispatch::messages::Assignment;
use crate::executor::Observation;

/// What to do for one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create and start its container (adopting one that exists).
    Start,
    /// Stop it with its grace period and remove its container.
    StopAndRemove,
    /// It should stop and has no container: report it shut down.
    ReportShutdown,
    /// It was started but its container is gone: report it failed.
    ReportMissing,
}

/// What `id` needs, if anything. `told` is whether a leader has sent an assignment set since
/// the agent started: until then, containers without an assignment are left alone.
pub fn decide(
    id: TaskId,
    assignments: &BTreeMap<TaskId, Assignment>,
    observed: &HashMap<TaskId, Observation>,
    reported: &HashMap<TaskId, TaskState>,
    told: bool,
) -> Option<Action> {
    match assignments.get(&id) {
        Some(assignment) => {
            let last = reported
                .get(&id)
                .copied()
                .unwrap_or(assignment.task.status.state);
            action_for(assignment.task.desired, observed.get(&id), last)
        }
        // A container of a task no leader assigned: a stray, once a leader spoke.
        None => (told && observed.contains_key(&id)).then_some(Action::StopAndRemove),
    }
}

/// The actions that converge the `candidates` (tasks not in `skip`).
#[cfg(test)]
pub fn plan(
    candidates: impl IntoIterator<Item = TaskId>,
    assignments: &BTreeMap<TaskId, Assignment>,
    observed: &HashMap<TaskId, Observation>,
    reported: &HashMap<TaskId, TaskState>,
    skip: &HashSet<TaskId>,
    told: bool,
) -> Vec<(TaskId, Action)> {
    candidates
        .into_iter()
        .filter(|id| !skip.contains(id))
        .filter_map(|id| Some((id, decide(id, assignments, observed, reported, told)?)))
        .collect()
}

fn action_for(
    desired: DesiredState,
    observed: Option<&Observation>,
    last: TaskState,
) -> Option<Action> {
    match (desired, observed) {
        (DesiredState::Running, None) if last < TaskState::Starting => Some(Action::Start),
        (DesiredState::Running, None) if !last.is_terminal() => Some(Action::ReportMissing),
        (DesiredState::Running, Some(seen)) if seen.state < TaskState::Starting => {
            Some(Action::Start)
        }
        (DesiredState::Shutdown, Some(_)) => Some(Action::StopAndRemove),
        (DesiredState::Shutdown, None) if !last.is_terminal() => Some(Action::ReportShutdown),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(state: TaskState) -> Observation {
        Observation {
            task_id: TaskId(1),
            service_id: shoal_scheduler::ServiceId(1),
            slot: Some(1),
            spec_version: 1,
            state,
            exit_code: None,
            health: crate::executor::Health::None,
            container_id: Some("c1".into()),
            removed: false,
            message: String::new(),
        }
    }

    #[test]
    fn a_new_task_is_started() {
        assert_eq!(
            action_for(DesiredState::Running, None, TaskState::Assigned),
            Some(Action::Start)
        );
    }

    #[test]
    fn a_created_container_is_started_again() {
        let created = seen(TaskState::Preparing);
        assert_eq!(
            action_for(DesiredState::Running, Some(&created), TaskState::Starting),
            Some(Action::Start)
        );
    }

    #[test]
    fn a_running_task_is_left_alone() {
        let running = seen(TaskState::Running);
        assert_eq!(
            action_for(DesiredState::Running, Some(&running), TaskState::Running),
            None
        );
    }

    #[test]
    fn a_vanished_container_is_reported_failed_not_restarted() {
        assert_eq!(
            action_for(DesiredState::Running, None, TaskState::Running),
            Some(Action::ReportMissing)
        );
    }

    #[test]
    fn an_ended_task_is_never_started_again() {
        assert_eq!(
            action_for(DesiredState::Running, None, TaskState::Failed),
            None
        );
        let exited = seen(TaskState::Complete);
        assert_eq!(
            action_for(DesiredState::Running, Some(&exited), TaskState::Complete),
            None
        );
    }

    #[test]
    fn a_task_to_stop_is_stopped_then_reported() {
        let running = seen(TaskState::Running);
        assert_eq!(
            action_for(DesiredState::Shutdown, Some(&running), TaskState::Running),
            Some(Action::StopAndRemove)
        );
        assert_eq!(
            action_for(DesiredState::Shutdown, None, TaskState::Running),
            Some(Action::ReportShutdown)
        );
        assert_eq!(
            action_for(DesiredState::Shutdown, None, TaskState::Shutdown),
            None
        );
    }

    #[test]
    fn strays_are_removed_only_once_a_leader_spoke() {
        let observed = HashMap::from([(TaskId(9), seen(TaskState::Running))]);
        let none = BTreeMap::new();
        let (reported, skip) = (HashMap::new(), HashSet::new());
        let look = || [TaskId(9)];
        assert!(plan(look(), &none, &observed, &reported, &skip, false).is_empty());
        assert_eq!(
            plan(look(), &none, &observed, &reported, &skip, true),
            vec![(TaskId(9), Action::StopAndRemove)]
        );
        let busy = HashSet::from([TaskId(9)]);
        assert!(plan(look(), &none, &observed, &reported, &busy, true).is_empty());
    }
}
