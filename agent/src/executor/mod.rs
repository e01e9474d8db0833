//! Executors: what turns a task into something running on this node.
//!
//! The worker talks to one [`Executor`] (held as `Arc<dyn Executor>`) and never to Docker
//! directly. An executor starts, stops and removes the containers of tasks, observes them all at
//! once ([`Executor::observe`], used at start-up to adopt what is already there) and streams
//! changes as they happen ([`Executor::events`]).
//!
//! # Layout
//! - this file: the trait and the plain types that cross it ([`RunSpec`], [`Observation`],
//!   [`Health`], [`RuntimeInfo`]), the container labels and names.
//! - [`error`] holds [`ExecutorError`].
//! - [`docker`]: [`DockerExecutor`], the real one (bollard, local engine).
//! - [`sim`]: [`SimExecutor`], tasks that only live in memory (scale tests and benchmarks).

pub mod docker;
pub mod error;
pub mod sim;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use shoal_consensus::sealed::TaskFile;
use shoal_scheduler::{NodeId, Resources, Runtime, ServiceId, ServiceSpec, TaskId, TaskState};
use tokio::sync::mpsc;

pub use docker::{
    AttachedNetwork, DEFAULT_FILES_BASE, DockerConfig, DockerExecutor, NetworkConfig, PullPolicy,
    TaskFilesRoot,
};
pub use error::{ExecutorError, Result};
pub use sim::{SimConfig, SimExecutor};

/// Label carrying the task id (`t0000000002a`) on every container shoal creates.
pub const LABEL_TASK_ID: &str = "io.shoal.task.id";
/// Label carrying the service id (`s00000000003`).
pub const LABEL_SERVICE_ID: &str = "io.shoal.service.id";
/// Label carrying the service name.
pub const LABEL_SERVICE_NAME: &str = "io.shoal.service.name";
/// Label carrying the id of the node that runs the container.
pub const LABEL_NODE_ID: &str = "io.shoal.node.id";
/// Label carrying the slot (replicated services; absent for global ones).
pub const LABEL_SLOT: &str = "io.shoal.slot";
/// Label carrying the service version whose spec the container runs.
pub const LABEL_SPEC_VERSION: &str = "io.shoal.spec.version";
/// Label saying whether the container has a health check (`true`, `false`): a container without
/// one runs as soon as it starts, which its `start` event alone tells.
pub const LABEL_HEALTHCHECK: &str = "io.shoal.healthcheck";
/// Prefix reserved for shoal's own labels: service labels under it are ignored.
pub const LABEL_PREFIX: &str = "io.shoal.";

/// Capacity of the channel returned by [`Executor::events`].
pub const EVENTS_CHANNEL_CAPACITY: usize = 1024;
/// Longest message an [`Observation`] carries, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 512;

/// Everything an executor needs to run one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The task.
    pub task_id: TaskId,
    /// Its service.
    pub service_id: ServiceId,
    /// The service's name (used in the container name and a label).
    pub service_name: String,
    /// The slot of a replicated service; `None` for a global one.
    pub slot: Option<u64>,
    /// The node that runs it (must be the executor's node).
    pub node_id: NodeId,
    /// The service version whose spec this is.
    pub spec_version: u64,
    /// The spec to run.
    pub spec: Arc<ServiceSpec>,
    /// The files its spec mounts (secrets opened, configs), fetched from the leader just
    /// before the start; empty for a spec that mounts none.
    pub files: Arc<[TaskFile]>,
}

impl RunSpec {
    /// Whether the spec mounts secrets or configs, which the task needs as [`RunSpec::files`].
    pub fn needs_files(&self) -> bool {
        !self.spec.secrets.is_empty() || !self.spec.configs.is_empty()
    }
}

/// Health of a task whose container has a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Health {
    /// No health check.
    #[default]
    None,
    /// Checked, not yet healthy.
    Starting,
    /// The last checks passed.
    Healthy,
    /// Too many checks failed in a row.
    Unhealthy,
}

/// What the executor sees of one task at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The task.
    pub task_id: TaskId,
    /// Its service.
    pub service_id: ServiceId,
    /// Its slot, if replicated.
    pub slot: Option<u64>,
    /// The service version it runs.
    pub spec_version: u64,
    /// The observed state (`Preparing` for a created container, `Starting`, `Running`,
    /// `Complete`, `Shutdown` when stopped on purpose, `Failed`).
    pub state: TaskState,
    /// Exit code, once exited.
    pub exit_code: Option<i64>,
    /// Health-check status.
    pub health: Health,
    /// The container's id (`None` once the container is gone, or for the sim executor).
    pub container_id: Option<String>,
    /// True when the container no longer exists (removed by shoal or by someone else).
    pub removed: bool,
    /// Human-readable detail (`exit code 3`, `unhealthy: ...`), at most [`MAX_MESSAGE_BYTES`].
    pub message: String,
}

/// What a runtime offers, for the node record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// Which runtime this is.
    pub runtime: Runtime,
    /// Number of CPUs.
    pub cpus: u64,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Operating system, as Docker names it (`linux`).
    pub os: String,
    /// Architecture, as Docker names it (`x86_64`).
    pub arch: String,
    /// Engine version (`20.10.24`), or the sim executor's name.
    pub engine_version: String,
}

impl RuntimeInfo {
    /// The machine's total CPU and memory in the scheduler's units.
    pub fn total(&self) -> Resources {
        Resources {
            nano_cpus: self.cpus.saturating_mul(1_000_000_000),
            memory_bytes: self.memory_bytes,
        }
    }
}

/// A container runtime on this node. Object-safe: held as `Arc<dyn Executor>`.
///
/// Every method may be called concurrently (the worker starts many tasks at once).
pub trait Executor: Send + Sync + 'static {
    /// Which runtime this is.
    fn runtime(&self) -> Runtime;

    /// The service network this executor attaches tasks to, if it has one.
    fn service_network(&self) -> Option<AttachedNetwork> {
        None
    }

    /// The addresses of this node's running tasks on the service network (none without one).
    fn task_addresses(&self) -> BoxFuture<'_, Result<BTreeMap<TaskId, Ipv4Addr>>> {
        Box::pin(async { Ok(BTreeMap::new()) })
    }

    /// CPUs, memory, platform and version of the runtime.
    fn describe(&self) -> BoxFuture<'_, Result<RuntimeInfo>>;

    /// Creates and starts the task's container. Idempotent: when a container for the task exists
    /// already it is adopted (and started if it was only created).
    fn start<'a>(&'a self, spec: &'a RunSpec) -> BoxFuture<'a, Result<()>>;

    /// Stops the task: the stop signal, then a kill once `grace` has passed; `None` is the grace
    /// the task was started with (a container's own stop timeout), for a task whose spec this
    /// node no longer holds. A task with no container, or one already stopped, is fine.
    fn stop(&self, task: TaskId, grace: Option<Duration>) -> BoxFuture<'_, Result<()>>;

    /// Removes the task's container (forcibly, with its anonymous volumes). Idempotent.
    fn remove(&self, task: TaskId) -> BoxFuture<'_, Result<()>>;

    /// Every task of this node that the runtime knows, in whatever state.
    fn observe(&self) -> BoxFuture<'_, Result<Vec<Observation>>>;

    /// A stream of observations as tasks change (start, exit, health, removal). Each call makes
    /// a new subscription; it ends when the receiver is dropped. Must be called inside a tokio
    /// runtime.
    fn events(&self) -> mpsc::Receiver<Observation>;

    /// The task's output as `query` asks: its last lines, each with its stream and time, oldest
    /// first ([`NotFound`](ExecutorError::NotFound) once the container is gone).
    fn logs<'a>(&'a self, task: TaskId, query: &'a LogQuery)
    -> BoxFuture<'a, Result<Vec<LogLine>>>;
}

/// Which output of a task [`Executor::logs`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogQuery {
    /// At most this many lines, the newest (at most the executor's own bound).
    pub tail: usize,
    /// Only lines written at or after this time (seconds since the Unix epoch; 0: all).
    pub since_secs: u64,
}

/// Which stream a line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a task's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The stream it went to.
    pub stream: LogStream,
    /// When the runtime received it (RFC 3339 with nanoseconds, UTC), or empty if unknown.
    pub time: String,
    /// The line, without its newline (cut at the executor's longest line).
    pub text: String,
}

/// The container name of a task: `shoal-<service>.<slot>.<task>` (`global` instead of a slot
/// for global services). Characters Docker refuses in names become `-`.
pub fn container_name(service_name: &str, slot: Option<u64>, task: TaskId) -> String {
    let service: String = service_name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    match slot {
        Some(slot) => format!("shoal-{service}.{slot}.{task}"),
        None => format!("shoal-{service}.global.{task}"),
    }
}

/// Parses a task id as [`TaskId`]'s `Display` writes it (`t` and hexadecimal).
pub fn parse_task_id(text: &str) -> Option<TaskId> {
    parse_prefixed_hex(text, 't').map(TaskId)
}

/// Parses a service id as [`ServiceId`]'s `Display` writes it (`s` and hexadecimal).
pub fn parse_service_id(text: &str) -> Option<ServiceId> {
    parse_prefixed_hex(text, 's').map(ServiceId)
}

fn parse_prefixed_hex(text: &str, prefix: char) -> Option<u64> {
    let digits = text.strip_prefix(prefix)?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Cuts `message` to at most [`MAX_MESSAGE_BYTES`] bytes on a character boundary.
pub(crate) fn bounded_message(message: impl Into<String>) -> String {
    let mut message = message.into();
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}
