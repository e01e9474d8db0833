//! shoal's pure core: the cluster model, the commands that change it, reconciliation and
//! placement. No I/O, no async, no clock, no randomness: time and seeds are arguments, so every
//! decision is deterministic and replayable.
//!
//! # Layout
//! - [`model`]: nodes, services, tasks, the whole [`ClusterState`].
//! - [`command`]: the raft log's [`Command`] and [`ClusterState::apply`].
//! - [`plan`]: what a reconciliation pass decided.

pub mod command;
pub mod model;
pub mod plan;

mod apply;

pub use command::{ApplyError, Command, Outcome};
pub use model::*;
pub use plan::Plan;
