//! `shoal agent`: the flags of the daemon and their translation into an [`AgentConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::daemon::{AgentConfig, ExecutorKind, ServiceNetworkConfig};
use crate::executor::NetworkConfig;

/// Run the shoal agent on this machine.
///
/// With no flags the agent finds its peers on the LAN (mDNS), joins the cluster it hears or forms
/// one, and runs the tasks it is given as Docker containers. In a cloud, give it one peer with
/// `--join`. Stop it with Ctrl-C or SIGTERM: it tells its peers it is leaving.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Where the agent keeps its identity key, raft log and state
    /// (default: /var/lib/shoal as root, the XDG data dir otherwise).
    #[arg(long, env = "SHOAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A TOML file of agent settings: its keys are these flags' names (`metrics_addr = "…"`,
    /// `join = ["…"]`, `no_mdns = true`). A flag on the command line wins over its `SHOAL_*`
    /// variable, which wins over the file. `--print-config` shows the result.
    #[arg(long, env = "SHOAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective settings (as a config file, each with its source) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Multiaddrs to listen on (repeatable; `SHOAL_LISTEN` takes a comma-separated list).
    #[arg(long, env = "SHOAL_LISTEN", value_delimiter = ',', default_values_t = ["/ip4/0.0.0.0/tcp/7946".to_string(), "/ip4/0.0.0.0/udp/7946/quic-v1".to_string()])]
    pub listen: Vec<String>,
    /// Multiaddrs to announce to peers instead of the listen addresses (NAT, cloud).
    #[arg(long, env = "SHOAL_ADVERTISE", value_delimiter = ',')]
    pub advertise: Vec<String>,
    /// A peer to join through: `/ip4/10.0.0.5/tcp/7946/p2p/12D3KooW...` (repeatable;
    /// `SHOAL_JOIN` takes a comma-separated list).
    #[arg(long, env = "SHOAL_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// The cluster's secret. Peers without it cannot even finish a handshake. Prefer
    /// `SHOAL_TOKEN` or `--token-file`: a value on the command line shows in `ps` to every
    /// user of the machine.
    #[arg(long, env = "SHOAL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the cluster's secret (as `shoal cluster token` printed it).
    #[arg(long, env = "SHOAL_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Do not use mDNS to find peers on the LAN.
    #[arg(long, env = "SHOAL_NO_MDNS")]
    pub no_mdns: bool,
    /// Wait until this many agents are seen, then form the cluster with all of them as managers.
    #[arg(long, env = "SHOAL_BOOTSTRAP_EXPECT")]
    pub bootstrap_expect: Option<usize>,
    /// How many managers autopilot keeps (odd: 1, 3, 5, 7).
    #[arg(long, env = "SHOAL_MANAGERS", default_value_t = 3)]
    pub managers: usize,
    /// The container runtime: `docker`, or `sim` (in-memory tasks for scale tests only).
    #[arg(long, env = "SHOAL_EXECUTOR", value_enum, default_value_t = ExecutorKind::Docker)]
    pub executor: ExecutorKind,
    /// Node labels `KEY=VALUE` (repeatable), used by constraints such as `node.labels.zone==eu`
    /// (`SHOAL_LABELS` takes a comma-separated list).
    #[arg(long = "label", env = "SHOAL_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Serve Prometheus metrics on this address (`off` to disable).
    #[arg(long, env = "SHOAL_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,
    /// Also serve the control API on this TCP address (`HOST:PORT`, e.g. 127.0.0.1:7947), each
    /// call with `Authorization: Bearer <token>`; plain HTTP, so keep it on loopback or behind
    /// TLS. The token is in `<data-dir>/api-token` (`shoal cluster info` prints it).
    #[arg(long, env = "SHOAL_API_ADDR", value_name = "HOST:PORT")]
    pub api_addr: Option<SocketAddr>,
    /// A file holding the TCP API's token, instead of the one the agent makes in its data dir.
    #[arg(long, env = "SHOAL_API_TOKEN_FILE", value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Pull missing images (`missing`, the default) or `never`.
    #[arg(long, env = "SHOAL_PULL", value_enum, default_value_t = PullFlag::Missing)]
    pub pull: PullFlag,
    /// A node is marked down when its heartbeats stop for this long and its peers agree.
    #[arg(long, env = "SHOAL_DOWN_GRACE", default_value = "2s", value_parser = super::spec::parse_duration)]
    pub down_grace: Duration,
    /// The engine network every task joins (made when missing), on which each task reaches
    /// every service by name: `SERVICE` is the service's virtual address, balanced over its
    /// running tasks on every node; `tasks.SERVICE` lists its tasks. `off` leaves tasks on the
    /// engine's default bridge, without service names.
    #[arg(
        long,
        env = "SHOAL_SERVICE_NETWORK",
        default_value = "shoal",
        value_name = "NAME|off"
    )]
    pub service_network: String,
    /// The range the services' virtual addresses come from: the same on every agent, and used
    /// by nothing else on the nodes' networks.
    #[arg(long, env = "SHOAL_SERVICE_ADDRESSES", default_value = shoal_net::addresses::DEFAULT_RANGE, value_name = "CIDR")]
    pub service_addresses: String,
    /// The service proxy's port on the service network's gateway (connections to service
    /// addresses are turned towards it).
    #[arg(long, env = "SHOAL_PROXY_PORT", default_value_t = crate::daemon::DEFAULT_PROXY_PORT)]
    pub proxy_port: u16,
    /// The address on which every port a service publishes in ingress mode answers (the
    /// routing mesh), TCP and UDP: all of this node's by default.
    #[arg(
        long,
        env = "SHOAL_PUBLISH_ADDRESS",
        default_value = "0.0.0.0",
        value_name = "IP"
    )]
    pub publish_address: std::net::IpAddr,
    /// The effective settings, rendered when `--print-config` is given (not a flag).
    #[arg(skip)]
    pub effective_config: Option<String>,
}

impl AgentArgs {
    /// The token from `--token-file`, `SHOAL_TOKEN` or `--token`; a token given on the command
    /// line itself is taken with a warning.
    fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?;
            let token = text.trim();
            anyhow::ensure!(
                !token.is_empty(),
                "--token-file {} is empty",
                path.display()
            );
            return Ok(Some(token.to_owned()));
        }
        let from_env = std::env::var("SHOAL_TOKEN").ok();
        if let Some(token) = &self.token
            && from_env.as_deref() != Some(token.as_str())
        {
            eprintln!(
                "warning: --token on the command line is visible to every user of this machine \
                 (ps, /proc); pass it in SHOAL_TOKEN or --token-file instead"
            );
        }
        Ok(self.token.clone())
    }
}

/// The `--pull` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PullFlag {
    /// Pull an image when it is not on the node.
    Missing,
    /// Never pull: a missing image rejects the task.
    Never,
}

impl AgentArgs {
    /// The daemon configuration these flags describe.
    pub fn to_config(&self) -> anyhow::Result<AgentConfig> {
        anyhow::ensure!(
            self.managers % 2 == 1,
            "--managers must be odd (1, 3, 5, 7): an even number adds no fault tolerance"
        );
        let metrics_addr: Option<SocketAddr> = match self.metrics_addr.as_str() {
            "off" | "" => None,
            addr => Some(addr.parse().map_err(|_| {
                anyhow::anyhow!(
                    "--metrics-addr {addr:?}: expected HOST:PORT such as 127.0.0.1:9464, or off"
                )
            })?),
        };
        let labels = self
            .labels
            .iter()
            .map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| anyhow::anyhow!("--label {pair:?}: expected KEY=VALUE"))
            })
            .collect::<anyhow::Result<_>>()?;
        let token = self.token()?;
        let service_network = self.service_network()?;
        Ok(AgentConfig {
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(crate::paths::default_data_dir),
            listen: self.listen.clone(),
            advertise: self.advertise.clone(),
            join: self.join.clone(),
            token,
            mdns: !self.no_mdns,
            bootstrap_expect: self.bootstrap_expect,
            managers: self.managers,
            executor: self.executor,
            // DOCKER_HOST chooses another engine, as it does for the docker CLI.
            docker_host: None,
            labels,
            metrics_addr,
            api_addr: self.api_addr,
            api_token_file: self.api_token_file.clone(),
            down_grace: self.down_grace,
            bootstrap_window: Duration::from_millis(1500),
            never_pull: self.pull == PullFlag::Never,
            raft_timing: shoal_consensus::RaftTiming::LAN,
            service_network,
        })
    }

    /// The service network of `--service-network`, `--service-addresses` and `--proxy-port`.
    fn service_network(&self) -> anyhow::Result<Option<ServiceNetworkConfig>> {
        let name = self.service_network.trim();
        if name == "off" || name.is_empty() {
            return Ok(None);
        }
        anyhow::ensure!(
            name.len() < 15
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "--service-network {name:?}: give a name of up to 14 letters, digits, - or _ (its \
             bridge interface is the name with a 0 after it), or off"
        );
        let range = self
            .service_addresses
            .parse()
            .map_err(|e| anyhow::anyhow!("--service-addresses: {e}"))?;
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(crate::paths::default_data_dir);
        Ok(Some(ServiceNetworkConfig {
            network: NetworkConfig::new(name, &format!("{name}0"), &data_dir),
            range,
            proxy_port: self.proxy_port,
            dns_port: 53,
            publish_address: self.publish_address,
        }))
    }
}

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    if args.print_config {
        print!("{}", args.effective_config.unwrap_or_default());
        return Ok(());
    }
    crate::daemon::init_logging();
    let config = args.to_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::daemon::run_until_signal(config))
}
