//! Three agents with the in-memory executor: a worker dies and its tasks run elsewhere.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use shoal_agent::daemon::ExecutorKind;
use shoal_scheduler::{DesiredState, TaskState};
use shoal_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_workers_tasks_run_elsewhere() {
    init_logging();
    let dirs = temp_dirs(3);
    let mut agents = start_joined(&dirs, |dir, join| async move {
        start_agent(&dir, ExecutorKind::Sim, join).await
    })
    .await;
    let third = agents.pop().expect("three agents");
    let second = agents.pop().expect("three agents");
    let first = agents.pop().expect("three agents");
    wait_ready_nodes(&first, 3).await;
    create_running(&client(&first), sim_spec("spread", 6)).await;

    // Kill a node that is not the leader: its tasks move to the survivors.
    let leader = first.quorum().leader().borrow().map(|p| p.to_string());
    let (victim, survivors) = if leader.as_deref() == Some(third.node_id().as_str()) {
        (second, vec![first, third])
    } else {
        (third, vec![first, second])
    };
    let victim_id = victim.node_id().clone();
    let killed_at = Instant::now();
    victim.kill().await;
    let client = shoal_tests::client(&survivors[0]);
    eventually(
        "tasks run on the survivors",
        Duration::from_secs(15),
        || async {
            let state = survivors[0].quorum().state();
            let running: Vec<_> = state
                .tasks
                .values()
                .filter(|t| {
                    t.desired == DesiredState::Running && t.status.state == TaskState::Running
                })
                .collect();
            let nodes: BTreeSet<_> = running.iter().filter_map(|t| t.node.clone()).collect();
            (running.len() == 6 && !nodes.contains(&victim_id)).then_some(())
        },
    )
    .await;
    let elapsed = killed_at.elapsed();
    assert!(elapsed < Duration::from_secs(8), "replaced in {elapsed:?}");
    let rows = tasks(&client, "spread").await;
    assert_eq!(
        rows.iter()
            .filter(|t| t.desired == DesiredState::Running)
            .count(),
        6
    );
    for agent in survivors {
        agent.shutdown().await;
    }
}
