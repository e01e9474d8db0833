//! Helpers for shoal's whole-cluster tests: start agents in-process on loopback, drive them through
//! the control API like the CLI does, watch Docker independently through its own CLI, and wait
//! for conditions with a bound on time; [`browser`] drives a headless Chromium for the web view.

use std::future::Future;
use std::path::Path;
use std::process::Command as Process;
use std::time::{Duration, Instant};

use shoal_agent::control::api;
use shoal_agent::control::client::ControlClient;
use shoal_agent::control::views::{ServiceRow, TaskRow};
use shoal_agent::daemon::{Agent, AgentConfig, ExecutorKind};

pub mod browser;
pub mod capture;
mod cluster;
pub mod containers;
mod docker_cli;
pub mod linearizability;
pub mod nodes;
pub use cluster::*;

/// The image the tests run, built locally by `tests/images/build-busybox-image.sh`.
pub const TEST_IMAGE: &str = "shoal-test/busybox:latest";

/// Logs for tests (`RUST_LOG` to see more).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes sure the test image exists, building it once if needed.
pub fn ensure_test_image() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/build-busybox-image.sh");
        let status = Process::new("bash")
            .arg(&script)
            .status()
            .expect("run the image build script");
        assert!(
            status.success(),
            "building {TEST_IMAGE} failed: see the output above"
        );
    });
}

/// Starts an agent in `dir` with the given executor.
pub async fn start_agent(dir: &Path, executor: ExecutorKind, join: Vec<String>) -> Agent {
    let mut config = AgentConfig::for_tests(dir, executor);
    config.join = join;
    Agent::start(config).await.expect("agent starts")
}

/// The agent's first listen multiaddr with its `/p2p/` id: what `--join` takes.
pub async fn join_addr(agent: &Agent) -> String {
    let addrs = agent.mesh().listen_addrs().await.expect("listen addrs");
    addrs.first().expect("one listen address").to_string()
}

/// A control client of `agent`.
pub fn client(agent: &Agent) -> ControlClient {
    ControlClient::new(agent.socket())
}

/// The service row of `name`, if it exists.
pub async fn service_row(client: &ControlClient, name: &str) -> Option<ServiceRow> {
    let rows: Vec<ServiceRow> = client.get(api::SERVICES).await.ok()?;
    rows.into_iter().find(|row| row.name == name)
}

/// The task rows of `name`.
pub async fn tasks(client: &ControlClient, name: &str) -> Vec<TaskRow> {
    client
        .get(&api::service_tasks(name))
        .await
        .unwrap_or_default()
}

/// Waits until `name` has `replicas` tasks running and nothing left to stop.
pub async fn wait_running(client: &ControlClient, name: &str, replicas: u64, timeout: Duration) {
    eventually(&format!("{name}: {replicas} running"), timeout, || async {
        let row = service_row(client, name).await?;
        let tasks = tasks(client, name).await;
        let settled = tasks
            .iter()
            .all(|t| t.desired != shoal_scheduler::DesiredState::Shutdown || t.state.is_terminal());
        (row.running == replicas && row.desired == replicas && settled).then_some(())
    })
    .await
}

/// Ids of the running containers of `service` on `node`, as the Docker CLI sees them.
pub fn running_containers(node: &str, service: &str) -> Vec<String> {
    docker_ids(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &node_filter(node),
        "--filter",
        &service_filter(service),
    ])
}

/// Ids of all containers (running or not) of `service` on `node`.
pub fn all_containers(node: &str, service: &str) -> Vec<String> {
    docker_ids(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &node_filter(node),
        "--filter",
        &service_filter(service),
    ])
}

fn node_filter(node: &str) -> String {
    format!("label=io.shoal.node.id={node}")
}

fn service_filter(service: &str) -> String {
    format!("label=io.shoal.service.id={service}")
}

fn docker_ids(args: &[&str]) -> Vec<String> {
    let output = Process::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// A label value of a container.
pub fn container_label(id: &str, label: &str) -> String {
    let format = format!("{{{{index .Config.Labels \"{label}\"}}}}");
    let output = Process::new("docker")
        .args(["inspect", "--format", &format, id])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// `docker kill` a container.
pub fn docker_kill(id: &str) {
    let status = Process::new("docker")
        .args(["kill", id])
        .status()
        .expect("docker kill");
    assert!(status.success(), "docker kill {id} failed");
}

/// Removes every container of node `node` (test clean-up, also after a failure).
pub fn remove_node_containers(node: &str) {
    let ids = docker_ids(&["ps", "-aq", "--no-trunc", "--filter", &node_filter(node)]);
    if !ids.is_empty() {
        let _ = Process::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    }
}

/// Removes a node's containers and its tasks' files when dropped, so a failing test leaves
/// nothing behind.
pub struct ContainerGuard(pub String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        remove_node_containers(&self.0);
        // The files of its tasks, which an agent that did not stop cleanly left on the tmpfs.
        let files = std::path::Path::new(shoal_agent::executor::DEFAULT_FILES_BASE).join(&self.0);
        let _ = std::fs::remove_dir_all(files);
    }
}

/// Scrapes `/metrics` of `addr` in the classic text format.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to /metrics");
    let request = "GET /metrics HTTP/1.0\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n";
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the scrape");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the scrape");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// The value of the sample `name` (with its labels, exactly as exposed), if present.
pub fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

/// Starts an agent that serves `/metrics` on a free loopback port.
pub async fn start_agent_with_metrics(
    dir: &Path,
    executor: ExecutorKind,
    join: Vec<String>,
) -> Agent {
    let mut config = AgentConfig::for_tests(dir, executor);
    config.join = join;
    config.metrics_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    Agent::start(config).await.expect("agent starts")
}

/// One agent on the real Docker engine in a temporary data dir, with its control client; its
/// containers are removed when `guard` is dropped, even if the test fails.
pub struct DockerAgent {
    /// The agent.
    pub agent: Agent,
    /// Its node id.
    pub node: String,
    /// A control client of it.
    pub client: ControlClient,
    /// Its data dir (kept for restarts).
    pub dir: tempfile::TempDir,
    /// Removes the node's containers when dropped: bind it for the whole test.
    pub guard: ContainerGuard,
}

impl DockerAgent {
    /// Builds the test image if needed and starts an agent that runs it.
    pub async fn start() -> DockerAgent {
        DockerAgent::start_with(|_| {}).await
    }

    /// [`DockerAgent::start`] with the test config changed by `adjust` first.
    pub async fn start_with(adjust: impl FnOnce(&mut AgentConfig)) -> DockerAgent {
        init_logging();
        ensure_test_image();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = AgentConfig::for_tests(dir.path(), ExecutorKind::Docker);
        adjust(&mut config);
        let agent = Agent::start(config).await.expect("agent starts");
        let node = agent.node_id().to_string();
        let client = client(&agent);
        DockerAgent {
            guard: ContainerGuard(node.clone()),
            agent,
            node,
            client,
            dir,
        }
    }
}

/// An agent on its own thread with a single-threaded runtime, so that a test can freeze it
/// whole — mesh, dispatch, worker and executor — as a stopped process or a stalled machine
/// would be, and let it go on where it stopped. Nothing in the agent knows it is frozen.
pub struct FreezableAgent {
    node_id: shoal_scheduler::NodeId,
    socket: std::path::PathBuf,
    join_addr: String,
    commands: tokio::sync::mpsc::UnboundedSender<FreezeControl>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum FreezeControl {
    /// Block the agent's only thread for this long; say so once it starts.
    Freeze(Duration, tokio::sync::oneshot::Sender<()>),
}

impl FreezableAgent {
    /// Starts an agent with `config` on a thread of its own.
    pub async fn start(config: AgentConfig) -> FreezableAgent {
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (commands, mut inbox) = tokio::sync::mpsc::unbounded_channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the agent");
            runtime.block_on(async move {
                let agent = Agent::start(config).await.expect("agent starts");
                let ready = (
                    agent.node_id().clone(),
                    agent.socket().to_path_buf(),
                    join_addr(&agent).await,
                );
                let _ = started_tx.send(ready);
                while let Some(FreezeControl::Freeze(span, began)) = inbox.recv().await {
                    let _ = began.send(());
                    // Blocks the runtime's only thread: every task of this agent stops.
                    std::thread::sleep(span);
                }
                agent.shutdown().await;
            });
        });
        let (node_id, socket, join_addr) = started.await.expect("the agent's thread started it");
        FreezableAgent {
            node_id,
            socket,
            join_addr,
            commands,
            thread: Some(thread),
        }
    }

    /// The agent's node id.
    pub fn node_id(&self) -> &shoal_scheduler::NodeId {
        &self.node_id
    }

    /// What `--join` takes to reach this agent.
    pub fn join_addr(&self) -> String {
        self.join_addr.clone()
    }

    /// A control client of the agent.
    pub fn client(&self) -> ControlClient {
        ControlClient::new(&self.socket)
    }

    /// Freezes the agent for `span`; returns as soon as the freeze has begun.
    pub async fn freeze(&self, span: Duration) {
        let (began_tx, began) = tokio::sync::oneshot::channel();
        self.commands
            .send(FreezeControl::Freeze(span, began_tx))
            .expect("the agent's thread runs");
        began.await.expect("the freeze began");
    }

    /// Shuts the agent down gracefully and waits for its thread.
    pub async fn shutdown(mut self) {
        let thread = self.thread.take();
        drop(self);
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// A test's own service network (its engine network, bridge, proxy port and range of service
/// addresses): removes the packet filter rules the agent installs for it, and the network,
/// when dropped, also when the test fails before the agent's shutdown removed them.
pub struct NetworkGuard {
    /// The engine network.
    pub network: &'static str,
    /// The rules of the agent's service network.
    pub redirect: shoal_net::Redirect,
}

impl NetworkGuard {
    /// The guard of `network` on `bridge`, whose proxy listens on `proxy_port` and whose
    /// services take their addresses from `range`.
    pub fn new(network: &'static str, bridge: &str, range: &str, proxy_port: u16) -> Self {
        NetworkGuard {
            network,
            redirect: shoal_net::Redirect {
                bridge: bridge.into(),
                range: range.parse().expect("a range of service addresses"),
                port: proxy_port,
            },
        }
    }
}

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        for call in self.redirect.teardown() {
            for _ in 0..4 {
                let done = Process::new("timeout")
                    .args(["10", "iptables", "-w", "5", "-t", "nat"])
                    .args(&call)
                    .output();
                if !done.is_ok_and(|o| o.status.success()) || call[0] != "-D" {
                    break;
                }
            }
        }
        let _ = Process::new("timeout")
            .args(["30", "docker", "network", "rm", self.network])
            .output();
    }
}
