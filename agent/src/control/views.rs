//! How the cluster state is shown to people and scripts: one row per service, task or node.
//! Pure functions of a [`ClusterState`], shared by the control server and tests.

use serde::{Deserialize, Serialize};
use shoal_scheduler::{
    ClusterState, DesiredState, Node, NodeId, PortSpec, Service, ServiceId, ServiceMode, Task,
    TaskState, Timestamp,
};

/// One line of `shoal service ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRow {
    /// The service id.
    pub id: ServiceId,
    /// Its name.
    pub name: String,
    /// `replicated` or `global`.
    pub mode: String,
    /// Tasks observed running.
    pub running: u64,
    /// Tasks wanted.
    pub desired: u64,
    /// The image.
    pub image: String,
    /// Published ports, `*:8080->80/tcp`.
    pub ports: String,
    /// The spec version.
    pub version: u64,
    /// Update progress, if an update ran.
    pub update: Option<String>,
}

/// One line of `shoal service ps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRow {
    /// The task id.
    pub id: String,
    /// `service.slot` or `service.nodeid`.
    pub name: String,
    /// The image of the spec version it runs.
    pub image: String,
    /// The node's hostname (or id), empty while unplaced.
    pub node: String,
    /// What the orchestrator wants.
    pub desired: DesiredState,
    /// What was observed.
    pub state: TaskState,
    /// When that was observed.
    pub since: Timestamp,
    /// Detail: why it is pending, why it failed.
    pub message: String,
    /// Exit code, once exited.
    pub exit_code: Option<i64>,
    /// Whether it runs the service's current spec (not one that an update is replacing).
    #[serde(default = "runs_current_spec")]
    pub current: bool,
}

/// A task row from an agent that does not say runs the current spec.
fn runs_current_spec() -> bool {
    true
}

/// One line of `shoal node ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRow {
    /// The node id.
    pub id: NodeId,
    /// Its hostname.
    pub hostname: String,
    /// `ready`, `down`, `unknown`.
    pub state: String,
    /// `active`, `pause`, `drain`.
    pub availability: String,
    /// `manager` or `worker`.
    pub role: String,
    /// Its container runtime.
    pub runtime: String,
    /// Tasks it runs now.
    pub tasks: u64,
    /// The shoal version.
    pub version: String,
}

/// The rows of `service ls`, in name order.
pub fn service_rows(state: &ClusterState) -> Vec<ServiceRow> {
    let mut rows: Vec<ServiceRow> = state
        .services
        .values()
        .map(|service| service_row(state, service))
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

fn service_row(state: &ClusterState, service: &Service) -> ServiceRow {
    let tasks = || {
        state
            .tasks
            .values()
            .filter(|task| task.service == service.id)
    };
    let running = tasks()
        .filter(|task| {
            task.status.state == TaskState::Running && task.desired == DesiredState::Running
        })
        .count() as u64;
    let desired = match service.spec.mode {
        ServiceMode::Replicated { replicas } => replicas,
        ServiceMode::Global => tasks()
            .filter(|task| task.desired == DesiredState::Running)
            .count() as u64,
    };
    ServiceRow {
        id: service.id,
        name: service.spec.name.clone(),
        mode: match service.spec.mode {
            ServiceMode::Replicated { .. } => "replicated".into(),
            ServiceMode::Global => "global".into(),
        },
        running,
        desired,
        image: service.spec.image.clone(),
        ports: service
            .spec
            .ports
            .iter()
            .map(port_text)
            .collect::<Vec<_>>()
            .join(", "),
        version: service.version,
        update: service
            .update_status
            .as_ref()
            .map(|status| format!("{:?}", status.state).to_lowercase()),
    }
}

fn port_text(port: &PortSpec) -> String {
    let protocol = format!("{:?}", port.protocol).to_lowercase();
    if port.published == 0 {
        format!("{}/{protocol}", port.target)
    } else {
        format!("*:{}->{}/{protocol}", port.published, port.target)
    }
}

/// Finds a service by name, or by id as `shoal service ls` prints it.
pub fn find_service<'a>(state: &'a ClusterState, name_or_id: &str) -> Option<&'a Service> {
    state
        .services
        .values()
        .find(|service| service.spec.name == name_or_id || service.id.to_string() == name_or_id)
}

/// The rows of `service ps`: current tasks first by slot, then their history, newest first.
pub fn task_rows(state: &ClusterState, service: &Service) -> Vec<TaskRow> {
    let mut tasks: Vec<&Task> = state
        .tasks
        .values()
        .filter(|task| task.service == service.id)
        .collect();
    tasks.sort_by(|a, b| {
        let live = |t: &Task| t.desired == DesiredState::Shutdown;
        (live(a), a.slot, a.node.as_ref(), std::cmp::Reverse(a.id)).cmp(&(
            live(b),
            b.slot,
            b.node.as_ref(),
            std::cmp::Reverse(b.id),
        ))
    });
    tasks
        .into_iter()
        .map(|task| task_row(state, service, task))
        .collect()
}

fn task_row(state: &ClusterState, service: &Service, task: &Task) -> TaskRow {
    let node = task.node.as_ref();
    let node_name = node
        .map(|id| {
            state
                .nodes
                .get(id)
                .map(|n| n.hostname.clone())
                .unwrap_or_else(|| id.to_string())
        })
        .unwrap_or_default();
    let suffix = match (task.slot, node) {
        (Some(slot), _) => slot.to_string(),
        (None, Some(node)) => node
            .as_str()
            .chars()
            .rev()
            .take(8)
            .collect::<String>()
            .chars()
            .rev()
            .collect(),
        (None, None) => task.id.to_string(),
    };
    let image = match (task.spec_version == service.version, &service.previous_spec) {
        (false, Some(previous)) if Some(task.spec_version) == service.previous_version => {
            previous.image.clone()
        }
        _ => service.spec.image.clone(),
    };
    TaskRow {
        id: task.id.to_string(),
        name: format!("{}.{suffix}", service.spec.name),
        image,
        node: node_name,
        desired: task.desired,
        state: task.status.state,
        since: task.status.timestamp,
        message: task.status.message.clone(),
        exit_code: task.status.exit_code,
        current: service.is_current(task.spec_version),
    }
}

/// The rows of `node ls`, in hostname order.
pub fn node_rows(state: &ClusterState) -> Vec<NodeRow> {
    let mut rows: Vec<NodeRow> = state
        .nodes
        .values()
        .map(|node| node_row(state, node))
        .collect();
    rows.sort_by(|a, b| (&a.hostname, &a.id).cmp(&(&b.hostname, &b.id)));
    rows
}

fn node_row(state: &ClusterState, node: &Node) -> NodeRow {
    let tasks = state
        .tasks
        .values()
        .filter(|task| task.node.as_ref() == Some(&node.id) && !task.status.state.is_terminal())
        .count() as u64;
    NodeRow {
        id: node.id.clone(),
        hostname: node.hostname.clone(),
        state: format!("{:?}", node.state).to_lowercase(),
        availability: format!("{:?}", node.availability).to_lowercase(),
        role: format!("{:?}", node.role).to_lowercase(),
        runtime: format!("{:?}", node.runtime).to_lowercase(),
        tasks,
        version: node.version.clone(),
    }
}

/// Why a node name, id or id prefix names no single node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeLookupError {
    /// Nothing matches.
    #[error("no such node: {0} (see `shoal node ls`)")]
    NotFound(String),
    /// More than one node matches.
    #[error("{given} is ambiguous: it names {} ({}); give more of the id", .matches.len(), .matches.join(", "))]
    Ambiguous {
        /// What the user gave.
        given: String,
        /// The ids it matches.
        matches: Vec<String>,
    },
}

/// The node `given` names: its id, its hostname, or a unique prefix of its id.
pub fn find_node<'a>(state: &'a ClusterState, given: &str) -> Result<&'a Node, NodeLookupError> {
    if let Some(node) = state.nodes.get(&NodeId::new(given)) {
        return Ok(node);
    }
    let by_host: Vec<&Node> = state
        .nodes
        .values()
        .filter(|n| n.hostname == given)
        .collect();
    let candidates = if by_host.is_empty() && !given.is_empty() {
        state
            .nodes
            .values()
            .filter(|n| n.id.as_str().starts_with(given))
            .collect()
    } else {
        by_host
    };
    match candidates.as_slice() {
        [one] => Ok(one),
        [] => Err(NodeLookupError::NotFound(given.to_owned())),
        many => Err(NodeLookupError::Ambiguous {
            given: given.to_owned(),
            matches: many.iter().map(|n| n.id.to_string()).collect(),
        }),
    }
}

/// The rows of `node ps`: the tasks placed on `node`, live ones first, each service's by slot.
pub fn node_task_rows(state: &ClusterState, node: &NodeId) -> Vec<TaskRow> {
    let mut tasks: Vec<(&Service, &Task)> = state
        .tasks
        .values()
        .filter(|task| task.node.as_ref() == Some(node))
        .filter_map(|task| Some((state.services.get(&task.service)?, task)))
        .collect();
    tasks.sort_by(|(sa, a), (sb, b)| {
        let shut = |t: &Task| t.desired == DesiredState::Shutdown;
        (shut(a), &sa.spec.name, a.slot, std::cmp::Reverse(a.id)).cmp(&(
            shut(b),
            &sb.spec.name,
            b.slot,
            std::cmp::Reverse(b.id),
        ))
    });
    tasks
        .into_iter()
        .map(|(service, task)| task_row(state, service, task))
        .collect()
}
