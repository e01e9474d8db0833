//! [`AgentConfig`]: everything `shoal agent` is told, in the form the daemon uses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Which container runtime the agent drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// The local Docker engine (the default). Without one the agent runs with `runtime: none`.
    Docker,
    /// Tasks that only live in memory: scale tests and benchmarks, never production.
    Sim,
}

/// The daemon's configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Identity key, raft log, state and control socket live here.
    pub data_dir: PathBuf,
    /// Mesh listen multiaddrs.
    pub listen: Vec<String>,
    /// Multiaddrs announced instead of the listen addresses.
    pub advertise: Vec<String>,
    /// Seed multiaddrs.
    pub join: Vec<String>,
    /// Cluster secret (closed mode).
    pub token: Option<String>,
    /// Find peers on the LAN by mDNS.
    pub mdns: bool,
    /// Form the cluster once this many agents are seen.
    pub bootstrap_expect: Option<usize>,
    /// Target number of managers.
    pub managers: usize,
    /// The container runtime.
    pub executor: ExecutorKind,
    /// The Docker engine's address (`unix:///var/run/docker.sock`, `tcp://...`); `None` uses
    /// `DOCKER_HOST`, else the default socket.
    pub docker_host: Option<String>,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Where `/metrics` is served (None: not served).
    pub metrics_addr: Option<SocketAddr>,
    /// Where the control API is also served on TCP, behind its token (None: the socket only).
    pub api_addr: Option<SocketAddr>,
    /// The file holding the TCP API's token (None: `<data-dir>/api-token`, made on first start).
    pub api_token_file: Option<PathBuf>,
    /// Heartbeat silence after which a node may be marked down.
    pub down_grace: Duration,
    /// How long a new agent listens for a cluster before forming one.
    pub bootstrap_window: Duration,
    /// Never pull images (tests: no registry is reachable).
    pub never_pull: bool,
    /// Raft timing (the LAN defaults; many agents in one process need it slower).
    pub raft_timing: shoal_consensus::RaftTiming,
    /// The service network the tasks join (service names, virtual addresses, the proxy);
    /// `None` leaves them on the engine's default bridge.
    pub service_network: Option<super::ServiceNetworkConfig>,
}

impl AgentConfig {
    /// An agent for in-process tests: loopback only, no mDNS, no metrics server, a short
    /// bootstrap window, images never pulled.
    pub fn for_tests(data_dir: impl Into<PathBuf>, executor: ExecutorKind) -> Self {
        AgentConfig {
            data_dir: data_dir.into(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            advertise: Vec::new(),
            join: Vec::new(),
            token: None,
            mdns: false,
            bootstrap_expect: None,
            managers: 3,
            executor,
            docker_host: None,
            labels: BTreeMap::new(),
            metrics_addr: None,
            api_addr: None,
            api_token_file: None,
            down_grace: Duration::from_secs(2),
            bootstrap_window: Duration::from_millis(1200),
            never_pull: true,
            raft_timing: shoal_consensus::RaftTiming::LAN,
            service_network: None,
        }
    }
}
