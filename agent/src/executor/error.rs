//! The executor's error type.

use shoal_scheduler::{TaskId, TaskState};

/// A `Result` whose error is an [`ExecutorError`].
pub type Result<T> = std::result::Result<T, ExecutorError>;

/// Why an executor operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// No container engine answers; the agent then runs with `runtime: none`.
    #[error("no Docker engine answers at {endpoint}: {reason}")]
    EngineUnavailable {
        /// Where the engine was looked for.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// The image is not on this node and could not be pulled: the task is rejected.
    #[error("image \"{image}\" not found locally and could not be pulled: {reason}")]
    ImageNotFound {
        /// The image reference as the service names it.
        image: String,
        /// Why it could not be pulled (`pull policy is never`, the registry's error, ...).
        reason: String,
    },
    /// The spec cannot be run here (bad mount, wrong node, ...): the task is rejected.
    #[error("invalid task spec: {0}")]
    InvalidSpec(String),
    /// The task's container already ran and exited; it is never started again.
    #[error("task {task} already ended ({state:?})")]
    AlreadyEnded {
        /// The task.
        task: TaskId,
        /// What it ended as.
        state: TaskState,
    },
    /// The task has no container here.
    #[error("task {0} has no container on this node")]
    NotFound(TaskId),
    /// The engine refused or failed a call.
    #[error("docker {op} failed: {source}")]
    Docker {
        /// The operation (`create`, `start`, ...).
        op: &'static str,
        /// The engine's error.
        #[source]
        source: bollard::errors::Error,
    },
    /// The task's secrets and configs could not be had from a leader in time: the start fails
    /// (the task is placed again), it is not rejected.
    #[error("the task's files are unavailable: {0}")]
    FilesUnavailable(String),
    /// A call did not finish in time.
    #[error("{op} timed out after {seconds} s")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The time allowed.
        seconds: u64,
    },
}

impl ExecutorError {
    /// Whether the task can never run on this node as specified, so the worker reports it
    /// `Rejected` rather than `Failed`.
    pub fn rejects_task(&self) -> bool {
        matches!(
            self,
            ExecutorError::ImageNotFound { .. } | ExecutorError::InvalidSpec(_)
        )
    }

    /// Wraps a bollard error from operation `op`.
    pub(crate) fn docker(op: &'static str) -> impl FnOnce(bollard::errors::Error) -> Self {
        move |source| ExecutorError::Docker { op, source }
    }
}
