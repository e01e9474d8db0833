//! Roles and maintenance on a closed cluster of machines with their own engines (see
//! `shoal_tests::nodes`): four nodes with the manager token and one with the worker token join
//! a seed; an agent without the token is kept out; the worker-token node runs tasks but never
//! becomes a manager; drained, its tasks move to the others' engines; a manager that dies for
//! good is replaced by autopilot with the one eligible worker, so that three managers run again.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use shoal_tests::nodes::views::*;
use shoal_tests::nodes::{NODE_IMAGE, NodeCluster};
use shoal_tests::*;

/// A new cluster secret's tokens, `(manager, worker)`, made by `shoal cluster token --new -q`
/// in a throwaway node container.
fn new_tokens() -> (String, String) {
    let output = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--pull",
            "never",
            "--entrypoint",
            "/usr/local/bin/shoal",
            NODE_IMAGE,
            "cluster",
            "token",
            "--new",
            "-q",
        ])
        .output()
        .expect("docker run");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match (lines.next(), lines.next()) {
        (Some(manager), Some(worker)) => (manager.to_owned(), worker.to_owned()),
        _ => panic!("no tokens from `shoal cluster token --new -q`: {text}"),
    }
}

/// The role `node` has in `viewer`'s `node ls`, by hostname.
fn role_of(cluster: &NodeCluster, viewer: &str, node: &str) -> Option<String> {
    let rows = cluster.node_ls(viewer)?;
    rows.into_iter()
        .find(|r| r.hostname == node)
        .map(|r| format!("{} {} {}", r.role, r.state, r.availability))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_cluster_keeps_roles_drains_and_replaces_a_dead_manager() {
    init_logging();
    let mut cluster = NodeCluster::new("roles");
    let (manager_token, worker_token) = new_tokens();
    let managers_env = [("SHOAL_TOKEN", manager_token.as_str())];
    let seed = cluster.start_node(&managers_env, &["--no-mdns"]);
    cluster.wait_node_id(&seed, FORMATION_LIMIT).await;
    let join = cluster.join_addr(&seed).expect("the seed's address");
    let joined = ["--no-mdns", "--join", &join];
    for _ in 0..3 {
        cluster.start_node(&managers_env, &joined);
    }
    let worker_only = cluster.start_node(&[("SHOAL_TOKEN", worker_token.as_str())], &joined);
    until_formed(&cluster, 5).await;
    let members = cluster.nodes().to_vec();
    let outsider = cluster.start_node(&[], &joined);

    create_service(&cluster, &seed, "web", 10);
    cluster
        .until("10 tasks in the engines", Duration::from_secs(30), |c| {
            let tasks = c.service_ps(&seed, "web").ok_or("no answer")?;
            exact(c, &members, "web", &tasks, 10)
        })
        .await;
    let role = role_of(&cluster, &seed, &worker_only).expect("listed");
    assert!(role.starts_with("worker"), "{worker_only}: {role}");

    // Drained, the worker-token node's tasks move to the other engines.
    let drained_at = Instant::now();
    let drain = cluster.shoal(
        &seed,
        &["node", "update", "--availability", "drain", &worker_only],
    );
    assert!(
        drain.status.success(),
        "drain: {}",
        String::from_utf8_lossy(&drain.stderr)
    );
    let others: Vec<String> = members
        .iter()
        .filter(|n| **n != worker_only)
        .cloned()
        .collect();
    let moved = cluster
        .until(
            "the drained node's tasks run elsewhere",
            Duration::from_secs(60),
            |c| {
                let tasks = c.service_ps(&seed, "web").ok_or("no answer")?;
                let placed = exact(c, &members, "web", &tasks, 10)?;
                if placed.contains_key(&worker_only) {
                    return Err(format!("{worker_only} still runs tasks"));
                }
                Ok(placed)
            },
        )
        .await;
    let drained_after = drained_at.elapsed();

    // A manager (not the seed we ask through) dies for good: autopilot gives its seat to the
    // one eligible node left, the manager-token worker; never to the worker-token node.
    let rows = cluster.node_ls(&seed).expect("node ls");
    let victim = rows
        .iter()
        .find(|r| r.role == "manager" && r.hostname != seed)
        .map(|r| r.hostname.clone())
        .expect("a second manager");
    let heir = rows
        .iter()
        .find(|r| r.role == "worker" && r.hostname != worker_only)
        .map(|r| r.hostname.clone())
        .expect("an eligible worker");
    let killed_at = Instant::now();
    cluster.kill(&victim);
    let live: Vec<String> = others.iter().filter(|n| **n != victim).cloned().collect();
    cluster
        .until(
            "three live managers again, the heir among them",
            Duration::from_secs(60),
            |c| {
                let rows = c.node_ls(&seed).ok_or("no answer")?;
                let live_managers: Vec<&str> = rows
                    .iter()
                    .filter(|r| r.role == "manager" && r.state == "ready")
                    .map(|r| r.hostname.as_str())
                    .collect();
                (live_managers.len() == 3 && live_managers.contains(&heir.as_str()))
                    .then_some(())
                    .ok_or_else(|| format!("live managers: {live_managers:?}"))
            },
        )
        .await;
    let replaced_after = killed_at.elapsed();
    cluster
        .until("10 tasks on the live nodes", Duration::from_secs(60), |c| {
            let tasks = c.service_ps(&seed, "web").ok_or("no answer")?;
            exact(c, &live, "web", &tasks, 10)
        })
        .await;
    let role = role_of(&cluster, &seed, &worker_only).expect("listed");
    assert!(role.starts_with("worker"), "{worker_only}: {role}");

    // The agent without the token never got in.
    let listed = cluster.node_ls(&seed).expect("node ls");
    assert!(
        listed.iter().all(|r| r.hostname != outsider),
        "an agent without the token joined: {listed:?}"
    );
    let seen = cluster.node_ls(&outsider).unwrap_or_default();
    assert!(
        seen.iter().all(|r| !members.contains(&r.hostname)),
        "the outsider sees the cluster's nodes: {seen:?}\n{}",
        cluster.logs(&outsider, 20)
    );
    // Given --join, it formed no cluster of its own, and says what to check.
    let logged = |needle: &str| {
        cluster
            .first_logged(&outsider, needle, SystemTime::UNIX_EPOCH)
            .is_some()
    };
    let formed = logged("initialising a new cluster");
    let says_why = logged("hold its token");
    assert!(
        !formed && says_why,
        "the outsider formed a cluster of its own ({formed}) or does not say why it is not in \
         ({says_why}):\n{}",
        cluster.logs(&outsider, 20)
    );
    eprintln!(
        "closed cluster of 5 (4 manager tokens, 1 worker token): {worker_only} drained, its tasks \
         run elsewhere after {drained_after:?} ({:?}); manager {victim} killed, autopilot made \
         {heir} a manager {replaced_after:?} later; {worker_only} stayed a worker; {outsider} \
         without the token never listed",
        moved
            .iter()
            .map(|(n, t)| (n, t.len()))
            .collect::<BTreeMap<_, _>>()
    );
}
