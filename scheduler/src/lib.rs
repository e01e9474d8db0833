//! shoal's pure core: the cluster model, the commands that change it, reconciliation and
//! placement. No I/O, no async, no clock, no randomness: time and seeds are arguments, so every
//! decision is deterministic and replayable.
//!
//! # Layout
//! - [`model`]: nodes, services, tasks, the whole [`ClusterState`].
//! - [`events`]: what an applied command changed, as typed cluster events.
//! - [`command`]: the raft log's [`Command`] and [`ClusterState::apply`] (implemented in
//!   [`apply`]: validate first, then mutate).
//! - [`reconcile()`]: desired versus actual state, as a [`Plan`] (what should run).
//! - [`placement`]: filters and scorers (where it runs), O(log nodes) per task.
//! - [`plan`]: what a pass decided, with the preconditions that make a stale plan fail whole.
//! - [`secrets`]: secrets (sealed values) and configs, and services' references to them.
//! - [`autolock`]: whether managers keep the data key locked, and the sealed unlock key.
//! - [`parse`]: constraints, sizes, CPUs, durations, preferences, ports as users type them.
//! - [`synthetic`]: deterministic big clusters for tests and benchmarks.

pub mod apply;
pub mod authz;
pub mod autolock;
pub mod command;
pub mod events;
pub mod join_keys;
pub mod model;
pub mod parse;
pub mod placement;
pub mod plan;
pub mod reconcile;
pub mod requests;
pub mod secrets;
pub mod synthetic;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod update_proptests;

pub use command::{ApplyError, Command, DeclineReason, Outcome};
pub use model::*;
pub use plan::Plan;
pub use reconcile::reconcile;
pub use requests::{RequestId, RequestLog};
pub use secrets::{Blob, Config, ConfigId, FileRef, ObjectKind, SealedValue, Secret, SecretId};
