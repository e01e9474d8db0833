//! The crate's errors: [`ConsensusError`] for starting and managing the quorum, [`WriteError`]
//! for one write or read.

use crate::codec::CodecError;
use crate::storage::StorageOpenError;

/// Errors of starting, joining, recovering or shutting down the quorum.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// Storage could not be opened or read.
    #[error("raft storage: {0}")]
    Storage(#[from] StorageOpenError),
    /// Storage I/O failed.
    #[error("raft storage I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The mesh refused a command (closed, protocol already served, ...).
    #[error("mesh: {0}")]
    Mesh(String),
    /// openraft refused to start or failed.
    #[error("raft: {0}")]
    Raft(String),
    /// The configuration is inconsistent.
    #[error("invalid consensus configuration: {0}")]
    Config(String),
    /// Joining a cluster was refused.
    #[error("join refused: {0}")]
    JoinRefused(String),
    /// No manager answered a join in time.
    #[error("join failed: {0}")]
    JoinFailed(String),
    /// A token could not be parsed.
    #[error("invalid token: {0}")]
    Token(String),
    /// Encoding failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// `recover` found nothing to recover.
    #[error("nothing to recover in {0}")]
    NothingToRecover(String),
}

/// Why a write (or a linearizable read) did not produce an answer.
///
/// A command the state machine refused is not an error here: it is the inner `Err` of the
/// write's `Result<Outcome, ApplyError>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Too few managers are reachable to commit anything.
    #[error("no quorum: {reachable} of {voters} managers reachable")]
    NoQuorum {
        /// Voters (including this one) that the mesh sees alive.
        reachable: usize,
        /// Voters in the membership.
        voters: usize,
    },
    /// No leader could be reached before the deadline.
    #[error("no leader: {0}")]
    NoLeader(String),
    /// The write did not complete before the deadline; it may or may not have been committed.
    #[error("timed out after {0:?}; the write may or may not have been committed")]
    Timeout(std::time::Duration),
    /// A linearizable read did not complete before the deadline.
    #[error(
        "no linearizable read within {0:?} (the cluster is busy or has no leader); retry, or read this agent's replica with ?stale=true"
    )]
    ReadTimeout(std::time::Duration),
    /// The leader changed while the entry was in flight; it may or may not have been committed.
    #[error("leader changed while writing; the write may or may not have been committed")]
    Uncertain,
    /// The encoded command exceeds the bound.
    #[error("command of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Forwarding to the leader failed.
    #[error("forwarding to the leader failed: {0}")]
    Forward(String),
    /// This agent holds no replica of the cluster state (a worker): ask a manager.
    #[error("this agent is a worker and holds no copy of the cluster state; ask a manager")]
    NotAMember,
    /// This node is not part of an initialised cluster yet.
    #[error("not initialised: this agent has not joined a cluster yet")]
    NotInitialised,
    /// The quorum is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// openraft failed (storage or a fatal error).
    #[error("raft: {0}")]
    Raft(String),
}
