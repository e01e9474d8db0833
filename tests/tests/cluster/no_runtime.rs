//! A node without a Docker engine still runs: it forms and leads the cluster, reports
//! `runtime: none`, and gets no tasks; the tasks go to the node that has a runtime, and a task
//! that could only run on the runtime-less node says why it waits.

use std::time::Duration;

use shoal_agent::control::api::{self, CreateServiceRequest, CreateServiceResponse};
use shoal_agent::control::views::NodeRow;
use shoal_agent::daemon::{Agent, AgentConfig, ExecutorKind};
use shoal_scheduler::{DesiredState, NodeState, ServiceMode, TaskState};
use shoal_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_without_docker_runs_and_gets_no_tasks() {
    init_logging();
    let none_dir = tempfile::tempdir().expect("tempdir");
    // The docker executor pointed at a socket that does not exist: no engine answers.
    let mut config = AgentConfig::for_tests(none_dir.path(), ExecutorKind::Docker);
    config.docker_host = Some(format!(
        "unix://{}",
        none_dir.path().join("no-docker.sock").display()
    ));
    let bare = Agent::start(config)
        .await
        .expect("an agent without Docker starts");
    assert!(bare.executor().is_none() && bare.worker().is_none());
    let bare_client = client(&bare);
    let info: api::InfoResponse = bare_client.get(api::INFO).await.expect("info");
    assert_eq!(info.runtime, "none");
    assert!(
        info.cluster_id.is_some(),
        "alone, it formed a cluster all the same"
    );

    let sim_dir = tempfile::tempdir().expect("tempdir");
    let sim = start_agent(
        sim_dir.path(),
        ExecutorKind::Sim,
        vec![join_addr(&bare).await],
    )
    .await;
    let (bare_id, sim_id) = (bare.node_id().clone(), sim.node_id().clone());
    // Both nodes are recorded and ready; the one without Docker says `none`.
    let rows = eventually("two ready nodes", Duration::from_secs(20), || async {
        let rows: Vec<NodeRow> = bare_client.get(api::NODES).await.ok()?;
        (rows.len() == 2 && rows.iter().all(|r| r.state == "ready")).then_some(rows)
    })
    .await;
    let runtime_of = |id: &shoal_scheduler::NodeId| {
        rows.iter()
            .find(|r| &r.id == id)
            .map(|r| r.runtime.clone())
            .expect("the node is listed")
    };
    assert_eq!(runtime_of(&bare_id), "none");
    assert_eq!(runtime_of(&sim_id), "sim");

    // Created through the runtime-less node (it leads, or forwards to the leader).
    let _: CreateServiceResponse = bare_client
        .post(
            api::SERVICES,
            &CreateServiceRequest {
                spec: sim_spec("web", 4),
            },
        )
        .await
        .expect("create a replicated service");
    let mut global = sim_spec("everywhere", 0);
    global.mode = ServiceMode::Global;
    let _: CreateServiceResponse = bare_client
        .post(api::SERVICES, &CreateServiceRequest { spec: global })
        .await
        .expect("create a global service");
    let mut pinned = sim_spec("pinned", 1);
    pinned.constraints =
        vec![shoal_scheduler::parse::constraint(&format!("node.id=={bare_id}")).expect("parses")];
    let _: CreateServiceResponse = bare_client
        .post(api::SERVICES, &CreateServiceRequest { spec: pinned })
        .await
        .expect("create a service only the bare node could run");
    wait_running(&bare_client, "web", 4, Duration::from_secs(20)).await;
    wait_running(&bare_client, "everywhere", 1, Duration::from_secs(20)).await;

    // The task that may only run on the runtime-less node waits, and says why.
    let waiting = eventually(
        "the pinned task explains why it waits",
        Duration::from_secs(10),
        || async {
            let rows = tasks(&bare_client, "pinned").await;
            let row = rows.into_iter().next()?;
            row.message
                .contains("without a container runtime")
                .then_some(row)
        },
    )
    .await;
    assert_eq!(waiting.state, TaskState::Pending, "{waiting:?}");
    assert!(waiting.node.is_empty(), "{waiting:?}");

    // Every task that has a node is on the sim node; none ever went to the bare node.
    let state = bare.quorum().state();
    let placed: Vec<_> = state.tasks.values().filter(|t| t.node.is_some()).collect();
    assert_eq!(placed.len(), 5, "4 replicas and 1 global task are placed");
    assert!(
        placed.iter().all(|t| t.node.as_ref() == Some(&sim_id)),
        "{placed:#?}"
    );
    assert!(
        placed
            .iter()
            .all(|t| t.desired == DesiredState::Running && t.status.state == TaskState::Running)
    );
    assert_eq!(
        state.nodes.get(&bare_id).map(|n| n.state),
        Some(NodeState::Ready),
        "a node without heartbeats of its own (it runs no worker) is not marked down while the mesh hears it"
    );
    drop(state);
    sim.shutdown().await;
    bare.shutdown().await;
}
