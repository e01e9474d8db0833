//! Deterministic synthetic clusters and services for tests and benchmarks. The same arguments
//! (and seed) always build the same cluster.

use std::collections::BTreeMap;

use crate::command::{ApplyError, Command, Outcome};
use crate::model::{
    Availability, ClusterState, Constraint, ConstraintKey, ConstraintOp, Node, NodeId, NodeRole,
    NodeState, Platform, Resources, Runtime, ServiceId, ServiceMode, ServiceSpec, Timestamp,
};

/// The label that the synthetic constraint reads.
pub const TIER_LABEL: &str = "tier";
/// The value a third of the labelled nodes carry.
pub const TIER_GOLD: &str = "gold";

/// One CPU in nano-CPUs.
pub const CPU: u64 = 1_000_000_000;
/// One GiB in bytes.
pub const GIB: u64 = 1 << 30;

/// What the synthetic nodes look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterShape {
    /// Number of nodes, all ready and active.
    pub nodes: usize,
    /// CPU and memory of each node.
    pub capacity: Resources,
    /// Label every third node (in creation order) `tier=gold` and the others `tier=silver`.
    pub tiers: bool,
    /// Seed for the node ids.
    pub seed: u64,
}

impl ClusterShape {
    /// `nodes` nodes of 8 CPUs and 32 GiB, with tiers.
    pub fn new(nodes: usize, seed: u64) -> Self {
        ClusterShape {
            nodes,
            capacity: Resources {
                nano_cpus: 8 * CPU,
                memory_bytes: 32 * GIB,
            },
            tiers: true,
            seed,
        }
    }
}

/// A step of the SplitMix64 generator: a well-mixed 64-bit value from `x`.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Node number `i` of a cluster of this shape.
pub fn node(shape: &ClusterShape, i: usize) -> Node {
    let id = format!("node-{:016x}", mix(shape.seed ^ mix(i as u64)));
    let mut labels = BTreeMap::new();
    if shape.tiers {
        let tier = if i.is_multiple_of(3) {
            TIER_GOLD
        } else {
            "silver"
        };
        labels.insert(TIER_LABEL.to_string(), tier.to_string());
        labels.insert("zone".to_string(), format!("z{}", i % 4));
    }
    Node {
        id: NodeId::new(id),
        hostname: format!("host-{i}"),
        addresses: Vec::new(),
        role: if i == 0 {
            NodeRole::Manager
        } else {
            NodeRole::Worker
        },
        availability: Availability::Active,
        state: NodeState::Ready,
        labels,
        platform: Platform {
            os: "linux".into(),
            arch: "x86_64".into(),
        },
        total: shape.capacity,
        reserved: Resources::default(),
        runtime: Runtime::Sim,
        version: "synthetic".into(),
        credential: crate::model::Credential::Manager,
    }
}

/// A cluster of ready, active nodes.
pub fn cluster(shape: &ClusterShape) -> ClusterState {
    let mut state = ClusterState::default();
    for i in 0..shape.nodes {
        let n = node(shape, i);
        state.nodes.insert(n.id.clone(), n);
    }
    state
}

/// The constraint that exactly the `tier=gold` nodes meet (a third of them).
pub fn gold_constraint() -> Constraint {
    Constraint {
        key: ConstraintKey::Label(TIER_LABEL.into()),
        op: ConstraintOp::Eq,
        value: TIER_GOLD.into(),
    }
}

/// A minimal valid spec: replicated with `replicas`, no reservations, default policies.
pub fn spec(name: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        mode: ServiceMode::Replicated { replicas },
        ..ServiceSpec::new(name, "busybox:latest")
    }
}

/// The benchmark's service: `replicas` tasks reserving 10 milli-CPUs and 16 MiB each,
/// optionally constrained to the `tier=gold` third of the nodes.
pub fn bench_service(name: &str, replicas: u64, constrained: bool) -> ServiceSpec {
    let mut s = spec(name, replicas);
    s.resources.reservations = Resources {
        nano_cpus: CPU / 100,
        memory_bytes: 16 << 20,
    };
    if constrained {
        s.constraints.push(gold_constraint());
    }
    s
}

/// Creates a service through [`ClusterState::apply`] and returns its id.
pub fn create_service(
    state: &mut ClusterState,
    spec: ServiceSpec,
    at: Timestamp,
) -> Result<ServiceId, ApplyError> {
    match state.apply(&Command::CreateService { spec, at })? {
        Outcome::ServiceCreated(id) => Ok(id),
        other => Err(ApplyError::Refused(format!("unexpected outcome {other:?}"))),
    }
}
