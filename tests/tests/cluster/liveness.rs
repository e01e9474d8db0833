//! What the dispatcher does *not* do: restart tasks after a heartbeat blip shorter than its
//! grace, mark down a node that only lost its link to the leader while the mesh still hears it,
//! or mark down live nodes when the leadership moves. Three agents with the in-memory executor.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command as Process;
use std::time::{Duration, Instant};

use shoal_agent::daemon::{Agent, AgentConfig, ExecutorKind};
use shoal_agent::dispatch::messages::{DispatchRequest, encode};
use shoal_discovery::{MemberState, PeerId, ShoalProtocol};
use shoal_scheduler::{ClusterState, DesiredState, NodeId, NodeState, TaskId, TaskState};
use shoal_tests::*;

/// An agent for these tests: one manager in the whole cluster, so that only the dispatcher's
/// liveness (not a raft election) is at stake when a worker goes quiet.
fn config(dir: &std::path::Path, join: Vec<String>, down_grace: Duration) -> AgentConfig {
    let mut config = AgentConfig::for_tests(dir, ExecutorKind::Sim);
    config.join = join;
    config.managers = 1;
    config.down_grace = down_grace;
    config
}

/// Starts one agent per dir with [`config`], joined to the first.
async fn start_quiet_cluster(dirs: &[tempfile::TempDir], grace: Duration) -> Vec<Agent> {
    start_joined(dirs, |dir, join| async move {
        Agent::start(config(&dir, join, grace))
            .await
            .expect("agent starts")
    })
    .await
}

/// The tasks that should run, by id, with their node.
fn live_tasks(state: &ClusterState) -> BTreeMap<TaskId, Option<NodeId>> {
    state
        .tasks
        .values()
        .filter(|t| t.desired == DesiredState::Running)
        .map(|t| (t.id, t.node.clone()))
        .collect()
}

/// Watches the leader's state for `span`: fails at once if `node` is ever not ready or if the
/// live tasks ever differ from `expected`, or if a task of them stops running.
async fn nothing_changes_for(
    leader: &Agent,
    node: &NodeId,
    expected: &BTreeMap<TaskId, Option<NodeId>>,
    span: Duration,
) {
    let until = Instant::now() + span;
    while Instant::now() < until {
        let state = leader.quorum().state();
        let node_state = state.nodes.get(node).map(|n| n.state);
        assert_eq!(node_state, Some(NodeState::Ready), "{node} stays ready");
        assert_eq!(&live_tasks(&state), expected, "no task is replaced");
        for id in expected.keys() {
            let task = &state.tasks[id];
            assert_eq!(
                task.status.state,
                TaskState::Running,
                "{id} keeps running: {task:?}"
            );
        }
        drop(state);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn peer_of(node: &NodeId) -> PeerId {
    node.as_str().parse().expect("a node id is a PeerId")
}

/// How `leader`'s mesh sees `node` now.
async fn mesh_state(leader: &Agent, node: &NodeId) -> Option<MemberState> {
    let peer = peer_of(node);
    let members = leader.mesh().members().await.ok()?;
    members
        .into_iter()
        .find(|m| m.peer_id == peer)
        .map(|m| m.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_heartbeat_blip_shorter_than_the_grace_restarts_nothing() {
    init_logging();
    // The blip is longer than the mesh's dead threshold (so the mesh does call the worker dead,
    // and only the dispatcher's heartbeat grace stands between it and a restart) and well under
    // that grace, with seconds to spare on a busy machine.
    let grace = Duration::from_secs(6);
    let blip = Duration::from_secs(3);
    let dirs = temp_dirs(3);
    let mut agents = start_quiet_cluster(&dirs[..2], grace).await;
    let other = agents.pop().expect("two agents");
    let leader = agents.pop().expect("two agents");
    let seed = join_addr(&leader).await;
    let worker = FreezableAgent::start(config(dirs[2].path(), vec![seed], grace)).await;
    let node = worker.node_id().clone();
    wait_ready_nodes(&leader, 3).await;
    assert!(leader.quorum().is_leader());
    create_running(&client(&leader), sim_spec("steady", 6)).await;
    let expected = live_tasks(&leader.quorum().state());
    let on_worker = expected
        .values()
        .filter(|n| n.as_ref() == Some(&node))
        .count();
    assert!(on_worker >= 1, "the worker runs tasks: {expected:?}");
    // Its heartbeats reach the leader before the blip.
    eventually(
        "the mesh hears the worker",
        Duration::from_secs(10),
        || async { (mesh_state(&leader, &node).await == Some(MemberState::Alive)).then_some(()) },
    )
    .await;

    let frozen_at = Instant::now();
    worker.freeze(blip).await;
    // While frozen, the mesh stops hearing it: the blip is real to the cluster.
    let seen = eventually(
        "the mesh notices the silence",
        Duration::from_secs(10),
        || async {
            let state = mesh_state(&leader, &node).await?;
            (state != MemberState::Alive).then_some(state)
        },
    )
    .await;
    assert!(
        frozen_at.elapsed() < blip,
        "the mesh noticed ({seen:?}) during the blip"
    );
    // Until well past the grace, counted from the blip's start: nothing is marked or replaced.
    nothing_changes_for(&leader, &node, &expected, grace + Duration::from_secs(2)).await;
    assert_eq!(
        mesh_state(&leader, &node).await,
        Some(MemberState::Alive),
        "the worker is heard again"
    );
    let rows = tasks(&worker.client(), "steady").await;
    assert_eq!(rows.len(), 6, "no task was added: {rows:?}");
    worker.shutdown().await;
    other.shutdown().await;
    leader.shutdown().await;
}

/// iptables rules that drop the TCP traffic between two loopback ports (both directions),
/// removed when dropped. Agents dial from their listen port (libp2p reuses it), so the pair of
/// listen ports names exactly the connection between two agents.
struct LinkCut {
    rules: Vec<Vec<String>>,
}

/// Comment on every rule of this process, so that rules a killed run left behind are found.
fn rule_tag() -> String {
    format!("shoal-test-linkcut-{}", std::process::id())
}

fn iptables(args: &[String]) -> bool {
    Process::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success())
}

impl LinkCut {
    fn between(a: u16, b: u16) -> LinkCut {
        remove_stale_rules();
        let rule = |from: u16, to: u16| -> Vec<String> {
            [
                "OUTPUT",
                "-o",
                "lo",
                "-p",
                "tcp",
                "--sport",
                &from.to_string(),
                "--dport",
                &to.to_string(),
                "-m",
                "comment",
                "--comment",
                &rule_tag(),
                "-j",
                "DROP",
            ]
            .map(String::from)
            .to_vec()
        };
        let cut = LinkCut {
            rules: vec![rule(a, b), rule(b, a)],
        };
        for rule in &cut.rules {
            let mut insert = vec!["-I".to_string()];
            insert.extend(rule.iter().cloned());
            assert!(
                iptables(&insert),
                "iptables -I {rule:?} failed (the test needs root and iptables)"
            );
        }
        cut
    }
}

impl Drop for LinkCut {
    fn drop(&mut self) {
        for rule in &self.rules {
            let mut delete = vec!["-D".to_string()];
            delete.extend(rule.iter().cloned());
            while iptables(&delete) {}
        }
    }
}

/// Deletes rules that earlier runs of this test tagged and could not remove (a killed process).
fn remove_stale_rules() {
    let Ok(out) = Process::new("iptables")
        .args(["-w", "-S", "OUTPUT"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(pid) = line
            .split("shoal-test-linkcut-")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let rule: Vec<String> = line
            .split_whitespace()
            .skip(2)
            .map(|word| word.trim_matches('"').to_string())
            .collect();
        let mut delete = vec!["-D".to_string(), "OUTPUT".to_string()];
        delete.extend(rule);
        iptables(&delete);
    }
}

/// The TCP port of a `/ip4/127.0.0.1/tcp/PORT/p2p/...` address.
fn tcp_port(addr: &str) -> u16 {
    addr.split("/tcp/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|port| port.parse().ok())
        .expect("a TCP listen address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_from_the_leader_only_is_not_marked_down() {
    init_logging();
    let grace = Duration::from_secs(2);
    let dirs = temp_dirs(3);
    let mut agents = start_quiet_cluster(&dirs, grace).await;
    let worker = agents.pop().expect("three agents");
    let other = agents.pop().expect("three agents");
    let leader = agents.pop().expect("three agents");
    let seed = join_addr(&leader).await;
    let node = worker.node_id().clone();
    wait_ready_nodes(&leader, 3).await;
    // The worker also talks to the other agent directly, so gossip has a way around the cut.
    eventually(
        "the worker is connected to both others",
        Duration::from_secs(10),
        || async {
            let peers = worker.mesh().connected_peers().await.ok()?;
            let both = [leader.mesh().local_peer_id(), other.mesh().local_peer_id()];
            both.iter().all(|p| peers.contains(p)).then_some(())
        },
    )
    .await;
    create_running(&client(&leader), sim_spec("steady", 6)).await;
    let expected = live_tasks(&leader.quorum().state());
    assert!(
        expected.values().any(|n| n.as_ref() == Some(&node)),
        "the worker runs tasks: {expected:?}"
    );

    let cut = LinkCut::between(tcp_port(&seed), tcp_port(&join_addr(&worker).await));
    // The link is really gone: the leader cannot reach the worker on the dispatch protocol.
    let probe = encode(&DispatchRequest::Heartbeat {
        holds: None,
        managers_epoch: 0,
    })
    .expect("a heartbeat encodes");
    let reached = tokio::time::timeout(
        Duration::from_secs(2),
        leader
            .mesh()
            .request(peer_of(&node), ShoalProtocol::Dispatch, probe),
    )
    .await;
    assert!(
        !matches!(reached, Ok(Ok(_))),
        "the cut did not stop the leader reaching the worker"
    );
    // Heartbeats have been silent for more than the grace by now and stay so; the mesh still
    // hears the worker through the third agent, so it is not marked down.
    nothing_changes_for(&leader, &node, &expected, grace * 2).await;
    assert_eq!(
        mesh_state(&leader, &node).await,
        Some(MemberState::Alive),
        "the mesh hears the worker through the other agent"
    );
    drop(cut);
    // Once the link is back, nothing happens either.
    nothing_changes_for(&leader, &node, &expected, grace).await;
    worker.shutdown().await;
    other.shutdown().await;
    leader.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_takes_over_without_marking_live_nodes_down() {
    init_logging();
    let dirs = temp_dirs(3);
    let mut agents = start_joined(&dirs, |dir, join| async move {
        start_agent(&dir, ExecutorKind::Sim, join).await
    })
    .await;
    // Three voters everywhere before the kill.
    wait_voters(&agents, 3).await;
    wait_ready_nodes(&agents[0], 3).await;
    create_running(&client(&agents[0]), sim_spec("steady", 6)).await;

    let index = leader_index(&agents);
    let leader = agents[index].mesh().local_peer_id();
    let victim = agents.remove(index);
    let victim_id = victim.node_id().clone();
    let survivor_ids: BTreeSet<NodeId> = agents.iter().map(|a| a.node_id().clone()).collect();
    // The survivor that watches has applied the six running tasks too (a follower may lag).
    let observer = &agents[0];
    eventually(
        "the observer sees six running tasks",
        Duration::from_secs(10),
        || async {
            let state = observer.quorum().state();
            let running = state
                .tasks
                .values()
                .filter(|t| {
                    t.desired == DesiredState::Running && t.status.state == TaskState::Running
                })
                .count();
            (running == 6).then_some(())
        },
    )
    .await;
    let before = live_tasks(&observer.quorum().state());
    let kept: BTreeMap<TaskId, Option<NodeId>> = before
        .iter()
        .filter(|(_, node)| node.as_ref().is_some_and(|n| survivor_ids.contains(n)))
        .map(|(id, node)| (*id, node.clone()))
        .collect();
    let lost = before.len() - kept.len();
    assert!(
        lost >= 1 && !kept.is_empty(),
        "tasks on every node: {before:?}"
    );
    victim.kill().await;

    // Until the dead leader's tasks run on the survivors, and a while after: the survivors stay
    // ready and their tasks keep their ids and keep running.
    let started = Instant::now();
    let mut settled_at: Option<Instant> = None;
    loop {
        let state = observer.quorum().state();
        for id in &survivor_ids {
            assert_eq!(
                state.nodes.get(id).map(|n| n.state),
                Some(NodeState::Ready),
                "survivor {id} stays ready"
            );
        }
        for (id, node) in &kept {
            let task = &state.tasks[id];
            assert_eq!(
                (task.desired, &task.node),
                (DesiredState::Running, node),
                "{id} is kept"
            );
            assert_eq!(task.status.state, TaskState::Running, "{id} keeps running");
        }
        let live = live_tasks(&state);
        let replaced = live.len() == 6
            && live
                .values()
                .all(|n| n.as_ref().is_some_and(|n| survivor_ids.contains(n)))
            && state
                .tasks
                .values()
                .filter(|t| t.desired == DesiredState::Running)
                .all(|t| t.status.state == TaskState::Running);
        let new_leader = observer
            .quorum()
            .leader()
            .borrow()
            .is_some_and(|l| l != leader);
        drop(state);
        match settled_at {
            None if replaced && new_leader => settled_at = Some(Instant::now()),
            Some(at) if at.elapsed() > Duration::from_secs(3) => break,
            _ => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the dead leader's {lost} tasks were not replaced in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let state = observer.quorum().state();
    assert_eq!(
        state.nodes.get(&victim_id).map(|n| n.state),
        Some(NodeState::Down),
        "only the dead leader is down"
    );
    drop(state);
    for agent in agents {
        agent.shutdown().await;
    }
}
