//! The leader's sender of one worker's assignments. One task per worker sends that worker its
//! sets in version order, one request at a time, and always the latest set wanted (versions in
//! between are skipped, never reordered).
//!
//! Once the worker acknowledged a version, the next one goes as a delta (what changed since the
//! acknowledged set). The full set goes first, after a failed send, when the worker answers that
//! it does not hold the delta's base, and when a heartbeat shows that the worker holds a set of
//! another leader or none (it restarted). A heartbeat that shows an older version of this leader
//! is only late: the worker applies this leader's sets in order.

use std::sync::Arc;

use shoal_discovery::{Mesh, PeerId, ShoalProtocol};
use shoal_metrics::agent::{OpResult, PushLabels};
use tokio::sync::watch;

use super::assignments;
use super::messages::{
    Assignment, AssignmentDelta, AssignmentSet, DispatchRequest, DispatchResponse, decode, encode,
};
use crate::worker::WorkerHandle;

/// Where a worker is.
#[derive(Clone)]
pub enum Target {
    /// This agent's own worker, reached without the network.
    Local(WorkerHandle),
    /// A worker on another agent, through the mesh.
    Remote(Box<(Mesh, PeerId)>),
}

/// What the dispatcher wants a worker to hold, and what it last heard the worker holds.
#[derive(Debug, Clone, Default)]
struct Wanted {
    /// The version of the set (0: nothing to send).
    version: u64,
    /// The set, in task-id order.
    tasks: Arc<Vec<Assignment>>,
    /// Heartbeats heard so far.
    beats: u64,
    /// What the last heartbeat said the worker holds.
    holds: Option<(u64, u64)>,
}

/// The handle of one worker's sender; the sender stops when the handle is dropped.
pub struct Pusher {
    wanted: watch::Sender<Wanted>,
}

/// How one send went.
enum Sent {
    Acked,
    Resync,
    Failed,
}

impl Pusher {
    /// Starts the sender of `target` for the leadership `epoch`.
    pub fn spawn(target: Target, epoch: u64, metrics: shoal_metrics::AgentMetrics) -> Pusher {
        let (wanted, rx) = watch::channel(Wanted::default());
        tokio::spawn(run(target, epoch, rx, metrics));
        Pusher { wanted }
    }

    /// Wants the worker to hold `tasks` as `version`. With `notify` false the set only replaces
    /// the one of the same version (fresher statuses for a later full send).
    pub fn want(&self, version: u64, tasks: Arc<Vec<Assignment>>, notify: bool) {
        self.wanted.send_if_modified(|wanted| {
            wanted.version = version;
            wanted.tasks = tasks;
            notify
        });
    }

    /// Records a heartbeat: the worker holds `holds`.
    pub fn heartbeat(&self, holds: Option<(u64, u64)>) {
        self.wanted.send_modify(|wanted| {
            wanted.beats += 1;
            wanted.holds = holds;
        });
    }
}

async fn run(
    target: Target,
    epoch: u64,
    mut wanted: watch::Receiver<Wanted>,
    metrics: shoal_metrics::AgentMetrics,
) {
    // The version the worker acknowledged, with its set.
    let mut acked: Option<(u64, Arc<Vec<Assignment>>)> = None;
    let mut beats = 0;
    loop {
        let now = wanted.borrow_and_update().clone();
        if now.beats != beats {
            beats = now.beats;
            let current_or_late = now.holds.is_some_and(|(term, version)| {
                term == epoch && acked.as_ref().is_some_and(|(a, _)| version <= *a)
            });
            if !current_or_late {
                acked = None;
            }
        }
        let holds_it = acked.as_ref().is_some_and(|(v, _)| *v == now.version);
        if now.version > 0 && !holds_it {
            let request = match &acked {
                Some((base, old)) => {
                    let (upserts, removed) = assignments::changes(old, &now.tasks);
                    DispatchRequest::Update(AssignmentDelta {
                        term: epoch,
                        base: *base,
                        version: now.version,
                        upserts,
                        removed,
                    })
                }
                None => DispatchRequest::Assign(AssignmentSet {
                    term: epoch,
                    version: now.version,
                    tasks: now.tasks.as_ref().clone(),
                }),
            };
            let sent = send(&target, request).await;
            let result = if matches!(sent, Sent::Acked) {
                OpResult::Ok
            } else {
                OpResult::Error
            };
            metrics
                .dispatcher_pushes
                .get_or_create(&PushLabels { result })
                .inc();
            match sent {
                Sent::Acked => {
                    acked = Some((now.version, now.tasks));
                    continue;
                }
                // At once, in full.
                Sent::Resync => {
                    acked = None;
                    continue;
                }
                // Again in full at the next heartbeat or change.
                Sent::Failed => acked = None,
            }
        }
        if wanted.changed().await.is_err() {
            break;
        }
    }
}

/// Sends one request and waits for its answer.
async fn send(target: &Target, request: DispatchRequest) -> Sent {
    match target {
        Target::Local(worker) => match request {
            DispatchRequest::Assign(set) => match worker.assign(set).await {
                Ok(()) => Sent::Acked,
                Err(_) => Sent::Failed,
            },
            DispatchRequest::Update(delta) => match worker.update(delta).await {
                Ok(true) => Sent::Acked,
                Ok(false) => Sent::Resync,
                Err(_) => Sent::Failed,
            },
            _ => Sent::Failed,
        },
        Target::Remote(remote) => {
            let (mesh, peer) = remote.as_ref();
            let bytes = encode(&request);
            match mesh.request(*peer, ShoalProtocol::Dispatch, bytes).await {
                Ok(bytes) => match decode::<DispatchResponse>(&bytes) {
                    Ok(DispatchResponse::Ack) => Sent::Acked,
                    Ok(DispatchResponse::Resync) => Sent::Resync,
                    Ok(other) => {
                        tracing::debug!(%peer, ?other, "worker refused assignments");
                        Sent::Failed
                    }
                    Err(error) => {
                        tracing::debug!(%peer, %error, "bad answer to assignments");
                        Sent::Failed
                    }
                },
                Err(error) => {
                    tracing::debug!(%peer, %error, "cannot push assignments");
                    Sent::Failed
                }
            }
        }
    }
}
