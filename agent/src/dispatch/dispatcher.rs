//! The leader's dispatcher: one session per worker. It pushes each worker its assignments
//! whenever what they tell the worker changes (a status the worker reported itself is not sent
//! back), through the worker's [`Pusher`]: the changes only, the full set on (re)connect. It
//! marks a node down when its heartbeats stop for the grace period *and* the mesh agrees that it
//! is gone — a node that only lost its link to the leader is not down.
//!
//! A new leader starts every session as "just heard", so a leader change marks nobody down, and
//! it pushes nothing until its applied state holds an entry of its own term: tasks created just
//! before a failover are then in the sets it sends, never removed by them.
//! A node without a container runtime heartbeats like any other but runs no worker: it is never
//! sent assignments.
//!
//! Liveness marks never hold up the loop that serves heartbeats: they gather while one write is
//! in flight and go as one batched write (many nodes marked down at once are one command).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_consensus::Quorum;
use shoal_discovery::{MemberState, Mesh, PeerId};
use shoal_scheduler::{Command, NodeId, NodeState, Runtime};
use tokio::sync::mpsc;

use super::assignments;
use super::messages::Assignment;
use super::pusher::{Leadership, Pusher, Target};
use crate::worker::{WorkerHandle, now};

/// How often sessions are checked for silence.
const CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// Capacity of the heartbeat channel.
const HEARTBEAT_CAPACITY: usize = 1024;
/// How long a new leader waits at a time for its state to catch up before it checks that it
/// still leads.
const READY_WAIT: Duration = Duration::from_secs(5);
/// Node states in one liveness write at most.
const MAX_MARKS_PER_WRITE: usize = 1_000;
/// Pushes follow state changes at once, but at most once per this interval: under a stream of
/// changes (a large scale, a burst of reports) each pass over every task serves many of them.
const PUSH_PACE: Duration = Duration::from_millis(20);

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
    let Some(leadership) = wait_until_ready(&context, &mut heartbeats).await else {
        return;
    };
    let mut dispatcher = Dispatcher::new(context, leadership);
    let mut applied = dispatcher.context.quorum.watch();
    let mut check = tokio::time::interval(CHECK_INTERVAL);
    let (marked, mut marks_done) = mpsc::channel(1);
    // This agent is obviously alive: no need to wait for its own first heartbeat, once it is
    // registered (which may happen after the duties start).
    let local = dispatcher.context.local.clone();
    dispatcher.mark(&local, NodeState::Ready);
    dispatcher.push_changed();
    let mut last_push = tokio::time::Instant::now();
    let mut push_due: Option<tokio::time::Instant> = None;
    loop {
        dispatcher.flush_marks(&marked);
        tokio::select! {
            changed = applied.changed() => {
                if changed.is_err() { break; }
                dispatcher.mark(&local, NodeState::Ready);
                let at = (last_push + PUSH_PACE).max(tokio::time::Instant::now());
                push_due.get_or_insert(at);
            }
            () = sleep_until(push_due) => {
                push_due = None;
                last_push = tokio::time::Instant::now();
                dispatcher.push_changed();
            }
            heartbeat = heartbeats.recv() => match heartbeat {
                Some(heartbeat) => dispatcher.on_heartbeat(heartbeat),
                None => break,
            },
            Some(()) = marks_done.recv() => dispatcher.marking = None,
            _ = check.tick() => dispatcher.check_liveness().await,
        }
    }
}

/// Waits until this leader's applied state holds an entry of its own term, taking heartbeats
/// meanwhile (they only wait). None if it stopped leading first.
async fn wait_until_ready(
    context: &DispatcherContext,
    heartbeats: &mut mpsc::Receiver<Heartbeat>,
) -> Option<Leadership> {
    let quorum = &context.quorum;
    loop {
        tokio::select! {
            ready = quorum.ready_as_leader(READY_WAIT) => {
                if ready {
                    return Some(Leadership { epoch: now().0, term: quorum.term() });
                }
                if !quorum.is_leader() {
                    return None;
                }
            }
            // Heartbeats only wait; the channel closing ends the duties.
            heartbeat = heartbeats.recv() => {
                heartbeat?;
            }
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A channel for heartbeats into a dispatcher.
pub fn heartbeat_channel() -> (mpsc::Sender<Heartbeat>, mpsc::Receiver<Heartbeat>) {
    mpsc::channel(HEARTBEAT_CAPACITY)
}

struct Dispatcher {
    context: DispatcherContext,
    /// This leadership: its epoch (which distinguishes its assignment versions from any earlier
    /// leader's) and raft term.
    leadership: Leadership,
    sessions: HashMap<NodeId, Session>,
    /// Node states to write, gathered while a write is in flight.
    marks: BTreeMap<NodeId, NodeState>,
    /// The node states being written.
    marking: Option<BTreeMap<NodeId, NodeState>>,
}

impl Dispatcher {
    fn new(context: DispatcherContext, leadership: Leadership) -> Self {
        Dispatcher {
            context,
            leadership,
            sessions: HashMap::new(),
            marks: BTreeMap::new(),
            marking: None,
        }
    }

    /// Pushes every worker whose assignments changed since they were last sent.
    fn push_changed(&mut self) {
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
                .map(|t| Pusher::spawn(t, self.leadership, self.context.metrics.clone()));
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

    fn on_heartbeat(&mut self, heartbeat: Heartbeat) {
        self.context.metrics.dispatcher_heartbeats.inc();
        let session = self.session(&heartbeat.node);
        session.last_heard = Instant::now();
        session.holds = heartbeat.holds;
        // A runtime-less node has no pusher: it is never pushed to.
        if let Some(pusher) = &session.pusher {
            pusher.heartbeat(heartbeat.holds);
        }
        self.mark(&heartbeat.node, NodeState::Ready);
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
            self.mark(&node, NodeState::Down);
        }
    }

    /// Queues `node`'s new liveness unless the state, the write in flight or the queue
    /// already has it.
    fn mark(&mut self, node: &NodeId, target: NodeState) {
        let state = self.context.quorum.state();
        let Some(current) = state.nodes.get(node) else {
            return;
        };
        let in_flight = self.marking.as_ref().and_then(|m| m.get(node)).copied();
        if current.state == target && in_flight.is_none_or(|s| s == target) {
            self.marks.remove(node);
            return;
        }
        if in_flight == Some(target) {
            return;
        }
        self.marks.insert(node.clone(), target);
    }

    /// Writes the queued marks, as one command, unless a write is in flight; `done` hears when
    /// it ends.
    fn flush_marks(&mut self, done: &mpsc::Sender<()>) {
        if self.marking.is_some() || self.marks.is_empty() {
            return;
        }
        let split = self.marks.keys().nth(MAX_MARKS_PER_WRITE).cloned();
        let rest = split
            .map(|at| self.marks.split_off(&at))
            .unwrap_or_default();
        let batch = std::mem::replace(&mut self.marks, rest);
        self.marking = Some(batch.clone());
        let (quorum, metrics, done) = (
            self.context.quorum.clone(),
            self.context.metrics.clone(),
            done.clone(),
        );
        tokio::spawn(async move {
            write_marks(&quorum, &metrics, batch).await;
            let _ = done.send(()).await;
        });
    }
}

/// Writes node states through raft in one command.
async fn write_marks(
    quorum: &Quorum,
    metrics: &shoal_metrics::AgentMetrics,
    batch: BTreeMap<NodeId, NodeState>,
) {
    let down = batch.values().filter(|s| **s == NodeState::Down).count();
    let changes: Vec<(NodeId, NodeState)> = batch.into_iter().collect();
    let command = Command::SetNodeStates {
        changes: changes.clone(),
        at: now(),
    };
    match quorum.write(command).await {
        Ok(Ok(_)) => {
            metrics.dispatcher_nodes_marked_down.inc_by(down as u64);
            for (node, state) in &changes {
                tracing::info!(%node, ?state, "node state changed");
            }
        }
        Ok(Err(error)) => tracing::debug!(%error, nodes = changes.len(), "node states not changed"),
        Err(error) => tracing::warn!(%error, nodes = changes.len(), "cannot record node states"),
    }
}
