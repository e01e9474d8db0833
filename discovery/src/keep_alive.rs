//! [`KeepAlive`]: keeps the connections to chosen peers open while they idle.
//!
//! libp2p closes a connection once no behaviour needs it for the idle timeout. The overlay
//! (each agent's ring neighbours, see `overlay`) must stay connected even when no request is in
//! flight: it carries the liveness pings and the gossip. This behaviour opens no streams; its
//! handler only answers "keep me alive" for connections to pinned peers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound, FullyNegotiatedOutbound};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};

/// Keeps the connections to pinned peers open.
#[derive(Default)]
pub(crate) struct KeepAlive {
    pinned: HashSet<PeerId>,
    connections: HashMap<PeerId, HashSet<ConnectionId>>,
    notices: VecDeque<(PeerId, ConnectionId, bool)>,
}

impl KeepAlive {
    /// Makes the pinned set exactly `peers`; connections that left the set may idle out again.
    pub(crate) fn set_pinned(&mut self, peers: HashSet<PeerId>) {
        for peer in self.pinned.symmetric_difference(&peers) {
            let keep = peers.contains(peer);
            for connection in self.connections.get(peer).into_iter().flatten() {
                self.notices.push_back((*peer, *connection, keep));
            }
        }
        self.pinned = peers;
    }

    fn handler_for(&mut self, peer: PeerId, connection: ConnectionId) -> Handler {
        self.connections.entry(peer).or_default().insert(connection);
        Handler {
            keep: self.pinned.contains(&peer),
        }
    }
}

impl NetworkBehaviour for KeepAlive {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler_for(peer, connection))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler_for(peer, connection))
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(closed) = event
            && let Some(set) = self.connections.get_mut(&closed.peer_id)
        {
            set.remove(&closed.connection_id);
            if set.is_empty() {
                self.connections.remove(&closed.peer_id);
            }
        }
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.notices.pop_front() {
            Some((peer_id, connection, keep)) => Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(connection),
                event: keep,
            }),
            None => Poll::Pending,
        }
    }
}

/// The per-connection half: keeps its connection alive while told to.
pub(crate) struct Handler {
    keep: bool,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = bool;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep
    }

    fn on_behaviour_event(&mut self, keep: bool) {
        self.keep = keep;
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol, ..
            }) => match protocol {},
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol, ..
            }) => match protocol {},
            _ => {}
        }
    }
}
