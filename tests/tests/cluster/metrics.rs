//! `/metrics` of running agents: the families exist, their values follow the cluster, and the
//! exposition passes `promtool check metrics`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use shoal_agent::control::api::{self, CreateServiceRequest, CreateServiceResponse};
use shoal_agent::daemon::{Agent, ExecutorKind};
use shoal_tests::*;

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
    let client = client(&agent);
    // Alone, the agent leads its own cluster, and its info says so.
    let info: api::InfoResponse = client.get(api::INFO).await.expect("info");
    let cluster_id = info.cluster_id.expect("the agent formed a cluster");
    assert!(!cluster_id.is_empty());
    eventually(
        "the info shows the leader of the cluster",
        Duration::from_secs(10),
        || async {
            let labels = agent_info(&scrape(addr).await);
            (labels["role"] == "leader").then_some(())
        },
    )
    .await;
    let labels = agent_info(&scrape(addr).await);
    assert_eq!(labels["cluster_id"], cluster_id);
    assert_eq!(labels["node_id"], agent.node_id().as_str());
    assert_eq!(labels["version"], info.version);
    // A second agent, so that the mesh carries traffic worth counting. With two nodes autopilot
    // keeps one manager: the second agent is a worker of the same cluster.
    let peer_dir = tempfile::tempdir().expect("tempdir");
    let peer = start_agent_with_metrics(
        peer_dir.path(),
        ExecutorKind::Sim,
        vec![join_addr(&agent).await],
    )
    .await;
    let peer_addr = peer.metrics_addr().expect("metrics served");
    let peer_labels = eventually(
        "the second agent's info shows it joined",
        Duration::from_secs(20),
        || async {
            let labels = agent_info(&scrape(peer_addr).await);
            (labels["cluster_id"] == cluster_id).then_some(labels)
        },
    )
    .await;
    assert_eq!(peer_labels["role"], "worker");
    assert_eq!(peer_labels["node_id"], peer.node_id().as_str());
    eventually("both nodes are ready", Duration::from_secs(10), || async {
        let state = agent.quorum().state();
        let ready = state
            .nodes
            .values()
            .filter(|n| n.state == shoal_scheduler::NodeState::Ready)
            .count();
        (ready == 2).then_some(())
    })
    .await;
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
        "the gauges show 4 running tasks, 2 ready nodes and mesh traffic",
        Duration::from_secs(10),
        || async {
            let text = scrape(addr).await;
            let running = sample(&text, "shoal_cluster_tasks{state=\"running\"}") == Some(4.0);
            let ready: f64 = text
                .lines()
                .filter(|l| l.starts_with("shoal_cluster_nodes{state=\"ready\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            (running && ready == 2.0 && text.contains("shoal_mesh_bytes_total{")).then_some(text)
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
    assert!(sample(&exposition, "shoal_scheduler_placements_total").is_some_and(|n| n >= 4.0));
    assert_eq!(agent_info(&exposition)["role"], "leader");
    promtool_check(&exposition);
    promtool_check(&scrape(peer_addr).await);
    dashboard_queries_name_exposed_families(&exposition);
    peer.shutdown().await;
    agent.shutdown().await;
}

/// The labels of the one `shoal_agent_info` sample; panics unless there is exactly one.
fn agent_info(exposition: &str) -> BTreeMap<String, String> {
    let samples: Vec<&str> = exposition
        .lines()
        .filter(|line| line.starts_with("shoal_agent_info{"))
        .collect();
    assert_eq!(samples.len(), 1, "one shoal_agent_info sample: {samples:?}");
    let (labels, value) = samples[0]
        .strip_prefix("shoal_agent_info{")
        .and_then(|rest| rest.rsplit_once("} "))
        .expect("a sample with labels");
    assert_eq!(value.trim(), "1", "{}", samples[0]);
    // Label values here (versions, PeerIds, cluster ids, roles) hold no quotes or commas.
    labels
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
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
    let dirs = temp_dirs(3);
    let mut agents = start_joined(&dirs, |dir, join| async move {
        start_agent_with_metrics(&dir, ExecutorKind::Sim, join).await
    })
    .await;
    // Every agent sees the final three-voter configuration, and a write commits in it:
    // killing the leader of a one-voter or joint configuration would lose the quorum.
    wait_voters(&agents, 3).await;
    let settle = shoal_scheduler::Command::PruneTasks { keep_per_slot: 5 };
    agents[0]
        .quorum()
        .write(settle)
        .await
        .expect("a write commits")
        .expect("prune applies");
    let index = leader_index(&agents);
    let leader = agents[index].mesh().local_peer_id();
    let survivor = agents
        .iter()
        .find(|a| a.mesh().local_peer_id() != leader)
        .expect("a survivor");
    let addr = survivor.metrics_addr().expect("metrics served");
    let before = sample(&scrape(addr).await, "shoal_raft_leader_changes_total")
        .expect("leader changes exposed");
    // The two agents that joined were promoted from worker to manager: the info of all three
    // shows one leader, two managers and one cluster id.
    let roles = |agents: Vec<std::net::SocketAddr>| async move {
        let mut seen = Vec::new();
        for addr in agents {
            let labels = agent_info(&scrape(addr).await);
            seen.push((labels["role"].clone(), labels["cluster_id"].clone()));
        }
        seen.sort();
        seen
    };
    let addrs = |agents: &[Agent]| -> Vec<std::net::SocketAddr> {
        agents
            .iter()
            .map(|a| a.metrics_addr().expect("metrics served"))
            .collect()
    };
    let cluster_id = agents[0]
        .quorum()
        .state()
        .cluster_id
        .clone()
        .expect("a cluster")
        .0;
    let all = addrs(&agents);
    eventually(
        "one leader and two managers",
        Duration::from_secs(10),
        || {
            let all = all.clone();
            let cluster_id = cluster_id.clone();
            async move {
                let expected = [
                    ("leader", &cluster_id),
                    ("manager", &cluster_id),
                    ("manager", &cluster_id),
                ]
                .map(|(role, id)| (role.to_string(), id.to_string()));
                (roles(all).await == expected).then_some(())
            }
        },
    )
    .await;
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
    // The new leader's info says so; the other survivor stays a manager.
    let survivors = addrs(&agents);
    eventually(
        "a new leader and a manager",
        Duration::from_secs(10),
        || {
            let survivors = survivors.clone();
            let cluster_id = cluster_id.clone();
            async move {
                let expected = [("leader", &cluster_id), ("manager", &cluster_id)]
                    .map(|(role, id)| (role.to_string(), id.to_string()));
                (roles(survivors).await == expected).then_some(())
            }
        },
    )
    .await;
    for agent in agents {
        agent.shutdown().await;
    }
}
