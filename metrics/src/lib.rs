//! shoal's metrics: one Prometheus registry per agent (never a process-global one, so many agents
//! can share a test process), the process collector, and the `/metrics` HTTP endpoint.
//!
//! # Layout
//! - [`agent`]: the agent's own families (scheduler, cluster, dispatcher, executor).
//! - [`declared`]: families exposed from the start, before their first sample.
//! - [`registry`]: creating an agent's registry and `shoal_agent_info` (version, node id, and the
//!   role and cluster id, which change while the agent runs).
//! - [`process`]: CPU, memory and file descriptors of this process, read on each scrape.
//! - [`text_format`]: the classic Prometheus text format, for scrapers that do not ask for OpenMetrics.
//! - [`http`]: the axum server that exposes a registry at `/metrics` (and, beside it, routes
//!   its caller adds: the agent's web view).
//!
//! Subsystems register their own families into the registry handed to them at start-up
//! (`shoal_mesh_*`, `shoal_raft_*`, ...); libp2p's own metrics go into the same registry.

pub mod agent;
pub mod declared;
pub mod http;
pub mod process;
pub mod registry;
pub mod text_format;

pub use agent::AgentMetrics;
pub use declared::Declared;
pub use http::{MetricsServer, serve, serve_with};
pub use prometheus_client;
pub use registry::{AgentInfo, AgentInfoHandle, new_registry};

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address could not be bound.
    #[error("cannot listen for /metrics on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}
