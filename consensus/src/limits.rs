//! Size bounds of everything this crate sends or stores, and how they relate.
//!
//! The mesh bounds a `/shoal/raft/1` message, and an append stream's frame has the same bound
//! ([`MAX_RPC_BYTES`]); every raft message built here stays below that:
//! an AppendEntries carries at most [`MAX_APPEND_BYTES`] of entries plus one entry (itself at most
//! [`MAX_COMMAND_BYTES`]), snapshots travel in [`SNAPSHOT_CHUNK_BYTES`] pieces.

/// Largest encoded command a client may write.
pub const MAX_COMMAND_BYTES: usize = 2 * 1024 * 1024;
/// Budget of encoded entries in one AppendEntries (one more entry may exceed it).
pub const MAX_APPEND_BYTES: usize = 4 * 1024 * 1024;
/// Size of one snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// Largest raft RPC this crate sends or accepts (request or response).
pub const MAX_RPC_BYTES: usize = MAX_APPEND_BYTES + MAX_COMMAND_BYTES + 256 * 1024;
/// Largest snapshot a receiver reassembles.
pub const MAX_SNAPSHOT_BYTES: usize = 1024 * 1024 * 1024;
/// Entries per AppendEntries at most (openraft `max_payload_entries`).
pub const MAX_PAYLOAD_ENTRIES: u64 = 512;

const _: () = assert!(
    MAX_RPC_BYTES <= 16 * 1024 * 1024,
    "raft RPCs must fit the mesh's raft limit"
);
