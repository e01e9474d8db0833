//! The shoal agent as a library: the daemon that tests can start in-process, the executors,
//! the control API and the docker-like client. `main.rs` only parses and calls in here.
//!
//! # Layout
//! - [`cli`]: the command line (`shoal agent`, `shoal service ...`, `shoal bench ...`).
//! - [`control`]: the HTTP/JSON control API on the agent's Unix socket, server and client.
//! - [`dispatch`]: leader-to-worker assignments and worker-to-leader reports.
//! - [`worker`]: converges this node's tasks through the executor.
//! - [`executor`]: Docker (bollard) and the in-memory `sim` runtime.
//! - [`bench`]: benchmark programs.
//! - [`ui`]: the web view at `/ui` (embedded page, its data routes, the event stream as SSE).

pub mod bench;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod dispatch;
pub mod executor;
pub mod leader;
pub mod paths;
pub mod ui;
pub mod worker;
