//! The raft log's entries ([`Command`]) and the one function that applies them to a
//! [`ClusterState`]: deterministic, and all-or-nothing — an invalid or stale command returns an
//! error and changes nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{
    Availability, ClusterId, ClusterState, Node, NodeId, NodeRole, NodeState, ServiceId,
    ServiceSpec, TaskId, TaskStatus, Timestamp,
};
use crate::plan::Plan;
use crate::secrets::{Blob, ConfigId, ObjectKind, SealedValue, SecretId};

/// One entry of the replicated log. Every variant that needs a time carries it: the leader stamps
/// the time when it proposes the command, so every replica applies the same value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Record the cluster's id (the first entry of a new cluster).
    InitCluster {
        /// The new cluster's id.
        cluster_id: ClusterId,
    },
    /// Create a service; its id is assigned by the state machine.
    CreateService {
        /// The desired state.
        spec: ServiceSpec,
        /// When.
        at: Timestamp,
    },
    /// Replace a service's spec (starts a rolling update).
    UpdateService {
        /// Which service.
        id: ServiceId,
        /// The service's revision the writer saw (see `Service::revision`); a mismatch is
        /// rejected as stale, so that a change made meanwhile (a scale as well) is never
        /// overwritten.
        #[serde(alias = "expected_version")]
        expected_revision: u64,
        /// The new spec.
        spec: ServiceSpec,
        /// When.
        at: Timestamp,
    },
    /// Roll a service back to its previous spec.
    RollbackService {
        /// Which service.
        id: ServiceId,
        /// When.
        at: Timestamp,
    },
    /// Remove a service; its tasks are told to shut down.
    RemoveService {
        /// Which service.
        id: ServiceId,
        /// When.
        at: Timestamp,
    },
    /// Add a node, or refresh what it reports about itself (hostname, addresses, resources, ...).
    UpsertNode {
        /// The node as it describes itself. The operator-owned fields (role, availability,
        /// labels) of an existing node are kept.
        node: Node,
    },
    /// Change what the operator controls on a node.
    UpdateNode {
        /// Which node.
        id: NodeId,
        /// New availability, if changed.
        availability: Option<Availability>,
        /// New role, if changed.
        role: Option<NodeRole>,
        /// Labels to set.
        labels_set: Vec<(String, String)>,
        /// Labels to remove.
        labels_remove: Vec<String>,
    },
    /// Record the liveness of one or many nodes as seen by the dispatcher (one write for many
    /// nodes marked down at once). Nodes that no longer exist are skipped.
    SetNodeStates {
        /// Each node with its new state: ready or down.
        changes: Vec<(NodeId, NodeState)>,
        /// When.
        at: Timestamp,
    },
    /// Remove a node from the cluster.
    RemoveNode {
        /// Which node.
        id: NodeId,
        /// Remove even if it is not down.
        force: bool,
        /// When.
        at: Timestamp,
    },
    /// Apply the orchestrator's plan: new tasks, placements, stops. Rejected whole if stale.
    ApplyPlan {
        /// The plan.
        plan: Plan,
        /// When.
        at: Timestamp,
    },
    /// A batch of status reports from one node about its own tasks.
    ReportTaskStatus {
        /// The reporting node; reports about tasks of other nodes are ignored.
        node: NodeId,
        /// New statuses.
        reports: Vec<(TaskId, TaskStatus)>,
    },
    /// Forget terminal tasks beyond the history limit (keeps the state small).
    PruneTasks {
        /// Terminal tasks kept per slot (or per node for global services).
        keep_per_slot: u64,
    },
    /// Rotate a role's join token (`shoal cluster token --rotate`): new joiners must present the
    /// new one; the old one is accepted for `grace_ms` more.
    RotateJoinToken {
        /// The role whose token rotates.
        role: crate::join_keys::JoinRole,
        /// The rotation's nonce, chosen at random by the manager that took the request.
        nonce: crate::join_keys::JoinNonce,
        /// How long the replaced token is still accepted, in milliseconds.
        grace_ms: u64,
        /// When.
        at: Timestamp,
    },
    /// Change cluster-wide settings (`None` keeps a setting as it is).
    UpdateClusterSettings {
        /// Whether services may bind-mount the host's root or an engine's socket.
        allow_sensitive_mounts: Option<bool>,
        /// Ended tasks kept per slot as history ([`crate::ClusterSettings::task_history_limit`]).
        #[serde(default)]
        task_history_limit: Option<u64>,
    },
    /// Create a secret from a value a manager sealed before proposing this command (the log
    /// never holds the plaintext); its id is assigned by the state machine.
    CreateSecret {
        /// Its name, unique among secrets.
        name: String,
        /// Its labels.
        #[serde(default)]
        labels: BTreeMap<String, String>,
        /// The sealed value.
        sealed: SealedValue,
        /// When.
        at: Timestamp,
    },
    /// Remove a secret no service refers to.
    RemoveSecret {
        /// Which secret.
        id: SecretId,
        /// When.
        at: Timestamp,
    },
    /// Create a config; its id is assigned by the state machine.
    CreateConfig {
        /// Its name, unique among configs.
        name: String,
        /// Its labels.
        #[serde(default)]
        labels: BTreeMap<String, String>,
        /// The value.
        data: Blob,
        /// When.
        at: Timestamp,
    },
    /// Remove a config no service refers to.
    RemoveConfig {
        /// Which config.
        id: ConfigId,
        /// When.
        at: Timestamp,
    },
    /// Turn autolock on (`shoal cluster update --autolock true`) with an unlock key a manager
    /// made and sealed with the data key. Refused while autolock is on.
    EnableAutolock {
        /// The unlock key, sealed.
        unlock_key: crate::autolock::SealedUnlockKey,
        /// When.
        at: Timestamp,
    },
    /// Turn autolock off: managers keep the data key in plain again.
    DisableAutolock {
        /// When.
        at: Timestamp,
    },
    /// Replace the unlock key (`shoal cluster unlock-key --rotate`). Refused while autolock is
    /// off.
    RotateUnlockKey {
        /// The new unlock key, sealed.
        unlock_key: crate::autolock::SealedUnlockKey,
        /// When.
        at: Timestamp,
    },
    /// Record that a client's request was refused before it became any other command (what it
    /// names does not exist, names several records, or may not change now). Changes nothing but
    /// the request log: written under the request's id, it decides that request once, so that
    /// a copy of it still on its way (a forwarded call that arrives late) is answered with this
    /// refusal instead of acting on what the name means by then.
    Decline {
        /// Why, by kind.
        reason: DeclineReason,
        /// What the client is told.
        message: String,
    },
}

/// Why a request was declined ([`Command::Decline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeclineReason {
    /// Nothing has the name it gave.
    NotFound,
    /// Its name fits more than one record.
    Ambiguous,
    /// What it names may not change that way now.
    Conflict,
    /// The request itself is wrong.
    Invalid,
}

impl Command {
    /// The variant's name, for logs, metrics and refusals (never the payload: commands can be
    /// large, and some carry values that must not be logged).
    pub fn kind(&self) -> &'static str {
        match self {
            Command::InitCluster { .. } => "InitCluster",
            Command::CreateService { .. } => "CreateService",
            Command::UpdateService { .. } => "UpdateService",
            Command::RollbackService { .. } => "RollbackService",
            Command::RemoveService { .. } => "RemoveService",
            Command::UpsertNode { .. } => "UpsertNode",
            Command::UpdateNode { .. } => "UpdateNode",
            Command::SetNodeStates { .. } => "SetNodeStates",
            Command::RemoveNode { .. } => "RemoveNode",
            Command::ApplyPlan { .. } => "ApplyPlan",
            Command::ReportTaskStatus { .. } => "ReportTaskStatus",
            Command::PruneTasks { .. } => "PruneTasks",
            Command::UpdateClusterSettings { .. } => "UpdateClusterSettings",
            Command::RotateJoinToken { .. } => "RotateJoinToken",
            Command::CreateSecret { .. } => "CreateSecret",
            Command::RemoveSecret { .. } => "RemoveSecret",
            Command::CreateConfig { .. } => "CreateConfig",
            Command::RemoveConfig { .. } => "RemoveConfig",
            Command::EnableAutolock { .. } => "EnableAutolock",
            Command::DisableAutolock { .. } => "DisableAutolock",
            Command::RotateUnlockKey { .. } => "RotateUnlockKey",
            Command::Decline { .. } => "Decline",
        }
    }
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Nothing to report beyond success.
    Done,
    /// A service was created with this id.
    ServiceCreated(ServiceId),
    /// The service with this id was removed (its tasks are told to shut down).
    ServiceRemoved(ServiceId),
    /// The service with this id was updated, scaled or rolled back.
    ServiceUpdated(ServiceId),
    /// What the operator controls on the node with this id changed.
    NodeUpdated(NodeId),
    /// The node with this id was removed from the cluster's state.
    NodeRemoved(NodeId),
    /// A plan was applied: the tasks it created.
    PlanApplied {
        /// Ids of the created tasks, in plan order.
        created: Vec<TaskId>,
    },
    /// A secret was created with this id.
    SecretCreated(SecretId),
    /// The secret with this id was removed.
    SecretRemoved(SecretId),
    /// A config was created with this id.
    ConfigCreated(ConfigId),
    /// The config with this id was removed.
    ConfigRemoved(ConfigId),
    /// Status reports were applied: how many changed something.
    StatusApplied {
        /// Reports that moved a task forward.
        accepted: u64,
        /// Reports ignored (stale, backwards, or about another node's task).
        ignored: u64,
    },
}

/// Why a command was refused. A refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ApplyError {
    /// The cluster already has an id.
    #[error("cluster already initialised as {0}")]
    AlreadyInitialised(ClusterId),
    /// No service with that id.
    #[error("no such service: {0}")]
    NoSuchService(ServiceId),
    /// No node with that id.
    #[error("no such node: {0}")]
    NoSuchNode(NodeId),
    /// A service with that name exists.
    #[error("a service named {0:?} already exists")]
    NameInUse(String),
    /// No secret or config of that kind with that id.
    #[error("no such {0}: {1}")]
    NoSuchObject(ObjectKind, String),
    /// A secret or config with that name exists.
    #[error(
        "a {0} named {1:?} already exists (secrets and configs are immutable: create one under a new name and update the services)"
    )]
    ObjectNameInUse(ObjectKind, String),
    /// The spec is invalid.
    #[error("invalid service spec: {0}")]
    InvalidSpec(String),
    /// The writer's view is out of date.
    #[error("stale: {0}")]
    Stale(String),
    /// The request is not allowed in the current state.
    #[error("refused: {0}")]
    Refused(String),
    /// The writer may not make this change (a worker writing for another node, or a change
    /// only managers may make).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The request was declined before it became a command ([`Command::Decline`]).
    #[error("{message}")]
    Declined {
        /// Why, by kind.
        reason: DeclineReason,
        /// What the client is told.
        message: String,
    },
}

impl ClusterState {
    /// Applies one command. Deterministic: the same state and command always give the same
    /// result. On error the state is unchanged.
    pub fn apply(&mut self, cmd: &Command) -> Result<Outcome, ApplyError> {
        crate::apply::apply(self, cmd)
    }
}
