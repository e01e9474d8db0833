//! Clusters of machines: every node is a container with its own Docker engine, which runs that
//! node's tasks apart from the others' (see `shoal_tests::nodes`). The CLI runs inside a node.
//!
//! - 5 nodes started with no flags form one cluster with 3 managers, every node listing all 5
//!   ready; so do 1 seed and 4 nodes that know only its multiaddr, with mDNS off.
//! - 10 replicas are spread over the nodes' own engines; a worker paused for 1 s (less than
//!   the down grace) -> no task restarted or moved; a worker killed -> its tasks run elsewhere,
//!   and exactly 10 run again.
//! - The leader killed right after a scale-up -> a new leader, which reports every task's
//!   status as the engines see it, and exactly the desired count runs again; writes through
//!   a worker and a follower are timed. The old leader restarted -> it rejoins under the new
//!   leader and exactly the desired count runs across every engine, none twice.
//! - The harness's own faults do what they say (isolate, partition, loss, pause, kill, start).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use shoal_tests::nodes::NodeCluster;
use shoal_tests::nodes::views::*;
use shoal_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_with_no_flags_form_one_cluster() {
    init_logging();
    let mut cluster = NodeCluster::new("zero");
    let (started, started_at) = (Instant::now(), SystemTime::now());
    let nodes = cluster.start_nodes(5, &[], &[]);
    let (_, since_agents) = until_formed(&cluster, 5).await;
    let elections: usize = cluster
        .on_each(&nodes, |n| {
            cluster.times_logged(n, "this agent is now the leader", started_at)
        })
        .iter()
        .map(Vec::len)
        .sum();
    eprintln!("5 nodes, zero config: {elections} leaders took office while they formed");
    eprintln!(
        "5 nodes, zero config: one cluster, 3 managers, every node lists all 5 ready, {:?} \
         after the first container started (engines' boot included), {since_agents:?} after \
         the last agent started",
        started.elapsed()
    );
}

/// Twenty machines with their own engines, no flags: one cluster with full views. On demand
/// (20 engines booting at once take minutes of both cores):
/// `cargo nextest run -p shoal-tests --run-ignored only -E 'test(twenty_nodes)' --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "on demand: twenty nodes with their own engines take minutes of this machine"]
async fn twenty_nodes_with_no_flags_form_one_cluster() {
    init_logging();
    let mut cluster = NodeCluster::new("twenty");
    let started = Instant::now();
    let nodes = cluster.start_nodes(20, &[], &[]);
    let (_, since_agents) = until_formed(&cluster, nodes.len()).await;
    let yielded = cluster
        .on_each(&nodes, |n| {
            cluster
                .first_logged(n, "leaving its empty cluster", SystemTime::UNIX_EPOCH)
                .is_some()
        })
        .into_iter()
        .filter(|y| *y)
        .count();
    eprintln!(
        "20 nodes, zero config: one cluster, 3 managers, every node lists all 20 ready, {:?} \
         after the first container started (engines' boot included), {since_agents:?} after \
         the last agent started; {yielded} had formed a cluster alone and joined the others'",
        started.elapsed()
    );
}

/// A node that heard no one when it started (as when every answer to its multicast questions
/// is lost) forms a cluster of its own. Once it hears the others' cluster, it sets its empty
/// one aside and joins theirs: the LAN ends with one cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_formed_a_cluster_alone_joins_the_larger_one_it_hears() {
    init_logging();
    let mut cluster = NodeCluster::new("lone");
    let nodes = cluster.start_nodes(4, &[], &[]);
    until_formed(&cluster, 4).await;
    // One answer may be an error while the autopilot still settles the managers.
    let theirs = cluster
        .until("the four nodes' cluster id", Duration::from_secs(30), |c| {
            cluster_id(c, &nodes[0]).ok_or_else(|| {
                let failed = c.shoal_error(&nodes[0], &["cluster", "info"]);
                eprintln!("cluster info on {}: {failed}", nodes[0]);
                failed
            })
        })
        .await;
    let lone = cluster.start_node(&[("SHOAL_NODE_START_CUT_OFF", "1")], &[]);
    let own = cluster
        .until(
            "the cut-off node leads a cluster of its own",
            Duration::from_secs(60),
            |c| {
                let id = c.node_id(&lone).ok_or("no node id yet")?;
                let rows = c.node_ls(&lone).ok_or("no answer")?;
                let leader = c.leader_seen_by(&lone).ok_or("no leader")?;
                if rows.len() != 1 || leader != id {
                    return Err(format!("{} nodes, leader {leader}", rows.len()));
                }
                cluster_id(c, &lone).ok_or_else(|| "no cluster id".to_owned())
            },
        )
        .await;
    assert_ne!(own, theirs, "the cut-off node formed a cluster apart");
    let (healed, healed_at) = (Instant::now(), SystemTime::now());
    cluster.heal(&lone);
    let (leader, _) = until_formed(&cluster, 5).await;
    let joined = healed.elapsed();
    assert_eq!(
        cluster_id(&cluster, &lone).as_deref(),
        Some(theirs.as_str())
    );
    assert!(
        cluster
            .first_logged(&lone, "leaving its empty cluster", healed_at)
            .is_some(),
        "the node says why it left its cluster"
    );
    let aside = cluster.exec(&lone, &["ls", "/var/lib/shoal/set-aside"]);
    let aside = String::from_utf8_lossy(&aside.stdout);
    assert!(
        aside.contains(&own),
        "its cluster's state is set aside, not deleted: {aside:?}"
    );
    eprintln!(
        "a node that formed cluster {own} alone heard the 4 others' cluster {theirs} once its \
         network healed: all 5 in one cluster, 3 managers, leader {leader}, {joined:?} after \
         the heal"
    );
}

/// The cluster id `node` belongs to, as `shoal cluster info` says.
fn cluster_id(cluster: &NodeCluster, node: &str) -> Option<String> {
    let info = cluster.cluster_info(node)?;
    info.get("cluster_id")?.as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_and_four_nodes_that_know_only_its_address_form_one_cluster() {
    init_logging();
    let mut cluster = NodeCluster::new("join");
    let started = Instant::now();
    let (join, since_agents) = start_joined_cluster(&mut cluster, 5).await;
    eprintln!(
        "1 seed + 4 nodes with --join {join} and no mDNS: one cluster, 3 managers, every node \
         lists all 5 ready, {:?} after the seed started, {since_agents:?} after the last agent \
         started",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_tasks_run_in_other_engines() {
    init_logging();
    let mut cluster = NodeCluster::new("worker");
    let nodes = cluster.start_nodes(5, &[], &[]);
    until_formed(&cluster, 5).await;
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
    let spread: BTreeMap<&String, usize> = placed.iter().map(|(n, t)| (n, t.len())).collect();
    eprintln!("10 replicas by node engine: {spread:?}");
    assert_eq!(placed.len(), 5, "10 replicas spread over all 5 nodes");

    // A worker with tasks, killed like a machine losing power.
    let rows = cluster.node_ls(&nodes[0]).expect("node ls");
    let victim = rows
        .iter()
        .find(|r| r.role == "worker" && placed.contains_key(&r.hostname))
        .map(|r| r.hostname.clone())
        .expect("a worker that runs tasks");
    // A blip shorter than the down grace (2 s): the worker frozen for 1 s restarts nothing,
    // there or anywhere.
    cluster.pause(&victim);
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.unpause(&victim);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let tasks = cluster.service_ps(&nodes[0], "web").expect("service ps");
    let after_blip = exact(&cluster, &nodes, "web", &tasks, 10).expect("10 still run");
    assert_eq!(
        after_blip, placed,
        "a 1 s pause of {victim} restarted or moved tasks"
    );
    let rows = cluster.node_ls(&nodes[0]).expect("node ls");
    assert!(
        rows.iter().all(|r| r.state == "ready"),
        "a 1 s pause marked a node down: {rows:?}"
    );
    eprintln!("worker {victim} paused for 1 s: no task restarted or moved, every node ready");

    let survivors: Vec<String> = nodes.iter().filter(|n| **n != victim).cloned().collect();
    let lost = placed[&victim].len();
    let (killed, killed_at) = (Instant::now(), SystemTime::now());
    cluster.kill(&victim);
    let moved = cluster
        .until(
            "the dead worker's tasks run elsewhere, 10 in all",
            Duration::from_secs(60),
            |c| {
                let tasks = c.service_ps(&survivors[0], "web").ok_or("no answer")?;
                exact(c, &survivors, "web", &tasks, 10)
            },
        )
        .await;
    let elapsed = killed.elapsed();
    // When the replacements started, as their engines say (the polls above add their own lag).
    let before: BTreeSet<&String> = placed.values().flatten().collect();
    let last_started = cluster
        .on_each(&survivors, |n| cluster.engine_task_starts(n, "web"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|(task, _)| !before.contains(task))
        .map(|(_, at)| at)
        .max()
        .and_then(|at| at.duration_since(killed_at).ok());
    eprintln!(
        "worker {victim} killed: its {lost} tasks run elsewhere, the last one started in its \
         engine {last_started:?} after the kill (seen by the test's polls {elapsed:?} after); by \
         node: {:?}",
        moved
            .iter()
            .map(|(n, t)| (n, t.len()))
            .collect::<BTreeMap<_, _>>()
    );
    let rows = cluster.node_ls(&survivors[0]).expect("node ls");
    let dead = rows.iter().find(|r| r.hostname == victim).expect("listed");
    assert_eq!(dead.state, "down", "the killed worker is down");
    // Still exactly 10 a moment later: nothing surplus started.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tasks = cluster
        .service_ps(&survivors[0], "web")
        .expect("service ps");
    exact(&cluster, &survivors, "web", &tasks, 10).expect("still exactly 10");
}

/// A user who writes through `node` from `since` on: creates services of no replicas
/// (`probe-NODE-LIMIT-0`, `-1`, ...), each attempt given up after `attempt_limit`, until one is
/// acknowledged (at most 60 attempts, 60 s). Returns how long after `since` that was, how long
/// the first attempt took, and how many attempts failed before.
fn first_acknowledged_write(
    cluster: &NodeCluster,
    node: &str,
    since: Instant,
    attempt_limit: Duration,
) -> (Duration, Duration, u32) {
    let index = cluster.nodes().iter().position(|n| n == node).unwrap_or(0);
    let mut first_attempt = None;
    for attempt in 0..60 {
        let name = format!("probe-{index}-{}-{attempt}", attempt_limit.as_secs());
        let started = Instant::now();
        let created = cluster.exec_within(
            node,
            attempt_limit,
            &[
                "shoal",
                "service",
                "create",
                "--detach",
                "--name",
                &name,
                "--replicas",
                "0",
                TEST_IMAGE,
                "sleep",
                "1",
            ],
        );
        let first = *first_attempt.get_or_insert(started.elapsed());
        if created.status.success() {
            return (since.elapsed(), first, attempt);
        }
        if since.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no write acknowledged through {node} within 60 s of the leader's death");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_reports_every_task_as_it_runs() {
    init_logging();
    let mut cluster = NodeCluster::new("leader");
    let nodes = cluster.start_nodes(5, &[], &[]);
    let cluster = Arc::new(cluster);
    until_formed(&cluster, 5).await;
    create_service(&cluster, &nodes[0], "web", 10);
    cluster
        .until(
            "10 tasks in the nodes' engines",
            Duration::from_secs(30),
            |c| {
                let tasks = c.service_ps(&nodes[0], "web").ok_or("no answer")?;
                exact(c, &nodes, "web", &tasks, 10)
            },
        )
        .await;
    // The leader now (it may have changed since the cluster formed), and a worker.
    let leader_id = cluster
        .until(
            "every node names one leader",
            Duration::from_secs(30),
            |c| one_leader(c, &nodes),
        )
        .await;
    let leader = cluster
        .node_named(&leader_id)
        .expect("the leader is a node");
    let others: Vec<String> = nodes.iter().filter(|n| **n != leader).cloned().collect();
    let rows = cluster.node_ls(&others[0]).expect("node ls");
    let with_role = |role: &str| {
        rows.iter()
            .find(|r| r.role == role && r.hostname != leader)
            .map(|r| r.hostname.clone())
            .unwrap_or_else(|| panic!("a {role} besides the leader"))
    };
    let (worker, follower) = (with_role("worker"), with_role("manager"));

    // Scale up, then kill the leader while the new tasks start, as in the issue.
    let scaled = cluster.shoal(&others[0], &["service", "scale", "--detach", "web=14"]);
    assert!(
        scaled.status.success(),
        "scale: {}",
        String::from_utf8_lossy(&scaled.stderr)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = SystemTime::now();
    let killed = Instant::now();
    cluster.kill(&leader);
    // Users write meanwhile: through a worker and through a manager (each command waited for),
    // and through a worker again, giving up on each command after 2 s and retrying.
    let writer = |node: &String, limit: u64| {
        let (cluster, node) = (Arc::clone(&cluster), node.clone());
        let limit = Duration::from_secs(limit);
        tokio::task::spawn_blocking(move || {
            first_acknowledged_write(&cluster, &node, killed, limit)
        })
    };
    let through_worker = writer(&worker, 30);
    let through_follower = writer(&follower, 30);
    let impatient = writer(&worker, 2);

    let (new_leader, elected_at) = cluster
        .until(
            "a survivor logs that it leads",
            Duration::from_secs(30),
            |c| {
                others
                    .iter()
                    .find_map(|n| {
                        let at = c.first_logged(n, "this agent is now the leader", killed_at)?;
                        Some((n.clone(), at))
                    })
                    .ok_or_else(|| "none yet".to_owned())
            },
        )
        .await;
    let elected = elected_at.duration_since(killed_at).unwrap_or_default();
    let answered = cluster
        .until(
            "`service ps` answers on the new leader",
            Duration::from_secs(30),
            |c| {
                c.service_ps(&new_leader, "web")
                    .map(|_| killed.elapsed())
                    .ok_or_else(|| "no answer".to_owned())
            },
        )
        .await;

    // Every container the survivors' engines run is reported running by the new leader.
    let mut stalled = String::new();
    let (truthful, observed) = cluster
        .until(
            "the new leader reports every running container as running",
            Duration::from_secs(30),
            |c| {
                let tasks = c.service_ps(&new_leader, "web").ok_or("no answer")?;
                let actual = engines(c, &others, "web")?;
                let reported = &running_by_node(&tasks);
                let unreported: Vec<&String> = actual
                    .iter()
                    .flat_map(|(node, ids)| {
                        ids.iter()
                            .filter(move |id| !reported.get(node).is_some_and(|r| r.contains(*id)))
                    })
                    .collect();
                if unreported.is_empty() {
                    return Ok((killed.elapsed(), summary(&tasks)));
                }
                let states: Vec<String> = tasks
                    .iter()
                    .filter(|t| unreported.contains(&&t.id))
                    .map(|t| format!("{} {:?} ({})", t.name, t.state, t.message))
                    .collect();
                stalled = format!(
                    "at {:?}: running in engines, not reported running: {states:?}",
                    killed.elapsed()
                );
                Err(stalled.clone())
            },
        )
        .await;
    let converged = cluster
        .until(
            "14 tasks run on the survivors, as reported",
            Duration::from_secs(60),
            |c| {
                let tasks = c.service_ps(&new_leader, "web").ok_or("no answer")?;
                exact(c, &others, "web", &tasks, 14)
            },
        )
        .await;
    let converged_after = killed.elapsed();
    let (by_worker, worker_first, _) = through_worker.await.expect("the writer thread");
    let (by_follower, follower_first, _) = through_follower.await.expect("the writer thread");
    let (by_retries, _, cut_off) = impatient.await.expect("the writer thread");
    eprintln!(
        "leader {leader} killed 300 ms after `service scale web=14`:\n  \
         new leader {new_leader} logs that it leads {elected:?} later;\n  \
         first answer of `service ps` on it {answered:?} after the kill;\n  \
         its statuses match the engines after {truthful:?} ({observed});\n  \
         14 running on the survivors after {converged_after:?}: {:?};\n  \
         a write sent at the kill through worker {worker} returned after {worker_first:?}, \
         acknowledged {by_worker:?} after the kill; through manager {follower}: {follower_first:?}, \
         acknowledged after {by_follower:?};\n  \
         writes through {worker} given up after 2 s and retried: acknowledged {by_retries:?} \
         after the kill ({cut_off} attempts failed before)",
        converged
            .iter()
            .map(|(n, t)| (n, t.len()))
            .collect::<BTreeMap<_, _>>()
    );
    if !stalled.is_empty() {
        eprintln!("  before that, the new leader showed {stalled}");
    }

    // The old leader's machine comes back: it rejoins under the new leader (which keeps its
    // lead), gets tasks again, and exactly 14 run across every engine, none twice.
    let restarted = Instant::now();
    cluster.start(&leader);
    let all = cluster.nodes().to_vec();
    let rejoined = cluster
        .until(
            "the old leader is ready again under the new one, 14 tasks in all",
            Duration::from_secs(90),
            |c| {
                let rows = c.node_ls(&new_leader).ok_or("no answer")?;
                whole_cluster(&rows, 5, 3)?;
                one_leader(c, &all)?;
                let tasks = c.service_ps(&new_leader, "web").ok_or("no answer")?;
                exact(c, &all, "web", &tasks, 14)
            },
        )
        .await;
    // One `cluster info` answer may be an error while the restarted node settles: ask again.
    cluster
        .until(
            "the restarted node follows the new leader",
            Duration::from_secs(30),
            |c| {
                let theirs = c
                    .leader_seen_by(&new_leader)
                    .ok_or("the new leader: no answer")?;
                let its = c
                    .leader_seen_by(&leader)
                    .ok_or_else(|| c.shoal_error(&leader, &["cluster", "info"]))?;
                if its == theirs {
                    Ok(())
                } else {
                    Err(format!("it follows {its}, the others {theirs}"))
                }
            },
        )
        .await;
    eprintln!(
        "old leader {leader} restarted: ready under the new leader, exactly 14 running with no \
         duplicate, {:?} after its start; by node: {:?}",
        restarted.elapsed(),
        rejoined
            .iter()
            .map(|(n, t)| (n, t.len()))
            .collect::<BTreeMap<_, _>>()
    );
}

/// Whether `from` reaches `to` on the cluster network (3 pings, one must answer in 1 s).
fn reaches(cluster: &NodeCluster, from: &str, to: &str) -> bool {
    let ip = cluster.ip(to);
    let ping = cluster.exec(from, &["ping", "-c", "3", "-i", "0.2", "-W", "1", &ip]);
    ping.status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_cuts_pauses_and_heals_nodes() {
    init_logging();
    let mut cluster = NodeCluster::new("faults");
    let nodes = cluster.start_nodes(3, &[], &[]);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let id = cluster.wait_node_id(c, FORMATION_LIMIT).await;
    assert!(reaches(&cluster, a, b) && reaches(&cluster, a, c));

    cluster.isolate(c);
    assert!(!reaches(&cluster, a, c) && !reaches(&cluster, c, b));
    assert!(reaches(&cluster, a, b), "the others still talk");
    cluster.heal_all();
    assert!(reaches(&cluster, a, c));

    cluster.partition(&[a], &[b, c]);
    assert!(!reaches(&cluster, a, b) && !reaches(&cluster, c, a));
    assert!(reaches(&cluster, b, c));
    cluster.heal_all();
    assert!(reaches(&cluster, a, b));

    cluster.lose_packets(b, 100);
    assert!(!reaches(&cluster, a, b));
    cluster.heal(b);
    assert!(reaches(&cluster, a, b));
    match cluster.slow_link(b, Duration::from_millis(50), Duration::ZERO, 0) {
        Ok(()) => eprintln!("netem: 50 ms on {b}"),
        Err(why) => eprintln!("netem unavailable here: {why}"),
    }
    cluster.heal(b);

    cluster.pause(b);
    assert!(!cluster.exec(b, &["true"]).status.success(), "paused");
    cluster.unpause(b);
    assert!(cluster.exec(b, &["true"]).status.success(), "unpaused");

    // Killed and started again: same address, same identity, its engine back.
    cluster.kill(c);
    assert!(!reaches(&cluster, a, c));
    let restarted_at = SystemTime::now();
    cluster.start(c);
    cluster
        .until("the restarted node's agent runs", FORMATION_LIMIT, |cl| {
            let started = cl.agent_started_at(c).ok_or("not yet")?;
            (started >= restarted_at)
                .then_some(())
                .ok_or_else(|| "not yet".to_owned())
        })
        .await;
    assert!(reaches(&cluster, a, c));
    assert_eq!(cluster.node_id(c), Some(id), "the same identity");
    assert!(
        cluster.engine_tasks(c, "none").is_some(),
        "its engine answers"
    );
}
