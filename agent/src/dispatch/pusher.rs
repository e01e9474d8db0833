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
    self, Assignment, AssignmentDelta, AssignmentSet, CodecError, DispatchRequest,
    DispatchResponse, decode, encode,
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
    /// The message does not fit the protocol's limit (nothing was sent).
    TooLarge,
}

/// Who sends: the leadership's epoch and the raft term it leads in.
#[derive(Debug, Clone, Copy)]
pub struct Leadership {
    /// Distinguishes this leadership's assignment versions from any earlier leader's.
    pub epoch: u64,
    /// The raft term: what tells a worker that is not a raft member who leads.
    pub term: u64,
}

impl Pusher {
    /// Starts the sender of `target` for `leadership`.
    pub fn spawn(
        target: Target,
        leadership: Leadership,
        metrics: shoal_metrics::AgentMetrics,
    ) -> Pusher {
        let (wanted, rx) = watch::channel(Wanted::default());
        tokio::spawn(run(target, leadership, rx, metrics));
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
    leadership: Leadership,
    mut wanted: watch::Receiver<Wanted>,
    metrics: shoal_metrics::AgentMetrics,
) {
    let epoch = leadership.epoch;
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
            let sent = match &acked {
                Some((base, old)) => {
                    let (upserts, removed) = assignments::changes(old, &now.tasks);
                    let changes = Changes {
                        base: *base,
                        version: now.version,
                        upserts,
                        removed,
                    };
                    send_changes(&target, leadership, changes, &metrics).await
                }
                None => send_set(&target, leadership, &now, &metrics).await,
            };
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
                Sent::Failed | Sent::TooLarge => acked = None,
            }
        }
        if wanted.changed().await.is_err() {
            break;
        }
    }
}

/// What changed from the acknowledged set to the wanted one.
struct Changes {
    base: u64,
    version: u64,
    upserts: Vec<Assignment>,
    removed: Vec<shoal_scheduler::TaskId>,
}

/// Sends `changes`, page after page (every removal on the first); acknowledged once every page
/// was.
async fn send_changes(
    target: &Target,
    leadership: Leadership,
    changes: Changes,
    metrics: &shoal_metrics::AgentMetrics,
) -> Sent {
    send_pages(target, &changes.upserts, metrics, |page, pages, upserts| {
        DispatchRequest::Update(AssignmentDelta {
            term: leadership.epoch,
            leader_term: leadership.term,
            base: changes.base,
            version: changes.version,
            page,
            pages,
            upserts,
            removed: if page == 0 {
                changes.removed.clone()
            } else {
                Vec::new()
            },
        })
    })
    .await
}

/// Sends the full set `now`, page after page; acknowledged once every page was.
async fn send_set(
    target: &Target,
    leadership: Leadership,
    now: &Wanted,
    metrics: &shoal_metrics::AgentMetrics,
) -> Sent {
    send_pages(target, &now.tasks, metrics, |page, pages, tasks| {
        DispatchRequest::Assign(AssignmentSet {
            term: leadership.epoch,
            version: now.version,
            leader_term: leadership.term,
            page,
            pages,
            tasks,
        })
    })
    .await
}

/// Sends `assignments` in the pages of requests `request(page, pages, assignments)` makes, one
/// after the other; acknowledged once every page was. This agent's own worker takes any size
/// at once: one page.
async fn send_pages(
    target: &Target,
    assignments: &[Assignment],
    metrics: &shoal_metrics::AgentMetrics,
    request: impl Fn(u32, u32, Vec<Assignment>) -> DispatchRequest,
) -> Sent {
    let pages = match target {
        Target::Local(_) => vec![assignments],
        Target::Remote(_) => messages::pages(assignments),
    };
    let count = u32::try_from(pages.len()).unwrap_or(u32::MAX);
    for (page, slice) in pages.into_iter().enumerate() {
        let page = u32::try_from(page).unwrap_or(u32::MAX);
        match send(target, request(page, count, slice.to_vec()), metrics).await {
            Sent::Acked => {}
            other => return other,
        }
    }
    Sent::Acked
}

/// Sends one request and waits for its answer.
async fn send(
    target: &Target,
    request: DispatchRequest,
    metrics: &shoal_metrics::AgentMetrics,
) -> Sent {
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
            let kind = match request {
                DispatchRequest::Update(_) => "update",
                _ => "assign",
            };
            let bytes = match encode(&request) {
                Ok(bytes) => bytes,
                Err(CodecError::TooLarge(size)) => {
                    tracing::warn!(%peer, size, kind, "assignments too large for one message");
                    metrics.unsent("dispatch", kind, "too_large");
                    return Sent::TooLarge;
                }
                Err(error) => {
                    tracing::warn!(%peer, %error, kind, "assignments not encodable");
                    metrics.unsent("dispatch", kind, "encode");
                    return Sent::Failed;
                }
            };
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
