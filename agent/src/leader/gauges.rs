//! The cluster gauges the leader publishes after each pass: nodes by state, availability and
//! role; services; tasks by state; desired and running replicas per service.

use std::collections::HashMap;

use shoal_metrics::AgentMetrics;
use shoal_metrics::agent::{NodeLabels, ServiceLabels, TaskStateLabels};
use shoal_scheduler::{ClusterState, DesiredState, ServiceId, TaskState};

/// Replaces every cluster gauge with what `state` shows.
pub fn update(metrics: &AgentMetrics, state: &ClusterState) {
    metrics.cluster_nodes.clear();
    for node in state.nodes.values() {
        let labels = NodeLabels {
            state: lower(node.state),
            availability: lower(node.availability),
            role: lower(node.role),
        };
        metrics.cluster_nodes.get_or_create(&labels).inc();
    }
    metrics.cluster_services.set(state.services.len() as i64);
    metrics.cluster_tasks.clear();
    let mut running: HashMap<ServiceId, i64> = HashMap::new();
    let mut wanted: HashMap<ServiceId, i64> = HashMap::new();
    for task in state.tasks.values() {
        metrics
            .cluster_tasks
            .get_or_create(&TaskStateLabels {
                state: lower(task.status.state),
            })
            .inc();
        if task.desired == DesiredState::Running {
            *wanted.entry(task.service).or_default() += 1;
            if task.status.state == TaskState::Running {
                *running.entry(task.service).or_default() += 1;
            }
        }
    }
    metrics.service_replicas_desired.clear();
    metrics.service_replicas_running.clear();
    for service in state.services.values() {
        let labels = ServiceLabels {
            service: service.spec.name.clone(),
        };
        let desired = service.spec.replicas().map_or_else(
            || wanted.get(&service.id).copied().unwrap_or(0),
            |r| r as i64,
        );
        metrics
            .service_replicas_desired
            .get_or_create(&labels)
            .set(desired);
        metrics
            .service_replicas_running
            .get_or_create(&labels)
            .set(running.get(&service.id).copied().unwrap_or(0));
    }
}

fn lower(value: impl std::fmt::Debug) -> String {
    format!("{value:?}").to_lowercase()
}
