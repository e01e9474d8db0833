//! Autolock on a real in-process cluster of three managers (sim executor): turned on through the
//! CLI, every manager's data key file wrapped with the unlock key; a restarted manager stays
//! locked (secrets refused with the clear message, the key neither fetched from nor given to
//! other managers); the unlock key rotated while it is locked; a wrong key, then the new key,
//! refused with what to do; the previous key unlocks it, it rewraps its file with the new key,
//! and secrets work there again; autolock turned off writes plain files again. Neither the
//! unlock key nor the data key shows in any answer or any file of any data dir.

use std::path::Path;
use std::time::Duration;

use shoal_agent::control::api::{
    self, CreateObjectRequest, CreateObjectResponse, DataKeyState, InfoResponse, UnlockKeyResponse,
};
use shoal_agent::control::client::{ClientError, ControlClient};
use shoal_agent::control::cluster_info::{CLUSTER_INFO, ClusterInfo};
use shoal_agent::control::forward::{self, ForwardedCall};
use shoal_agent::daemon::{Agent, ExecutorKind};
use shoal_consensus::autolock::{LOCKED_FILE_HEADER, LockedFile, UnlockKey};
use shoal_consensus::sealed::{DATA_KEY_FILE, DataKey, DataKeyStore, PLAIN_FILE_HEADER};
use shoal_discovery::ShoalProtocol;
use shoal_tests::capture::{CapturedLogs, files_under};
use shoal_tests::*;

fn key_file(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(DATA_KEY_FILE)).unwrap_or_default()
}

/// The unlock key id a locked file is wrapped with, if it is locked.
fn wrapped_with(dir: &Path) -> Option<String> {
    let text = key_file(dir);
    Some(LockedFile::parse(&text)?.ok()?.unlock_key_id)
}

fn secret(name: &str) -> CreateObjectRequest {
    CreateObjectRequest {
        name: name.into(),
        labels: Default::default(),
        data: "dmFsdWU=".into(),
    }
}

async fn info(client: &ControlClient) -> InfoResponse {
    client.get(api::INFO).await.expect("info")
}

/// Asks `target` for the data key over the mesh, as a manager (`from`) would.
async fn data_key_answer(from: &Agent, target: &Agent) -> forward::ForwardedAnswer {
    forwarded_get(from, target, api::LOCAL_DATA_KEY).await
}

/// `GET uri` of `target`, over the mesh from `from`.
async fn forwarded_get(from: &Agent, target: &Agent, uri: &str) -> forward::ForwardedAnswer {
    let call = ForwardedCall {
        method: "GET".into(),
        uri: uri.into(),
        request_id: None,
        body: Vec::new(),
    };
    let bytes = from
        .mesh()
        .request(
            target.mesh().local_peer_id(),
            ShoalProtocol::Control,
            forward::encode_call(&call).expect("encodes"),
        )
        .await
        .expect("an answer over the mesh");
    forward::decode_answer(&bytes).expect("decodes")
}

fn hex(key: &DataKey) -> String {
    key.expose_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `text` to a fresh file of `dir` for `--key-file`.
fn key_file_with(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write the key file");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_manager_stays_locked_until_unlocked_with_the_key() {
    let logs = CapturedLogs::default();
    let capturing = logs.install();
    let dirs = temp_dirs(3);
    let mut agents = start_joined(&dirs, |dir, join| async move {
        start_agent(&dir, ExecutorKind::Sim, join).await
    })
    .await;
    wait_managers(&agents, 3).await;
    let leader = leader_index(&agents);
    let victim = follower_index(&agents);
    let client_of = |agents: &[Agent], i: usize| client(&agents[i]);
    let leader_client = client_of(&agents, leader);

    // A secret first: the data key exists and every manager keeps a copy.
    let _: CreateObjectResponse = leader_client
        .post(api::SECRETS, &secret("before"))
        .await
        .expect("a secret");
    eventually(
        "every manager holds the key",
        Duration::from_secs(15),
        || async {
            dirs.iter()
                .all(|d| key_file(d.path()).starts_with(PLAIN_FILE_HEADER))
                .then_some(())
        },
    )
    .await;

    // Autolock on, through the CLI on the victim (a follower).
    let victim_socket = agents[victim].socket().to_path_buf();
    shoal_cli(
        victim_socket.clone(),
        &["cluster", "update", "--autolock", "true"],
    )
    .await
    .expect("cluster update --autolock true");
    let shown: UnlockKeyResponse = client_of(&agents, victim)
        .get(api::LOCAL_UNLOCK_KEY)
        .await
        .expect("the unlock key");
    assert!(shown.autolock);
    let unlock_text = shown.unlock_key.clone().expect("the key");
    assert!(unlock_text.starts_with("SHOALKEY-1-"), "{shown:?}");
    let unlock = UnlockKey::parse(&unlock_text).expect("parses");
    assert_eq!(shown.unlock_key_id.as_deref(), Some(unlock.id().as_str()));
    // Every manager shows the same key (each opened it from the state with its data key).
    for i in 0..3 {
        let other: UnlockKeyResponse = client_of(&agents, i)
            .get(api::LOCAL_UNLOCK_KEY)
            .await
            .expect("the unlock key");
        assert_eq!(other.unlock_key.as_deref(), Some(unlock_text.as_str()));
    }
    // On twice: refused, saying how to see or rotate the key.
    let again = shoal_cli(
        victim_socket.clone(),
        &["cluster", "update", "--autolock", "true"],
    )
    .await
    .expect_err("already on");
    assert!(again.to_string().contains("already on"), "{again}");
    // Every manager's key file is wrapped with it, and holds the key in no readable form.
    eventually(
        "every key file wrapped",
        Duration::from_secs(15),
        || async {
            dirs.iter()
                .all(|d| wrapped_with(d.path()).as_deref() == Some(unlock.id().as_str()))
                .then_some(())
        },
    )
    .await;
    let data_key = DataKeyStore::open(dirs[victim].path())
        .expect("a store")
        .unlock(&unlock)
        .expect("the wrapped file opens with the unlock key");
    for dir in &dirs {
        let text = key_file(dir.path());
        assert!(text.starts_with(LOCKED_FILE_HEADER));
        assert!(!text.contains(&hex(&data_key)), "the data key is in plain");
    }
    let cluster: ClusterInfo = leader_client.get(CLUSTER_INFO).await.expect("info");
    assert!(cluster.settings.autolock);
    assert_eq!(cluster.unlock_key_id.as_deref(), Some(unlock.id().as_str()));
    assert_eq!(cluster.data_key, DataKeyState::Wrapped);

    // The victim restarts: locked.
    let seed = join_addr(&agents[leader]).await;
    let victim_dir = dirs[victim].path().to_path_buf();
    agents.remove(victim).shutdown().await;
    let restarted = start_agent(&victim_dir, ExecutorKind::Sim, vec![seed]).await;
    agents.insert(victim, restarted);
    let leader = leader_index(&agents);
    let other = (0..3)
        .find(|i| *i != leader && *i != victim)
        .expect("a third");
    let victim_client = client_of(&agents, victim);
    eventually(
        "the victim is a voter again",
        Duration::from_secs(20),
        || async { agents[victim].quorum().is_member().then_some(()) },
    )
    .await;
    assert_eq!(info(&victim_client).await.data_key, DataKeyState::Locked);
    let locked_file = key_file(&victim_dir);
    // Time for the keeper to have fetched a key, were it allowed to.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(info(&victim_client).await.data_key, DataKeyState::Locked);
    assert_eq!(key_file(&victim_dir), locked_file, "the locked file stays");
    let refused = victim_client
        .post::<_, CreateObjectResponse>(api::SECRETS, &secret("while-locked"))
        .await
        .expect_err("locked");
    match &refused {
        ClientError::Api { status, message } => {
            assert_eq!(status.as_u16(), 423, "{message}");
            assert!(
                message.contains("manager is locked") && message.contains("shoal cluster unlock"),
                "{message}"
            );
        }
        other => panic!("a locked manager answers 423: {other:?}"),
    }
    let shown = victim_client
        .get::<UnlockKeyResponse>(api::LOCAL_UNLOCK_KEY)
        .await
        .expect_err("a locked manager cannot open the unlock key");
    assert!(shown.to_string().contains("manager is locked"), "{shown}");
    let cluster: ClusterInfo = victim_client.get(CLUSTER_INFO).await.expect("info");
    assert_eq!(
        cluster.data_key,
        DataKeyState::Locked,
        "cluster info says so"
    );
    // The key is not given to other managers by the locked one; an unlocked one does give it
    // (the probe can succeed).
    let from_locked = data_key_answer(&agents[leader], &agents[victim]).await;
    assert_eq!(
        from_locked.status,
        423,
        "{:?}",
        String::from_utf8_lossy(&from_locked.body)
    );
    let from_unlocked = data_key_answer(&agents[leader], &agents[other]).await;
    assert_eq!(from_unlocked.status, 200);
    // Secrets still work through the unlocked managers.
    let _: CreateObjectResponse = client_of(&agents, other)
        .post(api::SECRETS, &secret("elsewhere"))
        .await
        .expect("an unlocked manager seals");

    // The key is rotated while the victim is locked.
    let rotated: UnlockKeyResponse = client_of(&agents, other)
        .post(api::LOCAL_UNLOCK_KEY, &serde_json::json!({}))
        .await
        .expect("rotate");
    let new_text = rotated.unlock_key.clone().expect("a new key");
    let new_key = UnlockKey::parse(&new_text).expect("parses");
    assert_ne!(new_text, unlock_text);
    assert_eq!(
        rotated.previous_unlock_key_id.as_deref(),
        Some(unlock.id().as_str())
    );
    eventually(
        "the unlocked managers rewrap",
        Duration::from_secs(15),
        || async {
            [leader, other]
                .iter()
                .all(|i| wrapped_with(dirs[*i].path()).as_deref() == Some(new_key.id().as_str()))
                .then_some(())
        },
    )
    .await;
    eventually(
        "the victim applied the rotation",
        Duration::from_secs(15),
        || async {
            let state = agents[victim].quorum().state();
            (state.autolock.unlock_key_id() == Some(new_key.id().as_str())).then_some(())
        },
    )
    .await;

    // `shoal cluster unlock`: garbage, a wrong key, the new key: refused, nothing changes.
    let keys = tempfile::tempdir().expect("tempdir");
    let stranger = UnlockKey::generate().expect("random").to_text().to_string();
    for (name, text, expected) in [
        ("garbage", "not-a-key".to_owned(), "not an unlock key"),
        ("stranger", stranger, "wrong unlock key"),
        ("new", new_text.clone(), "from before the rotation"),
    ] {
        let path = key_file_with(&keys, name, &text);
        let error = shoal_cli(
            victim_socket.clone(),
            &["cluster", "unlock", "--key-file", &path],
        )
        .await
        .expect_err("refused");
        assert!(error.to_string().contains(expected), "{name}: {error}");
        assert!(!error.to_string().contains(&text), "the key is not echoed");
        assert_eq!(info(&victim_client).await.data_key, DataKeyState::Locked);
        assert_eq!(key_file(&victim_dir), locked_file);
    }
    // The previous key unlocks it; it rewraps its file with the current key.
    let path = key_file_with(&keys, "previous", &format!("{unlock_text}\n"));
    shoal_cli(
        victim_socket.clone(),
        &["cluster", "unlock", "--key-file", &path],
    )
    .await
    .expect("unlocked with the previous key");
    assert_eq!(info(&victim_client).await.data_key, DataKeyState::Wrapped);
    assert_eq!(
        wrapped_with(&victim_dir).as_deref(),
        Some(new_key.id().as_str())
    );
    let again = shoal_cli(
        victim_socket.clone(),
        &["cluster", "unlock", "--key-file", &path],
    )
    .await
    .expect_err("not locked any more");
    assert!(again.to_string().contains("not locked"), "{again}");
    let _: CreateObjectResponse = victim_client
        .post(api::SECRETS, &secret("after-unlock"))
        .await
        .expect("secrets work on the unlocked manager");
    let from_victim = data_key_answer(&agents[leader], &agents[victim]).await;
    assert_eq!(from_victim.status, 200, "it gives the key again");
    let shown: UnlockKeyResponse = victim_client
        .get(api::LOCAL_UNLOCK_KEY)
        .await
        .expect("the key");
    assert_eq!(shown.unlock_key.as_deref(), Some(new_text.as_str()));
    // The unlock key is for a manager's own socket: another manager asking gets nothing.
    let asked = forwarded_get(&agents[leader], &agents[victim], api::LOCAL_UNLOCK_KEY).await;
    assert_eq!(asked.status, 403);
    assert!(!String::from_utf8_lossy(&asked.body).contains(&new_text));

    // Neither key shows in a view, nor in any file of any data dir (the log holds them sealed).
    for path in [CLUSTER_INFO, api::CLUSTER_SETTINGS, "/v1/events?limit=2000"] {
        let text = serde_json::to_string(
            &leader_client
                .get::<serde_json::Value>(path)
                .await
                .expect(path),
        )
        .expect("json");
        for key in [&unlock_text, &new_text, &hex(&data_key)] {
            assert!(!text.contains(key.as_str()), "a key shows in GET {path}");
        }
    }

    // Autolock off: every manager writes its key in plain again, and a restart needs no key.
    shoal_cli(
        victim_socket.clone(),
        &["cluster", "update", "--autolock", "false"],
    )
    .await
    .expect("autolock off");
    eventually("every key file plain", Duration::from_secs(15), || async {
        dirs.iter()
            .all(|d| key_file(d.path()).starts_with(PLAIN_FILE_HEADER))
            .then_some(())
    })
    .await;
    for agent in agents {
        agent.shutdown().await;
    }
    for dir in &dirs {
        for (path, bytes) in files_under(dir.path()) {
            let text = String::from_utf8_lossy(&bytes);
            for key in [&unlock_text, &new_text] {
                assert!(
                    !text.contains(key.as_str()),
                    "an unlock key in {}",
                    path.display()
                );
            }
        }
        let store = DataKeyStore::open(dir.path()).expect("a store");
        assert!(!store.is_locked());
        assert_eq!(store.get().expect("the key"), data_key);
    }
    if capturing {
        let text = logs.text();
        assert!(
            text.contains("LOCKED"),
            "the locked manager said so in its log"
        );
        for key in [&unlock_text, &new_text, &hex(&data_key)] {
            assert!(!text.contains(key.as_str()), "a key shows in the logs");
        }
    } else {
        eprintln!("another log subscriber was installed first: the logs were not checked");
    }
}
