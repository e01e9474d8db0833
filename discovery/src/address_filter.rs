//! Open mode's address policy: without a token, only peers on loopback, private (RFC 1918,
//! fc00::/7) and link-local addresses may connect. A [`NetworkBehaviour`] that denies others.

use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};

/// Whether an address may be used in open mode. Addresses without an IP (e.g. DNS names the
/// operator wrote in `--join`) are allowed for dialing; inbound connections always carry an IP.
pub fn allowed_in_open_mode(addr: &Multiaddr) -> bool {
    match first_ip(addr) {
        Some(ip) => ip_is_local(ip),
        None => true,
    }
}

fn first_ip(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Loopback, private or link-local.
pub fn ip_is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => v4_is_local(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => v4_is_local(v4),
            None => v6_is_local(ip),
        },
    }
}

fn v4_is_local(ip: Ipv4Addr) -> bool {
    ip.is_loopback() || ip.is_private() || ip.is_link_local()
}

fn v6_is_local(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
}

/// Denies connections to and from non-local addresses when enabled (open mode).
#[derive(Debug, Default)]
pub(crate) struct AddressFilter {
    enabled: bool,
}

impl AddressFilter {
    pub(crate) fn new(enabled: bool) -> Self {
        Self { enabled }
    }

    fn check(&self, addr: &Multiaddr) -> Result<(), ConnectionDenied> {
        if !self.enabled || allowed_in_open_mode(addr) {
            return Ok(());
        }
        Err(ConnectionDenied::new(NotLocal(addr.clone())))
    }
}

/// The error of a denied connection.
#[derive(Debug)]
struct NotLocal(Multiaddr);

impl fmt::Display for NotLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not a loopback, private or link-local address (open mode)",
            self.0
        )
    }
}

impl std::error::Error for NotLocal {}

impl NetworkBehaviour for AddressFilter {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.check(remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(remote_addr)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(addr)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> bool {
        s.parse::<Multiaddr>()
            .map(|a| allowed_in_open_mode(&a))
            .unwrap_or(false)
    }

    #[test]
    fn local_ranges_only() {
        assert!(ok("/ip4/127.0.0.1/tcp/1"));
        assert!(ok("/ip4/10.1.2.3/tcp/1"));
        assert!(ok("/ip4/172.16.0.1/tcp/1"));
        assert!(ok("/ip4/192.168.1.1/tcp/1"));
        assert!(ok("/ip4/169.254.3.4/tcp/1"));
        assert!(ok("/ip6/::1/tcp/1"));
        assert!(ok("/ip6/fd00::1/tcp/1"));
        assert!(ok("/ip6/fe80::1/tcp/1"));
        assert!(ok("/dns4/seed.example/tcp/1"));
        assert!(!ok("/ip4/8.8.8.8/tcp/1"));
        assert!(!ok("/ip4/172.32.0.1/tcp/1"));
        assert!(!ok("/ip6/2001:db8::1/tcp/1"));
        assert!(!ok("/ip6/::ffff:8.8.8.8/tcp/1"));
    }
}
