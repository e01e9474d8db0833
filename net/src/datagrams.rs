//! The proxy's UDP side: datagrams sent to a service's port reach one of its tasks, and the
//! task's answers come back from the address the client sent to.
//!
//! UDP has no connections, so the proxy keeps sessions: the datagrams of one client address to
//! one service port form a session, which goes to one task (picked as connections are, least
//! sessions and connections first) for as long as it lasts. A session ends when it has been
//! idle for [`ProxyConfig::session_idle`](crate::ProxyConfig), or when its task stops taking
//! connections (it is stopped, or it left the table): the client's next datagram then starts a
//! session with a task that runs. A task of this node gets the datagrams from a socket of the
//! agent's; a task of another node gets them over a [`ShoalStream::ProxyDatagrams`] stream to
//! that node's agent, one length-prefixed frame per datagram.
//!
//! Where the datagrams come from: a relay socket per UDP port that a service with an address
//! declares, which the packet filter turns that address and port towards
//! ([`run_service_relays`]), and the routing mesh's socket on each published UDP port
//! ([`crate::ingress`]).
//!
//! Bounded: sessions per service (with the connections, [`crate::ProxyConfig`]), datagrams
//! queued per session (more are dropped, as a full socket buffer would), the frame size.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use shoal_discovery::{IncomingStreams, PeerId, ShoalStream, Stream};
use shoal_scheduler::{PortProtocol, TaskId};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt as _};

use crate::endpoints::{Endpoint, EndpointTable, ServiceEndpoints};
use crate::metrics::Path;
use crate::proxy::{ConnectError, OpenGuard, Opened, Proxy};
use crate::redirect::Redirect;

/// The largest datagram carried (the most an IPv4 UDP datagram holds).
pub const MAX_DATAGRAM: usize = 65_507;
/// Datagrams waiting for one session's task at most.
const SESSION_QUEUE: usize = 256;
/// How long a relay waits after its socket failed before it reads again.
const RECEIVE_BACKOFF: Duration = Duration::from_millis(10);
/// Relay ports tried at most when the loopback side of one is taken.
const RELAY_PORT_ATTEMPTS: usize = 8;

/// Where a relay's datagrams go.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DatagramRoute {
    /// The service, by name.
    pub service: String,
    /// The port inside its tasks.
    pub target: u16,
}

/// The other end of a session.
enum DatagramUpstream {
    /// A task of this node, through a socket connected to it.
    Local(UdpSocket),
    /// A task of another node, through its agent.
    Remote(Box<Framed<Compat<Stream>, LengthDelimitedCodec>>),
}

/// The frames of a datagram stream: a two-byte length, then the datagram.
fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(2)
        .max_frame_length(MAX_DATAGRAM)
        .new_codec()
}

/// Carries the datagrams `socket` receives to `route`, each client address a session, until
/// it is aborted (which ends its sessions).
pub async fn relay(proxy: Arc<Proxy>, socket: UdpSocket, route: DatagramRoute) {
    let socket = Arc::new(socket);
    let mut sessions: HashMap<SocketAddr, mpsc::Sender<Bytes>> = HashMap::new();
    let mut running = JoinSet::new();
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buffer) => {
                let (length, client) = match received {
                    Ok(received) => received,
                    Err(error) => {
                        tracing::debug!(%error, service = %route.service, "a relay could not read a datagram");
                        tokio::time::sleep(RECEIVE_BACKOFF).await;
                        continue;
                    }
                };
                let datagram = Bytes::copy_from_slice(&buffer[..length]);
                let datagram = match sessions.get(&client) {
                    None => datagram,
                    Some(session) => match session.try_send(datagram) {
                        Ok(()) => continue,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            proxy.metrics.dropped(&route.service, "queue");
                            continue;
                        }
                        Err(mpsc::error::TrySendError::Closed(datagram)) => datagram,
                    },
                };
                let (queue, queued) = mpsc::channel(SESSION_QUEUE);
                let _ = queue.try_send(datagram);
                sessions.insert(client, queue);
                running.spawn(session(proxy.clone(), socket.clone(), client, route.clone(), queued));
            }
            Some(_) = running.join_next() => {
                sessions.retain(|_, queue| !queue.is_closed());
            }
        }
    }
}

/// One client's session with one of the route's tasks: from picking the task until it is idle
/// or its task no longer takes connections.
async fn session(
    proxy: Arc<Proxy>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    route: DatagramRoute,
    mut queued: mpsc::Receiver<Bytes>,
) {
    let mut table = proxy.table.clone();
    let Some(service) = table.borrow_and_update().service(&route.service).cloned() else {
        return;
    };
    let Some(_admitted) = proxy.admit(service.id) else {
        proxy.metrics.dropped(&service.name, "limit");
        return;
    };
    let reached = proxy
        .reach(
            &service,
            |endpoint| {
                let proxy = &proxy;
                async move { connect_datagrams(proxy, &endpoint, route.target).await }
            },
            |upstream| match upstream {
                DatagramUpstream::Local(_) => Path::Local,
                DatagramUpstream::Remote(_) => Path::Remote,
            },
        )
        .await;
    let Some((counted, upstream)) = reached else {
        proxy.metrics.dropped(&service.name, "no_task");
        return;
    };
    let task = counted.key();
    proxy.metrics.open(&service.name, 1);
    let carried = carry_session(Session {
        proxy: &proxy,
        socket: &socket,
        client,
        service: &service,
        task,
        queued: &mut queued,
        table: &mut table,
        upstream,
    })
    .await;
    proxy.metrics.open(&service.name, -1);
    proxy.metrics.carried(&service.name, carried.0, carried.1);
    tracing::trace!(service = %service.name, %task, %client, "a UDP session ended");
}

/// Reaches port `port` of `endpoint`'s task for datagrams.
async fn connect_datagrams(
    proxy: &Proxy,
    endpoint: &Endpoint,
    port: u16,
) -> Result<DatagramUpstream, ConnectError> {
    let limit = proxy.config.connect_timeout;
    let connecting = async {
        if endpoint.node == proxy.here {
            let address = endpoint
                .local_address
                .or_else(|| proxy.local.borrow().get(&endpoint.task).copied())
                .ok_or(ConnectError::NoAddress(endpoint.task))?;
            return connected_socket(address, port)
                .await
                .map(DatagramUpstream::Local)
                .map_err(|e| ConnectError::Refused(e.to_string()));
        }
        let peer: PeerId =
            endpoint.node.as_str().parse().map_err(|_| {
                ConnectError::Refused(format!("node {} has no peer id", endpoint.node))
            })?;
        let stream = proxy
            .open_remote(peer, endpoint.task, port, ShoalStream::ProxyDatagrams)
            .await?;
        Ok(DatagramUpstream::Remote(Box::new(Framed::new(
            stream.compat(),
            codec(),
        ))))
    };
    tokio::time::timeout(limit, connecting)
        .await
        .map_err(|_| ConnectError::Timeout(limit))?
}

/// A socket of this node's connected to `address`:`port`.
async fn connected_socket(address: Ipv4Addr, port: u16) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).await?;
    socket.connect(SocketAddrV4::new(address, port)).await?;
    Ok(socket)
}

/// What a session carries between.
struct Session<'a> {
    proxy: &'a Proxy,
    socket: &'a UdpSocket,
    client: SocketAddr,
    service: &'a ServiceEndpoints,
    task: TaskId,
    queued: &'a mut mpsc::Receiver<Bytes>,
    table: &'a mut watch::Receiver<Arc<EndpointTable>>,
    upstream: DatagramUpstream,
}

/// Carries a session's datagrams both ways until it ends: the bytes sent to the task and to
/// the client.
async fn carry_session(session: Session<'_>) -> (u64, u64) {
    let Session {
        proxy,
        socket,
        client,
        service,
        task,
        queued,
        table,
        mut upstream,
    } = session;
    let idle = proxy.config.session_idle;
    let (mut to_task, mut to_client) = (0u64, 0u64);
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        tokio::select! {
            datagram = queued.recv() => {
                let Some(datagram) = datagram else { break };
                let sent = match &mut upstream {
                    DatagramUpstream::Local(task) => task.send(&datagram).await.is_ok(),
                    DatagramUpstream::Remote(stream) => stream.send(datagram.clone()).await.is_ok(),
                };
                if !sent {
                    break;
                }
                to_task += datagram.len() as u64;
            }
            answer = receive(&mut upstream, &mut buffer) => {
                let Some(answer) = answer else { break };
                if let Ok(length) = socket.send_to(&answer, client).await {
                    to_client += length as u64;
                }
            }
            () = tokio::time::sleep_until(deadline) => break,
            changed = table.changed() => {
                if changed.is_err() || !still_takes_connections(&table.borrow_and_update(), service, task) {
                    break;
                }
                continue;
            }
        }
        deadline = tokio::time::Instant::now() + idle;
    }
    (to_task, to_client)
}

/// The next datagram the upstream sends back, or nothing once it cannot send any more. A
/// local task's refusal (its port is closed for now) is not an end: the next datagram may
/// find it open.
async fn receive(upstream: &mut DatagramUpstream, buffer: &mut [u8]) -> Option<Bytes> {
    match upstream {
        DatagramUpstream::Local(task) => loop {
            match task.recv(buffer).await {
                Ok(length) => return Some(Bytes::copy_from_slice(&buffer[..length])),
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tokio::time::sleep(RECEIVE_BACKOFF).await;
                }
                Err(_) => return None,
            }
        },
        DatagramUpstream::Remote(stream) => match stream.next().await {
            Some(Ok(frame)) => Some(frame.freeze()),
            _ => None,
        },
    }
}

/// Whether `task` is still one of `service`'s endpoints in `table`.
fn still_takes_connections(
    table: &EndpointTable,
    service: &ServiceEndpoints,
    task: TaskId,
) -> bool {
    table
        .service(&service.name)
        .is_some_and(|s| s.id == service.id && s.endpoints.iter().any(|e| e.task == task))
}

impl Proxy {
    /// Serves the datagram streams other nodes' proxies open to this node's tasks.
    pub async fn serve_datagram_streams(self: Arc<Self>, mut incoming: IncomingStreams) {
        while let Some((peer, stream)) = incoming.next().await {
            tokio::spawn(self.clone().answer_datagram_stream(peer, stream));
        }
    }

    /// Answers a datagram stream: reaches the task it names, then carries its frames to the
    /// task and the task's datagrams back, until the stream ends or is idle.
    async fn answer_datagram_stream(self: Arc<Self>, peer: PeerId, mut stream: Stream) {
        use futures::AsyncWriteExt as _;
        let Some((task, address, port)) = self.read_opening(peer, &mut stream).await else {
            return;
        };
        let Ok(socket) = connected_socket(address, port).await else {
            let _ = stream.write_all(&[Opened::Refused as u8]).await;
            return;
        };
        if stream.write_all(&[Opened::Connected as u8]).await.is_err() {
            return;
        }
        let _counted = OpenGuard::new(&self.open_per_task, task);
        let mut frames = Framed::new(stream.compat(), codec());
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        let idle = self.config.session_idle;
        loop {
            tokio::select! {
                frame = frames.next() => {
                    let Some(Ok(frame)) = frame else { return };
                    let _ = socket.send(&frame).await;
                }
                received = socket.recv(&mut buffer) => match received {
                    Ok(length) => {
                        if frames.send(Bytes::copy_from_slice(&buffer[..length])).await.is_err() {
                            return;
                        }
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {}
                    Err(_) => return,
                },
                () = tokio::time::sleep(idle) => return,
            }
        }
    }
}

/// A task that is stopped when dropped.
pub(crate) struct Owned(pub(crate) JoinHandle<()>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The UDP ports of the services that hold an address: each address and port with where it
/// leads.
pub fn service_routes(table: &EndpointTable) -> BTreeMap<(Ipv4Addr, u16), DatagramRoute> {
    let mut routes = BTreeMap::new();
    for service in table.services() {
        let Some(address) = service.address else {
            continue;
        };
        for port in &service.ports {
            if port.protocol == PortProtocol::Udp {
                routes.insert(
                    (address, port.target),
                    DatagramRoute {
                        service: service.name.clone(),
                        target: port.target,
                    },
                );
            }
        }
    }
    routes
}

/// One relay of a service address's UDP port: its port, its rule and its two sockets' tasks.
struct ServiceRelay {
    route: DatagramRoute,
    relay_port: u16,
    _serving: [Owned; 2],
}

/// Keeps one relay per UDP port of a service address, as the table says, for the agent's
/// life: two sockets on one port (on the network's `gateway`, where the tasks' datagrams are
/// turned, and on loopback, where the node's own are) and the packet filter rule that turns
/// the address and port towards them. A relay that is no longer wanted loses its rule first.
pub async fn run_service_relays(
    proxy: Arc<Proxy>,
    mut table: watch::Receiver<Arc<EndpointTable>>,
    redirect: Redirect,
    gateway: Ipv4Addr,
) {
    let mut relays: BTreeMap<(Ipv4Addr, u16), ServiceRelay> = BTreeMap::new();
    loop {
        let wanted = service_routes(&table.borrow_and_update());
        let stale: Vec<(Ipv4Addr, u16)> = relays
            .iter()
            .filter(|(key, relay)| wanted.get(key) != Some(&relay.route))
            .map(|(key, _)| *key)
            .collect();
        for key in stale {
            if let Some(relay) = relays.remove(&key)
                && let Err(error) = redirect.remove_udp(key.0, key.1, relay.relay_port).await
            {
                tracing::warn!(%error, address = %key.0, port = key.1, "cannot remove a UDP rule of the service network");
            }
        }
        for (key, route) in wanted {
            if relays.contains_key(&key) {
                continue;
            }
            match start_relay(&proxy, &redirect, gateway, key, &route).await {
                Ok(relay) => {
                    relays.insert(key, relay);
                }
                Err(error) => {
                    tracing::warn!(%error, service = %route.service, port = key.1, "this node cannot relay a UDP port of a service");
                }
            }
        }
        if table.changed().await.is_err() {
            return;
        }
    }
}

/// Why a service's UDP port cannot be relayed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// No port was free on both the gateway and loopback.
    #[error("no port free on both {gateway} and loopback: {error}")]
    NoPort {
        /// The network's gateway.
        gateway: Ipv4Addr,
        /// The last failure.
        error: std::io::Error,
    },
    /// The rule could not be installed.
    #[error(transparent)]
    Rule(#[from] crate::redirect::RedirectError),
}

async fn start_relay(
    proxy: &Arc<Proxy>,
    redirect: &Redirect,
    gateway: Ipv4Addr,
    (address, port): (Ipv4Addr, u16),
    route: &DatagramRoute,
) -> Result<ServiceRelay, RelayError> {
    let (on_gateway, on_loopback) = relay_sockets(gateway).await?;
    let relay_port = on_gateway.local_addr().map(|a| a.port()).unwrap_or(0);
    let serving = [
        Owned(tokio::spawn(relay(
            proxy.clone(),
            on_gateway,
            route.clone(),
        ))),
        Owned(tokio::spawn(relay(
            proxy.clone(),
            on_loopback,
            route.clone(),
        ))),
    ];
    redirect.add_udp(address, port, relay_port).await?;
    tracing::info!(service = %route.service, %address, port, relay_port, "relaying a UDP port of a service");
    Ok(ServiceRelay {
        route: route.clone(),
        relay_port,
        _serving: serving,
    })
}

/// Two sockets on one free port: the gateway's and loopback's.
async fn relay_sockets(gateway: Ipv4Addr) -> Result<(UdpSocket, UdpSocket), RelayError> {
    let mut last = std::io::Error::other("no attempt");
    for _ in 0..RELAY_PORT_ATTEMPTS {
        let on_gateway = UdpSocket::bind(SocketAddrV4::new(gateway, 0))
            .await
            .map_err(|error| RelayError::NoPort { gateway, error })?;
        let port = on_gateway
            .local_addr()
            .map_err(|error| RelayError::NoPort { gateway, error })?
            .port();
        match UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).await {
            Ok(on_loopback) => return Ok((on_gateway, on_loopback)),
            Err(error) => last = error,
        }
    }
    Err(RelayError::NoPort {
        gateway,
        error: last,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shoal_scheduler::{NodeId, PortSpec, Timestamp, synthetic};

    use super::*;
    use crate::addresses::AddressRange;

    #[test]
    fn every_udp_port_of_a_service_with_an_address_is_relayed() {
        let mut state = synthetic::cluster(&synthetic::ClusterShape::new(1, 7));
        let mut dns = synthetic::spec("dns", 1);
        let port = |target, published, protocol| PortSpec {
            target,
            published,
            protocol,
            host_mode: false,
        };
        dns.ports = vec![
            port(53, 0, PortProtocol::Udp),
            port(53, 0, PortProtocol::Tcp),
            port(5353, 15353, PortProtocol::Udp),
        ];
        synthetic::create_service(&mut state, dns, Timestamp(0)).expect("valid");
        let table = EndpointTable::build(
            &state,
            &AddressRange::default(),
            &NodeId::new("n"),
            &BTreeMap::new(),
        );
        let address = Ipv4Addr::new(10, 254, 0, 1);
        let route = |target| DatagramRoute {
            service: "dns".into(),
            target,
        };
        assert_eq!(
            service_routes(&table),
            BTreeMap::from([((address, 53), route(53)), ((address, 5353), route(5353))])
        );
    }

    #[test]
    fn a_session_ends_when_its_task_is_told_to_stop() {
        let here = NodeId::new("n");
        let (mut state, _) = crate::testkit::running(1, &[("echo", 1)]);
        let range = AddressRange::default();
        let table = EndpointTable::build(&state, &range, &here, &BTreeMap::new());
        let service = table.service("echo").expect("echo").clone();
        let task = service.endpoints[0].task;
        assert!(still_takes_connections(&table, &service, task));
        if let Some(t) = state.tasks.get_mut(&task) {
            t.desired = shoal_scheduler::DesiredState::Shutdown;
        }
        let after = EndpointTable::build(&state, &range, &here, &BTreeMap::new());
        assert!(!still_takes_connections(&after, &service, task));
    }
}
