//! `shoal service update` and `shoal service rollback` as a user runs them, through a follower of
//! a cluster of six agents (three managers) with the sim executor: an image change rolls through
//! all twenty replicas and the command returns once it converged (its time printed), `rollback`
//! goes back to the previous image, `--force` replaces every task with the same spec, and an
//! update that changes nothing is refused.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use shoal_agent::control::api::{self, CreateServiceRequest, CreateServiceResponse};
use shoal_agent::control::views::TaskRow;
use shoal_agent::daemon::ExecutorKind;
use shoal_scheduler::{DesiredState, TaskState};
use shoal_tests::*;

/// The images and ids of the service's tasks that run and are meant to.
async fn running(client: &shoal_agent::control::client::ControlClient) -> Vec<TaskRow> {
    let rows: Vec<TaskRow> = client
        .get(&api::service_tasks("web"))
        .await
        .unwrap_or_default();
    rows.into_iter()
        .filter(|r| r.desired == DesiredState::Running && r.state == TaskState::Running)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_force_and_rollback_through_a_follower() {
    init_logging();
    let dirs = temp_dirs(6);
    let agents = start_joined(&dirs, |dir, join| async move {
        start_agent(&dir, ExecutorKind::Sim, join).await
    })
    .await;
    wait_managers(&agents, 3).await;
    let follower = follower_index(&agents);
    let socket = agents[follower].socket().to_path_buf();
    let client = client(&agents[follower]);
    let mut spec = sim_spec("web", 20);
    spec.update.parallelism = 5;
    spec.image = "sim:1".into();
    let _: CreateServiceResponse = client
        .post(api::SERVICES, &CreateServiceRequest { spec })
        .await
        .expect("create");
    wait_running(&client, "web", 20, Duration::from_secs(30)).await;

    let started = Instant::now();
    shoal_cli(
        socket.clone(),
        &["service", "update", "--image", "sim:2", "web"],
    )
    .await
    .expect("update converges");
    eprintln!(
        "service update of 20 replicas (parallelism 5) through a follower converged in {:?}",
        started.elapsed()
    );
    let tasks = running(&client).await;
    assert_eq!(tasks.len(), 20);
    assert!(tasks.iter().all(|t| t.image == "sim:2"), "{tasks:?}");

    shoal_cli(socket.clone(), &["service", "rollback", "web"])
        .await
        .expect("rollback converges");
    eventually(
        "the previous image everywhere",
        Duration::from_secs(30),
        || async {
            let tasks = running(&client).await;
            (tasks.len() == 20 && tasks.iter().all(|t| t.image == "sim:1")).then_some(())
        },
    )
    .await;
    let before: BTreeSet<String> = tasks.iter().map(|t| t.id.clone()).collect();
    shoal_cli(socket.clone(), &["service", "update", "--force", "web"])
        .await
        .expect("forced update converges");
    let tasks = running(&client).await;
    assert_eq!(tasks.len(), 20);
    assert!(
        tasks
            .iter()
            .all(|t| !before.contains(&t.id) && t.image == "sim:1"),
        "--force replaces every task with the same image"
    );

    let nothing = shoal_cli(socket.clone(), &["service", "update", "web"]).await;
    let why = format!("{:#}", nothing.expect_err("an update that changes nothing"));
    assert!(why.contains("nothing to change"), "{why}");

    for agent in agents {
        agent.shutdown().await;
    }
}
