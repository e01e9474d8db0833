//! `GET /v1/overview`: the whole cluster in one answer, shaped for the web view — the cluster's
//! id, leader, managers and raft position, every node with its labels and the resources its
//! tasks reserve against its capacity, every service with its replicas and update progress, and
//! the tasks that are wanted or still winding down (history left out). It also answers the event
//! cursor it was read at, so that a reader follows the event stream from exactly there.
//!
//! A route of the control API like any other (a worker forwards it to a manager), read from the
//! local replica with `?stale=true` so that the view still shows the cluster while it has no
//! leader; `?tasks=false` leaves the tasks out for a cheap refresh of the rest.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use shoal_scheduler::{
    ClusterState, DesiredState, Node, NodeId, Resources, Service, ServiceMode, Task, TaskState,
    UpdateState,
};
use utoipa::IntoParams;

use crate::control::server::{self, ApiError, ControlState, ReadOptions};

/// The route.
pub const OVERVIEW: &str = "/v1/overview";

/// The most tasks one overview answers (it must fit a forwarded answer; the view says when it
/// was cut).
pub const MAX_TASKS: usize = 20_000;

/// Query of [`OVERVIEW`].
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OverviewQuery {
    /// Answer from this agent's replica at once (works without a leader).
    #[serde(default)]
    pub stale: bool,
    /// Include the tasks (the default); `false` for the cluster, nodes and services only.
    #[serde(default = "yes")]
    pub tasks: bool,
}

fn yes() -> bool {
    true
}

/// The answer of [`OVERVIEW`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overview {
    /// The cluster as a whole.
    pub cluster: ClusterView,
    /// The event cursor the state was read at: events after it are newer than this answer.
    pub cursor: String,
    /// Every node, by hostname.
    pub nodes: Vec<NodeView>,
    /// Every service, by name.
    pub services: Vec<ServiceView>,
    /// The tasks wanted running or not yet ended, by service and slot (empty with `tasks=false`).
    pub tasks: Vec<TaskView>,
    /// Whether tasks were left out because there are more than [`MAX_TASKS`].
    pub tasks_truncated: bool,
}

/// The cluster's identity and raft position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    /// The cluster id, once formed.
    pub id: Option<String>,
    /// The manager that answered.
    pub served_by: String,
    /// The leader as that manager knows it.
    pub leader: Option<String>,
    /// The voters.
    pub managers: Vec<String>,
    /// The raft term.
    pub term: u64,
    /// The last log index applied by the manager that answered.
    pub index: u64,
}

/// Reserved against capacity, for one resource.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Usage {
    /// Reserved by the tasks placed there.
    pub reserved: u64,
    /// The node's capacity.
    pub total: u64,
}

/// One node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    /// Its id.
    pub id: String,
    /// Its hostname.
    pub hostname: String,
    /// `manager` or `worker`.
    pub role: String,
    /// `ready`, `down` or `unknown`.
    pub state: String,
    /// `active`, `pause` or `drain`.
    pub availability: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// CPU, in billionths of a CPU.
    pub cpu: Usage,
    /// Memory, in bytes.
    pub memory: Usage,
}

/// One service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceView {
    /// Its id (as the API numbers it).
    pub id: u64,
    /// Its name.
    pub name: String,
    /// `replicated` or `global`.
    pub mode: String,
    /// Tasks wanted and running.
    pub running: u64,
    /// Tasks wanted.
    pub desired: u64,
    /// The image of its current spec.
    pub image: String,
    /// Its rolling update, if it has had one.
    pub update: Option<UpdateView>,
}

/// A rolling update's state and progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateView {
    /// `updating`, `paused`, `completed`, `rolling_back` or `rolled_back`.
    pub state: String,
    /// Why it paused, or empty.
    pub message: String,
    /// Whether it is still under way (updating or rolling back).
    pub in_progress: bool,
    /// Wanted tasks that run the current spec.
    pub done: u64,
    /// Wanted tasks.
    pub total: u64,
}

/// One task, as a card shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskView {
    /// Its id (as the event stream numbers it).
    pub id: u64,
    /// Its service's id.
    pub service_id: u64,
    /// Its service's name.
    pub service: String,
    /// Its slot (replicated services).
    pub slot: Option<u64>,
    /// Its node's id, once placed.
    pub node: Option<String>,
    /// The image it runs.
    pub image: String,
    /// Its observed state.
    pub state: TaskState,
    /// What the orchestrator wants of it.
    pub desired: DesiredState,
    /// When its status was last observed (milliseconds since the Unix epoch).
    pub since: u64,
    /// When it was created (milliseconds since the Unix epoch).
    pub created: u64,
    /// Its status message (an error, why it is pending), or empty.
    pub message: String,
}

/// The whole cluster at a glance, for the web view.
#[utoipa::path(
    get,
    path = OVERVIEW,
    tag = "cluster",
    params(OverviewQuery),
    responses(
        (status = 200, description = "The cluster, its nodes, services and current tasks, and the event cursor they were read at (`Overview`)", body = Object),
        (status = 503, description = "No quorum to read from (ask with `stale=true`)", body = crate::control::api::ErrorBody),
    )
)]
pub(crate) async fn overview(
    State(state): State<Arc<ControlState>>,
    Query(query): Query<OverviewQuery>,
) -> Result<Json<Overview>, ApiError> {
    // The cursor first: an event recorded between the two reads is then both in the state and
    // after the cursor, and applying it again changes nothing a reader shows.
    let cursor = state.quorum.events_end();
    let read = ReadOptions {
        stale: query.stale,
        min_index: None,
    };
    let snapshot = server::cluster(&state, read).await?;
    let status = state.quorum.status();
    let cluster = ClusterView {
        id: state.quorum.cluster_id(),
        served_by: state.node_id.clone(),
        leader: status.leader.map(|peer| peer.to_string()),
        managers: status.voters.iter().map(ToString::to_string).collect(),
        term: status.term,
        index: status.applied,
    };
    Ok(Json(describe(
        cluster,
        cursor.to_string(),
        &snapshot,
        query.tasks,
    )))
}

/// The overview of `snapshot`.
pub fn describe(
    cluster: ClusterView,
    cursor: String,
    snapshot: &ClusterState,
    with_tasks: bool,
) -> Overview {
    let reserved = reservations(snapshot);
    let mut nodes: Vec<NodeView> = snapshot
        .nodes
        .values()
        .map(|node| node_view(node, reserved.get(&node.id).copied().unwrap_or_default()))
        .collect();
    nodes.sort_by(|a, b| (&a.hostname, &a.id).cmp(&(&b.hostname, &b.id)));
    let mut services: Vec<ServiceView> = snapshot
        .services
        .values()
        .map(|service| service_view(snapshot, service))
        .collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    let mut tasks = Vec::new();
    let mut tasks_truncated = false;
    if with_tasks {
        for task in snapshot.tasks.values().filter(|task| shown(task)) {
            if tasks.len() == MAX_TASKS {
                tasks_truncated = true;
                break;
            }
            if let Some(service) = snapshot.services.get(&task.service) {
                tasks.push(task_view(service, task));
            }
        }
        tasks.sort_by(|a, b| (&a.service, a.slot, a.id).cmp(&(&b.service, b.slot, b.id)));
    }
    Overview {
        cluster,
        cursor,
        nodes,
        services,
        tasks,
        tasks_truncated,
    }
}

/// Whether the view shows `task`: wanted, or not ended yet.
pub fn shown(task: &Task) -> bool {
    task.desired != DesiredState::Shutdown || !task.status.state.is_terminal()
}

/// What the tasks placed on each node reserve (as placement counts it: the tasks that hold
/// resources, at the reservations of the spec version they run).
fn reservations(snapshot: &ClusterState) -> BTreeMap<NodeId, Resources> {
    let mut reserved: BTreeMap<NodeId, Resources> = BTreeMap::new();
    for task in snapshot.tasks.values().filter(|t| t.holds_resources()) {
        if let (Some(node), Some(service)) = (&task.node, snapshot.services.get(&task.service)) {
            let wants = service.spec_for(task.spec_version).resources.reservations;
            let entry = reserved.entry(node.clone()).or_default();
            *entry = entry.plus(wants);
        }
    }
    reserved
}

fn node_view(node: &Node, reserved: Resources) -> NodeView {
    NodeView {
        id: node.id.to_string(),
        hostname: node.hostname.clone(),
        role: lowercase(&node.role),
        state: lowercase(&node.state),
        availability: lowercase(&node.availability),
        labels: node.labels.clone(),
        cpu: Usage {
            reserved: reserved.nano_cpus,
            total: node.total.nano_cpus,
        },
        memory: Usage {
            reserved: reserved.memory_bytes,
            total: node.total.memory_bytes,
        },
    }
}

/// The serde name of a unit enum (they are all `lowercase` or `snake_case`).
fn lowercase<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        _ => String::new(),
    }
}

fn service_view(snapshot: &ClusterState, service: &Service) -> ServiceView {
    let wanted: Vec<&Task> = snapshot
        .tasks
        .values()
        .filter(|task| task.service == service.id && task.desired == DesiredState::Running)
        .collect();
    let running = wanted
        .iter()
        .filter(|task| task.status.state == TaskState::Running)
        .count() as u64;
    let desired = match service.spec.mode {
        ServiceMode::Replicated { replicas } => replicas,
        ServiceMode::Global => wanted.len() as u64,
    };
    let update = service.update_status.as_ref().map(|status| {
        let done = wanted
            .iter()
            .filter(|task| service.is_current(task.spec_version))
            .count() as u64;
        UpdateView {
            state: lowercase(&status.state),
            message: status.message.clone(),
            in_progress: matches!(
                status.state,
                UpdateState::Updating | UpdateState::RollingBack
            ),
            done: done.min(desired),
            total: desired,
        }
    });
    ServiceView {
        id: service.id.0,
        name: service.spec.name.clone(),
        mode: match service.spec.mode {
            ServiceMode::Replicated { .. } => "replicated".into(),
            ServiceMode::Global => "global".into(),
        },
        running,
        desired,
        image: service.spec.image.clone(),
        update,
    }
}

fn task_view(service: &Service, task: &Task) -> TaskView {
    TaskView {
        id: task.id.0,
        service_id: service.id.0,
        service: service.spec.name.clone(),
        slot: task.slot,
        node: task.node.as_ref().map(ToString::to_string),
        image: service.spec_for(task.spec_version).image.clone(),
        state: task.status.state,
        desired: task.desired,
        since: task.status.timestamp.0,
        created: task.created_at.0,
        message: task.status.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use shoal_scheduler::synthetic::{self, ClusterShape};
    use shoal_scheduler::{TaskId, Timestamp, status_at};

    use super::*;

    fn cluster_view() -> ClusterView {
        ClusterView {
            id: Some("c1".into()),
            served_by: "n".into(),
            leader: None,
            managers: Vec::new(),
            term: 1,
            index: 2,
        }
    }

    #[test]
    fn shows_wanted_tasks_with_their_images_and_leaves_ended_ones_out() {
        let mut state = synthetic::cluster(&ClusterShape::new(2, 1));
        let mut spec = synthetic::spec("web", 3);
        spec.resources.reservations.memory_bytes = 64 << 20;
        synthetic::create_service(&mut state, spec, Timestamp(0)).expect("created");
        let (service, version) = state
            .services
            .values()
            .next()
            .map(|s| (s.id, s.version))
            .expect("one service");
        for (n, slot) in [1u64, 2, 3].into_iter().enumerate() {
            let id = TaskId(n as u64 + 1);
            let task = Task {
                id,
                service,
                slot: Some(slot),
                node: state.nodes.keys().next().cloned(),
                spec_version: version,
                desired: DesiredState::Running,
                status: status_at(TaskState::Running, Timestamp(5)),
                created_at: Timestamp(1),
                not_before: Timestamp(0),
            };
            state.tasks.insert(id, task);
        }
        if let Some(task) = state.tasks.get_mut(&TaskId(3)) {
            task.desired = DesiredState::Shutdown;
            task.status = status_at(TaskState::Shutdown, Timestamp(6));
        }
        let overview = describe(cluster_view(), "7".into(), &state, true);
        assert_eq!(overview.nodes.len(), 2);
        assert_eq!(overview.tasks.len(), 2, "{:?}", overview.tasks);
        assert!(overview.tasks.iter().all(|t| t.service == "web"));
        let reserved: u64 = overview.nodes.iter().map(|n| n.memory.reserved).sum();
        assert_eq!(reserved, 2 * (64 << 20), "two running tasks of 64 MiB");
        let web = &overview.services[0];
        assert_eq!((web.running, web.desired), (2, 3));
        let light = describe(cluster_view(), "7".into(), &state, false);
        assert!(light.tasks.is_empty() && light.services.len() == 1);
        let json = serde_json::to_value(&overview).expect("json");
        assert_eq!(json["tasks"][0]["state"], "running");
        assert_eq!(json["nodes"][0]["state"], "ready");
    }
}
