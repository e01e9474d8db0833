//! The web view in a real headless Chromium (`shoal_tests::browser`), against agents on the real
//! Docker engine: the page lists every node and every task, follows a scale within a second
//! without a reload, opens a task's details and log, works behind the API token on the TCP
//! address, fits a phone's screen, and says so when its agent loses the leader. Screenshots go
//! to `target/ui-*.png` for a person to look at.
//!
//! A second test draws 1,000 tasks (the `sim` executor) and prints how long that took.
//!
//! Without Chromium the tests say so and pass, except under `CI=true` or
//! `SHOAL_REQUIRE_CHROMIUM=1` (`.ci/run` installs it and sets that), where its absence is a
//! failure.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_agent::control::api::{self, CreateServiceRequest, CreateServiceResponse, ScaleRequest};
use shoal_agent::daemon::{Agent, AgentConfig, ExecutorKind};
use shoal_scheduler::{ServiceId, ServiceSpec};
use shoal_tests::browser::{self, Browser};
use shoal_tests::*;

/// Replicas of the service the page shows first.
const REPLICAS: u64 = 4;
/// How fast the page must follow a change (the bound).
const FOLLOWS_WITHIN: Duration = Duration::from_secs(1);

/// The Chromium to use, or `None` (the test then passes with a message) when there is none
/// outside CI.
fn chromium() -> Option<PathBuf> {
    match browser::chromium_binary() {
        Some(binary) => Some(binary),
        None if std::env::var("CI").is_ok_and(|v| v == "true")
            || std::env::var_os("SHOAL_REQUIRE_CHROMIUM").is_some() =>
        {
            panic!(
                "no chromium on the PATH (CI=true or SHOAL_REQUIRE_CHROMIUM: .ci/run installs \
                 Debian's `chromium`)"
            )
        }
        None => {
            eprintln!(
                "SKIPPED: no chromium on the PATH (`apt-get install chromium`, or set SHOAL_CHROMIUM)"
            );
            None
        }
    }
}

/// Where screenshots go: the workspace's `target/`.
fn screenshot_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join(name)
}

fn spec(name: &str, replicas: u64, milli_cpus: u64, mebibytes: u64) -> ServiceSpec {
    let mut spec = shoal_scheduler::synthetic::spec(name, replicas);
    spec.resources.reservations = shoal_scheduler::Resources {
        nano_cpus: milli_cpus * 1_000_000,
        memory_bytes: mebibytes << 20,
    };
    spec.image = TEST_IMAGE.into();
    spec.args = vec![
        "sh".into(),
        "-c".into(),
        "echo hello from $(hostname); echo a warning >&2; exec sleep 3600".into(),
    ];
    spec.stop_grace_ms = 500;
    spec
}

async fn start(dir: &std::path::Path, join: Vec<String>, zone: &str, serves_page: bool) -> Agent {
    let mut config = AgentConfig::for_tests(dir, ExecutorKind::Docker);
    config.join = join;
    config.labels.insert("zone".into(), zone.into());
    // One manager: once it is gone the page's agent (a worker) has no leader until it comes back.
    config.managers = 1;
    if serves_page {
        config.metrics_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        config.api_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    Agent::start(config).await.expect("agent starts")
}

/// `(task card's task id, its column's node id)` of the service `name`'s cards on the page.
const CARDS: &str = "(name) => [...document.querySelectorAll(`li.task[data-service=\"${name}\"]`)]
    .map((li) => [Number(li.dataset.id), li.closest('section.node').dataset.node, li.dataset.state, li.classList.contains('stopping')])";

async fn cards(page: &mut Browser, service: &str) -> Vec<(u64, String, String, bool)> {
    let value = page
        .eval(&format!("({CARDS})({service:?})"))
        .await
        .expect("the cards");
    value
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    (
                        row[0].as_u64().unwrap_or_default(),
                        row[1].as_str().unwrap_or_default().to_owned(),
                        row[2].as_str().unwrap_or_default().to_owned(),
                        row[3].as_bool().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the page shows `want` cards of `service` that are not stopping; how long it took.
async fn wait_cards(page: &mut Browser, service: &str, want: usize, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let shown = cards(page, service)
            .await
            .into_iter()
            .filter(|card| !card.3)
            .count();
        if shown == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "the page showed {shown} of {want} wanted cards of {service} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_web_view_shows_the_cluster_follows_it_live_and_warns_when_the_leader_is_gone() {
    let Some(binary) = chromium() else { return };
    init_logging();
    ensure_test_image();
    let dirs = temp_dirs(3);
    let mut agents = vec![start(dirs[0].path(), Vec::new(), "a", false).await];
    let seed = vec![join_addr(&agents[0]).await];
    agents.push(start(dirs[1].path(), seed.clone(), "b", true).await);
    agents.push(start(dirs[2].path(), seed, "c", false).await);
    let _guards: Vec<ContainerGuard> = agents
        .iter()
        .map(|a| ContainerGuard(a.node_id().to_string()))
        .collect();
    wait_ready_nodes(&agents[0], 3).await;
    wait_managers(&agents, 1).await;
    let node_ids: BTreeSet<String> = agents.iter().map(|a| a.node_id().to_string()).collect();
    // The page is served by a worker: everything it shows comes from the manager through it.
    let viewer = &agents[1];
    assert!(!viewer.quorum().is_member(), "the page's agent is a worker");
    let page_url = format!(
        "http://{}/ui",
        viewer.metrics_addr().expect("metrics address")
    );
    let client = client(viewer);
    let created: CreateServiceResponse = client
        .post(
            api::SERVICES,
            &CreateServiceRequest {
                spec: spec("web", REPLICAS, 250, 64),
            },
        )
        .await
        .expect("create");
    let _: CreateServiceResponse = client
        .post(
            api::SERVICES,
            &CreateServiceRequest {
                spec: spec("cache", 2, 500, 256),
            },
        )
        .await
        .expect("create");
    wait_running(&client, "web", REPLICAS, Duration::from_secs(60)).await;
    wait_running(&client, "cache", 2, Duration::from_secs(60)).await;

    let mut page = Browser::launch(&binary).await.expect("chromium starts");
    page.screen(1280, 900, false)
        .await
        .expect("a desktop screen");
    page.navigate(&page_url).await.expect("the page loads");
    page.wait_for(
        "document.body.dataset.ready === 'true'",
        Duration::from_secs(20),
    )
    .await
    .expect("the page drew the cluster");

    // Every node is a column, every task a card in its node's column, running.
    let columns: BTreeSet<String> = page
        .eval("[...document.querySelectorAll('#nodes section.node')].map((s) => s.dataset.node)")
        .await
        .expect("columns")
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|id| id.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(columns, node_ids, "one column per node");
    // Where the manager placed each task.
    let state = agents[0].quorum().state();
    let want: BTreeSet<(u64, String)> = state
        .tasks
        .values()
        .filter(|t| t.service == created.id && t.desired == shoal_scheduler::DesiredState::Running)
        .map(|t| {
            let node = t.node.as_ref().map(ToString::to_string).unwrap_or_default();
            (t.id.0, node)
        })
        .collect();
    assert_eq!(want.len(), REPLICAS as usize);
    page.wait_for(
        "[...document.querySelectorAll('li.task[data-service=\"web\"]')].every((li) => li.dataset.state === 'running')",
        Duration::from_secs(10),
    )
    .await
    .expect("every card says running");
    let shown: BTreeSet<(u64, String)> = cards(&mut page, "web")
        .await
        .into_iter()
        .map(|(id, node, _, _)| (id, node))
        .collect();
    assert_eq!(shown, want, "every task has its card, in its node's column");
    let replicas = page
        .eval("document.querySelector('#services tr[data-service=\"web\"] .replicas').textContent")
        .await
        .expect("the service row");
    assert_eq!(replicas, Value::from(format!("{REPLICAS} / {REPLICAS}")));
    let cluster_id = page
        .eval("document.getElementById('cluster-id').textContent")
        .await
        .expect("the cluster id");
    assert_eq!(
        cluster_id.as_str(),
        agents[0].quorum().cluster_id().as_deref()
    );
    page.screenshot(&screenshot_path("ui-screenshot.png"))
        .await
        .expect("a screenshot");

    // A card opens its task's details and the last lines of its log.
    page.eval("document.querySelector('li.task[data-service=\"web\"] button').click()")
        .await
        .expect("click a card");
    page.wait_for(
        "document.getElementById('task-dialog').open && document.getElementById('task-logs').textContent.includes('hello from')",
        Duration::from_secs(15),
    )
    .await
    .expect("the task's log");
    let fields = page
        .eval("document.getElementById('task-fields').textContent")
        .await
        .expect("fields");
    assert!(
        fields.as_str().is_some_and(|f| f.contains(TEST_IMAGE)),
        "{fields}"
    );
    page.screenshot(&screenshot_path("ui-screenshot-task.png"))
        .await
        .expect("a screenshot");
    page.eval("document.getElementById('task-dialog').close()")
        .await
        .expect("close");

    // Scaling changes the page within a second, without a reload.
    page.eval("window.notReloaded = true").await.expect("mark");
    let _: ServiceId = client
        .post(&api::service_scale("web"), &ScaleRequest { replicas: 6 })
        .await
        .expect("scale up");
    let up = wait_cards(&mut page, "web", 6, FOLLOWS_WITHIN).await;
    let _: ServiceId = client
        .post(&api::service_scale("web"), &ScaleRequest { replicas: 3 })
        .await
        .expect("scale down");
    let down = wait_cards(&mut page, "web", 3, FOLLOWS_WITHIN).await;
    assert_eq!(
        page.eval("window.notReloaded === true")
            .await
            .expect("mark"),
        Value::Bool(true),
        "the page was not reloaded"
    );
    println!("web view followed a scale up in {up:?}, a scale down in {down:?}");
    wait_running(&client, "web", 3, Duration::from_secs(60)).await;
    page.wait_for(
        "document.querySelector('#services tr[data-service=\"web\"] .replicas').textContent === '3 / 3'",
        Duration::from_secs(5),
    )
    .await
    .expect("the service row follows");

    // A phone-sized screen: one column, nothing wider than the screen.
    page.screen(390, 844, true).await.expect("a phone screen");
    page.wait_for(
        "document.documentElement.scrollWidth <= window.innerWidth",
        Duration::from_secs(5),
    )
    .await
    .expect("nothing wider than a phone's screen");
    page.screenshot(&screenshot_path("ui-screenshot-phone.png"))
        .await
        .expect("a screenshot");
    page.screen(1280, 900, false)
        .await
        .expect("a desktop screen");

    // On the TCP API's address the page asks for the token, and works once it is given.
    let api_url = format!("http://{}/ui", viewer.api_addr().expect("api address"));
    page.navigate(&api_url).await.expect("the login form loads");
    page.wait_for(
        "!!document.getElementById('token')",
        Duration::from_secs(10),
    )
    .await
    .expect("the login form");
    let token = std::fs::read_to_string(shoal_agent::control::remote::token_path(dirs[1].path()))
        .expect("the agent's API token");
    page.eval(&format!(
        "document.getElementById('token').value = {:?}; document.querySelector('form').submit()",
        token.trim()
    ))
    .await
    .expect("log in");
    page.wait_for(
        "document.body.dataset.ready === 'true' && document.querySelectorAll('#nodes section.node').length === 3",
        Duration::from_secs(20),
    )
    .await
    .expect("the page behind the token");

    // The leader stops: the page says so.
    page.navigate(&page_url).await.expect("the page loads");
    page.wait_for(
        "document.body.dataset.ready === 'true'",
        Duration::from_secs(20),
    )
    .await
    .expect("the page drew the cluster");
    page.wait_for(
        "document.getElementById('warning').hidden",
        Duration::from_secs(5),
    )
    .await
    .expect("no warning while the leader is there");
    let leader = agents.remove(leader_index(&agents));
    let stopped = Instant::now();
    leader.kill().await;
    let warning = page
        .wait_for(
            "!document.getElementById('warning').hidden && document.getElementById('warning').textContent",
            Duration::from_secs(20),
        )
        .await
        .expect("a warning");
    println!(
        "the page warned {:?} after the leader stopped: {warning}",
        stopped.elapsed()
    );
    assert!(
        warning
            .as_str()
            .is_some_and(|w| w.contains("lost the cluster's leader")
                || w.contains("cannot reach the cluster's managers")),
        "{warning}"
    );
    page.wait_for(
        "document.getElementById('warning').textContent.includes(\"lost the cluster's leader\")",
        Duration::from_secs(20),
    )
    .await
    .expect("the leader warning");
    page.screenshot(&screenshot_path("ui-screenshot-no-leader.png"))
        .await
        .expect("a screenshot");
    page.close().await;
    for agent in agents {
        agent.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_web_view_draws_a_thousand_tasks() {
    let Some(binary) = chromium() else { return };
    init_logging();
    let dirs = temp_dirs(1);
    let mut config = AgentConfig::for_tests(dirs[0].path(), ExecutorKind::Sim);
    config.metrics_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let agent = Agent::start(config).await.expect("agent starts");
    let client = client(&agent);
    create_running(&client, sim_spec("many", 1_000)).await;
    let url = format!(
        "http://{}/ui",
        agent.metrics_addr().expect("metrics address")
    );

    let mut page = Browser::launch(&binary).await.expect("chromium starts");
    page.screen(1280, 900, false)
        .await
        .expect("a desktop screen");
    let mut figures = Vec::new();
    for _ in 0..3 {
        page.navigate(&url).await.expect("the page loads");
        let view = page
            .wait_for(
                "document.body.dataset.ready === 'true' && window.shoalView",
                Duration::from_secs(30),
            )
            .await
            .expect("the page drew the cluster");
        assert_eq!(view["tasks"], Value::from(1_000), "{view}");
        let cards = page
            .eval("document.querySelectorAll('li.task').length")
            .await
            .expect("cards");
        assert_eq!(cards, Value::from(1_000));
        figures.push(view);
    }
    // Following: 1,000 -> 1,100 tasks, timed from the write to the last new card on the page.
    let started = Instant::now();
    let _: ServiceId = client
        .post(
            &api::service_scale("many"),
            &ScaleRequest { replicas: 1_100 },
        )
        .await
        .expect("scale");
    page.wait_for(
        "document.querySelectorAll('li.task').length === 1100",
        Duration::from_secs(10),
    )
    .await
    .expect("100 more cards");
    let followed = started.elapsed();
    for view in &figures {
        println!(
            "1,000 tasks: overview read in {:.0} ms, drawn in {:.0} ms, ready {:.0} ms after navigation",
            view["fetchMs"].as_f64().unwrap_or_default(),
            view["renderMs"].as_f64().unwrap_or_default(),
            view["readyAt"].as_f64().unwrap_or_default()
        );
    }
    println!("1,000 -> 1,100 tasks: on the page {followed:?} after the scale was sent");
    page.close().await;
    agent.shutdown().await;
}
