//! [`Core`]: what every part of a running quorum shares (the raft handle, the mesh, access
//! control, the applied state, liveness), and the leader-side operations that forwarded requests
//! end in.

use openraft::async_runtime::WatchReceiver;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::ReadPolicy;
use openraft::errors::ClientWriteError;
use shoal_discovery::{MemberState, Mesh, PeerId};
use shoal_scheduler::{ClusterState, Command};
use tokio::sync::watch;

use crate::config::QuorumConfig;
use crate::managers::Managers;
use crate::network::access::Access;
use crate::network::chunks::Assembler;
use crate::network::messages::ForwardFailure;
use crate::storage::state_machine::Shared;
use crate::token::Token;
use crate::types::{ApplyResult, Committed, LogCommand, RaftId, RaftNode, raft_id_of};

/// How often a waiting leader re-checks that a quorum is reachable.
const QUORUM_CHECK: Duration = Duration::from_millis(100);

/// The raft id of a PeerId.
pub fn raft_id_of_peer(peer: &PeerId) -> RaftId {
    raft_id_of(&peer.to_bytes())
}

/// The raft id of a PeerId in text form (None if it does not parse).
pub fn raft_id_of_str(peer: &str) -> Option<RaftId> {
    PeerId::from_str(peer).ok().map(|p| raft_id_of_peer(&p))
}

/// A raft node known only by its PeerId (a leader the managers named).
pub(crate) fn node_of(peer: &PeerId) -> (RaftId, RaftNode) {
    (
        raft_id_of_peer(peer),
        RaftNode {
            peer_id: peer.to_string(),
            addrs: Vec::new(),
        },
    )
}

/// Shared by the quorum handle, the network server, bootstrap, join and autopilot.
pub(crate) struct Core {
    pub(crate) raft: crate::lazy::LazyRaft,
    pub(crate) mesh: Mesh,
    pub(crate) access: Arc<Access>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) config: QuorumConfig,
    pub(crate) id: RaftId,
    pub(crate) peer: PeerId,
    pub(crate) me: RaftNode,
    pub(crate) token: Option<Token>,
    pub(crate) assembler: Arc<Mutex<Assembler>>,
    pub(crate) leader_tx: watch::Sender<Option<PeerId>>,
    /// Mesh liveness of peers, kept current from membership changes.
    pub(crate) liveness: RwLock<HashMap<PeerId, MemberState>>,
    /// The managers and the leader as they were told to this agent (what a non-voter goes by).
    pub(crate) managers: Arc<Managers>,
    /// Refused requests, by request and reason (`shoal_raft_refused_total`).
    pub(crate) refusals: crate::metrics::Refusals,
    /// The log index of this agent's stored membership when the leader said it is no member
    /// of the raft group (see [`Core::left_out`]); it is a member again only with a newer one.
    pub(crate) left_out_at: Mutex<Option<u64>>,
    /// When this agent's quorum started. For one write timeout after it, a voter the mesh has
    /// not heard of yet counts as reachable: a restarted agent hears its peers within a second
    /// or two, and until then "no quorum" would be a false alarm that fails every read and write.
    pub(crate) started: std::time::Instant,
}

impl Core {
    /// The applied state.
    pub(crate) fn state(&self) -> Arc<ClusterState> {
        self.shared.state()
    }

    /// The current leader's id and node, as this agent knows it: raft's own knowledge on a
    /// voter; on any other agent the newer of raft's (a learner's) and the managers' claim.
    pub(crate) fn leader(&self) -> Option<(RaftId, RaftNode)> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        let from_raft = m
            .current_leader
            .and_then(|id| membership.get_node(&id).map(|node| (id, node.clone())));
        if membership.voter_ids().any(|v| v == self.id) {
            return from_raft;
        }
        let claimed = self.managers.leader();
        match (from_raft, claimed) {
            (Some(raft), Some(claim)) if claim.term <= m.current_term => Some(raft),
            (_, Some(claim)) => Some(node_of(&claim.peer)),
            (raft, None) => raft,
        }
    }

    /// The raft members (voters and learners) of this agent's log, with the log index of
    /// their membership.
    pub(crate) fn members(&self) -> (std::collections::BTreeSet<String>, u64) {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let stored = &m.membership_config;
        let members = stored
            .membership()
            .nodes()
            .map(|(_, node)| node.peer_id.clone())
            .collect();
        (members, stored.log_id().as_ref().map_or(0, |l| l.index))
    }

    /// The current raft term as this agent knows it.
    pub(crate) fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// Whether this agent is a raft voter now.
    pub(crate) fn is_voter(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id)
    }

    /// Whether this agent is a raft member (voter or learner) with a state that the leader
    /// keeps current: in its log's membership, and not left out of a newer manager set that
    /// the leader told it (a learner removed while it was away never hears of its removal
    /// through its log).
    pub(crate) fn is_member(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let stored = &m.membership_config;
        if stored.membership().get_node(&self.id).is_none() {
            return false;
        }
        let epoch = stored.log_id().as_ref().map_or(0, |l| l.index);
        if *self.left_out_at.lock().unwrap_or_else(|p| p.into_inner()) == Some(epoch) {
            return false;
        }
        let told = self.managers.set();
        told.epoch <= epoch || told.members.contains(&self.peer.to_string())
    }

    /// The leader answered that this agent is no raft member: its stored membership (which still
    /// names it) is stale, removed while it could not hear so. It stops acting as a member until
    /// it receives a newer membership.
    pub(crate) fn left_out(&self) {
        let m = self.raft.metrics();
        let epoch = m
            .borrow_watched()
            .membership_config
            .log_id()
            .as_ref()
            .map_or(0, |l| l.index);
        tracing::info!(
            membership_index = epoch,
            "the leader says this agent is no raft member: acting as a plain worker"
        );
        *self.left_out_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(epoch);
    }

    /// Voters and their nodes.
    pub(crate) fn voters(&self) -> BTreeMap<RaftId, RaftNode> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|n| (id, n.clone())))
            .collect()
    }

    /// The mesh state of `peer` (None: never seen).
    pub(crate) fn peer_state(&self, peer: &PeerId) -> Option<MemberState> {
        let g = match self.liveness.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.get(peer).copied()
    }

    /// Whether the mesh currently sees `node` alive (this agent always is).
    pub(crate) fn is_alive(&self, node: &RaftNode) -> bool {
        if node.peer_id == self.me.peer_id {
            return true;
        }
        match PeerId::from_str(&node.peer_id) {
            Ok(p) => self.peer_state(&p) == Some(MemberState::Alive),
            Err(_) => false,
        }
    }

    /// Whether the mesh declared `node` dead or departed (suspects are not dead yet).
    pub(crate) fn is_dead(&self, node: &RaftNode) -> bool {
        if node.peer_id == self.me.peer_id {
            return false;
        }
        match PeerId::from_str(&node.peer_id) {
            Ok(p) => matches!(
                self.peer_state(&p),
                Some(MemberState::Dead | MemberState::Left) | None
            ),
            Err(_) => true,
        }
    }

    /// `(reachable, total)` voters as the mesh sees them (right after the start, those it has not
    /// heard of yet count as reachable: see [`Core::started`]).
    pub(crate) fn voter_reachability(&self) -> (usize, usize) {
        let voters = self.voters();
        let settling = self.started.elapsed() < self.config.write_timeout;
        let reachable = voters
            .values()
            .filter(|n| self.is_alive(n) || (settling && self.unheard(n)))
            .count();
        (reachable, voters.len())
    }

    /// Whether the mesh has said nothing yet about `node`.
    fn unheard(&self, node: &RaftNode) -> bool {
        PeerId::from_str(&node.peer_id).is_ok_and(|p| self.peer_state(&p).is_none())
    }

    /// Fails fast when too few voters are reachable to commit.
    pub(crate) fn check_quorum(&self) -> Result<(), ForwardFailure> {
        let (reachable, voters) = self.voter_reachability();
        if voters > 0 && reachable < voters / 2 + 1 {
            return Err(ForwardFailure::NoQuorum { reachable, voters });
        }
        Ok(())
    }

    /// Whether this agent is the leader and heard from a quorum recently.
    pub(crate) fn is_fresh_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let lease = self.config.timing.election_max * 2;
        m.current_leader == Some(self.id)
            && m.last_quorum_acked
                .as_ref()
                .is_some_and(|at| openraft::Instant::elapsed(&**at) <= lease)
    }

    /// Writes `cmd` on this agent, which must be the leader.
    pub(crate) async fn write_as_leader(
        &self,
        cmd: Command,
        timeout: Duration,
    ) -> Result<ApplyResult, ForwardFailure> {
        self.write_entry_as_leader(LogCommand::new(cmd, None), timeout)
            .await
            .map(|committed| committed.result)
    }

    /// Writes `entry` (a command and its request id) on this agent, which must be the leader.
    pub(crate) async fn write_entry_as_leader(
        &self,
        entry: LogCommand,
        timeout: Duration,
    ) -> Result<Committed, ForwardFailure> {
        if !self.is_fresh_leader() {
            self.check_quorum()?;
        }
        // An agent whose raft has not started leads nothing.
        let raft = self.raft.get().ok_or(ForwardFailure::NotLeader(None))?;
        let write = raft.client_write(entry);
        match self.bounded(timeout, write).await? {
            Some(Ok(resp)) => Ok(Committed {
                index: resp.log_id.index,
                result: resp.data,
            }),
            Some(Err(e)) => Err(match e.into_api_error() {
                Some(ClientWriteError::ForwardToLeader(f)) => {
                    ForwardFailure::NotLeader(f.leader_node)
                }
                Some(ClientWriteError::LogEntryDiscarded(_)) => ForwardFailure::Uncertain,
                Some(other) => ForwardFailure::Failed(other.to_string()),
                None => ForwardFailure::Failed("raft stopped".to_owned()),
            }),
            None => Err(ForwardFailure::Failed(format!(
                "not committed within {timeout:?}"
            ))),
        }
    }

    /// Awaits `fut` for at most `timeout`, failing early with `NoQuorum` once the mesh sees too
    /// few voters alive (a leader that lost its quorum would otherwise wait for the timeout).
    async fn bounded<T>(
        &self,
        timeout: Duration,
        fut: impl Future<Output = T>,
    ) -> Result<Option<T>, ForwardFailure> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut fut = std::pin::pin!(fut);
        loop {
            let check = tokio::time::Instant::now() + QUORUM_CHECK;
            tokio::select! {
                out = &mut fut => return Ok(Some(out)),
                _ = tokio::time::sleep_until(check.min(deadline)) => {
                    if tokio::time::Instant::now() >= deadline {
                        self.check_quorum()?;
                        return Ok(None);
                    }
                    if !self.is_fresh_leader() {
                        self.check_quorum()?;
                    }
                }
            }
        }
    }

    /// Confirms leadership with a quorum and returns the index a linearizable read must see.
    pub(crate) async fn read_index_as_leader(
        &self,
        timeout: Duration,
    ) -> Result<u64, ForwardFailure> {
        if !self.is_fresh_leader() {
            self.check_quorum()?;
        }
        let raft = self.raft.get().ok_or(ForwardFailure::NotLeader(None))?;
        let read = raft.ensure_linearizable(ReadPolicy::ReadIndex);
        match self.bounded(timeout, read).await? {
            Some(Ok(read_id)) => Ok(read_id.index()),
            Some(Err(e)) => Err(match e.into_api_error() {
                Some(openraft::errors::LinearizableReadError::ForwardToLeader(f)) => {
                    ForwardFailure::NotLeader(f.leader_node)
                }
                Some(other) => ForwardFailure::Failed(other.to_string()),
                None => ForwardFailure::Failed("raft stopped".to_owned()),
            }),
            None => Err(ForwardFailure::Failed(format!(
                "leadership not confirmed within {timeout:?}"
            ))),
        }
    }

    /// Waits until the local state machine applied `index`.
    pub(crate) async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut rx = self.shared.subscribe();
        let reached = |s: &crate::storage::AppliedState| {
            s.last_applied.as_ref().map(|l| l.index).unwrap_or(0) >= index
        };
        tokio::time::timeout(timeout, rx.wait_for(reached))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}
