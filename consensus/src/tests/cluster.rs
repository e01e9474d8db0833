//! Whole quorums on loopback: election, replication, failover, restart, compaction and snapshot
//! install, autopilot, lost quorum and recover.

use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::harness::*;
use crate::WriteError;

const T: Duration = Duration::from_secs(15);

async fn write_ok(q: &crate::Quorum, name: &str) {
    match q.write(create(name)).await {
        Ok(Ok(_)) => {}
        other => panic!("write {name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_replicate_fail_over_and_catch_up() {
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let mut agents = cluster(root.path(), 3, 3, |_| {}).await;
    // Exactly one leader, known to everyone.
    let leader = leader_index(&agents).unwrap_or_else(|| panic!("no leader"));
    let leader_peer = agents[leader].quorum.peer_id();
    for a in &agents {
        let q = a.quorum.clone();
        eventually("leader known", T, || {
            *q.leader().borrow() == Some(leader_peer)
        })
        .await;
    }
    // Writes from every agent (followers forward), then a linearizable read on a follower.
    let mut acked = Vec::new();
    for i in 0..30 {
        let name = format!("svc-{i}");
        write_ok(&agents[i % 3].quorum, &name).await;
        acked.push(name);
    }
    let follower = (leader + 1) % 3;
    let state = agents[follower]
        .quorum
        .read()
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(
        state.services.len(),
        30,
        "a linearizable read sees every acknowledged write"
    );
    // A refused command is committed and answered with the error.
    match agents[follower].quorum.write(create("svc-0")).await {
        Ok(Err(_)) => {}
        other => panic!("duplicate name must be refused by the state machine: {other:?}"),
    }
    // Kill the leader: a new one is elected and nothing acknowledged is lost.
    let killed = agents.remove(leader);
    let killed_name = format!(
        "node{}",
        killed
            .dir
            .file_name()
            .map(|f| f.to_string_lossy().trim_start_matches('a').to_owned())
            .unwrap_or_default()
    );
    let killed_dir = killed.kill().await;
    let started = Instant::now();
    write_ok(&agents[0].quorum, "after-failover").await;
    let failover = started.elapsed();
    acked.push("after-failover".into());
    assert!(
        failover < Duration::from_secs(5),
        "failover took {failover:?}"
    );
    let new_leader = leader_index(&agents).unwrap_or_else(|| panic!("no new leader"));
    assert_ne!(agents[new_leader].quorum.peer_id(), leader_peer);
    for a in &agents {
        let q = a.quorum.clone();
        let all = acked.clone();
        eventually("every acknowledged write on every survivor", T, move || {
            let names = service_names(&q);
            all.iter().all(|n| names.contains(n))
        })
        .await;
    }
    // The old leader restarts from disk and catches up.
    for i in 0..10 {
        write_ok(&agents[1].quorum, &format!("while-down-{i}")).await;
    }
    let seed = addr(&agents[0].mesh).await;
    let back = start_agent(&killed_dir, &killed_name, &[seed], |_| {}).await;
    // Asked at once, before the mesh told it who is alive, it waits for the leader instead of
    // calling the quorum lost.
    let read = back.quorum.read().await;
    assert!(
        read.is_ok(),
        "a read right after the restart: {:?}",
        read.err()
    );
    let expected = agents[0].quorum.state().services.len();
    let q = back.quorum.clone();
    eventually("restarted follower caught up", T, || {
        q.state().services.len() == expected
    })
    .await;
    assert_eq!(*back.quorum.state(), *agents[0].quorum.state());
    back.kill().await;
    for a in agents {
        a.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_managers_survive_two_failures() {
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let mut agents = cluster(root.path(), 5, 5, |c| c.target_managers = 5).await;
    write_ok(&agents[0].quorum, "before").await;
    let leader = leader_index(&agents).unwrap_or_else(|| panic!("no leader"));
    let a = agents.remove(leader);
    a.kill().await;
    let b = agents.remove(0);
    b.kill().await;
    write_ok(&agents[0].quorum, "after").await;
    for a in &agents {
        let q = a.quorum.clone();
        eventually("replicated to survivors", T, || {
            service_names(&q) == ["after", "before"]
        })
        .await;
    }
    for a in agents {
        a.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_then_snapshot_install_to_new_member() {
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let small = |c: &mut crate::QuorumConfig| {
        c.snapshot_after_entries = 20;
        c.keep_after_snapshot = 0;
    };
    let first = start_agent(&root.path().join("a0"), "node0", &[], small).await;
    for i in 0..120 {
        write_ok(&first.quorum, &format!("svc-{i}")).await;
    }
    let raft = first.quorum.raft().expect("its raft runs").clone();
    eventually("snapshot and purge", T, || {
        use openraft::async_runtime::WatchReceiver;
        let m = raft.metrics().borrow_watched().clone();
        m.snapshot.is_some() && m.purged.is_some_and(|p| p.index > 50)
    })
    .await;
    // Two more agents: with three eligible nodes the autopilot wants three managers, so both
    // become learners (the log they need was compacted: a snapshot), then voters.
    let seed = addr(&first.mesh).await;
    let second = start_agent(
        &root.path().join("a1"),
        "node1",
        std::slice::from_ref(&seed),
        small,
    )
    .await;
    let third = start_agent(&root.path().join("a2"), "node2", &[seed], small).await;
    let leader = first.quorum.clone();
    for new in [&second, &third] {
        let q = new.quorum.clone();
        eventually("snapshot installed on the new member", T, || {
            q.state().services.len() == 120
        })
        .await;
        // The leader may have committed more (the new node's registration, its role) than the
        // new member applied at that moment: the states must meet, not be equal at once.
        eventually("the new member's state equals the leader's", T, || {
            *q.state() == *leader.state()
        })
        .await;
    }
    third.kill().await;
    second.kill().await;
    first.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autopilot_replaces_a_dead_manager() {
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let mut agents = cluster(root.path(), 4, 3, |_| {}).await;
    write_ok(&agents[0].quorum, "x").await;
    let voters = agents[0].quorum.status().voters;
    let spare = agents
        .iter()
        .position(|a| !voters.contains(&a.quorum.peer_id()))
        .unwrap_or_else(|| panic!("no spare"));
    let spare_peer = agents[spare].quorum.peer_id();
    let victim = agents
        .iter()
        .position(|a| voters.contains(&a.quorum.peer_id()) && !a.quorum.is_leader())
        .unwrap_or_else(|| panic!("no follower"));
    let victim_peer = agents[victim].quorum.peer_id();
    agents.remove(victim).kill().await;
    let q = agents[0].quorum.clone();
    eventually(
        "spare promoted and dead manager removed",
        Duration::from_secs(20),
        || {
            let v = q.status().voters;
            v.len() == 3 && v.contains(&spare_peer) && !v.contains(&victim_peer)
        },
    )
    .await;
    write_ok(&agents[0].quorum, "y").await;
    for a in agents {
        a.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_quorum_fails_fast_then_recover() {
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let mut agents = cluster(root.path(), 3, 3, |c| c.autopilot = true).await;
    write_ok(&agents[0].quorum, "kept").await;
    let survivor = agents.remove(0);
    let q = survivor.quorum.clone();
    eventually("survivor applied", T, || service_names(&q) == ["kept"]).await;
    for a in agents {
        a.kill().await;
    }
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < Duration::from_secs(6) {
        match survivor.quorum.write(create("lost")).await {
            Err(e @ WriteError::NoQuorum { .. }) => {
                last = Some(e);
                break;
            }
            other => last = Some(other.err().unwrap_or(WriteError::Uncertain)),
        }
    }
    let elapsed = started.elapsed();
    match last {
        Some(WriteError::NoQuorum {
            reachable: 1,
            voters: 3,
        }) => {}
        other => panic!("expected `no quorum: 1 of 3`, got {other:?} after {elapsed:?}"),
    }
    assert_eq!(
        WriteError::NoQuorum {
            reachable: 1,
            voters: 3
        }
        .to_string(),
        "no quorum: 1 of 3 managers reachable"
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "no-quorum error took {elapsed:?}"
    );
    let dir = survivor.kill().await;
    let report = crate::recover(&dir.join("raft"))
        .await
        .unwrap_or_else(|e| panic!("recover: {e}"));
    assert!(report.last_index > 0);
    let back = start_agent(&dir, "node0", &[], |_| {}).await;
    let q = back.quorum.clone();
    eventually("single-voter leader", T, || q.is_leader()).await;
    assert_eq!(back.quorum.status().voters.len(), 1);
    write_ok(&back.quorum, "after-recover").await;
    // Everything acknowledged survives. The write refused with "no quorum" was never
    // acknowledged; if it reached the survivor's log, recover keeps it (like etcd's
    // --force-new-cluster), so both outcomes are correct.
    let names = service_names(&back.quorum);
    assert!(
        names == ["after-recover", "kept"] || names == ["after-recover", "kept", "lost"],
        "after recover: {names:?}"
    );
    back.kill().await;
}
