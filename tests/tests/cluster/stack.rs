//! `shoal stack` on one agent and the real engine: a Compose file of a web front that depends
//! on a healthy API is deployed (the API runs before the front is created), the front reaches
//! the API by its name in the file, a redeploy with one change updates that service alone, a
//! file with an error deploys nothing, and `stack rm` removes the stack.

use std::process::Command;
use std::time::Duration;

use shoal_agent::control::api;
use shoal_agent::control::views::ServiceRow;
use shoal_agent::daemon::ServiceNetworkConfig;
use shoal_agent::executor::NetworkConfig;
use shoal_scheduler::TaskState;
use shoal_tests::*;

const CONVERGE: Duration = Duration::from_secs(60);
/// The test's own network, bridge, proxy port and range of service addresses, clear of a real
/// agent's and of the other tests' (the node's own rules match the range).
const NETWORK: &str = "shoal-stack";
const BRIDGE: &str = "shoalstack0";
const PROXY_PORT: u16 = 17952;
const RANGE: &str = "10.253.0.0/16";

const COMPOSE: &str = r#"
x-image: &image shoal-test/busybox:latest
x-serve: &serve
  image: *image
  stop_grace_period: 1s

services:
  front:
    <<: *serve
    command: ["sh", "-c", "mkdir -p /www && echo front > /www/index.html && exec httpd -f -p 80 -h /www"]
    deploy:
      replicas: 2
    depends_on:
      api:
        condition: service_healthy
  api:
    <<: *serve
    command: ["sh", "-c", "sleep 1; mkdir -p /www && echo ${API_PAGE:?set API_PAGE in .env} > /www/index.html && exec httpd -f -p 80 -h /www"]
    healthcheck:
      test: ["CMD-SHELL", "test -f /www/index.html"]
      interval: 500ms
      timeout: 2s
      retries: 5
    labels:
      tier: backend
"#;

/// The page `http://api/` gives a task of `front` (by the name the file gives the service).
fn fetch_api(container: &str) -> Option<String> {
    let output = Command::new("timeout")
        .args(["10", "docker", "exec", container, "sh", "-c"])
        .arg(r#"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 api 80"#)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    Some(text.lines().last()?.trim().to_owned()).filter(|l| !l.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compose_app_is_deployed_in_dependency_order_redeployed_and_removed() {
    let _network = NetworkGuard::new(NETWORK, BRIDGE, RANGE, PROXY_PORT);
    let DockerAgent {
        agent,
        node,
        client,
        dir,
        guard,
    } = DockerAgent::start_with(|config| {
        config.service_network = Some(ServiceNetworkConfig {
            proxy_port: PROXY_PORT,
            range: RANGE.parse().expect("a range"),
            ..ServiceNetworkConfig::on(NetworkConfig::new(NETWORK, BRIDGE, &config.data_dir))
        });
    })
    .await;
    let socket = agent.socket().to_path_buf();
    let project = tempfile::tempdir().expect("a project dir");
    let file = write_file(project.path(), "compose.yaml", COMPOSE);
    write_file(project.path(), ".env", "API_PAGE=api-v1\n");

    shoal_cli(socket.clone(), &["stack", "deploy", "-c", &file, "shop"])
        .await
        .expect("the stack deploys");
    let state = agent.quorum().state();
    let (front, api_service) = (
        service_named(&state, "shop_front"),
        service_named(&state, "shop_api"),
    );
    assert_eq!(
        front
            .spec
            .labels
            .get(shoal_scheduler::STACK_NAMESPACE_LABEL),
        Some(&"shop".to_owned())
    );
    assert_eq!(
        api_service.spec.labels.get("tier"),
        Some(&"backend".to_owned())
    );
    // The front was created only once the API ran (healthy: it has a health check).
    let api_running = state
        .tasks
        .values()
        .filter(|t| t.service == api_service.id && t.status.state == TaskState::Running)
        .map(|t| t.status.timestamp)
        .min()
        .expect("the api runs");
    assert!(
        front.created_at >= api_running,
        "front created at {:?}, api running at {:?}",
        front.created_at,
        api_running
    );
    wait_running(&client, "shop_front", 2, CONVERGE).await;

    // A task of the stack reaches the API by the name the file gives it.
    let front_task = running_containers(&node, &front.id.to_string())
        .pop()
        .expect("a front container");
    let page = eventually("the front reaches api by name", CONVERGE, || {
        let container = front_task.clone();
        async move { fetch_api(&container).filter(|p| p == "api-v1") }
    })
    .await;
    assert_eq!(page, "api-v1");

    // Redeployed with one change (.env): only the API is updated.
    let (front_version, api_version) = (front.version, api_service.version);
    write_file(project.path(), ".env", "API_PAGE=api-v2\n");
    shoal_cli(socket.clone(), &["stack", "deploy", "-c", &file, "shop"])
        .await
        .expect("the stack redeploys");
    let state = agent.quorum().state();
    assert_eq!(service_named(&state, "shop_front").version, front_version);
    assert_eq!(service_named(&state, "shop_api").version, api_version + 1);
    let page = eventually("the updated api answers", CONVERGE, || {
        let container = front_task.clone();
        async move { fetch_api(&container).filter(|p| p == "api-v2") }
    })
    .await;
    assert_eq!(page, "api-v2");

    // The stack's listings answer.
    for args in [
        &["stack", "ls"][..],
        &["stack", "services", "shop"],
        &["stack", "ps", "shop"],
    ] {
        shoal_cli(socket.clone(), args).await.expect("a listing");
    }
    let rows: Vec<ServiceRow> = client.get(api::SERVICES).await.expect("services");
    assert!(
        rows.iter().all(|r| r.stack.as_deref() == Some("shop")),
        "{rows:?}"
    );

    // Files with an error deploy nothing: bad YAML, an unsupported key under --strict, a
    // dependency cycle.
    let before = agent.quorum().state().services.len();
    let broken = write_file(
        project.path(),
        "broken.yaml",
        "services:\n  x:\n    image: [a\n",
    );
    let error = shoal_cli(socket.clone(), &["stack", "deploy", "-c", &broken, "bad"])
        .await
        .expect_err("bad YAML");
    assert!(error.to_string().contains("broken.yaml:"), "{error}");
    let privileged = write_file(
        project.path(),
        "privileged.yaml",
        "services:\n  x:\n    image: busybox\n    privileged: true\n",
    );
    let error = shoal_cli(
        socket.clone(),
        &["stack", "deploy", "--strict", "-c", &privileged, "bad"],
    )
    .await
    .expect_err("strict");
    assert!(error.to_string().contains("privileged"), "{error}");
    let cycle = write_file(
        project.path(),
        "cycle.yaml",
        "services:\n  a:\n    image: busybox\n    depends_on: [b]\n  b:\n    image: busybox\n    depends_on: [a]\n",
    );
    let error = shoal_cli(socket.clone(), &["stack", "deploy", "-c", &cycle, "bad"])
        .await
        .expect_err("a cycle");
    assert!(error.to_string().contains("cycle"), "{error}");
    assert_eq!(agent.quorum().state().services.len(), before);

    shoal_cli(socket.clone(), &["stack", "rm", "shop"])
        .await
        .expect("the stack is removed");
    assert!(agent.quorum().state().services.is_empty());

    agent.shutdown().await;
    drop(guard);
    drop(dir);
}
