//! An agent's registry and the families that describe the agent itself.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::process::ProcessCollector;

/// Labels of `shoal_agent_info`: who this agent is.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentInfo {
    /// shoal's version.
    pub version: String,
    /// The node id (libp2p PeerId).
    pub node_id: String,
}

/// Creates the registry of one agent, with `shoal_agent_info` and the process collector.
pub fn new_registry(info: AgentInfo) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "shoal_agent",
        "Static facts about this agent (version and node id)",
        Info::new(info),
    );
    registry.register_collector(Box::new(ProcessCollector));
    registry
}
