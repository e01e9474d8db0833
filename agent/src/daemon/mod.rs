//! The daemon: wires the mesh, the quorum, the worker and its executor, the leader duties, the
//! dispatch router, the control socket, `/metrics` and the web view (`/ui`) into one [`Agent`], and
//! takes it down again.
//! Tests start agents in-process with [`Agent::start`].

mod config;
pub mod host;
mod node_record;
pub mod role;
mod service_network;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use shoal_consensus::{Quorum, QuorumConfig};
use shoal_discovery::{
    Mesh, MeshConfig, Multiaddr, NodeInfo, NodeRole, RaftAnnouncement, ShoalProtocol,
};
use shoal_metrics::{AgentInfo, MetricsServer};
use shoal_scheduler::{Credential, NodeId, Runtime};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub use config::{AgentConfig, ExecutorKind};
pub use service_network::{DEFAULT_PROXY_PORT, ServiceNetworkConfig};

use crate::dispatch::files::FileFetcher;
use crate::dispatch::leader_link::{self, LeaderView, LinkContext};
use crate::dispatch::router::{self, RouterContext};
use crate::executor::{
    DockerConfig, DockerExecutor, Executor, PullPolicy, RuntimeInfo, SimConfig, SimExecutor,
};
use crate::leader::{self, LeaderContext};
use crate::worker::{self, WorkerHandle};
use node_record::SelfDescription;

/// Capacity of the worker's report channel.
const REPORTS_CAPACITY: usize = 4096;

/// A running agent.
pub struct Agent {
    node_id: NodeId,
    mesh: Mesh,
    quorum: Quorum,
    socket: PathBuf,
    executor: Option<Arc<dyn Executor>>,
    worker: Option<WorkerHandle>,
    metrics: Option<MetricsServer>,
    api_addr: Option<std::net::SocketAddr>,
    redirect: Option<shoal_net::Redirect>,
    tasks: JoinSet<()>,
}

impl Agent {
    /// Starts an agent: mesh, quorum (joining or forming a cluster), worker, leader duties,
    /// control socket and metrics. Returns once the control socket answers.
    pub async fn start(config: AgentConfig) -> anyhow::Result<Agent> {
        create_private_dir(&config.data_dir)?;
        // The TCP API's token and listener first: a bad one stops the start before anything runs.
        let api_token = crate::control::remote::ApiToken::for_agent(
            &config.data_dir,
            config.api_token_file.as_deref(),
        )?;
        let api_listener = match config.api_addr {
            Some(addr) => Some(crate::control::remote::bind(addr).await?),
            None => None,
        };
        let api_addr = api_listener.as_ref().and_then(|l| l.local_addr().ok());
        let keypair = shoal_discovery::identity::load_or_create(&config.data_dir)?;
        let node_id = NodeId::new(keypair.public().to_peer_id().to_string());
        let executor = connect_executor(&config, &node_id).await;
        let runtime = describe_runtime(executor.as_deref()).await;
        let info = node_info(&config, &runtime)?;

        let (mut registry, agent_info) = shoal_metrics::new_registry(AgentInfo::new(
            env!("CARGO_PKG_VERSION"),
            node_id.to_string(),
        ));
        let agent_metrics = shoal_metrics::AgentMetrics::register(&mut registry);
        let mesh =
            shoal_discovery::start(mesh_config(&config)?, info.clone(), &mut registry).await?;
        let advertise = mesh
            .listen_addrs()
            .await?
            .iter()
            .map(|a| a.to_string())
            .collect();
        let quorum = Quorum::start(
            quorum_config(&config, info, advertise),
            mesh.clone(),
            &mut registry,
        )
        .await?;

        let mut tasks = JoinSet::new();
        let (reports_tx, reports_rx) = mpsc::channel(REPORTS_CAPACITY);
        let (local_tx, local_rx) = watch::channel(None);
        let view = LeaderView {
            leader: quorum.leader(),
            local: local_rx,
        };
        let data_key = Arc::new(shoal_consensus::sealed::DataKeyStore::open(
            &config.data_dir,
        )?);
        let files: Arc<dyn worker::TaskFileSource> = Arc::new(FileFetcher {
            node: node_id.clone(),
            mesh: mesh.clone(),
            view: view.clone(),
            quorum: quorum.clone(),
            data_key: data_key.clone(),
        });
        let worker = executor.clone().map(|executor| {
            let (handle, task) = worker::spawn(
                node_id.clone(),
                executor,
                reports_tx,
                Some(files),
                agent_metrics.clone(),
            );
            tasks.spawn(async move {
                let _ = task.await;
            });
            handle
        });
        let context = LeaderContext {
            local: node_id.clone(),
            quorum: quorum.clone(),
            mesh: mesh.clone(),
            local_worker: worker.clone(),
            down_grace: config.down_grace,
            metrics: agent_metrics.clone(),
        };
        tasks.spawn(leader::supervise(context, quorum.leader(), local_tx));
        tasks.spawn(router::run(
            mesh.serve(ShoalProtocol::Dispatch).await?,
            RouterContext {
                view: view.clone(),
                worker: worker.clone(),
                quorum: quorum.clone(),
                metrics: agent_metrics.clone(),
                data_key: data_key.clone(),
            },
        ));
        let link = LinkContext {
            node: node_id.clone(),
            mesh: mesh.clone(),
            view,
            quorum: quorum.clone(),
        };
        tasks.spawn(leader_link::run(link, worker.clone(), reports_rx));
        tasks.spawn(role::follow(quorum.clone(), agent_info));
        let proxy_metrics = shoal_net::ProxyMetrics::register(&mut registry);
        let redirect = start_service_network(
            &config,
            executor.as_ref(),
            (&quorum, &mesh, &node_id),
            proxy_metrics,
            &mut tasks,
        )
        .await;
        tasks.spawn(node_record::keep_registered(
            quorum.clone(),
            mesh.clone(),
            SelfDescription {
                node: node_id.clone(),
                runtime: runtime.clone(),
                labels: config.labels.clone(),
                credential: credential_of(&config)?,
            },
        ));

        let socket = crate::paths::control_socket(&config.data_dir);
        let control = crate::control::server::ControlState {
            quorum: quorum.clone(),
            mesh: mesh.clone(),
            node_id: node_id.to_string(),
            runtime: runtime_name(runtime.runtime).into(),
            metrics: agent_metrics.clone(),
            executor: executor.clone(),
            remote: crate::control::remote::RemoteAccess {
                token: api_token,
                addr: api_addr,
            },
            data_key,
            endpoints: Arc::default(),
        };
        tasks.spawn(crate::control::secrets::keep_data_key(control.clone()));
        // `/metrics` and, beside it, the web view (task logs only on a loopback address).
        let metrics_server = match config.metrics_addr {
            Some(addr) => {
                if !addr.ip().is_loopback() {
                    tracing::warn!(
                        %addr,
                        "the web view at /ui shows the cluster to anyone who can reach this \
                         address (task logs are left out there; --api-addr serves it behind a token)"
                    );
                }
                let ui = crate::ui::router(
                    control.clone(),
                    crate::ui::Access::Open {
                        logs: addr.ip().is_loopback(),
                    },
                );
                Some(shoal_metrics::serve_with(addr, Arc::new(registry), ui).await?)
            }
            None => None,
        };
        if let Some(listener) = api_listener {
            tasks.spawn(crate::control::remote::serve(listener, control.clone()));
        }
        tasks.spawn(crate::control::forward::serve(
            mesh.serve(ShoalProtocol::Control).await?,
            control.clone(),
        ));
        let server = crate::control::server::serve(&socket, control)
            .await
            .with_context(|| format!("cannot open the control socket {}", socket.display()))?;
        tasks.spawn(server);
        tracing::info!(node = %node_id, runtime = runtime_name(runtime.runtime), "agent started");
        Ok(Agent {
            node_id,
            mesh,
            quorum,
            socket,
            executor,
            worker,
            metrics: metrics_server,
            api_addr,
            redirect,
            tasks,
        })
    }

    /// This agent's node id (its PeerId).
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// The control socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The mesh handle.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// The raft handle.
    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    /// The executor, if this node runs tasks.
    pub fn executor(&self) -> Option<&Arc<dyn Executor>> {
        self.executor.as_ref()
    }

    /// The worker, if this node runs tasks.
    pub fn worker(&self) -> Option<&WorkerHandle> {
        self.worker.as_ref()
    }

    /// The address `/metrics` is served on, if it is.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().map(|server| server.local_addr)
    }

    /// The address the control API is served on over TCP, if it is (`--api-addr`).
    pub fn api_addr(&self) -> Option<std::net::SocketAddr> {
        self.api_addr
    }

    /// Leaves gracefully: announces Left, stops raft and every task. Containers keep running
    /// (a restarted agent adopts them).
    pub async fn shutdown(mut self) {
        tracing::info!(node = %self.node_id, "agent shutting down");
        let _ = self.mesh.shutdown().await;
        self.quorum.shutdown().await;
        self.stop_tasks().await;
    }

    /// Stops abruptly, as a crash would look to the others: no Left, no raft shutdown.
    pub async fn kill(mut self) {
        self.mesh.kill();
        self.quorum.shutdown().await;
        self.stop_tasks().await;
    }

    async fn stop_tasks(&mut self) {
        self.tasks.shutdown().await;
        if let Some(redirect) = self.redirect.take()
            && let Err(error) = redirect.remove().await
        {
            tracing::warn!(%error, "the service proxy's packet filter rule stays");
        }
        if let Some(metrics) = self.metrics.take() {
            metrics.stop();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Runs an agent until SIGINT or SIGTERM, then shuts it down gracefully. An agent that formed
/// a cluster alone and then hears a larger one on its network (see
/// [`Quorum::lone_cluster_yields`]) stops, sets its empty cluster aside and starts again
/// joined to that one.
pub async fn run_until_signal(mut config: AgentConfig) -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    let mut restarted = false;
    loop {
        let agent = if restarted {
            start_again(&config).await?
        } else {
            Agent::start(config.clone()).await?
        };
        println!(
            "shoal agent {} running; control socket {}",
            agent.node_id(),
            agent.socket().display()
        );
        if let Some(addr) = agent.metrics_addr() {
            println!("web view on http://{addr}/ui, metrics on http://{addr}/metrics");
        }
        if let Some(addr) = agent.api_addr() {
            println!("control API on tcp://{addr} (bearer token: `shoal cluster info`)");
        }
        let quorum = agent.quorum().clone();
        let target = tokio::select! {
            () = signals.next() => {
                agent.shutdown().await;
                return Ok(());
            }
            target = quorum.lone_cluster_yields() => target,
        };
        let own = quorum.cluster_id().unwrap_or_default();
        agent.shutdown().await;
        drop(quorum);
        let aside = shoal_consensus::storage::set_aside(&config.data_dir, &own)?;
        println!(
            "left the empty cluster {own} (its state is in {}) to join cluster {} through {}",
            aside.display(),
            target.cluster,
            target.via
        );
        config.join = join_addrs(&target);
        restarted = true;
    }
}

/// Starts the agent again in this process, as soon as the sockets of the one that stopped are
/// free (the mesh's QUIC endpoint closes its connections before it lets go of its port).
async fn start_again(config: &AgentConfig) -> anyhow::Result<Agent> {
    const ATTEMPTS: u32 = 40;
    let mut attempt = 1;
    loop {
        match Agent::start(config.clone()).await {
            Ok(agent) => return Ok(agent),
            Err(error) if attempt < ATTEMPTS => {
                tracing::debug!(attempt, %error, "the agent could not start again yet");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The multiaddrs to join `target` through, each ending in its manager's PeerId.
fn join_addrs(target: &shoal_consensus::YieldTo) -> Vec<String> {
    let peer = format!("/p2p/{}", target.via);
    target
        .addrs
        .iter()
        .map(|addr| {
            let addr = addr.to_string();
            if addr.ends_with(&peer) {
                addr
            } else {
                format!("{addr}{peer}")
            }
        })
        .collect()
}

/// SIGINT and SIGTERM, listened to for the whole life of the process.
struct Signals {
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next SIGINT or SIGTERM.
    async fn next(&mut self) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,libp2p=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict the data dir {}", dir.display()))
}

/// Starts the service network when the agent wants one and its executor attached the tasks to
/// one; what fails is said, and the node runs on without service names.
async fn start_service_network(
    config: &AgentConfig,
    executor: Option<&Arc<dyn Executor>>,
    (quorum, mesh, node): (&Quorum, &Mesh, &NodeId),
    metrics: shoal_net::ProxyMetrics,
    tasks: &mut JoinSet<()>,
) -> Option<shoal_net::Redirect> {
    let settings = config.service_network.clone()?;
    let executor = executor?.clone();
    let network = executor.service_network()?;
    let parts = service_network::Parts {
        config: settings,
        network,
        executor,
        quorum: quorum.clone(),
        mesh: mesh.clone(),
        node: node.clone(),
        socket: crate::paths::control_socket(&config.data_dir),
        metrics,
    };
    match service_network::start(parts, tasks).await {
        Ok(redirect) => Some(redirect),
        Err(error) => {
            tracing::warn!(
                error = format!("{error:#}"),
                "no service network: tasks cannot reach services by name"
            );
            None
        }
    }
}

async fn connect_executor(config: &AgentConfig, node: &NodeId) -> Option<Arc<dyn Executor>> {
    match config.executor {
        ExecutorKind::Sim => Some(Arc::new(SimExecutor::new(SimConfig::new(node.clone())))),
        ExecutorKind::Docker => {
            let mut docker = DockerConfig::new(node.clone());
            docker.host = config.docker_host.clone();
            docker.network = config.service_network.as_ref().map(|s| s.network.clone());
            if config.never_pull {
                docker.pull = PullPolicy::Never;
            }
            match DockerExecutor::connect(docker).await {
                Ok(executor) => Some(Arc::new(executor)),
                Err(error) => {
                    tracing::warn!(
                        %error,
                        "no container runtime: this node runs with `runtime: none` and gets no tasks \
                         (it still takes part in the mesh and the manager quorum)"
                    );
                    None
                }
            }
        }
    }
}

async fn describe_runtime(executor: Option<&dyn Executor>) -> RuntimeInfo {
    if let Some(executor) = executor {
        match executor.describe().await {
            Ok(info) => return info,
            Err(error) => {
                tracing::warn!(%error, "cannot describe the runtime; using the host's facts")
            }
        }
    }
    RuntimeInfo {
        runtime: executor.map_or(Runtime::None, |e| e.runtime()),
        cpus: host::cpus(),
        memory_bytes: host::memory_bytes(),
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        engine_version: String::new(),
    }
}

/// The runtime's name as nodes report it.
pub fn runtime_name(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Docker => "docker",
        Runtime::Sim => "sim",
        Runtime::None => "none",
    }
}

fn node_info(config: &AgentConfig, runtime: &RuntimeInfo) -> anyhow::Result<NodeInfo> {
    let raft = RaftAnnouncement {
        worker_only: credential_of(config)? == Credential::Worker,
        ..RaftAnnouncement::default()
    };
    Ok(NodeInfo {
        hostname: host::hostname(),
        role: NodeRole::Worker,
        labels: config.labels.clone(),
        os: runtime.os.clone(),
        arch: runtime.arch.clone(),
        nano_cpus: runtime.total().nano_cpus,
        memory_bytes: runtime.memory_bytes,
        runtime: runtime_name(runtime.runtime).into(),
        version: env!("CARGO_PKG_VERSION").into(),
        raft,
        ..NodeInfo::default()
    })
}

/// What the agent's token allows it (a manager in open mode).
fn credential_of(config: &AgentConfig) -> anyhow::Result<Credential> {
    let Some(token) = &config.token else {
        return Ok(Credential::Manager);
    };
    let token = shoal_consensus::Token::parse(token)
        .context("--token is not a shoal token; create one with `shoal cluster token`")?;
    Ok(match token.role() {
        shoal_consensus::TokenRole::Manager => Credential::Manager,
        shoal_consensus::TokenRole::Worker => Credential::Worker,
    })
}

fn parse_addrs(flag: &str, addrs: &[String]) -> anyhow::Result<Vec<Multiaddr>> {
    addrs
        .iter()
        .map(|a| {
            a.parse().with_context(|| {
                format!("{flag} {a:?} is not a multiaddr such as /ip4/10.0.0.5/tcp/7946")
            })
        })
        .collect()
}

fn mesh_config(config: &AgentConfig) -> anyhow::Result<MeshConfig> {
    let mut mesh = MeshConfig::new(&config.data_dir);
    mesh.listen = parse_addrs("--listen", &config.listen)?;
    mesh.advertise = parse_addrs("--advertise", &config.advertise)?;
    mesh.join = parse_addrs("--join", &config.join)?;
    mesh.token = match &config.token {
        Some(token) => Some(
            shoal_consensus::Token::parse(token)
                .context("--token is not a shoal token; create one with `shoal cluster token`")?
                .mesh_secret(),
        ),
        None => None,
    };
    mesh.mdns = config.mdns;
    mesh.quic = config.listen.iter().any(|a| a.contains("/quic"));
    Ok(mesh)
}

fn quorum_config(config: &AgentConfig, info: NodeInfo, advertise: Vec<String>) -> QuorumConfig {
    let mut quorum = QuorumConfig::new(&config.data_dir, info);
    quorum.advertise_addrs = advertise;
    quorum.bootstrap_window = config.bootstrap_window;
    quorum.join_given = !config.join.is_empty();
    quorum.bootstrap_expect = config.bootstrap_expect;
    quorum.target_managers = config.managers;
    quorum.timing = config.raft_timing;
    quorum.token = config.token.clone();
    quorum
}
