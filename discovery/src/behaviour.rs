//! The composed [`NetworkBehaviour`]: connection limits, open-mode address filter, ring links,
//! identify, ping, Kademlia, mDNS, gossipsub, one request/response behaviour per protocol
//! and the stream behaviour of [`crate::protocol::ShoalStream`].

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::kad::store::MemoryStore;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, connection_limits, gossipsub, identify, kad, mdns, ping};

use crate::address_filter::AddressFilter;
use crate::codec::FrameCodec;
use crate::config::MeshConfig;
use crate::envelope;
use crate::error::MeshError;
use crate::protocol::{
    GOSSIP_MAX_BYTES, IDENTIFY_PROTOCOL, KAD_PROTOCOL, PROBE_MAX_BYTES, PROBE_MAX_RESPONSE_BYTES,
    PROBE_PROTOCOL, ShoalProtocol,
};
use crate::ring_link::RingLinks;

/// Closest peers a Kademlia query looks for.
const KAD_REPLICATION: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(5) {
    Some(n) => n,
    None => std::num::NonZeroUsize::MIN,
};

/// Every behaviour of the mesh.
#[derive(NetworkBehaviour)]
pub(crate) struct MeshBehaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) filter: AddressFilter,
    pub(crate) links: RingLinks,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<MemoryStore>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) raft: request_response::Behaviour<FrameCodec>,
    pub(crate) dispatch: request_response::Behaviour<FrameCodec>,
    pub(crate) control: request_response::Behaviour<FrameCodec>,
    pub(crate) probe: request_response::Behaviour<FrameCodec>,
    pub(crate) streams: libp2p_stream::Behaviour,
}

impl MeshBehaviour {
    pub(crate) fn new(keypair: &Keypair, config: &MeshConfig) -> Result<Self, MeshError> {
        let peer_id = keypair.public().to_peer_id();
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_connections))
            .with_max_established_per_peer(Some(config.max_connections_per_peer))
            .with_max_pending_incoming(Some(config.max_connections.min(256)))
            .with_max_pending_outgoing(Some(config.max_connections.min(256)));
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), keypair.public())
                .with_agent_version(format!("shoal/{}", env!("CARGO_PKG_VERSION")))
                .with_push_listen_addr_updates(true),
        );
        // libp2p's ping only measures round trips (at its slow default pace): the watchers'
        // evidence comes from `RingLinks`, which pings only the watched members.
        let ping = ping::Behaviour::new(ping::Config::new());
        let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        // shoal stores no records; Kademlia only finds peers. Narrow queries contact (and so
        // connect to) fewer peers. The routing table holds only what the event loop adds (seeds
        // and a few overlay neighbours): every insertion into a small table starts a bootstrap
        // query, and inserting every connected peer would connect every agent to every other.
        kad_config.set_replication_factor(KAD_REPLICATION);
        kad_config.set_kbucket_inserts(kad::BucketInserts::Manual);
        kad_config.set_periodic_bootstrap_interval(None);
        // The table never holds more than `target_peers` entries in all (see
        // `EventLoop::kad_wants`), so no bucket needs room for more: each of the 256 buckets
        // reserves its capacity up front (about 320 bytes an entry), 1.6 MB at Kademlia's 20.
        if let Some(bucket_size) = std::num::NonZeroUsize::new(config.target_peers) {
            kad_config.set_kbucket_size(bucket_size);
        }
        let mut kad = kad::Behaviour::with_config(peer_id, MemoryStore::new(peer_id), kad_config);
        kad.set_mode(Some(kad::Mode::Server));
        let mdns = if config.mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id).map_err(|e| {
                    MeshError::Behaviour {
                        behaviour: "mdns",
                        reason: e.to_string(),
                    }
                })?,
            )
        } else {
            None
        };
        Ok(Self {
            limits: connection_limits::Behaviour::new(limits),
            filter: AddressFilter::new(config.token.is_none()),
            // One ping per heartbeat interval: with the default thresholds a watched member is
            // suspect only when two echoes in a row are late.
            links: RingLinks::new(config.heartbeat_interval, config.suspect_after),
            identify,
            ping,
            kad,
            mdns: mdns.into(),
            gossipsub: gossipsub_behaviour()?,
            raft: shoal_rr(ShoalProtocol::Raft, config.request_timeout),
            dispatch: shoal_rr(ShoalProtocol::Dispatch, config.request_timeout),
            control: shoal_rr(ShoalProtocol::Control, config.request_timeout),
            probe: rr(
                StreamProtocol::new(PROBE_PROTOCOL),
                FrameCodec::new(PROBE_MAX_BYTES, PROBE_MAX_RESPONSE_BYTES),
                probe_timeout(config),
            ),
            streams: libp2p_stream::Behaviour::new(),
        })
    }

    /// The request/response behaviour of `protocol`.
    pub(crate) fn rr(
        &mut self,
        protocol: ShoalProtocol,
    ) -> &mut request_response::Behaviour<FrameCodec> {
        match protocol {
            ShoalProtocol::Raft => &mut self.raft,
            ShoalProtocol::Dispatch => &mut self.dispatch,
            ShoalProtocol::Control => &mut self.control,
        }
    }
}

/// A probe must resolve before a suspect turns dead.
pub(crate) fn probe_timeout(config: &MeshConfig) -> Duration {
    let window = config.dead_after.saturating_sub(config.suspect_after);
    (window * 4 / 5).max(Duration::from_millis(100))
}

fn shoal_rr(protocol: ShoalProtocol, timeout: Duration) -> request_response::Behaviour<FrameCodec> {
    rr(
        protocol.stream_protocol(),
        FrameCodec::new(protocol.max_request_bytes(), protocol.max_response_bytes()),
        timeout,
    )
}

fn rr(
    protocol: StreamProtocol,
    codec: FrameCodec,
    timeout: Duration,
) -> request_response::Behaviour<FrameCodec> {
    request_response::Behaviour::with_codec(
        codec,
        [(protocol, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(128),
    )
}

/// Gossipsub's own heartbeat: mesh upkeep and the lazy gossip of message ids. Messages are
/// pushed through the mesh at once, whatever this period; every period costs each agent
/// control messages to its gossip peers, so it is kept at the slowest that repairs a mesh well.
const GOSSIP_HEARTBEAT: Duration = Duration::from_secs(1);

fn gossipsub_behaviour() -> Result<gossipsub::Behaviour, MeshError> {
    let err = |reason: String| MeshError::Behaviour {
        behaviour: "gossipsub",
        reason,
    };
    let gossip_config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(GOSSIP_HEARTBEAT)
        .heartbeat_initial_delay(Duration::from_millis(100))
        // shoal signs and checks its payloads itself (see `envelope`): once per distinct
        // message, before it is forwarded, instead of once per received copy.
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::new(&envelope::message_id(&m.data))
        })
        .max_transmit_size(GOSSIP_MAX_BYTES)
        .mesh_n(5)
        .mesh_n_low(4)
        .mesh_n_high(8)
        .mesh_outbound_min(2)
        .gossip_lazy(4)
        .flood_publish(false)
        // Heartbeats are small: announcing "don't send me that" would cost as much as the copy.
        .idontwant_message_size_threshold(1024)
        .history_length(4)
        .history_gossip(2)
        .duplicate_cache_time(Duration::from_secs(30))
        .build()
        .map_err(|e| err(e.to_string()))?;
    gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gossip_config)
        .map_err(|e| err(e.to_owned()))
}
