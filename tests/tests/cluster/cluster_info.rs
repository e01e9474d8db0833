//! `shoal cluster info` on six agents (three managers, three workers): asked through a worker,
//! it describes the whole cluster — one leader among three managers, every node, the services
//! and their running tasks — and the CLI prints it for people and as JSON.

use std::time::Duration;

use shoal_agent::control::api::{self, CreateServiceRequest, CreateServiceResponse};
use shoal_agent::control::cluster_info::{CLUSTER_INFO, ClusterInfo};
use shoal_agent::daemon::ExecutorKind;
use shoal_tests::*;

const AGENTS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_info_through_a_worker_describes_the_whole_cluster() {
    init_logging();
    let dirs = temp_dirs(AGENTS);
    let agents = start_joined(&dirs, |dir, join| async move {
        start_agent(&dir, ExecutorKind::Sim, join).await
    })
    .await;
    wait_managers(&agents, 3).await;
    let worker = &agents[worker_index(&agents)];
    let reader = client(worker);
    let _: CreateServiceResponse = reader
        .post(
            api::SERVICES,
            &CreateServiceRequest {
                spec: sim_spec("web", 4),
            },
        )
        .await
        .expect("create");
    wait_running(&reader, "web", 4, Duration::from_secs(20)).await;

    let info: ClusterInfo = reader.get(CLUSTER_INFO).await.expect("cluster info");
    assert_eq!(info.managers.len(), 3, "{info:?}");
    assert_eq!(info.managers.iter().filter(|m| m.leader).count(), 1);
    assert!(info.managers[0].leader, "the leader comes first: {info:?}");
    assert_eq!(info.manager_target, 3);
    assert_eq!(info.nodes.total, AGENTS);
    assert_eq!(info.nodes.ready, AGENTS, "{info:?}");
    assert_eq!((info.services, info.tasks_running), (1, 4));
    assert!(info.term > 0 && info.applied_index > 0 && info.cluster_id.is_some());
    assert_eq!(info.mode, "open");
    assert!(info.token_fingerprint.is_none());
    assert_ne!(
        info.served_by,
        worker.node_id().to_string(),
        "a worker forwards"
    );

    let socket = worker.socket().to_path_buf();
    shoal_cli(socket.clone(), &["cluster", "info"])
        .await
        .expect("shoal cluster info");
    shoal_cli(socket, &["cluster", "info", "--format", "json"])
        .await
        .expect("shoal cluster info --format json");
    for agent in agents {
        agent.shutdown().await;
    }
}
