//! Agents in containers, one per node, on a Docker network the test creates (the nodes share
//! this machine's engine for their tasks until each node gets an engine of its own).
//!
//! - Twenty agents started with no flags find each other (mDNS), form one cluster with three
//!   managers, are all ready, all list the twenty nodes, and all run tasks.
//! - In a closed cluster, an agent that joined with a worker token runs tasks, reads the
//!   cluster, never becomes a manager, and may not write.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use shoal_agent::control::views::TaskRow;
use shoal_tests::containers::DockerCluster;
use shoal_tests::*;

/// Whether `node` lists `n` nodes, all ready, `managers` of them managers.
fn lists_whole_cluster(cluster: &DockerCluster, node: &str, n: usize, managers: usize) -> bool {
    cluster.node_ls(node).is_some_and(|rows| {
        rows.len() == n
            && rows.iter().all(|r| r.state == "ready")
            && rows.iter().filter(|r| r.role == "manager").count() == managers
    })
}

/// The tasks of `service` as `shoal service ps` shows them inside `node`.
fn service_ps(cluster: &DockerCluster, node: &str, service: &str) -> Vec<TaskRow> {
    let output = cluster.shoal(node, &["service", "ps", service, "--format", "json"]);
    serde_json::from_slice(&output.stdout).unwrap_or_default()
}

/// Running tasks of `service` and the hostnames they run on.
fn running_on(tasks: &[TaskRow]) -> (usize, BTreeSet<String>) {
    let running: Vec<&TaskRow> = tasks
        .iter()
        .filter(|t| t.state == shoal_scheduler::TaskState::Running)
        .collect();
    let hosts = running.iter().map(|t| t.node.clone()).collect();
    (running.len(), hosts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_agents_with_no_flags_form_one_cluster_and_all_run_tasks() {
    init_logging();
    const N: usize = 20;
    let mut cluster = DockerCluster::new("twenty");
    let started = Instant::now();
    for _ in 0..N {
        cluster.start_node(&[], &[]);
    }
    cluster
        .until_every_node(
            "20 ready nodes, 3 managers, in every node's view",
            Duration::from_secs(180),
            |c, node| lists_whole_cluster(c, node, N, 3),
        )
        .await;
    eprintln!(
        "{N} agents in containers: every one ready, in every view, {:?} after the first started",
        started.elapsed()
    );

    // Created through the last node (a worker: it forwards to a manager), 40 replicas.
    let last = cluster.nodes()[N - 1].clone();
    let created = cluster.shoal(
        &last,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "40",
            "--timeout",
            "180s",
            TEST_IMAGE,
            "sleep",
            "3600",
        ],
    );
    assert!(
        created.status.success(),
        "service create on a worker: {}{}",
        String::from_utf8_lossy(&created.stdout),
        String::from_utf8_lossy(&created.stderr)
    );
    let first = cluster.nodes()[0].clone();
    let (running, hosts) = eventually(
        "40 tasks running on 20 nodes",
        Duration::from_secs(120),
        || async {
            let tasks = service_ps(&cluster, &first, "web");
            let (running, hosts) = running_on(&tasks);
            (running == 40 && hosts.len() == N).then_some((running, hosts))
        },
    )
    .await;
    assert_eq!((running, hosts.len()), (40, N));
    // Every node's own view agrees: every node runs tasks.
    cluster
        .until_every_node(
            "every node counts its tasks",
            Duration::from_secs(30),
            |c, node| {
                c.node_ls(node)
                    .is_some_and(|rows| rows.len() == N && rows.iter().all(|r| r.tasks > 0))
            },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_token_agent_runs_tasks_and_never_manages() {
    init_logging();
    let token = Tokens::generate();
    let mut cluster = DockerCluster::new("tokens");
    for _ in 0..3 {
        cluster.start_node(&[("SHOAL_TOKEN", &token.manager)], &[]);
    }
    let worker = cluster.start_node(&[("SHOAL_TOKEN", &token.worker)], &[]);
    cluster
        .until_every_node(
            "4 ready nodes, 3 managers",
            Duration::from_secs(120),
            |c, node| lists_whole_cluster(c, node, 4, 3),
        )
        .await;
    let manager = cluster.nodes()[0].clone();
    let created = cluster.shoal(
        &manager,
        &[
            "service",
            "create",
            "--name",
            "all",
            "--mode",
            "global",
            "--timeout",
            "60s",
            TEST_IMAGE,
            "sleep",
            "3600",
        ],
    );
    assert!(
        created.status.success(),
        "service create on a manager: {}{}\n{}",
        String::from_utf8_lossy(&created.stdout),
        String::from_utf8_lossy(&created.stderr),
        cluster.logs(&manager, 40)
    );
    let worker_id = cluster.node_id(&worker).expect("the worker started");
    eventually(
        "the worker-token node runs its task",
        Duration::from_secs(60),
        || async {
            let rows = cluster.node_ls(&worker)?;
            rows.iter()
                .any(|r| r.id.as_str() == worker_id && r.role == "worker" && r.tasks == 1)
                .then_some(())
        },
    )
    .await;
    // It reads the cluster through a manager, but may not write.
    let refused = cluster.shoal(&worker, &["service", "scale", "all=3"]);
    assert!(!refused.status.success());
    let denied = cluster.shoal(
        &worker,
        &[
            "service", "create", "--name", "mine", "--detach", TEST_IMAGE, "sleep", "1",
        ],
    );
    let why = String::from_utf8_lossy(&denied.stderr);
    assert!(
        !denied.status.success() && why.contains("worker token"),
        "{why}"
    );
    let rows = cluster.node_ls(&manager).expect("node ls");
    let me = rows
        .iter()
        .find(|r| r.id.as_str() == worker_id)
        .expect("listed");
    assert_eq!(me.role, "worker");
}

/// Tokens made by `shoal cluster token --new` inside a throwaway container.
struct Tokens {
    manager: String,
    worker: String,
}

impl Tokens {
    fn generate() -> Tokens {
        shoal_tests::containers::ensure_agent_image();
        let output = std::process::Command::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "--pull",
                "never",
                shoal_tests::containers::AGENT_IMAGE,
                "cluster",
                "token",
                "--new",
            ])
            .output()
            .expect("docker run");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let find = |prefix: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .map(|t| t.trim().to_owned())
                .unwrap_or_else(|| panic!("no {prefix} in {text}"))
        };
        Tokens {
            manager: find("manager token:"),
            worker: find("worker token:"),
        }
    }
}
