//! Zero-config bootstrap. An agent without raft state listens for a short window:
//! - it hears a cluster (a member announcing a cluster id and a leader or a voter) -> it joins it;
//! - it hears only unclustered agents -> the lowest PeerId initialises alone, the others join it;
//! - it hears no one -> it initialises a single-voter cluster;
//! - with `bootstrap_expect = N` it waits for N agents and the lowest initialises with all N voters.
//!
//! Agents with a worker token take no part: none of them is counted, and they only join.
//!
//! An agent that joined a cluster as a worker keeps no raft state but remembers its cluster and
//! managers ([`crate::managers`]): restarted, it goes back to that cluster ([`rejoin`]) and never
//! forms another one, however long its managers take to answer.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_discovery::{Member, MemberState, PeerId, RaftMembership};
use shoal_scheduler::{ClusterId, Command, Credential};

use crate::core::{Core, raft_id_of_peer};
use crate::error::ConsensusError;
use crate::join::{join_via, own_credential, self_node};
use crate::types::{RaftId, RaftNode};

const POLL: Duration = Duration::from_millis(50);

/// Forms or joins a cluster unless this agent already has raft state.
pub(crate) async fn run(core: &Arc<Core>) -> Result<(), ConsensusError> {
    if core.raft.is_initialized().await? {
        tracing::info!("raft state found on disk: rejoining as before");
        return Ok(());
    }
    if let Some(cluster) = core.managers.set().cluster_id {
        tracing::info!(%cluster, "this worker belongs to a cluster: going back to it");
        return Ok(());
    }
    if own_credential(core) == Credential::Worker {
        return join_as_worker(core).await;
    }
    match core.config.bootstrap_expect {
        Some(n) => expect(core, n).await,
        None => zero_config(core).await,
    }
}

/// An agent with a worker token never forms a cluster: it waits (bounded) for a manager of
/// one to show up, then joins it.
async fn join_as_worker(core: &Core) -> Result<(), ConsensusError> {
    let limit = core.config.join_timeout;
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let members = alive_members(core).await;
        if let Some((via, cluster)) = members.iter().find_map(clustered_manager) {
            return join(core, via, cluster).await;
        }
        tokio::time::sleep(POLL).await;
    }
    Err(ConsensusError::JoinFailed(format!(
        "no manager appeared within {limit:?}; an agent with a worker token only joins a \
         cluster, it never forms one: start a manager first, or give this agent --join"
    )))
}

/// A member that belongs to a cluster and is a manager there.
fn clustered_manager(m: &Member) -> Option<(PeerId, String)> {
    let cluster = m.info.cluster_id.clone()?;
    (m.state == MemberState::Alive && m.info.raft.membership == RaftMembership::Voter)
        .then_some((m.peer_id, cluster))
}

/// An agent that has no cluster yet and may form one (it holds no worker token).
fn unclustered(m: &Member) -> bool {
    m.state == MemberState::Alive
        && m.info.cluster_id.is_none()
        && !m.info.raft.initialized
        && !m.info.raft.worker_only
}

async fn alive_members(core: &Core) -> Vec<Member> {
    core.mesh.members().await.unwrap_or_default()
}

/// Whether some connected peer has not announced itself in the membership view yet.
async fn connected_but_unheard(core: &Core, members: &[Member]) -> bool {
    let heard: BTreeSet<PeerId> = members.iter().map(|m| m.peer_id).collect();
    let connected = core.mesh.connected_peers().await.unwrap_or_default();
    connected.iter().any(|peer| !heard.contains(peer))
}

async fn zero_config(core: &Arc<Core>) -> Result<(), ConsensusError> {
    let limit = core.config.join_timeout;
    let give_up = Instant::now() + limit;
    let mut warned = false;
    loop {
        let heard = match listen(core).await {
            Heard::Cluster { via, cluster } => return join(core, via, cluster).await,
            Heard::Unclustered(heard) => heard,
        };
        // An agent given peers to join never forms a cluster alone: the peers it was given may
        // be slow, or refuse it for want of the cluster's token.
        if !heard.is_empty() || !core.config.join_given {
            return decide(core, heard).await;
        }
        if Instant::now() >= give_up {
            return Err(ConsensusError::JoinFailed(format!(
                "no agent answered at --join within {limit:?}. {NO_ANSWER_HINT}"
            )));
        }
        if !warned {
            tracing::warn!("no agent answers at --join yet; still trying. {NO_ANSWER_HINT}");
            warned = true;
        }
    }
}

/// What to check when the agents given with `--join` do not answer.
const NO_ANSWER_HINT: &str = "Check the address and that its agent runs; a closed cluster \
    answers only agents that hold its token (SHOAL_TOKEN or --token-file). An agent given \
    --join never forms a cluster of its own.";

/// What an agent without raft state heard during its bootstrap window.
enum Heard {
    /// A manager of a cluster, to join through.
    Cluster { via: PeerId, cluster: String },
    /// Only agents without a cluster that may form one (none at all, possibly).
    Unclustered(BTreeSet<PeerId>),
}

/// Listens for one bootstrap window (longer while connected peers have not announced
/// themselves yet).
async fn listen(core: &Arc<Core>) -> Heard {
    let window_end = Instant::now() + core.config.bootstrap_window;
    // Peers we are connected to but have not heard announce themselves yet may belong to a
    // cluster: deciding without them could start a second cluster next to theirs. Wait for
    // them, up to a bound.
    let hard_end = window_end + core.config.bootstrap_window * 4;
    let mut heard_unclustered = BTreeSet::new();
    loop {
        let now = Instant::now();
        let members = alive_members(core).await;
        if let Some((via, cluster)) = members.iter().find_map(clustered_manager) {
            return Heard::Cluster { via, cluster };
        }
        heard_unclustered.extend(members.iter().filter(|m| unclustered(m)).map(|m| m.peer_id));
        if now >= hard_end || (now >= window_end && !connected_but_unheard(core, &members).await) {
            return Heard::Unclustered(heard_unclustered);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Having heard only the unclustered agents `heard`: the lowest PeerId initialises alone, the
/// others wait for its cluster and join it.
async fn decide(
    core: &Arc<Core>,
    heard_unclustered: BTreeSet<PeerId>,
) -> Result<(), ConsensusError> {
    let lowest = heard_unclustered
        .iter()
        .next()
        .is_none_or(|p| core.peer < *p);
    if lowest {
        tracing::info!(
            peers = heard_unclustered.len(),
            "initialising a new cluster"
        );
        return initialise(core, BTreeMap::from([(core.id, core.me.clone())])).await;
    }
    // Someone lower initialises: wait until its cluster shows up, then join.
    let give_up = Instant::now() + core.config.bootstrap_window * 10 + Duration::from_secs(5);
    while Instant::now() < give_up {
        let members = alive_members(core).await;
        if let Some((via, cluster)) = members.iter().find_map(clustered_manager) {
            return join(core, via, cluster).await;
        }
        // The lower agent vanished before initialising, or turned out to hold a worker token
        // (its first announcements may not say so yet): start over as if alone.
        let lower_may_form = members.iter().any(|m| {
            matches!(m.state, MemberState::Alive | MemberState::Suspect)
                && m.peer_id < core.peer
                && heard_unclustered.contains(&m.peer_id)
                && !m.info.raft.worker_only
        });
        if !lower_may_form {
            tracing::info!("the agent expected to initialise is gone: initialising");
            return initialise(core, BTreeMap::from([(core.id, core.me.clone())])).await;
        }
        tokio::time::sleep(POLL).await;
    }
    Err(ConsensusError::JoinFailed(
        "no cluster appeared after bootstrap".to_owned(),
    ))
}

/// Waits for `n` agents that may form a cluster; the lowest of the `n` lowest initialises with
/// all of them as voters and the others wait for its log.
///
/// An agent that initialised already announces `initialized` without a cluster id until its
/// first entry commits, and that entry needs the others' votes: so it still counts here, and
/// raft RPCs from every agent taking part are let in while waiting. Otherwise one that heard
/// the lowest only once it had initialised would refuse its votes, and the lowest could never
/// commit (two agents waiting for a third that waits for them).
async fn expect(core: &Arc<Core>, n: usize) -> Result<(), ConsensusError> {
    let deadline = Instant::now() + core.config.bootstrap_expect_timeout;
    while Instant::now() < deadline {
        let members = alive_members(core).await;
        let mut set: Vec<(PeerId, RaftNode)> = members
            .iter()
            .filter(|m| bootstrapping(m))
            .map(|m| (m.peer_id, raft_node_of(m)))
            .collect();
        core.access
            .allow_peers(set.iter().map(|(p, _)| raft_id_of_peer(p)));
        if let Some((via, cluster)) = members.iter().find_map(clustered_manager) {
            return join(core, via, cluster).await;
        }
        if !core.voters().is_empty() {
            // Someone initialised with this agent among its voters: its log reached us.
            return wait_initialised(core, deadline).await;
        }
        set.push((core.peer, core.me.clone()));
        set.sort_by_key(|(p, _)| *p);
        set.dedup_by_key(|(p, _)| *p);
        if set.len() >= n {
            set.truncate(n);
            if !set.iter().any(|(p, _)| *p == core.peer) {
                // Not among the n lowest: this agent joins whatever they form.
                tokio::time::sleep(POLL).await;
                continue;
            }
            if set[0].0 == core.peer {
                let voters: BTreeMap<RaftId, RaftNode> = set
                    .iter()
                    .map(|(p, node)| (raft_id_of_peer(p), node.clone()))
                    .collect();
                tracing::info!(voters = n, "bootstrap_expect reached: initialising");
                return initialise(core, voters).await;
            }
            return wait_initialised(core, deadline).await;
        }
        tokio::time::sleep(POLL).await;
    }
    Err(ConsensusError::JoinFailed(format!(
        "bootstrap_expect: fewer than {n} agents appeared"
    )))
}

/// An agent taking part in a `bootstrap_expect` formation: no cluster id yet and no worker
/// token, whether or not it has initialised its raft already.
fn bootstrapping(m: &Member) -> bool {
    m.state == MemberState::Alive && m.info.cluster_id.is_none() && !m.info.raft.worker_only
}

/// The raft address book entry of a mesh member.
fn raft_node_of(m: &Member) -> RaftNode {
    RaftNode {
        peer_id: m.peer_id.to_string(),
        addrs: m.addrs.iter().map(|a| a.to_string()).collect(),
    }
}

/// Waits until the initialising agent's membership and cluster id reached this agent (so that,
/// like after a join, a started agent knows its cluster).
async fn wait_initialised(core: &Core, deadline: Instant) -> Result<(), ConsensusError> {
    while Instant::now() < deadline {
        if !core.voters().is_empty() && core.state().cluster_id.is_some() {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    Err(ConsensusError::JoinFailed(
        "the initialising agent never replicated to this one".to_owned(),
    ))
}

async fn join(core: &Core, via: PeerId, cluster: String) -> Result<(), ConsensusError> {
    let deadline = Instant::now() + core.config.join_timeout;
    join_via(core, via, cluster, deadline).await.map(|_| ())
}

/// Initialises raft with `voters` and records a fresh cluster id.
async fn initialise(core: &Core, voters: BTreeMap<RaftId, RaftNode>) -> Result<(), ConsensusError> {
    let cluster_id = new_cluster_id()?;
    core.access.expect_cluster(cluster_id.clone());
    core.raft
        .start()
        .await?
        .initialize(voters)
        .await
        .map_err(|e| ConsensusError::Raft(e.to_string()))?;
    let deadline = Instant::now() + core.config.write_timeout * 2;
    while Instant::now() < deadline {
        if core.state().cluster_id.is_some() {
            return Ok(());
        }
        if core.leader().is_some() {
            let cmd = Command::InitCluster {
                cluster_id: ClusterId(cluster_id.clone()),
            };
            if let Some((id, leader)) = core.leader() {
                let result = if id == core.id {
                    core.write_as_leader(cmd, core.config.write_timeout)
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("{e:?}"))
                } else {
                    forward_init(core, &leader, cmd).await
                };
                match result {
                    Ok(_) => return Ok(()),
                    Err(e) => tracing::debug!(error = e, "InitCluster not committed yet"),
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
    Err(ConsensusError::Raft(
        "the new cluster did not commit its id".to_owned(),
    ))
}

async fn forward_init(core: &Core, leader: &RaftNode, cmd: Command) -> Result<(), String> {
    use crate::network::client::send;
    use crate::network::messages::{RaftRequest, RaftResponse};
    let peer = PeerId::from_str(&leader.peer_id).map_err(|e| e.to_string())?;
    let entry = crate::types::LogCommand::new(cmd, None);
    match send(
        &core.mesh,
        &core.access,
        peer,
        RaftRequest::Write(Box::new(entry)),
    )
    .await
    {
        Ok(RaftResponse::Write(Ok(_))) => Ok(()),
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A random cluster id (`c` + 24 hex digits).
fn new_cluster_id() -> Result<String, ConsensusError> {
    let mut bytes = [0u8; 12];
    getrandom::getrandom(&mut bytes).map_err(|e| ConsensusError::Raft(e.to_string()))?;
    Ok(std::iter::once("c".to_owned())
        .chain(bytes.iter().map(|b| format!("{b:02x}")))
        .collect())
}

/// Makes sure this agent is recorded as a node of the cluster (joiners are recorded by the
/// leader; initialisers and `bootstrap_expect` voters record themselves). Bounded retries.
pub(crate) async fn ensure_registered(core: Arc<Core>) {
    let me = self_node(&core);
    for _ in 0..100 {
        if !core.is_member() && core.managers.set().cluster_id.is_some() {
            return; // a worker: the leader recorded it when it joined
        }
        let state = core.state();
        if state.nodes.contains_key(&me.id) {
            return;
        }
        if state.cluster_id.is_some() {
            let result = match core.leader() {
                Some((id, _)) if id == core.id => core
                    .write_as_leader(
                        Command::UpsertNode { node: me.clone() },
                        core.config.write_timeout,
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}")),
                Some((_, leader)) => {
                    forward_init(&core, &leader, Command::UpsertNode { node: me.clone() }).await
                }
                None => Err("no leader".to_owned()),
            };
            if let Err(e) = result {
                tracing::debug!(error = e, "registering this node: retrying");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::warn!("could not register this node in the cluster state");
}

/// Tells the cluster that this restarted worker is back: a join through its managers, the
/// leader first, retried with a growing pause until one answers. Its node record, credential
/// and tasks are as the cluster left them; the answer refreshes its manager set.
pub(crate) async fn rejoin(core: Arc<Core>) {
    let Some(cluster) = core.managers.set().cluster_id else {
        return;
    };
    let mut pause = Duration::from_millis(200);
    loop {
        let mut managers = core.managers.peers();
        if let Some(leader) = core.managers.leader() {
            managers.sort_by_key(|p| *p != leader.peer);
        }
        for via in managers {
            let deadline = Instant::now() + core.config.write_timeout;
            match join_via(&core, via, cluster.clone(), deadline).await {
                Ok(_) => return,
                Err(ConsensusError::JoinRefused(why)) => {
                    tracing::error!(why, "the cluster refused this worker back; join it again");
                    return;
                }
                Err(error) => tracing::debug!(%via, %error, "rejoin: no answer yet"),
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
