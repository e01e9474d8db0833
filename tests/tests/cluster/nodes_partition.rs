//! The leader cut off from the rest, on five machines with their own engines that joined a seed
//! (see `shoal_tests::nodes`): the majority elects a new leader and moves the cut-off node's tasks;
//! the old leader stops calling itself the leader; no write and no linearizable read sent to
//! the minority side is acknowledged; healed, it is one cluster again, the old leader's
//! surplus tasks are stopped and exactly the desired count runs across every engine.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_tests::nodes::NodeCluster;
use shoal_tests::nodes::views::*;
use shoal_tests::*;

/// How long the cut-off side is tried for writes and reads.
const MINORITY_TRIES: Duration = Duration::from_secs(8);

/// What a user on the cut-off node got while it was cut off: `(command, exit status,
/// how long it took)` of every attempt, and whether any of them succeeded.
fn try_minority(cluster: &NodeCluster, node: &str) -> (Vec<String>, bool) {
    let started = Instant::now();
    let mut attempts = Vec::new();
    let mut acknowledged = false;
    for attempt in 0..20 {
        if started.elapsed() > MINORITY_TRIES {
            break;
        }
        let replicas = format!("web={}", 20 + attempt);
        let commands: [&[&str]; 2] = [
            &["service", "scale", "--detach", &replicas],
            &["service", "ls", "--format", "json"],
        ];
        for args in commands {
            let sent = Instant::now();
            let output = cluster.exec_within(
                node,
                Duration::from_secs(6),
                &[&["shoal"][..], args].concat(),
            );
            acknowledged |= output.status.success();
            attempts.push(format!(
                "`shoal {}`: {} after {:?} {}",
                args.join(" "),
                output.status,
                sent.elapsed(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }
    (attempts, acknowledged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_steps_down_and_the_majority_goes_on() {
    init_logging();
    let mut cluster = NodeCluster::new("partition");
    start_joined_cluster(&mut cluster, 5).await;
    let nodes = cluster.nodes().to_vec();
    let cluster = Arc::new(cluster);
    create_service(&cluster, &nodes[0], "web", 10);
    let placed = cluster
        .until(
            "10 tasks in the nodes' engines",
            Duration::from_secs(30),
            |c| {
                let tasks = c.service_ps(&nodes[0], "web").ok_or("no answer")?;
                exact(c, &nodes, "web", &tasks, 10)
            },
        )
        .await;
    let leader_id = cluster
        .until("one leader", Duration::from_secs(30), |c| {
            one_leader(c, &nodes)
        })
        .await;
    let leader = cluster
        .node_named(&leader_id)
        .expect("the leader is a node");
    let others: Vec<String> = nodes.iter().filter(|n| **n != leader).cloned().collect();
    let cut_off_tasks = placed.get(&leader).map_or(0, |t| t.len());

    let others_ref: Vec<&str> = others.iter().map(String::as_str).collect();
    let cut = Instant::now();
    cluster.partition(&[&leader], &others_ref);
    let minority = {
        let (cluster, leader) = (Arc::clone(&cluster), leader.clone());
        tokio::task::spawn_blocking(move || try_minority(&cluster, &leader))
    };
    let new_leader_id = cluster
        .until(
            "the majority names a new leader",
            Duration::from_secs(30),
            |c| {
                let seen = one_leader(c, &others)?;
                (seen != leader_id)
                    .then_some(seen)
                    .ok_or_else(|| "still the old leader".to_owned())
            },
        )
        .await;
    let elected = cut.elapsed();
    let new_leader = cluster
        .node_named(&new_leader_id)
        .expect("the new leader is a node");
    let stepped_down = cluster
        .until(
            "the cut-off leader no longer calls itself the leader",
            Duration::from_secs(30),
            |c| match c.leader_seen_by(&leader) {
                Some(seen) if seen == leader_id => Err(format!("it still leads ({seen})")),
                _ => Ok(cut.elapsed()),
            },
        )
        .await;
    let moved = cluster
        .until(
            "the majority runs all 10, the cut-off node's among them",
            Duration::from_secs(60),
            |c| {
                let tasks = c.service_ps(&new_leader, "web").ok_or("no answer")?;
                exact(c, &others, "web", &tasks, 10)
            },
        )
        .await;
    let moved_after = cut.elapsed();
    let (attempts, acknowledged) = minority.await.expect("the minority's user");
    assert!(
        !acknowledged,
        "the cut-off side acknowledged a request:\n{}",
        attempts.join("\n")
    );
    let scaled = cluster.shoal(&others[0], &["service", "scale", "--detach", "web=12"]);
    assert!(
        scaled.status.success(),
        "the majority takes writes: {}",
        String::from_utf8_lossy(&scaled.stderr)
    );

    let healed = Instant::now();
    cluster.heal_all();
    let rejoined = cluster
        .until(
            "one cluster again: 5 ready nodes, one leader",
            Duration::from_secs(90),
            |c| {
                let rows = c.node_ls(&new_leader).ok_or("no answer")?;
                whole_cluster(&rows, 5, 3)?;
                one_leader(c, &nodes).map(|_| healed.elapsed())
            },
        )
        .await;
    let converged = cluster
        .until(
            "one cluster again, exactly 12 tasks across every engine",
            Duration::from_secs(90),
            |c| {
                let rows = c.node_ls(&new_leader).ok_or("no answer")?;
                whole_cluster(&rows, 5, 3)?;
                one_leader(c, &nodes)?;
                let tasks = c.service_ps(&new_leader, "web").ok_or("no answer")?;
                exact(c, &nodes, "web", &tasks, 12)
            },
        )
        .await;
    // Still exact a moment later: nothing surplus came back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tasks = cluster.service_ps(&new_leader, "web").expect("service ps");
    exact(&cluster, &nodes, "web", &tasks, 12).expect("still exactly 12");
    eprintln!(
        "leader {leader} cut off from the other 4:\n  \
         the majority names {new_leader} {elected:?} later;\n  \
         the cut-off leader stops leading after {stepped_down:?};\n  \
         its {cut_off_tasks} tasks run on the majority after {moved_after:?}: {:?};\n  \
         on the cut-off side, {} requests, none acknowledged (first: {}; last: {});\n  \
         healed: one cluster {rejoined:?} after the heal; exactly 12 running, none twice, \
         {:?} after the heal: {:?}",
        by_node(&moved),
        attempts.len(),
        attempts.first().map_or("-", String::as_str),
        attempts.last().map_or("-", String::as_str),
        healed.elapsed(),
        by_node(&converged),
    );
}

/// How many tasks run on each node.
fn by_node(
    tasks: &BTreeMap<String, std::collections::BTreeSet<String>>,
) -> BTreeMap<&String, usize> {
    tasks.iter().map(|(n, t)| (n, t.len())).collect()
}
