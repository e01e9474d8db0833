//! Which tasks each worker must know about, computed from the cluster state in one pass.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_scheduler::{ClusterState, DesiredState, NodeId, Service, ServiceSpec, Task};

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
