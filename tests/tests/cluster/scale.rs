//! Scale, with the in-memory executor: forty whole agents in this process (more with
//! `SHOAL_SCALE_AGENTS=N` on an optimised build; `.ci/run` runs 200 as `shoal bench cluster`:
//! a hundred unoptimised agents on two cores starve each other's raft, their vote requests
//! going unanswered past the election timeout, so the size is the optimised binary's), 2,000
//! tasks placed on every one of them with a raft group of three; and a service scaled to
//! 100,000 replicas on five agents, which converges (its plan is committed in pieces under the
//! command limit, its assignment sets and changes go in pages, its reports in batches).

use std::time::{Duration, Instant};

use shoal_agent::bench::cluster::{leader_of, running, start_cluster};
use shoal_agent::daemon::Agent;
use shoal_consensus::RaftTiming;
use shoal_scheduler::{ClusterState, Command, NodeState, ServiceMode};
use shoal_tests::*;

/// Waits until the leader's state satisfies `done`.
async fn on_leader(
    agents: &[Agent],
    what: &str,
    limit: Duration,
    done: impl Fn(&ClusterState) -> bool,
) {
    eventually(what, limit, || async {
        let leader = leader_of(agents)?;
        done(&leader.quorum().state()).then_some(())
    })
    .await
}

async fn create(agents: &[Agent], replicas: u64) {
    let created = agents[0]
        .quorum()
        .write(Command::CreateService {
            spec: sim_spec("scale", replicas),
            at: shoal_agent::worker::now(),
        })
        .await
        .expect("a leader answers");
    assert!(created.is_ok(), "{created:?}");
}

/// Hundreds of agents share this machine's two cores: raft gets the slack a busy WAN would.
const SLOW_RAFT: RaftTiming = RaftTiming {
    heartbeat: Duration::from_millis(200),
    election_min: Duration::from_millis(1500),
    election_max: Duration::from_millis(3000),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_agents_run_tasks_with_a_raft_group_of_three() {
    init_logging();
    let n: usize = std::env::var("SHOAL_SCALE_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let root = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let agents = start_cluster(root.path(), n, 10, SLOW_RAFT)
        .await
        .expect("the agents start");
    on_leader(&agents, "every node ready", Duration::from_secs(300), |s| {
        s.nodes
            .values()
            .filter(|n| n.state == NodeState::Ready)
            .count()
            == n
    })
    .await;
    eprintln!("{n} agents ready in {:?}", started.elapsed());
    let members = agents.iter().filter(|a| a.quorum().is_member()).count();
    let status = leader_of(&agents).expect("a leader").quorum().status();
    assert_eq!(status.voters.len(), 3, "{status:?}");
    assert!(members <= 4, "{members} raft members among {n} agents");
    create(&agents, 2_000).await;
    on_leader(
        &agents,
        "2,000 tasks running on every node",
        Duration::from_secs(120),
        |s| running(s) == (2_000, n),
    )
    .await;
    futures::future::join_all(agents.into_iter().map(Agent::shutdown)).await;
}

/// Relaxed raft timing here too: applying and reporting 100,000 tasks in an unoptimised build
/// saturates both cores, and with LAN timing the managers lost their leader for minutes (this
/// test timed out on the commit before cluster events as well as after them, on the same
/// machine). It checks convergence, not failover speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_scaled_to_100k_replicas_converges() {
    init_logging();
    let root = tempfile::tempdir().expect("tempdir");
    let agents = start_cluster(root.path(), 5, 5, SLOW_RAFT)
        .await
        .expect("5 agents start");
    on_leader(&agents, "5 ready nodes", Duration::from_secs(30), |s| {
        s.nodes
            .values()
            .filter(|n| n.state == NodeState::Ready)
            .count()
            == 5
    })
    .await;
    create(&agents, 1_000).await;
    on_leader(&agents, "1,000 running", Duration::from_secs(60), |s| {
        running(s).0 == 1_000
    })
    .await;
    let leader = leader_of(&agents).expect("a leader");
    let state = leader.quorum().state();
    let service = state.services.values().next().expect("the service");
    let mut spec = service.spec.clone();
    spec.mode = ServiceMode::Replicated { replicas: 100_000 };
    let scaling = Instant::now();
    let answer = leader
        .quorum()
        .write(Command::UpdateService {
            id: service.id,
            expected_revision: service.revision,
            spec,
            at: shoal_agent::worker::now(),
        })
        .await
        .expect("a leader answers");
    assert!(answer.is_ok(), "{answer:?}");
    on_leader(&agents, "100,000 running", Duration::from_secs(600), |s| {
        running(s) == (100_000, 5)
    })
    .await;
    eprintln!("scaled to 100,000 replicas in {:?}", scaling.elapsed());
    for agent in agents {
        agent.shutdown().await;
    }
}
