//! `shoal service logs` on six agents, each running its tasks as Docker containers on the real
//! engine: every task's stdout and stderr come back from every node, labelled and apart; one
//! task alone by its id; with one agent gone, the others' lines come back within a bound, with
//! a warning that names the missing node (Swarm hangs there).

use std::time::{Duration, Instant};

use shoal_agent::control::api::{self, CreateServiceRequest, CreateServiceResponse, LogsQuery};
use shoal_agent::control::client::ControlClient;
use shoal_agent::control::logs::{NODE_LOGS_TIMEOUT, ServiceLogs};
use shoal_agent::daemon::ExecutorKind;
use shoal_agent::executor::LogStream;
use shoal_scheduler::ServiceSpec;
use shoal_tests::*;

const REPLICAS: u64 = 6;

fn spec() -> ServiceSpec {
    let mut spec = shoal_scheduler::synthetic::spec("talker", REPLICAS);
    spec.image = TEST_IMAGE.into();
    spec.args = vec![
        "sh".into(),
        "-c".into(),
        "echo out-$(hostname); echo err-$(hostname) >&2; exec sleep 3600".into(),
    ];
    spec.stop_grace_ms = 500;
    spec
}

async fn logs(client: &ControlClient, target: &str, query: &LogsQuery) -> ServiceLogs {
    let path = format!(
        "{}?{}",
        api::service_logs(target),
        serde_urlencoded::to_string(query).unwrap_or_default()
    );
    client.get(&path).await.expect("logs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_come_from_every_node_and_a_gone_node_is_named_not_waited_for() {
    init_logging();
    ensure_test_image();
    let dirs = temp_dirs(6);
    let mut agents = start_joined(&dirs, |dir, join| async move {
        start_agent(&dir, ExecutorKind::Docker, join).await
    })
    .await;
    let _guards: Vec<ContainerGuard> = agents
        .iter()
        .map(|a| ContainerGuard(a.node_id().to_string()))
        .collect();
    wait_managers(&agents, 3).await;
    let reader_at = worker_index(&agents);
    let reader = client(&agents[reader_at]);
    let reader_socket = agents[reader_at].socket().to_path_buf();
    let created: CreateServiceResponse = reader
        .post(api::SERVICES, &CreateServiceRequest { spec: spec() })
        .await
        .expect("create");
    let service_id = created.id.to_string();
    wait_running(&reader, "talker", REPLICAS, Duration::from_secs(60)).await;

    // Every task wrote one line to each stream; both come back, apart and labelled.
    let all = eventually(
        "every task's two lines",
        Duration::from_secs(20),
        || async {
            let got = logs(&reader, "talker", &LogsQuery::default()).await;
            (got.lines.len() == 2 * REPLICAS as usize).then_some(got)
        },
    )
    .await;
    assert!(all.warnings.is_empty(), "{:?}", all.warnings);
    for line in &all.lines {
        let want = match line.line.stream {
            LogStream::Stdout => "out-",
            LogStream::Stderr => "err-",
        };
        assert!(line.line.text.starts_with(want), "{line:?}");
        assert!(line.line.time.ends_with('Z') && line.service == "talker");
    }
    let nodes_running = agents
        .iter()
        .filter(|a| !running_containers(&a.node_id().to_string(), &service_id).is_empty())
        .count();
    assert!(nodes_running > 1, "the replicas ran on one node only");
    let tasks: std::collections::BTreeSet<_> = all.lines.iter().map(|l| l.task).collect();
    assert_eq!(tasks.len(), REPLICAS as usize);

    // One task by its id: only its lines.
    let task = all.lines[0].task;
    let one = logs(&reader, &task.to_string(), &LogsQuery::default()).await;
    assert_eq!(one.lines.len(), 2);
    assert!(one.lines.iter().all(|l| l.task == task));

    // An agent that runs some of the tasks goes away without a word (its containers stay).
    let gone_at = (0..agents.len())
        .filter(|i| *i != reader_at && !agents[*i].quorum().is_member())
        .find(|i| !running_containers(&agents[*i].node_id().to_string(), &service_id).is_empty())
        .expect("a worker that runs tasks, other than the reader");
    let gone = agents.remove(gone_at);
    let gone_node = gone.node_id().to_string();
    let gone_tasks: Vec<String> = running_containers(&gone_node, &service_id)
        .iter()
        .map(|c| container_label(c, "io.shoal.task.id"))
        .collect();
    gone.shutdown().await;
    let started = Instant::now();
    let partial = logs(&reader, "talker", &LogsQuery::default()).await;
    let took = started.elapsed();
    eprintln!(
        "service logs of {REPLICAS} tasks on 6 nodes with one node gone: {} lines and {} \
         warning(s) in {took:?}",
        partial.lines.len(),
        partial.warnings.len()
    );
    assert!(
        took < NODE_LOGS_TIMEOUT + Duration::from_secs(3),
        "{took:?}"
    );
    // Lines of the gone node's tasks are missing (their replacements' may be there already).
    assert!(
        partial
            .lines
            .iter()
            .all(|l| !gone_tasks.contains(&l.task.to_string())),
        "{partial:?}"
    );
    assert!(partial.lines.len() >= all.lines.len() - 2 * gone_tasks.len());
    assert!(
        partial.warnings.iter().any(|w| w.contains(&gone_node)),
        "no warning names {gone_node}: {:?}",
        partial.warnings
    );

    // The CLI prints them and says when a name is wrong.
    let socket = reader_socket;
    shoal_cli(
        socket.clone(),
        &["service", "logs", "--tail", "1", "talker"],
    )
    .await
    .expect("shoal service logs");
    let missing = shoal_cli(socket, &["service", "logs", "nosuch"]).await;
    assert!(missing.is_err_and(|e| e.to_string().contains("no such service")));
    // The agents stop before their guards remove the containers, so none is started again.
    for agent in agents {
        agent.shutdown().await;
    }
}
