//! The routing mesh: every port a service publishes in ingress mode (the default, as in Swarm)
//! answers on every node, TCP and UDP. The node listens on the port on all its addresses and
//! carries each connection (or UDP session, [`crate::datagrams`]), as the proxy does, to the
//! service's target port on one of its running tasks, wherever it runs. The listeners follow
//! the endpoint table: a port published anew is listened on, a port no longer published is let
//! go, and a port this node cannot take (another program holds it) is said once and tried
//! again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use shoal_scheduler::PortProtocol;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::datagrams::{DatagramRoute, Owned};
use crate::endpoints::EndpointTable;
use crate::proxy::Proxy;

/// Where and how the routing mesh listens.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// The address the published ports are listened on (all of the node's by default).
    pub bind: IpAddr,
    /// How soon a port that could not be taken is tried again.
    pub retry: Duration,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            retry: Duration::from_secs(2),
        }
    }
}

/// Where a published port leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressRoute {
    /// The service (its name, as the table knows it).
    pub service: String,
    /// The port inside its tasks.
    pub target: u16,
}

/// A published port: its number and protocol.
pub type PublishedPort = (u16, PortProtocol);

/// The ports the services of `table` publish in ingress mode, each with where it leads (of
/// two services publishing one port, the first by name keeps it; the state machine refuses the
/// second).
pub fn routes(table: &EndpointTable) -> BTreeMap<PublishedPort, IngressRoute> {
    let mut routes = BTreeMap::new();
    for service in table.services() {
        for port in &service.ports {
            if port.published == 0 || port.host_mode {
                continue;
            }
            routes
                .entry((port.published, port.protocol))
                .or_insert_with(|| IngressRoute {
                    service: service.name.clone(),
                    target: port.target,
                });
        }
    }
    routes
}

/// Keeps the node's listeners on the published ports as the table says, for the agent's life.
pub async fn run(
    proxy: Arc<Proxy>,
    mut table: watch::Receiver<Arc<EndpointTable>>,
    config: IngressConfig,
) {
    let mut listening: BTreeMap<PublishedPort, (IngressRoute, Owned)> = BTreeMap::new();
    let mut failing: BTreeSet<PublishedPort> = BTreeSet::new();
    loop {
        let wanted = routes(&table.borrow_and_update());
        listening.retain(|port, (route, _)| wanted.get(port) == Some(route));
        failing.retain(|port| wanted.contains_key(port));
        for (port, route) in wanted {
            if listening.contains_key(&port) {
                continue;
            }
            let at = SocketAddr::new(config.bind, port.0);
            match listen(at, port.1, &route, &proxy, &table).await {
                Ok(serving) => {
                    failing.remove(&port);
                    tracing::info!(%at, protocol = port.1.name(), service = %route.service, target = route.target, "routing mesh listening");
                    listening.insert(port, (route, serving));
                }
                Err(error) => {
                    if failing.insert(port) {
                        tracing::warn!(%at, protocol = port.1.name(), service = %route.service, %error, "the routing mesh cannot take a published port on this node; trying again");
                    }
                }
            }
        }
        tokio::select! {
            changed = table.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(config.retry), if !failing.is_empty() => {}
        }
    }
}

/// Listens on `at` for `protocol` and carries what comes to `route`.
async fn listen(
    at: SocketAddr,
    protocol: PortProtocol,
    route: &IngressRoute,
    proxy: &Arc<Proxy>,
    table: &watch::Receiver<Arc<EndpointTable>>,
) -> std::io::Result<Owned> {
    let serving = match protocol {
        PortProtocol::Tcp => {
            let listener = TcpListener::bind(at).await?;
            tokio::spawn(serve(listener, route.clone(), proxy.clone(), table.clone()))
        }
        PortProtocol::Udp => {
            let socket = UdpSocket::bind(at).await?;
            let route = DatagramRoute {
                service: route.service.clone(),
                target: route.target,
            };
            tokio::spawn(crate::datagrams::relay(proxy.clone(), socket, route))
        }
    };
    Ok(Owned(serving))
}

/// Carries the connections `listener` accepts to `route`.
async fn serve(
    listener: TcpListener,
    route: IngressRoute,
    proxy: Arc<Proxy>,
    table: watch::Receiver<Arc<EndpointTable>>,
) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(error) => {
                tracing::warn!(%error, service = %route.service, "the routing mesh stopped accepting");
                return;
            }
        };
        let (proxy, table, route) = (proxy.clone(), table.clone(), route.clone());
        tokio::spawn(async move {
            let table = table.borrow().clone();
            if let Some(service) = table.service(&route.service) {
                proxy.forward(client, service, route.target).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use shoal_scheduler::synthetic::{self, ClusterShape};
    use shoal_scheduler::{NodeId, PortSpec, Timestamp};

    use super::*;
    use crate::addresses::AddressRange;

    fn port(published: u16, target: u16, host_mode: bool, protocol: PortProtocol) -> PortSpec {
        PortSpec {
            target,
            published,
            protocol,
            host_mode,
        }
    }

    #[test]
    fn only_ports_published_in_ingress_mode_are_routed() {
        let mut state = synthetic::cluster(&ClusterShape::new(1, 7));
        let mut web = synthetic::spec("web", 1);
        web.ports = vec![
            port(8080, 80, false, PortProtocol::Tcp),
            port(9090, 90, true, PortProtocol::Tcp),
            port(5353, 53, false, PortProtocol::Udp),
            port(0, 81, false, PortProtocol::Tcp),
        ];
        synthetic::create_service(&mut state, web, Timestamp(0)).expect("valid");
        let table = EndpointTable::build(
            &state,
            &AddressRange::default(),
            &NodeId::new("n"),
            &BTreeMap::new(),
        );
        let route = |target| IngressRoute {
            service: "web".into(),
            target,
        };
        assert_eq!(
            routes(&table),
            BTreeMap::from([
                ((5353, PortProtocol::Udp), route(53)),
                ((8080, PortProtocol::Tcp), route(80)),
            ])
        );
    }
}
