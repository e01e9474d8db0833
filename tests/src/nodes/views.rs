//! What a test reads off a [`NodeCluster`]: whether it formed, its one leader, what its
//! managers report against what the nodes' own engines run, and a service created as a user
//! would.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use shoal_agent::control::views::{NodeRow, TaskRow};
use shoal_scheduler::{DesiredState, TaskState};

use super::NodeCluster;
use crate::TEST_IMAGE;

/// How long a cluster of 5 may take to form (the engines boot first).
pub const FORMATION_LIMIT: Duration = Duration::from_secs(90);

/// Whether `rows` show `n` ready nodes, `managers` of them managers.
pub fn whole_cluster(rows: &[NodeRow], n: usize, managers: usize) -> Result<(), String> {
    let ready = rows.iter().filter(|r| r.state == "ready").count();
    let managing = rows.iter().filter(|r| r.role == "manager").count();
    if rows.len() == n && ready == n && managing == managers {
        Ok(())
    } else {
        Err(format!(
            "{} nodes, {ready} ready, {managing} managers",
            rows.len()
        ))
    }
}

/// Waits until every node lists `n` ready nodes with 3 managers and names the same leader;
/// returns that leader's node id and how long it took after the last agent started (its
/// engine ready, it printed its id, as the engine's log timestamps say).
pub async fn until_formed(cluster: &NodeCluster, n: usize) -> (String, Duration) {
    let leader = cluster
        .until(
            &format!("every node lists {n} ready nodes, 3 managers, one leader"),
            // Every node beyond five boots one more engine on the same cores.
            FORMATION_LIMIT + Duration::from_secs(5 * n.saturating_sub(5) as u64),
            |c| {
                let nodes = c.nodes().to_vec();
                let views = c.on_each(&nodes, |node| {
                    let rows = c.node_ls(node).ok_or("no answer")?;
                    whole_cluster(&rows, n, 3)
                });
                for (node, view) in nodes.iter().zip(views) {
                    view.map_err(|seen| format!("{node}: {seen}"))?;
                }
                one_leader(c, &nodes)
            },
        )
        .await;
    let formed = SystemTime::now();
    let nodes = cluster.nodes().to_vec();
    let yielded: Vec<&String> = nodes
        .iter()
        .zip(cluster.on_each(&nodes, |node| {
            cluster.first_logged(node, "leaving its empty cluster", SystemTime::UNIX_EPOCH)
        }))
        .filter_map(|(node, at)| at.map(|_| node))
        .collect();
    if !yielded.is_empty() {
        eprintln!("formation: {yielded:?} had formed a cluster alone, then joined the others'");
    }
    let last_agent = cluster
        .on_each(&nodes, |node| cluster.agent_started_at(node))
        .into_iter()
        .flatten()
        .max()
        .expect("the agents started");
    let since = formed.duration_since(last_agent).unwrap_or_default();
    (leader, since)
}

/// Starts `count` nodes the cloud way, a seed with mDNS off and the others with `--join` its
/// address and mDNS off, and waits until they formed one cluster. Returns the seed's address
/// and how long the cluster took after the last agent started. Their forming does not depend
/// on every node's multicast questions being answered in time, as the zero-config path does.
pub async fn start_joined_cluster(cluster: &mut NodeCluster, count: usize) -> (String, Duration) {
    let seed = cluster.start_node(&[], &["--no-mdns"]);
    cluster.wait_node_id(&seed, FORMATION_LIMIT).await;
    let join = cluster.join_addr(&seed).expect("the seed's address");
    for _ in 1..count {
        cluster.start_node(&[], &["--no-mdns", "--join", &join]);
    }
    let (_, since_agents) = until_formed(cluster, count).await;
    (join, since_agents)
}

/// The leader's node id, if every one of `nodes` names the same.
pub fn one_leader(cluster: &NodeCluster, nodes: &[String]) -> Result<String, String> {
    let seen = cluster.on_each(nodes, |node| cluster.leader_seen_by(node));
    let leaders: BTreeSet<&String> = seen.iter().flatten().collect();
    match (leaders.len(), seen.iter().all(Option::is_some)) {
        (1, true) => Ok(leaders.into_iter().next().expect("one").clone()),
        _ => Err(format!("leaders seen: {seen:?}")),
    }
}

/// Creates `name` with `replicas` tasks of the test image through `node` and waits (the
/// CLI's own wait) until they run. Its tasks (`sleep`, which ignores SIGTERM) get a stop
/// grace of 1 s, so that a surplus task stops within a second instead of the default 10 s.
pub fn create_service(cluster: &NodeCluster, node: &str, name: &str, replicas: u32) {
    let replicas = replicas.to_string();
    let created = cluster.exec_within(
        node,
        Duration::from_secs(75),
        &[
            "shoal",
            "service",
            "create",
            "--name",
            name,
            "--replicas",
            &replicas,
            "--timeout",
            "60s",
            "--stop-grace-period",
            "1s",
            TEST_IMAGE,
            "sleep",
            "3600",
        ],
    );
    let tail = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    };
    assert!(
        created.status.success(),
        "service create through {node} ({}): {}\n{}\n{}",
        created.status,
        tail(&created.stdout),
        tail(&created.stderr),
        cluster.logs(node, 30)
    );
}

/// The tasks that should run and do, by hostname (= node container).
pub fn running_by_node(tasks: &[TaskRow]) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_node: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for task in tasks {
        if task.desired == DesiredState::Running && task.state == TaskState::Running {
            by_node
                .entry(task.node.clone())
                .or_default()
                .insert(task.id.clone());
        }
    }
    by_node
}

/// The running task containers of `service` in each of `nodes`' engines, by node.
pub fn engines(
    cluster: &NodeCluster,
    nodes: &[String],
    service: &str,
) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let seen = cluster.on_each(nodes, |node| cluster.engine_tasks(node, service));
    let mut by_node = BTreeMap::new();
    for (node, tasks) in nodes.iter().zip(seen) {
        let tasks = tasks.ok_or_else(|| format!("the engine of {node} does not answer"))?;
        if !tasks.is_empty() {
            by_node.insert(node.clone(), tasks.into_iter().collect());
        }
    }
    Ok(by_node)
}

/// Whether what `tasks` (one manager's view) says runs is exactly what the engines of `nodes`
/// run, `replicas` tasks in all.
pub fn exact(
    cluster: &NodeCluster,
    nodes: &[String],
    service: &str,
    tasks: &[TaskRow],
    replicas: usize,
) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let reported = running_by_node(tasks);
    let total: usize = reported.values().map(BTreeSet::len).sum();
    if total != replicas {
        return Err(format!("{total} running of {replicas}: {}", summary(tasks)));
    }
    let actual = engines(cluster, nodes, service)?;
    if actual != reported {
        return Err(format!("reported {reported:?}, engines run {actual:?}"));
    }
    Ok(actual)
}

/// The count of the tasks meant to run, by observed state (`running: 8, starting: 2`).
pub fn summary(tasks: &[TaskRow]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks.iter().filter(|t| t.desired == DesiredState::Running) {
        *counts.entry(format!("{:?}", task.state)).or_default() += 1;
    }
    format!("{counts:?}")
}
