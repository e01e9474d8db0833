//! Task history, filters and id prefixes as a user meets them, on one agent with the sim
//! executor: two forced updates leave each slot its running task and two replaced ones, which
//! `service ps` shows indented under it; `--filter` narrows `ps` and `ls` (a bad filter is a 400
//! and a failed command); `task inspect` takes a unique id prefix; and a task history limit of 1
//! set with `shoal cluster update` makes the leader prune the older history.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_agent::control::api::{self, CreateServiceRequest, CreateServiceResponse};
use shoal_agent::control::client::{ClientError, ControlClient};
use shoal_agent::control::tasks;
use shoal_agent::control::views::{NodeRow, ServiceRow, TaskDetail, TaskRow, history_names};
use shoal_agent::daemon::ExecutorKind;
use shoal_scheduler::{DesiredState, TaskState};
use shoal_tests::*;

/// The tasks of `web` that `?filter=...` (already encoded) selects.
async fn ps(client: &ControlClient, query: &str) -> Vec<TaskRow> {
    client
        .get(&format!("{}{query}", api::service_tasks("web")))
        .await
        .expect("service ps")
}

/// The shortest prefix of `id` that no other of `ids` starts with.
fn unique_prefix<'a>(id: &'a str, ids: &[String]) -> &'a str {
    (1..=id.len())
        .map(|n| &id[..n])
        .find(|prefix| ids.iter().filter(|other| other.starts_with(prefix)).count() == 1)
        .unwrap_or(id)
}

/// The status and message of an API call that must fail.
fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api { status, message }) => (status.as_u16(), message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_filters_prefixes_and_pruning() {
    init_logging();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(dir.path(), ExecutorKind::Sim, vec![]).await;
    let socket = agent.socket().to_path_buf();
    let client = client(&agent);
    wait_ready_nodes(&agent, 1).await;
    let mut spec = sim_spec("web", 2);
    spec.update.parallelism = 2;
    let created: CreateServiceResponse = client
        .post(api::SERVICES, &CreateServiceRequest { spec })
        .await
        .expect("create");
    wait_running(&client, "web", 2, Duration::from_secs(30)).await;
    for _ in 0..2 {
        shoal_cli(socket.clone(), &["service", "update", "--force", "web"])
            .await
            .expect("a forced update converges");
    }

    // Each slot: its running task first, then the two it replaced, newest first.
    let rows = ps(&client, "").await;
    assert_eq!(rows.len(), 6, "{rows:#?}");
    let names = history_names(&rows);
    assert_eq!(
        names,
        [
            "web.1",
            " \\_ web.1",
            " \\_ web.1",
            "web.2",
            " \\_ web.2",
            " \\_ web.2"
        ],
        "{rows:#?}"
    );
    for slot in rows.chunks(3) {
        assert_eq!(slot[0].desired, DesiredState::Running);
        assert_eq!(slot[0].state, TaskState::Running);
        assert!(
            slot[1..]
                .iter()
                .all(|r| r.desired == DesiredState::Shutdown)
        );
        assert!(slot[1].id > slot[2].id, "newest history first");
    }
    let running = ps(&client, "?filter=desired-state%3Drunning").await;
    assert_eq!(running.len(), 2);
    assert!(running.iter().all(|r| r.desired == DesiredState::Running));
    assert_eq!(history_names(&running), ["web.1", "web.2"]);
    let dead = ps(&client, "?filter=desired-state%3Dshutdown").await;
    assert_eq!(dead.len(), 4);

    // The CLI prints them (ids only with -q, full with --no-trunc) and refuses a bad filter.
    for args in [
        &["service", "ps", "web"][..],
        &["service", "ps", "-q", "--no-trunc", "web"][..],
        &["service", "ps", "--filter", "desired-state=running", "web"][..],
        &["service", "ps", "--format", "json", "s"][..],
        &["node", "ps", "-f", "desired-state=shutdown"][..],
        &[
            "service",
            "ls",
            "--filter",
            "name=we",
            "--filter",
            "mode=replicated",
        ][..],
        &["node", "ls", "-f", "role=manager"][..],
    ] {
        shoal_cli(socket.clone(), args)
            .await
            .unwrap_or_else(|e| panic!("{args:?}: {e:#}"));
    }
    for (args, says) in [
        (
            &["service", "ps", "-f", "colour=red", "web"][..],
            "accepted keys are",
        ),
        (
            &["service", "ps", "-f", "desired-state=gone", "web"][..],
            "running, shutdown, accepted",
        ),
        (
            &["service", "ls", "-f", "mode=both"][..],
            "replicated, global",
        ),
        (
            &["node", "ls", "-f", "availability=off"][..],
            "active, pause, drain",
        ),
        (&["cluster", "update"][..], "nothing to change"),
    ] {
        let error = shoal_cli(socket.clone(), args).await.expect_err("refused");
        assert!(format!("{error:#}").contains(says), "{args:?}: {error:#}");
    }
    let (status, message) = refusal(
        client
            .get::<Vec<TaskRow>>(&format!(
                "{}?filter=colour%3Dred",
                api::service_tasks("web")
            ))
            .await,
    );
    assert_eq!(status, 400);
    assert!(message.contains("desired-state, node, id"), "{message}");

    // `ls` filters on the server.
    let services: Vec<ServiceRow> = client
        .get(&format!("{}?filter=name%3Dwe", api::SERVICES))
        .await
        .expect("service ls");
    assert_eq!(services.len(), 1);
    let global: Vec<ServiceRow> = client
        .get(&format!("{}?filter=mode%3Dglobal", api::SERVICES))
        .await
        .expect("service ls");
    assert!(global.is_empty());
    let nodes: Vec<NodeRow> = client.get(api::NODES).await.expect("node ls");
    let role = &nodes[0].role;
    let other = if role == "manager" {
        "worker"
    } else {
        "manager"
    };
    for (wanted, count) in [(role.as_str(), 1), (other, 0)] {
        let rows: Vec<NodeRow> = client
            .get(&format!("{}?filter=role%3D{wanted}", api::NODES))
            .await
            .expect("node ls");
        assert_eq!(rows.len(), count, "role={wanted}");
    }
    let (status, _) = refusal(
        client
            .get::<Vec<NodeRow>>(&format!("{}?filter=role%3Dboss", api::NODES))
            .await,
    );
    assert_eq!(status, 400);

    // Services and tasks by unique id prefix; an ambiguous one names its matches.
    let by_prefix: Vec<TaskRow> = client
        .get(&api::service_tasks(&created.id.to_string()[..3]))
        .await
        .expect("a service by id prefix");
    assert_eq!(by_prefix.len(), 6);
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let old = &rows[2].id;
    let prefix = unique_prefix(old, &ids);
    let detail: TaskDetail = client.get(&tasks::task(prefix)).await.expect("inspect");
    assert_eq!(&detail.id, old);
    assert_eq!(detail.service_name.as_deref(), Some("web"));
    assert_eq!(detail.task.desired, DesiredState::Shutdown);
    shoal_cli(socket.clone(), &["task", "inspect", prefix, &rows[0].id])
        .await
        .expect("task inspect by prefix");
    shoal_cli(socket.clone(), &["task", "inspect", "--pretty", prefix])
        .await
        .expect("task inspect --pretty");
    let (status, message) = refusal(client.get::<TaskDetail>(&tasks::task("t")).await);
    assert_eq!(status, 400);
    assert!(
        message.contains("ambiguous") && message.contains(old),
        "{message}"
    );
    let (status, message) = refusal(client.get::<TaskDetail>(&tasks::task("tffff")).await);
    assert_eq!(status, 404);
    assert!(message.contains("shoal service ps"), "{message}");
    assert!(
        shoal_cli(socket.clone(), &["task", "inspect", "tffff"])
            .await
            .is_err()
    );

    // A history limit of 1: the leader prunes each slot's older replaced task.
    shoal_cli(
        socket.clone(),
        &["cluster", "update", "--task-history-limit", "1"],
    )
    .await
    .expect("cluster update");
    let kept = eventually(
        "history pruned to 1 per slot",
        Duration::from_secs(20),
        || {
            let client = client.clone();
            async move {
                let rows = ps(&client, "").await;
                (rows.len() == 4).then_some(rows)
            }
        },
    )
    .await;
    let mut per_slot: BTreeMap<String, Vec<&TaskRow>> = BTreeMap::new();
    for row in &kept {
        per_slot.entry(row.name.clone()).or_default().push(row);
    }
    for (slot, rows) in per_slot {
        assert_eq!(
            rows[0].desired,
            DesiredState::Running,
            "{slot} keeps its task"
        );
        assert_eq!(rows.len(), 2, "{slot}: its task and one replaced");
        assert!(
            rows[1].id == ids[1] || rows[1].id == ids[4],
            "{slot} keeps its newest history: {rows:?}"
        );
    }
    agent.shutdown().await;
}
