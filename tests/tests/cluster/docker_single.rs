//! One agent forms a single-node cluster and runs services as Docker containers.

use std::time::Duration;

use shoal_agent::control::api::{
    self, CreateServiceRequest, CreateServiceResponse, ScaleRequest, UpdateServiceRequest,
};
use shoal_agent::daemon::ExecutorKind;
use shoal_scheduler::{
    DesiredState, HealthCheck, RestartCondition, Service, ServiceId, ServiceSpec, TaskState,
    UpdateOrder,
};
use shoal_tests::*;

const CONVERGE: Duration = Duration::from_secs(30);

fn spec(name: &str, replicas: u64) -> ServiceSpec {
    let mut spec = shoal_scheduler::synthetic::spec(name, replicas);
    spec.image = TEST_IMAGE.into();
    spec.args = vec!["sleep".into(), "3600".into()];
    spec.stop_grace_ms = 1_000;
    spec
}

async fn create(
    client: &shoal_agent::control::client::ControlClient,
    spec: ServiceSpec,
) -> ServiceId {
    let created: CreateServiceResponse = client
        .post(api::SERVICES, &CreateServiceRequest { spec })
        .await
        .expect("service created");
    created.id
}

/// Updates `name` to a new env with parallelism 2, `order` and `monitor_ms`; returns the service
/// as it was before.
async fn update_to_version_2(
    client: &shoal_agent::control::client::ControlClient,
    name: &str,
    order: UpdateOrder,
    monitor_ms: u64,
) -> Service {
    let service: Service = client.get(&api::service(name)).await.expect("inspect");
    let mut next = service.spec.clone();
    next.env = vec!["VERSION=2".into()];
    next.update.parallelism = 2;
    next.update.order = order;
    next.update.monitor_ms = monitor_ms;
    let _: ServiceId = client
        .post(
            &api::service_update(name),
            &UpdateServiceRequest {
                spec: next,
                expected_revision: service.revision,
            },
        )
        .await
        .expect("update");
    service
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_runs_scales_heals_updates_and_goes_away() {
    let DockerAgent {
        agent,
        node,
        client,
        dir: _dir,
        guard: _guard,
    } = DockerAgent::start().await;

    // Create 3 replicas: 3 containers run, labelled with task, service and node.
    let id = create(&client, spec("web", 3)).await;
    wait_running(&client, "web", 3, CONVERGE).await;
    let running = running_containers(&node, &id.to_string());
    assert_eq!(running.len(), 3, "three containers run");
    for container in &running {
        assert_eq!(container_label(container, "io.shoal.node.id"), node);
        assert_eq!(container_label(container, "io.shoal.service.name"), "web");
        assert!(container_label(container, "io.shoal.task.id").starts_with('t'));
    }

    // docker kill one: the restart policy (any) replaces it.
    docker_kill(&running[0]);
    eventually("the killed task is replaced", CONVERGE, || async {
        let now = running_containers(&node, &id.to_string());
        (now.len() == 3 && !now.contains(&running[0])).then_some(())
    })
    .await;
    let rows = tasks(&client, "web").await;
    assert!(
        rows.iter()
            .any(|t| t.desired == DesiredState::Shutdown && t.state == TaskState::Failed),
        "the killed task is kept in history as failed: {rows:#?}"
    );

    // Scale up, then down (highest slots go first).
    let _: ServiceId = client
        .post(&api::service_scale("web"), &ScaleRequest { replicas: 5 })
        .await
        .expect("scale up");
    wait_running(&client, "web", 5, CONVERGE).await;
    assert_eq!(running_containers(&node, &id.to_string()).len(), 5);
    let _: ServiceId = client
        .post(&api::service_scale("web"), &ScaleRequest { replicas: 2 })
        .await
        .expect("scale down");
    wait_running(&client, "web", 2, CONVERGE).await;
    eventually("surplus containers removed", CONVERGE, || async {
        (running_containers(&node, &id.to_string()).len() == 2).then_some(())
    })
    .await;
    let slots: Vec<String> = running_containers(&node, &id.to_string())
        .iter()
        .map(|c| container_label(c, "io.shoal.slot"))
        .collect();
    assert!(
        slots.iter().all(|s| s == "1" || s == "2"),
        "lowest slots stay: {slots:?}"
    );

    // Rolling update, start-first, parallelism 2: every task ends on the new version.
    let service = update_to_version_2(&client, "web", UpdateOrder::StartFirst, 200).await;
    eventually("all tasks on the new version", CONVERGE, || async {
        let containers = running_containers(&node, &id.to_string());
        let versions: Vec<String> = containers
            .iter()
            .map(|c| container_label(c, "io.shoal.spec.version"))
            .collect();
        (containers.len() == 2
            && versions
                .iter()
                .all(|v| *v == (service.version + 1).to_string()))
        .then_some(())
    })
    .await;

    // Remove: its containers are gone.
    let _: ServiceId = client.delete(&api::service("web")).await.expect("remove");
    eventually("containers removed", CONVERGE, || async {
        all_containers(&node, &id.to_string())
            .is_empty()
            .then_some(())
    })
    .await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unhealthy_task_is_replaced_and_a_missing_image_is_rejected() {
    let DockerAgent {
        agent,
        client,
        dir: _dir,
        guard: _guard,
        ..
    } = DockerAgent::start().await;

    // A task whose health check fails is never Running, and is replaced.
    let mut sick = spec("sick", 1);
    sick.health = Some(HealthCheck {
        command: "false".into(),
        interval_ms: 200,
        timeout_ms: 1_000,
        retries: 1,
        start_period_ms: 0,
    });
    create(&client, sick).await;
    eventually(
        "the unhealthy task fails and is replaced",
        CONVERGE,
        || async {
            let rows = tasks(&client, "sick").await;
            let failed = rows.iter().filter(|t| t.state == TaskState::Failed).count();
            (failed >= 1 && rows.len() >= 2).then_some(())
        },
    )
    .await;
    let rows = tasks(&client, "sick").await;
    assert!(
        rows.iter().all(|t| t.state != TaskState::Running),
        "never running while unhealthy: {rows:#?}"
    );

    // A missing image (never pulled) rejects the task with a clear message.
    let mut missing = spec("ghost", 1);
    missing.image = "shoal-test/does-not-exist:1".into();
    missing.restart.condition = RestartCondition::None;
    create(&client, missing).await;
    let rejected = eventually("the task is rejected", CONVERGE, || async {
        tasks(&client, "ghost")
            .await
            .into_iter()
            .find(|t| t.state == TaskState::Rejected)
    })
    .await;
    assert!(
        rejected.message.contains("shoal-test/does-not-exist:1"),
        "message names the image: {}",
        rejected.message
    );
    assert!(
        rejected.message.contains("not found"),
        "message says what is wrong: {}",
        rejected.message
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_agent_adopts_its_containers() {
    let DockerAgent {
        agent,
        node,
        client,
        dir,
        guard: _guard,
    } = DockerAgent::start().await;
    let id = create(&client, spec("kept", 3)).await;
    wait_running(&client, "kept", 3, CONVERGE).await;
    let before = running_containers(&node, &id.to_string());
    agent.shutdown().await;

    // Containers keep running while the agent is away; the restarted agent adopts them.
    assert_eq!(running_containers(&node, &id.to_string()).len(), 3);
    let agent = start_agent(dir.path(), ExecutorKind::Docker, vec![]).await;
    assert_eq!(
        agent.node_id().to_string(),
        node,
        "same identity after a restart"
    );
    let client = shoal_tests::client(&agent);
    wait_running(&client, "kept", 3, CONVERGE).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut after = all_containers(&node, &id.to_string());
    let mut before_sorted = before.clone();
    after.sort();
    before_sorted.sort();
    assert_eq!(after, before_sorted, "the same containers, no duplicates");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_first_update_keeps_its_window_on_docker() {
    let DockerAgent {
        agent,
        client,
        dir: _dir,
        guard: _guard,
        ..
    } = DockerAgent::start().await;
    let mut first = spec("slide", 6);
    // Containers that exit at once on SIGTERM, so stops are quick.
    first.args = vec![
        "sh".into(),
        "-c".into(),
        "trap 'exit 0' TERM; while true; do sleep 0.1; done".into(),
    ];
    let id = create(&client, first).await;
    wait_running(&client, "slide", 6, CONVERGE).await;
    let service = update_to_version_2(&client, "slide", UpdateOrder::StopFirst, 0).await;
    // Watch the leader's state until the update is done: never more than two replacements in
    // flight, never fewer than four tasks serving.
    let version = service.version + 1;
    let deadline = std::time::Instant::now() + CONVERGE;
    loop {
        let state = agent.quorum().state();
        let tasks: Vec<_> = state.tasks.values().filter(|t| t.service == id).collect();
        let in_flight = tasks
            .iter()
            .filter(|t| {
                t.spec_version == version
                    && t.desired != DesiredState::Shutdown
                    && t.status.state < TaskState::Running
            })
            .count();
        let serving = tasks
            .iter()
            .filter(|t| t.status.state == TaskState::Running)
            .count();
        assert!(in_flight <= 2, "{in_flight} replacements in flight");
        assert!(serving >= 4, "only {serving} tasks serve");
        let done = tasks
            .iter()
            .filter(|t| t.desired != DesiredState::Shutdown)
            .all(|t| t.spec_version == version && t.status.state == TaskState::Running)
            && state.services[&id]
                .update_status
                .as_ref()
                .is_some_and(|u| u.state == shoal_scheduler::UpdateState::Completed);
        drop(state);
        if done {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "update not done");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    agent.shutdown().await;
}
