//! Which tasks each worker must know about, computed from the cluster state in one pass.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_scheduler::{ClusterState, DesiredState, NodeId, Service, ServiceSpec, Task, TaskId};

use super::messages::Assignment;

/// Whether a worker must still hear about `task`: it should run, or it should stop and has not
/// reported an end yet.
pub fn is_dispatched(task: &Task) -> bool {
    task.desired != DesiredState::Shutdown || !task.status.state.is_terminal()
}

/// The assignments of every node, in task-id order, from one pass over the tasks.
pub fn by_node(state: &ClusterState) -> HashMap<NodeId, Vec<Assignment>> {
    let mut specs = SpecCache::default();
    let mut sets: HashMap<NodeId, Vec<Assignment>> = HashMap::new();
    for task in state.tasks.values().filter(|task| is_dispatched(task)) {
        let Some(node) = &task.node else { continue };
        let assignment = match state.services.get(&task.service) {
            Some(service) => Assignment {
                task: task.clone(),
                service_name: service.spec.name.clone(),
                spec: Some(specs.get(service, task.spec_version)),
            },
            None => stop_only(task),
        };
        sets.entry(node.clone()).or_default().push(assignment);
    }
    sets
}

/// Whether two assignments tell a worker the same thing. Statuses do not count: the worker
/// reported them itself, so a change of status alone is never sent back to it.
pub fn same_instruction(a: &Assignment, b: &Assignment) -> bool {
    let (x, y) = (&a.task, &b.task);
    let same_spec = match (&a.spec, &b.spec) {
        (Some(p), Some(q)) => Arc::ptr_eq(p, q) || p == q,
        (None, None) => true,
        _ => false,
    };
    x.id == y.id
        && x.desired == y.desired
        && x.spec_version == y.spec_version
        && x.not_before == y.not_before
        && x.node == y.node
        && x.slot == y.slot
        && x.service == y.service
        && a.service_name == b.service_name
        && same_spec
}

/// Whether two sets (in task-id order) tell a worker the same thing.
pub fn same_instructions(a: &[Assignment], b: &[Assignment]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_instruction(x, y))
}

/// What changed from `old` to `new` (both in task-id order): the assignments that are new or
/// whose instructions changed, and the tasks that are gone.
pub fn changes(old: &[Assignment], new: &[Assignment]) -> (Vec<Assignment>, Vec<TaskId>) {
    let (mut upserts, mut removed) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) if o.task.id == n.task.id => {
                if !same_instruction(o, n) {
                    upserts.push(n.clone());
                }
                i += 1;
                j += 1;
            }
            (Some(o), Some(n)) if o.task.id < n.task.id => {
                removed.push(o.task.id);
                i += 1;
            }
            (Some(o), None) => {
                removed.push(o.task.id);
                i += 1;
            }
            (_, Some(n)) => {
                upserts.push(n.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    (upserts, removed)
}

/// A task of a removed service: the worker only has to stop it.
fn stop_only(task: &Task) -> Assignment {
    let mut task = task.clone();
    task.desired = DesiredState::Shutdown;
    Assignment {
        task,
        service_name: String::new(),
        spec: None,
    }
}

/// Shares one `Arc<ServiceSpec>` per (service, version) across all assignments of a pass.
#[derive(Default)]
struct SpecCache {
    specs: HashMap<(shoal_scheduler::ServiceId, u64), Arc<ServiceSpec>>,
}

impl SpecCache {
    /// The spec of `version`: the current one, the previous one, or — for a version older than
    /// both, which can only be stopped — the current one, whose grace period applies.
    fn get(&mut self, service: &Service, version: u64) -> Arc<ServiceSpec> {
        self.specs
            .entry((service.id, version))
            .or_insert_with(|| {
                let previous = service
                    .previous_spec
                    .as_ref()
                    .filter(|_| service.previous_version == Some(version));
                Arc::new(previous.unwrap_or(&service.spec).clone())
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use shoal_scheduler::{ServiceId, TaskState, Timestamp, status_at};

    use super::*;

    fn assignment(id: u64, desired: DesiredState, state: TaskState) -> Assignment {
        Assignment {
            task: Task {
                id: TaskId(id),
                service: ServiceId(1),
                slot: Some(id),
                node: Some(NodeId::new("n")),
                spec_version: 1,
                desired,
                status: status_at(state, Timestamp(id)),
                created_at: Timestamp(0),
                not_before: Timestamp(0),
            },
            service_name: "web".into(),
            spec: None,
        }
    }

    #[test]
    fn a_status_alone_is_no_change() {
        let old = vec![assignment(1, DesiredState::Running, TaskState::Assigned)];
        let new = vec![assignment(1, DesiredState::Running, TaskState::Running)];
        assert!(same_instructions(&old, &new));
        assert_eq!(changes(&old, &new), (Vec::new(), Vec::new()));
    }

    #[test]
    fn changes_are_the_new_the_changed_and_the_gone() {
        let run = DesiredState::Running;
        let old = vec![
            assignment(1, run, TaskState::Running),
            assignment(2, run, TaskState::Running),
            assignment(4, run, TaskState::Running),
        ];
        let new = vec![
            assignment(2, DesiredState::Shutdown, TaskState::Running),
            assignment(3, run, TaskState::Assigned),
            assignment(4, run, TaskState::Running),
            assignment(5, run, TaskState::Assigned),
        ];
        assert!(!same_instructions(&old, &new));
        let (upserts, removed) = changes(&old, &new);
        let ids: Vec<u64> = upserts.iter().map(|a| a.task.id.0).collect();
        assert_eq!(ids, [2, 3, 5]);
        assert_eq!(removed, [TaskId(1)]);
    }
}
