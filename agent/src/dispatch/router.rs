//! Inbound `/shoal/dispatch/1` requests, routed by kind: assignments to this agent's worker (only
//! from the current leader), heartbeats and reports to the leader duties (only while this agent
//! leads). Every request is answered; malformed ones are refused and logged.

use shoal_discovery::{InboundRequest, PeerId};
use shoal_scheduler::NodeId;
use tokio::sync::{mpsc, oneshot};

use super::dispatcher::Heartbeat;
use super::leader_link::LeaderView;
use super::messages::{DispatchRequest, DispatchResponse, decode, encode};
use super::reports::PendingReports;
use crate::worker::WorkerHandle;

/// Serves dispatch requests until the mesh stops delivering them.
pub async fn run(
    mut inbound: mpsc::Receiver<InboundRequest>,
    view: LeaderView,
    worker: Option<WorkerHandle>,
) {
    while let Some(request) = inbound.recv().await {
        let view = view.clone();
        let worker = worker.clone();
        tokio::spawn(async move {
            let peer = request.peer;
            let answer = match decode::<DispatchRequest>(&request.payload) {
                Ok(message) => handle(peer, message, &view, worker.as_ref()).await,
                Err(error) => {
                    tracing::warn!(%peer, %error, "refusing a malformed dispatch request");
                    DispatchResponse::Retry {
                        reason: error.to_string(),
                    }
                }
            };
            request.respond(encode(&answer));
        });
    }
}

async fn handle(
    peer: PeerId,
    message: DispatchRequest,
    view: &LeaderView,
    worker: Option<&WorkerHandle>,
) -> DispatchResponse {
    let node = NodeId::new(peer.to_string());
    match message {
        DispatchRequest::Assign(set) => {
            if *view.leader.borrow() != Some(peer) {
                return DispatchResponse::NotFromLeader;
            }
            match worker {
                Some(worker) if worker.assign(set).await.is_ok() => DispatchResponse::Ack,
                _ => DispatchResponse::Retry {
                    reason: "this node runs no worker".into(),
                },
            }
        }
        DispatchRequest::Update(delta) => {
            if *view.leader.borrow() != Some(peer) {
                return DispatchResponse::NotFromLeader;
            }
            match worker {
                Some(worker) => match worker.update(delta).await {
                    Ok(true) => DispatchResponse::Ack,
                    Ok(false) => DispatchResponse::Resync,
                    Err(_) => DispatchResponse::Retry {
                        reason: "the worker stopped".into(),
                    },
                },
                None => DispatchResponse::Retry {
                    reason: "this node runs no worker".into(),
                },
            }
        }
        DispatchRequest::Heartbeat { holds } => {
            let local = view.local.borrow().clone();
            let Some(local) = local else {
                return DispatchResponse::NotLeader;
            };
            match local.heartbeats.try_send(Heartbeat { node, holds }) {
                Ok(()) => DispatchResponse::Ack,
                Err(_) => DispatchResponse::Retry {
                    reason: "dispatcher busy".into(),
                },
            }
        }
        DispatchRequest::Report { reports } => {
            let local = view.local.borrow().clone();
            let Some(local) = local else {
                return DispatchResponse::NotLeader;
            };
            let (done, outcome) = oneshot::channel();
            if local
                .reports
                .send(PendingReports {
                    node,
                    reports,
                    done,
                })
                .await
                .is_err()
            {
                return DispatchResponse::NotLeader;
            }
            match outcome.await {
                Ok(Ok(())) => DispatchResponse::Ack,
                Ok(Err(reason)) => DispatchResponse::Retry { reason },
                Err(_) => DispatchResponse::NotLeader,
            }
        }
    }
}
