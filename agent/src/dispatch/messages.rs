//! The messages of `/shoal/dispatch/1`, between the leader's dispatcher and every worker, and
//! their CBOR encoding. One enum per direction; the transport is the mesh's request-response.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoal_scheduler::{ServiceSpec, Task, TaskId, TaskStatus};

/// Largest dispatch message we accept, in bytes (an assignment set of a few thousand tasks).
pub const MAX_DISPATCH_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// One task a worker should converge, with the spec it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The task, with its desired state.
    pub task: Task,
    /// The service's name.
    pub service_name: String,
    /// The spec of the task's version; `None` for a task of a removed service, which only has to
    /// be stopped.
    pub spec: Option<Arc<ServiceSpec>>,
}

/// The full set of a worker's assignments as the leader sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentSet {
    /// The raft term of the leader that sent it.
    pub term: u64,
    /// Bumped by that leader whenever the set changes.
    pub version: u64,
    /// Every task of the worker that is not finished on both sides.
    pub tasks: Vec<Assignment>,
}

/// The changes from one assignment set of a leader to its next one, which the worker applies
/// only if it holds exactly the `base` version of that leader's set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentDelta {
    /// The raft term of the leader that sent it.
    pub term: u64,
    /// The version the changes apply to.
    pub base: u64,
    /// The version the worker holds once they are applied.
    pub version: u64,
    /// New assignments, and assignments whose instructions changed.
    pub upserts: Vec<Assignment>,
    /// Tasks the worker no longer has to know about.
    pub removed: Vec<TaskId>,
}

/// A message on `/shoal/dispatch/1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DispatchRequest {
    /// Leader to worker: here is everything you should run.
    Assign(AssignmentSet),
    /// Leader to worker: what changed since the set you hold.
    Update(AssignmentDelta),
    /// Worker to leader: I am alive, and this is the assignment version I hold.
    Heartbeat {
        /// `(term, version)` of the last set applied, if any.
        holds: Option<(u64, u64)>,
    },
    /// Worker to leader: my tasks changed state.
    Report {
        /// New statuses, oldest first.
        reports: Vec<(TaskId, TaskStatus)>,
    },
}

/// The answer to a [`DispatchRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DispatchResponse {
    /// Taken.
    Ack,
    /// The receiver is not the leader (a worker should look for the new one).
    NotLeader,
    /// The sender is not the current leader, so its assignments are refused.
    NotFromLeader,
    /// The worker does not hold the set a delta applies to: send the full set.
    Resync,
    /// The reports could not be recorded (no quorum); the worker keeps them and retries.
    Retry {
        /// Why.
        reason: String,
    },
}

/// Why a dispatch message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Larger than [`MAX_DISPATCH_MESSAGE_BYTES`].
    #[error("dispatch message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Not a valid message.
    #[error("malformed dispatch message: {0}")]
    Malformed(String),
}

/// Encodes a message as CBOR.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Encoding into a Vec cannot fail for these plain types.
    cbor4ii::serde::to_vec(Vec::new(), message).unwrap_or_default()
}

/// Decodes a CBOR message, refusing oversized input.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_DISPATCH_MESSAGE_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    cbor4ii::serde::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_round_trip() {
        let message = DispatchRequest::Heartbeat {
            holds: Some((3, 17)),
        };
        let decoded: DispatchRequest = decode(&encode(&message)).expect("decodes");
        assert_eq!(decoded, message);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let error = decode::<DispatchRequest>(&[0xff, 0x00, 0x13]).expect_err("garbage");
        assert!(matches!(error, CodecError::Malformed(_)));
    }
}
