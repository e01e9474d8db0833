//! The worker's side of dispatch: delivers this node's status reports to the current leader
//! (retrying until they are committed) and sends it a heartbeat every interval. When this agent
//! is itself the leader, reports go straight into the local batcher without the network.
//!
//! An agent without a container runtime runs no worker but still heartbeats: the heartbeats are
//! what makes its node ready, and the dispatcher watches them as it watches every node's.

use std::time::Duration;

use shoal_consensus::Quorum;
use shoal_discovery::{Mesh, PeerId, ShoalProtocol};
use shoal_scheduler::{NodeId, TaskId, TaskStatus};
use tokio::sync::{mpsc, oneshot, watch};

use super::dispatcher::Heartbeat;
use super::messages::{DispatchRequest, DispatchResponse, MAX_REPORTS_PER_MESSAGE, decode, encode};
use super::reports::PendingReports;
use super::router::BUSY;
use crate::worker::WorkerHandle;

/// Time between heartbeats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(300);
/// Wait before resending reports that failed.
const RETRY_DELAY: Duration = Duration::from_millis(100);
/// How long a batch of reports waits for the leader's answer before it is sent again. A leader
/// commits a batch in milliseconds; one that died without closing its connections never answers,
/// and the mesh's own request timeout (10 s) would hold every later report behind it.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait before sending a heartbeat again that a busy dispatcher turned away.
const BUSY_RETRY: Duration = Duration::from_millis(50);
/// Most reports held while no leader answers (the oldest are dropped beyond; the worker's
/// periodic resync reports current states again).
const MAX_BUFFERED_REPORTS: usize = 100_000;

/// The leader's intake when this agent is the leader.
#[derive(Debug, Clone)]
pub struct LocalLeader {
    /// The report batcher's queue.
    pub reports: mpsc::Sender<PendingReports>,
    /// The dispatcher's heartbeat queue.
    pub heartbeats: mpsc::Sender<Heartbeat>,
}

/// Where the leader is, as this agent knows it.
#[derive(Debug, Clone)]
pub struct LeaderView {
    /// The current leader's PeerId, if known.
    pub leader: watch::Receiver<Option<PeerId>>,
    /// Set while this agent is the leader.
    pub local: watch::Receiver<Option<LocalLeader>>,
}

/// What the link needs.
#[derive(Clone)]
pub struct LinkContext {
    /// This agent's node id.
    pub node: NodeId,
    /// The mesh.
    pub mesh: Mesh,
    /// Where the leader is.
    pub view: LeaderView,
    /// The raft handle: what the leader's answers teach (its term, the manager set).
    pub quorum: Quorum,
}

/// Runs the link until the worker's report channel closes; without a worker (`runtime: none`),
/// only heartbeats, until the agent stops.
pub async fn run(
    link: LinkContext,
    worker: Option<WorkerHandle>,
    mut reports: mpsc::Receiver<Vec<(TaskId, TaskStatus)>>,
) {
    let (node, mesh, view) = (&link.node, &link.mesh, &link.view);
    let mut buffer: Vec<(TaskId, TaskStatus)> = Vec::new();
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let worker = worker.as_ref();
    loop {
        if buffer.is_empty() {
            tokio::select! {
                batch = reports.recv(), if worker.is_some() => match batch {
                    Some(batch) => buffer.extend(batch),
                    None => return,
                },
                _ = heartbeat.tick() => send_heartbeat(&link, worker).await,
            }
        }
        while let Ok(more) = reports.try_recv() {
            buffer.extend(more);
        }
        if buffer.len() > MAX_BUFFERED_REPORTS {
            let excess = buffer.len() - MAX_BUFFERED_REPORTS;
            buffer.drain(..excess);
        }
        if buffer.is_empty() {
            continue;
        }
        let batch = buffer.len().min(MAX_REPORTS_PER_MESSAGE);
        match deliver(node, mesh, view, buffer[..batch].to_vec()).await {
            Ok(()) => {
                buffer.drain(..batch);
            }
            Err(reason) => {
                tracing::debug!(%reason, pending = buffer.len(), "reports not delivered; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_DELAY) => {}
                    _ = heartbeat.tick() => send_heartbeat(&link, worker).await,
                }
            }
        }
    }
}

async fn deliver(
    node: &NodeId,
    mesh: &Mesh,
    view: &LeaderView,
    reports: Vec<(TaskId, TaskStatus)>,
) -> Result<(), String> {
    let local = view.local.borrow().clone();
    if let Some(local) = local {
        let (done, outcome) = oneshot::channel();
        let pending = PendingReports {
            node: node.clone(),
            reports,
            done,
        };
        local
            .reports
            .send(pending)
            .await
            .map_err(|_| "leader duties ended".to_string())?;
        return outcome
            .await
            .map_err(|_| "leader duties ended".to_string())?;
    }
    // Watch for a new leader from here on: reports in flight to the old one are sent again to
    // the new one at once (a report only moves a task forward, so a second copy changes nothing).
    let leader = (*view.leader.borrow()).ok_or_else(|| "no leader known".to_string())?;
    let mut duties_move = view.local.clone();
    duties_move.borrow_and_update();
    let request = encode(&DispatchRequest::Report { reports }).map_err(|e| {
        tracing::warn!(error = %e, "status reports not sent");
        e.to_string()
    })?;
    let answer = tokio::select! {
        answer = mesh.request(leader, ShoalProtocol::Dispatch, request) => {
            answer.map_err(|e| e.to_string())?
        }
        () = shoal_consensus::leader_moved_from(view.leader.clone(), leader) => {
            return Err(format!("the leader moved from {leader}"));
        }
        Ok(()) = duties_move.changed() => return Err("this agent's leader duties changed".into()),
        () = tokio::time::sleep(REPORT_TIMEOUT) => {
            return Err(format!("no answer from the leader {leader} within {REPORT_TIMEOUT:?}"));
        }
    };
    match decode::<DispatchResponse>(&answer).map_err(|e| e.to_string())? {
        DispatchResponse::Ack => Ok(()),
        DispatchResponse::Retry { reason } => Err(reason),
        other => Err(format!("{other:?}")),
    }
}

async fn send_heartbeat(link: &LinkContext, worker: Option<&WorkerHandle>) {
    let holds = worker.and_then(WorkerHandle::holds);
    let local = link.view.local.borrow().clone();
    if let Some(local) = local {
        let _ = local.heartbeats.try_send(Heartbeat {
            node: link.node.clone(),
            holds,
        });
        return;
    }
    let leader = *link.view.leader.borrow();
    let Some(leader) = leader else { return };
    let link = link.clone();
    // Heartbeats must not queue behind a slow leader: each one is sent on its own.
    tokio::spawn(async move {
        for _ in 0..3 {
            let beat = DispatchRequest::Heartbeat {
                holds,
                managers_epoch: link.quorum.known_managers_epoch(),
            };
            let Ok(request) = encode(&beat) else { return };
            let answer = match link
                .mesh
                .request(leader, ShoalProtocol::Dispatch, request)
                .await
            {
                Ok(bytes) => decode::<DispatchResponse>(&bytes),
                Err(error) => {
                    tracing::debug!(%leader, %error, "heartbeat not delivered");
                    return;
                }
            };
            match answer {
                Ok(DispatchResponse::Beat { term, managers }) => {
                    if let Some(list) = managers {
                        link.quorum.learn_managers(&leader, &list);
                    }
                    link.quorum.claim_leader(leader, term);
                    return;
                }
                Ok(DispatchResponse::NotLeader) => {
                    link.quorum.not_leader(&leader);
                    return;
                }
                // A full queue at the dispatcher: soon again, not at the next beat.
                Ok(DispatchResponse::Retry { reason }) if reason == BUSY => {
                    tokio::time::sleep(BUSY_RETRY).await;
                }
                Ok(other) => {
                    tracing::debug!(%leader, ?other, "unexpected answer to a heartbeat");
                    return;
                }
                Err(error) => {
                    tracing::debug!(%leader, %error, "bad answer to a heartbeat");
                    return;
                }
            }
        }
    });
}
