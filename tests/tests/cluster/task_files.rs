//! Secrets and configs given to tasks, on the real engine: a Compose stack of a web front that
//! serves a config, an API that reads a secret and a database it waits for (healthy) is
//! deployed, redeployed with one change and removed; each task sees its files at their targets
//! with their owner and mode, on an in-memory mount; the secret's value is in neither the
//! engine's inspect output nor any file of the node's disk (the agent's data dir, the
//! container's directory and writable layer); the files go when the tasks go. And a worker
//! that is not a manager gets its task's secret from the leader over the mesh.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shoal_agent::control::api::{
    self, ConfigView, CreateServiceRequest, CreateServiceResponse, SecretView,
};
use shoal_agent::daemon::ExecutorKind;
use shoal_agent::executor::DEFAULT_FILES_BASE;
use shoal_scheduler::FileRef;
use shoal_tests::*;

const CONVERGE: Duration = Duration::from_secs(60);
/// The secret's value: it must show only inside the task.
const PLANTED: &str = "planted-5b0e-task-file-never-on-disk";

fn compose(page_config: &str) -> String {
    format!(
        r#"
x-base: &base
  image: shoal-test/busybox:latest
  stop_grace_period: 1s

services:
  front:
    <<: *base
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    hostname: front-box
    working_dir: /www
    configs:
      - source: page
        target: /www/index.html
  api:
    <<: *base
    command: ["sleep", "3600"]
    user: "0:0"
    secrets:
      - source: db_password
        mode: 0400
    depends_on:
      db:
        condition: service_healthy
  db:
    <<: *base
    command: ["sh", "-c", "touch /tmp/ready && exec sleep 3600"]
    healthcheck:
      test: ["CMD-SHELL", "test -f /tmp/ready"]
      interval: 500ms
      retries: 5

secrets:
  db_password:
    file: ./db_password.txt

configs:
  page:
{page_config}
"#
    )
}

/// What `sh -c script` prints in `container` (trimmed), or its error.
fn exec(container: &str, script: &str) -> String {
    let output = Command::new("timeout")
        .args(["10", "docker", "exec", container, "sh", "-c", script])
        .output()
        .expect("docker exec runs");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text.trim().to_owned()
}

fn docker_output(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Every regular file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    shoal_tests::capture::files_under(dir)
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(path, _)| path)
        .collect()
}

/// The secret's value is in the container, and nowhere on the node's disk or in `inspect`.
fn assert_only_in_the_task(container: &str, data_dir: &Path) {
    let inspect = docker_output(&["inspect", container]);
    assert!(!inspect.is_empty(), "inspect answers");
    assert!(
        !inspect.contains(PLANTED),
        "the secret shows in docker inspect"
    );
    let root = docker_output(&["info", "--format", "{{.DockerRootDir}}"]);
    let id = docker_output(&["inspect", "--format", "{{.Id}}", container]);
    let upper = docker_output(&[
        "inspect",
        "--format",
        "{{index .GraphDriver.Data \"UpperDir\"}}",
        container,
    ]);
    let mut places = vec![
        data_dir.to_path_buf(),
        Path::new(&root).join("containers").join(&id),
    ];
    if upper.starts_with('/') {
        places.push(PathBuf::from(upper));
    }
    for place in places {
        let holding = files_holding(&place, PLANTED.as_bytes());
        assert!(
            holding.is_empty(),
            "the secret is on the node's disk: {holding:?}"
        );
    }
}

/// Task directories left under the node's files root.
fn task_dirs(node: &str) -> usize {
    std::fs::read_dir(Path::new(DEFAULT_FILES_BASE).join(node))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stacks_secrets_and_configs_reach_its_tasks_in_memory_only() {
    let DockerAgent {
        agent,
        node,
        client,
        dir,
        guard,
    } = DockerAgent::start().await;
    let socket = agent.socket().to_path_buf();
    let project = tempfile::tempdir().expect("a project dir");
    write_file(project.path(), "db_password.txt", PLANTED);
    let file = write_file(
        project.path(),
        "compose.yaml",
        &compose("    content: page-v1"),
    );

    shoal_cli(socket.clone(), &["stack", "deploy", "-c", &file, "shop"])
        .await
        .expect("the stack deploys");
    let state = agent.quorum().state();
    let api_id = service_named(&state, "shop_api").id.to_string();
    let front_id = service_named(&state, "shop_front").id.to_string();
    wait_running(&client, "shop_api", 1, CONVERGE).await;
    wait_running(&client, "shop_front", 1, CONVERGE).await;

    // The API's task reads the secret at /run/secrets, root-owned, 0400, on a tmpfs.
    let api = running_containers(&node, &api_id)
        .pop()
        .expect("an api task");
    assert_eq!(exec(&api, "cat /run/secrets/db_password"), PLANTED);
    assert_eq!(
        exec(&api, "stat -c '%a %u:%g' /run/secrets/db_password"),
        "400 0:0"
    );
    let mount = exec(&api, "grep ' /run/secrets/db_password ' /proc/mounts");
    assert!(mount.contains("tmpfs"), "the secret's mount: {mount:?}");
    assert!(mount.contains(" ro"), "read-only: {mount:?}");
    assert_only_in_the_task(&api, dir.path());

    // The front serves its config, with the hostname and working directory the file gives.
    let front = running_containers(&node, &front_id)
        .pop()
        .expect("a front task");
    let page = || {
        exec(
            &front,
            r#"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 127.0.0.1 8080 | tail -n 1"#,
        )
    };
    eventually("the front serves its config", CONVERGE, || async {
        (page() == "page-v1").then_some(())
    })
    .await;
    assert_eq!(exec(&front, "hostname"), "front-box");
    assert_eq!(exec(&front, "pwd"), "/www");

    // The stack made its secret and config, labelled with it.
    let secrets: Vec<SecretView> = client.get(api::SECRETS).await.expect("secrets");
    assert_eq!(
        secrets.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["shop_db_password"]
    );

    // Configs cannot change: new content under the same name deploys nothing.
    let changed = write_file(
        project.path(),
        "compose.yaml",
        &compose("    content: page-v2"),
    );
    let error = shoal_cli(socket.clone(), &["stack", "deploy", "-c", &changed, "shop"])
        .await
        .expect_err("a changed config is refused");
    assert!(error.to_string().contains("cannot change"), "{error}");
    assert!(!error.to_string().contains(PLANTED));

    // Nor can secrets: a new value in the secret's file is refused, not silently ignored, and
    // neither value shows in the error.
    const REPLACED: &str = "a-new-password-that-never-deploys";
    write_file(project.path(), "db_password.txt", REPLACED);
    let error = shoal_cli(socket.clone(), &["stack", "deploy", "-c", &file, "shop"])
        .await
        .expect_err("a changed secret is refused");
    let said = format!("{error:#}");
    assert!(
        said.contains("shop_db_password exists with another value"),
        "{said}"
    );
    assert!(
        !said.contains(PLANTED) && !said.contains(REPLACED),
        "{said}"
    );
    write_file(project.path(), "db_password.txt", PLANTED);

    // Redeployed with one change (the page under a new name): only the front is updated.
    let (api_version, front_version) = {
        let state = agent.quorum().state();
        (
            service_named(&state, "shop_api").version,
            service_named(&state, "shop_front").version,
        )
    };
    let renamed = write_file(
        project.path(),
        "compose.yaml",
        &compose("    name: shop_page_v2\n    content: page-v2"),
    );
    shoal_cli(socket.clone(), &["stack", "deploy", "-c", &renamed, "shop"])
        .await
        .expect("the stack redeploys");
    let state = agent.quorum().state();
    assert_eq!(service_named(&state, "shop_api").version, api_version);
    assert_eq!(
        service_named(&state, "shop_front").version,
        front_version + 1
    );
    let front = eventually("a new front task", CONVERGE, || async {
        running_containers(&node, &front_id)
            .into_iter()
            .find(|c| *c != front)
    })
    .await;
    eventually("the new front serves the new page", CONVERGE, || async {
        let page = exec(
            &front,
            r#"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 127.0.0.1 8080 | tail -n 1"#,
        );
        (page == "page-v2").then_some(())
    })
    .await;

    // Removed: the services, the stack's secret and configs, and every task's files.
    shoal_cli(socket.clone(), &["stack", "rm", "shop"])
        .await
        .expect("the stack is removed");
    assert!(agent.quorum().state().services.is_empty());
    let secrets: Vec<SecretView> = client.get(api::SECRETS).await.expect("secrets");
    let configs: Vec<ConfigView> = client.get(api::CONFIGS).await.expect("configs");
    assert!(
        secrets.is_empty() && configs.is_empty(),
        "{secrets:?} {configs:?}"
    );
    eventually("the tasks' files are gone", CONVERGE, || async {
        (task_dirs(&node) == 0).then_some(())
    })
    .await;

    agent.shutdown().await;
    drop(guard);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_gets_its_tasks_secret_from_the_leader_over_the_mesh() {
    init_logging();
    ensure_test_image();
    let dirs = temp_dirs(2);
    let agents = start_joined(&dirs, |dir, join| async move {
        start_agent(&dir, ExecutorKind::Docker, join).await
    })
    .await;
    let _guards: Vec<ContainerGuard> = agents
        .iter()
        .map(|a| ContainerGuard(a.node_id().to_string()))
        .collect();
    wait_ready_nodes(&agents[0], 2).await;
    let worker = worker_index(&agents);
    assert!(
        !agents[worker].quorum().is_member(),
        "the worker is no manager"
    );
    let worker_node = agents[worker].node_id().to_string();
    let socket = agents[worker].socket().to_path_buf();
    let value = tempfile::NamedTempFile::new().expect("a file");
    std::fs::write(value.path(), PLANTED).expect("write");

    // Made and used through the worker's own socket (forwarded to the leader).
    let path = value.path().display().to_string();
    shoal_cli(socket.clone(), &["secret", "create", "token", &path])
        .await
        .expect("the secret is made");
    let mut spec = sim_spec("reader", 1);
    spec.image = "shoal-test/busybox:latest".into();
    spec.args = vec!["sleep".into(), "3600".into()];
    spec.stop_grace_ms = 1000;
    spec.constraints = vec![
        shoal_scheduler::parse::constraint(&format!("node.id=={worker_node}"))
            .expect("a constraint"),
    ];
    spec.secrets = vec![FileRef {
        source: "token".into(),
        target: "/etc/token".into(),
        uid: 0,
        gid: 7,
        mode: 0o440,
    }];
    let worker_client = client(&agents[worker]);
    let _: CreateServiceResponse = worker_client
        .post(api::SERVICES, &CreateServiceRequest { spec })
        .await
        .expect("the service is created");
    wait_running(&worker_client, "reader", 1, CONVERGE).await;
    let leader = leader_index(&agents);
    let service = service_named(&agents[leader].quorum().state(), "reader")
        .id
        .to_string();
    let task = running_containers(&worker_node, &service)
        .pop()
        .expect("the worker's task");
    assert_eq!(exec(&task, "cat /etc/token"), PLANTED);
    assert_eq!(exec(&task, "stat -c '%a %u:%g' /etc/token"), "440 0:7");
    assert_only_in_the_task(&task, dirs[worker].path());
    assert_eq!(task_dirs(&worker_node), 1);

    shoal_cli(socket, &["service", "rm", "reader"])
        .await
        .expect("removed");
    eventually("the task's files are gone", CONVERGE, || async {
        (task_dirs(&worker_node) == 0).then_some(())
    })
    .await;
    for agent in agents {
        agent.shutdown().await;
    }
}
