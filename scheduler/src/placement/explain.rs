//! Why nodes were refused, and the message an unplaceable task carries:
//! `no suitable node (insufficient memory on 3 nodes; 2 nodes not ready)`.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::PortProtocol;

/// The first filter that refused a node, in pipeline order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// The node is down or not yet heard from.
    NotReady,
    /// The node is paused or drained.
    NotActive,
    /// The node has no container runtime.
    NoRuntime,
    /// A constraint (shown as written) does not hold.
    Constraint(String),
    /// The node already runs the most tasks of this service it may.
    MaxReplicas,
    /// A host-mode published port is taken.
    PortInUse(PortProtocol, u16),
    /// Not enough unreserved memory.
    InsufficientMemory,
    /// Not enough unreserved CPU.
    InsufficientCpu,
}

/// Refusals counted per reason over the nodes considered for one task group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Explanation {
    counts: BTreeMap<Refusal, u64>,
    nodes: u64,
}

impl Explanation {
    /// Counts one node that was considered.
    pub fn consider(&mut self, outcome: Result<(), Refusal>) {
        self.nodes += 1;
        if let Err(r) = outcome {
            *self.counts.entry(r).or_insert(0) += 1;
        }
    }

    /// The message for a task that found no node.
    pub fn message(&self) -> String {
        if self.nodes == 0 {
            return "no suitable node (the cluster has no nodes)".to_string();
        }
        let mut parts: Vec<(&Refusal, u64)> = self.counts.iter().map(|(r, n)| (r, *n)).collect();
        // Most common reason first; ties in pipeline order (the sort is stable).
        parts.sort_by_key(|p| std::cmp::Reverse(p.1));
        let text: Vec<String> = parts.iter().map(|(r, n)| describe(r, *n)).collect();
        format!("no suitable node ({})", text.join("; "))
    }
}

fn nodes(n: u64) -> String {
    if n == 1 {
        "1 node".to_string()
    } else {
        format!("{n} nodes")
    }
}

fn describe(r: &Refusal, n: u64) -> String {
    let are = if n == 1 { "is" } else { "are" };
    match r {
        Refusal::NotReady => format!("{} not ready", nodes(n)),
        Refusal::NotActive => format!("{} {are} paused or drained", nodes(n)),
        Refusal::NoRuntime => format!("{} without a container runtime", nodes(n)),
        Refusal::Constraint(c) => format!("constraint {c} not met on {}", nodes(n)),
        Refusal::MaxReplicas => format!("max replicas per node reached on {}", nodes(n)),
        Refusal::PortInUse(p, port) => format!("host port {port}/{p} in use on {}", nodes(n)),
        Refusal::InsufficientMemory => format!("insufficient memory on {}", nodes(n)),
        Refusal::InsufficientCpu => format!("insufficient cpu on {}", nodes(n)),
    }
}

impl fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        })
    }
}
