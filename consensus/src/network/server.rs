//! The receiving side of `/shoal/raft/1`: takes the mesh's inbound raft requests and hands each
//! to its own task (raft is never awaited in the mesh's event loop), checks who may send what,
//! and answers.

use std::sync::Arc;

use shoal_discovery::{InboundRequest, PeerId};
use tokio::sync::mpsc;

use super::access::Refusal;
use super::chunks::Assembled;
use super::messages::{Envelope, ForwardFailure, RaftRequest, RaftResponse, SnapshotChunk};
use shoal_scheduler::authz::{self, Origin};
use shoal_scheduler::{ApplyError, NodeId};

use crate::codec::{decode_bounded, encode_bounded};
use crate::core::{Core, raft_id_of_peer};
use crate::limits::MAX_RPC_BYTES;
use crate::storage::state_machine::Snapshot;
use crate::types::Committed;
use crate::types::LogCommand;

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
            core.refusals.count("malformed", "malformed");
            return RaftResponse::Refused(format!("malformed request: {e}"));
        }
    };
    let request = envelope.body.label();
    let cluster = envelope.cluster_id.as_deref();
    let refuse = |reason: &'static str, why: String| {
        tracing::warn!(%peer, request, reason, why, "raft request refused");
        core.refusals.count(request, reason);
        RaftResponse::Refused(why)
    };
    match envelope.body {
        RaftRequest::Join(req) => crate::join::handle(core, peer, cluster, req).await,
        RaftRequest::Write(entry) => {
            if let Err((reason, why)) = may_write(core, &peer, cluster, &entry) {
                return match reason {
                    "unauthorized" => {
                        tracing::warn!(%peer, command = entry.command.kind(), why, "write refused");
                        core.refusals.count(request, reason);
                        RaftResponse::Write(Ok(Committed {
                            index: 0,
                            result: Err(ApplyError::Unauthorized(why)),
                        }))
                    }
                    _ => refuse(reason, why),
                };
            }
            RaftResponse::Write(
                core.write_entry_as_leader(*entry, core.config.write_timeout)
                    .await,
            )
        }
        RaftRequest::ReadIndex => {
            let proof = envelope.proof.as_ref();
            if let Err(why) = core.access.allows(&core.raft, &peer, cluster, proof) {
                if matches!(why, Refusal::NotMember { .. }) {
                    // Told in so many words, so that it stops reading as a member.
                    core.refusals.count(request, why.label());
                    return RaftResponse::ReadIndex(Err(ForwardFailure::NotAMember));
                }
                return refuse(why.label(), why.to_string());
            }
            RaftResponse::ReadIndex(core.read_index_as_leader(core.config.write_timeout).await)
        }
        body => {
            let proof = envelope.proof.as_ref();
            if let Err(why) = core.access.allows(&core.raft, &peer, cluster, proof) {
                return refuse(why.label(), why.to_string());
            }
            raft_rpc(core, raft_id_of_peer(&peer), body).await
        }
    }
}

/// Whether `peer` may have `entry` written: a raft member (a manager) may write anything; any
/// other node of the cluster what its credential allows ([`authz::authorize`]). The refusal
/// comes with its reason's label.
fn may_write(
    core: &Core,
    peer: &PeerId,
    cluster: Option<&str>,
    entry: &LogCommand,
) -> Result<(), (&'static str, String)> {
    let ours = core.access.cluster_id();
    if ours.is_none() || cluster != ours.as_deref() {
        return Err(("other_cluster", "not in this cluster".to_owned()));
    }
    let state = core.state();
    let node = NodeId::new(peer.to_string());
    let origin = if core.access.allows_peer(&core.raft, peer).is_ok() {
        Origin::Manager
    } else {
        Origin::of_node(&state, &node)
            .ok_or(("not_node", "not a node of this cluster".to_owned()))?
    };
    authz::authorize(&state, origin, &entry.command).map_err(|e| ("unauthorized", e.to_string()))
}

async fn raft_rpc(core: &Core, sender: u64, body: RaftRequest) -> RaftResponse {
    let failed = |e: &dyn std::fmt::Display| RaftResponse::Refused(format!("raft: {e}"));
    // A member's request to an agent whose raft has not started yet: it takes part now.
    let raft = match body {
        RaftRequest::SnapshotChunk(_) => None,
        _ => match core.raft.start().await {
            Ok(raft) => Some(raft),
            Err(e) => return failed(&e),
        },
    };
    match (body, raft) {
        (RaftRequest::SnapshotChunk(chunk), _) => snapshot_chunk(core, sender, chunk).await,
        (RaftRequest::Write(_) | RaftRequest::ReadIndex | RaftRequest::Join(_), _) => {
            RaftResponse::Write(Err(ForwardFailure::Failed("misrouted request".to_owned())))
        }
        (_, None) => failed(&"not started"),
        (RaftRequest::Vote(rpc), Some(raft)) => match raft.vote(rpc).await {
            Ok(r) => RaftResponse::Vote(r),
            Err(e) => failed(&e),
        },
        (RaftRequest::PreVote(rpc), Some(raft)) => match raft.pre_vote(rpc).await {
            Ok(r) => RaftResponse::Vote(r),
            Err(e) => failed(&e),
        },
        (RaftRequest::TransferLeader(req), Some(raft)) => {
            match raft.handle_transfer_leader(req).await {
                Ok(r) => RaftResponse::TransferLeader(r),
                Err(e) => failed(&e),
            }
        }
    }
}

async fn snapshot_chunk(core: &Core, sender: u64, chunk: SnapshotChunk) -> RaftResponse {
    // The piece goes to a file: off the async threads.
    let assembler = core.assembler.clone();
    let assembled = tokio::task::spawn_blocking(move || {
        let mut assembler = match assembler.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        assembler.accept(sender, chunk)
    })
    .await
    .unwrap_or_else(|e| Err(format!("snapshot piece: {e}")));
    match assembled {
        Ok(None) => RaftResponse::ChunkAccepted,
        Ok(Some(Assembled { vote, meta, file })) => {
            let snapshot = Snapshot {
                meta,
                snapshot: file,
            };
            let installed = match core.raft.start().await {
                Ok(raft) => raft.install_full_snapshot(vote, snapshot).await,
                Err(e) => return RaftResponse::Refused(format!("install snapshot: {e}")),
            };
            match installed {
                Ok(r) => RaftResponse::Snapshot(r),
                Err(e) => RaftResponse::Refused(format!("install snapshot: {e}")),
            }
        }
        Err(why) => RaftResponse::Refused(why),
    }
}
