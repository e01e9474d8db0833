//! The receiving side of `/shoal/raft/1`: takes the mesh's inbound raft requests and hands each
//! to its own task (raft is never awaited in the mesh's event loop), checks who may send what,
//! and answers.

use std::sync::Arc;

use shoal_discovery::{InboundRequest, PeerId};
use tokio::sync::mpsc;

use super::chunks::Assembled;
use super::messages::{Envelope, ForwardFailure, RaftRequest, RaftResponse, SnapshotChunk};
use crate::codec::{decode_bounded, encode_bounded};
use crate::core::{Core, raft_id_of_peer};
use crate::limits::MAX_RPC_BYTES;
use crate::storage::state_machine::Snapshot;

/// Serves inbound raft requests until the mesh closes the channel.
pub(crate) async fn run(core: Arc<Core>, mut inbound: mpsc::Receiver<InboundRequest>) {
    while let Some(request) = inbound.recv().await {
        let core = core.clone();
        tokio::spawn(async move {
            let peer = request.peer;
            let response = handle(&core, peer, &request.payload).await;
            match encode_bounded(&response, MAX_RPC_BYTES) {
                Ok(bytes) => request.respond(bytes),
                Err(e) => tracing::warn!(%peer, error = %e, "raft response not sent"),
            }
        });
    }
    tracing::debug!("raft server stopped");
}

async fn handle(core: &Core, peer: PeerId, payload: &[u8]) -> RaftResponse {
    let envelope: Envelope = match decode_bounded(payload, MAX_RPC_BYTES) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "malformed raft request");
            return RaftResponse::Refused(format!("malformed request: {e}"));
        }
    };
    let sender = raft_id_of_peer(&peer);
    let cluster = envelope.cluster_id.as_deref();
    match envelope.body {
        RaftRequest::Join(req) => crate::join::handle(core, peer, cluster, req).await,
        RaftRequest::Write(cmd) => {
            if let Err(why) = may_forward(core, &peer, cluster) {
                return RaftResponse::Refused(why);
            }
            RaftResponse::Write(core.write_as_leader(cmd.0, core.config.write_timeout).await)
        }
        RaftRequest::ReadIndex => {
            if let Err(why) = may_forward(core, &peer, cluster) {
                return RaftResponse::Refused(why);
            }
            RaftResponse::ReadIndex(core.read_index_as_leader(core.config.write_timeout).await)
        }
        body => {
            if let Err(why) = core.access.allows(&core.raft, sender, cluster) {
                tracing::debug!(%peer, why, "raft RPC refused");
                return RaftResponse::Refused(why);
            }
            raft_rpc(core, sender, body).await
        }
    }
}

/// Forwarded writes and reads come from raft members or nodes of the cluster.
fn may_forward(core: &Core, peer: &PeerId, cluster: Option<&str>) -> Result<(), String> {
    let ours = core.access.cluster_id();
    if ours.is_none() || cluster != ours.as_deref() {
        return Err("not in this cluster".to_owned());
    }
    let sender = raft_id_of_peer(peer);
    let is_member = core.voters().contains_key(&sender) || core.learners().contains_key(&sender);
    let is_node = core
        .state()
        .nodes
        .keys()
        .any(|n| n.as_str() == peer.to_string());
    if is_member || is_node {
        Ok(())
    } else {
        Err("not a node of this cluster".to_owned())
    }
}

async fn raft_rpc(core: &Core, sender: u64, body: RaftRequest) -> RaftResponse {
    let failed = |e: &dyn std::fmt::Display| RaftResponse::Refused(format!("raft: {e}"));
    match body {
        RaftRequest::Vote(rpc) => match core.raft.vote(rpc).await {
            Ok(r) => RaftResponse::Vote(r),
            Err(e) => failed(&e),
        },
        RaftRequest::PreVote(rpc) => match core.raft.pre_vote(rpc).await {
            Ok(r) => RaftResponse::Vote(r),
            Err(e) => failed(&e),
        },
        RaftRequest::SnapshotChunk(chunk) => snapshot_chunk(core, sender, chunk).await,
        RaftRequest::TransferLeader(req) => match core.raft.handle_transfer_leader(req).await {
            Ok(r) => RaftResponse::TransferLeader(r),
            Err(e) => failed(&e),
        },
        RaftRequest::Write(_) | RaftRequest::ReadIndex | RaftRequest::Join(_) => {
            RaftResponse::Write(Err(ForwardFailure::Failed("misrouted request".to_owned())))
        }
    }
}

async fn snapshot_chunk(core: &Core, sender: u64, chunk: SnapshotChunk) -> RaftResponse {
    let assembled = {
        let mut assembler = match core.assembler.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        assembler.accept(sender, chunk)
    };
    match assembled {
        Ok(None) => RaftResponse::ChunkAccepted,
        Ok(Some(Assembled { vote, meta, data })) => {
            let snapshot = Snapshot {
                meta,
                snapshot: data,
            };
            match core.raft.install_full_snapshot(vote, snapshot).await {
                Ok(r) => RaftResponse::Snapshot(r),
                Err(e) => RaftResponse::Refused(format!("install snapshot: {e}")),
            }
        }
        Err(why) => RaftResponse::Refused(why),
    }
}
