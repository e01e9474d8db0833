//! Who may join and who may talk raft.

use std::time::Duration;

use openraft::raft::VoteRequest;
use tempfile::TempDir;

use super::harness::*;
use crate::network::append_lane::AppendLane;
use crate::network::append_server::MAX_STREAMS_PER_PEER;
use crate::network::client::send;
use crate::network::messages::{RaftRequest, RaftResponse};
use crate::types::Vote;
use crate::{ConsensusError, Token};

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
    match send(&outsider, target, cluster.clone(), RaftRequest::Vote(vote)).await {
        Ok(RaftResponse::Refused(why)) => assert!(why.contains("not a raft member"), "{why}"),
        other => panic!("a non-member's vote must be refused, got {other:?}"),
    }
    // The same on an append stream: a non-member's AppendEntries with a newer term.
    let before = outsider.traffic();
    let lane = AppendLane::open(&outsider, target, cluster, Duration::from_secs(5))
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
    let open = || AppendLane::open(&other, target, cluster.clone(), ttl);
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
