//! The shoal agent as a library: the daemon that tests can start in-process, the executors,
//! the control API and the docker-like client. `main.rs` only parses and calls in here.

pub mod bench;
pub mod executor;
