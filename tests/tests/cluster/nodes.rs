//! Operating nodes through the control API, on six agents (three managers, three workers) with
//! the sim executor: labels set and removed, a worker drained (its tasks move, the service keeps
//! its count, the drained node gets nothing), a node named by hostname or id prefix (an
//! ambiguous prefix is an error), and removal (a manager refused, a live node only with force).
//! A demoted leader hands over and a worker takes its seat.

use std::time::Duration;

use shoal_agent::control::api::{
    self, CreateServiceRequest, CreateServiceResponse, UpdateNodeRequest,
};
use shoal_agent::control::client::{ClientError, ControlClient};
use shoal_agent::control::views::{NodeRow, TaskRow};
use shoal_agent::daemon::ExecutorKind;
use shoal_consensus::MANAGER_LABEL;
use shoal_scheduler::{Availability, DesiredState, Node, TaskState};
use shoal_tests::*;

/// Live tasks the API lists on `node`, and how many of them run.
async fn live_on(client: &ControlClient, node: &str) -> (usize, usize) {
    let rows: Vec<TaskRow> = client.get(&api::node_tasks(node)).await.unwrap_or_default();
    let live: Vec<&TaskRow> = rows
        .iter()
        .filter(|r| r.desired != DesiredState::Shutdown)
        .collect();
    let running = live
        .iter()
        .filter(|r| r.state == TaskState::Running)
        .count();
    (live.len(), running)
}

/// Waits until `client`'s agent lists `n` nodes, all ready.
async fn ready_through(client: &ControlClient, n: usize) {
    eventually(
        &format!("{n} ready nodes"),
        Duration::from_secs(30),
        || async {
            let rows: Vec<NodeRow> = client.get(api::NODES).await.ok()?;
            (rows.len() == n && rows.iter().all(|r| r.state == "ready")).then_some(())
        },
    )
    .await;
}

fn api_error<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api { status, message }) => (status.as_u16(), message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_are_labelled_drained_and_removed_through_the_api() {
    init_logging();
    let dirs = temp_dirs(6);
    let mut agents = start_joined(&dirs, |dir, join| async move {
        start_agent(&dir, ExecutorKind::Sim, join).await
    })
    .await;
    wait_managers(&agents, 3).await;
    let leader = leader_index(&agents);
    let manager = follower_index(&agents);
    let worker = (0..6)
        .rev()
        .find(|i| !agents[*i].quorum().is_member())
        .expect("a worker");
    let client = client(&agents[manager]);
    ready_through(&client, 6).await;
    let _: CreateServiceResponse = client
        .post(
            api::SERVICES,
            &CreateServiceRequest {
                spec: sim_spec("web", 12),
            },
        )
        .await
        .expect("create");
    wait_running(&client, "web", 12, Duration::from_secs(30)).await;
    let worker_id = agents[worker].node_id().to_string();
    assert!(
        live_on(&client, &worker_id).await.0 > 0,
        "spread gave the worker tasks"
    );

    // Labels, naming the node by a unique prefix of its id.
    let prefix = &worker_id[..worker_id.len() - 4];
    let labelled = UpdateNodeRequest {
        labels_set: vec![("zone".into(), "a".into()), ("disk".into(), "ssd".into())],
        ..UpdateNodeRequest::default()
    };
    let _: String = client
        .post(&api::node_update(prefix), &labelled)
        .await
        .expect("labels");
    let unlabel = UpdateNodeRequest {
        labels_remove: vec!["disk".into()],
        ..UpdateNodeRequest::default()
    };
    let _: String = client
        .post(&api::node_update(&worker_id), &unlabel)
        .await
        .expect("label removed");
    let node: Node = client.get(&api::node(&worker_id)).await.expect("inspect");
    assert_eq!(node.labels.get("zone").map(String::as_str), Some("a"));
    assert!(!node.labels.contains_key("disk"));
    // In-process agents share a hostname, and every node id starts alike: both are ambiguous;
    // an unknown name is not found.
    let (status, message) = api_error(client.get::<Node>(&api::node(&node.hostname)).await);
    assert_eq!(status, 400, "{message}");
    let (status, message) = api_error(client.get::<Node>(&api::node("12D3KooW")).await);
    assert_eq!(status, 400);
    assert!(message.contains("ambiguous"), "{message}");
    let (status, _) = api_error(client.get::<Node>(&api::node("no-such-node")).await);
    assert_eq!(status, 404);

    // Drain: the worker's tasks move, the service keeps its twelve, the worker gets nothing.
    let drain = UpdateNodeRequest {
        availability: Some(Availability::Drain),
        ..UpdateNodeRequest::default()
    };
    let _: String = client
        .post(&api::node_update(&worker_id), &drain)
        .await
        .expect("drain");
    eventually(
        "the drained worker holds no task",
        Duration::from_secs(60),
        || async { (live_on(&client, &worker_id).await.0 == 0).then_some(()) },
    )
    .await;
    wait_running(&client, "web", 12, Duration::from_secs(30)).await;
    let node: Node = client.get(&api::node(&worker_id)).await.expect("inspect");
    assert_eq!(node.availability, Availability::Drain);

    // Removal: a manager is refused, a live worker needs force.
    let manager_id = agents[leader].node_id().to_string();
    let (status, message) = api_error(client.delete::<String>(&api::node(&manager_id)).await);
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("demote"), "{message}");
    let (_, message) = api_error(client.delete::<String>(&api::node(&worker_id)).await);
    assert!(message.contains("not down"), "{message}");
    agents.remove(worker).shutdown().await;
    let _: String = client
        .delete(&format!("{}?force=true", api::node(&worker_id)))
        .await
        .expect("forced removal");
    let rows: Vec<NodeRow> = client.get(api::NODES).await.expect("node ls");
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.id.as_str() != worker_id));
    for agent in agents {
        agent.shutdown().await;
    }
}

/// `shoal node demote` of the leader, run on a worker: the leader hands over, a worker takes
/// its seat (three voters throughout), the demoted agent stays in the cluster as a plain worker,
/// and `shoal node promote` makes it eligible again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_demoted_leader_hands_over_and_a_worker_takes_its_seat() {
    init_logging();
    let dirs = temp_dirs(6);
    let agents = start_joined(&dirs, |dir, join| async move {
        start_agent(&dir, ExecutorKind::Sim, join).await
    })
    .await;
    wait_managers(&agents, 3).await;
    let leader = leader_index(&agents);
    let old_leader = agents[leader].mesh().local_peer_id();
    let worker = worker_index(&agents);
    let socket = agents[worker].socket().to_path_buf();
    let client = client(&agents[worker]);
    ready_through(&client, 6).await;

    let started = std::time::Instant::now();
    shoal_cli(socket.clone(), &["node", "demote", &old_leader.to_string()])
        .await
        .expect("shoal node demote");
    eventually(
        "another leader, the demoted one no raft member",
        Duration::from_secs(60),
        || async {
            let now = agents[worker].quorum().leader().borrow().to_owned()?;
            (now != old_leader && !agents[leader].quorum().is_member()).then_some(())
        },
    )
    .await;
    println!("demoted leader handed over in {:?}", started.elapsed());
    wait_managers(&agents, 3).await;
    let node: Node = client
        .get(&api::node(&old_leader.to_string()))
        .await
        .expect("the demoted node is still in the cluster");
    assert_eq!(
        node.labels.get(MANAGER_LABEL).map(String::as_str),
        Some("false")
    );
    ready_through(&client, 6).await;

    shoal_cli(socket, &["node", "promote", &old_leader.to_string()])
        .await
        .expect("shoal node promote");
    let node: Node = client
        .get(&api::node(&old_leader.to_string()))
        .await
        .expect("inspect");
    assert!(
        !node.labels.contains_key(MANAGER_LABEL),
        "promote clears the step-down"
    );
    for agent in agents {
        agent.shutdown().await;
    }
}
