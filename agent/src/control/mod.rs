//! The control API: HTTP/JSON on the agent's owner-only Unix socket. The CLI is its client.
//!
//! - [`api`]: request and response bodies, and the routes' paths.
//! - [`views`]: how the cluster state is shown (service summaries, task and node rows).
//! - [`server`]: the axum router served by the daemon.
//! - [`client`]: the hyper client the CLI uses.

pub mod api;
pub mod client;
pub mod server;
pub mod views;
