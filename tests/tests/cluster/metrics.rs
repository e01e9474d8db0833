//! `/metrics` of running agents: the families exist, their values follow the cluster, and the
//! exposition passes `promtool check metrics`.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use shoal_agent::control::api::{self, CreateServiceRequest, CreateServiceResponse};
use shoal_agent::daemon::ExecutorKind;
use shoal_scheduler::ServiceSpec;
use shoal_tests::*;

fn sim_spec(name: &str, replicas: u64) -> ServiceSpec {
    let mut spec = shoal_scheduler::synthetic::spec(name, replicas);
    spec.image = "sim".into();
    spec.stop_grace_ms = 100;
    spec
}

/// Runs `promtool check metrics` on the exposition; panics with its complaints.
fn promtool_check(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's `prometheus` package; .ci/run installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool finishes");
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "promtool check metrics: {complaints}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_follow_the_cluster_and_pass_promtool() {
    init_logging();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent_with_metrics(dir.path(), ExecutorKind::Sim, vec![]).await;
    let addr = agent.metrics_addr().expect("metrics served");
    // A second agent, so that the mesh carries traffic worth counting.
    let peer_dir = tempfile::tempdir().expect("tempdir");
    let peer = start_agent(
        peer_dir.path(),
        ExecutorKind::Sim,
        vec![join_addr(&agent).await],
    )
    .await;
    let client = client(&agent);
    let _: CreateServiceResponse = client
        .post(
            api::SERVICES,
            &CreateServiceRequest {
                spec: sim_spec("web", 4),
            },
        )
        .await
        .expect("create");
    wait_running(&client, "web", 4, Duration::from_secs(20)).await;

    let exposition = eventually(
        "the gauges show 4 running tasks and mesh traffic",
        Duration::from_secs(10),
        || async {
            let text = scrape(addr).await;
            let running = sample(&text, "shoal_cluster_tasks{state=\"running\"}") == Some(4.0);
            (running && text.contains("shoal_mesh_bytes_total{")).then_some(text)
        },
    )
    .await;
    for family in [
        "shoal_agent_info",
        "shoal_mesh_peers",
        "shoal_raft_term",
        "shoal_raft_is_leader",
        "shoal_raft_leader_changes_total",
        "shoal_raft_commit_seconds",
        "shoal_mesh_messages_total",
        "shoal_scheduler_pass_seconds",
        "shoal_scheduler_placements_total",
        "shoal_cluster_nodes",
        "shoal_dispatcher_heartbeats_total",
        "shoal_executor_operations_total",
        "shoal_task_scheduling_delay_seconds",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(
            exposition.contains(&format!("# TYPE {family}")),
            "family {family} is exposed"
        );
    }
    assert!(
        exposition.contains("# TYPE libp2p_"),
        "libp2p's own metrics share the registry"
    );
    assert_eq!(sample(&exposition, "shoal_raft_is_leader"), Some(1.0));
    assert_eq!(
        sample(
            &exposition,
            "shoal_service_replicas_desired{service=\"web\"}"
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &exposition,
            "shoal_service_replicas_running{service=\"web\"}"
        ),
        Some(4.0)
    );
    assert_eq!(sample(&exposition, "shoal_cluster_services"), Some(1.0));
    assert_eq!(
        sample(
            &exposition,
            "shoal_cluster_nodes{state=\"ready\",availability=\"active\",role=\"worker\"}"
        )
        .map(|n| n >= 1.0),
        Some(true)
    );
    assert!(sample(&exposition, "shoal_scheduler_placements_total").is_some_and(|n| n >= 4.0));
    promtool_check(&exposition);
    dashboard_queries_name_exposed_families(&exposition);
    peer.shutdown().await;
    agent.shutdown().await;
}

/// Every metric the Grafana dashboard queries is one the agent exposes.
fn dashboard_queries_name_exposed_families(exposition: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../metrics/dashboards/shoal-grafana.json"
    );
    let dashboard = std::fs::read_to_string(path).expect("the dashboard is in the repo");
    let names: std::collections::BTreeSet<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("shoal_") || word.starts_with("process_"))
        .collect();
    assert!(
        names.len() >= 10,
        "the dashboard queries shoal's families: {names:?}"
    );
    for name in names {
        let family = name.trim_end_matches("_bucket");
        assert!(
            exposition.contains(family),
            "the dashboard queries {name}, which no agent exposes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_shows_in_leader_changes() {
    init_logging();
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let first = start_agent_with_metrics(dirs[0].path(), ExecutorKind::Sim, vec![]).await;
    let seed = join_addr(&first).await;
    let mut agents = vec![first];
    for dir in &dirs[1..] {
        agents.push(
            start_agent_with_metrics(dir.path(), ExecutorKind::Sim, vec![seed.clone()]).await,
        );
    }
    // Wait until every agent sees the final three-voter configuration, and commit a write in
    // it: killing the leader of a one-voter or joint configuration would lose the quorum.
    eventually(
        "three voters everywhere",
        Duration::from_secs(30),
        || async {
            agents
                .iter()
                .all(|a| a.quorum().status().voters.len() == 3)
                .then_some(())
        },
    )
    .await;
    let settle = shoal_scheduler::Command::PruneTasks { keep_per_slot: 5 };
    agents[0]
        .quorum()
        .write(settle)
        .await
        .expect("a write commits")
        .expect("prune applies");
    let leader = agents[0].quorum().leader().borrow().expect("a leader");
    let index = agents
        .iter()
        .position(|a| a.mesh().local_peer_id() == leader)
        .expect("the leader is one of us");
    let survivor = agents
        .iter()
        .find(|a| a.mesh().local_peer_id() != leader)
        .expect("a survivor");
    let addr = survivor.metrics_addr().expect("metrics served");
    let before = sample(&scrape(addr).await, "shoal_raft_leader_changes_total")
        .expect("leader changes exposed");
    let victim = agents.remove(index);
    victim.kill().await;
    eventually(
        "a survivor saw the leader change",
        Duration::from_secs(10),
        || async {
            let now = sample(&scrape(addr).await, "shoal_raft_leader_changes_total")?;
            (now > before).then_some(())
        },
    )
    .await;
    for agent in agents {
        agent.shutdown().await;
    }
}
