//! The raft type configuration: what a log entry carries, what applying it answers, how nodes
//! are named. Owns the mapping from a libp2p PeerId to openraft's `u64` node id.

use std::fmt;

use serde::{Deserialize, Serialize};
use shoal_scheduler::{ApplyError, Command, Outcome, RequestId};

/// openraft's node id: a stable `u64` derived from the PeerId (see [`raft_id_of`]).
pub type RaftId = u64;

/// The payload of one raft log entry: a scheduler [`Command`], with the id of the client
/// request it came from (a retry of the same request is applied once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogCommand {
    /// The command.
    pub command: Command,
    /// The request it answers, for commands a retry could apply twice.
    pub request: Option<RequestId>,
}

impl LogCommand {
    /// `command` as the request `request`.
    pub fn new(command: Command, request: Option<RequestId>) -> LogCommand {
        LogCommand { command, request }
    }
}

impl fmt::Display for LogCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the variant name: commands can be large (plans, status batches).
        f.write_str(self.command.kind())
    }
}

/// What applying one entry answers: the scheduler's outcome, or why it refused the command.
/// A refused command is still a committed entry; its response is the error.
pub type ApplyResult = Result<Outcome, ApplyError>;

/// A write's answer: what applying it answered, and the log index it committed at, so that a
/// client reading through any agent can ask for a state that includes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    /// The log index of the entry; 0 when the write was refused before it reached the log.
    pub index: u64,
    /// What applying it answered (a refused command is `Err`).
    pub result: ApplyResult,
}

/// The openraft `Node` payload stored in the membership: how to reach a raft member.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RaftNode {
    /// The member's libp2p PeerId, in its string form.
    pub peer_id: String,
    /// Multiaddrs it was last seen at (informational; the mesh routes by PeerId).
    pub addrs: Vec<String>,
}

impl fmt::Display for RaftNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.peer_id)
    }
}

openraft::declare_raft_types!(
    /// shoal's raft type configuration.
    pub TypeConfig:
        D = LogCommand,
        R = ApplyResult,
        NodeId = RaftId,
        Node = RaftNode,
);

/// A raft log entry of shoal.
pub type Entry =
    openraft::Entry<LeaderIdCommitted, openraft::EntryPayload<LogCommand, RaftId, RaftNode>>;
/// The committed leader id used in log ids.
pub type LeaderIdCommitted =
    <<TypeConfig as openraft::RaftTypeConfig>::LeaderId as openraft::vote::RaftLeaderId>::Committed;
/// A log id (leader id + index).
pub type LogId = openraft::LogId<LeaderIdCommitted>;
/// The persisted vote.
pub type Vote = <TypeConfig as openraft::RaftTypeConfig>::Vote;
/// A membership config with its log id.
pub type StoredMembership = openraft::StoredMembership<LeaderIdCommitted, RaftId, RaftNode>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<LeaderIdCommitted, RaftId, RaftNode>;
/// The raft handle of shoal.
pub type Raft = openraft::Raft<TypeConfig, crate::storage::StateMachine>;
/// A membership config.
pub type Membership = openraft::Membership<RaftId, RaftNode>;

/// The stable raft node id of a PeerId: FNV-1a (64 bit) over the PeerId's bytes.
///
/// FNV is fixed by its definition (unlike `std`'s hasher), so every agent and every version
/// computes the same id; a PeerId's bytes end in a public key or its digest, so collisions
/// between the few managers of a cluster are negligible.
pub fn raft_id_of(peer_id_bytes: &[u8]) -> RaftId {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    peer_id_bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_id_is_stable_and_distinct() {
        // Known FNV-1a vector: "a" -> 0xaf63dc4c8601ec8c.
        assert_eq!(raft_id_of(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(raft_id_of(b"peer-1"), raft_id_of(b"peer-2"));
    }

    #[test]
    fn command_display_is_the_variant_name() {
        let c = LogCommand::new(Command::PruneTasks { keep_per_slot: 3 }, None);
        assert_eq!(c.to_string(), "PruneTasks");
    }
}
