//! Per-node counters for one placement pass: reserved resources, task counts (overall and per
//! service) and host ports in use. Computed once from the state in O(tasks), then updated as the
//! pass assigns tasks.

use crate::model::{ClusterState, Node, NodeId, PortProtocol, Resources, ServiceId, ServiceSpec};
use crate::placement::fasthash::FastMap;

/// The cluster's nodes in id order, addressable by a dense index.
#[derive(Debug)]
pub struct NodeTable<'a> {
    /// Nodes in id order.
    pub nodes: Vec<&'a Node>,
    index: FastMap<&'a str, u32>,
}

impl<'a> NodeTable<'a> {
    /// Indexes the nodes of `state`.
    pub fn new(state: &'a ClusterState) -> Self {
        let nodes: Vec<&Node> = state.nodes.values().collect();
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), i as u32))
            .collect();
        NodeTable { nodes, index }
    }

    /// The dense index of a node.
    pub fn index_of(&self, id: &NodeId) -> Option<u32> {
        self.index.get(id.as_str()).copied()
    }

    /// The node at a dense index.
    pub fn node(&self, idx: u32) -> &'a Node {
        self.nodes[idx as usize]
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// What the tasks holding resources use on each node (by dense index).
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Resources reserved by tasks on each node.
    pub reserved: Vec<Resources>,
    /// Tasks holding resources on each node.
    pub tasks: Vec<u64>,
    /// Tasks of one service holding resources on one node.
    service_tasks: FastMap<(ServiceId, u32), u64>,
    /// Host ports in use per node (only nodes with any).
    ports: FastMap<u32, Vec<(PortProtocol, u16)>>,
}

impl Usage {
    /// Counts every task of `state` that holds resources (see
    /// [`Task::holds_resources`](crate::Task::holds_resources)).
    ///
    /// Tasks of a removed service count as tasks but reserve nothing (their spec is gone).
    pub fn from_state(state: &ClusterState, table: &NodeTable<'_>) -> Self {
        let n = table.len();
        let mut usage = Usage {
            reserved: vec![Resources::default(); n],
            tasks: vec![0; n],
            ..Usage::default()
        };
        for task in state.tasks.values().filter(|t| t.holds_resources()) {
            let Some(idx) = task.node.as_ref().and_then(|id| table.index_of(id)) else {
                continue;
            };
            match state.services.get(&task.service) {
                Some(svc) => usage.add(idx, task.service, svc.spec_for(task.spec_version)),
                None => usage.tasks[idx as usize] += 1,
            }
        }
        usage
    }

    /// Records one more task of `service` (running `spec`) on node `idx`.
    pub fn add(&mut self, idx: u32, service: ServiceId, spec: &ServiceSpec) {
        let i = idx as usize;
        self.reserved[i] = self.reserved[i].plus(spec.resources.reservations);
        self.tasks[i] += 1;
        *self.service_tasks.entry((service, idx)).or_insert(0) += 1;
        if spec.host_ports().next().is_some() {
            self.ports.entry(idx).or_default().extend(spec.host_ports());
        }
    }

    /// Tasks of `service` on node `idx`.
    pub fn service_count(&self, service: ServiceId, idx: u32) -> u64 {
        self.service_tasks
            .get(&(service, idx))
            .copied()
            .unwrap_or(0)
    }

    /// Whether `port` is bound on node `idx`.
    pub fn port_in_use(&self, idx: u32, port: (PortProtocol, u16)) -> bool {
        self.ports.get(&idx).is_some_and(|p| p.contains(&port))
    }
}
