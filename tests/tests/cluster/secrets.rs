//! Secrets and configs on a real in-process cluster of three managers (sim executor): created,
//! listed, inspected and removed through the control API and the CLI, referred to by services,
//! sealed with the cluster's data key (which the other managers fetch from the leader), and a planted
//! value that never shows: not in an answer, an error, an event, a metric, a log line, nor in
//! any file of any agent's data dir (raft log, state, snapshots).

use std::time::Duration;

use shoal_agent::control::api::{
    self, CompareValueRequest, CompareValueResponse, ConfigView, CreateObjectRequest,
    CreateObjectResponse, CreateServiceRequest, CreateServiceResponse, SecretView,
};
use shoal_agent::control::client::ControlClient;
use shoal_agent::daemon::ExecutorKind;
use shoal_consensus::sealed::{self, DATA_KEY_FILE, DataKeyStore};
use shoal_scheduler::FileRef;
use shoal_tests::capture::{CapturedLogs, files_under};
use shoal_tests::*;

/// The value planted in the secret: it must never show anywhere but in the task's files.
const PLANTED: &str = "planted-7c1e9a4b-never-show-this";

/// A config's value: configs are not secret, so this one must show where the planted secret
/// must not (in inspect, and in the data dirs): proof that the checks below can see a value.
const VISIBLE: &str = "visible-config-9d2f-in-plain-sight";

/// The planted value in every form it could leak as: plain, base64 (the API's body), and the
/// bytes as a JSON array (a `Vec<u8>` shown by serde or `Debug`).
fn leaks(text: &str) -> Vec<String> {
    let bytes: Vec<String> = PLANTED.bytes().take(8).map(|b| b.to_string()).collect();
    [
        PLANTED.to_owned(),
        base64_of(PLANTED.as_bytes()),
        bytes.join(","),
        bytes.join(", "),
    ]
    .into_iter()
    .filter(|form| text.contains(form.as_str()))
    .collect()
}

/// `bytes` in base64 (standard alphabet, padded), as the API takes values.
pub(crate) fn base64_of(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn assert_clean(what: &str, text: &str) {
    let found = leaks(text);
    assert!(
        found.is_empty(),
        "the planted secret shows in {what} (as {found:?})"
    );
}

async fn get_text(client: &ControlClient, path: &str) -> String {
    let value: serde_json::Value = client.get(path).await.expect(path);
    value.to_string()
}

/// The creation of secret or config `name`, labelled `env=test`.
pub(crate) fn object(name: &str, value: &[u8]) -> CreateObjectRequest {
    CreateObjectRequest {
        name: name.into(),
        labels: [("env".to_owned(), "test".to_owned())].into(),
        data: base64_of(value),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_planted_secret_never_shows_and_services_refer_to_secrets_and_configs() {
    let logs = CapturedLogs::default();
    let capturing = logs.install();
    let dirs = temp_dirs(3);
    let agents = start_joined(&dirs, |dir, join| async move {
        start_agent_with_metrics(&dir, ExecutorKind::Sim, join).await
    })
    .await;
    wait_managers(&agents, 3).await;
    let leader = leader_index(&agents);
    let follower = follower_index(&agents);
    let other = (0..3)
        .find(|i| *i != leader && *i != follower)
        .expect("a third manager");
    let client = client(&agents[follower]);

    // Created through a follower: it holds no key, fetches the leader's, seals, proposes.
    let created: CreateObjectResponse = client
        .post(api::SECRETS, &object("db-password", PLANTED.as_bytes()))
        .await
        .expect("create the secret");
    assert!(created.id.starts_with('x'), "{created:?}");
    let leader_key = DataKeyStore::open(dirs[leader].path())
        .expect("the leader's store")
        .get()
        .expect("the leader created the data key");
    let follower_key = DataKeyStore::open(dirs[follower].path())
        .expect("the follower's store")
        .get()
        .expect("the follower fetched the data key");
    assert_eq!(leader_key, follower_key, "one key for the cluster");
    // The third manager sealed nothing, but keeps a copy once the cluster holds a secret.
    eventually(
        "every manager holds the data key",
        Duration::from_secs(10),
        || async {
            let held = DataKeyStore::open(dirs[other].path()).ok()?.get()?;
            (held == leader_key).then_some(())
        },
    )
    .await;
    {
        use std::os::unix::fs::PermissionsExt as _;
        for dir in [&dirs[leader], &dirs[follower]] {
            let mode = std::fs::metadata(dir.path().join(DATA_KEY_FILE))
                .expect("the key file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
    // The key is never given on a socket.
    let refused = client
        .get::<serde_json::Value>(api::LOCAL_DATA_KEY)
        .await
        .expect_err("not on a socket");
    assert!(
        refused.to_string().contains("over the mesh only"),
        "{refused}"
    );
    // A config, and a second secret through the third manager.
    let other_client = shoal_tests::client(&agents[other]);
    let _: CreateObjectResponse = other_client
        .post(api::SECRETS, &object("api-token", b"another value"))
        .await
        .expect("create a second secret");
    let _: CreateObjectResponse = client
        .post(api::CONFIGS, &object("site", b"server { listen 80; }"))
        .await
        .expect("create the config");
    let _: CreateObjectResponse = client
        .post(api::CONFIGS, &object("visible", VISIBLE.as_bytes()))
        .await
        .expect("create the control config");

    // The same name again, a bad name, a value too large: refused, and the value not echoed.
    let mut answers = Vec::new();
    for (request, expected) in [
        (object("db-password", PLANTED.as_bytes()), "already exists"),
        (object("bad name", PLANTED.as_bytes()), "must be 1 to 63"),
    ] {
        let error = client
            .post::<_, CreateObjectResponse>(api::SECRETS, &request)
            .await
            .expect_err("refused");
        assert!(error.to_string().contains(expected), "{error}");
        answers.push(error.to_string());
    }
    let duplicate = client
        .post::<_, CreateObjectResponse>(api::CONFIGS, &object("site", b"x"))
        .await
        .expect_err("a config of that name exists");
    assert!(
        matches!(
            duplicate,
            shoal_agent::control::client::ClientError::Api { status, .. } if status.as_u16() == 409
        ),
        "{duplicate:?}"
    );
    let mut huge = PLANTED.as_bytes().to_vec();
    huge.resize(500 * 1024 + 1, b'x');
    let error = client
        .post::<_, CreateObjectResponse>(api::SECRETS, &object("huge", &huge))
        .await
        .expect_err("too large");
    assert!(error.to_string().contains("500 KiB"), "{error}");
    answers.push(error.to_string());

    // A service that refers to a secret that does not exist is refused and says what to do.
    let mut spec = sim_spec("web", 2);
    spec.secrets = vec![FileRef::secret("nope")];
    let error = client
        .post::<_, CreateServiceResponse>(api::SERVICES, &CreateServiceRequest { spec })
        .await
        .expect_err("a missing secret");
    assert!(
        error.to_string().contains("secret nope not found"),
        "{error}"
    );
    // The CLI: a service with the secret and the config, rotated by an update.
    let socket = agents[follower].socket().to_path_buf();
    shoal_cli(
        socket.clone(),
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--secret",
            "db-password",
            "--config",
            "source=site,target=/etc/site.conf",
            "--detach",
            "sim",
        ],
    )
    .await
    .expect("service create with a secret and a config");
    wait_running(&client, "web", 2, Duration::from_secs(20)).await;

    // Removal is refused while the service refers to it, naming the service.
    let error = client
        .delete::<String>(&api::secret("db-password"))
        .await
        .expect_err("in use");
    assert!(error.to_string().contains("service web"), "{error}");
    answers.push(error.to_string());
    let cli_refused = shoal_cli(socket.clone(), &["secret", "rm", "db-password"]).await;
    assert!(cli_refused.is_err(), "the CLI says the removal failed");

    // The seam for delivery: on the leader, with its key, a task's files open to the value.
    let state = agents[leader].quorum().state();
    let task = state
        .tasks
        .values()
        .find(|t| t.is_live())
        .map(|t| t.id)
        .expect("a task of web");
    let files = sealed::task_files(&state, Some(&leader_key), task).expect("the task's files");
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].target, "/run/secrets/db-password");
    assert_eq!(files[0].mode, 0o400);
    assert_eq!(files[0].bytes.as_slice(), PLANTED.as_bytes());
    assert_eq!(files[1].target, "/etc/site.conf");
    assert_clean("a task file's Debug", &format!("{files:?}"));
    drop(files);
    drop(state);

    // Rotation: a new secret, the service moved to it at the same target, the old one removed.
    let _: CreateObjectResponse = client
        .post(api::SECRETS, &object("db-password-2", b"rotated value"))
        .await
        .expect("create the new secret");
    shoal_cli(
        socket.clone(),
        &[
            "service",
            "update",
            "--secret-rm",
            "db-password",
            "--secret-add",
            "source=db-password-2,target=db-password",
            "--detach",
            "web",
        ],
    )
    .await
    .expect("rotate the secret");
    // The previous spec (kept for rollback) still refers to the old one.
    let error = client
        .delete::<String>(&api::secret("db-password"))
        .await
        .expect_err("the rollback spec refers to it");
    answers.push(error.to_string());

    // The CLI's reads work (their output is the API's views, checked below).
    for args in [
        &["secret", "ls"][..],
        &["secret", "ls", "--format", "json"][..],
        &["secret", "inspect", "db-password", "api-token"][..],
        &["config", "ls"][..],
        &["config", "inspect", "site"][..],
    ] {
        shoal_cli(socket.clone(), args)
            .await
            .unwrap_or_else(|e| panic!("shoal {args:?}: {e}"));
    }
    assert!(
        shoal_cli(
            socket.clone(),
            &["secret", "inspect", "--data", "db-password"]
        )
        .await
        .is_err(),
        "a secret's value is never printed"
    );

    // What every read answers, on every agent.
    let secrets: Vec<SecretView> = client.get(api::SECRETS).await.expect("ls");
    let names: Vec<&str> = secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api-token", "db-password", "db-password-2"]);
    assert_eq!(secrets[1].services, ["web"]);
    assert_eq!(secrets[1].key_id, leader_key.id());
    let config: ConfigView = client.get(&api::config("site")).await.expect("inspect");
    assert_eq!(
        config.data.as_deref(),
        Some(&*base64_of(b"server { listen 80; }"))
    );
    let visible: ConfigView = client.get(&api::config("visible")).await.expect("inspect");
    assert_eq!(
        visible.data.as_deref(),
        Some(&*base64_of(VISIBLE.as_bytes()))
    );
    let configs: Vec<ConfigView> = client.get(api::CONFIGS).await.expect("ls");
    assert!(configs.iter().all(|c| c.data.is_none()), "ls shows no data");
    for agent in &agents {
        let client = shoal_tests::client(agent);
        for path in [
            api::SECRETS.to_owned(),
            api::secret("db-password"),
            api::CONFIGS.to_owned(),
            api::config("site"),
            api::SERVICES.to_owned(),
            api::service("web"),
            api::service_tasks("web"),
            api::NODES.to_owned(),
            format!("{}?limit=2000", api::EVENTS),
            "/v1/cluster".to_owned(),
            api::CLUSTER_SETTINGS.to_owned(),
        ] {
            assert_clean(&format!("GET {path}"), &get_text(&client, &path).await);
        }
        let metrics = scrape(agent.metrics_addr().expect("metrics")).await;
        assert_clean("/metrics", &metrics);
    }
    let events = get_text(&client, &format!("{}?type=secret", api::EVENTS)).await;
    assert!(
        events.contains("secret_created") && events.contains("db-password"),
        "{events}"
    );
    for answer in &answers {
        assert_clean("an error", answer);
    }

    // Snapshots too: one taken now on every manager holds the sealed value only.
    for agent in &agents {
        if let Some(raft) = agent.quorum().raft() {
            let _ = raft.trigger().snapshot().await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for agent in agents {
        agent.shutdown().await;
    }
    let mut visible_in_files = 0;
    for dir in &dirs {
        let files = files_under(dir.path());
        assert!(!files.is_empty());
        visible_in_files += files
            .iter()
            .filter(|(_, bytes)| {
                bytes
                    .windows(VISIBLE.len())
                    .any(|w| w == VISIBLE.as_bytes())
            })
            .count();
        for (path, bytes) in files {
            assert_clean(
                &format!("the file {}", path.display()),
                &String::from_utf8_lossy(&bytes),
            );
            assert!(
                !bytes
                    .windows(PLANTED.len())
                    .any(|w| w == PLANTED.as_bytes()),
                "the planted secret is in {}",
                path.display()
            );
        }
    }
    assert!(
        visible_in_files > 0,
        "the control config's plain value is found in the data dirs: the scan sees values"
    );
    if capturing {
        let text = logs.text();
        assert!(!text.is_empty(), "logs were captured");
        assert_clean("the logs", &text);
    } else {
        eprintln!("another log subscriber was installed first: the logs were not checked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_forwards_a_secret_to_a_manager_and_never_holds_the_key() {
    init_logging();
    let dirs = temp_dirs(2);
    let agents = start_joined(&dirs, |dir, join| async move {
        start_agent(&dir, ExecutorKind::Sim, join).await
    })
    .await;
    wait_ready_nodes(&agents[0], 2).await;
    let worker = worker_index(&agents);
    let manager = 1 - worker;
    let worker_client = client(&agents[worker]);
    let created: CreateObjectResponse = worker_client
        .post(api::SECRETS, &object("token", PLANTED.as_bytes()))
        .await
        .expect("created through the worker");
    let shown: SecretView = worker_client
        .get(&api::secret(&created.id))
        .await
        .expect("inspect by id");
    assert_eq!(shown.name, "token");
    // A manager opens it to compare a value with it, and answers only whether they match.
    for (value, same) in [(PLANTED, true), ("a-guess", false), ("", false)] {
        let answer: CompareValueResponse = worker_client
            .post(
                &api::secret_compare("token"),
                &CompareValueRequest {
                    data: base64_of(value.as_bytes()),
                },
            )
            .await
            .expect("compared through the worker");
        assert_eq!(answer.same, same, "{value:?}");
    }
    let missing = worker_client
        .post::<_, CompareValueResponse>(
            &api::secret_compare("nothing"),
            &CompareValueRequest {
                data: base64_of(b"x"),
            },
        )
        .await
        .expect_err("no such secret");
    assert!(missing.to_string().contains("no such secret"), "{missing}");
    assert!(
        DataKeyStore::open(dirs[worker].path())
            .expect("the worker's store")
            .get()
            .is_none(),
        "a worker holds no data key"
    );
    assert!(
        DataKeyStore::open(dirs[manager].path())
            .expect("the manager's store")
            .get()
            .is_some()
    );
    let refused = worker_client
        .get::<serde_json::Value>(api::LOCAL_DATA_KEY)
        .await
        .expect_err("not on a socket");
    assert!(
        refused.to_string().contains("over the mesh only"),
        "{refused}"
    );
    let removed: String = worker_client
        .delete(&api::secret("token"))
        .await
        .expect("removed through the worker");
    assert_eq!(removed, created.id);
    let missing = worker_client
        .delete::<String>(&api::secret("token"))
        .await
        .expect_err("gone");
    assert!(missing.to_string().contains("no such secret"), "{missing}");
    for agent in agents {
        agent.shutdown().await;
    }
}
