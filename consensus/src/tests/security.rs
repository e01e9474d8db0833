//! Who may join and who may talk raft.

use std::time::Duration;

use openraft::raft::VoteRequest;
use shoal_discovery::{Mesh, PeerId};
use shoal_scheduler::{ApplyError, Command, NodeId, NodeRole, Timestamp};
use tempfile::TempDir;

use super::harness::*;
use crate::network::append_lane::AppendLane;
use crate::network::append_server::MAX_STREAMS_PER_PEER;
use crate::network::client::send_envelope;
use crate::network::messages::{Envelope, RaftRequest, RaftResponse};
use crate::types::{LogCommand, RaftNode, Vote};
use crate::{ConsensusError, Token};

const T: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_gate_joins_and_roles() {
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let manager = Token::generate_manager().unwrap_or_else(|e| panic!("{e}"));
    let mesh_secret = Some(manager.mesh_secret());
    let manager_token = manager.manager_token();

    let m0 = start_mesh(&root.path().join("a0"), "node0", &[], mesh_secret.clone()).await;
    let mut c0 = quorum_config(&root.path().join("a0"), "node0");
    c0.token = manager_token.clone();
    let q0 = start_quorum(&m0, c0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let seed = addr(&m0).await;

    // Right mesh secret, forged role secret: the mesh connects, the join is refused. (A forged
    // manager token is already refused locally: its secret must hash to the mesh secret.)
    let forged_manager = format!("SHOAL1-{}-M{}", manager.mesh_secret(), "ab".repeat(32));
    assert!(Token::parse(&forged_manager).is_err());
    let forged = format!("SHOAL1-{}-W{}", manager.mesh_secret(), "ab".repeat(32));
    let m1 = start_mesh(
        &root.path().join("a1"),
        "node1",
        std::slice::from_ref(&seed),
        mesh_secret.clone(),
    )
    .await;
    let mut c1 = quorum_config(&root.path().join("a1"), "node1");
    c1.token = Some(forged);
    c1.write_timeout = Duration::from_secs(2);
    match start_quorum(&m1, c1).await {
        Err(ConsensusError::JoinRefused(why)) => assert!(why.contains("token"), "{why}"),
        other => panic!("a forged token must be refused, got {other:?}"),
    }
    m1.kill();

    // A worker token joins as a worker: in the cluster state, never a raft member.
    let m2 = start_mesh(
        &root.path().join("a2"),
        "node2",
        std::slice::from_ref(&seed),
        mesh_secret.clone(),
    )
    .await;
    let mut c2 = quorum_config(&root.path().join("a2"), "node2");
    c2.token = Some(manager.worker_token());
    let q2 = start_quorum(&m2, c2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let worker = q2.peer_id();
    let q = q0.clone();
    eventually("worker recorded", Duration::from_secs(10), || {
        q.state()
            .nodes
            .keys()
            .any(|n| n.as_str() == worker.to_string())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await; // a few autopilot rounds
    let status = q0.status();
    assert!(
        !status.voters.contains(&worker) && !status.learners.contains(&worker),
        "a worker token made a raft member"
    );

    q2.shutdown().await;
    m2.kill();
    q0.shutdown().await;
    m0.kill();
}

/// An agent given peers to join (`--join`) that answers no one, as one without the token of a
/// closed cluster hears no one, never forms a cluster of its own: it gives up with a message
/// that names the token. Given peers that do answer, it joins their cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_given_join_never_forms_a_cluster_alone() {
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let joiner_config = |name: &str, join_timeout: Duration| {
        let mut config = quorum_config(&root.path().join(name), name);
        config.join_given = true;
        config.join_timeout = join_timeout;
        config
    };

    let lone = start_mesh(&root.path().join("j0"), "j0", &[], None).await;
    match start_quorum(&lone, joiner_config("j0", Duration::from_millis(1500))).await {
        Err(ConsensusError::JoinFailed(why)) => {
            assert!(why.contains("--join") && why.contains("token"), "{why}")
        }
        Ok(_) => panic!("an agent given --join formed a cluster alone"),
        Err(other) => panic!("unexpected: {other}"),
    }
    lone.kill();

    let seed = start_agent(&root.path().join("s"), "s", &[], |_| {}).await;
    let seed_addr = addr(&seed.mesh).await;
    let j = start_mesh(&root.path().join("j1"), "j1", &[seed_addr], None).await;
    let joiner = start_quorum(&j, joiner_config("j1", Duration::from_secs(20)))
        .await
        .unwrap_or_else(|e| panic!("the joiner did not join: {e}"));
    assert!(seed.quorum.cluster_id().is_some());
    assert_eq!(joiner.cluster_id(), seed.quorum.cluster_id());
    j.kill();
    joiner.shutdown().await;
    seed.kill().await;
}

/// An agent holding a worker token never forms a cluster, even when it is the first agent up
/// or the lowest PeerId around: alone it gives up with a message that says why; started next to
/// a manager-token agent, the manager forms the cluster alone and the worker joins it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_token_never_forms_a_cluster() {
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let manager = Token::generate_manager().unwrap_or_else(|e| panic!("{e}"));
    let mesh_secret = Some(manager.mesh_secret());
    let worker_config = |name: &str, join_timeout: Duration| {
        let mut config = quorum_config(&root.path().join(name), name);
        config.token = Some(manager.worker_token());
        config.join_timeout = join_timeout;
        config
    };

    let lone = start_mesh(&root.path().join("w0"), "w0", &[], mesh_secret.clone()).await;
    match start_quorum(&lone, worker_config("w0", Duration::from_millis(1500))).await {
        Err(ConsensusError::JoinFailed(why)) => {
            assert!(why.contains("worker token"), "{why}")
        }
        Ok(_) => panic!("a lone worker-token agent formed a cluster"),
        Err(other) => panic!("unexpected: {other}"),
    }
    lone.kill();

    let w = start_mesh(&root.path().join("w1"), "w1", &[], mesh_secret.clone()).await;
    let seed = addr(&w).await;
    let waiting = tokio::spawn({
        let (w, config) = (w.clone(), worker_config("w1", Duration::from_secs(20)));
        async move { start_quorum(&w, config).await }
    });
    let m = start_mesh(&root.path().join("m0"), "m0", &[seed], mesh_secret).await;
    let mut config = quorum_config(&root.path().join("m0"), "m0");
    config.token = manager.manager_token();
    let q = start_quorum(&m, config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let worker = match waiting.await {
        Ok(Ok(worker)) => worker,
        other => panic!("the worker did not join: {other:?}"),
    };
    let status = q.status();
    assert_eq!(
        status.voters,
        vec![q.peer_id()],
        "the manager alone is a voter"
    );
    assert!(
        !worker.is_member(),
        "the worker-token agent is a raft member"
    );
    eventually("the worker knows the leader", T, || {
        *worker.leader().borrow() == Some(q.peer_id())
    })
    .await;
    worker.shutdown().await;
    w.kill();
    q.shutdown().await;
    m.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_rpcs_from_non_members_are_refused() {
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let (member, outsider) = member_and_outsider(root.path()).await;
    let target = member.quorum.peer_id();
    let cluster = member.quorum.cluster_id();
    let vote = VoteRequest::new(
        Vote::new(99, crate::raft_id_of_peer(&outsider.local_peer_id())),
        None,
    );
    let envelope = Envelope {
        cluster_id: cluster.clone(),
        proof: None,
        body: RaftRequest::Vote(vote),
    };
    match send_envelope(&outsider, target, envelope).await {
        Ok(RaftResponse::Refused(why)) => assert!(why.contains("not a raft member"), "{why}"),
        other => panic!("a non-member's vote must be refused, got {other:?}"),
    }
    // The same on an append stream: a non-member's AppendEntries with a newer term.
    let before = outsider.traffic();
    let lane = AppendLane::open(&outsider, target, cluster, None, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("open an append stream: {e}"));
    match lane.send(heartbeat(99, &outsider.local_peer_id())).await {
        Err(e) => assert!(e.to_string().contains("not a raft member"), "{e}"),
        Ok(answer) => panic!("a non-member's append must be refused, got {answer:?}"),
    }
    // Stream frames count as mesh traffic: the request out and the refusal in.
    let after = outsider.traffic();
    assert!(
        after.messages >= before.messages + 2,
        "{before:?} -> {after:?}"
    );
    // The leader was not disturbed.
    assert!(member.quorum.is_leader());
    assert_eq!(member.quorum.status().term, 1);
    outsider.kill();
    member.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_streams_are_bounded_per_peer() {
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let (member, other) = member_and_outsider(root.path()).await;
    let target = member.quorum.peer_id();
    let cluster = member.quorum.cluster_id();
    let ttl = Duration::from_secs(5);
    let open = || AppendLane::open(&other, target, cluster.clone(), None, ttl);
    let probe = |term| heartbeat(term, &other.local_peer_id());
    // Streams that never send a frame stay open on the server, up to its per-peer bound.
    // libp2p-stream hands the server one new stream at a time and drops one that arrives while
    // another waits to be taken: a stream found closed is opened again.
    let mut idle = Vec::new();
    for _ in 0..MAX_STREAMS_PER_PEER * 5 {
        if idle.len() == MAX_STREAMS_PER_PEER {
            break;
        }
        let lane = open().await.unwrap_or_else(|e| panic!("open: {e}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        if lane.is_reusable() {
            idle.push(lane);
        }
    }
    assert_eq!(idle.len(), MAX_STREAMS_PER_PEER);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let extra = open().await.unwrap_or_else(|e| panic!("open: {e}"));
    match extra.send(probe(99)).await {
        Err(e) => assert!(e.to_string().contains("closed"), "{e}"),
        Ok(answer) => panic!("one stream too many must be closed at once, got {answer:?}"),
    }
    // A stream that ends frees its place.
    drop(idle.pop());
    let mut answer = None;
    for _ in 0..50 {
        let lane = open().await.unwrap_or_else(|e| panic!("open: {e}"));
        match lane.send(probe(99)).await {
            Err(e) if e.to_string().contains("not a raft member") => {
                answer = Some(e);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(answer.is_some(), "a freed place was never reused");
    assert_eq!(member.quorum.status().term, 1);
    drop(idle);
    other.kill();
    member.kill().await;
}

/// What a raw `/shoal/raft/1` write from `mesh` to `to` is answered.
async fn raw_write(mesh: &Mesh, to: PeerId, cluster: Option<String>, cmd: Command) -> String {
    let envelope = Envelope {
        cluster_id: cluster,
        proof: None,
        body: RaftRequest::Write(Box::new(LogCommand::new(cmd, None))),
    };
    format!("{:?}", send_envelope(mesh, to, envelope).await)
}

/// A vote and an AppendEntries from `mesh` to `to`: both must be refused.
async fn vote_and_append_are_refused(mesh: &Mesh, to: PeerId, cluster: Option<String>) {
    let me = mesh.local_peer_id();
    let vote = VoteRequest::new(Vote::new(99, crate::raft_id_of_peer(&me)), None);
    let envelope = Envelope {
        cluster_id: cluster.clone(),
        proof: None,
        body: RaftRequest::Vote(vote),
    };
    match send_envelope(mesh, to, envelope).await {
        Ok(RaftResponse::Refused(why)) => assert!(why.contains("not a raft member"), "{why}"),
        other => panic!("a vote from {me} must be refused, got {other:?}"),
    }
    let lane = AppendLane::open(mesh, to, cluster, None, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("open an append stream: {e}"));
    match lane.send(heartbeat(99, &me)).await {
        Err(e) => assert!(e.to_string().contains("not a raft member"), "{e}"),
        Ok(answer) => panic!("an append from {me} must be refused, got {answer:?}"),
    }
}

/// A closed cluster with a leader, a learner, an agent that joined with a worker token and a
/// mesh peer holding the mesh secret that never joined: the worker-token agent may only speak
/// for itself, and neither it nor the outsider can talk raft to the learner. Every refusal is
/// counted, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_outsiders_cannot_write_for_others_nor_talk_raft() {
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let manager = Token::generate_manager().unwrap_or_else(|e| panic!("{e}"));
    let secret = Some(manager.mesh_secret());
    let start = |name: &str, token: Option<String>, seeds: Vec<_>| {
        let dir = root.path().join(name);
        let secret = secret.clone();
        let name = name.to_owned();
        async move {
            let mesh = start_mesh(&dir, &name, &seeds, secret).await;
            let mut config = quorum_config(&dir, &name);
            config.token = token;
            config.autopilot = false; // this test places the learner itself
            let (quorum, registry) = start_quorum_registered(&mesh, config)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (mesh, quorum, registry)
        }
    };
    let (m0, leader, registry) = start("a0", manager.manager_token(), vec![]).await;
    let seed = addr(&m0).await;
    let (m1, learner, _r1) = start("a1", manager.manager_token(), vec![seed.clone()]).await;
    let (m2, worker, _r2) = start("a2", Some(manager.worker_token()), vec![seed.clone()]).await;
    let outsider = start_mesh(&root.path().join("a3"), "a3", &[seed], secret.clone()).await;
    let learner_id = crate::raft_id_of_peer(&learner.peer_id());
    let learner_node = RaftNode {
        peer_id: learner.peer_id().to_string(),
        addrs: vec![],
    };
    if let Err(e) = leader
        .raft()
        .expect("the leader's raft runs")
        .add_learner(learner_id, learner_node, true)
        .await
    {
        panic!("add learner: {e}");
    }
    let l = learner.clone();
    eventually("the learner holds the state", T, move || l.is_member()).await;
    assert!(!worker.is_member(), "a worker token made a raft member");
    let cluster = leader.cluster_id();
    let before = leader.state();

    let (me, other) = (
        NodeId::new(worker.peer_id().to_string()),
        NodeId::new(learner.peer_id().to_string()),
    );
    let label = |id: &NodeId, role| Command::UpdateNode {
        id: id.clone(),
        availability: None,
        role,
        labels_set: vec![("zone".into(), "mine".into())],
        labels_remove: vec![],
    };
    let forged = [
        Command::ReportTaskStatus {
            node: other.clone(),
            reports: vec![],
        },
        label(&me, None),
        label(&me, Some(NodeRole::Manager)),
        Command::RemoveNode {
            id: other.clone(),
            force: true,
            at: Timestamp(1),
        },
        create("not-yours"),
    ];
    for cmd in &forged {
        // Through the worker's own quorum handle, as the agent would write it...
        match worker.write(cmd.clone()).await {
            Ok(Err(ApplyError::Unauthorized(why))) => assert!(why.contains("worker"), "{why}"),
            other => panic!("{} from a worker token: {other:?}", cmd.kind()),
        }
        // ...and from an outsider that never joined.
        let answer = raw_write(&outsider, leader.peer_id(), cluster.clone(), cmd.clone()).await;
        assert!(answer.contains("not a node of this cluster"), "{answer}");
    }
    let refused = sample(
        &registry,
        "shoal_raft_refused_total{request=\"write\",reason=\"unauthorized\"}",
    );
    let strangers = sample(
        &registry,
        "shoal_raft_refused_total{request=\"write\",reason=\"not_node\"}",
    );
    assert_eq!((refused, strangers), (5.0, 5.0));
    // What a worker may do: its own registration.
    let mut own = worker.state().nodes.get(&me).cloned();
    if own.is_none() {
        own = leader.state().nodes.get(&me).cloned();
    }
    let own = own.unwrap_or_else(|| panic!("the worker is a node"));
    match worker.write(Command::UpsertNode { node: own }).await {
        Ok(Ok(_)) => {}
        other => panic!("a worker refreshing its own record: {other:?}"),
    }

    // Raft to the learner: from the worker-token agent and from the outsider, refused.
    vote_and_append_are_refused(&m2, learner.peer_id(), cluster.clone()).await;
    vote_and_append_are_refused(&outsider, learner.peer_id(), cluster.clone()).await;
    // A member's raft RPC without the proof a manager token gives is refused too.
    let me = m1.local_peer_id();
    let vote = VoteRequest::new(Vote::new(99, crate::raft_id_of_peer(&me)), None);
    let unproven = Envelope {
        cluster_id: cluster.clone(),
        proof: None,
        body: RaftRequest::Vote(vote),
    };
    match send_envelope(&m1, leader.peer_id(), unproven).await {
        Ok(RaftResponse::Refused(why)) => assert!(why.contains("manager proof"), "{why}"),
        other => panic!("a vote without a proof must be refused, got {other:?}"),
    }
    assert_eq!(
        sample(
            &registry,
            "shoal_raft_refused_total{request=\"vote\",reason=\"no_proof\"}"
        ),
        1.0
    );
    let after = leader.state();
    assert_eq!(after.services, before.services, "a service appeared");
    let strip = |s: &shoal_scheduler::ClusterState| {
        s.nodes
            .values()
            .map(|n| (n.id.clone(), n.labels.clone(), n.role, n.state))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&after), strip(&before), "a node changed");
    assert_eq!(
        learner.status().term,
        leader.status().term,
        "the learner's term moved"
    );

    outsider.kill();
    for (quorum, mesh) in [(worker, m2), (learner, m1), (leader, m0)] {
        quorum.shutdown().await;
        mesh.kill();
    }
}

/// Rotating the worker join token: an agent presenting the old token still joins during the
/// grace the rotation gave it and is refused after it, with a message that says what to do; an
/// agent with the new token joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_join_token_keeps_old_tokens_out_after_the_grace() {
    use shoal_scheduler::join_keys::JoinRole;
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let manager = Token::generate_manager().unwrap_or_else(|e| panic!("{e}"));
    let mesh_secret = Some(manager.mesh_secret());
    let m = start_mesh(&root.path().join("m0"), "m0", &[], mesh_secret.clone()).await;
    let mut config = quorum_config(&root.path().join("m0"), "m0");
    config.token = manager.manager_token();
    let q = start_quorum(&m, config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let seed = addr(&m).await;

    let old = manager.worker_token();
    let grace = Duration::from_secs(3);
    let rotated_at = std::time::SystemTime::now();
    let at = rotated_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let rotation = Command::RotateJoinToken {
        role: JoinRole::Worker,
        nonce: crate::new_join_nonce().unwrap_or_else(|e| panic!("{e}")),
        grace_ms: grace.as_millis() as u64,
        at: Timestamp(at.as_millis() as u64),
    };
    match q.write(rotation).await {
        Ok(Ok(_)) => {}
        other => panic!("rotation not applied: {other:?}"),
    }
    let new = q
        .join_token(JoinRole::Worker, &q.state().join_keys)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(new, old);
    assert_eq!(
        q.join_token(JoinRole::Manager, &q.state().join_keys).ok(),
        manager.manager_token(),
        "the manager token did not rotate"
    );

    let join = |name: &'static str, token: String, timeout: Duration| {
        let (root, seed, mesh_secret) =
            (root.path().to_path_buf(), seed.clone(), mesh_secret.clone());
        async move {
            let mesh = start_mesh(&root.join(name), name, &[seed], mesh_secret).await;
            let mut config = quorum_config(&root.join(name), name);
            config.token = Some(token);
            config.join_timeout = timeout;
            (start_quorum(&mesh, config).await, mesh)
        }
    };
    let (in_grace, in_grace_mesh) = join("w1", old.clone(), T).await;
    let in_grace = in_grace.unwrap_or_else(|e| panic!("the old token in its grace: {e}"));

    let until_expired = grace.saturating_sub(rotated_at.elapsed().unwrap_or_default());
    tokio::time::sleep(until_expired + Duration::from_millis(200)).await;
    let (late, late_mesh) = join("w2", old, Duration::from_millis(2500)).await;
    match late {
        Err(refused) => {
            let why = refused.to_string();
            assert!(why.contains("invalid token"), "{why}");
            assert!(why.contains("shoal cluster token"), "{why}");
        }
        Ok(_) => panic!("an agent with the rotated-out token joined after the grace"),
    }
    late_mesh.kill();
    let (fresh, fresh_mesh) = join("w3", new, T).await;
    let fresh = fresh.unwrap_or_else(|e| panic!("the new token: {e}"));
    let nodes = q.state().nodes.len();
    assert_eq!(nodes, 3, "the manager and the two admitted workers");
    for (quorum, mesh) in [(fresh, fresh_mesh), (in_grace, in_grace_mesh), (q, m)] {
        quorum.shutdown().await;
        mesh.kill();
    }
}
