//! shoal's mesh: one libp2p Swarm per agent, owned by one event loop, and the [`Mesh`] handle
//! everything else uses to send requests, serve protocols and watch membership.
//!
//! # Layout
//! - [`config`]: [`MeshConfig`] and its defaults.
//! - [`identity`]: the ed25519 key in the data dir (its PeerId is the node id).
//! - `transport`: TCP (+ pnet with a token) and QUIC, noise, yamux, DNS.
//! - `behaviour`: the composed libp2p behaviours.
//! - `event_loop`: the Swarm's only owner.
//! - [`handle`]: [`Mesh`] and [`InboundRequest`].
//! - `streams`: [`Stream`] and [`IncomingStreams`], each stream leasing its peer's connection.
//! - [`protocol`] and `codec`: protocol names, size bounds and the framed byte codec.
//! - `envelope`: the signed envelope of gossip messages (checked once per distinct message).
//! - `probe`: the internal `/shoal/probe/1` liveness probes.
//! - `roster`: the roster a joiner gets from its first peer.
//! - `overlay`: the ring of watchers, the connections kept open, and the adaptive beat period.
//! - `ring_link`: keeps the ring neighbours' connections open and pings the watched ones.
//! - [`membership`]: [`NodeInfo`], [`Member`], [`MembershipChange`] and the view's fold.
//! - [`address_filter`]: open mode's loopback/private/link-local policy.
//! - [`metrics`]: the `shoal_mesh_*` families.

pub mod address_filter;
mod behaviour;
mod codec;
pub mod config;
mod envelope;
mod error;
mod event_loop;
pub mod handle;
pub mod identity;
mod local_health;
pub mod membership;
pub mod metrics;
mod overlay;
mod probe;
mod probing;
pub mod protocol;
mod reconsider;
mod ring_link;
mod roster;
mod start;
mod streams;
mod transport;
mod upkeep;

#[cfg(test)]
mod tests;

pub use config::MeshConfig;
pub use error::{MeshError, OpenStreamError, RequestError};
pub use handle::{InboundRequest, Mesh};
pub use libp2p::identity::Keypair;
pub use libp2p::{Multiaddr, PeerId};
pub use membership::{
    Member, MemberState, MembershipChange, NodeInfo, NodeRole, RaftAnnouncement, RaftMembership,
};
pub use metrics::TrafficTotals;
pub use protocol::{ShoalProtocol, ShoalStream};
pub use start::start;
pub use streams::{IncomingStreams, Stream};
