//! The leader's dispatcher: one session per worker. It pushes each worker its assignments
//! whenever what they tell the worker changes (a status the worker reported itself is not sent
//! back), through the worker's [`Pusher`]: the changes only, the full set on (re)connect. It
//! marks a node down when its heartbeats stop for the grace period *and* the mesh agrees that it
//! is gone — a node that only lost its link to the leader is not down.
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
use super::messages::Assignment;
use super::pusher::{Pusher, Target};
use crate::worker::{WorkerHandle, now};

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
struct Session {
    last_heard: Instant,
    holds: Option<(u64, u64)>,
    version: u64,
    sent: Arc<Vec<Assignment>>,
    /// The worker's sender, once there is something to send.
    pusher: Option<Pusher>,
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

    /// Pushes every worker whose assignments changed since they were last sent.
    async fn push_changed(&mut self) {
        let state = self.context.quorum.state();
        let mut sets = assignments::by_node(&state);
        for node in state.nodes.values() {
            if node.runtime == Runtime::None {
                // No worker to send to (version 0: nothing was sent, nothing is re-sent).
                if let Some(session) = self.sessions.get_mut(&node.id) {
                    session.version = 0;
                    session.sent = Arc::default();
                    session.pusher = None;
                }
                continue;
            }
            let tasks = sets.remove(&node.id).unwrap_or_default();
            let first = self
                .sessions
                .get(&node.id)
                .is_none_or(|s| s.pusher.is_none());
            let pusher = first
                .then(|| self.target(&node.id))
                .flatten()
                .map(|t| Pusher::spawn(t, self.epoch, self.context.metrics.clone()));
            let session = self.session(&node.id);
            let changed =
                session.version == 0 || !assignments::same_instructions(&session.sent, &tasks);
            if changed {
                session.version += 1;
            }
            session.sent = Arc::new(tasks);
            if pusher.is_some() {
                session.pusher = pusher;
            }
            if let Some(pusher) = &session.pusher {
                pusher.want(session.version, session.sent.clone(), changed);
            }
        }
    }

    /// How to reach `node`'s worker.
    fn target(&self, node: &NodeId) -> Option<Target> {
        if *node == self.context.local {
            return self.context.local_worker.clone().map(Target::Local);
        }
        let peer = node.as_str().parse::<PeerId>().ok()?;
        Some(Target::Remote(Box::new((self.context.mesh.clone(), peer))))
    }

    fn session(&mut self, node: &NodeId) -> &mut Session {
        self.sessions
            .entry(node.clone())
            .or_insert_with(|| Session {
                last_heard: Instant::now(),
                holds: None,
                version: 0,
                sent: Arc::default(),
                pusher: None,
            })
    }

    async fn on_heartbeat(&mut self, heartbeat: Heartbeat) {
        self.context.metrics.dispatcher_heartbeats.inc();
        let session = self.session(&heartbeat.node);
        session.last_heard = Instant::now();
        session.holds = heartbeat.holds;
        // A runtime-less node has no pusher: it is never pushed to.
        if let Some(pusher) = &session.pusher {
            pusher.heartbeat(heartbeat.holds);
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
