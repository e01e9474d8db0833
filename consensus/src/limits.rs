//! Size bounds of everything this crate sends or stores, and how they relate.
//!
//! `/shoal/raft/1` requests and responses (votes, snapshot pieces, forwarded writes, joins) are
//! bounded by the mesh's limit of the protocol ([`MAX_RPC_BYTES`], set in one place:
//! `ShoalProtocol::Raft`). An append stream's frame has a bound of its own ([`MAX_FRAME_BYTES`]):
//! an AppendEntries carries at most [`MAX_APPEND_BYTES`] of entries plus one entry (itself at
//! most [`MAX_COMMAND_BYTES`]). Snapshots travel in [`SNAPSHOT_CHUNK_BYTES`] pieces.

use shoal_discovery::ShoalProtocol;

/// Largest encoded command a client may write.
pub const MAX_COMMAND_BYTES: usize = 2 * 1024 * 1024;
/// Budget of encoded entries in one AppendEntries (one more entry may exceed it).
pub const MAX_APPEND_BYTES: usize = 4 * 1024 * 1024;
/// Size of one snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// Room for what goes around a command or a chunk (envelope, metadata, membership).
const ENVELOPE_BYTES: usize = 256 * 1024;
/// Largest `/shoal/raft/1` request or response this crate sends or accepts.
pub const MAX_RPC_BYTES: usize = ShoalProtocol::Raft.max_request_bytes();
/// Largest frame on an append stream, in either direction.
pub const MAX_FRAME_BYTES: usize = MAX_APPEND_BYTES + MAX_COMMAND_BYTES + ENVELOPE_BYTES;
/// Largest snapshot a receiver reassembles.
pub const MAX_SNAPSHOT_BYTES: usize = 1024 * 1024 * 1024;
/// Entries per AppendEntries at most (openraft `max_payload_entries`).
pub const MAX_PAYLOAD_ENTRIES: u64 = 512;

const _: () = assert!(
    MAX_RPC_BYTES == ShoalProtocol::Raft.max_response_bytes(),
    "one limit for both directions of /shoal/raft/1"
);
const _: () = assert!(
    MAX_RPC_BYTES >= MAX_COMMAND_BYTES + ENVELOPE_BYTES
        && MAX_RPC_BYTES >= SNAPSHOT_CHUNK_BYTES + ENVELOPE_BYTES,
    "a forwarded write and a snapshot piece must fit a raft request"
);
