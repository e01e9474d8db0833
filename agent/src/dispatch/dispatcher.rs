//! The leader's dispatcher: one session per worker. It pushes each worker its assignment set
//! whenever that set changes (and again when a heartbeat shows the worker holds an older one),
//! and marks a node down when its heartbeats stop for the grace period *and* the mesh agrees
//! that it is gone — a node that only lost its link to the leader is not down.
//!
//! A new leader starts every session as "just heard", so a leader change marks nobody down.
//! A node without a container runtime heartbeats like any other but runs no worker: it is never
//! sent assignments.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_consensus::Quorum;
use shoal_discovery::{MemberState, Mesh, PeerId};
use shoal_scheduler::{ClusterState, Command, NodeId, NodeState, Runtime};
use tokio::sync::mpsc;

use super::assignments;
use super::messages::{
    Assignment, AssignmentSet, DispatchRequest, DispatchResponse, decode, encode,
};
use crate::worker::{WorkerHandle, now};
use shoal_discovery::ShoalProtocol;
use shoal_metrics::agent::{OpResult, PushLabels};

/// How often sessions are checked for silence.
const CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// Capacity of the heartbeat channel.
const HEARTBEAT_CAPACITY: usize = 1024;

/// A worker's heartbeat, as the router hands it over.
#[derive(Debug)]
pub struct Heartbeat {
    /// The worker.
    pub node: NodeId,
    /// The assignment set it holds.
    pub holds: Option<(u64, u64)>,
}

/// What the dispatcher needs from the agent.
#[derive(Clone)]
pub struct DispatcherContext {
    /// This agent's node id.
    pub local: NodeId,
    /// The raft handle (state, writes).
    pub quorum: Quorum,
    /// The mesh (requests to workers, membership).
    pub mesh: Mesh,
    /// This agent's own worker, reached without the network.
    pub local_worker: Option<WorkerHandle>,
    /// Heartbeat silence after which a node may be marked down.
    pub down_grace: Duration,
    /// The agent's metric families.
    pub metrics: shoal_metrics::AgentMetrics,
}

/// A worker as the dispatcher tracks it.
#[derive(Debug)]
struct Session {
    last_heard: Instant,
    holds: Option<(u64, u64)>,
    version: u64,
    sent: Vec<Assignment>,
}

/// Runs the dispatcher until `heartbeats` closes (the leader duties end).
pub async fn run(context: DispatcherContext, mut heartbeats: mpsc::Receiver<Heartbeat>) {
    let mut dispatcher = Dispatcher::new(context);
    let mut applied = dispatcher.context.quorum.watch();
    let mut check = tokio::time::interval(CHECK_INTERVAL);
    // This agent is obviously alive: no need to wait for its own first heartbeat, once it is
    // registered (which may happen after the duties start).
    let local = dispatcher.context.local.clone();
    dispatcher.mark_if_needed(&local, NodeState::Ready).await;
    dispatcher.push_changed().await;
    loop {
        tokio::select! {
            changed = applied.changed() => {
                if changed.is_err() { break; }
                dispatcher.mark_if_needed(&local, NodeState::Ready).await;
                dispatcher.push_changed().await;
            }
            heartbeat = heartbeats.recv() => match heartbeat {
                Some(heartbeat) => dispatcher.on_heartbeat(heartbeat).await,
                None => break,
            },
            _ = check.tick() => dispatcher.check_liveness().await,
        }
    }
}

/// A channel for heartbeats into a dispatcher.
pub fn heartbeat_channel() -> (mpsc::Sender<Heartbeat>, mpsc::Receiver<Heartbeat>) {
    mpsc::channel(HEARTBEAT_CAPACITY)
}

struct Dispatcher {
    context: DispatcherContext,
    /// Distinguishes this leadership's assignment versions from any earlier leader's.
    epoch: u64,
    sessions: HashMap<NodeId, Session>,
    /// Nodes for which a down or ready mark is being written.
    marking: HashSet<NodeId>,
}

impl Dispatcher {
    fn new(context: DispatcherContext) -> Self {
        Dispatcher {
            context,
            epoch: now().0,
            sessions: HashMap::new(),
            marking: HashSet::new(),
        }
    }

    /// Pushes every worker whose assignment set changed since it was last sent.
    async fn push_changed(&mut self) {
        let state = self.context.quorum.state();
        let mut sets = assignments::by_node(&state);
        for node in state.nodes.values() {
            if node.runtime == Runtime::None {
                // No worker to send to (version 0: nothing was sent, nothing is re-sent).
                if let Some(session) = self.sessions.get_mut(&node.id) {
                    session.version = 0;
                    session.sent.clear();
                }
                continue;
            }
            let node = &node.id;
            let tasks = sets.remove(node).unwrap_or_default();
            let session = self.session(node);
            if session.version > 0 && session.sent == tasks {
                continue;
            }
            session.version += 1;
            session.sent = tasks;
            self.push(node.clone());
        }
    }

    fn session(&mut self, node: &NodeId) -> &mut Session {
        self.sessions
            .entry(node.clone())
            .or_insert_with(|| Session {
                last_heard: Instant::now(),
                holds: None,
                version: 0,
                sent: Vec::new(),
            })
    }

    /// Sends `node` its current set, without waiting for the answer.
    fn push(&mut self, node: NodeId) {
        let epoch = self.epoch;
        let Some(session) = self.sessions.get(&node) else {
            return;
        };
        let set = AssignmentSet {
            term: epoch,
            version: session.version,
            tasks: session.sent.clone(),
        };
        if node == self.context.local {
            if let Some(worker) = self.context.local_worker.clone() {
                tokio::spawn(async move {
                    let _ = worker.assign(set).await;
                });
            }
            return;
        }
        let Ok(peer) = node.as_str().parse::<PeerId>() else {
            return;
        };
        let mesh = self.context.mesh.clone();
        let pushes = self.context.metrics.dispatcher_pushes.clone();
        tokio::spawn(async move {
            let request = encode(&DispatchRequest::Assign(set));
            let result = match mesh.request(peer, ShoalProtocol::Dispatch, request).await {
                Ok(bytes) => match decode::<DispatchResponse>(&bytes) {
                    Ok(DispatchResponse::Ack) => OpResult::Ok,
                    Ok(other) => {
                        tracing::debug!(%peer, ?other, "worker refused assignments");
                        OpResult::Error
                    }
                    Err(error) => {
                        tracing::debug!(%peer, %error, "bad answer to assignments");
                        OpResult::Error
                    }
                },
                // The next heartbeat shows the worker's old version and triggers a resend.
                Err(error) => {
                    tracing::debug!(%peer, %error, "cannot push assignments");
                    OpResult::Error
                }
            };
            pushes.get_or_create(&PushLabels { result }).inc();
        });
    }

    async fn on_heartbeat(&mut self, heartbeat: Heartbeat) {
        let epoch = self.epoch;
        self.context.metrics.dispatcher_heartbeats.inc();
        let session = self.session(&heartbeat.node);
        session.last_heard = Instant::now();
        session.holds = heartbeat.holds;
        let current = (epoch, session.version);
        // A runtime-less node has no session version: it is never pushed to.
        if session.version > 0 && heartbeat.holds != Some(current) {
            self.push(heartbeat.node.clone());
        }
        self.mark_if_needed(&heartbeat.node, NodeState::Ready).await;
    }

    /// Marks down every node that is silent past the grace and that the mesh does not hear
    /// either; a node that left gracefully is down at once.
    async fn check_liveness(&mut self) {
        let state = self.context.quorum.state();
        let members = match self.context.mesh.members().await {
            Ok(members) => members,
            Err(_) => return,
        };
        let liveness: HashMap<String, MemberState> = members
            .into_iter()
            .map(|m| (m.peer_id.to_string(), m.state))
            .collect();
        let grace = self.context.down_grace;
        let mut to_mark = Vec::new();
        let local = self.context.local.clone();
        for node in state
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Ready && n.id != local)
        {
            let silent = self.session(&node.id).last_heard.elapsed() > grace;
            let heard_by_mesh = liveness.get(node.id.as_str());
            let gone = match heard_by_mesh {
                Some(MemberState::Left) => true,
                Some(MemberState::Alive) => false,
                Some(MemberState::Suspect | MemberState::Dead) | None => silent,
            };
            if gone {
                to_mark.push(node.id.clone());
            }
        }
        for node in to_mark {
            self.mark_if_needed(&node, NodeState::Down).await;
        }
    }

    /// Writes `node`'s new liveness through raft unless it already has it.
    async fn mark_if_needed(&mut self, node: &NodeId, target: NodeState) {
        let state: Arc<ClusterState> = self.context.quorum.state();
        let Some(current) = state.nodes.get(node) else {
            return;
        };
        if current.state == target || self.marking.contains(node) {
            return;
        }
        self.marking.insert(node.clone());
        let command = Command::SetNodeState {
            id: node.clone(),
            state: target,
            at: now(),
        };
        match self.context.quorum.write(command).await {
            Ok(Ok(_)) => {
                if target == NodeState::Down {
                    self.context.metrics.dispatcher_nodes_marked_down.inc();
                }
                tracing::info!(%node, state = ?target, "node state changed")
            }
            Ok(Err(error)) => tracing::debug!(%node, %error, "node state not changed"),
            Err(error) => tracing::warn!(%node, %error, "cannot record node state"),
        }
        self.marking.remove(node);
    }
}
