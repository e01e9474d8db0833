//! The follower's side of the append streams (`/shoal/raft-append/1`): every stream a leader
//! opens is served by one task, which feeds its AppendEntries, in arrival order, to openraft's
//! pipelined `Raft::stream_append` and writes the results back in the same order.
//!
//! libp2p-stream hands over one new stream at a time and drops one that arrives while another is
//! still waiting to be taken, so the accept loop only counts and spawns. A leader whose stream
//! was dropped sees it closed and opens another (openraft retries).
//!
//! Every frame is checked like any raft RPC ([`super::access::Access`]): a sender that is not a
//! member, or one from another cluster, gets a `Refused` frame after the results it is still owed,
//! and the stream closes. A malformed or oversized frame ends the stream the same way.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;

use futures::channel::{mpsc, oneshot};
use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, SinkExt, StreamExt};
use openraft::errors::Fatal;
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use shoal_discovery::metrics::Direction;
use shoal_discovery::{IncomingStreams, Mesh, PeerId, ShoalStream, Stream};
use tokio::task::{self, JoinSet};

use super::frames::{read_frame_if, write_frame};
use super::messages::{AppendFrame, AppendReply};
use crate::core::Core;
use crate::types::TypeConfig;

/// Append streams served at once per peer at most. A leader holds one for replication and one
/// per heartbeat in flight (one every heartbeat interval, each done in well under one), so more
/// are streams it gave up on; a stream opened beyond this is closed at once, and one peer can
/// never use up the server.
pub(crate) const MAX_STREAMS_PER_PEER: usize = 16;
/// Requests read ahead of openraft at most, per stream.
const READ_AHEAD: usize = 16;

/// Serves the append streams peers open until the mesh stops offering them.
pub(crate) async fn run(core: Arc<Core>, mut incoming: IncomingStreams) {
    let mut streams = JoinSet::new();
    // Whose stream each task serves.
    let mut served: HashMap<task::Id, PeerId> = HashMap::new();
    loop {
        tokio::select! {
            next = incoming.next() => match next {
                Some((peer, stream)) => {
                    if served.values().filter(|p| **p == peer).count() >= MAX_STREAMS_PER_PEER {
                        tracing::warn!(%peer, "too many append streams from one peer; closing a new one");
                        continue;
                    }
                    let handle = streams.spawn(serve(core.clone(), peer, stream));
                    served.insert(handle.id(), peer);
                }
                None => break,
            },
            Some(done) = streams.join_next_with_id(), if !streams.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                served.remove(&id);
            }
        }
    }
    tracing::debug!("append stream server stopped");
}

/// Serves one stream: reads requests until the leader closes it or is refused, and answers
/// every request it took in order.
async fn serve(core: Arc<Core>, peer: PeerId, stream: Stream) {
    // A raft that has not started starts for a peer that may send appends (a leader making this
    // agent a learner); any other peer is refused below as before, without starting it.
    if core.access.allows_peer(&core.raft, &peer).is_ok()
        && let Err(e) = core.raft.start().await
    {
        tracing::warn!(%peer, error = %e, "append stream: raft did not start");
        return;
    }
    let (read, write) = AsyncReadExt::split(stream);
    let (requests, input) = mpsc::channel(READ_AHEAD);
    let (refuse, refusal) = oneshot::channel();
    // Without a started raft the peer is refused at its first frame: its requests are dropped,
    // and the results end only once the reading did (so the refusal is there to be written).
    let results = match core.raft.get() {
        Some(raft) => futures::future::Either::Left(raft.stream_append(input)),
        None => futures::future::Either::Right(input.filter_map(|_| std::future::ready(None))),
    };
    let mut answering = pin!(write_results(results, refusal, write, &core.mesh, peer));
    let reading = read_requests(&core, peer, read, requests, refuse);
    tokio::select! {
        // The leader stopped reading or the stream broke: nothing more can be answered.
        () = &mut answering => return,
        () = reading => {}
    }
    answering.await;
}

/// Forwards each permitted request to openraft; stops at the end of the stream, at a refusal
/// (reported through `refuse`) or when openraft stops taking requests.
async fn read_requests(
    core: &Core,
    peer: PeerId,
    mut read: ReadHalf<Stream>,
    mut requests: mpsc::Sender<AppendEntriesRequest<TypeConfig>>,
    refuse: oneshot::Sender<String>,
) {
    loop {
        // Who may send is known before the frame's body is read into memory.
        let admit = |_len| {
            core.access
                .allows_peer(&core.raft, &peer)
                .map_err(|why| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why))
        };
        let frame = match read_frame_if::<_, AppendFrame, _>(&mut read, admit).await {
            Ok(Some((frame, bytes))) => {
                core.mesh
                    .count_stream_message(ShoalStream::RaftAppend, Direction::In, bytes);
                frame
            }
            Ok(None) => return,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                tracing::warn!(%peer, why = %e, "append stream refused before reading a frame");
                core.refusals.count("append", "not_member");
                let _ = refuse.send(e.to_string());
                return;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "malformed append frame");
                core.refusals.count("append", "malformed");
                let _ = refuse.send(format!("malformed frame: {e}"));
                return;
            }
        };
        let cluster = frame.cluster_id.as_deref();
        if let Err(why) = core
            .access
            .allows(&core.raft, &peer, cluster, frame.proof.as_ref())
        {
            tracing::warn!(%peer, %why, "append stream refused");
            core.refusals.count("append", why.label());
            let _ = refuse.send(why.to_string());
            return;
        }
        if requests.send(frame.request).await.is_err() {
            return;
        }
    }
}

/// Writes each result as it comes (flushing when no other is ready), then the refusal if there
/// is one, and closes the stream.
async fn write_results(
    results: impl futures::Stream<Item = Result<StreamAppendResult<TypeConfig>, Fatal<TypeConfig>>>,
    refusal: oneshot::Receiver<String>,
    mut write: WriteHalf<Stream>,
    mesh: &Mesh,
    peer: PeerId,
) {
    let mut results = pin!(results);
    let mut next = results.next().await;
    while let Some(result) = next {
        let reply = match result {
            Ok(result) => AppendReply::Result(result),
            Err(fatal) => AppendReply::Refused(format!("raft stopped: {fatal}")),
        };
        match write_frame(&mut write, &reply).await {
            Ok(bytes) => mesh.count_stream_message(ShoalStream::RaftAppend, Direction::Out, bytes),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "append stream write failed");
                return;
            }
        }
        next = match results.next().now_or_never() {
            Some(ready) => ready,
            None => {
                if write.flush().await.is_err() {
                    return;
                }
                results.next().await
            }
        };
    }
    // The results end after the input did (a refusal is then already sent) or at a conflict or
    // higher vote (no refusal): never wait for one.
    let mut refusal = refusal;
    if let Ok(Some(why)) = refusal.try_recv()
        && let Ok(bytes) = write_frame(&mut write, &AppendReply::Refused(why)).await
    {
        mesh.count_stream_message(ShoalStream::RaftAppend, Direction::Out, bytes);
    }
    let _ = write.close().await;
}
