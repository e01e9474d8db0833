//! [`Mesh`]: the cheap, cloneable handle every other subsystem holds. Each method sends one
//! [`Command`] to the event loop over a bounded channel and awaits the answer on a oneshot.

use std::time::Duration;

use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::error::{MeshError, OpenStreamError, RequestError};
use crate::membership::{Member, MembershipChange, NodeInfo};
use crate::metrics::{Direction, MeshMetrics, TrafficTotals};
use crate::protocol::{ShoalProtocol, ShoalStream};
use crate::streams::{IncomingStreams, Stream, StreamLeases};

/// How long opening a stream may take, connecting included. libp2p's stream behaviour can leave
/// an opening waiting for ever (it drops its dial request while another is queued, and does not
/// pass on every kind of dial failure): no caller should.
pub const OPEN_STREAM_LIMIT: Duration = Duration::from_secs(10);

/// A command to the event loop.
pub(crate) enum Command {
    Request {
        peer: PeerId,
        protocol: ShoalProtocol,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, RequestError>>,
    },
    Respond {
        protocol: ShoalProtocol,
        channel: ResponseChannel<Vec<u8>>,
        payload: Vec<u8>,
    },
    Serve {
        protocol: ShoalProtocol,
        reply: oneshot::Sender<Result<mpsc::Receiver<InboundRequest>, MeshError>>,
    },
    Members {
        reply: oneshot::Sender<Vec<Member>>,
    },
    SetLocalInfo {
        info: NodeInfo,
        reply: oneshot::Sender<()>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    ConnectedPeers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Handle to one agent's mesh. Cloning is shallow: every clone talks to the same event loop.
#[derive(Clone)]
pub struct Mesh {
    pub(crate) peer_id: PeerId,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) changes: broadcast::Sender<MembershipChange>,
    pub(crate) metrics: MeshMetrics,
    pub(crate) task: AbortHandle,
    /// Opens and accepts [`ShoalStream`]s without a hop through the event loop.
    pub(crate) streams: libp2p_stream::Control,
    /// The peers with streams open, whose connections the event loop keeps.
    pub(crate) leases: StreamLeases,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl Mesh {
    /// This agent's node id.
    pub fn local_peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, MeshError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| MeshError::Closed)?;
        answer.await.map_err(|_| MeshError::Closed)
    }

    /// Opens a long-lived, ordered byte stream of `protocol` to `peer`, connecting first if
    /// needed, within [`OPEN_STREAM_LIMIT`]. The stream is the caller's: it frames, bounds and
    /// times out what it sends, and closes it by dropping it.
    pub async fn open_stream(
        &self,
        peer: PeerId,
        protocol: ShoalStream,
    ) -> Result<Stream, OpenStreamError> {
        let unreachable = |reason: String| OpenStreamError::Unreachable { protocol, reason };
        let mut control = self.streams.clone();
        let opening = control.open_stream(peer, protocol.stream_protocol());
        let opened = tokio::select! {
            opened = tokio::time::timeout(OPEN_STREAM_LIMIT, opening) => opened.map_err(|_| {
                unreachable(format!("no stream within {OPEN_STREAM_LIMIT:?}"))
            })?,
            // A stopped mesh never answers: fail instead of waiting for ever.
            () = self.commands.closed() => {
                return Err(unreachable("the mesh is closed".to_owned()));
            }
        };
        opened
            .map(|stream| Stream::new(stream, self.leases.lease(peer)))
            .map_err(|e| match e {
                libp2p_stream::OpenStreamError::UnsupportedProtocol(_) => {
                    OpenStreamError::Unsupported(protocol)
                }
                other => unreachable(other.to_string()),
            })
    }

    /// The streams of `protocol` that peers open to this agent, with each opener's id. Only one
    /// consumer per protocol; dropping it stops accepting (peers then see
    /// [`OpenStreamError::Unsupported`]).
    pub fn accept_streams(&self, protocol: ShoalStream) -> Result<IncomingStreams, MeshError> {
        let mut control = self.streams.clone();
        control
            .accept(protocol.stream_protocol())
            .map(|incoming| IncomingStreams::new(incoming, self.leases.clone()))
            .map_err(|_| MeshError::AlreadyAccepted(protocol))
    }

    /// Counts one message of `protocol` that a stream carried (`bytes` on the wire, framing
    /// included) in `shoal_mesh_messages_total` and `shoal_mesh_bytes_total`, next to the
    /// request/response traffic the event loop counts.
    pub fn count_stream_message(&self, protocol: ShoalStream, direction: Direction, bytes: usize) {
        self.metrics.message(protocol.into(), direction, bytes);
    }

    /// Sends one request and awaits its response. Errors say whether the peer could not be
    /// reached, timed out, the payload was too large, or the remote failed.
    pub async fn request(
        &self,
        peer: PeerId,
        protocol: ShoalProtocol,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, RequestError> {
        let limit = protocol.max_request_bytes();
        if payload.len() > limit {
            return Err(RequestError::TooLarge {
                size: payload.len(),
                limit,
            });
        }
        let (reply, answer) = oneshot::channel();
        let command = Command::Request {
            peer,
            protocol,
            payload,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| RequestError::Closed)?;
        answer.await.map_err(|_| RequestError::Closed)?
    }

    /// Takes the inbound requests of `protocol` (one consumer per protocol). Requests that
    /// arrive while no consumer is registered, or while its channel is full, are refused.
    pub async fn serve(
        &self,
        protocol: ShoalProtocol,
    ) -> Result<mpsc::Receiver<InboundRequest>, MeshError> {
        self.call(|reply| Command::Serve { protocol, reply })
            .await?
    }

    /// The members as currently seen (alive, suspect, dead, left), in PeerId order.
    pub async fn members(&self) -> Result<Vec<Member>, MeshError> {
        self.call(|reply| Command::Members { reply }).await
    }

    /// Subscribes to the membership changes from now on. A receiver that lags loses the oldest
    /// changes (`RecvError::Lagged`) and should re-read [`Mesh::members`].
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipChange> {
        self.changes.subscribe()
    }

    /// Replaces what this agent announces; the next heartbeat carries it.
    pub async fn set_local_info(&self, info: NodeInfo) -> Result<(), MeshError> {
        self.call(|reply| Command::SetLocalInfo { info, reply })
            .await
    }

    /// Dials an address (e.g. a seed given at run time).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), MeshError> {
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    /// The addresses this agent listens on, with its `/p2p/` id appended.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, MeshError> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }

    /// Peers with at least one open connection.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, MeshError> {
        self.call(|reply| Command::ConnectedPeers { reply }).await
    }

    /// Totals of the mesh's own traffic counters (what `shoal_mesh_messages_total` and
    /// `shoal_mesh_bytes_total` hold).
    pub fn traffic(&self) -> TrafficTotals {
        self.metrics.totals()
    }

    /// Announces Left, closes connections and stops the event loop. Calling it again, or on a
    /// stopped mesh, returns [`MeshError::Closed`].
    pub async fn shutdown(&self) -> Result<(), MeshError> {
        self.call(|reply| Command::Shutdown { reply }).await
    }

    /// Stops the event loop abruptly, without announcing Left: to others this looks like a
    /// crash. For tests and benchmarks.
    pub fn kill(&self) {
        self.task.abort();
    }
}

/// One inbound request of a served protocol.
#[derive(Debug)]
pub struct InboundRequest {
    /// The authenticated remote.
    pub peer: PeerId,
    /// The protocol it arrived on.
    pub protocol: ShoalProtocol,
    /// The request bytes (at most the protocol's request bound).
    pub payload: Vec<u8>,
    pub(crate) responder: Responder,
}

/// Carries a response back to the event loop.
pub(crate) struct Responder {
    pub(crate) channel: ResponseChannel<Vec<u8>>,
    pub(crate) commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder")
    }
}

impl InboundRequest {
    /// Answers the request. Dropping the request instead fails it at the requester. A response
    /// above the protocol's bound is not sent (the requester sees a failure).
    pub fn respond(self, payload: Vec<u8>) {
        let command = Command::Respond {
            protocol: self.protocol,
            channel: self.responder.channel,
            payload,
        };
        let commands = self.responder.commands;
        match commands.try_send(command) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(command)) => {
                // The loop is busy: hand the response over from a task instead of blocking the
                // caller. Outside a runtime there is nowhere to wait, so the response is dropped.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let _ = commands.send(command).await;
                    });
                } else {
                    tracing::warn!("mesh busy and no runtime: dropping a response");
                }
            }
        }
    }
}
