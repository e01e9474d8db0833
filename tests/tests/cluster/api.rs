//! The control API as a client sees it: reads that see the writes made through another
//! follower at once (linearizable, or from that follower's replica at the write's log index), a write retried under its request id applied once, and bind mounts that
//! hand a task its node refused until the cluster allows them.

use std::time::Duration;

use shoal_agent::control::api::{
    self, ClusterSettingsRequest, CreateServiceRequest, CreateServiceResponse, ScaleRequest,
};
use shoal_agent::control::client::ClientError;
use shoal_agent::control::views::ServiceRow;
use shoal_agent::daemon::ExecutorKind;
use shoal_scheduler::{ClusterSettings, MountKind, MountSpec, RequestId, ServiceId};
use shoal_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_read_their_writes_and_retries_apply_once() {
    init_logging();
    let dirs = temp_dirs(3);
    let agents = start_joined(&dirs, |dir, join| async move {
        start_agent(&dir, ExecutorKind::Sim, join).await
    })
    .await;
    wait_voters(&agents, 3).await;
    let leader = leader_index(&agents);
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (writer, reader) = (client(&agents[followers[0]]), client(&agents[followers[1]]));
    for i in 0..10 {
        let name = format!("rw-{i}");
        let spec = sim_spec(&name, 1);
        let _: CreateServiceResponse = writer
            .post(api::SERVICES, &CreateServiceRequest { spec })
            .await
            .expect("create through a follower");
        let rows: Vec<ServiceRow> = reader.get(api::SERVICES).await.expect("list");
        assert!(
            rows.iter().any(|r| r.name == name),
            "a read through the other follower missed {name}"
        );
        // The write's index: the other follower's own replica, once it has applied it.
        let index = writer.last_write_index();
        assert!(index > 0, "a write answers with its log index");
        let at_index = format!("{}?stale=true&min_index={index}", api::SERVICES);
        let rows: Vec<ServiceRow> = reader.get(&at_index).await.expect("list at index");
        assert!(
            rows.iter().any(|r| r.name == name),
            "a read at the write's index missed {name}"
        );
    }
    // The same request id twice: one service, and the same answer, not "name in use".
    let request = RequestId(0x5eed);
    let spec = || CreateServiceRequest {
        spec: sim_spec("once", 1),
    };
    let first: CreateServiceResponse = writer
        .post_as(api::SERVICES, &spec(), request)
        .await
        .expect("created");
    let again: CreateServiceResponse = reader
        .post_as(api::SERVICES, &spec(), request)
        .await
        .expect("the retry is answered like the first call");
    assert_eq!(first.id, again.id);
    let rows: Vec<ServiceRow> = reader.get(api::SERVICES).await.expect("list");
    assert_eq!(rows.iter().filter(|r| r.name == "once").count(), 1);
    // A removal retried after its answer was lost: the first answer again, not "no such
    // service" (the name no longer resolves once the first attempt applied).
    let removal = RequestId(0x5eee);
    let removed: ServiceId = writer
        .delete_as(&api::service("once"), removal)
        .await
        .expect("removed");
    let again: ServiceId = reader
        .delete_as(&api::service("once"), removal)
        .await
        .expect("the retried removal is answered like the first");
    assert_eq!(removed, again);
    assert_eq!(removed, first.id);
    let unknown = reader
        .delete_as::<ServiceId>(&api::service("once"), RequestId(0x5eef))
        .await
        .expect_err("a new removal of a removed service");
    assert!(unknown.to_string().contains("no such service"), "{unknown}");
    for agent in agents {
        agent.shutdown().await;
    }
}

/// A worker forwards a write on to another manager when the first is slow to answer, so one
/// request can reach the managers twice, the second copy late. A copy answered "no such
/// service" decides the request: a late copy under the same request id, arriving once a service
/// of that name exists again, is answered the same and changes nothing (it once removed or
/// scaled the new service: a refusal the client saw, then its effect).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_copy_of_a_declined_write_changes_nothing() {
    init_logging();
    let dirs = temp_dirs(3);
    let agents = start_joined(&dirs, |dir, join| async move {
        start_agent(&dir, ExecutorKind::Sim, join).await
    })
    .await;
    wait_voters(&agents, 3).await;
    let (first, late) = (client(&agents[0]), client(&agents[1]));
    let (removal, scale) = (RequestId(0xdec1), RequestId(0xdec2));
    let scale_to = |replicas| ScaleRequest { replicas };
    let refused = first
        .delete_as::<ServiceId>(&api::service("late"), removal)
        .await
        .expect_err("no such service yet");
    assert!(refused.to_string().contains("no such service"), "{refused}");
    let refused = first
        .post_as::<_, ServiceId>(&api::service_scale("late"), &scale_to(5), scale)
        .await
        .expect_err("no such service yet");
    assert!(refused.to_string().contains("no such service"), "{refused}");

    let made: CreateServiceResponse = first
        .post(
            api::SERVICES,
            &CreateServiceRequest {
                spec: sim_spec("late", 2),
            },
        )
        .await
        .expect("created");
    let late_removal = late
        .delete_as::<ServiceId>(&api::service("late"), removal)
        .await
        .expect_err("the late copy of the removal is answered as the first");
    assert!(
        late_removal.to_string().contains("no such service"),
        "{late_removal}"
    );
    let late_scale = late
        .post_as::<_, ServiceId>(&api::service_scale("late"), &scale_to(5), scale)
        .await
        .expect_err("the late copy of the scale is answered as the first");
    assert!(
        late_scale.to_string().contains("no such service"),
        "{late_scale}"
    );
    let service: shoal_scheduler::Service = late
        .get(&api::service("late"))
        .await
        .expect("the service made meanwhile is still there");
    assert_eq!(service.id, made.id);
    assert_eq!(service.spec.replicas(), Some(2), "and keeps its scale");

    // A removal with a fresh request id is a new request: it applies.
    let removed: ServiceId = late
        .delete(&api::service("late"))
        .await
        .expect("a new removal");
    assert_eq!(removed, made.id);
    for agent in agents {
        agent.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bind_mounts_that_hand_over_the_node_need_the_clusters_leave() {
    init_logging();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(dir.path(), ExecutorKind::Sim, vec![]).await;
    let client = client(&agent);
    eventually("a cluster", Duration::from_secs(10), || async {
        agent.quorum().cluster_id().map(|_| ())
    })
    .await;
    let mut spec = sim_spec("socket", 1);
    spec.mounts = vec![MountSpec {
        kind: MountKind::Bind,
        source: "/var/run/./docker.sock".into(),
        target: "/var/run/docker.sock".into(),
        read_only: false,
    }];
    let refused = client
        .post::<_, CreateServiceResponse>(
            api::SERVICES,
            &CreateServiceRequest { spec: spec.clone() },
        )
        .await;
    match refused {
        Err(ClientError::Api { message, .. }) => {
            assert!(message.contains("--allow-sensitive-mounts"), "{message}")
        }
        other => panic!("a docker socket mount must be refused by default: {other:?}"),
    }
    let settings: ClusterSettings = client
        .post(
            api::CLUSTER_SETTINGS,
            &ClusterSettingsRequest {
                allow_sensitive_mounts: Some(true),
                ..ClusterSettingsRequest::default()
            },
        )
        .await
        .expect("settings");
    assert!(settings.allow_sensitive_mounts);
    let _: CreateServiceResponse = client
        .post(api::SERVICES, &CreateServiceRequest { spec })
        .await
        .expect("allowed now");
    agent.shutdown().await;
}
