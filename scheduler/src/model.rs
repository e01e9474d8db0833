//! The cluster model: nodes, services, tasks and the whole `ClusterState`.
//!
//! Everything here is plain data. Identifiers are newtypes so that a task id can never be passed
//! where a node id is expected. Times are [`Timestamp`]s (milliseconds since the Unix epoch)
//! supplied by the caller: nothing in this crate reads a clock.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, always supplied by the caller.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This time plus `millis` milliseconds (saturating).
    pub fn plus_millis(self, millis: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(millis))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// A node's identity: the string form of its libp2p PeerId.
///
/// Cloning is cheap (a reference count), which matters when a million tasks name their node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub Arc<str>);

impl NodeId {
    /// Wraps a PeerId string (or any stable node name in tests and simulations).
    pub fn new(id: impl AsRef<str>) -> Self {
        NodeId(Arc::from(id.as_ref()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A service's identity, assigned by the state machine when the service is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceId(pub u64);

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{:011x}", self.0)
    }
}

/// A task's identity, assigned by the state machine when the task is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{:011x}", self.0)
    }
}

/// The identity of a whole cluster, chosen once when it is initialised.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub String);

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------

/// Whether a node takes part in the manager quorum.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// A raft voter (and also a worker unless drained).
    Manager,
    /// Runs tasks only.
    #[default]
    Worker,
}

/// What the operator allows on a node.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// New tasks may be placed here.
    #[default]
    Active,
    /// Running tasks stay; no new tasks are placed.
    Pause,
    /// Tasks are moved away and none are placed.
    Drain,
}

/// What the cluster observes about a node's liveness.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Heard from recently.
    Ready,
    /// Declared gone by the dispatcher.
    Down,
    /// Not yet heard from.
    #[default]
    Unknown,
}

/// A node's operating system and architecture, as Docker names them (`linux`, `x86_64`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture, e.g. `x86_64` or `aarch64`.
    pub arch: String,
}

/// An amount of CPU and memory.
///
/// CPU is in nano-CPUs (1 CPU = 1_000_000_000) like Docker's `NanoCpus`; memory is in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Resources {
    /// CPU in billionths of a core.
    pub nano_cpus: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

/// The container runtime a node offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// A Docker engine answers on this node.
    #[default]
    Docker,
    /// In-memory simulated tasks (benchmarks and scale tests only).
    Sim,
    /// No runtime: the node does manager and mesh work but gets no tasks.
    None,
}

/// What a node's admission allows it: set by the leader from the token the node joined with.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Credential {
    /// Joined with a manager token, or in open mode: may become a manager and may write.
    #[default]
    Manager,
    /// Joined with a worker token: runs tasks and speaks only for itself; never a manager.
    Worker,
}

/// A node as the cluster records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The node's PeerId.
    pub id: NodeId,
    /// Its hostname.
    pub hostname: String,
    /// The multiaddrs it can be reached at.
    pub addresses: Vec<String>,
    /// Manager or worker.
    pub role: NodeRole,
    /// What the operator allows on it.
    pub availability: Availability,
    /// What the cluster observes.
    pub state: NodeState,
    /// Operator-defined labels, used by constraints and placement preferences.
    pub labels: BTreeMap<String, String>,
    /// Operating system and architecture.
    pub platform: Platform,
    /// Total CPU and memory of the machine.
    pub total: Resources,
    /// CPU and memory held back from tasks (for the agent and the system).
    pub reserved: Resources,
    /// The container runtime it offers.
    pub runtime: Runtime,
    /// The shoal version it runs.
    pub version: String,
    /// What its admission allows (a worker token never makes a manager).
    #[serde(default)]
    pub credential: Credential,
}

impl Node {
    /// CPU and memory that tasks may reserve on this node.
    pub fn allocatable(&self) -> Resources {
        Resources {
            nano_cpus: self.total.nano_cpus.saturating_sub(self.reserved.nano_cpus),
            memory_bytes: self
                .total
                .memory_bytes
                .saturating_sub(self.reserved.memory_bytes),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------------------

/// How many tasks a service wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    /// A fixed number of replicas, each in its own slot `1..=replicas`.
    Replicated {
        /// Number of replicas wanted.
        replicas: u64,
    },
    /// One task on every eligible node.
    Global,
}

/// Comparison of a constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConstraintOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// The node attribute a constraint reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConstraintKey {
    /// `node.id`
    NodeId,
    /// `node.hostname`
    Hostname,
    /// `node.role`
    Role,
    /// `node.labels.X`
    Label(String),
    /// `node.platform.os`
    PlatformOs,
    /// `node.platform.arch`
    PlatformArch,
}

/// A placement constraint such as `node.labels.zone==eu`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Constraint {
    /// What is compared.
    pub key: ConstraintKey,
    /// How.
    pub op: ConstraintOp,
    /// With what.
    pub value: String,
}

/// A placement preference: `spread=node.labels.X` balances tasks across values of label X first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PlacementPreference {
    /// Spread across the values of this node label.
    SpreadOverLabel(String),
}

/// How placement ranks the nodes that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Fewest tasks of this service, then fewest tasks overall.
    #[default]
    Spread,
    /// The fullest node that still fits.
    Binpack,
}

/// Reservations (used by placement) and limits (enforced by the runtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct ResourceRequirements {
    /// Held for the task on its node; placement never overcommits these.
    pub reservations: Resources,
    /// Hard limits given to the container; zero means unlimited.
    pub limits: Resources,
}

/// When a task that ended is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    /// Never.
    None,
    /// Only when it failed (non-zero exit, rejected, unhealthy).
    OnFailure,
    /// Whenever it ended.
    #[default]
    Any,
}

/// The restart policy of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// When to restart.
    pub condition: RestartCondition,
    /// Wait this long after a task ends before its replacement starts.
    pub delay_ms: u64,
    /// Give up after this many restarts within `window_ms` (0 = unlimited).
    pub max_attempts: u64,
    /// The window in which attempts are counted (0 = forever).
    pub window_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Any,
            delay_ms: 0,
            max_attempts: 0,
            window_ms: 0,
        }
    }
}

/// Which side of a replacement happens first in a rolling update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop the old task, then start the new one.
    #[default]
    StopFirst,
    /// Start the new task, then stop the old one once it runs.
    StartFirst,
}

/// What a rolling update does when too many new tasks fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    /// Stop updating and wait for the operator.
    #[default]
    Pause,
    /// Carry on regardless.
    Continue,
    /// Roll back to the previous spec.
    Rollback,
}

/// How a rolling update (or a rollback) proceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Tasks replaced at once (0 = all at once).
    pub parallelism: u64,
    /// Wait between batches.
    pub delay_ms: u64,
    /// Stop-first or start-first.
    pub order: UpdateOrder,
    /// What to do when the failure ratio is exceeded.
    pub failure_action: FailureAction,
    /// How long a new task is watched for failure after it starts.
    pub monitor_ms: u64,
    /// Share of updated tasks that may fail before `failure_action`, in thousandths
    /// (`--update-max-failure-ratio 0.2` is 200).
    pub max_failure_permille: u32,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay_ms: 0,
            order: UpdateOrder::StopFirst,
            failure_action: FailureAction::Pause,
            monitor_ms: 5_000,
            max_failure_permille: 0,
        }
    }
}

/// A container health check, as Docker runs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HealthCheck {
    /// The command, run through the shell (`CMD-SHELL`).
    pub command: String,
    /// Time between checks.
    pub interval_ms: u64,
    /// A check taking longer fails.
    pub timeout_ms: u64,
    /// Consecutive failures that make the task unhealthy.
    pub retries: u64,
    /// Failures during this period after start do not count.
    pub start_period_ms: u64,
}

/// Transport protocol of a published port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl PortProtocol {
    /// `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        }
    }
}

/// A port a service publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortSpec {
    /// The port inside the container.
    pub target: u16,
    /// The port on the host (0 = none).
    pub published: u16,
    /// TCP or UDP.
    pub protocol: PortProtocol,
    /// Host mode binds the node's own port, so two tasks cannot share a node.
    pub host_mode: bool,
}

/// A mount into the container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MountSpec {
    /// `bind`, `volume` or `tmpfs`.
    pub kind: MountKind,
    /// Host path (bind) or volume name (volume); empty for tmpfs.
    pub source: String,
    /// Path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Kind of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host path.
    Bind,
    /// A named Docker volume.
    Volume,
    /// An in-memory filesystem.
    Tmpfs,
}

/// Desired state of a service, as written by a user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Unique name.
    pub name: String,
    /// Container image.
    pub image: String,
    /// Entrypoint override (empty = the image's).
    pub command: Vec<String>,
    /// Arguments (empty = the image's).
    pub args: Vec<String>,
    /// `KEY=VALUE` environment.
    pub env: Vec<String>,
    /// Replicated or global.
    pub mode: ServiceMode,
    /// Placement constraints; all must hold.
    pub constraints: Vec<Constraint>,
    /// Placement preferences, applied in order.
    pub preferences: Vec<PlacementPreference>,
    /// Spread or binpack.
    pub strategy: Strategy,
    /// At most this many tasks of the service on one node (0 = unlimited).
    pub max_replicas_per_node: u64,
    /// Reservations and limits.
    pub resources: ResourceRequirements,
    /// When ended tasks are replaced.
    pub restart: RestartPolicy,
    /// How updates roll out.
    pub update: UpdateConfig,
    /// How rollbacks roll out.
    pub rollback: UpdateConfig,
    /// Health check (None = the image's, or none).
    pub health: Option<HealthCheck>,
    /// Published ports.
    pub ports: Vec<PortSpec>,
    /// Mounts.
    pub mounts: Vec<MountSpec>,
    /// Service labels (also set on its containers).
    pub labels: BTreeMap<String, String>,
    /// Grace between the stop signal and a kill.
    pub stop_grace_ms: u64,
    /// Bumped by `service update --force`: a new spec that replaces every task though nothing
    /// else changed.
    #[serde(default)]
    pub force_update: u64,
    /// Secrets mounted into each task as files (an in-memory mount, never the node's disk).
    #[serde(default)]
    pub secrets: Vec<crate::secrets::FileRef>,
    /// Configs mounted into each task as files.
    #[serde(default)]
    pub configs: Vec<crate::secrets::FileRef>,
    /// The containers' hostname (`None`: the engine's default, the container's short id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Who the command runs as: `user`, `uid`, `user:group` or `uid:gid` (`None`: the image's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The command's working directory, an absolute path (`None`: the image's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

/// The progress of a rolling update or rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// Replacing tasks with the new spec.
    Updating,
    /// Paused after too many failures.
    Paused,
    /// All tasks run the new spec.
    Completed,
    /// Replacing tasks with the previous spec.
    RollingBack,
    /// Rollback finished.
    RolledBack,
}

/// Where an update stands.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// State of the update.
    pub state: UpdateState,
    /// When it started.
    pub started_at: Timestamp,
    /// Human-readable detail (why it paused, ...).
    pub message: String,
}

/// A service as the cluster records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Its id.
    pub id: ServiceId,
    /// The current desired spec.
    pub spec: ServiceSpec,
    /// Bumped on every spec change that replaces tasks; tasks record the version they were
    /// made from. A scale keeps it.
    pub version: u64,
    /// Bumped on every change of the service, a scale included: what a writer's
    /// compare-and-set (`Command::UpdateService`'s `expected_revision`) compares with.
    #[serde(default)]
    pub revision: u64,
    /// The spec before the last update, for rollback.
    pub previous_spec: Option<ServiceSpec>,
    /// Version of `previous_spec`.
    pub previous_version: Option<u64>,
    /// Progress of the current update, if any.
    pub update_status: Option<UpdateStatus>,
    /// An older version whose tasks run exactly the current spec (set by a rollback to that
    /// version's spec): its tasks count as up to date and are not replaced.
    #[serde(default)]
    pub equivalent_version: Option<u64>,
    /// Its place in the cluster's range of service addresses (its virtual IP is the range's
    /// address at this offset): the lowest offset no other service holds, given at creation and
    /// kept for the service's life, so that a range is never used up by services long gone.
    #[serde(default)]
    pub address_index: Option<u32>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last spec change.
    pub updated_at: Timestamp,
}

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

/// The observed state of a task. Ordered: a task's observed state only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Created by the orchestrator.
    New,
    /// Waiting for a node.
    Pending,
    /// Placed on a node.
    Assigned,
    /// The node took it.
    Accepted,
    /// The node is preparing it (image, volumes).
    Preparing,
    /// The container is starting.
    Starting,
    /// The container runs (and is healthy, if it has a health check).
    Running,
    /// It exited with code 0.
    Complete,
    /// It was stopped on purpose.
    Shutdown,
    /// It exited non-zero or became unhealthy.
    Failed,
    /// The node could not run it (missing image, bad spec).
    Rejected,
    /// Its node was lost.
    Orphaned,
}

impl TaskState {
    /// Whether the task has ended (nothing will run for it again).
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }
}

/// What the orchestrator wants a task to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// Placed and prepared, but not started yet (start-first and restart delay).
    Ready,
    /// Running.
    Running,
    /// Stopped and removed.
    Shutdown,
}

/// What a node reports about a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// Observed state.
    pub state: TaskState,
    /// Human-readable detail (`no suitable node (...)`, `image not found`, ...).
    pub message: String,
    /// Exit code, once exited.
    pub exit_code: Option<i64>,
    /// When this status was observed.
    pub timestamp: Timestamp,
    /// The container's id on its node.
    pub container_id: Option<String>,
}

/// One scheduled unit of a service: one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// The service it belongs to.
    pub service: ServiceId,
    /// The slot (replicated services), 1-based.
    pub slot: Option<u64>,
    /// The node it is bound to (global services) or placed on (replicated, once assigned).
    pub node: Option<NodeId>,
    /// The service version whose spec it runs.
    pub spec_version: u64,
    /// What the orchestrator wants.
    pub desired: DesiredState,
    /// What was last observed.
    pub status: TaskStatus,
    /// When it was created.
    pub created_at: Timestamp,
    /// Earliest time it may be started (restart delay).
    pub not_before: Timestamp,
}

// ---------------------------------------------------------------------------------------------
// The whole state
// ---------------------------------------------------------------------------------------------

/// Everything the manager quorum agrees on. Changed only through `ClusterState::apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClusterState {
    /// The cluster's id, once initialised.
    pub cluster_id: Option<ClusterId>,
    /// Nodes by id.
    pub nodes: BTreeMap<NodeId, Node>,
    /// Services by id.
    pub services: BTreeMap<ServiceId, Service>,
    /// Tasks by id.
    pub tasks: BTreeMap<TaskId, Task>,
    /// Next service id to hand out.
    pub next_service_id: u64,
    /// Next task id to hand out.
    pub next_task_id: u64,
    /// Cluster-wide settings.
    #[serde(default)]
    pub settings: ClusterSettings,
    /// The outcomes of recent client requests, so that a retried write is applied once.
    #[serde(default)]
    pub requests: crate::requests::RequestLog,
    /// Which join tokens new nodes may present (their rotations). Never shown by a view.
    #[serde(default)]
    pub join_keys: crate::join_keys::JoinKeys,
    /// Secrets by id (their values sealed: see [`crate::secrets`]).
    #[serde(default)]
    pub secrets: BTreeMap<crate::secrets::SecretId, crate::secrets::Secret>,
    /// Configs by id.
    #[serde(default)]
    pub configs: BTreeMap<crate::secrets::ConfigId, crate::secrets::Config>,
    /// Next secret id to hand out.
    #[serde(default)]
    pub next_secret_id: u64,
    /// Next config id to hand out.
    #[serde(default)]
    pub next_config_id: u64,
    /// Autolock: whether managers keep the data key wrapped with an unlock key, and that key
    /// sealed with the data key. Never shown by a view (see [`crate::autolock`]).
    #[serde(default)]
    pub autolock: crate::autolock::Autolock,
}

/// Ended tasks kept per slot (or per node for a global service) unless the cluster says
/// otherwise: `shoal cluster update --task-history-limit N`.
pub const DEFAULT_TASK_HISTORY_LIMIT: u64 = 5;

/// The label on every service of a stack (`shoal stack deploy`): its value is the stack's name,
/// and the service's name is `STACK_SERVICE`.
pub const STACK_NAMESPACE_LABEL: &str = "io.shoal.stack.namespace";

/// The stack `service` belongs to, if its name and label say so.
pub fn stack_of(service: &ServiceSpec) -> Option<&str> {
    let stack = service.labels.get(STACK_NAMESPACE_LABEL)?;
    service
        .name
        .strip_prefix(stack.as_str())?
        .starts_with('_')
        .then_some(stack.as_str())
}

/// Settings that apply to the whole cluster, changed by `shoal cluster update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// Whether services may bind-mount the host's root or a container engine's socket (or a
    /// directory holding one). Off by default: a service may run on every node, and such a
    /// mount hands it the node.
    pub allow_sensitive_mounts: bool,
    /// Ended tasks the leader keeps per slot (or per node for a global service) as history for
    /// `shoal service ps`; older ones are pruned. The task a slot still wants is never pruned.
    #[serde(default = "default_task_history_limit")]
    pub task_history_limit: u64,
    /// Whether managers keep the cluster's data key on disk only wrapped with an unlock key, so
    /// that a restarted manager stays locked until `shoal cluster unlock` (see
    /// [`crate::autolock`]). Changed by its own commands, never by `UpdateClusterSettings`.
    #[serde(default)]
    pub autolock: bool,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            allow_sensitive_mounts: false,
            task_history_limit: DEFAULT_TASK_HISTORY_LIMIT,
            autolock: false,
        }
    }
}

/// The history limit of a state written before the setting existed.
fn default_task_history_limit() -> u64 {
    DEFAULT_TASK_HISTORY_LIMIT
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by apply, reconcile and placement
// ---------------------------------------------------------------------------------------------

/// The grace between a task's stop signal and its kill when a spec says nothing (Docker's).
pub const DEFAULT_STOP_GRACE_MS: u64 = 10_000;

impl ServiceSpec {
    /// A spec of `image` named `name` with every other setting at its default: one replica,
    /// spread placement, the default policies, [`DEFAULT_STOP_GRACE_MS`], nothing else.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            image: image.into(),
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            mode: ServiceMode::Replicated { replicas: 1 },
            constraints: Vec::new(),
            preferences: Vec::new(),
            strategy: Strategy::Spread,
            max_replicas_per_node: 0,
            resources: ResourceRequirements::default(),
            restart: RestartPolicy::default(),
            update: UpdateConfig::default(),
            rollback: UpdateConfig::default(),
            health: None,
            ports: Vec::new(),
            mounts: Vec::new(),
            labels: BTreeMap::new(),
            stop_grace_ms: DEFAULT_STOP_GRACE_MS,
            force_update: 0,
            secrets: Vec::new(),
            configs: Vec::new(),
            hostname: None,
            user: None,
            working_dir: None,
        }
    }

    /// The host-mode published ports of this spec, as `(protocol, port)` pairs.
    pub fn host_ports(&self) -> impl Iterator<Item = (PortProtocol, u16)> + '_ {
        self.ports
            .iter()
            .filter(|p| p.host_mode && p.published != 0)
            .map(|p| (p.protocol, p.published))
    }

    /// The replica count of a replicated service, `None` for a global one.
    pub fn replicas(&self) -> Option<u64> {
        match self.mode {
            ServiceMode::Replicated { replicas } => Some(replicas),
            ServiceMode::Global => None,
        }
    }
}

impl Service {
    /// The spec a task made from `version` runs: the current spec, the previous one, or (for
    /// versions older than both, whose spec is no longer kept) the current one.
    pub fn spec_for(&self, version: u64) -> &ServiceSpec {
        match (&self.previous_spec, self.previous_version) {
            (Some(prev), Some(v)) if v == version && version != self.version => prev,
            _ => &self.spec,
        }
    }

    /// Whether tasks made from `version` run the current spec.
    pub fn is_current(&self, version: u64) -> bool {
        version == self.version || Some(version) == self.equivalent_version
    }

    /// Whether a rolling update or rollback is in progress.
    pub fn is_updating(&self) -> bool {
        matches!(
            self.update_status.as_ref().map(|u| u.state),
            Some(UpdateState::Updating | UpdateState::RollingBack)
        )
    }
}

impl Node {
    /// Whether new tasks may be placed here as far as the node itself goes (ready, active, with a
    /// runtime). Constraints and capacity are the placement filters' business.
    pub fn accepts_tasks(&self) -> bool {
        self.state == NodeState::Ready
            && self.availability == Availability::Active
            && self.runtime != Runtime::None
    }
}

/// Whether a task in observed state `state`, wanted `desired`, takes new connections (see
/// [`Task::takes_connections`]).
pub fn takes_connections(state: TaskState, desired: DesiredState) -> bool {
    state == TaskState::Running && desired == DesiredState::Running
}

impl Task {
    /// Whether the orchestrator still wants this task (desired Ready or Running).
    pub fn is_live(&self) -> bool {
        self.desired != DesiredState::Shutdown
    }

    /// Whether the task takes new connections of its service (it is one of the service's
    /// endpoints): it runs (healthy, where it has a health check: a task only reports running
    /// once healthy) and is still wanted running. A task told to stop stops taking them before
    /// its container is stopped.
    pub fn takes_connections(&self) -> bool {
        takes_connections(self.status.state, self.desired)
    }

    /// Whether the task holds its node's resources: assigned to a node and not yet ended.
    /// A task told to shut down keeps holding them until its node reports it stopped.
    pub fn holds_resources(&self) -> bool {
        self.node.is_some()
            && self.status.state >= TaskState::Assigned
            && !self.status.state.is_terminal()
    }

    /// Whether the task waits for a node (not yet assigned and not ended).
    pub fn is_unassigned(&self) -> bool {
        self.status.state <= TaskState::Pending
    }

    /// The key of the task's slot: its slot number for a replicated service, its node for a
    /// global one.
    pub fn slot_key(&self) -> SlotKey {
        match (&self.slot, &self.node) {
            (Some(s), _) => SlotKey::Slot(*s),
            (None, Some(n)) => SlotKey::Node(n.clone()),
            (None, None) => SlotKey::Slot(0),
        }
    }
}

/// Where a task sits within its service: a numbered slot (replicated) or a node (global).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SlotKey {
    /// Replicated slot number, 1-based.
    Slot(u64),
    /// Global service: the node.
    Node(NodeId),
}

impl Resources {
    /// `self + other`, saturating.
    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            nano_cpus: self.nano_cpus.saturating_add(other.nano_cpus),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }

    /// Whether `self` (already used) plus `more` stays within `limit`.
    pub fn fits(self, more: Resources, limit: Resources) -> bool {
        self.plus(more).nano_cpus <= limit.nano_cpus
            && self.plus(more).memory_bytes <= limit.memory_bytes
    }
}

/// A task status with only a state and a time (message, exit code and container unset).
pub fn status_at(state: TaskState, at: Timestamp) -> TaskStatus {
    TaskStatus {
        state,
        message: String::new(),
        exit_code: None,
        timestamp: at,
        container_id: None,
    }
}
