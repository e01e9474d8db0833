//! [`MeshConfig`]: everything the mesh needs to start, with production and loopback-test defaults.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

use crate::error::MeshError;

/// The default TCP and UDP (QUIC) port of the mesh.
pub const DEFAULT_PORT: u16 = 7946;

/// Name of the identity key file inside the data dir.
pub const IDENTITY_FILE: &str = "mesh-identity.key";

/// Configuration of one agent's mesh.
#[derive(Clone)]
pub struct MeshConfig {
    /// Directory holding the identity key ([`IDENTITY_FILE`]); created if missing.
    pub data_dir: PathBuf,
    /// Addresses to listen on (TCP and, without a token, QUIC).
    pub listen: Vec<Multiaddr>,
    /// Addresses to announce to others in place of the listen addresses (NAT, cloud).
    pub advertise: Vec<Multiaddr>,
    /// Seed multiaddrs dialled at start (and again while no peer is connected).
    pub join: Vec<Multiaddr>,
    /// Cluster name; scopes the heartbeat topic.
    pub cluster: String,
    /// Closed-cluster token. Its secret is the pre-shared key of a libp2p private network; QUIC is
    /// off when set. Never logged.
    pub token: Option<String>,
    /// Discover peers on the LAN by mDNS.
    pub mdns: bool,
    /// Enable QUIC (ignored when a token is set).
    pub quic: bool,
    /// How often this agent publishes its heartbeat.
    pub heartbeat_interval: Duration,
    /// Silence after which a member is suspect and probed.
    pub suspect_after: Duration,
    /// Silence after which a suspect that no probe vouched for is dead.
    pub dead_after: Duration,
    /// Timeout of one request (both directions: a consumer must answer within it).
    pub request_timeout: Duration,
    /// Number of peers asked to probe a suspect on our behalf.
    pub indirect_probes: usize,
    /// Number of ring successors each agent watches (pings, suspects, declares dead); every
    /// member is watched by this many others.
    pub watchers: usize,
    /// The mesh dials peers it learns about until it has this many connections.
    pub target_peers: usize,
    /// Above this many connected peers, the mesh closes the connections nobody uses: not a ring
    /// neighbour, not a gossip mesh link, not opened in the last few seconds, and not used by a
    /// shoal request for [`MeshConfig::request_timeout`] times three.
    pub peers_high_water: usize,
    /// Upper bound of established connections.
    pub max_connections: u32,
    /// Upper bound of established connections per peer.
    pub max_connections_per_peer: u32,
    /// Upper bound of members kept in the view (others' heartbeats are ignored beyond it).
    pub max_members: usize,
    /// How long a dead or departed member stays in the view before it is forgotten.
    pub forget_after: Duration,
    /// Capacity of the handle's command channel.
    pub command_buffer: usize,
    /// Capacity of each protocol's inbound-request channel.
    pub inbound_buffer: usize,
    /// How long a graceful shutdown keeps the connections open so the Left message goes out.
    pub shutdown_linger: Duration,
}

impl MeshConfig {
    /// Production defaults: listen on every interface on [`DEFAULT_PORT`], mDNS and QUIC on.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: vec![
                Multiaddr::empty()
                    .with(Protocol::Ip4([0, 0, 0, 0].into()))
                    .with(Protocol::Tcp(DEFAULT_PORT)),
                Multiaddr::empty()
                    .with(Protocol::Ip4([0, 0, 0, 0].into()))
                    .with(Protocol::Udp(DEFAULT_PORT))
                    .with(Protocol::QuicV1),
            ],
            advertise: Vec::new(),
            join: Vec::new(),
            cluster: "default".to_owned(),
            token: None,
            mdns: true,
            quic: true,
            heartbeat_interval: Duration::from_millis(500),
            suspect_after: Duration::from_secs(1),
            dead_after: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            indirect_probes: 3,
            watchers: 3,
            target_peers: 8,
            peers_high_water: 16,
            max_connections: 512,
            // Two, so that a simultaneous dial from both ends is not refused on both sides.
            max_connections_per_peer: 2,
            max_members: 4096,
            forget_after: Duration::from_secs(300),
            command_buffer: 1024,
            inbound_buffer: 256,
            shutdown_linger: Duration::from_millis(300),
        }
    }

    /// Loopback defaults for tests and benchmarks: TCP on `127.0.0.1`, a free port, no mDNS, no QUIC.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: vec![
                Multiaddr::empty()
                    .with(Protocol::Ip4([127, 0, 0, 1].into()))
                    .with(Protocol::Tcp(0)),
            ],
            mdns: false,
            quic: false,
            ..Self::new(data_dir)
        }
    }

    /// Whether QUIC is actually used (a token turns it off: pnet cannot protect it).
    pub fn quic_enabled(&self) -> bool {
        self.quic && self.token.is_none()
    }

    pub(crate) fn validate(&self) -> Result<(), MeshError> {
        let bad = |msg: &str| Err(MeshError::Config(msg.to_owned()));
        if self.cluster.is_empty() || self.cluster.len() > 128 {
            return bad("cluster name must have 1 to 128 bytes");
        }
        if self.token.as_deref().is_some_and(str::is_empty) {
            return bad("token must not be empty");
        }
        if self.heartbeat_interval.is_zero() || self.suspect_after < self.heartbeat_interval {
            return bad("suspect_after must be at least one heartbeat interval (non-zero)");
        }
        if self.dead_after <= self.suspect_after {
            return bad("dead_after must be longer than suspect_after");
        }
        if self.peers_high_water < self.target_peers {
            return bad("peers_high_water must be at least target_peers");
        }
        if self.watchers == 0 {
            return bad("watchers must be at least 1");
        }
        if self.command_buffer == 0 || self.inbound_buffer == 0 {
            return bad("channel capacities must be non-zero");
        }
        if self.listen.is_empty() {
            return bad("at least one listen address is required");
        }
        Ok(())
    }
}

impl fmt::Debug for MeshConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshConfig")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("join", &self.join)
            .field("cluster", &self.cluster)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("mdns", &self.mdns)
            .field("quic", &self.quic_enabled())
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("suspect_after", &self.suspect_after)
            .field("dead_after", &self.dead_after)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let mut cfg = MeshConfig::for_tests("/tmp/x");
        cfg.token = Some("very-secret".to_owned());
        assert!(!format!("{cfg:?}").contains("very-secret"));
        assert!(!cfg.quic_enabled());
    }

    #[test]
    fn validation_rejects_inverted_thresholds() {
        let mut cfg = MeshConfig::for_tests("/tmp/x");
        assert!(cfg.validate().is_ok());
        cfg.dead_after = cfg.suspect_after;
        assert!(cfg.validate().is_err());
    }
}
