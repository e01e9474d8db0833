//! The control API: HTTP/JSON on the agent's owner-only Unix socket. The CLI is its client.
//!
//! - [`api`]: request and response bodies, and the routes' paths.
//! - [`views`]: how the cluster state is shown (service summaries, task and node rows).
//! - [`server`]: the router served by the daemon and what every handler shares (reads at the
//!   right consistency, authorized writes, errors).
//! - [`services`] and [`nodes`]: the services' and the nodes' routes.
//! - [`secrets`]: the secrets' and configs' routes, and the cluster's data key between managers.
//! - [`autolock`]: autolock on and off, the unlock key (shown, rotated), unlocking a manager.
//! - [`routes`]: the one list of routes, and the OpenAPI document (`GET /v1/openapi.json`).
//! - [`errors`]: every error answered as JSON, axum's own rejections and unknown routes too.
//! - [`remote`]: the API on TCP (`--api-addr`), behind a bearer token.
//! - [`logs`]: a service's logs, gathered from its nodes (partial, with warnings, when one is gone).
//! - [`events`]: the events route (a page after a cursor, filtered, waiting for a match).
//! - [`filters`]: `--filter KEY=VALUE` of the `ls` and `ps` commands, parsed and matched.
//! - [`tasks`]: one task in full (`shoal task inspect`), by id or unique id prefix.
//! - [`cluster_info`]: the cluster at a glance (`shoal cluster info`).
//! - [`client`]: the hyper client the CLI uses (Unix socket or TCP).
//! - [`join_tokens`]: the cluster's join tokens and their rotation (a manager's owner only).
//! - [`forward`]: calls forwarded between agents (`/shoal/control/1`): a worker's to a manager.

pub mod api;
pub mod autolock;
pub mod client;
pub mod cluster_info;
pub mod endpoints;
pub mod errors;
pub mod events;
pub mod filters;
pub mod forward;
pub mod join_tokens;
pub mod logs;
pub mod nodes;
pub mod remote;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod services;
pub mod tasks;
pub mod views;
