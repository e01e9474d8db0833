//! Docker executor tests: the real engine, the local test image, a node id per test.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, ListContainersOptionsBuilder};
use shoal_scheduler::{HealthCheck, NodeId, Runtime, TaskState};

use super::{
    Cleanup, TEST_IMAGE, base_spec, engine, engine_with, run_spec, shell_spec, test_node, unique,
    wait_for,
};
use crate::executor::{
    DockerConfig, DockerExecutor, Executor, ExecutorError, Health, LABEL_NODE_ID, LABEL_SERVICE_ID,
    LABEL_SERVICE_NAME, LABEL_SLOT, LABEL_SPEC_VERSION, LABEL_TASK_ID, LogQuery, LogStream,
    Observation, PullPolicy, RunSpec, container_name,
};

/// The last `n` lines of a task's whole output.
fn tail(n: usize) -> LogQuery {
    LogQuery {
        tail: n,
        since_secs: 0,
    }
}

const LONG_RUNNING: &str = "while true; do sleep 1; done";

/// Containers of `node` on the engine, counted by label.
async fn count_containers(executor: &DockerExecutor, node: &NodeId) -> usize {
    let filters: HashMap<&str, Vec<String>> =
        HashMap::from([("label", vec![format!("{LABEL_NODE_ID}={node}")])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    executor
        .client()
        .list_containers(Some(options))
        .await
        .expect("list containers")
        .len()
}

/// Observes until `run`'s observation satisfies `pred` (polling, at most `limit`); returns the
/// last observation either way.
async fn observe_until(
    executor: &DockerExecutor,
    run: &RunSpec,
    limit: Duration,
    pred: impl Fn(&Observation) -> bool,
) -> Observation {
    let deadline = Instant::now() + limit;
    loop {
        let seen = find(&executor.observe().await.expect("observe"), run);
        if pred(&seen) || Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn find(observations: &[Observation], run: &RunSpec) -> Observation {
    observations
        .iter()
        .find(|o| o.task_id == run.task_id)
        .cloned()
        .unwrap_or_else(|| panic!("task {} not observed in {observations:?}", run.task_id))
}

#[tokio::test]
async fn docker_start_three_runs_three_with_labels() {
    let node = test_node("three");
    let _cleanup = Cleanup::new(&node);
    let executor: Arc<dyn Executor> = Arc::new(engine(&node).await);
    assert_eq!(executor.runtime(), Runtime::Docker);
    let mut spec = shell_spec(LONG_RUNNING);
    spec.labels.insert("team".into(), "blue".into());
    let runs: Vec<RunSpec> = (1..=3)
        .map(|slot| run_spec(&node, "web", slot, spec.clone()))
        .collect();
    let started = futures::future::join_all(runs.iter().map(|r| executor.start(r))).await;
    for result in started {
        result.expect("start");
    }
    // Starting again adopts: still three containers.
    for run in &runs {
        executor
            .start(run)
            .await
            .expect("second start is idempotent");
    }

    let observed = executor.observe().await.expect("observe");
    assert_eq!(observed.len(), 3, "{observed:?}");
    let docker = engine(&node).await;
    assert_eq!(count_containers(&docker, &node).await, 3);
    for run in &runs {
        let o = find(&observed, run);
        assert_eq!(o.state, TaskState::Running, "{o:?}");
        assert_eq!(
            (o.service_id, o.slot, o.spec_version),
            (run.service_id, run.slot, 1)
        );
        let id = o.container_id.expect("container id");
        let inspected = docker
            .client()
            .inspect_container(&id, None)
            .await
            .expect("inspect");
        let name = inspected.name.expect("name");
        assert_eq!(
            name.trim_start_matches('/'),
            container_name("web", run.slot, run.task_id)
        );
        let labels = inspected.config.and_then(|c| c.labels).expect("labels");
        assert_eq!(labels[LABEL_TASK_ID], run.task_id.to_string());
        assert_eq!(labels[LABEL_SERVICE_ID], run.service_id.to_string());
        assert_eq!(labels[LABEL_SERVICE_NAME], "web");
        assert_eq!(labels[LABEL_NODE_ID], node.to_string());
        assert_eq!(labels[LABEL_SLOT], run.slot.expect("slot").to_string());
        assert_eq!(labels[LABEL_SPEC_VERSION], "1");
        assert_eq!(labels["team"], "blue");
    }
    let info = executor.describe().await.expect("describe");
    assert!(info.cpus > 0 && info.memory_bytes > 0, "{info:?}");
    assert_eq!(info.os, "linux");
}

#[tokio::test]
async fn docker_stop_honours_the_grace_then_kills() {
    let node = test_node("grace");
    let _cleanup = Cleanup::new(&node);
    let executor = engine(&node).await;
    // Handles TERM by exiting 7 after a second: the grace (5 s) lets it finish.
    let polite = run_spec(
        &node,
        "polite",
        1,
        shell_spec("trap 'sleep 1; exit 7' TERM; while true; do sleep 0.1; done"),
    );
    // Ignores TERM: killed when the 1 s grace is over.
    let stubborn = run_spec(
        &node,
        "stubborn",
        1,
        shell_spec("trap '' TERM; while true; do sleep 0.1; done"),
    );
    // Ignores TERM too, stopped without a grace: its container's own (the spec's 1 s) holds.
    let unknown = run_spec(
        &node,
        "unknown",
        1,
        shell_spec("trap '' TERM; while true; do sleep 0.1; done"),
    );
    executor.start(&polite).await.expect("start polite");
    executor.start(&stubborn).await.expect("start stubborn");
    executor.start(&unknown).await.expect("start unknown");
    // Let both shells install their traps.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let timed = |run: RunSpec, grace: Option<Duration>| {
        let executor = executor.clone();
        async move {
            let begun = Instant::now();
            executor.stop(run.task_id, grace).await.expect("stop");
            begun.elapsed()
        }
    };
    let (polite_took, stubborn_took, unknown_took) = tokio::join!(
        timed(polite.clone(), Some(Duration::from_secs(5))),
        timed(stubborn.clone(), Some(Duration::from_secs(1))),
        timed(unknown.clone(), None),
    );
    assert!(
        unknown_took >= Duration::from_millis(900) && unknown_took < Duration::from_secs(5),
        "a stop without a grace takes the container's own: {unknown_took:?}"
    );
    let observed = executor.observe().await.expect("observe");
    let polite_seen = find(&observed, &polite);
    let stubborn_seen = find(&observed, &stubborn);
    println!("polite stop took {polite_took:?}, stubborn stop took {stubborn_took:?}");
    assert_eq!(
        polite_seen.exit_code,
        Some(7),
        "the TERM handler ran to its end: {polite_seen:?}"
    );
    assert_eq!(polite_seen.state, TaskState::Shutdown);
    assert!(polite_took >= Duration::from_millis(900), "{polite_took:?}");
    assert!(
        polite_took < Duration::from_secs(5),
        "not killed early nor late: {polite_took:?}"
    );
    assert_eq!(
        stubborn_seen.exit_code,
        Some(137),
        "killed after the grace: {stubborn_seen:?}"
    );
    assert_eq!(stubborn_seen.state, TaskState::Shutdown);
    assert!(
        stubborn_took >= Duration::from_millis(900),
        "{stubborn_took:?}"
    );
    // Stopping again (or a task with no container) is fine.
    executor
        .stop(polite.task_id, Some(Duration::ZERO))
        .await
        .expect("stop again");
}

#[tokio::test]
async fn docker_exit_code_is_seen_through_the_event_stream() {
    let node = test_node("exit");
    let _cleanup = Cleanup::new(&node);
    let executor = engine(&node).await;
    let mut events = executor.events();
    // Give the event subscription a moment to be registered by the engine.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let failing = run_spec(
        &node,
        "exit3",
        1,
        shell_spec("echo out; echo err >&2; sleep 0.2; echo last; exit 3"),
    );
    let done = run_spec(&node, "exit0", 1, shell_spec("exit 0"));
    executor.start(&failing).await.expect("start failing");
    let started = Instant::now();
    executor.start(&done).await.expect("start done");

    let failed = wait_for(&mut events, failing.task_id, Duration::from_secs(10), |o| {
        o.state.is_terminal()
    })
    .await
    .expect("the exit is reported");
    let seen_after = started.elapsed();
    println!("exit 3 observed {seen_after:?} after start returned (the script sleeps 0.2 s)");
    assert_eq!(
        (failed.state, failed.exit_code),
        (TaskState::Failed, Some(3)),
        "{failed:?}"
    );
    assert!(
        failed.message.contains("exited with code 3"),
        "{}",
        failed.message
    );
    assert!(
        seen_after < Duration::from_secs(3),
        "the exit was not seen promptly: {seen_after:?}"
    );

    let completed = observe_until(&executor, &done, Duration::from_secs(10), |o| {
        o.state.is_terminal()
    })
    .await;
    assert_eq!(
        (completed.state, completed.exit_code),
        (TaskState::Complete, Some(0))
    );

    // stdout and stderr are stored apart: only the order within one stream is kept.
    let logs = executor
        .logs(failing.task_id, &tail(10))
        .await
        .expect("logs");
    let mut texts: Vec<(LogStream, &str)> =
        logs.iter().map(|l| (l.stream, l.text.as_str())).collect();
    texts.sort();
    assert_eq!(
        texts,
        [
            (LogStream::Stdout, "last"),
            (LogStream::Stdout, "out"),
            (LogStream::Stderr, "err"),
        ]
    );
    assert!(logs.iter().all(|l| l.time.ends_with('Z')), "{logs:?}");
    let last = executor
        .logs(failing.task_id, &tail(1))
        .await
        .expect("logs");
    assert_eq!(
        last.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
        ["last"]
    );
    // A task that already exited is not started again.
    let again = executor.start(&failing).await;
    assert!(matches!(
        again,
        Err(ExecutorError::AlreadyEnded {
            state: TaskState::Failed,
            ..
        })
    ));
}

#[tokio::test]
async fn docker_health_check_gates_running() {
    let node = test_node("healthy");
    let _cleanup = Cleanup::new(&node);
    let executor = engine(&node).await;
    let mut events = executor.events();
    let mut spec = shell_spec("sleep 3; touch /tmp/ready; while true; do sleep 1; done");
    spec.health = Some(HealthCheck {
        command: "test -f /tmp/ready".into(),
        interval_ms: 200,
        timeout_ms: 2_000,
        retries: 100,
        start_period_ms: 0,
    });
    let run = run_spec(&node, "healthy", 1, spec);
    executor.start(&run).await.expect("start");
    let early = find(&executor.observe().await.expect("observe"), &run);
    assert_eq!(
        (early.state, early.health),
        (TaskState::Starting, Health::Starting),
        "{early:?}"
    );
    let healthy = wait_for(&mut events, run.task_id, Duration::from_secs(20), |o| {
        o.state == TaskState::Running
    })
    .await
    .expect("becomes Running once healthy");
    assert_eq!(healthy.health, Health::Healthy);
}

#[tokio::test]
async fn docker_failing_health_check_fails_the_task() {
    let node = test_node("unhealthy");
    let _cleanup = Cleanup::new(&node);
    let executor = engine(&node).await;
    let mut events = executor.events();
    let mut spec = shell_spec(LONG_RUNNING);
    spec.health = Some(HealthCheck {
        command: "echo broken; exit 1".into(),
        interval_ms: 200,
        timeout_ms: 2_000,
        retries: 2,
        start_period_ms: 0,
    });
    let run = run_spec(&node, "sick", 1, spec);
    executor.start(&run).await.expect("start");
    let sick = wait_for(&mut events, run.task_id, Duration::from_secs(20), |o| {
        o.state == TaskState::Failed
    })
    .await
    .expect("reported Failed when unhealthy");
    assert_eq!(sick.health, Health::Unhealthy);
    assert!(sick.message.starts_with("unhealthy"), "{}", sick.message);
    assert!(sick.message.contains("broken"), "{}", sick.message);
}

#[tokio::test]
async fn docker_missing_image_is_rejected_without_a_pull() {
    let node = test_node("missing");
    let _cleanup = Cleanup::new(&node);
    let executor = engine(&node).await;
    let image = format!("shoal-test/missing-{:x}:v1", unique());
    let run = run_spec(&node, "ghost", 1, base_spec(&image));
    let error = executor
        .start(&run)
        .await
        .expect_err("the image does not exist");
    assert!(
        matches!(error, ExecutorError::ImageNotFound { .. }),
        "{error:?}"
    );
    assert!(error.rejects_task());
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "image \"{image}\" not found locally and could not be pulled: "
        )),
        "{message}"
    );
    assert_eq!(
        executor.pull_attempts(),
        0,
        "pull policy Never pulls nothing"
    );
    assert!(
        executor.observe().await.expect("observe").is_empty(),
        "no container was created"
    );

    // With IfMissing, a pull from a registry address that refuses at once (loopback, no
    // listener) fails fast and says why.
    let pulling = engine_with(&node, |c| c.pull = PullPolicy::IfMissing).await;
    let local = format!("127.0.0.1:1/shoal-test/missing-{:x}:v1", unique());
    let run = run_spec(&node, "ghost2", 1, base_spec(&local));
    let error = tokio::time::timeout(Duration::from_secs(60), pulling.start(&run))
        .await
        .expect("a refused pull fails quickly")
        .expect_err("the image does not exist");
    assert!(
        matches!(error, ExecutorError::ImageNotFound { .. }),
        "{error:?}"
    );
    assert_eq!(pulling.pull_attempts(), 1);
    println!("{error}");
}

#[tokio::test]
async fn docker_adopts_existing_containers_by_label() {
    let node = test_node("adopt");
    let _cleanup = Cleanup::new(&node);
    let first = engine(&node).await;
    let runs: Vec<RunSpec> = (1..=2)
        .map(|slot| run_spec(&node, "keep", slot, shell_spec(LONG_RUNNING)))
        .collect();
    for run in &runs {
        first.start(run).await.expect("start");
    }
    let before = first.observe().await.expect("observe");
    drop(first);

    // A new executor (as after an agent restart) finds them by label and adopts them.
    let second = engine(&node).await;
    let after = second.observe().await.expect("observe");
    assert_eq!(after.len(), 2);
    for run in &runs {
        let (was, is) = (find(&before, run), find(&after, run));
        assert_eq!(is.state, TaskState::Running);
        assert_eq!(was.container_id, is.container_id);
        second.start(run).await.expect("start adopts");
    }
    assert_eq!(count_containers(&second, &node).await, 2, "no duplicates");

    // A container that was created but never started (agent died in between) is started.
    let third = run_spec(&node, "keep", 3, shell_spec(LONG_RUNNING));
    let labels = HashMap::from([
        (LABEL_TASK_ID.to_string(), third.task_id.to_string()),
        (LABEL_SERVICE_ID.to_string(), third.service_id.to_string()),
        (LABEL_NODE_ID.to_string(), node.to_string()),
    ]);
    let name = container_name("keep", third.slot, third.task_id);
    let body = ContainerCreateBody {
        image: Some(TEST_IMAGE.into()),
        cmd: Some(vec!["sh".into(), "-c".into(), LONG_RUNNING.into()]),
        labels: Some(labels),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    second
        .client()
        .create_container(Some(options), body)
        .await
        .expect("raw create");
    let created = find(&second.observe().await.expect("observe"), &third);
    assert_eq!(created.state, TaskState::Preparing);
    second
        .start(&third)
        .await
        .expect("start adopts the created container");
    let running = find(&second.observe().await.expect("observe"), &third);
    assert_eq!(running.state, TaskState::Running);
    assert_eq!(running.container_id, created.container_id);
}

#[tokio::test]
async fn docker_remove_removes() {
    let node = test_node("remove");
    let _cleanup = Cleanup::new(&node);
    let executor = engine(&node).await;
    let mut events = executor.events();
    let run = run_spec(&node, "gone", 1, shell_spec(LONG_RUNNING));
    executor.start(&run).await.expect("start");
    let id = find(&executor.observe().await.expect("observe"), &run)
        .container_id
        .expect("id");
    executor.remove(run.task_id).await.expect("remove");
    assert!(executor.observe().await.expect("observe").is_empty());
    let inspected = executor.client().inspect_container(&id, None).await;
    assert!(inspected.is_err(), "the container still exists");
    executor
        .remove(run.task_id)
        .await
        .expect("removing again is fine");
    executor
        .stop(run.task_id, Some(Duration::ZERO))
        .await
        .expect("stopping a removed task is fine");
    let removal = wait_for(&mut events, run.task_id, Duration::from_secs(10), |o| {
        o.removed
    })
    .await
    .expect("removal event");
    assert_eq!(removal.state, TaskState::Shutdown, "{removal:?}");
    let logs = executor.logs(run.task_id, &tail(10)).await;
    assert!(matches!(logs, Err(ExecutorError::NotFound(_))), "{logs:?}");
}

#[tokio::test]
async fn docker_connect_says_clearly_when_no_engine_answers() {
    let mut config = DockerConfig::new(test_node("noengine"));
    config.host = Some("unix:///nonexistent/shoal-test/docker.sock".into());
    let error = DockerExecutor::connect(config)
        .await
        .expect_err("no engine there");
    assert!(
        matches!(error, ExecutorError::EngineUnavailable { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message
            .starts_with("no Docker engine answers at unix:///nonexistent/shoal-test/docker.sock"),
        "{message}"
    );
}

#[tokio::test]
async fn docker_refuses_tasks_of_other_nodes_and_bad_specs() {
    let node = test_node("refuse");
    let _cleanup = Cleanup::new(&node);
    let executor = engine(&node).await;
    let other = run_spec(&test_node("elsewhere"), "web", 1, shell_spec(LONG_RUNNING));
    let error = executor
        .start(&other)
        .await
        .expect_err("task of another node");
    assert!(error.rejects_task(), "{error}");
    let mut spec = shell_spec(LONG_RUNNING);
    spec.mounts = vec![shoal_scheduler::MountSpec {
        kind: shoal_scheduler::MountKind::Bind,
        source: "not/absolute".into(),
        target: "/data".into(),
        read_only: false,
    }];
    let error = executor
        .start(&run_spec(&node, "web", 1, spec))
        .await
        .expect_err("bad mount");
    assert!(error.rejects_task(), "{error}");
    assert_eq!(count_containers(&executor, &node).await, 0);
}
