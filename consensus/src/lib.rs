//! shoal's manager quorum: openraft over the mesh, a durable redb log and state machine,
//! zero-config bootstrap, join, and autopilot.
//!
//! # Layout
//! - [`types`]: the raft type configuration, [`RaftNode`], the PeerId -> raft id mapping.
//! - [`config`]: [`QuorumConfig`] and the translation to openraft's config.
//! - [`storage`]: the redb log store, the state machine and snapshots.
//! - `network`: raft over the mesh: pipelined AppendEntries on ordered append streams
//!   (`/shoal/raft-append/1`), the other RPCs as `/shoal/raft/1` requests, snapshot chunk
//!   reassembly and access control.
//! - [`quorum`]: [`Quorum`], the handle the agent uses (write, read, watch, leader, shutdown).
//! - `bootstrap`, `join`, `autopilot`: forming, growing and healing the manager set.
//! - `lone`: a zero-config agent that formed a cluster alone yields to a larger one it hears.
//! - [`recover`]: `shoal cluster recover`.
//! - `managers`: the managers and leader as told to this agent (what workers go by).
//! - [`token`]: manager and worker tokens, and the raft key of closed clusters.
//! - [`limits`]: message size bounds.
//! - [`sealed`]: secret values sealed with the cluster's data key, and the key's store.
//! - [`autolock`]: the unlock key, and the data key file wrapped with it.
//! - [`events`]: the ring of recent cluster events that `shoal events` reads.
//! - [`error`]: [`ConsensusError`] and [`WriteError`].

pub mod autolock;
pub mod codec;
pub mod config;
pub mod error;
pub mod events;
pub mod limits;
pub mod quorum;
pub mod recover;
pub mod sealed;
pub mod storage;
pub mod token;
pub mod types;

mod autopilot;
mod bootstrap;
mod core;
mod join;
mod lazy;
mod lone;
mod managers;
mod metrics;
mod network;

#[cfg(test)]
mod tests;

pub use config::{QuorumConfig, RaftTiming};
pub use core::{raft_id_of_peer, raft_id_of_str};
pub use error::{ConsensusError, WriteError};
pub use join::MANAGER_LABEL;
pub use lone::{YieldTo, cluster_to_join};
pub use managers::{MANAGERS_FILE, ManagerSet};
pub use quorum::{ManagerList, Quorum, QuorumStatus, leader_moved_from, new_request_id};
pub use recover::{RecoverReport, recover};
pub use storage::AppliedState;
pub use token::{NoJoinToken, Proof, RaftKey, Token, TokenRole, new_join_nonce};
pub use types::{ApplyResult, Committed, RaftNode};
