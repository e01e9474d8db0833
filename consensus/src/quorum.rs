//! [`Quorum`]: the cloneable handle the agent holds. Writes work on any agent (followers forward
//! to the leader over the mesh), reads are linearizable, and the applied state is watchable.

use openraft::async_runtime::WatchReceiver;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use shoal_discovery::{
    Member, MemberState, MembershipChange, Mesh, NodeInfo, NodeRole, PeerId, RaftAnnouncement,
    RaftMembership, ShoalProtocol, ShoalStream,
};
use shoal_metrics::prometheus_client::metrics::histogram::Histogram;
use shoal_metrics::prometheus_client::registry::Registry;
use shoal_scheduler::{ClusterState, Command, Credential, RequestId};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::codec::encode;
use crate::config::QuorumConfig;
use crate::core::{Core, raft_id_of_peer};
use crate::error::{ConsensusError, WriteError};
use crate::events::{EventCursor, EventPage};
use crate::join::MANAGER_LABEL;
use crate::lazy::{LazyRaft, RaftParts};
use crate::limits::MAX_COMMAND_BYTES;
use crate::managers::{LeaderClaim, Managers};
use crate::metrics::RaftMetricsFamilies;
use crate::network::access::Access;
use crate::network::chunks::Assembler;
use crate::network::client::{NetworkFactory, SendError, send};
use crate::network::messages::{ForwardFailure, RaftRequest, RaftResponse};
use crate::storage::{self, AppliedState};
use crate::token::Token;
use crate::types::{ApplyResult, Committed, LogCommand, RaftNode, TypeConfig};

/// How long a forwarding agent waits between attempts while there is no leader.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// The raft members as the leader tells them to workers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManagerList {
    /// Log index of the membership the list describes.
    pub epoch: u64,
    /// The members' PeerIds in text form (voters and learners).
    pub members: Vec<String>,
}

/// A fresh random request id.
pub fn new_request_id() -> RequestId {
    let mut bytes = [0u8; 8];
    // A failing system RNG leaves a zero id, which is only as good as no id: a retry of that
    // write may apply twice, as without idempotency.
    let _ = getrandom::getrandom(&mut bytes);
    RequestId(u64::from_le_bytes(bytes))
}

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

/// Resolves once `leader` (a fresh [`Quorum::leader`] receiver, or any watch of the leader),
/// which shows `from` leading now, shows another leader or none; never, if `from` does not lead
/// now or the watch closes first. A call waiting on the leader `from` races this to move on to
/// the new leader at once instead of waiting out its timeout.
pub async fn leader_moved_from(mut leader: watch::Receiver<Option<PeerId>>, from: PeerId) {
    if *leader.borrow_and_update() != Some(from) {
        return std::future::pending::<()>().await;
    }
    while leader.changed().await.is_ok() {
        if *leader.borrow_and_update() != Some(from) {
            return;
        }
    }
    std::future::pending::<()>().await;
}

/// The cloneable handle to this agent's part of the quorum. Cloning is shallow.
#[derive(Clone)]
pub struct Quorum {
    core: Arc<Core>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    /// `shoal_raft_commit_seconds`.
    commits: Histogram,
    /// The larger cluster a lone one yields to (see [`crate::lone`]).
    yields: watch::Receiver<Option<crate::YieldTo>>,
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
        let managers = Arc::new(Managers::load(&config.data_dir));
        let snapshot_dir = storage::snapshot::SnapshotDir::open(&config.data_dir)?;
        let raft_key = token.as_ref().and_then(Token::raft_key);
        let access = Arc::new(Access::new(
            peer,
            shared.clone(),
            managers.clone(),
            raft_key,
            token.is_some(),
        ));
        let refusals = crate::metrics::Refusals::default();
        let network = NetworkFactory {
            mesh: mesh.clone(),
            access: access.clone(),
        };
        // An agent with raft state on disk takes part in raft now; any other starts raft on
        // first need (see `lazy`).
        let has_state = {
            use openraft::storage::{RaftLogReader, RaftLogStorage};
            let mut log = log.clone();
            let vote = log.read_vote().await?;
            let last = log.get_log_state().await?;
            vote.is_some() || last.last_log_id.is_some()
        };
        let raft = LazyRaft::new(
            id,
            RaftParts {
                config: raft_config,
                network,
                log,
                sm,
            },
        );
        if has_state {
            raft.start().await?;
        }
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
            assembler: Arc::new(Mutex::new(Assembler::new(snapshot_dir))),
            leader_tx,
            liveness: RwLock::new(HashMap::new()),
            managers,
            refusals: refusals.clone(),
            left_out_at: Mutex::new(None),
            started: std::time::Instant::now(),
        });
        let (yields_tx, yields) = watch::channel(None);
        let quorum = Quorum {
            core: core.clone(),
            tasks: Arc::new(Mutex::new(Vec::new())),
            commits: commits.clone(),
            yields,
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
            RaftMetricsFamilies::register(
                registry,
                &snapshot_metrics,
                &commits,
                &log_metrics,
                &refusals,
            ),
        ));
        if let Err(e) = crate::bootstrap::run(&core).await {
            quorum.shutdown().await;
            return Err(e);
        }
        quorum.spawn(crate::bootstrap::ensure_registered(core.clone()));
        let restarted_worker = !core.is_member() && core.managers.set().cluster_id.is_some();
        if restarted_worker && !core.raft.is_initialized().await.unwrap_or(true) {
            quorum.spawn(crate::bootstrap::rejoin(core.clone()));
        }
        if core.config.autopilot {
            quorum.spawn(crate::autopilot::run(core.clone()));
        }
        if core.config.bootstrap_expect.is_none() {
            quorum.spawn(crate::lone::watch(core.clone(), yields_tx));
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

    /// Resolves once this agent's cluster is only itself, holds nothing a user made, and a
    /// larger cluster is heard on its network (see `lone`): the agent should then stop, set its
    /// cluster aside ([`crate::storage::set_aside`]) and join that one. Pending for good
    /// otherwise.
    pub async fn lone_cluster_yields(&self) -> crate::YieldTo {
        let mut yields = self.yields.clone();
        loop {
            if let Some(target) = yields.borrow_and_update().clone() {
                return target;
            }
            if yields.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
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

    /// How many managers this agent's autopilot keeps when it leads (fewer while the cluster has
    /// too few eligible nodes).
    pub fn manager_target(&self) -> usize {
        self.core.config.target_managers
    }

    /// The join token of `role` that new agents must present now, given the cluster's join
    /// rotations `keys`. Only an agent holding a manager token can derive it.
    pub fn join_token(
        &self,
        role: shoal_scheduler::join_keys::JoinRole,
        keys: &shoal_scheduler::join_keys::JoinKeys,
    ) -> Result<String, crate::token::NoJoinToken> {
        let token = self
            .core
            .token
            .as_ref()
            .ok_or(crate::token::NoJoinToken::OpenCluster)?;
        token
            .join_token(role, keys.of(role).current.as_ref())
            .ok_or(crate::token::NoJoinToken::WorkerToken)
    }

    /// The token this agent runs with, as far as it may be shown: its role and the cluster
    /// secret's fingerprint. `None` in open mode.
    pub fn token_summary(&self) -> Option<(crate::TokenRole, String)> {
        self.core
            .token
            .as_ref()
            .map(|token| (token.role(), token.fingerprint()))
    }

    /// Commits `cmd` and returns what applying it answered (a refused command is `Ok(Err(_))`).
    /// Works on any agent: followers and workers forward to the leader. A command that a retry
    /// could apply twice gets a request id of its own, so that the retries this call makes
    /// (after a leader change or a lost answer) are applied at most once.
    pub async fn write(&self, cmd: Command) -> Result<ApplyResult, WriteError> {
        let request = cmd.wants_request_id().then(new_request_id);
        self.write_request(request, cmd)
            .await
            .map(|committed| committed.result)
    }

    /// Commits `cmd` as the client request `request`: a request already applied (a client's
    /// retry after a timeout) is answered with its first outcome and changes nothing. The answer
    /// carries the log index the entry committed at (see [`Quorum::read_at_least`]).
    pub async fn write_request(
        &self,
        request: Option<RequestId>,
        cmd: Command,
    ) -> Result<Committed, WriteError> {
        let started = Instant::now();
        let result = self.write_once(LogCommand::new(cmd, request)).await;
        if result.is_ok() {
            self.commits.observe(started.elapsed().as_secs_f64());
        }
        result
    }

    async fn write_once(&self, entry: LogCommand) -> Result<Committed, WriteError> {
        let size = encode(&entry.command)
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
                    self.core
                        .write_entry_as_leader(entry.clone(), remaining)
                        .await
                }
                Some((_, leader)) => self.forward_write(&leader, entry.clone()).await,
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
                Err(ForwardFailure::NotAMember) => return Err(WriteError::NotAMember),
                Err(ForwardFailure::Failed(why)) => {
                    tracing::debug!(why, "write attempt failed, retrying");
                    self.no_leader_yet()?;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// While there is no usable leader: fail at once if a quorum is out of reach. A worker
    /// waits for the managers to name one.
    fn no_leader_yet(&self) -> Result<(), WriteError> {
        let voters = self.core.voters();
        if voters.is_empty() {
            if self.core.managers.set().members.is_empty() {
                return Err(WriteError::NotInitialised);
            }
            return Ok(());
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
        entry: LogCommand,
    ) -> Result<Committed, ForwardFailure> {
        let peer =
            PeerId::from_str(&leader.peer_id).map_err(|e| ForwardFailure::Failed(e.to_string()))?;
        let body = RaftRequest::Write(Box::new(entry));
        // A leader that died without closing its connections never answers: once another
        // leader is known, the write goes to it (its request id makes a second copy apply once).
        let answer = tokio::select! {
            answer = send(&self.core.mesh, &self.core.access, peer, body) => answer,
            () = leader_moved_from(self.leader(), peer) => {
                return Err(ForwardFailure::Failed(format!("the leader moved from {peer}")));
            }
        };
        if matches!(
            answer,
            Err(_) | Ok(RaftResponse::Write(Err(ForwardFailure::NotLeader(_))))
        ) {
            // A worker follows the managers' word: this one no longer leads, or is gone.
            self.core.managers.forget_leader(&peer);
        }
        match answer {
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

    /// This agent's applied state once it includes log index `index` (a write's
    /// [`Committed::index`]): a client that wrote through one agent reads its own write through
    /// any other member without a round to the leader. Waits at most the write timeout; an
    /// agent that holds no replica gets [`WriteError::NotAMember`].
    pub async fn read_at_least(&self, index: u64) -> Result<Arc<ClusterState>, WriteError> {
        if !self.core.is_member() {
            return Err(WriteError::NotAMember);
        }
        let timeout = self.core.config.write_timeout;
        let raft = self.core.raft.get().ok_or(WriteError::NotAMember)?;
        raft.wait(Some(timeout))
            .applied_index_at_least(Some(index), "read at least index")
            .await
            .map_err(|_| WriteError::ReadTimeout(timeout))?;
        Ok(self.state())
    }

    /// A linearizable read: the applied state once it includes every write committed before
    /// this call. Works on raft members (followers and learners ask the leader for the read
    /// index); an agent that holds no replica of the state gets [`WriteError::NotAMember`] and
    /// asks a manager instead.
    pub async fn read(&self) -> Result<Arc<ClusterState>, WriteError> {
        if !self.core.is_member() {
            return Err(WriteError::NotAMember);
        }
        let timeout = self.core.config.write_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(WriteError::ReadTimeout(timeout));
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
                    return Err(WriteError::ReadTimeout(timeout));
                }
                Err(ForwardFailure::NoQuorum { reachable, voters }) => {
                    return Err(WriteError::NoQuorum { reachable, voters });
                }
                Err(ForwardFailure::NotAMember) => return Err(WriteError::NotAMember),
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
            &self.core.access,
            peer,
            RaftRequest::ReadIndex,
        )
        .await
        {
            Ok(RaftResponse::ReadIndex(Err(ForwardFailure::NotAMember))) => {
                self.core.left_out();
                Err(ForwardFailure::NotAMember)
            }
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

    /// Up to `limit` of this agent's recent cluster events after `after` (see
    /// [`crate::events`]). An agent that holds no replica has none: ask a manager.
    pub fn events(&self, after: EventCursor, limit: usize) -> EventPage {
        self.core.shared.events.page(after, limit)
    }

    /// The cursor after this agent's newest event: reading after it gets only new events.
    pub fn events_end(&self) -> EventCursor {
        self.core.shared.events.end()
    }

    /// A watch that changes whenever this agent records events.
    pub fn watch_events(&self) -> watch::Receiver<u64> {
        self.core.shared.events.subscribe()
    }

    /// The leader as this agent knows it.
    pub fn leader(&self) -> watch::Receiver<Option<PeerId>> {
        self.core.leader_tx.subscribe()
    }

    /// Whether this agent is the leader now.
    pub fn is_leader(&self) -> bool {
        self.core.raft.metrics().borrow_watched().current_leader == Some(self.core.id)
    }

    /// Whether this agent holds a replica of the cluster state that the leader keeps current
    /// (a raft voter or learner). Every other agent is a worker that asks a manager.
    pub fn is_member(&self) -> bool {
        self.core.is_member()
    }

    /// The current raft term as this agent knows it.
    pub fn term(&self) -> u64 {
        self.core.term()
    }

    /// The raft members (voters and learners) and the log index of their membership: what the
    /// leader tells workers so that they know whom to trust.
    pub fn managers(&self) -> ManagerList {
        let (members, epoch) = self.core.members();
        ManagerList {
            epoch,
            members: members.into_iter().collect(),
        }
    }

    /// The managers as this agent knows them (its own log's on a member, what it was told on a
    /// worker).
    pub fn known_managers(&self) -> Vec<PeerId> {
        self.core.managers.peers()
    }

    /// The epoch of the manager set this agent holds (what a worker tells the leader).
    pub fn known_managers_epoch(&self) -> u64 {
        self.core.managers.set().epoch
    }

    /// Takes a manager set that `from` sent (the leader's answer to a heartbeat): kept only if
    /// `from` is a manager already and the set is newer than the one held.
    pub fn learn_managers(&self, from: &PeerId, list: &ManagerList) -> bool {
        let Some(cluster) = self.cluster_id() else {
            return false;
        };
        if !self.core.managers.contains(from) {
            return false;
        }
        let members = list.members.iter().cloned().collect();
        self.core.managers.learn(&cluster, list.epoch, members)
    }

    /// Whether `peer` leads this cluster in `term`, as `peer` itself says (a dispatcher message
    /// or a heartbeat answer). A voter goes by raft alone; any other agent takes the claim if
    /// `peer` is one of its managers and the term is not older than the leader it knew.
    pub fn claim_leader(&self, peer: PeerId, term: u64) -> bool {
        if self.core.is_voter() {
            return *self.core.leader_tx.borrow() == Some(peer);
        }
        self.core
            .managers
            .claim_leader(&peer, LeaderClaim { peer, term })
    }

    /// Forgets `peer` as the leader (it answered that it does not lead); the next claim is
    /// taken from the managers.
    pub fn not_leader(&self, peer: &PeerId) {
        if !self.core.is_voter() {
            self.core.managers.forget_leader(peer);
        }
    }

    /// Waits until this agent, as the leader, has applied an entry of its own term: its state
    /// then holds every write committed before it led, so what it decides and sends from that
    /// state never undoes them. False if it stopped leading first or `timeout` passed.
    pub async fn ready_as_leader(&self, timeout: Duration) -> bool {
        use openraft::vote::RaftLeaderId;
        let mut metrics = self.core.raft.metrics();
        let me = self.core.id;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (leading, ready) = {
                let m = metrics.borrow_watched();
                let own_term = m
                    .last_applied
                    .as_ref()
                    .is_some_and(|l| l.committed_leader_id().term() == m.current_term);
                (m.current_leader == Some(me), own_term)
            };
            if !leading || ready {
                return leading && ready;
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return false,
            }
        }
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

    /// The raw openraft handle (diagnostics and tests); `None` on an agent that has taken no
    /// part in raft yet (a plain worker starts raft only when it has to).
    pub fn raft(&self) -> Option<&openraft::Raft<TypeConfig, crate::storage::StateMachine>> {
        self.core.raft.get()
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
        self.core.raft.shutdown().await;
    }
}

async fn refresh_liveness(core: &Core) {
    if let Ok(members) = core.mesh.members().await {
        for member in &members {
            take_leader_announcement(core, member);
        }
        let mut g = match core.liveness.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.clear();
        g.extend(members.into_iter().map(|m| (m.peer_id, m.state)));
    }
}

/// A manager's heartbeat names the leader it knows: a worker takes it (see [`Managers`]).
fn take_leader_announcement(core: &Core, member: &Member) {
    let raft = &member.info.raft;
    let ours = core.access.cluster_id();
    if member.state != MemberState::Alive
        || raft.membership != RaftMembership::Voter
        || ours.is_none()
        || member.info.cluster_id != ours
    {
        return;
    }
    let Some(leader) = raft
        .leader
        .as_deref()
        .and_then(|l| PeerId::from_str(l).ok())
    else {
        return;
    };
    let claim = LeaderClaim {
        peer: leader,
        term: raft.term,
    };
    core.managers.claim_leader(&member.peer_id, claim);
}

/// Keeps `core.liveness` current from the mesh's membership changes, takes the managers'
/// leader announcements, and forgets a leader that died or left.
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
            MembershipChange::Joined(m) | MembershipChange::Updated { current: m, .. } => {
                take_leader_announcement(&core, &m);
                (m.peer_id, m.state)
            }
            MembershipChange::Suspect(p) => (p, MemberState::Suspect),
            MembershipChange::Alive(p) => (p, MemberState::Alive),
            MembershipChange::Dead(p) => (p, MemberState::Dead),
            MembershipChange::Left(p) => (p, MemberState::Left),
        };
        if matches!(state, MemberState::Dead | MemberState::Left) {
            core.managers.forget_leader(&peer);
        }
        let mut g = match core.liveness.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.insert(peer, state);
    }
}

/// Publishes leader changes, updates metrics, keeps the manager set of a member current from
/// its log, and announces the raft role in the mesh.
///
/// openraft's metrics change with every append and apply; the leader, role and term are only
/// worked out again (PeerId parsing, announcement) when the leader, term or membership changed,
/// or when the managers named another leader.
async fn track_leader(core: Arc<Core>, metrics: RaftMetricsFamilies) {
    type Key = (Option<u64>, u64, Option<crate::types::LogId>);
    // Until raft starts (see `lazy`) these are an uninitialised node's metrics, changed once
    // when it starts: then the started raft's are taken.
    let mut on_started = core.raft.started();
    let mut rx = core.raft.metrics();
    let mut claims = core.managers.watch_leader();
    let mut announced: Option<(Option<String>, RaftMembership, Option<PeerId>, u64)> = None;
    let mut seen: Option<Key> = None;
    let mut view = (RaftMembership::None, 0, false);
    // Whether anything but the log's progress may have changed since the last round.
    let mut dirty = true;
    // Whether the announced cluster id is settled (see below); until then every metrics
    // change looks for it.
    let mut settled = false;
    let mut recheck = tokio::time::interval(Duration::from_millis(500));
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if !on_started && core.raft.started() {
            on_started = true;
            rx = core.raft.metrics();
        }
        {
            let m = rx.borrow_and_update();
            metrics.observe(&m, core.id);
            let key = (
                m.current_leader,
                m.current_term,
                *m.membership_config.log_id(),
            );
            if seen.as_ref() != Some(&key) {
                view = raft_view(&m, core.id);
                seen = Some(key);
                dirty = true;
            }
        }
        if !settled && core.state().cluster_id.is_some() {
            dirty = true; // the cluster's id just applied: announce it at once
        }
        if !dirty {
            if !wait_for_change(&mut rx, &mut claims, &mut recheck, &mut dirty).await {
                return;
            }
            continue;
        }
        dirty = false;
        claims.borrow_and_update();
        let (membership, term, initialized) = view;
        let membership = match membership {
            RaftMembership::Learner if !core.is_member() => RaftMembership::None,
            other => other,
        };
        let leader = core
            .leader()
            .and_then(|(_, node)| PeerId::from_str(&node.peer_id).ok());
        let leader_changed = core.leader_tx.send_if_modified(|current| {
            let changed = *current != leader;
            *current = leader;
            changed
        });
        if leader_changed && let Some(leader) = leader {
            record_leader_change(&core, leader, term);
        }
        // Announced only once settled: an agent that initialised a cluster but has not
        // committed its id yet needs the other voters' votes, and must not look like the
        // manager of a formed cluster to them (they would try to join it instead).
        let cluster_id = core.access.settled_cluster_id();
        settled = cluster_id.is_some();
        if membership != RaftMembership::None
            && let Some(cluster) = &cluster_id
        {
            let (members, epoch) = core.members();
            core.managers.learn(cluster, epoch, members);
        }
        let now = (cluster_id, membership, leader, term);
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
                    worker_only: crate::join::own_credential(&core) == Credential::Worker,
                },
                ..core.config.node_info.clone()
            };
            if core.mesh.set_local_info(info).await.is_ok() {
                announced = Some(now);
            }
        }
        if !wait_for_change(&mut rx, &mut claims, &mut recheck, &mut dirty).await {
            return;
        }
    }
}

/// Records a new leader in this agent's events, after what it has applied so far.
fn record_leader_change(core: &Core, leader: PeerId, term: u64) {
    let applied = core.shared.subscribe().borrow().last_applied;
    let index = applied.map_or(0, |l| l.index);
    let event = shoal_scheduler::events::Event {
        index,
        seq: 0,
        time: crate::storage::state_machine::wall_clock(),
        kind: shoal_scheduler::events::EventKind::LeaderElected {
            leader: leader.to_string(),
            term,
        },
    };
    core.shared.events.push_local(index, event);
}

/// Waits for raft's metrics or the managers' leader claims to change, or for the next tick of
/// `recheck` (the cluster id appears through apply, not through metrics; a steady stream of
/// appends must not put the recheck off). A claim or the timer makes the
/// next round `dirty`; a metrics change does only if its leader, term or membership moved,
/// which the caller works out. Returns false once either source is gone.
async fn wait_for_change(
    rx: &mut openraft::type_config::alias::WatchReceiverOf<
        TypeConfig,
        openraft::RaftMetrics<TypeConfig>,
    >,
    claims: &mut watch::Receiver<crate::managers::Known>,
    recheck: &mut tokio::time::Interval,
    dirty: &mut bool,
) -> bool {
    tokio::select! {
        changed = rx.changed() => changed.is_ok(),
        changed = claims.changed() => {
            *dirty = true;
            changed.is_ok()
        }
        _ = recheck.tick() => {
            *dirty = true;
            true
        }
    }
}

/// This agent's membership, the term and whether raft is initialised.
fn raft_view(m: &openraft::RaftMetrics<TypeConfig>, me: u64) -> (RaftMembership, u64, bool) {
    let mem = m.membership_config.membership();
    let membership = if mem.voter_ids().any(|v| v == me) {
        RaftMembership::Voter
    } else if mem.learner_ids().any(|l| l == me) {
        RaftMembership::Learner
    } else {
        RaftMembership::None
    };
    (membership, m.current_term, mem.nodes().next().is_some())
}

#[cfg(test)]
mod leader_moves {
    use std::time::Duration;

    use super::*;

    async fn resolves(future: impl std::future::Future<Output = ()>) -> bool {
        tokio::time::timeout(Duration::from_millis(100), future)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_new_leader_ends_the_wait_and_the_same_one_does_not() {
        let (old, new) = (PeerId::random(), PeerId::random());
        let (tx, rx) = watch::channel(Some(old));
        let waiting = tokio::spawn(leader_moved_from(rx.clone(), old));
        tx.send_replace(Some(old));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the same leader again is no move");
        tx.send_replace(Some(new));
        assert!(resolves(async { waiting.await.unwrap_or(()) }).await);
        // A call to a manager that does not lead is never cut by leader moves.
        assert!(!resolves(leader_moved_from(rx.clone(), old)).await);
        let follower = PeerId::random();
        let waiting = tokio::spawn(leader_moved_from(rx, follower));
        tx.send_replace(None);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        waiting.abort();
    }
}
