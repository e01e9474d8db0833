//! The messages of `/shoal/dispatch/1`, between the leader's dispatcher and every worker, and
//! their CBOR encoding. One enum per direction; the transport is the mesh's request-response.
//!
//! Every message stays under the protocol's one limit ([`MAX_DISPATCH_MESSAGE_BYTES`], the
//! mesh's bound of `/shoal/dispatch/1`): an assignment set too large for one message goes in
//! pages, reports in batches of at most [`MAX_REPORTS_PER_MESSAGE`]. A message that cannot be
//! encoded within the limit is an [`CodecError::TooLarge`] error for its sender to log and
//! count, never a silent drop.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoal_consensus::ManagerList;
use shoal_consensus::sealed::TaskFile;
use shoal_discovery::ShoalProtocol;
use shoal_scheduler::{ServiceSpec, Task, TaskId, TaskStatus};

/// Largest dispatch message, in bytes: the mesh's bound of the protocol, in both directions.
pub const MAX_DISPATCH_MESSAGE_BYTES: usize = ShoalProtocol::Dispatch.max_request_bytes();
/// What one page of assignments may fill: the limit less room for the message around it.
pub const PAGE_BUDGET_BYTES: usize = MAX_DISPATCH_MESSAGE_BYTES - 64 * 1024;
/// Status reports in one message at most (each is well under a kilobyte: the message of a
/// status is cut to 1 KiB, the container id to 1 KiB).
pub const MAX_REPORTS_PER_MESSAGE: usize = 1_000;

const _: () = assert!(
    ShoalProtocol::Dispatch.max_request_bytes() == ShoalProtocol::Dispatch.max_response_bytes(),
    "one limit for both directions of dispatch"
);

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

/// The full set of a worker's assignments as the leader sees it, or one page of it: a set too
/// large for one message goes as `pages` messages, `page` 0 first, and the worker takes it
/// once the last page arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentSet {
    /// The leadership that sent it (a leader's own epoch: its start time in milliseconds).
    pub term: u64,
    /// Bumped by that leader whenever the set changes.
    pub version: u64,
    /// The raft term the sender leads in: how a worker that is not a raft member learns who
    /// leads.
    pub leader_term: u64,
    /// Which page this is (0-based).
    pub page: u32,
    /// How many pages the set has (1: the whole set).
    pub pages: u32,
    /// Every task of the worker that is not finished on both sides (on this page).
    pub tasks: Vec<Assignment>,
}

/// The changes from one assignment set of a leader to its next one, which the worker applies
/// only if it holds exactly the `base` version of that leader's set. Changes too large for one
/// message go as `pages` messages, `page` 0 first (with every removal), and apply once the last
/// page arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentDelta {
    /// The leadership that sent it (as in [`AssignmentSet::term`]).
    pub term: u64,
    /// The raft term the sender leads in.
    pub leader_term: u64,
    /// The version the changes apply to.
    pub base: u64,
    /// The version the worker holds once they are applied.
    pub version: u64,
    /// Which page this is (0-based).
    pub page: u32,
    /// How many pages the changes have (1: all of them).
    pub pages: u32,
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
        /// The epoch of the manager set the worker holds (the leader answers with a newer one).
        managers_epoch: u64,
    },
    /// Worker to leader: my tasks changed state.
    Report {
        /// New statuses, oldest first.
        reports: Vec<(TaskId, TaskStatus)>,
    },
    /// Worker to leader: the files (secrets opened, configs) of one of my tasks, from the
    /// `skip`th on (a task whose files do not fit one answer asks again for the rest).
    TaskFiles {
        /// The task, which must be the asking node's.
        task: TaskId,
        /// How many of its files the worker already holds.
        skip: u32,
    },
}

/// The answer to a [`DispatchRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DispatchResponse {
    /// Taken.
    Ack,
    /// The leader took a heartbeat: the term it leads in, and the manager set when the
    /// worker's is older.
    Beat {
        /// The raft term the leader leads in.
        term: u64,
        /// The raft members, if the worker's set is out of date.
        managers: Option<ManagerList>,
    },
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
    /// Some of a task's files, from the `skip`th asked for.
    Files(FilesPage),
    /// The task's files are not given to this worker, and asking again will not change that
    /// (not its task, a secret that does not exist or does not open).
    FilesRefused {
        /// Why (never a value).
        reason: String,
    },
}

/// Some of a task's files: as many as fit one message, in the spec's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesPage {
    /// How many files the task has in all.
    pub total: u32,
    /// The files from the one asked for on.
    pub files: Vec<TaskFile>,
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

/// Encodes a message as CBOR, refusing one above [`MAX_DISPATCH_MESSAGE_BYTES`].
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, CodecError> {
    let bytes = cbor4ii::serde::to_vec(Vec::new(), message)
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if bytes.len() > MAX_DISPATCH_MESSAGE_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

/// The encoded size of one value (0 if it cannot be encoded).
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    cbor4ii::serde::to_vec(Vec::new(), value).map_or(0, |bytes| bytes.len())
}

/// Splits `tasks` into pages whose encoded assignments fit [`PAGE_BUDGET_BYTES`] each (an
/// assignment larger than a page on its own gets a page of its own, and its message fails to
/// encode). Always at least one page, empty for an empty set.
pub fn pages(tasks: &[Assignment]) -> Vec<&[Assignment]> {
    let mut pages = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, assignment) in tasks.iter().enumerate() {
        let bytes = encoded_len(assignment);
        if used + bytes > PAGE_BUDGET_BYTES && i > start {
            pages.push(&tasks[start..i]);
            start = i;
            used = 0;
        }
        used += bytes;
    }
    pages.push(&tasks[start..]);
    pages
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
            managers_epoch: 4,
        };
        let decoded: DispatchRequest =
            decode(&encode(&message).expect("encodes")).expect("decodes");
        assert_eq!(decoded, message);
    }

    fn assignment(id: u64, spec: &Arc<ServiceSpec>) -> Assignment {
        Assignment {
            task: Task {
                id: TaskId(id),
                service: shoal_scheduler::ServiceId(1),
                slot: Some(id),
                node: Some(shoal_scheduler::NodeId::new("n")),
                spec_version: 1,
                desired: shoal_scheduler::DesiredState::Running,
                status: shoal_scheduler::status_at(
                    shoal_scheduler::TaskState::Assigned,
                    shoal_scheduler::Timestamp(1),
                ),
                created_at: shoal_scheduler::Timestamp(0),
                not_before: shoal_scheduler::Timestamp(0),
            },
            service_name: "web".into(),
            spec: Some(spec.clone()),
        }
    }

    #[test]
    fn a_large_set_goes_in_pages_that_each_fit_one_message() {
        let mut spec = shoal_scheduler::synthetic::spec("web", 1);
        spec.env = (0..40)
            .map(|i| format!("VARIABLE_{i}={}", "x".repeat(64)))
            .collect();
        let spec = Arc::new(spec);
        let tasks: Vec<Assignment> = (0..4_000).map(|i| assignment(i, &spec)).collect();
        let total: usize = tasks.iter().map(encoded_len).sum();
        assert!(total > 2 * MAX_DISPATCH_MESSAGE_BYTES, "{total} bytes");
        let pages = pages(&tasks);
        assert!(pages.len() >= 3, "{} pages", pages.len());
        assert_eq!(pages.iter().map(|p| p.len()).sum::<usize>(), tasks.len());
        let count = pages.len() as u32;
        for (page, slice) in pages.into_iter().enumerate() {
            let message = DispatchRequest::Assign(AssignmentSet {
                term: 1,
                version: 1,
                leader_term: 1,
                page: page as u32,
                pages: count,
                tasks: slice.to_vec(),
            });
            encode(&message).expect("every page fits the limit");
        }
        let whole = DispatchRequest::Assign(AssignmentSet {
            term: 1,
            version: 1,
            leader_term: 1,
            page: 0,
            pages: 1,
            tasks,
        });
        assert!(matches!(encode(&whole), Err(CodecError::TooLarge(_))));
        assert_eq!(super::pages(&[]).len(), 1);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let error = decode::<DispatchRequest>(&[0xff, 0x00, 0x13]).expect_err("garbage");
        assert!(matches!(error, CodecError::Malformed(_)));
    }
}
