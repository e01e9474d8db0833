//! Inbound `/shoal/dispatch/1` requests, routed by kind: assignments to this agent's worker (only
//! from the leader: the one it knows, or a manager that names its newer raft term, which is how
//! a worker outside the raft group follows a new leader at once), heartbeats and reports to the
//! leader duties (only while this agent leads; a report only about the sender's own tasks), and
//! requests for a task's files to the leader duties too (only the task's own node gets them).
//! Every request is answered; malformed and forged ones are refused, logged and counted.

use std::sync::Arc;

use shoal_consensus::Quorum;
use shoal_consensus::sealed::DataKeyStore;
use shoal_discovery::{InboundRequest, PeerId};
use shoal_metrics::AgentMetrics;
use shoal_scheduler::{NodeId, TaskId, TaskStatus};
use tokio::sync::{mpsc, oneshot};

use super::dispatcher::Heartbeat;
use super::leader_link::LeaderView;
use super::messages::{DispatchRequest, DispatchResponse, MAX_REPORTS_PER_MESSAGE, decode, encode};
use super::reports::PendingReports;
use crate::worker::WorkerHandle;

/// What the router needs.
#[derive(Clone)]
pub struct RouterContext {
    /// Where the leader is.
    pub view: LeaderView,
    /// This agent's worker, if it runs tasks.
    pub worker: Option<WorkerHandle>,
    /// The raft handle (leader claims, the manager set, the state reports are checked against).
    pub quorum: Quorum,
    /// The agent's metric families.
    pub metrics: AgentMetrics,
    /// This agent's copy of the data key (to open the secrets of a task's files on the leader).
    pub data_key: Arc<DataKeyStore>,
}

/// Serves dispatch requests until the mesh stops delivering them.
pub async fn run(mut inbound: mpsc::Receiver<InboundRequest>, context: RouterContext) {
    while let Some(request) = inbound.recv().await {
        let context = context.clone();
        tokio::spawn(async move {
            let peer = request.peer;
            let answer = match decode::<DispatchRequest>(&request.payload) {
                Ok(message) => handle(peer, message, &context).await,
                Err(error) => {
                    tracing::warn!(%peer, %error, "refusing a malformed dispatch request");
                    context
                        .metrics
                        .refused("dispatch", "malformed", "malformed");
                    DispatchResponse::Retry {
                        reason: error.to_string(),
                    }
                }
            };
            match encode(&answer) {
                Ok(bytes) => request.respond(bytes),
                Err(error) => {
                    tracing::warn!(%peer, %error, "dispatch answer not sent");
                    context.metrics.unsent("dispatch", "answer", "too_large");
                }
            }
        });
    }
}

/// Whether `peer` leads: the leader this agent knows, or a manager naming a raft term at least
/// as new as the one it knows.
fn from_leader(context: &RouterContext, peer: PeerId, leader_term: u64) -> bool {
    *context.view.leader.borrow() == Some(peer) || context.quorum.claim_leader(peer, leader_term)
}

/// The answer's reason when the dispatcher's heartbeat queue is full: the sender tries again
/// shortly instead of waiting for its next beat.
pub const BUSY: &str = "dispatcher busy";

/// The reports about `node`'s own tasks; reports about another node's tasks are dropped, logged
/// and counted (a task the state no longer knows is only late, and left to the state machine).
fn own_reports(
    context: &RouterContext,
    node: &NodeId,
    reports: Vec<(TaskId, TaskStatus)>,
) -> Vec<(TaskId, TaskStatus)> {
    let state = context.quorum.state();
    let (own, forged): (Vec<_>, Vec<_>) = reports.into_iter().partition(|(task, _)| {
        state
            .tasks
            .get(task)
            .is_none_or(|t| t.node.as_ref() == Some(node))
    });
    if let Some((task, _)) = forged.first() {
        tracing::warn!(
            %node,
            %task,
            forged = forged.len(),
            "refusing status reports about another node's tasks"
        );
        context.metrics.refused("dispatch", "report", "other_node");
    }
    own
}

async fn handle(
    peer: PeerId,
    message: DispatchRequest,
    context: &RouterContext,
) -> DispatchResponse {
    let node = NodeId::new(peer.to_string());
    let (view, worker) = (&context.view, context.worker.as_ref());
    let not_from_leader = |request: &'static str| {
        tracing::debug!(%peer, request, "assignments from an agent that does not lead; refused");
        context
            .metrics
            .refused("dispatch", request, "not_from_leader");
        DispatchResponse::NotFromLeader
    };
    match message {
        DispatchRequest::Assign(set) => {
            if !from_leader(context, peer, set.leader_term) {
                return not_from_leader("assign");
            }
            match worker {
                Some(worker) if worker.assign(set).await.is_ok() => DispatchResponse::Ack,
                _ => DispatchResponse::Retry {
                    reason: "this node runs no worker".into(),
                },
            }
        }
        DispatchRequest::Update(delta) => {
            if !from_leader(context, peer, delta.leader_term) {
                return not_from_leader("update");
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
        DispatchRequest::Heartbeat {
            holds,
            managers_epoch,
        } => {
            let local = view.local.borrow().clone();
            let Some(local) = local else {
                return DispatchResponse::NotLeader;
            };
            match local.heartbeats.try_send(Heartbeat { node, holds }) {
                Ok(()) => {
                    let managers = context.quorum.managers();
                    DispatchResponse::Beat {
                        term: context.quorum.term(),
                        managers: (managers.epoch != managers_epoch).then_some(managers),
                    }
                }
                Err(_) => DispatchResponse::Retry {
                    reason: BUSY.into(),
                },
            }
        }
        DispatchRequest::Report { reports } => {
            let local = view.local.borrow().clone();
            let Some(local) = local else {
                return DispatchResponse::NotLeader;
            };
            if reports.len() > MAX_REPORTS_PER_MESSAGE {
                context.metrics.refused("dispatch", "report", "too_many");
                return DispatchResponse::Retry {
                    reason: format!("more than {MAX_REPORTS_PER_MESSAGE} reports in one message"),
                };
            }
            let reports = own_reports(context, &node, reports);
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
        DispatchRequest::TaskFiles { task, skip } => {
            if view.local.borrow().is_none() {
                return DispatchResponse::NotLeader;
            }
            let key = context.data_key.get();
            let answer =
                super::files::serve(&context.quorum.state(), key.as_ref(), &node, task, skip);
            if let DispatchResponse::FilesRefused { reason } = &answer {
                tracing::warn!(%peer, %task, %reason, "task files refused");
                context
                    .metrics
                    .refused("dispatch", "task_files", "not_given");
            }
            answer
        }
    }
}
