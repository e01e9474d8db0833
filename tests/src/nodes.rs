//! Machines in containers: each node of a [`NodeCluster`] is a container of the image
//! `shoal-test/node:latest` (built by `tests/images/build-node-image.sh` from this workspace's
//! optimised `shoal`), with a Docker engine of its own inside it that runs that node's tasks,
//! apart from the other nodes', as separate machines do. The test image
//! (`shoal-test/busybox:latest`) is loaded into every node's engine when it boots.
//!
//! A [`NodeCluster`] owns, and removes when dropped (also when a test panics), everything it
//! made: the node containers (killed first, then removed), the engine and data volumes of each
//! node, and the Docker network they share. Each of them is labelled with the creating process's id; when
//! that process dies without dropping its cluster (killed, interrupted), a watcher process the
//! cluster started removes them, and the next test process removes whatever is still left.
//!
//! Nodes are started with the flags a user would give (none on a LAN, `--join` with
//! `--no-mdns` in a cloud, a token through `SHOAL_TOKEN`), the CLI runs inside a node
//! (`docker exec NODE shoal ...`), and faults are those of machines and networks: kill (-9),
//! pause, restart, cut a node off, partition sets of nodes (iptables inside the nodes), slow a
//! link or lose packets (tc netem, iptables), heal.

pub mod views;

use std::collections::BTreeMap;
use std::process::{Command as Process, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use shoal_agent::control::views::{NodeRow, TaskRow};

use crate::docker_cli::{docker, docker_ok, orphaned, release_shoal, workspace};

/// The image of a node, with its own Docker engine.
pub const NODE_IMAGE: &str = "shoal-test/node:latest";
/// The label on every container, network and volume of the harness: the creating process's id.
const OWNER_LABEL: &str = "io.shoal.test.nodes.owner";
/// The label on every object of one cluster: its network's name.
const CLUSTER_LABEL: &str = "io.shoal.test.nodes.cluster";
/// The port every agent listens on (the agent's default).
const AGENT_PORT: u16 = 7946;
/// The iptables chain, inside a node, that holds the faults the harness injects.
const FAULT_CHAIN: &str = "SHOAL-FAULTS";
/// How long one command inside a node may take before the harness gives up on it.
const EXEC_LIMIT: Duration = Duration::from_secs(30);

/// Builds the node image (and the optimised `shoal` and the test image it needs) once per test
/// process, and removes what the harnesses of dead test processes left behind.
pub fn ensure_node_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        crate::ensure_test_image();
        let binary = release_shoal();
        let script = workspace().join("tests/images/build-node-image.sh");
        let status = Process::new("bash")
            .arg(&script)
            .arg(&binary)
            .status()
            .expect("run the node image script");
        assert!(status.success(), "building {NODE_IMAGE} failed");
        remove_leftovers();
    });
}

/// Removes the containers, networks and volumes of harnesses whose process no longer runs.
fn remove_leftovers() {
    let containers = orphaned("container", OWNER_LABEL);
    remove_containers(&containers);
    for network in orphaned("network", OWNER_LABEL) {
        let _ = docker(&["network", "rm", &network]);
    }
    for volume in orphaned("volume", OWNER_LABEL) {
        let _ = docker(&["volume", "rm", "-f", &volume]);
    }
}

/// Kills `containers` (SIGKILL), then removes them with their anonymous volumes.
fn remove_containers(containers: &[String]) {
    if containers.is_empty() {
        return;
    }
    let ids: Vec<&str> = containers.iter().map(String::as_str).collect();
    // A frozen container would hold the engine's kill until it thaws.
    for container in &ids {
        thaw(container);
    }
    let _ = bounded(CLEANUP_LIMIT, "docker", &[&["kill"][..], &ids].concat());
    let _ = bounded(
        CLEANUP_LIMIT,
        "docker",
        &[&["rm", "-f", "-v"][..], &ids].concat(),
    );
}

/// How long removing a harness's containers may take.
const CLEANUP_LIMIT: Duration = Duration::from_secs(120);

/// Runs `program ARGS` on this machine, killed when it outlasts `limit`.
/// How long a fault operation on a node's container (pause, unpause) may take.
const FAULT_LIMIT: Duration = Duration::from_secs(20);

/// Thaws the freezer cgroup of container `name_or_id` directly (cgroup v1 or v2, cgroupfs or systemd
/// driver), for a freeze the engine cannot undo. `docker ps` answers while every other engine
/// call on that container waits, so it gives the id.
fn thaw(name_or_id: &str) {
    let ps = |filter: String| {
        let listed = bounded(
            FAULT_LIMIT,
            "docker",
            &["ps", "-aq", "--no-trunc", "--filter", &filter],
        );
        String::from_utf8_lossy(&listed.stdout).trim().to_owned()
    };
    let mut id = ps(format!("name=^/{name_or_id}$"));
    if id.is_empty() {
        id = ps(format!("id={name_or_id}"));
    }
    if id.is_empty() || id.contains('\n') {
        return;
    }
    let candidates = [
        (
            format!("/sys/fs/cgroup/freezer/docker/{id}/freezer.state"),
            "THAWED",
        ),
        (
            format!("/sys/fs/cgroup/freezer/system.slice/docker-{id}.scope/freezer.state"),
            "THAWED",
        ),
        (format!("/sys/fs/cgroup/docker/{id}/cgroup.freeze"), "0"),
        (
            format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/cgroup.freeze"),
            "0",
        ),
    ];
    for (path, value) in candidates {
        if std::path::Path::new(&path).exists() {
            let _ = std::fs::write(&path, value);
        }
    }
}

fn bounded(limit: Duration, program: &str, args: &[&str]) -> Output {
    Process::new("timeout")
        .args(["--kill-after=5", &format!("{}", limit.as_secs().max(1))])
        .arg(program)
        .args(args)
        .output()
        .expect("timeout(1) runs")
}

/// The options that give a node what its engine needs.
///
/// Not `--privileged`: where the machine's capability bounding set lacks one capability (as
/// in some VMs), runc refuses to start a privileged container at all. Every capability the
/// engine has, no seccomp or AppArmor profile, unmasked `/proc` paths and every device instead;
/// the node's entrypoint remounts its cgroup hierarchies writable.
fn engine_options() -> Vec<String> {
    let mut options: Vec<String> = [
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "--security-opt",
        "systempaths=unconfined",
        "--device-cgroup-rule",
        "a *:* rwm",
        "--cap-add",
        "ALL",
    ]
    .map(str::to_owned)
    .to_vec();
    for missing in missing_capabilities() {
        options.push("--cap-drop".to_owned());
        options.push(missing.to_owned());
    }
    options
}

/// Capabilities that Docker grants with `ALL` but this machine's bounding set lacks.
fn missing_capabilities() -> Vec<&'static str> {
    // The capabilities by number, as far as Docker 20.10 knows them.
    const NAMES: &str = "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP \
        LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK \
        IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN \
        SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE \
        AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND \
        AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE";
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(u64::MAX);
    NAMES
        .split_whitespace()
        .enumerate()
        .filter(|(bit, _)| bounding & (1 << bit) == 0)
        .map(|(_, name)| name)
        .collect()
}

/// A test cluster of machines (containers with an engine each) on a Docker network of its own.
pub struct NodeCluster {
    network: String,
    subnet: Subnet,
    nodes: Vec<String>,
    volumes: Vec<String>,
    ids: Mutex<BTreeMap<String, String>>,
    watcher: Option<std::process::Child>,
}

/// An IPv4 subnet of prefix length 24 or shorter, as the network's IPAM gives it.
#[derive(Clone, Copy)]
struct Subnet {
    base: [u8; 4],
    prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/len`.
    fn parse(text: &str) -> Option<Subnet> {
        let (addr, prefix) = text.split_once('/')?;
        let octets: Vec<u8> = addr.split('.').filter_map(|o| o.parse().ok()).collect();
        let base: [u8; 4] = octets.try_into().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        (prefix <= 24).then_some(Subnet { base, prefix })
    }

    /// The address of the `index`-th node: `.10`, `.11`, ... in the subnet's last octet.
    fn node_ip(&self, index: usize) -> String {
        let [a, b, c, _] = self.base;
        let host = u8::try_from(10 + index).expect("fewer than 240 nodes");
        format!("{a}.{b}.{c}.{host}")
    }
}

impl NodeCluster {
    /// Creates the network `shoal-nc-<name>-<pid>`, its subnet fixed so that every node keeps
    /// its address across restarts, as a machine on a LAN keeps its lease.
    pub fn new(name: &str) -> NodeCluster {
        ensure_node_image();
        let network = format!("shoal-nc-{name}-{}", std::process::id());
        let _ = docker(&["network", "rm", &network]);
        let subnet = create_network(&network);
        let mut cluster = NodeCluster {
            network,
            subnet,
            nodes: Vec::new(),
            volumes: Vec::new(),
            ids: Mutex::new(BTreeMap::new()),
            watcher: None,
        };
        cluster.watcher = cluster.start_watcher();
        cluster
    }

    /// Labels that mark an object as this cluster's.
    fn labels(&self) -> [String; 4] {
        [
            "--label".to_owned(),
            format!("{OWNER_LABEL}={}", std::process::id()),
            "--label".to_owned(),
            format!("{CLUSTER_LABEL}={}", self.network),
        ]
    }

    /// Starts a watcher that removes this cluster's objects once this test process is gone
    /// without having dropped the cluster (killed, interrupted). It polls once a second for at
    /// most two hours, outside the test's process group, and is killed when the cluster drops.
    fn start_watcher(&self) -> Option<std::process::Child> {
        use std::os::unix::process::CommandExt;
        let filter = format!("label={CLUSTER_LABEL}={}", self.network);
        let script = format!(
            "i=0; while [ $i -lt 7200 ] && kill -0 {pid} 2>/dev/null; do sleep 1; i=$((i+1)); done; \
             ids=$(docker ps -aq --no-trunc --filter {filter}); \
             for id in $ids; do for f in /sys/fs/cgroup/freezer/docker/$id/freezer.state; do \
             [ -e \"$f\" ] && echo THAWED > \"$f\"; done; \
             f=/sys/fs/cgroup/docker/$id/cgroup.freeze; [ -e \"$f\" ] && echo 0 > \"$f\"; done; \
             [ -n \"$ids\" ] && timeout 120 docker kill $ids; \
             [ -n \"$ids\" ] && timeout 120 docker rm -f -v $ids; \
             docker network rm {network}; \
             vols=$(docker volume ls -q --filter {filter}); [ -n \"$vols\" ] && docker volume rm -f $vols",
            pid = std::process::id(),
            network = self.network,
        );
        Process::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok()
    }

    /// Starts a node: `shoal agent --pull never ARGS` (no argument is zero config) with `env`
    /// (`SHOAL_TOKEN` for a closed cluster), after its engine answers. Returns its container's
    /// name, which is also its hostname.
    pub fn start_node(&mut self, env: &[(&str, &str)], args: &[&str]) -> String {
        let index = self.nodes.len();
        let name = format!("{}-n{index}", self.network);
        let volume = format!("{name}-engine");
        let labels = self.labels();
        let mut create = vec!["volume", "create"];
        create.extend(labels.iter().map(String::as_str));
        create.push(&volume);
        docker_ok(&create);
        self.volumes.push(volume.clone());

        let data = format!("{name}-data");
        let mut create = vec!["volume", "create"];
        create.extend(labels.iter().map(String::as_str));
        create.push(&data);
        docker_ok(&create);
        self.volumes.push(data.clone());

        let ip = self.subnet.node_ip(index);
        let engine_volume = format!("{volume}:/var/lib/docker");
        let data_volume = format!("{data}:/var/lib/shoal");
        let options = engine_options();
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut run = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--hostname",
            &name,
            "--network",
            &self.network,
            "--ip",
            &ip,
            "--init",
            "-v",
            &engine_volume,
            "-v",
            &data_volume,
            "--pull",
            "never",
        ];
        run.extend(labels.iter().map(String::as_str));
        run.extend(options.iter().map(String::as_str));
        for pair in &env {
            run.extend(["-e", pair.as_str()]);
        }
        run.push(NODE_IMAGE);
        run.extend(args);
        self.nodes.push(name.clone());
        docker_ok(&run);
        name
    }

    /// Starts `count` nodes with the same `env` and `args`; returns their names.
    pub fn start_nodes(
        &mut self,
        count: usize,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Vec<String> {
        (0..count).map(|_| self.start_node(env, args)).collect()
    }

    /// The nodes' container names (= hostnames), in start order.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The name of the cluster's Docker network.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The node's address on the cluster network (fixed for its life).
    pub fn ip(&self, node: &str) -> String {
        self.subnet.node_ip(self.index(node))
    }

    /// The position of `node` in start order.
    fn index(&self, node: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n == node)
            .unwrap_or_else(|| panic!("{node} is not a node of {}", self.network))
    }

    /// The node id (PeerId) the agent of `node` printed when it started, once it did.
    pub fn node_id(&self, node: &str) -> Option<String> {
        let mut ids = self.ids.lock().expect("the id cache");
        if let Some(id) = ids.get(node) {
            return Some(id.clone());
        }
        let logs = docker(&["logs", node]);
        let id = String::from_utf8_lossy(&logs.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("shoal agent "))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)?;
        ids.insert(node.to_owned(), id.clone());
        Some(id)
    }

    /// When the agent of `node` last said it runs (its `shoal agent ID running` line, as the
    /// engine's log timestamps it), if it did.
    pub fn agent_started_at(&self, node: &str) -> Option<SystemTime> {
        self.logged(node, None)
            .into_iter()
            .filter(|(_, text)| text.starts_with("shoal agent "))
            .map(|(at, _)| at)
            .next_back()
    }

    /// When `node` first logged a line containing `needle` at or after `since`, if it did.
    pub fn first_logged(&self, node: &str, needle: &str, since: SystemTime) -> Option<SystemTime> {
        self.times_logged(node, needle, since).into_iter().next()
    }

    /// When `node` logged a line containing `needle`, at or after `since`, in order.
    pub fn times_logged(&self, node: &str, needle: &str, since: SystemTime) -> Vec<SystemTime> {
        self.logged(node, Some(since))
            .into_iter()
            .filter(|(at, text)| *at >= since && text.contains(needle))
            .map(|(at, _)| at)
            .collect()
    }

    /// The lines of `node`'s log (since `since`), each with the time the engine received it.
    fn logged(&self, node: &str, since: Option<SystemTime>) -> Vec<(SystemTime, String)> {
        let mut args = vec!["logs".to_owned(), "--timestamps".to_owned()];
        if let Some(since) = since {
            let unix = since
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            args.push(format!(
                "--since={}.{:09}",
                unix.as_secs(),
                unix.subsec_nanos()
            ));
        }
        args.push(node.to_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let logs = docker(&args);
        let both = [logs.stdout, logs.stderr].concat();
        String::from_utf8_lossy(&both)
            .lines()
            .filter_map(|line| line.split_once(' '))
            .filter_map(|(stamp, text)| Some((parse_rfc3339(stamp)?, text.to_owned())))
            .collect()
    }

    /// Waits (bounded) until the agent of `node` started, and returns its node id.
    pub async fn wait_node_id(&self, node: &str, limit: Duration) -> String {
        self.until(&format!("the agent of {node} starts"), limit, |c| {
            c.node_id(node)
                .ok_or_else(|| "no id printed yet".to_owned())
        })
        .await
    }

    /// The container of the node whose id is `id`, if it is one of this cluster's.
    pub fn node_named(&self, id: &str) -> Option<String> {
        self.nodes
            .iter()
            .find(|n| self.node_id(n).as_deref() == Some(id))
            .cloned()
    }

    /// What `--join` takes to reach `node`: `/ip4/IP/tcp/7946/p2p/ID` (once its agent started).
    pub fn join_addr(&self, node: &str) -> Option<String> {
        let id = self.node_id(node)?;
        Some(format!("/ip4/{}/tcp/{AGENT_PORT}/p2p/{id}", self.ip(node)))
    }

    /// Runs `ARGS` inside `node` (`docker exec`), bounded in time.
    pub fn exec(&self, node: &str, args: &[&str]) -> Output {
        self.exec_within(node, EXEC_LIMIT, args)
    }

    /// Runs `ARGS` inside `node`, given up (the `docker exec` client killed) after `limit`.
    pub fn exec_within(&self, node: &str, limit: Duration, args: &[&str]) -> Output {
        bounded(limit, "docker", &[&["exec", node][..], args].concat())
    }

    /// Runs the CLI inside `node`: `shoal ARGS`, as a user on that machine would.
    pub fn shoal(&self, node: &str, args: &[&str]) -> Output {
        self.exec(node, &[&["shoal"][..], args].concat())
    }

    /// Runs `shoal ARGS` on the disk of `node` while it is down, as an operator would on a
    /// stopped machine: in a throwaway container of the node image, with no network, that
    /// mounts the node's data volume (its `/var/lib/shoal`).
    pub fn shoal_offline(&self, node: &str, args: &[&str]) -> Output {
        let data = format!("{node}-data:/var/lib/shoal");
        let labels = self.labels();
        let mut run = vec!["run", "--rm", "--network", "none", "--pull", "never"];
        run.extend(labels.iter().map(String::as_str));
        run.extend([
            "-v",
            &data,
            "--entrypoint",
            "/usr/local/bin/shoal",
            NODE_IMAGE,
        ]);
        run.extend(args);
        bounded(EXEC_LIMIT, "docker", &run)
    }

    /// The standard output of `shoal ARGS` inside `node`, if it succeeded.
    /// What `shoal ARGS` inside `node` says on its error stream, and its exit status: why a
    /// command failed, for a test's message.
    pub fn shoal_error(&self, node: &str, args: &[&str]) -> String {
        let output = self.shoal(node, args);
        format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
    }

    fn shoal_stdout(&self, node: &str, args: &[&str]) -> Option<Vec<u8>> {
        let output = self.shoal(node, args);
        output.status.success().then_some(output.stdout)
    }

    /// `shoal node ls --format json` inside `node`, if it answers.
    pub fn node_ls(&self, node: &str) -> Option<Vec<NodeRow>> {
        let json = self.shoal_stdout(node, &["node", "ls", "--format", "json"])?;
        serde_json::from_slice(&json).ok()
    }

    /// `shoal service ps SERVICE --format json` inside `node`, if it answers.
    pub fn service_ps(&self, node: &str, service: &str) -> Option<Vec<TaskRow>> {
        let json = self.shoal_stdout(node, &["service", "ps", service, "--format", "json"])?;
        serde_json::from_slice(&json).ok()
    }

    /// `shoal cluster info --format json` inside `node`, if it answers.
    pub fn cluster_info(&self, node: &str) -> Option<Value> {
        let json = self.shoal_stdout(node, &["cluster", "info", "--format", "json"])?;
        serde_json::from_slice(&json).ok()
    }

    /// The leader's node id as `node` knows it, if it knows one.
    pub fn leader_seen_by(&self, node: &str) -> Option<String> {
        let info = self.cluster_info(node)?;
        info.get("leader")?.as_str().map(str::to_owned)
    }

    /// `f(node)` for every node in `nodes`, on a thread each, in their order.
    pub fn on_each<T: Send>(&self, nodes: &[String], f: impl Fn(&str) -> T + Sync) -> Vec<T> {
        std::thread::scope(|scope| {
            let f = &f;
            let handles: Vec<_> = nodes
                .iter()
                .map(|node| scope.spawn(move || f(node)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a query thread"))
                .collect()
        })
    }

    /// Ids of the task containers of `service` running in `node`'s own engine (`docker ps`
    /// inside the node), or `None` when the node cannot be asked.
    pub fn engine_tasks(&self, node: &str, service: &str) -> Option<Vec<String>> {
        let filter = format!("label=io.shoal.service.name={service}");
        let format = "{{.Label \"io.shoal.task.id\"}}";
        let output = self.exec(
            node,
            &["docker", "ps", "--filter", &filter, "--format", format],
        );
        output.status.success().then(|| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }

    /// When each task container of `service` running in `node`'s own engine started, by task
    /// id (the engine's own `State.StartedAt`), or `None` when the node cannot be asked.
    pub fn engine_task_starts(
        &self,
        node: &str,
        service: &str,
    ) -> Option<BTreeMap<String, SystemTime>> {
        let filter = format!("label=io.shoal.service.name={service}");
        let script = format!(
            "ids=$(docker ps -q --filter {filter}); [ -z \"$ids\" ] || docker inspect \
             --format '{{{{index .Config.Labels \"io.shoal.task.id\"}}}} {{{{.State.StartedAt}}}}' $ids"
        );
        let output = self.exec(node, &["sh", "-c", &script]);
        output.status.success().then(|| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| {
                    let (task, started) = line.split_once(' ')?;
                    Some((task.to_owned(), parse_rfc3339(started.trim())?))
                })
                .collect()
        })
    }

    /// The last `lines` lines of a node's log (its entrypoint's and its agent's).
    pub fn logs(&self, node: &str, lines: usize) -> String {
        let output = docker(&["logs", "--tail", &lines.to_string(), node]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// Polls `check` every 250 ms until it returns `Ok`, or panics after `limit` with `what`,
    /// its last `Err` (what it saw) and the tail of every node's log.
    pub async fn until<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut(&NodeCluster) -> Result<T, String>,
    ) -> T {
        let started = Instant::now();
        loop {
            let seen = match check(self) {
                Ok(value) => return value,
                Err(seen) => seen,
            };
            if started.elapsed() > limit {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| format!("--- {n}:\n{}", self.logs(n, 15)))
                    .collect();
                panic!(
                    "timed out after {limit:?} waiting for: {what}\nlast seen: {seen}\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `docker kill` (SIGKILL) the node: its agent, engine and tasks die at once, as when a
    /// machine loses power. Its engine's disk (a volume) survives for [`NodeCluster::start`].
    pub fn kill(&self, node: &str) {
        docker_ok(&["kill", node]);
    }

    /// Starts a stopped or killed node again: it boots, its engine finds its old containers,
    /// and its agent comes back with its identity and data. Its network faults are gone (a
    /// new network namespace).
    pub fn start(&self, node: &str) {
        docker_ok(&["start", node]);
    }

    /// Restarts a node gracefully (SIGTERM, then SIGKILL after 10 s).
    pub fn restart(&self, node: &str) {
        docker_ok(&["restart", "-t", "10", node]);
    }

    /// Freezes every process of the node (cgroup freezer), as a stalled machine. Bounded: a
    /// freeze the engine does not finish in time is undone (see [`Self::unpause`]).
    pub fn pause(&self, node: &str) {
        let paused = bounded(FAULT_LIMIT, "docker", &["pause", node]);
        if !paused.status.success() {
            eprintln!(
                "harness: docker pause {node} did not finish within {FAULT_LIMIT:?}: {}",
                String::from_utf8_lossy(&paused.stderr).trim()
            );
        }
    }

    /// Lets a paused node go on where it stopped. Bounded: when the engine does not thaw it in
    /// time (seen once, a freeze of a node whose own engine was making a cgroup, after which
    /// every engine call on that container waited), the node's freezer cgroup is thawed
    /// directly, which lets the engine's calls finish.
    pub fn unpause(&self, node: &str) {
        let unpaused = bounded(FAULT_LIMIT, "docker", &["unpause", node]);
        if !unpaused.status.success() {
            eprintln!(
                "harness: docker unpause {node} did not finish within {FAULT_LIMIT:?}: thawing \
                 its cgroup directly"
            );
            thaw(node);
        }
    }

    /// Runs a shell script inside `node`, panicking with its output unless it succeeds.
    fn sh(&self, node: &str, script: &str) {
        let output = self.exec(node, &["sh", "-c", script]);
        assert!(
            output.status.success(),
            "in {node}: {script}\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Makes sure `node` has the fault chain, jumped to for everything on its `eth0`.
    fn fault_chain(&self, node: &str) {
        self.sh(
            node,
            &format!(
                "iptables -N {FAULT_CHAIN} 2>/dev/null; \
                 iptables -C INPUT -i eth0 -j {FAULT_CHAIN} 2>/dev/null \
                 || iptables -I INPUT 1 -i eth0 -j {FAULT_CHAIN}; \
                 iptables -C OUTPUT -o eth0 -j {FAULT_CHAIN} 2>/dev/null \
                 || iptables -I OUTPUT 1 -o eth0 -j {FAULT_CHAIN}"
            ),
        );
    }

    /// Drops, inside `node`, every packet from or to the addresses of `peers`.
    fn drop_peers(&self, node: &str, peers: &[&str]) {
        self.fault_chain(node);
        let rules: Vec<String> = peers
            .iter()
            .map(|peer| {
                let ip = self.ip(peer);
                format!(
                    "iptables -A {FAULT_CHAIN} -s {ip} -j DROP && iptables -A {FAULT_CHAIN} -d {ip} -j DROP"
                )
            })
            .collect();
        if !rules.is_empty() {
            self.sh(node, &rules.join(" && "));
        }
    }

    /// Partitions the network: no packet passes between a node of `side_a` and one of
    /// `side_b` (dropped by iptables inside each node, both ways); other links are untouched.
    pub fn partition(&self, side_a: &[&str], side_b: &[&str]) {
        for node in side_a {
            self.drop_peers(node, side_b);
        }
        for node in side_b {
            self.drop_peers(node, side_a);
        }
    }

    /// Cuts `node` off from every other node of the cluster.
    pub fn isolate(&self, node: &str) {
        let others: Vec<&str> = self
            .nodes
            .iter()
            .map(String::as_str)
            .filter(|n| *n != node)
            .collect();
        self.partition(&[node], &others);
    }

    /// Loses `percent` % of the packets `node` sends or receives on the cluster network, at
    /// random (iptables' `statistic` match: works where the kernel has no netem).
    pub fn lose_packets(&self, node: &str, percent: u32) {
        self.fault_chain(node);
        let probability = f64::from(percent.min(100)) / 100.0;
        self.sh(
            node,
            &format!(
                "iptables -A {FAULT_CHAIN} -m statistic --mode random --probability {probability} -j DROP"
            ),
        );
    }

    /// Delays every packet `node` sends on the cluster network by `delay` (± `jitter`) and
    /// loses `loss_percent` % of them (tc netem on its `eth0`). An `Err` says why it could not,
    /// for one when this machine's kernel has no `sch_netem`: the test then decides to skip.
    pub fn slow_link(
        &self,
        node: &str,
        delay: Duration,
        jitter: Duration,
        loss_percent: u32,
    ) -> Result<(), String> {
        let output = self.exec(
            node,
            &[
                "tc",
                "qdisc",
                "replace",
                "dev",
                "eth0",
                "root",
                "netem",
                "delay",
                &format!("{}ms", delay.as_millis()),
                &format!("{}ms", jitter.as_millis()),
                "loss",
                &format!("{loss_percent}%"),
            ],
        );
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "tc netem in {node}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// Removes every network fault of `node`: its iptables fault rules and its netem qdisc.
    /// A paused or stopped node is skipped (nothing can run in it).
    pub fn heal(&self, node: &str) {
        let _ = self.exec(
            node,
            &[
                "sh",
                "-c",
                &format!(
                    "iptables -F {FAULT_CHAIN} 2>/dev/null; tc qdisc del dev eth0 root 2>/dev/null; true"
                ),
            ],
        );
    }

    /// Heals every node.
    pub fn heal_all(&self) {
        let nodes = self.nodes.clone();
        self.on_each(&nodes, |node| self.heal(node));
    }
}

/// Parses a UTC timestamp as Docker prints it (`2026-12-04T07:31:53.118602123Z`).
fn parse_rfc3339(stamp: &str) -> Option<SystemTime> {
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut ymd = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut parts = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (hour, minute, second) = (parts.next()??, parts.next()??, parts.next()??);
    let nanos: u32 = format!("{fraction:0<9}").get(..9)?.parse().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = u64::try_from(era * 146_097 + day_of_era - 719_468).ok()?;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos))
}

/// Creates `network` with a subnet of its own, labelled with this process's id, and returns
/// the subnet. Docker chooses a free one, which is then fixed (`--ip` needs a configured
/// subnet): the network is created once to learn it and again with it.
fn create_network(network: &str) -> Subnet {
    let owner = format!("{OWNER_LABEL}={}", std::process::id());
    let cluster = format!("{CLUSTER_LABEL}={network}");
    for _attempt in 0..5 {
        docker_ok(&[
            "network", "create", "--label", &owner, "--label", &cluster, network,
        ]);
        let subnet = docker_ok(&[
            "network",
            "inspect",
            "--format",
            "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
            network,
        ]);
        let _ = docker(&["network", "rm", network]);
        let Some(parsed) = subnet.split_whitespace().find_map(Subnet::parse) else {
            panic!("network {network}: no IPv4 subnet of /24 or larger in {subnet:?}");
        };
        let text = format!(
            "{}/{}",
            parsed.base.map(|o| o.to_string()).join("."),
            parsed.prefix
        );
        let created = docker(&[
            "network", "create", "--label", &owner, "--label", &cluster, "--subnet", &text, network,
        ]);
        if created.status.success() {
            return parsed;
        }
        // Another process took the subnet in between: ask again.
    }
    panic!("could not create network {network} with a fixed subnet in 5 attempts");
}

impl Drop for NodeCluster {
    fn drop(&mut self) {
        remove_containers(&self.nodes);
        let _ = docker(&["network", "rm", &self.network]);
        for volume in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", volume]);
        }
        if let Some(mut watcher) = self.watcher.take() {
            let _ = watcher.kill();
            let _ = watcher.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_timestamps_parse() {
        let parsed = parse_rfc3339("2026-12-04T07:31:53.118602123Z").expect("parses");
        let since = parsed
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after the epoch");
        assert_eq!(since, Duration::new(1_796_369_513, 118_602_123));
        let whole = parse_rfc3339("1970-01-02T00:00:01Z").expect("parses");
        assert_eq!(whole, SystemTime::UNIX_EPOCH + Duration::from_secs(86_401));
    }
}
