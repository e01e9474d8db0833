//! The sending side: openraft's `RaftNetworkV2`. AppendEntries (and heartbeats) go on append
//! streams ([`super::append_lane`]); votes, snapshot pieces and leader transfers are requests
//! over `Mesh::request` on `/shoal/raft/1`.
//!
//! Failures are classified for openraft: a peer the mesh cannot connect to is `Unreachable`
//! (openraft backs off), anything else is a `NetworkError` (openraft retries). Snapshots are sent
//! in [`SNAPSHOT_CHUNK_BYTES`] pieces, never as one message.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::RaftNetworkV2;
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendError,
    StreamAppendResult, TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use shoal_discovery::{Mesh, PeerId, RequestError, ShoalProtocol};

use super::access::Access;
use super::append_lane::{AppendLane, IdleLane, returning_lane};
use super::messages::{Envelope, RaftRequest, RaftResponse, SnapshotChunk};
use crate::codec::{decode_bounded, encode_bounded};
use crate::limits::{MAX_RPC_BYTES, SNAPSHOT_CHUNK_BYTES};
use crate::storage::state_machine::{Snapshot, SnapshotData};
use crate::types::{LogId, RaftId, RaftNode, TypeConfig, Vote};

/// Why one raft request over the mesh failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// The mesh could not connect to the peer.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Anything else: timeout, refused, malformed, oversized.
    #[error("{0}")]
    Other(String),
}

impl SendError {
    fn into_rpc(self) -> RPCError<TypeConfig> {
        match self {
            SendError::Unreachable(m) => RPCError::Unreachable(Unreachable::from_string(m)),
            SendError::Other(m) => RPCError::Network(NetworkError::from_string(m)),
        }
    }
}

/// Sends one request to `peer` and decodes the response (bounded both ways). `access` gives
/// the cluster id and the manager proof the request carries.
pub(crate) async fn send(
    mesh: &Mesh,
    access: &Access,
    peer: PeerId,
    body: RaftRequest,
) -> Result<RaftResponse, SendError> {
    let envelope = Envelope {
        cluster_id: access.cluster_id(),
        proof: access.proof_for(&peer),
        body,
    };
    send_envelope(mesh, peer, envelope).await
}

/// Sends one envelope to `peer` and decodes the response (bounded both ways).
pub(crate) async fn send_envelope(
    mesh: &Mesh,
    peer: PeerId,
    envelope: Envelope,
) -> Result<RaftResponse, SendError> {
    let bytes = encode_bounded(&envelope, MAX_RPC_BYTES).map_err(|e| {
        tracing::warn!(%peer, error = %e, "oversized raft request not sent");
        SendError::Other(e.to_string())
    })?;
    let reply = mesh
        .request(peer, ShoalProtocol::Raft, bytes)
        .await
        .map_err(|e| match e {
            RequestError::Unreachable(m) => SendError::Unreachable(m),
            RequestError::Closed => SendError::Unreachable("mesh closed".to_owned()),
            RequestError::TooLarge { size, limit } => {
                tracing::warn!(%peer, size, limit, "raft request exceeds the mesh limit");
                SendError::Other(format!("request of {size} bytes exceeds {limit}"))
            }
            other => SendError::Other(other.to_string()),
        })?;
    decode_bounded(&reply, MAX_RPC_BYTES).map_err(|e| SendError::Other(e.to_string()))
}

/// Makes one [`RaftPeer`] per target.
#[derive(Clone)]
pub(crate) struct NetworkFactory {
    pub(crate) mesh: Mesh,
    pub(crate) access: Arc<Access>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: RaftId, node: &RaftNode) -> RaftPeer {
        let peer = PeerId::from_str(&node.peer_id).ok();
        if peer.is_none() {
            tracing::warn!(target, peer_id = %node.peer_id, "raft member with an invalid PeerId");
        }
        RaftPeer {
            mesh: self.mesh.clone(),
            access: self.access.clone(),
            target,
            peer,
            idle: IdleLane::default(),
        }
    }
}

/// The connection to one raft member.
pub(crate) struct RaftPeer {
    mesh: Mesh,
    access: Arc<Access>,
    target: RaftId,
    peer: Option<PeerId>,
    /// The append stream the last session left open, for the next one.
    idle: IdleLane,
}

static STREAM_IDS: AtomicU64 = AtomicU64::new(1);

/// Smallest timeout of an AppendEntries or snapshot piece.
const MIN_DATA_TTL: std::time::Duration = std::time::Duration::from_secs(3);

impl RaftPeer {
    /// The append stream a previous session left open, or a new one.
    async fn lane(&self, option: &RPCOption) -> Result<AppendLane, RPCError<TypeConfig>> {
        match self.idle.take() {
            Some(lane) => Ok(lane),
            None => self.open_lane(option).await,
        }
    }

    /// Opens an append stream to this member.
    async fn open_lane(&self, option: &RPCOption) -> Result<AppendLane, RPCError<TypeConfig>> {
        let Some(peer) = self.peer else {
            return Err(RPCError::Unreachable(Unreachable::from_string(
                "invalid PeerId",
            )));
        };
        // openraft gives AppendEntries the heartbeat interval as TTL; a follower answers only
        // after its fsync, which on a busy disk takes longer. Timing out would resend the same
        // entries forever, so each answer may take MIN_DATA_TTL.
        let ttl = option.hard_ttl().max(MIN_DATA_TTL);
        let proof = self.access.proof_for(&peer);
        AppendLane::open(&self.mesh, peer, self.access.cluster_id(), proof, ttl).await
    }

    async fn call(
        &self,
        body: RaftRequest,
        option: &RPCOption,
    ) -> Result<RaftResponse, RPCError<TypeConfig>> {
        let Some(peer) = self.peer else {
            return Err(RPCError::Unreachable(Unreachable::from_string(
                "invalid PeerId",
            )));
        };
        // A follower answers a snapshot piece only after writing it, which on a busy disk takes
        // longer than openraft's TTL: pieces get at least MIN_DATA_TTL (the mesh's own request
        // timeout still bounds them). Votes keep openraft's TTL.
        let ttl = match body {
            RaftRequest::Vote(_) | RaftRequest::PreVote(_) => option.hard_ttl(),
            _ => option.hard_ttl().max(MIN_DATA_TTL),
        };
        let sent = send(&self.mesh, &self.access, peer, body);
        match tokio::time::timeout(ttl, sent).await {
            Ok(r) => r.map_err(SendError::into_rpc),
            Err(_) => Err(RPCError::Network(NetworkError::from_string(format!(
                "no answer from {} within {ttl:?}",
                self.target
            )))),
        }
    }
}

fn unexpected(r: RaftResponse) -> RPCError<TypeConfig> {
    let msg = match r {
        RaftResponse::Refused(why) => format!("refused: {why}"),
        other => format!("unexpected response: {other:?}"),
    };
    RPCError::Network(NetworkError::from_string(msg))
}

impl RaftNetworkV2<TypeConfig> for RaftPeer {
    type SnapshotData = SnapshotData;

    /// One AppendEntries on an append stream of its own (openraft sends its appends and
    /// heartbeats through [`Self::stream_append`]; this is the single-request form).
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let last = super::stream::ends_at(&rpc);
        let lane = self.lane(&option).await?;
        let reply = lane.send(rpc).await?;
        self.idle.put(lane);
        Ok(as_response(reply, last))
    }

    /// See [`super::stream`]: pipelined entries, commit updates riding along; the stream is kept
    /// for the next session when this one ends cleanly.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>>
            + openraft::OptionalSend
            + Unpin
            + 'static,
    {
        let peer: &'s RaftPeer = self;
        Box::pin(async move {
            let lane = Arc::new(peer.lane(&option).await?);
            let sending = lane.clone();
            let results = super::stream::append_stream(input, move |rpc| sending.send(rpc));
            Ok(returning_lane(results, lane, &peer.idle))
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(RaftRequest::Vote(rpc), &option).await? {
            RaftResponse::Vote(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(RaftRequest::PreVote(rpc), &option).await? {
            RaftResponse::Vote(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(RaftRequest::TransferLeader(req), &option).await? {
            RaftResponse::TransferLeader(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        use tokio::io::AsyncReadExt as _;
        let stream = STREAM_IDS.fetch_add(1, Ordering::Relaxed);
        let file = snapshot.snapshot;
        let total = file.len;
        let unreadable = |e: std::io::Error| {
            StreamingError::from(RPCError::Network(NetworkError::from_string(format!(
                "snapshot file {}: {e}",
                file.path.display()
            ))))
        };
        // Read in pieces: never more than one piece of the snapshot in memory here.
        let mut reader = tokio::fs::File::open(&file.path)
            .await
            .map_err(&unreadable)?;
        let mut cancel = std::pin::pin!(cancel);
        let mut offset = 0u64;
        loop {
            let want = SNAPSHOT_CHUNK_BYTES.min(usize::try_from(total - offset).unwrap_or(0));
            let mut data = vec![0u8; want];
            reader.read_exact(&mut data).await.map_err(&unreadable)?;
            let end = offset + want as u64;
            let done = end == total;
            let chunk = SnapshotChunk {
                stream,
                vote,
                meta: snapshot.meta.clone(),
                offset,
                total,
                data,
                done,
            };
            let reply = tokio::select! {
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                r = self.call(RaftRequest::SnapshotChunk(chunk), &option) => r?,
            };
            match (reply, done) {
                (RaftResponse::Snapshot(r), _) => return Ok(r),
                (RaftResponse::ChunkAccepted, false) => offset = end,
                (other, _) => return Err(unexpected(other).into()),
            }
        }
    }
}

/// A stream result as the answer to one request that ends at `last`.
fn as_response(
    result: StreamAppendResult<TypeConfig>,
    last: Option<LogId>,
) -> AppendEntriesResponse<TypeConfig> {
    match result {
        Ok(matched) if matched == last => AppendEntriesResponse::Success,
        Ok(matched) => AppendEntriesResponse::PartialSuccess(matched),
        Err(StreamAppendError::Conflict(_)) => AppendEntriesResponse::Conflict,
        Err(StreamAppendError::HigherVote(vote)) => AppendEntriesResponse::HigherVote(vote),
    }
}

#[cfg(test)]
mod tests {
    use openraft::vote::RaftLeaderIdExt;

    use super::*;

    fn log_id(index: u64) -> LogId {
        type Leader = <TypeConfig as openraft::RaftTypeConfig>::LeaderId;
        LogId::new(Leader::new_committed(1, 1), index)
    }

    #[test]
    fn stream_results_map_to_single_responses() {
        let last = Some(log_id(5));
        assert_eq!(as_response(Ok(last), last), AppendEntriesResponse::Success);
        assert_eq!(
            as_response(Ok(Some(log_id(3))), last),
            AppendEntriesResponse::PartialSuccess(Some(log_id(3)))
        );
        assert_eq!(
            as_response(Err(StreamAppendError::Conflict(log_id(4))), last),
            AppendEntriesResponse::Conflict
        );
        let higher = Vote::new_committed(2, 7);
        assert_eq!(
            as_response(Err(StreamAppendError::HigherVote(higher)), last),
            AppendEntriesResponse::HigherVote(higher)
        );
    }
}
