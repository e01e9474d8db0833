//! Raft over the mesh: AppendEntries on long-lived ordered streams (`/shoal/raft-append/1`),
//! everything else as requests (`/shoal/raft/1`).
//!
//! - [`messages`]: the request and response enums and the append stream's frames (CBOR).
//! - [`client`]: openraft's `RaftNetworkV2`: appends over [`append_lane`], the rest over
//!   `Mesh::request`.
//! - [`stream`]: pipelined AppendEntries, where commit updates ride on the next entries.
//! - [`append_lane`]: the leader's end of an append stream.
//! - [`append_server`]: the follower's end: openraft's pipelined `stream_append`, in order.
//! - [`frames`]: length-prefixed, bounded CBOR frames.
//! - [`server`]: inbound requests, each handled in its own task.
//! - [`chunks`]: snapshot reassembly.
//! - [`access`]: who may send raft RPCs.

pub(crate) mod access;
pub(crate) mod append_lane;
pub(crate) mod append_server;
pub(crate) mod chunks;
pub(crate) mod client;
pub(crate) mod frames;
pub(crate) mod messages;
pub(crate) mod server;
pub(crate) mod stream;
