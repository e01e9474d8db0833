//! Cluster events: what an applied command changed, as typed events (a service created, a task
//! that moved from `starting` to `running`, a node gone down, ...).
//!
//! Pure and deterministic, like the rest of the core: [`Probe::before`] notes what the command
//! may touch in the state it is about to be applied to, [`Probe::after`] compares that with the
//! state after the apply and names every change. Only what a command touches is looked at, so
//! the cost is that of the command, never that of the whole state.

use serde::{Deserialize, Serialize};

use crate::command::{Command, Outcome};
use crate::model::{
    Availability, ClusterState, DesiredState, NodeId, NodeRole, NodeState, ServiceId, TaskId,
    TaskState, Timestamp, UpdateState, takes_connections,
};
use crate::secrets::{ConfigId, SecretId};

/// What an event is about, for filters (`type=service|node|task|endpoint|cluster`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// A service's life and updates.
    Service,
    /// A node's life, liveness, role and availability.
    Node,
    /// A task's creation and state changes.
    Task,
    /// A task that started or stopped taking its service's connections.
    Endpoint,
    /// The cluster itself: its creation, settings and leader.
    Cluster,
    /// A secret created or removed (its name only, never its value).
    Secret,
    /// A config created or removed.
    Config,
}

impl EventType {
    /// The lowercase name users filter on.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Service => "service",
            EventType::Node => "node",
            EventType::Task => "task",
            EventType::Endpoint => "endpoint",
            EventType::Cluster => "cluster",
            EventType::Secret => "secret",
            EventType::Config => "config",
        }
    }
}

/// One change in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum EventKind {
    /// The cluster got its id.
    ClusterInitialised {
        /// The id.
        cluster_id: String,
    },
    /// Cluster settings changed.
    ClusterSettingsUpdated,
    /// A new raft leader (seen by the agent serving the events; not part of the log).
    LeaderElected {
        /// The leader's node id.
        leader: String,
        /// Its term.
        term: u64,
    },
    /// A service was created.
    ServiceCreated {
        /// Its id.
        id: ServiceId,
        /// Its name.
        name: String,
    },
    /// A service's spec changed (an update or a rollback started).
    ServiceUpdated {
        /// Its id.
        id: ServiceId,
        /// Its name.
        name: String,
        /// The new spec version.
        version: u64,
    },
    /// A service's rolling update changed state (completed, paused, rolling back, ...).
    ServiceUpdateState {
        /// Its id.
        id: ServiceId,
        /// Its name.
        name: String,
        /// The update's new state.
        state: UpdateState,
        /// Why (for a pause), or empty.
        message: String,
    },
    /// A service was removed.
    ServiceRemoved {
        /// Its id.
        id: ServiceId,
        /// Its name.
        name: String,
    },
    /// A secret was created (the event names it; its value is never in an event).
    SecretCreated {
        /// Its id.
        id: SecretId,
        /// Its name.
        name: String,
    },
    /// A secret was removed.
    SecretRemoved {
        /// Its id.
        id: SecretId,
        /// Its name.
        name: String,
    },
    /// A config was created.
    ConfigCreated {
        /// Its id.
        id: ConfigId,
        /// Its name.
        name: String,
    },
    /// A config was removed.
    ConfigRemoved {
        /// Its id.
        id: ConfigId,
        /// Its name.
        name: String,
    },
    /// A node joined the cluster.
    NodeJoined {
        /// Its id.
        id: NodeId,
        /// Its hostname.
        hostname: String,
    },
    /// A node became ready or down.
    NodeState {
        /// Its id.
        id: NodeId,
        /// Its hostname.
        hostname: String,
        /// The state before.
        from: NodeState,
        /// The state now.
        to: NodeState,
    },
    /// A node's availability changed (active, pause, drain).
    NodeAvailability {
        /// Its id.
        id: NodeId,
        /// Its hostname.
        hostname: String,
        /// The availability now.
        availability: Availability,
    },
    /// A node's role changed (promoted or demoted).
    NodeRole {
        /// Its id.
        id: NodeId,
        /// Its hostname.
        hostname: String,
        /// The role now.
        role: NodeRole,
    },
    /// A node's labels changed.
    NodeLabels {
        /// Its id.
        id: NodeId,
        /// Its hostname.
        hostname: String,
    },
    /// A node left the cluster.
    NodeRemoved {
        /// Its id.
        id: NodeId,
        /// Its hostname.
        hostname: String,
    },
    /// A task was created (placed on `node`, or pending).
    TaskCreated {
        /// Its id.
        id: TaskId,
        /// Its service's name.
        service: String,
        /// Its slot (replicated services).
        slot: Option<u64>,
        /// Where it was placed, if it was.
        node: Option<NodeId>,
    },
    /// A task's observed state, node or desired state changed.
    TaskState {
        /// Its id.
        id: TaskId,
        /// Its service's name.
        service: String,
        /// Its slot (replicated services).
        slot: Option<u64>,
        /// Its node, if placed.
        node: Option<NodeId>,
        /// The observed state before.
        from: TaskState,
        /// The observed state now.
        to: TaskState,
        /// What the orchestrator wants of it now.
        desired: DesiredState,
        /// The status message (an error, why it is pending), or empty.
        message: String,
    },
    /// A task started taking its service's connections: it runs (healthy, where it has a
    /// health check) and is wanted running. The service network's proxies send it new ones.
    EndpointAdded {
        /// The task.
        id: TaskId,
        /// Its service's name.
        service: String,
        /// Its node.
        node: Option<NodeId>,
    },
    /// A task stopped taking its service's connections: it is being stopped, or it stopped.
    EndpointRemoved {
        /// The task.
        id: TaskId,
        /// Its service's name.
        service: String,
        /// Its node.
        node: Option<NodeId>,
    },
}

impl EventKind {
    /// What the event is about.
    pub fn event_type(&self) -> EventType {
        match self {
            EventKind::ClusterInitialised { .. }
            | EventKind::ClusterSettingsUpdated
            | EventKind::LeaderElected { .. } => EventType::Cluster,
            EventKind::ServiceCreated { .. }
            | EventKind::ServiceUpdated { .. }
            | EventKind::ServiceUpdateState { .. }
            | EventKind::ServiceRemoved { .. } => EventType::Service,
            EventKind::NodeJoined { .. }
            | EventKind::NodeState { .. }
            | EventKind::NodeAvailability { .. }
            | EventKind::NodeRole { .. }
            | EventKind::NodeLabels { .. }
            | EventKind::NodeRemoved { .. } => EventType::Node,
            EventKind::TaskCreated { .. } | EventKind::TaskState { .. } => EventType::Task,
            EventKind::EndpointAdded { .. } | EventKind::EndpointRemoved { .. } => {
                EventType::Endpoint
            }
            EventKind::SecretCreated { .. } | EventKind::SecretRemoved { .. } => EventType::Secret,
            EventKind::ConfigCreated { .. } | EventKind::ConfigRemoved { .. } => EventType::Config,
        }
    }

    /// The name of what the event is about, for `name=` filters: the service's name (also for
    /// its tasks), the node's hostname, or the cluster's id or leader.
    pub fn subject_name(&self) -> &str {
        match self {
            EventKind::ClusterInitialised { cluster_id } => cluster_id,
            EventKind::ClusterSettingsUpdated => "",
            EventKind::LeaderElected { leader, .. } => leader,
            EventKind::ServiceCreated { name, .. }
            | EventKind::ServiceUpdated { name, .. }
            | EventKind::ServiceUpdateState { name, .. }
            | EventKind::ServiceRemoved { name, .. } => name,
            EventKind::NodeJoined { hostname, .. }
            | EventKind::NodeState { hostname, .. }
            | EventKind::NodeAvailability { hostname, .. }
            | EventKind::NodeRole { hostname, .. }
            | EventKind::NodeLabels { hostname, .. }
            | EventKind::NodeRemoved { hostname, .. } => hostname,
            EventKind::TaskCreated { service, .. }
            | EventKind::TaskState { service, .. }
            | EventKind::EndpointAdded { service, .. }
            | EventKind::EndpointRemoved { service, .. } => service,
            EventKind::SecretCreated { name, .. }
            | EventKind::SecretRemoved { name, .. }
            | EventKind::ConfigCreated { name, .. }
            | EventKind::ConfigRemoved { name, .. } => name,
        }
    }

    /// The id of what the event is about (`s…`, `t…`, a node's id), or the empty string.
    pub fn subject_id(&self) -> String {
        match self {
            EventKind::ClusterInitialised { .. }
            | EventKind::ClusterSettingsUpdated
            | EventKind::LeaderElected { .. } => String::new(),
            EventKind::ServiceCreated { id, .. }
            | EventKind::ServiceUpdated { id, .. }
            | EventKind::ServiceUpdateState { id, .. }
            | EventKind::ServiceRemoved { id, .. } => id.to_string(),
            EventKind::NodeJoined { id, .. }
            | EventKind::NodeState { id, .. }
            | EventKind::NodeAvailability { id, .. }
            | EventKind::NodeRole { id, .. }
            | EventKind::NodeLabels { id, .. }
            | EventKind::NodeRemoved { id, .. } => id.to_string(),
            EventKind::TaskCreated { id, .. }
            | EventKind::TaskState { id, .. }
            | EventKind::EndpointAdded { id, .. }
            | EventKind::EndpointRemoved { id, .. } => id.to_string(),
            EventKind::SecretCreated { id, .. } | EventKind::SecretRemoved { id, .. } => {
                id.to_string()
            }
            EventKind::ConfigCreated { id, .. } | EventKind::ConfigRemoved { id, .. } => {
                id.to_string()
            }
        }
    }
}

/// An event with its place in the log and its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The raft log index of the entry that caused it (for a leader change: the index applied
    /// when it was seen). Events resume from an index.
    pub index: u64,
    /// Its place among the events of the same index (resume after `index.seq`).
    #[serde(default)]
    pub seq: u32,
    /// When it happened (the command's time, or when it was applied).
    pub time: Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What a command may change, noted before it is applied.
#[derive(Debug, Default)]
pub struct Probe {
    services: Vec<(ServiceId, Option<ServiceSeen>)>,
    nodes: Vec<(NodeId, Option<NodeSeen>)>,
    tasks: Vec<(TaskId, Option<TaskSeen>)>,
    cluster_id_before: bool,
    // Ids at or above these are new (a retried write answered from the request log again
    // creates nothing and names nothing).
    next_service_id: u64,
    next_task_id: u64,
    next_secret_id: u64,
    next_config_id: u64,
    // The name of the secret or config a removal names, as it was.
    removed_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct ServiceSeen {
    name: String,
    version: u64,
    update: Option<(UpdateState, String)>,
}

#[derive(Debug, Clone, PartialEq)]
struct NodeSeen {
    hostname: String,
    state: NodeState,
    availability: Availability,
    role: NodeRole,
    labels_hash: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct TaskSeen {
    state: TaskState,
    desired: DesiredState,
    placed: bool,
}

impl Probe {
    /// Notes what `cmd` may touch in `state` (the state before the apply).
    pub fn before(state: &ClusterState, cmd: &Command) -> Probe {
        let mut probe = Probe {
            cluster_id_before: state.cluster_id.is_some(),
            next_service_id: state.next_service_id,
            next_task_id: state.next_task_id,
            next_secret_id: state.next_secret_id,
            next_config_id: state.next_config_id,
            ..Probe::default()
        };
        match cmd {
            Command::InitCluster { .. }
            | Command::CreateService { .. }
            | Command::PruneTasks { .. }
            | Command::RotateJoinToken { .. }
            | Command::UpdateClusterSettings { .. }
            | Command::EnableAutolock { .. }
            | Command::DisableAutolock { .. }
            | Command::RotateUnlockKey { .. }
            | Command::CreateSecret { .. }
            | Command::CreateConfig { .. }
            | Command::Decline { .. } => {}
            Command::RemoveSecret { id, .. } => {
                probe.removed_name = state.secrets.get(id).map(|s| s.name.clone());
            }
            Command::RemoveConfig { id, .. } => {
                probe.removed_name = state.configs.get(id).map(|c| c.name.clone());
            }
            Command::UpdateService { id, .. } | Command::RollbackService { id, .. } => {
                probe.note_service(state, *id)
            }
            Command::RemoveService { id, .. } => {
                // Its tasks are all told to stop in the same apply (which reads every task).
                probe.note_service(state, *id);
                for task in state.tasks.values().filter(|t| t.service == *id) {
                    probe.note_task(state, task.id);
                }
            }
            Command::UpsertNode { node } => probe.note_node(state, &node.id),
            Command::UpdateNode { id, .. } | Command::RemoveNode { id, .. } => {
                probe.note_node(state, id)
            }
            Command::SetNodeStates { changes, .. } => {
                for (id, _) in changes {
                    probe.note_node(state, id);
                }
            }
            Command::ApplyPlan { plan, .. } => {
                for p in &plan.placements {
                    probe.note_task(state, p.task);
                }
                for d in &plan.desired {
                    probe.note_task(state, d.task);
                }
                for s in &plan.services {
                    probe.note_service(state, s.service);
                }
            }
            Command::ReportTaskStatus { reports, .. } => {
                for (id, _) in reports {
                    probe.note_task(state, *id);
                }
            }
        }
        probe
    }

    fn note_service(&mut self, state: &ClusterState, id: ServiceId) {
        self.services.push((id, service_seen(state, id)));
    }

    fn note_node(&mut self, state: &ClusterState, id: &NodeId) {
        self.nodes.push((id.clone(), node_seen(state, id)));
    }

    fn note_task(&mut self, state: &ClusterState, id: TaskId) {
        self.tasks.push((id, task_seen(state, id)));
    }

    /// The events of `cmd`, applied with `outcome`, given `state` after the apply. `index` is
    /// the entry's log index; `applied_at` the time used when the command carries none.
    pub fn after(
        mut self,
        state: &ClusterState,
        cmd: &Command,
        outcome: &Outcome,
        index: u64,
        applied_at: Timestamp,
    ) -> Vec<Event> {
        let mut kinds = Vec::new();
        match (cmd, outcome) {
            (Command::InitCluster { cluster_id }, _) if !self.cluster_id_before => {
                kinds.push(EventKind::ClusterInitialised {
                    cluster_id: cluster_id.0.clone(),
                });
            }
            (
                Command::UpdateClusterSettings { .. }
                | Command::RotateJoinToken { .. }
                | Command::EnableAutolock { .. }
                | Command::DisableAutolock { .. }
                | Command::RotateUnlockKey { .. },
                _,
            ) => kinds.push(EventKind::ClusterSettingsUpdated),
            (Command::CreateService { .. }, Outcome::ServiceCreated(id))
                if id.0 >= self.next_service_id =>
            {
                if let Some(s) = state.services.get(id) {
                    kinds.push(EventKind::ServiceCreated {
                        id: *id,
                        name: s.spec.name.clone(),
                    });
                }
            }
            (Command::CreateSecret { name, .. }, Outcome::SecretCreated(id))
                if id.0 >= self.next_secret_id =>
            {
                kinds.push(EventKind::SecretCreated {
                    id: *id,
                    name: name.clone(),
                });
            }
            (Command::CreateConfig { name, .. }, Outcome::ConfigCreated(id))
                if id.0 >= self.next_config_id =>
            {
                kinds.push(EventKind::ConfigCreated {
                    id: *id,
                    name: name.clone(),
                });
            }
            (Command::RemoveSecret { .. }, Outcome::SecretRemoved(id)) => {
                if let Some(name) = self.removed_name.take() {
                    kinds.push(EventKind::SecretRemoved { id: *id, name });
                }
            }
            (Command::RemoveConfig { .. }, Outcome::ConfigRemoved(id)) => {
                if let Some(name) = self.removed_name.take() {
                    kinds.push(EventKind::ConfigRemoved { id: *id, name });
                }
            }
            (Command::ApplyPlan { .. }, Outcome::PlanApplied { created }) => {
                let new = created.iter().filter(|id| id.0 >= self.next_task_id);
                kinds.extend(new.filter_map(|id| task_created(state, *id)));
            }
            _ => {}
        }
        // A command may name one thing twice (a batch with two reports of one task): one
        // change, one event. Every note was taken before the apply, so any of them will do.
        self.services.sort_by_key(|(id, _)| *id);
        self.services.dedup_by_key(|(id, _)| *id);
        self.nodes.sort_by(|a, b| a.0.cmp(&b.0));
        self.nodes.dedup_by(|a, b| a.0 == b.0);
        self.tasks.sort_by_key(|(id, _)| *id);
        self.tasks.dedup_by_key(|(id, _)| *id);
        for (id, before) in &self.services {
            service_changes(state, *id, before.as_ref(), &mut kinds);
        }
        for (id, before) in &self.nodes {
            node_changes(state, id, before.as_ref(), &mut kinds);
        }
        for (id, before) in &self.tasks {
            task_changes(state, *id, before.as_ref(), &self.services, &mut kinds);
        }
        let time = command_time(cmd).unwrap_or(applied_at);
        kinds
            .into_iter()
            .zip(0..)
            .map(|(kind, seq)| Event {
                index,
                seq,
                time,
                kind,
            })
            .collect()
    }
}

/// The time a command carries, if any.
fn command_time(cmd: &Command) -> Option<Timestamp> {
    match cmd {
        Command::CreateService { at, .. }
        | Command::UpdateService { at, .. }
        | Command::RollbackService { at, .. }
        | Command::RemoveService { at, .. }
        | Command::SetNodeStates { at, .. }
        | Command::RemoveNode { at, .. }
        | Command::ApplyPlan { at, .. }
        | Command::CreateSecret { at, .. }
        | Command::RemoveSecret { at, .. }
        | Command::CreateConfig { at, .. }
        | Command::RemoveConfig { at, .. }
        | Command::EnableAutolock { at, .. }
        | Command::DisableAutolock { at }
        | Command::RotateUnlockKey { at, .. } => Some(*at),
        Command::ReportTaskStatus { reports, .. } => reports.iter().map(|(_, s)| s.timestamp).max(),
        Command::InitCluster { .. }
        | Command::UpsertNode { .. }
        | Command::UpdateNode { .. }
        | Command::PruneTasks { .. }
        | Command::RotateJoinToken { .. }
        | Command::UpdateClusterSettings { .. }
        | Command::Decline { .. } => None,
    }
}

fn service_seen(state: &ClusterState, id: ServiceId) -> Option<ServiceSeen> {
    state.services.get(&id).map(|s| ServiceSeen {
        name: s.spec.name.clone(),
        version: s.version,
        update: s
            .update_status
            .as_ref()
            .map(|u| (u.state, u.message.clone())),
    })
}

fn node_seen(state: &ClusterState, id: &NodeId) -> Option<NodeSeen> {
    state.nodes.get(id).map(|n| NodeSeen {
        hostname: n.hostname.clone(),
        state: n.state,
        availability: n.availability,
        role: n.role,
        labels_hash: labels_hash(&n.labels),
    })
}

fn task_seen(state: &ClusterState, id: TaskId) -> Option<TaskSeen> {
    state.tasks.get(&id).map(|t| TaskSeen {
        state: t.status.state,
        desired: t.desired,
        placed: t.node.is_some(),
    })
}

/// A cheap fingerprint of a label set (FNV-1a over keys and values), to see that it changed.
fn labels_hash(labels: &std::collections::BTreeMap<String, String>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for byte in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

fn service_changes(
    state: &ClusterState,
    id: ServiceId,
    before: Option<&ServiceSeen>,
    out: &mut Vec<EventKind>,
) {
    let after = service_seen(state, id);
    match (before, after) {
        (Some(b), None) => out.push(EventKind::ServiceRemoved {
            id,
            name: b.name.clone(),
        }),
        (Some(b), Some(a)) => {
            if a.version != b.version {
                out.push(EventKind::ServiceUpdated {
                    id,
                    name: a.name.clone(),
                    version: a.version,
                });
            }
            if a.update != b.update
                && let Some((state, message)) = a.update
            {
                out.push(EventKind::ServiceUpdateState {
                    id,
                    name: a.name,
                    state,
                    message,
                });
            }
        }
        (None, _) => {}
    }
}

fn node_changes(
    state: &ClusterState,
    id: &NodeId,
    before: Option<&NodeSeen>,
    out: &mut Vec<EventKind>,
) {
    let after = node_seen(state, id);
    let id = id.clone();
    match (before, after) {
        (None, Some(a)) => out.push(EventKind::NodeJoined {
            id,
            hostname: a.hostname,
        }),
        (Some(b), None) => out.push(EventKind::NodeRemoved {
            id,
            hostname: b.hostname.clone(),
        }),
        (Some(b), Some(a)) => {
            if a.state != b.state {
                out.push(EventKind::NodeState {
                    id: id.clone(),
                    hostname: a.hostname.clone(),
                    from: b.state,
                    to: a.state,
                });
            }
            if a.availability != b.availability {
                out.push(EventKind::NodeAvailability {
                    id: id.clone(),
                    hostname: a.hostname.clone(),
                    availability: a.availability,
                });
            }
            if a.role != b.role {
                out.push(EventKind::NodeRole {
                    id: id.clone(),
                    hostname: a.hostname.clone(),
                    role: a.role,
                });
            }
            if a.labels_hash != b.labels_hash {
                out.push(EventKind::NodeLabels {
                    id,
                    hostname: a.hostname,
                });
            }
        }
        (None, None) => {}
    }
}

fn service_name(state: &ClusterState, id: ServiceId) -> String {
    state
        .services
        .get(&id)
        .map(|s| s.spec.name.clone())
        .unwrap_or_default()
}

fn task_created(state: &ClusterState, id: TaskId) -> Option<EventKind> {
    let task = state.tasks.get(&id)?;
    Some(EventKind::TaskCreated {
        id,
        service: service_name(state, task.service),
        slot: task.slot,
        node: task.node.clone(),
    })
}

/// The events of task `id`'s changes: its state, then its being an endpoint or not. A task
/// whose service this command removed is named by the service's name as it was (`noted`).
fn task_changes(
    state: &ClusterState,
    id: TaskId,
    before: Option<&TaskSeen>,
    noted: &[(ServiceId, Option<ServiceSeen>)],
    out: &mut Vec<EventKind>,
) {
    let (Some(before), Some(task)) = (before, state.tasks.get(&id)) else {
        return;
    };
    let now = TaskSeen {
        state: task.status.state,
        desired: task.desired,
        placed: task.node.is_some(),
    };
    if now == *before {
        return;
    }
    let service = state.services.get(&task.service).map_or_else(
        || {
            noted
                .iter()
                .find(|(s, _)| *s == task.service)
                .and_then(|(_, seen)| seen.as_ref())
                .map(|seen| seen.name.clone())
                .unwrap_or_default()
        },
        |s| s.spec.name.clone(),
    );
    out.push(EventKind::TaskState {
        id,
        service: service.clone(),
        slot: task.slot,
        node: task.node.clone(),
        from: before.state,
        to: now.state,
        desired: now.desired,
        message: task.status.message.clone(),
    });
    let was_endpoint = takes_connections(before.state, before.desired);
    if was_endpoint != task.takes_connections() {
        let (node, id) = (task.node.clone(), id);
        out.push(if was_endpoint {
            EventKind::EndpointRemoved { id, service, node }
        } else {
            EventKind::EndpointAdded { id, service, node }
        });
    }
}

#[cfg(test)]
mod tests;
