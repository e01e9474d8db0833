//! Forming and reshaping the manager set on loopback: `bootstrap_expect`, a join forwarded by a
//! follower, and the autopilot demoting drained managers.

use std::time::{Duration, Instant};

use shoal_discovery::{Mesh, PeerId};
use shoal_scheduler::{
    Availability, Command, Credential, Node, NodeId, NodeRole, NodeState, Platform, Resources,
    Runtime,
};
use tempfile::TempDir;

use super::harness::*;
use crate::network::client::send_envelope;
use crate::network::messages::{Envelope, JoinRequest, RaftRequest, RaftResponse};
use crate::types::RaftNode;
use crate::{ConsensusError, Quorum, QuorumConfig};

const T: Duration = Duration::from_secs(20);

fn expect_three(c: &mut QuorumConfig) {
    c.bootstrap_expect = Some(3);
}

/// Starts a quorum in its own task (start only returns once bootstrap is done).
fn spawn_start(
    mesh: &Mesh,
    config: QuorumConfig,
) -> tokio::task::JoinHandle<Result<Quorum, ConsensusError>> {
    let mesh = mesh.clone();
    tokio::spawn(async move { start_quorum(&mesh, config).await })
}

/// Whether any peer `mesh` sees announces an initialised raft or a cluster id.
async fn someone_initialised(mesh: &Mesh) -> bool {
    let members = mesh.members().await.unwrap_or_default();
    members
        .iter()
        .any(|m| m.info.raft.initialized || m.info.cluster_id.is_some())
}

async fn wait_alive(mesh: &Mesh, peers: usize) {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        let alive = mesh.members().await.map(|m| {
            m.iter()
                .filter(|m| m.state == shoal_discovery::MemberState::Alive)
                .count()
        });
        if alive.is_ok_and(|n| n >= peers) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the mesh did not see {peers} peers");
}

fn sorted(mut peers: Vec<PeerId>) -> Vec<PeerId> {
    peers.sort();
    peers
}

/// Which of the three agents' identities the one arriving last gets.
#[derive(Clone, Copy)]
enum Latecomer {
    /// The highest PeerId: one of the two waiting agents initialises.
    Highest,
    /// The lowest PeerId: the latecomer initialises, maybe before the others heard it as
    /// unclustered (they must still take its votes).
    Lowest,
}

/// Three data dirs with identities in place, ordered so that the third is the `late` one.
fn dirs_for(root: &std::path::Path, late: Latecomer) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<(PeerId, std::path::PathBuf)> = (0..3)
        .map(|i| {
            let dir = root.join(format!("a{i}"));
            let key = shoal_discovery::identity::load_or_create(&dir.join("mesh"))
                .unwrap_or_else(|e| panic!("identity: {e}"));
            (key.public().to_peer_id(), dir)
        })
        .collect();
    dirs.sort_by_key(|(peer, _)| *peer);
    if let Latecomer::Lowest = late {
        dirs.rotate_left(1);
    }
    dirs.into_iter().map(|(_, dir)| dir).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_expect_three_waits_for_the_third_then_forms_one_cluster() {
    expect_three_forms_one_cluster(Latecomer::Highest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_expect_three_forms_one_cluster_when_the_lowest_comes_last() {
    expect_three_forms_one_cluster(Latecomer::Lowest).await;
}

async fn expect_three_forms_one_cluster(late: Latecomer) {
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let dirs = dirs_for(root.path(), late);
    let m0 = start_mesh(&dirs[0], "node0", &[], None).await;
    let seed = addr(&m0).await;
    let m1 = start_mesh(&dirs[1], "node1", std::slice::from_ref(&seed), None).await;
    wait_alive(&m0, 1).await;
    wait_alive(&m1, 1).await;
    let config = |i: usize| {
        let mut c = quorum_config(&dirs[i], &format!("node{i}"));
        expect_three(&mut c);
        c
    };
    let s0 = spawn_start(&m0, config(0));
    let s1 = spawn_start(&m1, config(1));
    // Two agents that expect three never initialise, however long they wait (here: many
    // bootstrap polls and longer than the zero-config window).
    let watch_until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < watch_until {
        assert!(
            !someone_initialised(&m0).await && !someone_initialised(&m1).await,
            "an agent initialised with only two of three expected agents"
        );
        assert!(!s0.is_finished() && !s1.is_finished());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The third arrives: one cluster of three voters.
    let m2 = start_mesh(&dirs[2], "node2", std::slice::from_ref(&seed), None).await;
    let s2 = spawn_start(&m2, config(2));
    let mut quorums = Vec::new();
    for s in [s0, s1, s2] {
        match tokio::time::timeout(Duration::from_secs(40), s).await {
            Ok(Ok(Ok(q))) => quorums.push(q),
            other => panic!("start with bootstrap_expect 3: {other:?}"),
        }
    }
    let peers = sorted(vec![
        m0.local_peer_id(),
        m1.local_peer_id(),
        m2.local_peer_id(),
    ]);
    for q in &quorums {
        let q = q.clone();
        let want = peers.clone();
        eventually("all three are voters, everywhere", T, move || {
            sorted(q.status().voters) == want
        })
        .await;
    }
    let ids: Vec<Option<String>> = quorums.iter().map(Quorum::cluster_id).collect();
    assert!(ids[0].is_some(), "no cluster id");
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "cluster ids differ: {ids:?}"
    );
    // One raft history: every agent initialised the same cluster (a write commits everywhere).
    match quorums[2].write(create("one-cluster")).await {
        Ok(Ok(_)) => {}
        other => panic!("write: {other:?}"),
    }
    for q in &quorums {
        let q = q.clone();
        eventually("the write replicated", T, move || {
            service_names(&q) == ["one-cluster"]
        })
        .await;
    }
    for (q, m) in quorums.iter().zip([&m0, &m1, &m2]) {
        q.shutdown().await;
        m.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_expect_gives_up_when_too_few_agents_appear() {
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let m0 = start_mesh(&root.path().join("a0"), "node0", &[], None).await;
    let seed = addr(&m0).await;
    let m1 = start_mesh(&root.path().join("a1"), "node1", &[seed], None).await;
    wait_alive(&m0, 1).await;
    let starts = [(&m0, "a0", "node0"), (&m1, "a1", "node1")].map(|(mesh, dir, name)| {
        let mut c = quorum_config(&root.path().join(dir), name);
        expect_three(&mut c);
        c.bootstrap_expect_timeout = Duration::from_millis(1500);
        spawn_start(mesh, c)
    });
    for s in starts {
        match tokio::time::timeout(Duration::from_secs(20), s).await {
            Ok(Ok(Err(ConsensusError::JoinFailed(why)))) => {
                assert!(why.contains("fewer than 3"), "{why}");
            }
            other => panic!("two agents expecting three must give up, got {other:?}"),
        }
    }
    assert!(!someone_initialised(&m0).await && !someone_initialised(&m1).await);
    m0.kill();
    m1.kill();
}

/// A node as a joiner describes itself.
fn joiner_node(peer: PeerId, name: &str) -> Node {
    Node {
        id: NodeId::new(peer.to_string()),
        hostname: name.to_owned(),
        addresses: vec![],
        role: NodeRole::Worker,
        availability: Availability::Active,
        state: NodeState::Unknown,
        labels: Default::default(),
        platform: Platform {
            os: "linux".into(),
            arch: "x86_64".into(),
        },
        total: Resources::default(),
        reserved: Resources::default(),
        runtime: Runtime::Sim,
        version: "test".into(),
        credential: Credential::Manager,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_sent_to_a_follower_is_forwarded_to_the_leader() {
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let agents = cluster(root.path(), 3, 3, |_| {}).await;
    let leader = leader_index(&agents).unwrap_or_else(|| panic!("no leader"));
    let follower = &agents[(leader + 1) % 3];
    let cluster_id = follower
        .quorum
        .cluster_id()
        .unwrap_or_else(|| panic!("no cluster id"));
    // A bare agent (a mesh, no quorum) asks the follower directly.
    let seed = addr(&follower.mesh).await;
    let joiner = start_mesh(&root.path().join("a3"), "node3", &[seed], None).await;
    let me = joiner.local_peer_id();
    let request = JoinRequest {
        node: joiner_node(me, "node3"),
        raft_node: RaftNode {
            peer_id: me.to_string(),
            addrs: vec![],
        },
        token: None,
    };
    let target = follower.quorum.peer_id();
    let envelope = Envelope {
        cluster_id: Some(cluster_id.clone()),
        proof: None,
        body: RaftRequest::Join(request),
    };
    let reply = send_envelope(&joiner, target, envelope).await;
    let accepted = match reply {
        Ok(RaftResponse::Join(Ok(accepted))) => accepted,
        other => panic!("join through a follower: {other:?}"),
    };
    assert_eq!(accepted.cluster_id, cluster_id);
    assert_eq!(accepted.credential, Credential::Manager);
    assert_eq!(accepted.leader, agents[leader].quorum.peer_id().to_string());
    let managers: Vec<String> = accepted.managers.iter().cloned().collect();
    let mut voters: Vec<String> = follower
        .quorum
        .status()
        .voters
        .iter()
        .map(PeerId::to_string)
        .collect();
    voters.sort();
    assert_eq!(managers, voters);
    // Committed by the leader: the node is in every agent's state, and a raft learner.
    for a in &agents {
        let q = a.quorum.clone();
        eventually("the joiner is a node everywhere", T, move || {
            q.state().nodes.contains_key(&NodeId::new(me.to_string()))
        })
        .await;
    }
    // A worker: the three managers need no learner, so it stays out of the raft group.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = agents[leader].quorum.status();
    assert!(!status.learners.contains(&me) && !status.voters.contains(&me));
    joiner.kill();
    for a in agents {
        a.kill().await;
    }
}

fn drain(peer: PeerId) -> Command {
    Command::UpdateNode {
        id: NodeId::new(peer.to_string()),
        availability: Some(Availability::Drain),
        role: None,
        labels_set: vec![],
        labels_remove: vec![],
    }
}

fn role_of(q: &Quorum, peer: PeerId) -> Option<NodeRole> {
    q.state()
        .nodes
        .get(&NodeId::new(peer.to_string()))
        .map(|n| n.role)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_managers_are_demoted_and_replaced() {
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let agents = cluster(root.path(), 4, 3, |_| {}).await;
    let q = agents[0].quorum.clone();
    let voters = q.status().voters;
    let spare = agents
        .iter()
        .map(|a| a.quorum.peer_id())
        .find(|p| !voters.contains(p))
        .unwrap_or_else(|| panic!("no spare"));
    let victim = agents
        .iter()
        .find(|a| voters.contains(&a.quorum.peer_id()) && !a.quorum.is_leader())
        .map(|a| a.quorum.peer_id())
        .unwrap_or_else(|| panic!("no follower manager"));
    // Drain a follower manager through the state machine: the spare takes its place.
    match q.write(drain(victim)).await {
        Ok(Ok(_)) => {}
        other => panic!("drain: {other:?}"),
    }
    let observer = q.clone();
    eventually("drained manager demoted, spare promoted", T, move || {
        let v = observer.status().voters;
        v.len() == 3 && v.contains(&spare) && !v.contains(&victim)
    })
    .await;
    let observer = q.clone();
    eventually("roles recorded", T, move || {
        role_of(&observer, victim) == Some(NodeRole::Worker)
            && role_of(&observer, spare) == Some(NodeRole::Manager)
    })
    .await;
    match q.write(create("after-drain")).await {
        Ok(Ok(_)) => {}
        other => panic!("write after the drain: {other:?}"),
    }
    // Drain the leader: it hands leadership over and is demoted as well. Two eligible nodes are
    // left, so one manager remains (never an even count), and writes still commit.
    let leader = agents
        .iter()
        .find(|a| a.quorum.is_leader())
        .map(|a| a.quorum.peer_id())
        .unwrap_or_else(|| panic!("no leader"));
    match q.write(drain(leader)).await {
        Ok(Ok(_)) => {}
        other => panic!("drain the leader: {other:?}"),
    }
    let observer = q.clone();
    eventually(
        "drained leader handed over and left the voters",
        T,
        move || {
            let s = observer.status();
            s.leader.is_some_and(|l| l != leader)
                && !s.voters.contains(&leader)
                && s.voters.len() == 1
        },
    )
    .await;
    let observer = q.clone();
    eventually("old leader recorded as a worker", T, move || {
        role_of(&observer, leader) == Some(NodeRole::Worker)
    })
    .await;
    match q.write(create("after-leader-drain")).await {
        Ok(Ok(_)) => {}
        other => panic!("write after the leader's drain: {other:?}"),
    }
    for a in agents {
        a.kill().await;
    }
}
