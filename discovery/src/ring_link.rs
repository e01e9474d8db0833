//! [`RingLinks`]: the links of this agent's ring neighbours (see `overlay`).
//!
//! libp2p closes a connection once no behaviour needs it for the idle timeout, but the
//! overlay's links must stay open even when no request is in flight: they carry the gossip and
//! the watchers' pings. This behaviour keeps the neighbours' connections alive, and pings only
//! the members this agent watches, over one long-lived `/shoal/link/1` stream per connection
//! (8 bytes echoed). libp2p's ping would instead ping every connection from both ends, which
//! costs several times more than the watching needs. Every connection answers pings.

use std::collections::{HashMap, HashSet, VecDeque};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use std::{fmt, io};

use futures::future::{BoxFuture, Either};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use futures_timer::Delay;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::ReadyUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, NotifyHandler, Stream, StreamUpgradeError, SubstreamProtocol, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{PeerId, StreamProtocol};

use crate::protocol::LINK_PROTOCOL;

/// Size of a ping (and of its echo).
const PING_BYTES: usize = 8;

/// What a connection is to the overlay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LinkRole {
    /// Kept open while idle (any ring neighbour).
    pub keep: bool,
    /// Pinged from this end (a member this agent watches).
    pub watch: bool,
}

/// One ping's outcome on a watched member's connection.
#[derive(Debug)]
pub(crate) struct LinkEvent {
    /// The watched member.
    pub peer: PeerId,
    /// The round trip, or why the ping failed.
    pub result: Result<Duration, LinkFailure>,
}

/// Why a ping failed.
#[derive(Debug)]
pub(crate) enum LinkFailure {
    /// No echo within the timeout.
    Timeout,
    /// The peer does not speak [`LINK_PROTOCOL`].
    Unsupported,
    /// The stream broke.
    Io(io::Error),
}

impl fmt::Display for LinkFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("no echo in time"),
            Self::Unsupported => write!(f, "the peer does not speak {LINK_PROTOCOL}"),
            Self::Io(e) => write!(f, "link stream failed: {e}"),
        }
    }
}

/// Keeps the ring neighbours' connections open and pings the watched members.
pub(crate) struct RingLinks {
    interval: Duration,
    timeout: Duration,
    keep: HashSet<PeerId>,
    watch: HashSet<PeerId>,
    connections: HashMap<PeerId, HashSet<ConnectionId>>,
    notices: VecDeque<(PeerId, ConnectionId, LinkRole)>,
    events: VecDeque<LinkEvent>,
}

impl RingLinks {
    /// Pings every `interval`; a ping without an echo within `timeout` fails.
    pub(crate) fn new(interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            keep: HashSet::new(),
            watch: HashSet::new(),
            connections: HashMap::new(),
            notices: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Makes `keep` the peers whose connections stay open and `watch` those pinged from here;
    /// connections of peers that left both sets may idle out again.
    pub(crate) fn set_links(&mut self, keep: HashSet<PeerId>, watch: HashSet<PeerId>) {
        let touched: HashSet<PeerId> = self
            .keep
            .symmetric_difference(&keep)
            .chain(self.watch.symmetric_difference(&watch))
            .copied()
            .collect();
        self.keep = keep;
        self.watch = watch;
        for peer in touched {
            let role = self.role_of(&peer);
            for connection in self.connections.get(&peer).into_iter().flatten() {
                self.notices.push_back((peer, *connection, role));
            }
        }
    }

    fn role_of(&self, peer: &PeerId) -> LinkRole {
        LinkRole {
            keep: self.keep.contains(peer),
            watch: self.watch.contains(peer),
        }
    }

    fn handler_for(&mut self, peer: PeerId, connection: ConnectionId) -> Handler {
        self.connections.entry(peer).or_default().insert(connection);
        Handler::new(self.role_of(&peer), self.interval, self.timeout)
    }
}

impl NetworkBehaviour for RingLinks {
    type ConnectionHandler = Handler;
    type ToSwarm = LinkEvent;

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
        peer: PeerId,
        _: ConnectionId,
        result: THandlerOutEvent<Self>,
    ) {
        self.events.push_back(LinkEvent { peer, result });
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
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ToSwarm::GenerateEvent(event));
        }
        match self.notices.pop_front() {
            Some((peer_id, connection, role)) => Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(connection),
                event: role,
            }),
            None => Poll::Pending,
        }
    }
}

type PingFuture = BoxFuture<'static, Result<(Stream, Duration), LinkFailure>>;
type EchoFuture = BoxFuture<'static, io::Result<Stream>>;

/// The outbound half of a connection's link.
enum Outbound {
    /// No stream; one is opened when the next ping is due.
    Closed,
    /// A stream was requested.
    Opening,
    /// The stream waits for the next ping.
    Idle(Stream),
    /// A ping is in flight.
    Pinging(PingFuture),
    /// The peer does not speak the protocol: nothing more to do.
    Unsupported,
}

/// The per-connection half: keeps its connection alive while told to, pings while watching,
/// and echoes the peer's pings.
pub(crate) struct Handler {
    role: LinkRole,
    interval: Duration,
    timeout: Duration,
    next_ping: Delay,
    outbound: Outbound,
    inbound: Option<EchoFuture>,
    failures: VecDeque<LinkFailure>,
}

impl Handler {
    fn new(role: LinkRole, interval: Duration, timeout: Duration) -> Self {
        Self {
            role,
            interval,
            timeout,
            next_ping: Delay::new(Duration::ZERO),
            outbound: Outbound::Closed,
            inbound: None,
            failures: VecDeque::new(),
        }
    }

    fn protocol() -> SubstreamProtocol<ReadyUpgrade<StreamProtocol>> {
        SubstreamProtocol::new(ReadyUpgrade::new(StreamProtocol::new(LINK_PROTOCOL)), ())
    }

    /// Answers the peer's pings; a stream that broke is dropped (the peer opens another).
    fn poll_inbound(&mut self, cx: &mut Context<'_>) {
        while let Some(echo) = self.inbound.as_mut()
            && let Poll::Ready(result) = echo.poll_unpin(cx)
        {
            // The next echo is polled at once, so that it waits for the next ping.
            self.inbound = match result {
                Ok(stream) => Some(echo_once(stream).boxed()),
                Err(e) => {
                    tracing::trace!(%e, "inbound link stream closed");
                    None
                }
            };
        }
    }

    /// Drives the outbound pings; returns what to tell the behaviour or the connection.
    fn poll_outbound(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Option<
        ConnectionHandlerEvent<ReadyUpgrade<StreamProtocol>, (), Result<Duration, LinkFailure>>,
    > {
        if let Some(failure) = self.failures.pop_front() {
            return Some(ConnectionHandlerEvent::NotifyBehaviour(Err(failure)));
        }
        loop {
            match std::mem::replace(&mut self.outbound, Outbound::Closed) {
                Outbound::Pinging(mut ping) => match ping.poll_unpin(cx) {
                    Poll::Pending => {
                        self.outbound = Outbound::Pinging(ping);
                        return None;
                    }
                    Poll::Ready(result) => {
                        self.next_ping.reset(self.interval);
                        let event = match result {
                            Ok((stream, rtt)) => {
                                self.outbound = Outbound::Idle(stream);
                                Ok(rtt)
                            }
                            Err(failure) => Err(failure),
                        };
                        return Some(ConnectionHandlerEvent::NotifyBehaviour(event));
                    }
                },
                idle_or_closed @ (Outbound::Idle(_) | Outbound::Closed) => {
                    if !self.role.watch || self.next_ping.poll_unpin(cx).is_pending() {
                        self.outbound = idle_or_closed;
                        return None;
                    }
                    match idle_or_closed {
                        Outbound::Idle(stream) => {
                            self.outbound = Outbound::Pinging(ping(stream, self.timeout).boxed());
                        }
                        _ => {
                            self.outbound = Outbound::Opening;
                            return Some(ConnectionHandlerEvent::OutboundSubstreamRequest {
                                protocol: Self::protocol(),
                            });
                        }
                    }
                }
                state @ (Outbound::Opening | Outbound::Unsupported) => {
                    self.outbound = state;
                    return None;
                }
            }
        }
    }

    fn on_dial_upgrade_error(&mut self, error: StreamUpgradeError<std::convert::Infallible>) {
        self.next_ping.reset(self.interval);
        self.outbound = Outbound::Closed;
        let failure = match error {
            StreamUpgradeError::NegotiationFailed => {
                self.outbound = Outbound::Unsupported;
                LinkFailure::Unsupported
            }
            StreamUpgradeError::Timeout => LinkFailure::Timeout,
            StreamUpgradeError::Apply(never) => match never {},
            StreamUpgradeError::Io(e) => LinkFailure::Io(e),
        };
        self.failures.push_back(failure);
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = LinkRole;
    type ToBehaviour = Result<Duration, LinkFailure>;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        Self::protocol()
    }

    fn connection_keep_alive(&self) -> bool {
        self.role.keep
    }

    fn on_behaviour_event(&mut self, role: LinkRole) {
        if role.watch && !self.role.watch {
            // Start judging at once rather than after a stale interval.
            self.next_ping.reset(Duration::ZERO);
        }
        if !role.watch && matches!(self.outbound, Outbound::Pinging(_) | Outbound::Idle(_)) {
            self.outbound = Outbound::Closed;
        }
        self.role = role;
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        self.poll_inbound(cx);
        match self.poll_outbound(cx) {
            Some(event) => Poll::Ready(event),
            None => Poll::Pending,
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: mut stream,
                ..
            }) => {
                stream.ignore_for_keep_alive();
                // One echo stream per connection: a newer one replaces the old.
                self.inbound = Some(echo_once(stream).boxed());
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: mut stream,
                ..
            }) => {
                stream.ignore_for_keep_alive();
                self.outbound = if self.role.watch {
                    Outbound::Pinging(ping(stream, self.timeout).boxed())
                } else {
                    Outbound::Closed
                };
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                self.on_dial_upgrade_error(error)
            }
            _ => {}
        }
    }
}

/// Sends one ping on `stream` and waits for its echo, at most `timeout`.
async fn ping(mut stream: Stream, timeout: Duration) -> Result<(Stream, Duration), LinkFailure> {
    let nonce: [u8; PING_BYTES] = rand_nonce();
    let started = Instant::now();
    let exchange = async move {
        stream.write_all(&nonce).await?;
        stream.flush().await?;
        let mut echo = [0u8; PING_BYTES];
        stream.read_exact(&mut echo).await?;
        if echo != nonce {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "wrong echo"));
        }
        Ok(stream)
    };
    futures::pin_mut!(exchange);
    match futures::future::select(exchange, Delay::new(timeout)).await {
        Either::Left((Ok(stream), _)) => Ok((stream, started.elapsed())),
        Either::Left((Err(e), _)) => Err(LinkFailure::Io(e)),
        Either::Right(_) => Err(LinkFailure::Timeout),
    }
}

/// Echoes one ping back on `stream`.
async fn echo_once(mut stream: Stream) -> io::Result<Stream> {
    let mut buf = [0u8; PING_BYTES];
    stream.read_exact(&mut buf).await?;
    stream.write_all(&buf).await?;
    stream.flush().await?;
    Ok(stream)
}

/// A nonce that tells this ping's echo from a stale one: the clock's low bits are enough.
fn rand_nonce() -> [u8; PING_BYTES] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos.to_le_bytes()
}
