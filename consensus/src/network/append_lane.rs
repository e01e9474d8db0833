//! The leader's side of one append stream (`/shoal/raft-append/1`): a long-lived, ordered byte
//! stream to one follower that carries AppendEntries frames one way and their results, in the
//! same order, the other way.
//!
//! Order is what makes pipelining safe: the follower takes requests in the order they were sent,
//! so several may be in flight, each starting where the one before it ends. Each message costs a
//! frame on an open stream, not a new substream, a protocol negotiation and a hop through the
//! mesh's event loop.
//!
//! Two tasks own the stream's halves. The writer takes requests from [`AppendLane::send`],
//! notes who awaits each answer (in sending order) and writes the frames, flushing once per burst.
//! The reader hands each result frame to the oldest waiter. Dropping the lane stops both and
//! closes the stream; a waiter whose answer never comes gets an error.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use openraft::base::BoxStream;
use openraft::errors::{NetworkError, RPCError, Unreachable};
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use shoal_discovery::metrics::Direction;
use shoal_discovery::{Mesh, OpenStreamError, PeerId, ShoalStream, Stream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::frames::{read_frame, write_frame};
use super::messages::{AppendFrame, AppendReply};
use crate::token::Proof;
use crate::types::TypeConfig;

/// Requests queued for the writer at most; the sender keeps fewer than this in flight.
pub(crate) const LANE_QUEUE: usize = 32;

/// The answer to one request.
pub(crate) type LaneReply = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;
type Waiter = oneshot::Sender<LaneReply>;

/// An open append stream to one follower.
pub(crate) struct AppendLane {
    requests: mpsc::Sender<(AppendEntriesRequest<TypeConfig>, Waiter)>,
    writer: JoinHandle<()>,
    reader: JoinHandle<()>,
    ttl: Duration,
    usage: Arc<Usage>,
}

/// What the lane's requests left behind: a lane may carry another session only when every
/// request it took was answered with a match, so no late answer can meet a new request.
#[derive(Debug, Default)]
struct Usage {
    unanswered: AtomicUsize,
    spoiled: AtomicBool,
}

impl Drop for AppendLane {
    fn drop(&mut self) {
        self.writer.abort();
        self.reader.abort();
    }
}

fn network_error(msg: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(msg.to_string()))
}

impl AppendLane {
    /// Opens an append stream to `peer`; each frame carries `cluster_id` and `proof`, and each
    /// answer must arrive within `ttl` of its request.
    pub(crate) async fn open(
        mesh: &Mesh,
        peer: PeerId,
        cluster_id: Option<String>,
        proof: Option<Proof>,
        ttl: Duration,
    ) -> Result<AppendLane, RPCError<TypeConfig>> {
        let opening = mesh.open_stream(peer, ShoalStream::RaftAppend);
        let stream = match tokio::time::timeout(ttl, opening).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e @ OpenStreamError::Unreachable { .. })) => {
                return Err(RPCError::Unreachable(Unreachable::from_string(
                    e.to_string(),
                )));
            }
            Ok(Err(e)) => return Err(network_error(e)),
            Err(_) => {
                return Err(RPCError::Unreachable(Unreachable::from_string(format!(
                    "no append stream to {peer} within {ttl:?}"
                ))));
            }
        };
        let (read, write) = AsyncReadExt::split(stream);
        let (requests, incoming) = mpsc::channel(LANE_QUEUE);
        let (waiting, waiters) = mpsc::channel(LANE_QUEUE);
        let writer = tokio::spawn(write_requests(
            write,
            incoming,
            waiting,
            (cluster_id, proof),
            mesh.clone(),
        ));
        let reader = tokio::spawn(read_replies(read, waiters, peer, mesh.clone()));
        Ok(AppendLane {
            requests,
            writer,
            reader,
            ttl,
            usage: Arc::default(),
        })
    }

    /// Whether the stream is still open and every request it took was answered with a match:
    /// then another session may use it.
    pub(crate) fn is_reusable(&self) -> bool {
        !self.usage.spoiled.load(Ordering::Acquire)
            && self.usage.unanswered.load(Ordering::Acquire) == 0
            && !self.reader.is_finished()
            && !self.writer.is_finished()
    }

    /// Queues `request` and returns its answer to come (an error when the stream fails, closes
    /// or stays silent past the lane's ttl).
    pub(crate) fn send(
        &self,
        request: AppendEntriesRequest<TypeConfig>,
    ) -> impl Future<Output = LaneReply> + Send + use<> {
        let (tx, rx) = oneshot::channel();
        let queued = self.requests.try_send((request, tx));
        if queued.is_ok() {
            // Counted now: a request whose answer is never awaited stays unanswered.
            self.usage.unanswered.fetch_add(1, Ordering::AcqRel);
        }
        let ttl = self.ttl;
        let usage = self.usage.clone();
        async move {
            queued.map_err(|_| network_error("append stream closed or full"))?;
            let reply = match tokio::time::timeout(ttl, rx).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(_)) => Err(network_error("append stream closed")),
                Err(_) => Err(network_error(format!("no answer within {ttl:?}"))),
            };
            if matches!(reply, Ok(Ok(_))) {
                usage.unanswered.fetch_sub(1, Ordering::AcqRel);
            } else {
                usage.spoiled.store(true, Ordering::Release);
            }
            reply
        }
    }
}

/// At most one append stream kept open between sessions to the same follower: openraft starts a
/// session per heartbeat (and per probe), and each would otherwise open, negotiate and close a
/// stream of its own.
#[derive(Default)]
pub(crate) struct IdleLane(std::sync::Mutex<Option<AppendLane>>);

impl IdleLane {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<AppendLane>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The kept stream, if it is still fit for another session.
    pub(crate) fn take(&self) -> Option<AppendLane> {
        self.slot().take().filter(AppendLane::is_reusable)
    }

    /// Keeps `lane` for the next session when it is fit for one (else it closes).
    pub(crate) fn put(&self, lane: AppendLane) {
        if lane.is_reusable() {
            *self.slot() = Some(lane);
        }
    }
}

/// `results`, and once they end (the session's input ended and every request was answered),
/// `lane` goes back to `idle` for the next session, unless another holder still has it.
pub(crate) fn returning_lane<'s, T: Send + 's>(
    results: BoxStream<'s, T>,
    lane: Arc<AppendLane>,
    idle: &'s IdleLane,
) -> BoxStream<'s, T> {
    let give_back = futures::stream::once(async move {
        if let Ok(lane) = Arc::try_unwrap(lane) {
            idle.put(lane);
        }
    })
    .filter_map(|()| async { None });
    Box::pin(results.chain(give_back))
}

/// Writes queued requests in order, registering each one's waiter before its frame goes out.
async fn write_requests(
    mut write: WriteHalf<Stream>,
    mut incoming: mpsc::Receiver<(AppendEntriesRequest<TypeConfig>, Waiter)>,
    waiting: mpsc::Sender<Waiter>,
    (cluster_id, proof): (Option<String>, Option<Proof>),
    mesh: Mesh,
) {
    while let Some(first) = incoming.recv().await {
        let mut next = Some(first);
        while let Some((request, waiter)) = next.take() {
            let frame = AppendFrame {
                cluster_id: cluster_id.clone(),
                proof: proof.clone(),
                request,
            };
            if waiting.send(waiter).await.is_err() {
                return;
            }
            match write_frame(&mut write, &frame).await {
                Ok(bytes) => {
                    mesh.count_stream_message(ShoalStream::RaftAppend, Direction::Out, bytes)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "append stream write failed");
                    return;
                }
            }
            next = incoming.try_recv().ok();
        }
        if let Err(e) = write.flush().await {
            tracing::debug!(error = %e, "append stream flush failed");
            return;
        }
    }
    let _ = write.close().await;
}

/// Hands each result frame to the oldest waiter, until the stream ends or is refused.
async fn read_replies(
    mut read: ReadHalf<Stream>,
    mut waiters: mpsc::Receiver<Waiter>,
    peer: PeerId,
    mesh: Mesh,
) {
    loop {
        let reply = match read_frame::<_, AppendReply>(&mut read).await {
            Ok(Some((reply, bytes))) => {
                mesh.count_stream_message(ShoalStream::RaftAppend, Direction::In, bytes);
                reply
            }
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "append stream read failed");
                return;
            }
        };
        // The writer registers each waiter before its frame goes out: a result with nobody
        // waiting answers nothing that was sent.
        let Ok(waiter) = waiters.try_recv() else {
            tracing::warn!(%peer, "unsolicited append result; closing the stream");
            return;
        };
        match reply {
            AppendReply::Result(result) => {
                let _ = waiter.send(Ok(result));
            }
            AppendReply::Refused(why) => {
                tracing::debug!(%peer, why, "append stream refused");
                let _ = waiter.send(Err(network_error(format!("refused: {why}"))));
                return;
            }
        }
    }
}
