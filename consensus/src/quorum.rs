//! [`Quorum`]: the cloneable handle the agent holds. Writes work on any agent (followers forward
//! to the leader over the mesh), reads are linearizable, and the applied state is watchable.

use openraft::async_runtime::WatchReceiver;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use shoal_discovery::{
    MemberState, MembershipChange, Mesh, NodeInfo, NodeRole, PeerId, RaftAnnouncement,
    RaftMembership, ShoalProtocol, ShoalStream,
};
use shoal_metrics::prometheus_client::metrics::histogram::Histogram;
use shoal_metrics::prometheus_client::registry::Registry;
use shoal_scheduler::{ClusterState, Command};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::codec::encode;
use crate::config::QuorumConfig;
use crate::core::{Core, raft_id_of_peer};
use crate::error::{ConsensusError, WriteError};
use crate::join::MANAGER_LABEL;
use crate::limits::MAX_COMMAND_BYTES;
use crate::metrics::RaftMetricsFamilies;
use crate::network::access::Access;
use crate::network::chunks::Assembler;
use crate::network::client::{NetworkFactory, SendError, send};
use crate::network::messages::{ForwardFailure, RaftRequest, RaftResponse};
use crate::storage::{self, AppliedState};
use crate::token::Token;
use crate::types::{ApplyResult, Raft, RaftNode, TypeConfig};

/// How long a forwarding agent waits between attempts while there is no leader.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// A summary of this agent's raft state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumStatus {
    /// Current term.
    pub term: u64,
    /// The leader, if known.
    pub leader: Option<PeerId>,
    /// The voters (managers); during a membership change, those of both configurations.
    pub voters: Vec<PeerId>,
    /// The learners.
    pub learners: Vec<PeerId>,
    /// Last applied log index.
    pub applied: u64,
    /// Last log index.
    pub last_log: u64,
    /// A membership change is in flight (a joint configuration): both the old and the new voter
    /// set must keep a majority until it completes.
    pub changing: bool,
}

/// The cloneable handle to this agent's part of the quorum. Cloning is shallow.
#[derive(Clone)]
pub struct Quorum {
    core: Arc<Core>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    /// `shoal_raft_commit_seconds`.
    commits: Histogram,
}

impl std::fmt::Debug for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quorum")
            .field("peer", &self.core.peer)
            .finish_non_exhaustive()
    }
}

impl Quorum {
    /// Starts raft on `mesh`: opens storage, serves `/shoal/raft/1` and the append streams
    /// (`/shoal/raft-append/1`), bootstraps or joins a cluster
    /// when there is no state on disk, and runs the autopilot while leader.
    pub async fn start(
        config: QuorumConfig,
        mesh: Mesh,
        registry: &mut Registry,
    ) -> Result<Quorum, ConsensusError> {
        config.validate()?;
        let token = config.token.as_deref().map(Token::parse).transpose()?;
        let raft_config = Arc::new(config.raft_config()?);
        let (log, sm) = storage::open(&config.data_dir)?;
        let peer = mesh.local_peer_id();
        let id = raft_id_of_peer(&peer);
        let me = RaftNode {
            peer_id: peer.to_string(),
            addrs: config.advertise_addrs.clone(),
        };
        log.save_self(&me).await?;
        let shared = sm.shared();
        let snapshot_metrics = sm.snapshot_metrics();
        let commits = crate::metrics::commit_histogram();
        let log_metrics = log.metrics();
        let access = Arc::new(Access::new(id, shared.clone()));
        let network = NetworkFactory {
            mesh: mesh.clone(),
            access: access.clone(),
        };
        let raft = Raft::new(id, raft_config, network, log, sm)
            .await
            .map_err(|e| ConsensusError::Raft(e.to_string()))?;
        let (leader_tx, _) = watch::channel(None);
        let core = Arc::new(Core {
            raft,
            mesh: mesh.clone(),
            access,
            shared,
            config,
            id,
            peer,
            me,
            token,
            assembler: Mutex::new(Assembler::default()),
            leader_tx,
            liveness: RwLock::new(HashMap::new()),
        });
        let quorum = Quorum {
            core: core.clone(),
            tasks: Arc::new(Mutex::new(Vec::new())),
            commits: commits.clone(),
        };
        let inbound = mesh
            .serve(ShoalProtocol::Raft)
            .await
            .map_err(|e| ConsensusError::Mesh(e.to_string()))?;
        quorum.spawn(crate::network::server::run(core.clone(), inbound));
        let appends = mesh
            .accept_streams(ShoalStream::RaftAppend)
            .map_err(|e| ConsensusError::Mesh(e.to_string()))?;
        quorum.spawn(crate::network::append_server::run(core.clone(), appends));
        refresh_liveness(&core).await;
        quorum.spawn(track_liveness(core.clone()));
        quorum.spawn(track_leader(
            core.clone(),
            RaftMetricsFamilies::register(registry, &snapshot_metrics, &commits, &log_metrics),
        ));
        if let Err(e) = crate::bootstrap::run(&core).await {
            quorum.shutdown().await;
            return Err(e);
        }
        quorum.spawn(crate::bootstrap::ensure_registered(core.clone()));
        if core.config.autopilot {
            quorum.spawn(crate::autopilot::run(core.clone()));
        }
        Ok(quorum)
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(fut).abort_handle();
        match self.tasks.lock() {
            Ok(mut g) => g.push(handle),
            Err(p) => p.into_inner().push(handle),
        }
    }

    /// This agent's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.core.peer
    }

    /// The cluster id, once this agent belongs to a cluster.
    pub fn cluster_id(&self) -> Option<String> {
        self.core.access.cluster_id()
    }

    /// Commits `cmd` and returns what applying it answered (a refused command is `Ok(Err(_))`).
    /// Works on any agent: followers forward to the leader.
    pub async fn write(&self, cmd: Command) -> Result<ApplyResult, WriteError> {
        let started = Instant::now();
        let result = self.write_once(cmd).await;
        if result.is_ok() {
            self.commits.observe(started.elapsed().as_secs_f64());
        }
        result
    }

    async fn write_once(&self, cmd: Command) -> Result<ApplyResult, WriteError> {
        let size = encode(&cmd)
            .map_err(|e| WriteError::Raft(e.to_string()))?
            .len();
        if size > MAX_COMMAND_BYTES {
            return Err(WriteError::TooLarge {
                size,
                limit: MAX_COMMAND_BYTES,
            });
        }
        let timeout = self.core.config.write_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(WriteError::Timeout(timeout));
            }
            let attempt = match self.core.leader() {
                Some((id, _)) if id == self.core.id => {
                    self.core.write_as_leader(cmd.clone(), remaining).await
                }
                Some((_, leader)) => self.forward_write(&leader, cmd.clone()).await,
                None => {
                    self.no_leader_yet()?;
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            match attempt {
                Ok(result) => return Ok(result),
                Err(ForwardFailure::NotLeader(_)) => tokio::time::sleep(RETRY_PAUSE).await,
                Err(ForwardFailure::NoQuorum { reachable, voters }) => {
                    return Err(WriteError::NoQuorum { reachable, voters });
                }
                Err(ForwardFailure::Uncertain) => return Err(WriteError::Uncertain),
                Err(ForwardFailure::Failed(why)) => {
                    tracing::debug!(why, "write attempt failed, retrying");
                    self.no_leader_yet()?;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// While there is no usable leader: fail at once if a quorum is out of reach.
    fn no_leader_yet(&self) -> Result<(), WriteError> {
        let voters = self.core.voters();
        if voters.is_empty() {
            return Err(WriteError::NotInitialised);
        }
        self.core.check_quorum().map_err(|f| match f {
            ForwardFailure::NoQuorum { reachable, voters } => {
                WriteError::NoQuorum { reachable, voters }
            }
            other => WriteError::Forward(format!("{other:?}")),
        })
    }

    async fn forward_write(
        &self,
        leader: &RaftNode,
        cmd: Command,
    ) -> Result<ApplyResult, ForwardFailure> {
        let peer =
            PeerId::from_str(&leader.peer_id).map_err(|e| ForwardFailure::Failed(e.to_string()))?;
        let body = RaftRequest::Write(Box::new(crate::types::LogCommand(cmd)));
        match send(&self.core.mesh, peer, self.cluster_id(), body).await {
            Ok(RaftResponse::Write(r)) => r,
            Ok(RaftResponse::Refused(why)) => Err(ForwardFailure::Failed(why)),
            Ok(other) => Err(ForwardFailure::Failed(format!(
                "unexpected answer {other:?}"
            ))),
            Err(SendError::Unreachable(m)) | Err(SendError::Other(m)) => {
                Err(ForwardFailure::Failed(m))
            }
        }
    }

    /// A linearizable read: the applied state once it includes every write committed before
    /// this call. Works on any agent (followers ask the leader for the read index).
    pub async fn read(&self) -> Result<Arc<ClusterState>, WriteError> {
        let timeout = self.core.config.write_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(WriteError::Timeout(timeout));
            }
            let index = match self.core.leader() {
                Some((id, _)) if id == self.core.id => {
                    self.core.read_index_as_leader(remaining).await
                }
                Some((_, leader)) => self.forward_read(&leader).await,
                None => {
                    self.no_leader_yet()?;
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            match index {
                Ok(index) => {
                    if self.core.wait_applied(index, remaining).await {
                        return Ok(self.core.state());
                    }
                    return Err(WriteError::Timeout(timeout));
                }
                Err(ForwardFailure::NoQuorum { reachable, voters }) => {
                    return Err(WriteError::NoQuorum { reachable, voters });
                }
                Err(_) => {
                    self.no_leader_yet()?;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    async fn forward_read(&self, leader: &RaftNode) -> Result<u64, ForwardFailure> {
        let peer =
            PeerId::from_str(&leader.peer_id).map_err(|e| ForwardFailure::Failed(e.to_string()))?;
        match send(
            &self.core.mesh,
            peer,
            self.cluster_id(),
            RaftRequest::ReadIndex,
        )
        .await
        {
            Ok(RaftResponse::ReadIndex(r)) => r,
            Ok(other) => Err(ForwardFailure::Failed(format!(
                "unexpected answer {other:?}"
            ))),
            Err(e) => Err(ForwardFailure::Failed(e.to_string())),
        }
    }

    /// The locally applied state (cheap; may lag the leader slightly).
    pub fn state(&self) -> Arc<ClusterState> {
        self.core.state()
    }

    /// A watch that changes after every apply.
    pub fn watch(&self) -> watch::Receiver<AppliedState> {
        self.core.shared.subscribe()
    }

    /// The leader as this agent knows it.
    pub fn leader(&self) -> watch::Receiver<Option<PeerId>> {
        self.core.leader_tx.subscribe()
    }

    /// Whether this agent is the leader now.
    pub fn is_leader(&self) -> bool {
        self.core.raft.metrics().borrow_watched().current_leader == Some(self.core.id)
    }

    /// A summary of the raft state.
    pub fn status(&self) -> QuorumStatus {
        let m = self.core.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        let peer_of = |id: u64| {
            membership
                .get_node(&id)
                .and_then(|n| PeerId::from_str(&n.peer_id).ok())
        };
        QuorumStatus {
            term: m.current_term,
            leader: m.current_leader.and_then(peer_of),
            voters: membership.voter_ids().filter_map(peer_of).collect(),
            learners: membership.learner_ids().filter_map(peer_of).collect(),
            applied: m.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
            last_log: m.last_log_index.unwrap_or(0),
            changing: membership.get_joint_config().len() > 1,
        }
    }

    /// Asks that this agent stop being a manager: the autopilot demotes it and never promotes it
    /// again (until the label `shoal.manager` is removed).
    pub async fn step_down(&self) -> Result<ApplyResult, WriteError> {
        let cmd = Command::UpdateNode {
            id: shoal_scheduler::NodeId::new(self.core.peer.to_string()),
            availability: None,
            role: None,
            labels_set: vec![(MANAGER_LABEL.to_owned(), "false".to_owned())],
            labels_remove: vec![],
        };
        self.write(cmd).await
    }

    /// The raw openraft handle (diagnostics and tests).
    pub fn raft(&self) -> &openraft::Raft<TypeConfig, crate::storage::StateMachine> {
        &self.core.raft
    }

    /// Stops raft and every task of this quorum (the mesh is left to its owner).
    pub async fn shutdown(&self) {
        let tasks = match self.tasks.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for t in tasks {
            t.abort();
        }
        if let Err(e) = self.core.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

async fn refresh_liveness(core: &Core) {
    if let Ok(members) = core.mesh.members().await {
        let mut g = match core.liveness.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.clear();
        g.extend(members.into_iter().map(|m| (m.peer_id, m.state)));
    }
}

/// Keeps `core.liveness` current from the mesh's membership changes.
async fn track_liveness(core: Arc<Core>) {
    let mut changes = core.mesh.subscribe();
    loop {
        let change = match changes.recv().await {
            Ok(c) => c,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                refresh_liveness(&core).await;
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let (peer, state) = match change {
            MembershipChange::Joined(m) => (m.peer_id, m.state),
            MembershipChange::Updated { current, .. } => (current.peer_id, current.state),
            MembershipChange::Suspect(p) => (p, MemberState::Suspect),
            MembershipChange::Alive(p) => (p, MemberState::Alive),
            MembershipChange::Dead(p) => (p, MemberState::Dead),
            MembershipChange::Left(p) => (p, MemberState::Left),
        };
        let mut g = match core.liveness.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.insert(peer, state);
    }
}

/// Publishes leader changes, updates metrics and announces the raft role in the mesh.
///
/// openraft's metrics change with every append and apply; the leader, role and term are only
/// worked out again (PeerId parsing, announcement) when the leader, term or membership changed.
async fn track_leader(core: Arc<Core>, metrics: RaftMetricsFamilies) {
    type Key = (Option<u64>, u64, Option<crate::types::LogId>);
    let mut rx = core.raft.metrics();
    let mut announced: Option<(Option<String>, RaftMembership, Option<PeerId>)> = None;
    let mut seen: Option<Key> = None;
    let mut view = (None, RaftMembership::None, 0, false);
    loop {
        {
            let m = rx.borrow_and_update();
            metrics.observe(&m, core.id);
            let key = (
                m.current_leader,
                m.current_term,
                *m.membership_config.log_id(),
            );
            if seen.as_ref() != Some(&key) {
                view = leader_view(&m, core.id);
                seen = Some(key);
            }
        }
        let (leader, membership, term, initialized) = view;
        core.leader_tx.send_if_modified(|current| {
            let changed = *current != leader;
            *current = leader;
            changed
        });
        let cluster_id = core.access.cluster_id();
        let now = (cluster_id, membership, leader);
        if announced.as_ref() != Some(&now) {
            let info = NodeInfo {
                cluster_id: now.0.clone(),
                role: if membership == RaftMembership::Voter {
                    NodeRole::Manager
                } else {
                    NodeRole::Worker
                },
                raft: RaftAnnouncement {
                    membership,
                    leader: leader.map(|p| p.to_string()),
                    term,
                    initialized,
                },
                ..core.config.node_info.clone()
            };
            if core.mesh.set_local_info(info).await.is_ok() {
                announced = Some(now);
            }
        }
        // Re-check now and then: the cluster id appears through apply, not through metrics.
        match tokio::time::timeout(Duration::from_millis(500), rx.changed()).await {
            Ok(Ok(())) | Err(_) => {}
            Ok(Err(_)) => return,
        }
    }
}

/// The leader's PeerId, this agent's membership, the term and whether raft is initialised.
fn leader_view(
    m: &openraft::RaftMetrics<TypeConfig>,
    me: u64,
) -> (Option<PeerId>, RaftMembership, u64, bool) {
    let mem = m.membership_config.membership();
    let leader = m
        .current_leader
        .and_then(|id| mem.get_node(&id))
        .and_then(|n| PeerId::from_str(&n.peer_id).ok());
    let membership = if mem.voter_ids().any(|v| v == me) {
        RaftMembership::Voter
    } else if mem.learner_ids().any(|l| l == me) {
        RaftMembership::Learner
    } else {
        RaftMembership::None
    };
    (
        leader,
        membership,
        m.current_term,
        mem.nodes().next().is_some(),
    )
}
