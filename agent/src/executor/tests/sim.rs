//! Sim executor tests: the in-memory lifecycle and its events.

use std::sync::Arc;
use std::time::Duration;

use shoal_scheduler::{Runtime, TaskState};

use super::{TEST_IMAGE, base_spec, run_spec, test_node, wait_for};
use crate::executor::sim::SIM_KILL_EXIT_CODE;
use crate::executor::{Executor, ExecutorError, SimConfig, SimExecutor};

#[tokio::test]
async fn sim_runs_stops_kills_and_removes() {
    let node = test_node("sim");
    let executor: Arc<dyn Executor> = Arc::new(SimExecutor::new(SimConfig::new(node.clone())));
    assert_eq!(executor.runtime(), Runtime::Sim);
    let mut events = executor.events();
    let a = run_spec(&node, "web", 1, base_spec(TEST_IMAGE));
    let b = run_spec(&node, "web", 2, base_spec(TEST_IMAGE));
    executor.start(&a).await.expect("start a");
    executor.start(&b).await.expect("start b");
    executor.start(&a).await.expect("start a again is a no-op");
    let all = executor.observe().await.expect("observe");
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|o| o.state == TaskState::Running), "{all:?}");

    executor
        .stop(a.task_id, Some(Duration::from_secs(1)))
        .await
        .expect("stop");
    let stopped = wait_for(&mut events, a.task_id, Duration::from_secs(2), |o| {
        o.state == TaskState::Shutdown
    })
    .await;
    assert!(stopped.is_some(), "no Shutdown event for the stopped task");
    assert!(matches!(
        executor.start(&a).await,
        Err(ExecutorError::AlreadyEnded { .. })
    ));

    let sim = SimExecutor::new(SimConfig::new(node.clone()));
    let mut sim_events = sim.events();
    sim.start(&b).await.expect("start");
    sim.kill(b.task_id).await.expect("kill");
    let failed = wait_for(&mut sim_events, b.task_id, Duration::from_secs(2), |o| {
        o.state == TaskState::Failed
    })
    .await
    .expect("a Failed event after kill");
    assert_eq!(failed.exit_code, Some(SIM_KILL_EXIT_CODE));
    sim.remove(b.task_id).await.expect("remove");
    assert!(sim.is_empty());
    let gone = wait_for(&mut sim_events, b.task_id, Duration::from_secs(2), |o| {
        o.removed
    })
    .await;
    assert!(gone.is_some(), "no removal event");
    assert!(matches!(
        sim.kill(b.task_id).await,
        Err(ExecutorError::NotFound(_))
    ));
}

#[tokio::test]
async fn sim_start_delay_reports_starting_then_running() {
    let node = test_node("simdelay");
    let mut config = SimConfig::new(node.clone());
    config.start_delay = Duration::from_millis(150);
    let sim = SimExecutor::new(config);
    let mut events = sim.events();
    let run = run_spec(&node, "slow", 1, base_spec(TEST_IMAGE));
    sim.start(&run).await.expect("start");
    let first = sim.observe().await.expect("observe");
    assert_eq!(first[0].state, TaskState::Starting);
    let running = wait_for(&mut events, run.task_id, Duration::from_secs(3), |o| {
        o.state == TaskState::Running
    })
    .await;
    assert!(running.is_some(), "never became Running");
    let info = sim.describe().await.expect("describe");
    assert_eq!(info.total().nano_cpus, 4_000_000_000);
}

#[tokio::test]
async fn sim_refuses_tasks_of_other_nodes() {
    let sim = SimExecutor::new(SimConfig::new(test_node("simself")));
    let other = run_spec(&test_node("simother"), "web", 1, base_spec(TEST_IMAGE));
    let error = sim.start(&other).await.expect_err("task of another node");
    assert!(error.rejects_task(), "{error}");
}
