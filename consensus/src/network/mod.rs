//! Raft over the mesh (`/shoal/raft/1`).
//!
//! - [`messages`]: the request and response enums (CBOR).
//! - [`client`]: openraft's `RaftNetworkV2` over `Mesh::request`.
//! - [`stream`]: streaming AppendEntries, where commit updates never hold back entries.
//! - [`server`]: inbound requests, each handled in its own task.
//! - [`chunks`]: snapshot reassembly.
//! - [`access`]: who may send raft RPCs.

pub(crate) mod access;
pub(crate) mod chunks;
pub(crate) mod client;
pub(crate) mod messages;
pub(crate) mod server;
pub(crate) mod stream;
