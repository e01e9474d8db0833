//! Joining a cluster: the joiner's request, its forwarding to the leader, and the leader's
//! decision (token check, `UpsertNode` with the credential the token grants). A joiner is a
//! worker; the autopilot makes some joiners learners, then managers, when the manager set
//! needs them, so the raft group stays small however many agents join.

use std::str::FromStr;
use std::time::{Duration, Instant};

use shoal_discovery::{MemberState, PeerId, RaftMembership};
use shoal_scheduler::{
    Availability, Command, Credential, Node, NodeId, NodeRole, NodeState, Platform, Resources,
    Runtime,
};

use crate::core::Core;
use crate::error::ConsensusError;
use crate::managers::LeaderClaim;
use crate::network::client::send;
use crate::network::messages::{JoinAccepted, JoinRequest, RaftRequest, RaftResponse};
use crate::token::{Token, TokenRole};
use shoal_scheduler::Timestamp;
use shoal_scheduler::join_keys::JoinKeys;

/// The label that keeps a node out of the manager set (`false`): set by an operator, or by a
/// manager asking to step down. (A node that joined with a worker token is kept out by its
/// credential, which no label changes.)
pub const MANAGER_LABEL: &str = "shoal.manager";

/// What this agent's own token allows it.
pub(crate) fn own_credential(core: &Core) -> Credential {
    match core.token.as_ref().map(Token::role) {
        Some(TokenRole::Worker) => Credential::Worker,
        Some(TokenRole::Manager) | None => Credential::Manager,
    }
}

/// This agent as a cluster node, from its configuration.
pub(crate) fn self_node(core: &Core) -> Node {
    let info = &core.config.node_info;
    let runtime = match info.runtime.as_str() {
        "docker" => Runtime::Docker,
        "sim" => Runtime::Sim,
        _ => Runtime::None,
    };
    Node {
        id: NodeId::new(core.peer.to_string()),
        hostname: info.hostname.clone(),
        addresses: core.config.advertise_addrs.clone(),
        role: NodeRole::Worker,
        availability: Availability::Active,
        state: NodeState::Unknown,
        labels: info.labels.clone(),
        platform: Platform {
            os: info.os.clone(),
            arch: info.arch.clone(),
        },
        total: Resources {
            nano_cpus: info.nano_cpus,
            memory_bytes: info.memory_bytes,
        },
        reserved: Resources::default(),
        runtime,
        version: info.version.clone(),
        credential: own_credential(core),
    }
}

/// Asks `via` (a manager of `cluster_id`) to let this agent join; retries until `deadline`,
/// through another manager of the cluster whenever one cannot be reached.
pub(crate) async fn join_via(
    core: &Core,
    mut via: PeerId,
    cluster_id: String,
    deadline: Instant,
) -> Result<JoinAccepted, ConsensusError> {
    core.access.expect_cluster(cluster_id.clone());
    let request = JoinRequest {
        node: self_node(core),
        raft_node: core.me.clone(),
        token: core.config.token.clone(),
    };
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        let body = RaftRequest::Join(request.clone());
        match send(&core.mesh, &core.access, via, body).await {
            Ok(RaftResponse::Join(Ok(accepted))) => {
                tracing::info!(
                    cluster = %accepted.cluster_id,
                    credential = ?accepted.credential,
                    managers = accepted.managers.len(),
                    "joined the cluster as a worker"
                );
                remember(core, &accepted);
                return Ok(accepted);
            }
            Ok(RaftResponse::Join(Err(why))) if why.starts_with("refused") => {
                return Err(ConsensusError::JoinRefused(why));
            }
            Ok(RaftResponse::Join(Err(why))) => last = why,
            Ok(RaftResponse::Refused(why)) => return Err(ConsensusError::JoinRefused(why)),
            Ok(other) => last = format!("unexpected answer {other:?}"),
            Err(e) => {
                last = e.to_string();
                // That manager may be gone before the mesh declared it dead: try the next one.
                if let Some(next) = next_manager(core, &cluster_id, via).await {
                    tracing::debug!(%via, %next, error = last, "join: trying another manager");
                    via = next;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ConsensusError::JoinFailed(last))
}

/// Keeps what an accepted join told: the cluster, its managers and its leader.
fn remember(core: &Core, accepted: &JoinAccepted) {
    core.managers.learn(
        &accepted.cluster_id,
        accepted.epoch,
        accepted.managers.clone(),
    );
    if let Ok(leader) = PeerId::from_str(&accepted.leader) {
        let claim = LeaderClaim {
            peer: leader,
            term: accepted.term,
        };
        core.managers.claim_leader(&leader, claim);
    }
}

/// The manager of `cluster_id` after `after` in PeerId order (wrapping), among the members the
/// mesh sees alive; None if there is no other.
async fn next_manager(core: &Core, cluster_id: &str, after: PeerId) -> Option<PeerId> {
    let mut managers: Vec<PeerId> = core
        .mesh
        .members()
        .await
        .ok()?
        .into_iter()
        .filter(|m| {
            m.state == MemberState::Alive
                && m.info.cluster_id.as_deref() == Some(cluster_id)
                && m.info.raft.membership == RaftMembership::Voter
                && m.peer_id != after
        })
        .map(|m| m.peer_id)
        .collect();
    managers.sort();
    managers
        .iter()
        .find(|p| **p > after)
        .or_else(|| managers.first())
        .copied()
}

/// Handles a join request arriving at this agent (from the joiner or a forwarding manager).
pub(crate) async fn handle(
    core: &Core,
    sender: PeerId,
    cluster: Option<&str>,
    req: JoinRequest,
) -> RaftResponse {
    let refuse = |reason: &'static str, why: String| {
        tracing::warn!(%sender, reason, why, "join refused");
        core.refusals.count("join", reason);
        RaftResponse::Join(Err(why))
    };
    let ours = core.access.cluster_id();
    if let (Some(ours), Some(theirs)) = (ours.as_deref(), cluster)
        && ours != theirs
    {
        return refuse(
            "other_cluster",
            format!("refused: different cluster ({theirs}, not {ours})"),
        );
    }
    // A member forwards joins of others; anyone else joins only as itself.
    let from_member = core.access.allows_peer(&core.raft, &sender).is_ok();
    if !from_member && req.node.id.as_str() != sender.to_string() {
        return refuse(
            "not_itself",
            "refused: a node may only join as itself".to_owned(),
        );
    }
    if req.raft_node.peer_id != req.node.id.as_str() {
        return refuse(
            "malformed",
            "refused: raft node and node id differ".to_owned(),
        );
    }
    if !core.is_member() {
        return RaftResponse::Join(Err("not a manager; ask a manager".to_owned()));
    }
    match core.leader() {
        Some((id, _)) if id == core.id => match accept_as_leader(core, req).await {
            Err(why) if why.starts_with("refused") => refuse("token", why),
            answer => RaftResponse::Join(answer),
        },
        Some((_, leader)) => match PeerId::from_str(&leader.peer_id) {
            Ok(peer) => match send(&core.mesh, &core.access, peer, RaftRequest::Join(req)).await {
                Ok(resp) => resp,
                Err(e) => RaftResponse::Join(Err(format!("leader unreachable: {e}"))),
            },
            Err(_) => RaftResponse::Join(Err("leader has an invalid PeerId".to_owned())),
        },
        None => RaftResponse::Join(Err("no leader yet, retry".to_owned())),
    }
}

/// What the presented token allows, given this leader's token and the cluster's join-token
/// rotations at `now`.
fn admitted_role(
    ours: Option<&Token>,
    presented: Option<&str>,
    keys: &JoinKeys,
    now: Timestamp,
) -> Result<TokenRole, String> {
    let Some(ours) = ours else {
        return Ok(TokenRole::Manager); // open mode: everyone is welcome, loudly documented
    };
    let Some(presented) = presented else {
        return Err("refused: this cluster requires a token".to_owned());
    };
    let presented = Token::parse(presented).map_err(|_| "refused: malformed token".to_owned())?;
    ours.verify_join(&presented, keys, now).ok_or_else(|| {
        "refused: invalid token (rotated? ask a manager for the current one: \
         `shoal cluster token`)"
            .to_owned()
    })
}

/// The role a joiner is admitted with: what its token allows, or, for a node the cluster already
/// holds (a restart; it is known by its authenticated PeerId), the credential it joined with, so
/// that rotating the join tokens never locks out a node that already joined.
fn admission(core: &Core, req: &JoinRequest) -> Result<TokenRole, String> {
    let state = core.state();
    let by_token = admitted_role(
        core.token.as_ref(),
        req.token.as_deref(),
        &state.join_keys,
        now(),
    );
    match (by_token, state.nodes.get(&req.node.id)) {
        (Ok(role), _) => Ok(role),
        (Err(_), Some(known)) => Ok(match known.credential {
            Credential::Manager => TokenRole::Manager,
            Credential::Worker => TokenRole::Worker,
        }),
        (Err(why), None) => Err(why),
    }
}

fn now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

async fn accept_as_leader(core: &Core, req: JoinRequest) -> Result<JoinAccepted, String> {
    let role = admission(core, &req)?;
    let cluster_id = core.access.cluster_id().ok_or("no cluster id yet, retry")?;
    let mut node = req.node;
    node.credential = match role {
        TokenRole::Manager => Credential::Manager,
        TokenRole::Worker => Credential::Worker,
    };
    let credential = node.credential;
    match core
        .write_as_leader(Command::UpsertNode { node }, core.config.write_timeout)
        .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(refused)) => return Err(format!("refused: {refused}")),
        Err(e) => return Err(format!("{e:?}")),
    }
    let (managers, epoch) = core.members();
    Ok(JoinAccepted {
        cluster_id,
        credential,
        managers,
        epoch,
        leader: core.peer.to_string(),
        term: core.term(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_decide_the_role() -> Result<(), ConsensusError> {
        let ours = Token::generate_manager()?;
        let manager = ours.manager_token();
        let worker = ours.worker_token();
        let keys = JoinKeys::default();
        let at = Timestamp(0);
        assert_eq!(admitted_role(None, None, &keys, at), Ok(TokenRole::Manager));
        assert_eq!(
            admitted_role(Some(&ours), manager.as_deref(), &keys, at),
            Ok(TokenRole::Manager)
        );
        assert_eq!(
            admitted_role(Some(&ours), Some(&worker), &keys, at),
            Ok(TokenRole::Worker)
        );
        assert!(admitted_role(Some(&ours), None, &keys, at).is_err());
        let stranger = Token::generate_manager()?.worker_token();
        assert!(admitted_role(Some(&ours), Some(&stranger), &keys, at).is_err());
        Ok(())
    }
}
