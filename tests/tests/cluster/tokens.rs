//! `shoal cluster token` on a closed cluster of five agents (three managers, two workers): a
//! manager's owner sees the join tokens, a worker's cannot (it holds no cluster secret), a
//! rotation hands out a new worker token with which a new agent joins, and `cluster info` names
//! the closed mode by the secret's fingerprint only.

use std::path::PathBuf;

use shoal_agent::control::api::{
    self, CompareValueRequest, CompareValueResponse, CreateObjectResponse,
};
use shoal_agent::control::client::ClientError;
use shoal_agent::control::cluster_info::{CLUSTER_INFO, ClusterInfo};
use shoal_agent::control::join_tokens::{JOIN_TOKENS, JoinTokens};
use shoal_agent::daemon::{Agent, AgentConfig, ExecutorKind};
use shoal_consensus::Token;
use shoal_tests::*;

use super::secrets::{base64_of, object};

async fn start_with_token(dir: PathBuf, join: Vec<String>, token: String) -> Agent {
    let mut config = AgentConfig::for_tests(dir, ExecutorKind::Sim);
    config.join = join;
    config.token = Some(token);
    Agent::start(config).await.expect("agent starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_tokens_are_shown_to_a_managers_owner_and_rotate() {
    init_logging();
    let secret = Token::generate_manager().expect("a cluster secret");
    let manager_token = secret.manager_token().expect("a manager token");
    let dirs = temp_dirs(5);
    let mut agents = start_joined(&dirs[..3], |dir, join| {
        let token = manager_token.clone();
        async move { start_with_token(dir, join, token).await }
    })
    .await;
    wait_managers(&agents, 3).await;
    let seed = vec![join_addr(&agents[0]).await];
    let worker = start_with_token(
        dirs[3].path().to_path_buf(),
        seed.clone(),
        secret.worker_token(),
    )
    .await;
    agents.push(worker);
    let manager = client(&agents[0]);

    let tokens: JoinTokens = manager.get(JOIN_TOKENS).await.expect("join tokens");
    assert_eq!(tokens.worker.token, secret.worker_token());
    assert_eq!(tokens.manager.token, manager_token);
    assert_eq!(tokens.worker.rotations, 0);
    // A worker holds no cluster secret and does not forward this call to a manager.
    let refused = client(&agents[3]).get::<JoinTokens>(JOIN_TOKENS).await;
    match refused {
        Err(ClientError::Api { status, message }) => {
            assert_eq!(status.as_u16(), 409);
            assert!(message.contains("worker token"), "{message}");
        }
        other => panic!("a worker showed join tokens: {other:?}"),
    }
    // Nor may its owner test guesses at a secret's value.
    let _: CreateObjectResponse = manager
        .post(api::SECRETS, &object("probe", b"the-value"))
        .await
        .expect("a secret made on a manager");
    let guess = CompareValueRequest {
        data: base64_of(b"the-value"),
    };
    let on_manager: CompareValueResponse = manager
        .post(&api::secret_compare("probe"), &guess)
        .await
        .expect("a manager compares");
    assert!(on_manager.same);
    match client(&agents[3])
        .post::<_, CompareValueResponse>(&api::secret_compare("probe"), &guess)
        .await
    {
        Err(ClientError::Api { status, message }) => {
            assert_eq!(status.as_u16(), 403);
            assert!(message.contains("worker token"), "{message}");
        }
        other => panic!("a worker compared a secret: {other:?}"),
    }

    let socket = agents[0].socket().to_path_buf();
    shoal_cli(
        socket.clone(),
        &["cluster", "token", "--rotate", "--grace", "0s"],
    )
    .await
    .expect("shoal cluster token --rotate");
    let rotated: JoinTokens = manager.get(JOIN_TOKENS).await.expect("join tokens");
    assert_ne!(rotated.worker.token, secret.worker_token());
    assert_eq!(rotated.worker.rotations, 1);
    assert_eq!(
        rotated.manager.token, manager_token,
        "only the worker token rotated"
    );
    // Every manager derives the same tokens from the replicated rotation.
    let elsewhere: JoinTokens = client(&agents[1]).get(JOIN_TOKENS).await.expect("tokens");
    assert_eq!(elsewhere.worker.token, rotated.worker.token);

    let newcomer = start_with_token(
        dirs[4].path().to_path_buf(),
        seed,
        rotated.worker.token.clone(),
    )
    .await;
    agents.push(newcomer);
    wait_ready_nodes(&agents[0], 5).await;
    let info: ClusterInfo = manager.get(CLUSTER_INFO).await.expect("cluster info");
    assert_eq!(info.mode, "closed");
    let fingerprint = info.token_fingerprint.expect("a fingerprint");
    assert!(!manager_token.contains(&fingerprint) && !rotated.worker.token.contains(&fingerprint));
    shoal_cli(socket.clone(), &["cluster", "token", "--manager", "-q"])
        .await
        .expect("shoal cluster token --manager -q");
    let bad = shoal_cli(socket, &["cluster", "token", "--grace", "5m"]).await;
    assert!(bad.is_err(), "--grace without --rotate is refused");
    for agent in agents {
        agent.shutdown().await;
    }
}
