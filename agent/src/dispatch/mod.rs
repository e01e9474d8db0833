//! Dispatch: the leader's dispatcher streams each worker its assignments and receives batched
//! status reports and heartbeats over `/shoal/dispatch/1`.
//!
//! - [`messages`]: the protocol's messages and codec.
//! - [`assignments`]: which tasks each worker must know about.
//! - [`dispatcher`]: the leader's sessions, pushes and down-marking.
//! - [`pusher`]: the leader's in-order sender of one worker's sets and changes.
//! - [`reports`]: the leader's batched writes of status reports.
//! - [`files`]: a task's secrets and configs, from the leader to the task's node only.
//! - [`leader_link`]: the worker's side: reports and heartbeats to the leader.
//! - [`router`]: inbound requests, routed to the worker or the leader duties.

pub mod assignments;
pub mod dispatcher;
pub mod files;
pub mod leader_link;
pub mod messages;
pub mod pusher;
pub mod reports;
pub mod router;
