//! More agents than the raft group holds: seven agents with the in-memory executor form one
//! cluster of three managers and four plain workers. Every agent is ready and runs tasks, every
//! agent's own socket shows the whole cluster (a worker asks a manager), a write through a
//! worker is read at once through another, and when the leader dies the workers follow the new
//! one without restarting their tasks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use shoal_agent::control::api::{self, CreateServiceRequest, CreateServiceResponse, ScaleRequest};
use shoal_agent::control::endpoints::{EndpointsView, MAX_ENDPOINTS_WAIT_MS};
use shoal_agent::control::views::{NodeRow, ServiceRow};
use shoal_agent::daemon::{Agent, ExecutorKind};
use shoal_scheduler::{ClusterState, DesiredState, NodeId, ServiceId, TaskId, TaskState};
use shoal_tests::*;

const AGENTS: usize = 7;
const MANAGERS: usize = 3;

/// Running tasks by node, as `state` records them.
fn running_by_node(state: &ClusterState) -> BTreeMap<NodeId, BTreeSet<TaskId>> {
    let mut by_node: BTreeMap<NodeId, BTreeSet<TaskId>> = BTreeMap::new();
    for task in state.tasks.values() {
        let running =
            task.desired == DesiredState::Running && task.status.state == TaskState::Running;
        if running && let Some(node) = &task.node {
            by_node.entry(node.clone()).or_default().insert(task.id);
        }
    }
    by_node
}

/// Waits until `agent`'s own socket lists `n` ready nodes, `managers` of them managers.
async fn sees_whole_cluster(agent: &Agent, n: usize, managers: usize) {
    let client = client(agent);
    eventually(
        &format!("{} lists {n} ready nodes", agent.node_id()),
        Duration::from_secs(30),
        || async {
            let rows: Vec<NodeRow> = client.get(api::NODES).await.ok()?;
            let ready = rows.iter().filter(|r| r.state == "ready").count();
            let manager_rows = rows.iter().filter(|r| r.role == "manager").count();
            (rows.len() == n && ready == n && manager_rows == managers).then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_beyond_the_raft_group_run_tasks_and_follow_a_new_leader() {
    init_logging();
    let dirs = temp_dirs(AGENTS);
    let mut agents = start_joined(&dirs, |dir, join| async move {
        start_agent(&dir, ExecutorKind::Sim, join).await
    })
    .await;
    for agent in &agents {
        sees_whole_cluster(agent, AGENTS, MANAGERS).await;
    }
    // The raft group stays small: three voters, and the learners settle to none.
    let leader = leader_index(&agents);
    eventually(
        "three voters and no learner",
        Duration::from_secs(10),
        || async {
            let status = agents[leader].quorum().status();
            (status.voters.len() == MANAGERS && status.learners.is_empty()).then_some(())
        },
    )
    .await;
    // A learner the autopilot removed hears so from the leader's next heartbeat answer.
    eventually(
        "only the managers hold the raft log",
        Duration::from_secs(5),
        || async {
            let members = agents.iter().filter(|a| a.quorum().is_member()).count();
            (members == MANAGERS).then_some(())
        },
    )
    .await;

    // A service created through one worker, read at once through another.
    let workers: Vec<usize> = (0..AGENTS)
        .filter(|i| !agents[*i].quorum().is_member())
        .collect();
    let (writer, reader) = (client(&agents[workers[0]]), client(&agents[workers[1]]));
    let _: CreateServiceResponse = writer
        .post(
            api::SERVICES,
            &CreateServiceRequest {
                spec: sim_spec("wide", 14),
            },
        )
        .await
        .expect("create through a worker");
    let rows: Vec<ServiceRow> = reader.get(api::SERVICES).await.expect("list on a worker");
    assert!(
        rows.iter().any(|r| r.name == "wide"),
        "a read through another worker saw the write at once: {rows:?}"
    );
    wait_running(&reader, "wide", 14, Duration::from_secs(30)).await;
    let before = running_by_node(&agents[leader].quorum().state());
    assert_eq!(before.len(), AGENTS, "tasks on every agent: {before:?}");

    // The leader dies: a new one is elected and every worker follows it.
    let old = agents.remove(leader);
    let old_id = old.node_id().clone();
    let killed = Instant::now();
    old.kill().await;
    let new_leader = eventually("a new leader", Duration::from_secs(10), || async {
        let leader = *agents[0].quorum().leader().borrow();
        leader.filter(|l| l.to_string() != old_id.as_str())
    })
    .await;
    let elected = killed.elapsed();
    eventually(
        "every agent follows the new leader",
        Duration::from_secs(5),
        || async {
            agents
                .iter()
                .all(|a| *a.quorum().leader().borrow() == Some(new_leader))
                .then_some(())
        },
    )
    .await;
    let followed = killed.elapsed();
    eprintln!("leader killed: elected in {elected:?}, followed everywhere in {followed:?}");
    assert!(
        followed - elected < Duration::from_secs(1),
        "workers took {:?} to follow the new leader",
        followed - elected
    );

    // Every task of a surviving node runs on, unrestarted; the dead leader's are replaced.
    let survivor = client(&agents[0]);
    wait_running(&survivor, "wide", 14, Duration::from_secs(30)).await;
    let new_index = agents
        .iter()
        .position(|a| a.mesh().local_peer_id() == new_leader)
        .expect("the new leader is one of us");
    let after = running_by_node(&agents[new_index].quorum().state());
    for (node, tasks) in before.iter().filter(|(n, _)| **n != old_id) {
        let kept = after.get(node).cloned().unwrap_or_default();
        assert!(
            tasks.is_subset(&kept),
            "tasks of {node} restarted: {tasks:?} then {kept:?}"
        );
    }

    // The service stays editable through a worker.
    let id: ServiceId = writer
        .post(&api::service_scale("wide"), &ScaleRequest { replicas: 20 })
        .await
        .expect("scale through a worker");
    assert_eq!(id, ServiceId(0));
    wait_running(&reader, "wide", 20, Duration::from_secs(30)).await;
    for agent in agents {
        agent.shutdown().await;
    }
}

/// A node reporting the status of another node's task, and an agent that does not lead sending
/// assignments: both refused, logged and counted, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_reports_and_assignments_are_refused_and_counted() {
    use shoal_agent::dispatch::messages::{
        AssignmentSet, DispatchRequest, DispatchResponse, decode, encode,
    };
    use shoal_discovery::ShoalProtocol;

    init_logging();
    let dirs = temp_dirs(2);
    let agents = start_joined(&dirs, |dir, join| async move {
        start_agent_with_metrics(&dir, ExecutorKind::Sim, join).await
    })
    .await;
    let leader = leader_index(&agents);
    let other = 1 - leader;
    create_running(&client(&agents[leader]), sim_spec("owned", 4)).await;
    let state = agents[leader].quorum().state();
    let (leader_id, other_id) = (agents[leader].node_id(), agents[other].node_id());
    let victim = state
        .tasks
        .values()
        .find(|t| t.node.as_ref() == Some(leader_id) && t.status.state == TaskState::Running)
        .expect("the leader runs a task")
        .clone();
    let forged = shoal_scheduler::TaskStatus {
        message: "forged".into(),
        ..shoal_scheduler::status_at(TaskState::Failed, shoal_agent::worker::now())
    };
    let request = encode(&DispatchRequest::Report {
        reports: vec![(victim.id, forged)],
    })
    .expect("encodes");
    let peer_of = |agent: &Agent| agent.mesh().local_peer_id();
    let answer = agents[other]
        .mesh()
        .request(peer_of(&agents[leader]), ShoalProtocol::Dispatch, request)
        .await
        .expect("the leader answers");
    assert_eq!(
        decode::<DispatchResponse>(&answer).ok(),
        Some(DispatchResponse::Ack)
    );
    // Assignments from an agent that does not lead, to the leader's worker.
    let assign = encode(&DispatchRequest::Assign(AssignmentSet {
        term: 1,
        version: 99,
        leader_term: 0,
        page: 0,
        pages: 1,
        tasks: Vec::new(),
    }))
    .expect("encodes");
    let answer = agents[other]
        .mesh()
        .request(peer_of(&agents[leader]), ShoalProtocol::Dispatch, assign)
        .await
        .expect("the worker answers");
    assert_eq!(
        decode::<DispatchResponse>(&answer).ok(),
        Some(DispatchResponse::NotFromLeader)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = agents[leader].quorum().state();
    assert_eq!(
        after.tasks[&victim.id].status.state,
        TaskState::Running,
        "{other_id}"
    );
    assert_eq!(running_by_node(&after), running_by_node(&state));
    let metrics = scrape(agents[leader].metrics_addr().expect("metrics")).await;
    let counted = |reason: &str, request: &str| {
        sample(
            &metrics,
            &format!(
                "shoal_refused_requests_total{{protocol=\"dispatch\",request=\"{request}\",reason=\"{reason}\"}}"
            ),
        )
    };
    assert_eq!(counted("other_node", "report"), Some(1.0), "{metrics}");
    assert_eq!(counted("not_from_leader", "assign"), Some(1.0), "{metrics}");
    for agent in agents {
        agent.shutdown().await;
    }
}

/// Asks for the endpoint view holding `digest`, waiting up to `wait_ms`; returns the answer
/// and how long it took.
async fn endpoints_after(
    client: &shoal_agent::control::client::ControlClient,
    digest: &str,
    wait_ms: u64,
) -> (EndpointsView, Duration) {
    let started = Instant::now();
    let uri = format!(
        "{}?stale=true&unchanged={digest}&wait_ms={wait_ms}",
        api::ENDPOINTS
    );
    let view = client.get(&uri).await.expect("the endpoints");
    (view, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_waits_for_the_endpoint_view_to_change_instead_of_polling_it() {
    init_logging();
    let dirs = temp_dirs(2);
    let agents = start_joined(&dirs, |dir, join| async move {
        start_agent(&dir, ExecutorKind::Sim, join).await
    })
    .await;
    wait_ready_nodes(&agents[0], 2).await;
    let worker = client(&agents[worker_index(&agents)]);
    let first: EndpointsView = worker
        .get(&format!("{}?stale=true", api::ENDPOINTS))
        .await
        .expect("the endpoints through the worker");
    assert!(!first.unchanged && !first.digest.is_empty(), "{first:?}");

    // Nothing changes: after the wait, a small answer that the view holds.
    let (still, took) = endpoints_after(&worker, &first.digest, 1_500).await;
    assert!(still.unchanged, "{still:?}");
    assert!(still.services.is_empty() && still.tasks.is_empty());
    assert_eq!(still.digest, first.digest);
    assert!(
        took >= Duration::from_millis(1_400) && took < Duration::from_secs(4),
        "answered after {took:?}"
    );
    // A wait longer than the bound is cut to it.
    let (_, took) = endpoints_after(&worker, &first.digest, 60_000).await;
    assert!(
        took < Duration::from_millis(MAX_ENDPOINTS_WAIT_MS + 2_000),
        "answered after {took:?}"
    );

    // A change answers the waiting call at once, with the new view.
    let waiting = tokio::spawn({
        let worker = worker.clone();
        let digest = first.digest.clone();
        async move { endpoints_after(&worker, &digest, MAX_ENDPOINTS_WAIT_MS).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let created = Instant::now();
    let _: CreateServiceResponse = worker
        .post(
            api::SERVICES,
            &CreateServiceRequest {
                spec: sim_spec("web", 2),
            },
        )
        .await
        .expect("a service");
    let (changed, _) = waiting.await.expect("the waiting call");
    let late = created.elapsed();
    assert!(!changed.unchanged, "{changed:?}");
    assert_ne!(changed.digest, first.digest);
    assert!(changed.services.iter().any(|s| s.spec.name == "web"));
    assert!(
        late < Duration::from_secs(2),
        "the change came {late:?} later"
    );
    for agent in agents {
        agent.shutdown().await;
    }
}
