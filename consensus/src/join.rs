//! Joining a cluster: the joiner's request, its forwarding to the leader, and the leader's
//! decision (token check, `UpsertNode`, learner).

use std::str::FromStr;
use std::time::{Duration, Instant};

use shoal_discovery::{MemberState, PeerId, RaftMembership};
use shoal_scheduler::{
    Availability, Command, Node, NodeId, NodeRole, NodeState, Platform, Resources, Runtime,
};

use crate::core::{Core, raft_id_of_peer, raft_id_of_str};
use crate::error::ConsensusError;
use crate::network::client::send;
use crate::network::messages::{JoinAccepted, JoinRequest, JoinedRole, RaftRequest, RaftResponse};
use crate::token::{Token, TokenRole};

/// The label that keeps a node out of the manager set (`false`). Set on joiners holding a
/// worker token, or by an operator asking a manager to step down.
pub const MANAGER_LABEL: &str = "shoal.manager";

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
        match send(&core.mesh, via, Some(cluster_id.clone()), body).await {
            Ok(RaftResponse::Join(Ok(accepted))) => {
                tracing::info!(cluster = %accepted.cluster_id, role = ?accepted.role, "joined");
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
    let ours = core.access.cluster_id();
    if let (Some(ours), Some(theirs)) = (ours.as_deref(), cluster)
        && ours != theirs
    {
        return RaftResponse::Join(Err(format!(
            "refused: different cluster ({theirs}, not {ours})"
        )));
    }
    let from_member = core.voters().contains_key(&raft_id_of_peer(&sender));
    if !from_member && req.node.id.as_str() != sender.to_string() {
        return RaftResponse::Join(Err("refused: a node may only join as itself".to_owned()));
    }
    if req.raft_node.peer_id != req.node.id.as_str() {
        return RaftResponse::Join(Err("refused: raft node and node id differ".to_owned()));
    }
    match core.leader() {
        Some((id, _)) if id == core.id => RaftResponse::Join(accept_as_leader(core, req).await),
        Some((_, leader)) => match PeerId::from_str(&leader.peer_id) {
            Ok(peer) => match send(&core.mesh, peer, ours, RaftRequest::Join(req)).await {
                Ok(resp) => resp,
                Err(e) => RaftResponse::Join(Err(format!("leader unreachable: {e}"))),
            },
            Err(_) => RaftResponse::Join(Err("leader has an invalid PeerId".to_owned())),
        },
        None => RaftResponse::Join(Err("no leader yet, retry".to_owned())),
    }
}

/// What the presented token allows, given this leader's token.
fn admitted_role(ours: Option<&Token>, presented: Option<&str>) -> Result<TokenRole, String> {
    let Some(ours) = ours else {
        return Ok(TokenRole::Manager); // open mode: everyone is welcome, loudly documented
    };
    let Some(presented) = presented else {
        return Err("refused: this cluster requires a token".to_owned());
    };
    let presented = Token::parse(presented).map_err(|_| "refused: malformed token".to_owned())?;
    ours.verify(&presented)
        .ok_or_else(|| "refused: invalid token".to_owned())
}

async fn accept_as_leader(core: &Core, req: JoinRequest) -> Result<JoinAccepted, String> {
    let role = admitted_role(core.token.as_ref(), req.token.as_deref())?;
    let cluster_id = core.access.cluster_id().ok_or("no cluster id yet, retry")?;
    let joiner = raft_id_of_str(&req.raft_node.peer_id).ok_or("refused: invalid PeerId")?;
    core.access.allow_peers([joiner]);
    let mut node = req.node;
    if role == TokenRole::Worker {
        node.labels
            .insert(MANAGER_LABEL.to_owned(), "false".to_owned());
    }
    let eligible = role == TokenRole::Manager
        && node.labels.get(MANAGER_LABEL).map(String::as_str) != Some("false");
    match core
        .write_as_leader(Command::UpsertNode { node }, core.config.write_timeout)
        .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(refused)) => return Err(format!("refused: {refused}")),
        Err(e) => return Err(format!("{e:?}")),
    }
    let members = core.voters().len() + core.learners().len();
    let already = core.voters().contains_key(&joiner) || core.learners().contains_key(&joiner);
    let as_learner = eligible && (already || members < core.config.target_managers + 2);
    if as_learner
        && !already
        && let Err(e) = core
            .raft
            .add_learner(joiner, req.raft_node.clone(), false)
            .await
    {
        return Err(format!("add learner: {e}"));
    }
    let role = if as_learner {
        JoinedRole::Learner
    } else {
        JoinedRole::Worker
    };
    Ok(JoinAccepted {
        cluster_id,
        role,
        managers: core.voters().into_values().collect(),
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
        assert_eq!(admitted_role(None, None), Ok(TokenRole::Manager));
        assert_eq!(
            admitted_role(Some(&ours), manager.as_deref()),
            Ok(TokenRole::Manager)
        );
        assert_eq!(
            admitted_role(Some(&ours), Some(&worker)),
            Ok(TokenRole::Worker)
        );
        assert!(admitted_role(Some(&ours), None).is_err());
        let stranger = Token::generate_manager()?.worker_token();
        assert!(admitted_role(Some(&ours), Some(&stranger)).is_err());
        Ok(())
    }
}
