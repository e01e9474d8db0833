//! shoal's own mesh metric families (`shoal_mesh_*`), registered into the agent's registry next
//! to libp2p's. Cloning is shallow: every clone updates the same series.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::membership::MemberState;
use crate::protocol::{ShoalProtocol, ShoalStream};

/// What a message counter is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrafficKind {
    /// Heartbeats and leaves on gossipsub.
    Gossip,
    /// Liveness probes.
    Probe,
    /// Raft RPCs.
    Raft,
    /// Dispatcher traffic.
    Dispatch,
    /// Control forwarding.
    Control,
    /// Service connections through the proxy.
    Proxy,
}

impl TrafficKind {
    /// The lower-case label value (`gossip`, `probe`, `raft`, `dispatch`, `control`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Gossip => "gossip",
            Self::Probe => "probe",
            Self::Raft => "raft",
            Self::Dispatch => "dispatch",
            Self::Control => "control",
            Self::Proxy => "proxy",
        }
    }
}

impl EncodeLabelValue for TrafficKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.label().encode(encoder)
    }
}

impl From<ShoalStream> for TrafficKind {
    fn from(s: ShoalStream) -> Self {
        match s {
            ShoalStream::RaftAppend => Self::Raft,
            ShoalStream::Proxy | ShoalStream::ProxyDatagrams => Self::Proxy,
        }
    }
}

impl From<ShoalProtocol> for TrafficKind {
    fn from(p: ShoalProtocol) -> Self {
        match p {
            ShoalProtocol::Raft => Self::Raft,
            ShoalProtocol::Dispatch => Self::Dispatch,
            ShoalProtocol::Control => Self::Control,
        }
    }
}

/// Inbound or outbound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received.
    In,
    /// Sent.
    Out,
}

impl Direction {
    /// The lower-case label value (`in`, `out`).
    pub fn label(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.label().encode(encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TrafficLabels {
    protocol: TrafficKind,
    direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// Totals of shoal's application-level mesh traffic (all protocols, both directions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficTotals {
    /// Messages sent plus received.
    pub messages: u64,
    /// Payload bytes sent plus received.
    pub bytes: u64,
}

/// The mesh's metric families.
#[derive(Debug, Clone, Default)]
pub struct MeshMetrics {
    peers: Family<StateLabels, Gauge>,
    connected: Gauge,
    messages: Family<TrafficLabels, Counter>,
    bytes: Family<TrafficLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
}

const KINDS: [TrafficKind; 6] = [
    TrafficKind::Gossip,
    TrafficKind::Probe,
    TrafficKind::Raft,
    TrafficKind::Dispatch,
    TrafficKind::Control,
    TrafficKind::Proxy,
];

impl MeshMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "shoal_mesh_peers",
            "Members of the mesh view by state",
            shoal_metrics::Declared(m.peers.clone()),
        );
        registry.register(
            "shoal_mesh_connected_peers",
            "Peers with at least one open connection",
            m.connected.clone(),
        );
        registry.register(
            "shoal_mesh_messages",
            "Mesh messages by protocol and direction",
            shoal_metrics::Declared(m.messages.clone()),
        );
        registry.register(
            "shoal_mesh_bytes",
            "Mesh payload bytes by protocol and direction",
            shoal_metrics::Declared(m.bytes.clone()),
        );
        registry.register(
            "shoal_mesh_rejected",
            "Inbound messages rejected (malformed, oversized, unserved, overloaded)",
            shoal_metrics::Declared(m.rejected.clone()),
        );
        for state in MemberState::ALL {
            m.set_peers(state, 0);
        }
        m
    }

    pub(crate) fn set_peers(&self, state: MemberState, count: usize) {
        let labels = StateLabels {
            state: state.label().to_owned(),
        };
        self.peers
            .get_or_create(&labels)
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub(crate) fn set_connected(&self, count: usize) {
        self.connected.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub(crate) fn message(&self, protocol: TrafficKind, direction: Direction, bytes: usize) {
        let labels = TrafficLabels {
            protocol,
            direction,
        };
        self.messages.get_or_create(&labels).inc();
        self.bytes
            .get_or_create(&labels)
            .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    pub(crate) fn rejected(&self, reason: &str) {
        let labels = ReasonLabels {
            reason: reason.to_owned(),
        };
        self.rejected.get_or_create(&labels).inc();
    }

    /// Sums of every message and byte counter.
    pub fn totals(&self) -> TrafficTotals {
        let mut totals = TrafficTotals::default();
        for protocol in KINDS {
            for direction in [Direction::In, Direction::Out] {
                let labels = TrafficLabels {
                    protocol,
                    direction,
                };
                totals.messages += self.messages.get_or_create(&labels).get();
                totals.bytes += self.bytes.get_or_create(&labels).get();
            }
        }
        totals
    }
}
