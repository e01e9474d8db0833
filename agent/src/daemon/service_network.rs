//! The service network's wiring (the parts live in `shoal-net`): the endpoint table, rebuilt
//! from the applied state and this node's task addresses whenever either moves; the resolver
//! and the proxy on the network's gateway; the routing mesh's listeners on the published
//! ports (TCP and UDP); the relays of the services' UDP ports; the packet filter rules that
//! turn the tasks' connections and datagrams to service addresses towards the proxy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shoal_consensus::Quorum;
use shoal_discovery::{Mesh, ShoalStream};
use shoal_net::{
    AddressRange, EndpointTable, IngressConfig, LocalAddresses, Proxy, ProxyConfig, ProxyMetrics,
    Redirect, Resolver, ResolverConfig,
};
use shoal_scheduler::{ClusterState, NodeId};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::control::api;
use crate::control::client::ControlClient;
use crate::control::endpoints::{EndpointsView, MAX_ENDPOINTS_WAIT_MS};
use crate::executor::{AttachedNetwork, Executor, NetworkConfig};

/// The proxy's port on the service network's gateway, unless the agent is told otherwise.
pub const DEFAULT_PROXY_PORT: u16 = 7948;
/// How often this node's task addresses are read from the engine.
const ADDRESS_REFRESH: Duration = Duration::from_secs(1);
/// How often the endpoint table is rebuilt at least, and how long an agent without a replica
/// of the state waits before it asks a manager for the endpoints again after a failure.
const VIEW_REFRESH: Duration = Duration::from_secs(1);
/// How long that question may take: the manager's wait for a change, and time to answer.
const VIEW_LIMIT: Duration = Duration::from_millis(MAX_ENDPOINTS_WAIT_MS + 3_000);
/// How long a rebuild of the table waits for more changes to come with it.
const TABLE_SETTLE: Duration = Duration::from_millis(20);
/// Where the node's own resolvers are listed.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The service network an agent gives its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNetworkConfig {
    /// The engine's network the tasks join.
    pub network: NetworkConfig,
    /// The cluster's range of service addresses (the same on every agent).
    pub range: AddressRange,
    /// The proxy's port on the network's gateway.
    pub proxy_port: u16,
    /// The resolver's port on the network's gateway.
    pub dns_port: u16,
    /// The address the routing mesh listens on for published ports (all of the node's by
    /// default).
    pub publish_address: IpAddr,
}

impl ServiceNetworkConfig {
    /// The `network` with the default range and ports.
    pub fn on(network: NetworkConfig) -> Self {
        ServiceNetworkConfig {
            network,
            range: AddressRange::default(),
            proxy_port: DEFAULT_PROXY_PORT,
            dns_port: 53,
            publish_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// What the agent needs to start the service network.
pub(super) struct Parts {
    pub(super) config: ServiceNetworkConfig,
    pub(super) network: AttachedNetwork,
    pub(super) executor: Arc<dyn Executor>,
    pub(super) quorum: Quorum,
    pub(super) mesh: Mesh,
    pub(super) node: NodeId,
    /// The agent's control socket (an agent without a replica asks a manager through it).
    pub(super) socket: PathBuf,
    /// The proxy's figures, registered in the agent's registry.
    pub(super) metrics: ProxyMetrics,
}

/// Starts the table, resolver and proxy as tasks of `tasks`, and installs the packet filter
/// rules, which it returns (the agent removes them when it stops).
pub(super) async fn start(parts: Parts, tasks: &mut JoinSet<()>) -> anyhow::Result<Redirect> {
    let Parts {
        config,
        network,
        executor,
        quorum,
        mesh,
        node,
        socket,
        metrics,
    } = parts;
    // Everything that can fail first: nothing runs, and no task joins the network, unless the
    // whole of it can.
    let dns_at = SocketAddr::from((network.gateway, config.dns_port));
    let udp = UdpSocket::bind(dns_at)
        .await
        .with_context(|| format!("the service resolver cannot listen on {dns_at} (UDP)"))?;
    let tcp = TcpListener::bind(dns_at)
        .await
        .with_context(|| format!("the service resolver cannot listen on {dns_at} (TCP)"))?;
    let proxy_at = SocketAddr::from((network.gateway, config.proxy_port));
    let listener = TcpListener::bind(proxy_at)
        .await
        .with_context(|| format!("the service proxy cannot listen on {proxy_at}"))?;
    // The node's own programs' connections to service addresses come in on loopback.
    let loopback_at = SocketAddr::from(([127, 0, 0, 1], config.proxy_port));
    let loopback = TcpListener::bind(loopback_at)
        .await
        .with_context(|| format!("the service proxy cannot listen on {loopback_at}"))?;
    let redirect = Redirect {
        bridge: network.bridge.clone(),
        range: config.range,
        port: config.proxy_port,
    };
    redirect.install().await?;
    let incoming = mesh.accept_streams(ShoalStream::Proxy)?;
    let incoming_datagrams = mesh.accept_streams(ShoalStream::ProxyDatagrams)?;

    let (local_tx, local_rx) = watch::channel(Arc::new(LocalAddresses::new()));
    let (table_tx, table_rx) = watch::channel(Arc::new(EndpointTable::default()));
    let (remote_tx, remote_rx) = watch::channel(None);
    tasks.spawn(keep_addresses(executor, local_tx));
    tasks.spawn(follow_view(
        quorum.clone(),
        ControlClient::new(socket),
        remote_tx,
    ));
    tasks.spawn(keep_table(
        Sources {
            quorum,
            remote: remote_rx,
            local: local_rx.clone(),
        },
        config.range,
        node.clone(),
        table_tx,
    ));
    let upstream = std::fs::read_to_string(RESOLV_CONF)
        .map(|text| ResolverConfig::upstream_from_resolv_conf(&text))
        .unwrap_or_default();
    let resolver = Resolver::new(
        table_rx.clone(),
        ResolverConfig {
            upstream,
            ..ResolverConfig::default()
        },
    );
    tasks.spawn(resolver.clone().serve_udp(udp));
    tasks.spawn(resolver.serve_tcp(tcp));
    let proxy = Proxy::new(
        node,
        table_rx.clone(),
        local_rx,
        mesh,
        ProxyConfig::default(),
        metrics,
    );
    tasks.spawn(proxy.clone().serve(listener));
    tasks.spawn(proxy.clone().serve(loopback));
    tasks.spawn(shoal_net::ingress::run(
        proxy.clone(),
        table_rx.clone(),
        IngressConfig {
            bind: config.publish_address,
            ..IngressConfig::default()
        },
    ));
    tasks.spawn(shoal_net::datagrams::run_service_relays(
        proxy.clone(),
        table_rx,
        redirect.clone(),
        network.gateway,
    ));
    tasks.spawn(proxy.clone().serve_streams(incoming));
    tasks.spawn(proxy.serve_datagram_streams(incoming_datagrams));
    network.set_serving();
    tracing::info!(
        network = %network.name,
        resolver = %dns_at,
        proxy = %proxy_at,
        addresses = %config.range,
        "service network ready"
    );
    Ok(redirect)
}

/// Reads this node's task addresses from the engine, for the agent's life.
async fn keep_addresses(executor: Arc<dyn Executor>, local: watch::Sender<Arc<LocalAddresses>>) {
    let mut every = tokio::time::interval(ADDRESS_REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match executor.task_addresses().await {
            Ok(addresses) => {
                local.send_if_modified(|current| {
                    let changed = **current != addresses;
                    if changed {
                        *current = Arc::new(addresses);
                    }
                    changed
                });
            }
            Err(error) => tracing::debug!(%error, "cannot read the tasks' addresses"),
        }
        if local.is_closed() {
            return;
        }
    }
}

/// Where the endpoint table comes from.
struct Sources {
    /// The applied state, on a manager.
    quorum: Quorum,
    /// A manager's view, on an agent without a replica ([`follow_view`]).
    remote: watch::Receiver<Option<Arc<ClusterState>>>,
    /// This node's task addresses.
    local: watch::Receiver<Arc<LocalAddresses>>,
}

impl Sources {
    /// The services and tasks: the replica's on a manager, a manager's answer on a worker.
    fn state(&self) -> Option<Arc<ClusterState>> {
        if self.quorum.is_member() {
            return Some(self.quorum.state());
        }
        self.remote.borrow().clone()
    }
}

/// On an agent without a replica of the state, follows a manager's endpoint view for the
/// agent's life: each question gives the digest of the view held and waits (on the manager)
/// until it changes, so a change arrives within a forwarded call's time and an idle cluster
/// answers a small "unchanged" every few seconds. While the agent holds a replica it asks
/// nothing.
async fn follow_view(
    quorum: Quorum,
    client: ControlClient,
    view: watch::Sender<Option<Arc<ClusterState>>>,
) {
    let mut held: Option<String> = None;
    let mut failing: Option<String> = None;
    loop {
        if view.is_closed() {
            return;
        }
        if quorum.is_member() {
            held = None;
            tokio::time::sleep(VIEW_REFRESH).await;
            continue;
        }
        let uri = match &held {
            Some(digest) => format!(
                "{}?stale=true&unchanged={digest}&wait_ms={MAX_ENDPOINTS_WAIT_MS}",
                api::ENDPOINTS
            ),
            None => format!("{}?stale=true", api::ENDPOINTS),
        };
        let asked = tokio::time::timeout(VIEW_LIMIT, client.get::<EndpointsView>(&uri)).await;
        let failed = match asked {
            Ok(Ok(answer)) => {
                failing = None;
                // A manager that does not know digests answers at once: ask it again only as
                // often as before.
                if answer.digest.is_empty() {
                    tokio::time::sleep(VIEW_REFRESH).await;
                }
                if !answer.unchanged {
                    held = Some(answer.digest.clone()).filter(|d| !d.is_empty());
                    view.send_replace(Some(Arc::new(answer.into_state())));
                }
                continue;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {VIEW_LIMIT:?}"),
        };
        if failing.as_ref() != Some(&failed) {
            tracing::warn!(error = %failed, "no service endpoints from a manager: this node's tasks cannot reach services by name yet");
            failing = Some(failed);
        }
        tokio::time::sleep(VIEW_REFRESH).await;
    }
}

/// Rebuilds the endpoint table whenever the applied state, a manager's view or the task
/// addresses move, and once a second besides (an agent that joins or leaves the raft group
/// switches between the two sources).
async fn keep_table(
    mut sources: Sources,
    range: AddressRange,
    node: NodeId,
    table: watch::Sender<Arc<EndpointTable>>,
) {
    let mut applied = sources.quorum.watch();
    let mut every = tokio::time::interval(VIEW_REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let addresses = sources.local.borrow_and_update().clone();
        sources.remote.borrow_and_update();
        if let Some(state) = sources.state() {
            let built = EndpointTable::build(&state, &range, &node, &addresses);
            table.send_if_modified(|current| {
                let changed = **current != built;
                if changed {
                    *current = Arc::new(built);
                }
                changed
            });
        }
        tokio::select! {
            moved = applied.changed() => if moved.is_err() { return },
            moved = sources.local.changed() => if moved.is_err() { return },
            moved = sources.remote.changed() => if moved.is_err() { return },
            _ = every.tick() => {}
        }
        tokio::time::sleep(TABLE_SETTLE).await;
    }
}
