//! The control API: HTTP/JSON on the agent's owner-only Unix socket. The CLI is its client.
//!
//! - [`api`]: request and response bodies, and the routes' paths.
//! - [`views`]: how the cluster state is shown (service summaries, task and node rows).
//! - [`server`]: the axum router served by the daemon.
//! - [`logs`]: a service's logs, gathered from its nodes (partial, with warnings, when one is gone).
//! - [`events`]: the events route (a page after a cursor, filtered, waiting for a match).
//! - [`filters`]: `--filter KEY=VALUE` of the `ls` and `ps` commands, parsed and matched.
//! - [`tasks`]: one task in full (`shoal task inspect`), by id or unique id prefix.
//! - [`cluster_info`]: the cluster at a glance (`shoal cluster info`).
//! - [`client`]: the hyper client the CLI uses.
//! - [`join_tokens`]: the cluster's join tokens and their rotation (a manager's owner only).
//! - [`forward`]: calls forwarded between agents (`/shoal/control/1`): a worker's to a manager.

pub mod api;
pub mod client;
pub mod cluster_info;
pub mod events;
pub mod filters;
pub mod forward;
pub mod join_tokens;
pub mod logs;
pub mod server;
pub mod tasks;
pub mod views;
