//! An agent's registry and the family that describes the agent itself, `shoal_agent_info`.
//!
//! Some of what describes an agent changes while it runs: its role (a worker promoted to manager
//! by autopilot, a manager that wins or loses the leadership) and its cluster id (known once it
//! has formed or joined a cluster). [`AgentInfoHandle`] holds the current facts and is encoded on
//! each scrape, so the family always has exactly one sample, with the labels of the moment.

use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::process::ProcessCollector;

/// Labels of `shoal_agent_info`: who this agent is, and what it is in its cluster now.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentInfo {
    /// shoal's version.
    pub version: String,
    /// The node id (libp2p PeerId).
    pub node_id: String,
    /// `leader`, `manager` (a raft voter that does not lead) or `worker`.
    pub role: String,
    /// The cluster's id; empty until the agent belongs to a cluster.
    pub cluster_id: String,
}

impl AgentInfo {
    /// An agent that has not joined a cluster yet: a worker with no cluster id.
    pub fn new(version: impl Into<String>, node_id: impl Into<String>) -> AgentInfo {
        AgentInfo {
            version: version.into(),
            node_id: node_id.into(),
            role: ROLE_WORKER.into(),
            cluster_id: String::new(),
        }
    }
}

/// The `role` of the raft leader.
pub const ROLE_LEADER: &str = "leader";
/// The `role` of a raft voter that does not lead.
pub const ROLE_MANAGER: &str = "manager";
/// The `role` of every other agent.
pub const ROLE_WORKER: &str = "worker";

/// The current value of `shoal_agent_info`. Cloning is shallow: every clone sees and changes the
/// same facts. The lock is a `std` mutex, never held across an `.await`.
#[derive(Clone, Debug)]
pub struct AgentInfoHandle {
    current: Arc<Mutex<AgentInfo>>,
}

impl AgentInfoHandle {
    fn lock(&self) -> MutexGuard<'_, AgentInfo> {
        // The value is plain data that a panicking writer cannot leave half-changed.
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The facts as the next scrape will show them.
    pub fn get(&self) -> AgentInfo {
        self.lock().clone()
    }

    /// Records the agent's role and cluster id. Returns true when either changed.
    pub fn set(&self, role: &str, cluster_id: &str) -> bool {
        let mut info = self.lock();
        if info.role == role && info.cluster_id == cluster_id {
            return false;
        }
        info.role = role.to_string();
        info.cluster_id = cluster_id.to_string();
        true
    }
}

/// Encodes `shoal_agent_info` from the handle's current facts.
#[derive(Debug)]
struct AgentInfoCollector(AgentInfoHandle);

impl Collector for AgentInfoCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let info = Info::new(self.0.get());
        info.encode(encoder.encode_descriptor(
            "shoal_agent",
            "This agent: version, node id, current role (leader, manager, worker) and cluster id",
            None,
            info.metric_type(),
        )?)
    }
}

/// Creates the registry of one agent, with `shoal_agent_info` and the process collector, and the
/// handle through which the agent keeps its info current.
pub fn new_registry(info: AgentInfo) -> (Registry, AgentInfoHandle) {
    let handle = AgentInfoHandle {
        current: Arc::new(Mutex::new(info)),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(AgentInfoCollector(handle.clone())));
    registry.register_collector(Box::new(ProcessCollector));
    (registry, handle)
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    fn exposition(registry: &Registry) -> String {
        let mut text = String::new();
        encode(&mut text, registry).expect("encodes");
        text
    }

    #[test]
    fn the_info_follows_role_and_cluster_with_one_sample() {
        let (registry, handle) = new_registry(AgentInfo::new("0.1.0", "12D3KooTest"));
        let text = exposition(&registry);
        assert!(
            text.contains(
                "shoal_agent_info{version=\"0.1.0\",node_id=\"12D3KooTest\",role=\"worker\",cluster_id=\"\"} 1"
            ),
            "{text}"
        );
        assert!(handle.set(ROLE_MANAGER, "c1"));
        assert!(!handle.set(ROLE_MANAGER, "c1"), "nothing changed");
        assert!(handle.set(ROLE_LEADER, "c1"));
        let text = exposition(&registry);
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("shoal_agent_info"))
            .collect();
        assert_eq!(
            samples,
            [
                "shoal_agent_info{version=\"0.1.0\",node_id=\"12D3KooTest\",role=\"leader\",cluster_id=\"c1\"} 1"
            ]
        );
    }
}
