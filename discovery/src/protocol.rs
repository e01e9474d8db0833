//! Protocol names and their size bounds: shoal's public request/response protocols and the
//! mesh-internal probe protocol.

use std::fmt;

use libp2p::StreamProtocol;

/// Protocol name of raft RPCs.
pub const RAFT_PROTOCOL: &str = "/shoal/raft/1";
/// Protocol name of raft's append streams: one long-lived, ordered stream per leader and follower
/// that carries pipelined AppendEntries and their results.
pub const RAFT_APPEND_PROTOCOL: &str = "/shoal/raft-append/1";
/// Protocol name of the service proxy's streams: one stream per proxied connection, to the
/// agent of the node that runs the task it goes to.
pub const PROXY_PROTOCOL: &str = "/shoal/proxy/1";
/// Protocol name of the service proxy's datagram streams: one stream per UDP session (a client
/// address and a service port), each datagram a length-prefixed frame.
pub const PROXY_DATAGRAMS_PROTOCOL: &str = "/shoal/proxy-udp/1";
/// Protocol name of dispatcher traffic (assignments, status reports).
pub const DISPATCH_PROTOCOL: &str = "/shoal/dispatch/1";
/// Protocol name of forwarded control-API calls.
pub const CONTROL_PROTOCOL: &str = "/shoal/control/1";
/// Mesh-internal: direct and indirect liveness probes.
pub const PROBE_PROTOCOL: &str = "/shoal/probe/1";
/// Mesh-internal: a watcher's pings to the ring members it watches (8 bytes echoed).
pub const LINK_PROTOCOL: &str = "/shoal/link/1";
/// Mesh-internal: shoal's own Kademlia DHT (kept apart from the public IPFS DHT).
pub const KAD_PROTOCOL: &str = "/shoal/kad/1";
/// Mesh-internal: identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/shoal/id/1";

const MIB: usize = 1024 * 1024;
/// Upper bound of a probe request (a roster request carries the joiner's heartbeat).
pub(crate) const PROBE_MAX_BYTES: usize = GOSSIP_MAX_BYTES;
/// Upper bound of a gossip message (a heartbeat with its NodeInfo).
pub(crate) const GOSSIP_MAX_BYTES: usize = 64 * 1024;
/// Upper bound of a probe response: a roster of the members held alive, filled up to this.
pub(crate) const PROBE_MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// shoal's own request/response protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShoalProtocol {
    /// Raft RPCs between managers ([`RAFT_PROTOCOL`]).
    Raft,
    /// Leader <-> worker dispatch ([`DISPATCH_PROTOCOL`]).
    Dispatch,
    /// Control-API forwarding ([`CONTROL_PROTOCOL`]).
    Control,
}

impl ShoalProtocol {
    /// Every protocol, in a fixed order.
    pub const ALL: [ShoalProtocol; 3] = [Self::Raft, Self::Dispatch, Self::Control];

    /// The protocol name negotiated on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raft => RAFT_PROTOCOL,
            Self::Dispatch => DISPATCH_PROTOCOL,
            Self::Control => CONTROL_PROTOCOL,
        }
    }

    /// Largest request payload accepted, in bytes.
    pub const fn max_request_bytes(self) -> usize {
        match self {
            Self::Raft => 4 * MIB,
            Self::Dispatch => 4 * MIB,
            Self::Control => MIB,
        }
    }

    /// Largest response payload accepted, in bytes.
    pub const fn max_response_bytes(self) -> usize {
        match self {
            Self::Raft => 4 * MIB,
            Self::Dispatch => 4 * MIB,
            Self::Control => 8 * MIB,
        }
    }

    /// A short label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Raft => "raft",
            Self::Dispatch => "dispatch",
            Self::Control => "control",
        }
    }

    pub(crate) fn stream_protocol(self) -> StreamProtocol {
        StreamProtocol::new(self.name())
    }
}

/// shoal's own stream protocols: long-lived, ordered byte streams opened through
/// [`crate::Mesh::open_stream`] and accepted through [`crate::Mesh::accept_streams`], which
/// bypass the event loop (no hop per message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShoalStream {
    /// Pipelined raft appends ([`RAFT_APPEND_PROTOCOL`]).
    RaftAppend,
    /// A service connection to a task on the other node ([`PROXY_PROTOCOL`]).
    Proxy,
    /// A service's UDP session with a task on the other node ([`PROXY_DATAGRAMS_PROTOCOL`]).
    ProxyDatagrams,
}

impl ShoalStream {
    /// The protocol name negotiated on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::RaftAppend => RAFT_APPEND_PROTOCOL,
            Self::Proxy => PROXY_PROTOCOL,
            Self::ProxyDatagrams => PROXY_DATAGRAMS_PROTOCOL,
        }
    }

    pub(crate) fn stream_protocol(self) -> StreamProtocol {
        StreamProtocol::new(self.name())
    }
}

impl fmt::Display for ShoalStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for ShoalProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
