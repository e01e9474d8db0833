//! The raft messages, in CBOR: one request enum and one response enum for `/shoal/raft/1`, and the
//! two frame types of an append stream (`/shoal/raft-append/1`).

use openraft::raft::{
    AppendEntriesRequest, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use shoal_scheduler::{Credential, Node};

use crate::token::Proof;
use crate::types::{Committed, LogCommand, RaftNode, SnapshotMeta, TypeConfig, Vote};

/// Every request carries the sender's cluster id (None before it has one): agents of
/// different clusters never talk raft. In a closed cluster a raft RPC also carries the proof
/// that its sender holds a manager token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's cluster id.
    pub cluster_id: Option<String>,
    /// The sender's manager proof for the receiver (closed clusters).
    pub proof: Option<Proof>,
    /// The request.
    pub body: RaftRequest,
}

impl RaftRequest {
    /// A short name, for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RaftRequest::Vote(_) => "vote",
            RaftRequest::PreVote(_) => "pre_vote",
            RaftRequest::SnapshotChunk(_) => "snapshot",
            RaftRequest::Write(_) => "write",
            RaftRequest::ReadIndex => "read_index",
            RaftRequest::Join(_) => "join",
            RaftRequest::TransferLeader(_) => "transfer_leader",
        }
    }
}

/// A request on `/shoal/raft/1`.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    /// Raft RequestVote.
    Vote(VoteRequest<TypeConfig>),
    /// Raft Pre-Vote.
    PreVote(VoteRequest<TypeConfig>),
    /// One piece of a snapshot.
    SnapshotChunk(SnapshotChunk),
    /// A write forwarded by a follower to the leader.
    Write(Box<LogCommand>),
    /// A follower asks the leader for a linearizable read index.
    ReadIndex,
    /// A new agent asks to join the cluster.
    Join(JoinRequest),
    /// The leader hands leadership to a named voter (sent to every member).
    TransferLeader(TransferLeaderRequest<TypeConfig>),
}

/// One piece of a snapshot stream. The receiver reassembles pieces of one `stream` in order and
/// installs the snapshot when `done`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// Identifies one transfer; a new id abandons an earlier unfinished transfer.
    pub stream: u64,
    /// The leader's vote.
    pub vote: Vote,
    /// The snapshot's metadata.
    pub meta: SnapshotMeta,
    /// Byte offset of `data` in the snapshot.
    pub offset: u64,
    /// Total snapshot size.
    pub total: u64,
    /// The bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Last piece.
    pub done: bool,
}

/// A join request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The joiner as it describes itself.
    pub node: Node,
    /// How to reach it as a raft member.
    pub raft_node: RaftNode,
    /// The token it was given (None in open mode).
    pub token: Option<String>,
}

/// The answer to an accepted join. The joiner is a worker of the cluster; the autopilot may
/// later make it a raft learner, then a manager, if its credential allows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinAccepted {
    /// The cluster's id.
    pub cluster_id: String,
    /// What the joiner's token allows it.
    pub credential: Credential,
    /// The raft members (voters and learners), as PeerIds in text form.
    pub managers: BTreeSet<String>,
    /// Log index of the membership `managers` describes.
    pub epoch: u64,
    /// The leader that accepted the join.
    pub leader: String,
    /// Its term.
    pub term: u64,
}

/// A response on `/shoal/raft/1`.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftResponse {
    /// To Vote and PreVote.
    Vote(VoteResponse<TypeConfig>),
    /// A non-final snapshot piece was stored.
    ChunkAccepted,
    /// The final snapshot piece was installed.
    Snapshot(SnapshotResponse<TypeConfig>),
    /// To a forwarded write.
    Write(Result<Committed, ForwardFailure>),
    /// To ReadIndex: the log index to wait for.
    ReadIndex(Result<u64, ForwardFailure>),
    /// To Join.
    Join(Result<JoinAccepted, String>),
    /// To TransferLeader.
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    /// The request was refused (not a member, other cluster, raft failure).
    Refused(String),
}

/// Why the leader-side of a forwarded request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardFailure {
    /// The receiver is not the leader; it names the leader if it knows one.
    NotLeader(Option<RaftNode>),
    /// No quorum behind the leader.
    NoQuorum {
        /// Reachable voters.
        reachable: usize,
        /// All voters.
        voters: usize,
    },
    /// Leadership changed while the entry was in flight.
    Uncertain,
    /// The sender is not a raft member as the leader's membership knows it (it was removed
    /// while it could not hear so): it holds no replica to read from, and should ask a
    /// manager instead.
    NotAMember,
    /// Anything else.
    Failed(String),
}

/// One frame from a leader on an append stream (`/shoal/raft-append/1`).
#[derive(Debug, Serialize, Deserialize)]
pub struct AppendFrame {
    /// The cluster the leader belongs to (checked like an [`Envelope`]'s).
    pub cluster_id: Option<String>,
    /// The leader's manager proof for the receiver (closed clusters).
    pub proof: Option<Proof>,
    /// The next AppendEntries, in the order the leader's replication produced it.
    pub request: AppendEntriesRequest<TypeConfig>,
}

/// One frame from a follower on an append stream: the answer to the request at the same
/// position, or why the follower ends the stream.
#[derive(Debug, Serialize, Deserialize)]
pub enum AppendReply {
    /// What openraft made of the request: the log id matched, or a conflict or higher vote
    /// (after which the follower ends the stream).
    Result(StreamAppendResult<TypeConfig>),
    /// The follower refused the stream (not a member, another cluster, raft stopped) and closes
    /// it after this frame.
    Refused(String),
}
