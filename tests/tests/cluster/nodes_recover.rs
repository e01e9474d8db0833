//! Quorum lost for good, on five machines with their own engines that joined a seed (see
//! `shoal_tests::nodes`): two of
//! the three managers die and do not come back, so nothing can be written; the operator stops
//! the surviving manager, runs `shoal cluster recover` on its disk and starts it again. It
//! comes back as the leader of the same cluster with its services, autopilot makes the live
//! workers managers again, and every service runs its full count on the live nodes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use shoal_tests::nodes::NodeCluster;
use shoal_tests::nodes::views::*;
use shoal_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_recover_brings_back_a_cluster_that_lost_its_quorum() {
    init_logging();
    let mut cluster = NodeCluster::new("recover");
    start_joined_cluster(&mut cluster, 5).await;
    let nodes = cluster.nodes().to_vec();
    create_service(&cluster, &nodes[0], "web", 6);
    cluster
        .until("6 tasks in the engines", Duration::from_secs(30), |c| {
            let tasks = c.service_ps(&nodes[0], "web").ok_or("no answer")?;
            exact(c, &nodes, "web", &tasks, 6)
        })
        .await;
    let rows = cluster.node_ls(&nodes[0]).expect("node ls");
    let managers: Vec<String> = rows
        .iter()
        .filter(|r| r.role == "manager")
        .map(|r| r.hostname.clone())
        .collect();
    assert_eq!(managers.len(), 3, "{rows:?}");
    let (survivor, dead) = (managers[0].clone(), &managers[1..]);
    let alive: Vec<String> = nodes
        .iter()
        .filter(|n| !dead.contains(n))
        .cloned()
        .collect();
    for node in dead {
        cluster.kill(node);
    }
    // No quorum: a write through the survivor is refused (bounded), not acknowledged.
    let refused = cluster.shoal(&survivor, &["service", "scale", "--detach", "web=7"]);
    assert!(
        !refused.status.success(),
        "a write was acknowledged without a quorum"
    );
    eprintln!(
        "2 of 3 managers gone: a write through {survivor} fails: {}",
        String::from_utf8_lossy(&refused.stderr).trim()
    );

    let recovering = Instant::now();
    cluster.kill(&survivor);
    let recovered = cluster.shoal_offline(&survivor, &["cluster", "recover"]);
    assert!(
        recovered.status.success(),
        "shoal cluster recover: {}{}",
        String::from_utf8_lossy(&recovered.stdout),
        String::from_utf8_lossy(&recovered.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&recovered.stdout).trim());
    let restarted = SystemTime::now();
    cluster.start(&survivor);
    cluster
        .until("the survivor's agent runs again", FORMATION_LIMIT, |c| {
            let started = c.agent_started_at(&survivor).ok_or("not yet")?;
            (started >= restarted)
                .then_some(())
                .ok_or_else(|| "not yet".to_owned())
        })
        .await;
    let survivor_id = cluster.node_id(&survivor).expect("the survivor's identity");
    let back = cluster
        .until(
            "the survivor leads, 3 live managers, 6 tasks on the live nodes",
            Duration::from_secs(120),
            |c| {
                let leader = one_leader(c, &alive)?;
                if leader != survivor_id {
                    return Err(format!("leader {leader}, not the survivor"));
                }
                let rows = c.node_ls(&survivor).ok_or("no answer")?;
                let live_managers = rows
                    .iter()
                    .filter(|r| r.role == "manager" && r.state == "ready")
                    .count();
                if live_managers != 3 {
                    return Err(format!("{live_managers} live managers: {rows:?}"));
                }
                let tasks = c.service_ps(&survivor, "web").ok_or("no answer")?;
                exact(c, &alive, "web", &tasks, 6)
            },
        )
        .await;
    let scaled = cluster.shoal(&alive[0], &["service", "scale", "web=7"]);
    assert!(
        scaled.status.success(),
        "writes after recovery: {}",
        String::from_utf8_lossy(&scaled.stderr)
    );
    eprintln!(
        "recovered: {survivor} leads again with 3 live managers and 6 tasks on the live nodes \
         {:?} after it was stopped for recovery; by node: {:?}",
        recovering.elapsed(),
        back.iter()
            .map(|(n, t)| (n, t.len()))
            .collect::<BTreeMap<_, _>>()
    );
}
