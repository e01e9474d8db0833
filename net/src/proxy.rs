//! The service proxy: carries each connection made to a service's virtual address to one of the
//! service's tasks. The node's packet filter turns every TCP connection to the range of service
//! addresses towards the proxy's port ([`crate::redirect`]); the proxy reads where the
//! connection was going (the service's address and port), picks a task and connects to it: to a
//! task of this node directly, to a task of another node over a [`PROXY_PROTOCOL`] stream of the
//! mesh (noise-encrypted and authenticated, through the same port as the rest of the mesh) to
//! that node's agent, which connects to its task.
//!
//! Balancing is least connections: each proxy knows exactly how many connections it has open
//! to each task (it made them), a service has few tasks, so looking at all of them is cheap and
//! exact; equal ones take turns. Power of two choices pays where load figures are stale or
//! tasks are many, neither of which holds here. A connection that cannot be made to one task
//! goes to the next (at most [`CONNECT_ATTEMPTS`] tasks).
//!
//! Bounded: connections per service, the bytes in flight per connection (one buffer each way),
//! the time to connect and to open a stream.
//!
//! [`PROXY_PROTOCOL`]: shoal_discovery::ShoalStream::Proxy

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use shoal_discovery::{IncomingStreams, Mesh, PeerId, ShoalStream, Stream};
use shoal_scheduler::{NodeId, ServiceId, TaskId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::compat::FuturesAsyncReadCompatExt as _;

use crate::endpoints::{Endpoint, EndpointTable, ServiceEndpoints};
use crate::metrics::{Path, ProxyMetrics};

/// Tasks tried for one connection at most.
pub const CONNECT_ATTEMPTS: usize = 3;
/// Streams opened to one task's node for one connection at most, when the node drops them
/// unanswered.
pub const OPEN_ATTEMPTS: usize = 5;
/// The bytes of a stream's opening: the task (8) and its port (2).
pub(crate) const OPENING_BYTES: usize = 10;

/// The addresses of this node's tasks on its service network.
pub type LocalAddresses = BTreeMap<TaskId, Ipv4Addr>;

/// The proxy's bounds.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Connections open at once to one service through this proxy; more are closed at once.
    pub max_connections_per_service: usize,
    /// The buffer of each direction of a connection, in bytes.
    pub buffer_bytes: usize,
    /// How long connecting to a task (or opening a stream to its node) may take.
    pub connect_timeout: Duration,
    /// How long a UDP session (a client address and a service port) lives without a datagram
    /// either way.
    pub session_idle: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            max_connections_per_service: 10_000,
            buffer_bytes: 64 * 1024,
            connect_timeout: Duration::from_secs(3),
            session_idle: Duration::from_secs(60),
        }
    }
}

/// How a stream's opening is answered: one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Opened {
    /// Connected to the task: the stream carries the connection from here on.
    Connected = 0,
    /// No such task runs on this node.
    NoSuchTask = 1,
    /// The task did not take the connection.
    Refused = 2,
}

impl Opened {
    pub(crate) fn from_byte(byte: u8) -> Option<Opened> {
        [Opened::Connected, Opened::NoSuchTask, Opened::Refused]
            .into_iter()
            .find(|o| *o as u8 == byte)
    }
}

/// Why a connection could not be made to one task.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Connecting took too long.
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    /// The task's node or the task itself refused.
    #[error("{0}")]
    Refused(String),
    /// The task runs on this node but its address is not known yet.
    #[error("task {0} has no address yet")]
    NoAddress(TaskId),
}

/// How a stream's opening failed.
enum OpenFailure {
    /// The stream ended before it was answered: the other agent dropped it unread.
    Dropped(std::io::Error),
    /// The other agent (or the mesh) said no.
    Answered(ConnectError),
}

/// The other end of a proxied connection.
enum Upstream {
    /// A task of this node.
    Local(TcpStream),
    /// A task of another node, through its agent.
    Remote(Stream),
}

/// One node's service proxy.
pub struct Proxy {
    pub(crate) here: NodeId,
    pub(crate) table: watch::Receiver<Arc<EndpointTable>>,
    pub(crate) local: watch::Receiver<Arc<LocalAddresses>>,
    pub(crate) mesh: Mesh,
    pub(crate) config: ProxyConfig,
    pub(crate) open_per_task: Mutex<BTreeMap<TaskId, usize>>,
    open_per_service: Mutex<BTreeMap<ServiceId, usize>>,
    turn: AtomicUsize,
    pub(crate) metrics: ProxyMetrics,
}

impl Proxy {
    /// The proxy of node `here`, reading the endpoint table and its tasks' addresses.
    pub fn new(
        here: NodeId,
        table: watch::Receiver<Arc<EndpointTable>>,
        local: watch::Receiver<Arc<LocalAddresses>>,
        mesh: Mesh,
        config: ProxyConfig,
        metrics: ProxyMetrics,
    ) -> Arc<Proxy> {
        Arc::new(Proxy {
            here,
            table,
            local,
            mesh,
            config,
            metrics,
            open_per_task: Mutex::new(BTreeMap::new()),
            open_per_service: Mutex::new(BTreeMap::new()),
            turn: AtomicUsize::new(0),
        })
    }

    /// Carries the connections `listener` accepts (those turned towards it) until it fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((client, _)) => {
                    tokio::spawn(self.clone().carry(client));
                }
                Err(error) => {
                    tracing::warn!(%error, "the service proxy stopped accepting");
                    return;
                }
            }
        }
    }

    /// Serves the streams other nodes' proxies open to this node's tasks.
    pub async fn serve_streams(self: Arc<Self>, mut incoming: IncomingStreams) {
        while let Some((peer, stream)) = incoming.next().await {
            tokio::spawn(self.clone().answer_stream(peer, stream));
        }
    }

    async fn carry(self: Arc<Self>, client: TcpStream) {
        let Some(target) = original_destination(&client) else {
            return;
        };
        let table = self.table.borrow().clone();
        let Some(service) = table.at_address(*target.ip()) else {
            tracing::debug!(%target, "a connection to no service's address");
            return;
        };
        self.forward(client, service, target.port()).await;
    }

    /// Carries `client` to port `port` of one of `service`'s tasks (the routing mesh's
    /// listeners come in here too).
    pub async fn forward(&self, client: TcpStream, service: &ServiceEndpoints, port: u16) {
        let Some(_admitted) = self.admit(service.id) else {
            tracing::warn!(service = %service.name, "too many connections to the service: refused one");
            self.metrics.dropped(&service.name, "limit");
            return;
        };
        let reached = self
            .reach(
                service,
                |endpoint| async move { self.connect(&endpoint, port).await },
                |upstream| match upstream {
                    Upstream::Local(_) => Path::Local,
                    Upstream::Remote(_) => Path::Remote,
                },
            )
            .await;
        let Some((_counted, upstream)) = reached else {
            tracing::debug!(service = %service.name, "no task took the connection");
            self.metrics.dropped(&service.name, "no_task");
            return;
        };
        self.metrics.open(&service.name, 1);
        let (to_task, to_client) = self.pipe(client, upstream).await;
        self.metrics.open(&service.name, -1);
        self.metrics.carried(&service.name, to_task, to_client);
    }

    /// Reaches one of `service`'s tasks with `connect`, trying the least loaded first and the
    /// next when one does not take it (at most [`CONNECT_ATTEMPTS`]): the upstream, with the
    /// count of its task's open connections (taken before connecting, held while the caller
    /// carries), its connect time counted by the path `path_of` says.
    pub(crate) async fn reach<U, Reaching>(
        &self,
        service: &ServiceEndpoints,
        connect: impl Fn(Endpoint) -> Reaching,
        path_of: impl Fn(&U) -> Path,
    ) -> Option<(OpenGuard<'_, TaskId>, U)>
    where
        Reaching: std::future::Future<Output = Result<U, ConnectError>>,
    {
        let mut tried: Vec<TaskId> = Vec::new();
        for _ in 0..CONNECT_ATTEMPTS {
            let candidates: Vec<&Endpoint> = service
                .endpoints
                .iter()
                .filter(|e| !tried.contains(&e.task))
                .collect();
            let endpoint = self.pick(&candidates)?;
            tried.push(endpoint.task);
            let counted = OpenGuard::new(&self.open_per_task, endpoint.task);
            let started = Instant::now();
            match connect(endpoint.clone()).await {
                Ok(upstream) => {
                    self.metrics
                        .connected(&service.name, path_of(&upstream), started.elapsed());
                    return Some((counted, upstream));
                }
                Err(error) => {
                    tracing::debug!(service = %service.name, task = %endpoint.task, %error, "a task did not take a connection; trying another");
                }
            }
        }
        None
    }

    /// Least connections among `candidates`, equal ones in turn.
    pub(crate) fn pick<'a>(&self, candidates: &[&'a Endpoint]) -> Option<&'a Endpoint> {
        let open = lock(&self.open_per_task);
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        least_connections(
            candidates,
            |task| open.get(&task).copied().unwrap_or(0),
            turn,
        )
    }

    /// Counts one more connection (or UDP session) to `service` while the guard lives, unless
    /// the service has as many as it may.
    pub(crate) fn admit(&self, service: ServiceId) -> Option<OpenGuard<'_, ServiceId>> {
        let open = lock(&self.open_per_service)
            .get(&service)
            .copied()
            .unwrap_or(0);
        (open < self.config.max_connections_per_service)
            .then(|| OpenGuard::new(&self.open_per_service, service))
    }

    async fn connect(&self, endpoint: &Endpoint, port: u16) -> Result<Upstream, ConnectError> {
        let limit = self.config.connect_timeout;
        let connecting = async {
            if endpoint.node == self.here {
                let address = endpoint
                    .local_address
                    .or_else(|| self.local.borrow().get(&endpoint.task).copied())
                    .ok_or(ConnectError::NoAddress(endpoint.task))?;
                let stream = TcpStream::connect(SocketAddrV4::new(address, port))
                    .await
                    .map_err(|e| ConnectError::Refused(e.to_string()))?;
                let _ = stream.set_nodelay(true);
                return Ok(Upstream::Local(stream));
            }
            let peer: PeerId = endpoint.node.as_str().parse().map_err(|_| {
                ConnectError::Refused(format!("node {} has no peer id", endpoint.node))
            })?;
            self.open_remote(peer, endpoint.task, port, ShoalStream::Proxy)
                .await
                .map(Upstream::Remote)
        };
        tokio::time::timeout(limit, connecting)
            .await
            .map_err(|_| ConnectError::Timeout(limit))?
    }

    /// Opens a `kind` stream to `peer` for port `port` of its task `task`, and waits for its
    /// agent to say that it reached the task. A stream the other agent dropped before it
    /// answered (its queue of new streams was full for a moment: a burst of connections) is
    /// opened again, at most [`OPEN_ATTEMPTS`] times, a little later each time.
    pub(crate) async fn open_remote(
        &self,
        peer: PeerId,
        task: TaskId,
        port: u16,
        kind: ShoalStream,
    ) -> Result<Stream, ConnectError> {
        let mut pause = Duration::from_millis(1);
        let mut attempt = 1;
        loop {
            match self.open_remote_once(peer, task, port, kind).await {
                Err(OpenFailure::Dropped(error)) if attempt < OPEN_ATTEMPTS => {
                    tracing::trace!(%peer, %task, %error, attempt, "a proxy stream was dropped before it was answered; opening another");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                Err(OpenFailure::Dropped(error)) => {
                    return Err(ConnectError::Refused(format!(
                        "node {peer} dropped {OPEN_ATTEMPTS} streams for task {task}: {error}"
                    )));
                }
                Err(OpenFailure::Answered(error)) => return Err(error),
                Ok(stream) => return Ok(stream),
            }
        }
    }

    async fn open_remote_once(
        &self,
        peer: PeerId,
        task: TaskId,
        port: u16,
        kind: ShoalStream,
    ) -> Result<Stream, OpenFailure> {
        let mut stream = self
            .mesh
            .open_stream(peer, kind)
            .await
            .map_err(|e| OpenFailure::Answered(ConnectError::Refused(e.to_string())))?;
        let mut opening = [0u8; OPENING_BYTES];
        opening[..8].copy_from_slice(&task.0.to_be_bytes());
        opening[8..].copy_from_slice(&port.to_be_bytes());
        stream
            .write_all(&opening)
            .await
            .map_err(OpenFailure::Dropped)?;
        stream.flush().await.map_err(OpenFailure::Dropped)?;
        let mut answer = [0u8; 1];
        stream
            .read_exact(&mut answer)
            .await
            .map_err(OpenFailure::Dropped)?;
        match Opened::from_byte(answer[0]) {
            Some(Opened::Connected) => Ok(stream),
            Some(Opened::NoSuchTask) => Err(OpenFailure::Answered(ConnectError::Refused(format!(
                "task {task} does not run on node {peer}"
            )))),
            _ => Err(OpenFailure::Answered(ConnectError::Refused(format!(
                "task {task} on node {peer} refused port {port}"
            )))),
        }
    }

    /// Answers a stream another node's proxy opened: connects to the task it names and carries
    /// the connection.
    async fn answer_stream(self: Arc<Self>, peer: PeerId, mut stream: Stream) {
        let Some((task, address, port)) = self.read_opening(peer, &mut stream).await else {
            return;
        };
        let limit = self.config.connect_timeout;
        let connected =
            tokio::time::timeout(limit, TcpStream::connect(SocketAddrV4::new(address, port))).await;
        let Ok(Ok(task_stream)) = connected else {
            let _ = stream.write_all(&[Opened::Refused as u8]).await;
            return;
        };
        let _ = task_stream.set_nodelay(true);
        if stream.write_all(&[Opened::Connected as u8]).await.is_err() {
            return;
        }
        let _counted = OpenGuard::new(&self.open_per_task, task);
        let _ = pipe_stream(task_stream, stream, self.config.buffer_bytes).await;
    }

    /// Reads a stream's opening: the task it is for, that task's address on this node, and
    /// the port. Answers [`Opened::NoSuchTask`] itself (and gives nothing) when the task does
    /// not run here.
    pub(crate) async fn read_opening(
        &self,
        peer: PeerId,
        stream: &mut Stream,
    ) -> Option<(TaskId, Ipv4Addr, u16)> {
        let mut opening = [0u8; OPENING_BYTES];
        let limit = self.config.connect_timeout;
        if !matches!(
            tokio::time::timeout(limit, stream.read_exact(&mut opening)).await,
            Ok(Ok(()))
        ) {
            return None;
        }
        let task = TaskId(u64::from_be_bytes(
            opening[..8].try_into().unwrap_or_default(),
        ));
        let port = u16::from_be_bytes([opening[8], opening[9]]);
        let address = self.local.borrow().get(&task).copied();
        let Some(address) = address else {
            tracing::debug!(%peer, %task, "a proxy stream for a task that does not run here");
            let _ = stream.write_all(&[Opened::NoSuchTask as u8]).await;
            return None;
        };
        Some((task, address, port))
    }

    /// Carries `client` to `upstream` until both are done: the bytes sent to the task and to the
    /// client.
    async fn pipe(&self, client: TcpStream, upstream: Upstream) -> (u64, u64) {
        let _ = client.set_nodelay(true);
        match upstream {
            Upstream::Local(task) => {
                let (mut client, mut task) = (client, task);
                tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut task,
                    self.config.buffer_bytes,
                    self.config.buffer_bytes,
                )
                .await
                .unwrap_or((0, 0))
            }
            Upstream::Remote(stream) => pipe_stream(client, stream, self.config.buffer_bytes).await,
        }
    }
}

/// Least connections: among `candidates`, one with the fewest open (`open`); of equal ones, the
/// first at or after position `turn` (modulo their number), so that equal ones take turns.
pub fn least_connections<'a>(
    candidates: &[&'a Endpoint],
    open: impl Fn(TaskId) -> usize,
    turn: usize,
) -> Option<&'a Endpoint> {
    let fewest = candidates.iter().map(|e| open(e.task)).min()?;
    let equal: Vec<&'a Endpoint> = candidates
        .iter()
        .copied()
        .filter(|e| open(e.task) == fewest)
        .collect();
    equal.get(turn % equal.len()).copied()
}

/// Copies both ways between a TCP connection and a mesh stream until both ends are done, each
/// end's close passed on as a half-close: the bytes sent each way (TCP to stream, stream to
/// TCP).
async fn pipe_stream(mut tcp: TcpStream, stream: Stream, buffer_bytes: usize) -> (u64, u64) {
    let mut stream = stream.compat();
    tokio::io::copy_bidirectional_with_sizes(&mut tcp, &mut stream, buffer_bytes, buffer_bytes)
        .await
        .unwrap_or((0, 0))
}

/// Where a connection turned towards the proxy was going (`SO_ORIGINAL_DST`).
fn original_destination(stream: &TcpStream) -> Option<SocketAddrV4> {
    let original =
        nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::OriginalDst).ok()?;
    let ip = Ipv4Addr::from(u32::from_be(original.sin_addr.s_addr));
    let port = u16::from_be(original.sin_port);
    let target = SocketAddrV4::new(ip, port);
    // A connection made to the proxy's own address was not turned towards it.
    match stream.local_addr() {
        Ok(SocketAddr::V4(local)) if local == target => None,
        _ => Some(target),
    }
}

/// Counts one open connection under `key` while it lives.
pub(crate) struct OpenGuard<'a, K: Ord + Copy> {
    counts: &'a Mutex<BTreeMap<K, usize>>,
    key: K,
}

impl<'a, K: Ord + Copy> OpenGuard<'a, K> {
    pub(crate) fn new(counts: &'a Mutex<BTreeMap<K, usize>>, key: K) -> Self {
        *lock(counts).entry(key).or_default() += 1;
        OpenGuard { counts, key }
    }

    /// What it counts under.
    pub(crate) fn key(&self) -> K {
        self.key
    }
}

impl<K: Ord + Copy> Drop for OpenGuard<'_, K> {
    fn drop(&mut self) {
        let mut counts = lock(self.counts);
        if let Some(open) = counts.get_mut(&self.key) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(task: u64) -> Endpoint {
        Endpoint {
            task: TaskId(task),
            node: NodeId::new("n"),
            local_address: None,
        }
    }

    #[test]
    fn the_least_loaded_task_is_picked_and_equal_ones_take_turns() {
        let endpoints = [endpoint(1), endpoint(2), endpoint(3)];
        let candidates: Vec<&Endpoint> = endpoints.iter().collect();
        let open = |task: TaskId| match task.0 {
            1 => 4,
            2 => 1,
            _ => 1,
        };
        let picked: Vec<u64> = (0..4)
            .map(|turn| {
                least_connections(&candidates, open, turn)
                    .expect("one")
                    .task
                    .0
            })
            .collect();
        assert_eq!(picked, vec![2, 3, 2, 3]);
        let idle = |_: TaskId| 0;
        let spread: Vec<u64> = (0..3)
            .map(|turn| {
                least_connections(&candidates, idle, turn)
                    .expect("one")
                    .task
                    .0
            })
            .collect();
        assert_eq!(spread, vec![1, 2, 3]);
        assert!(least_connections(&[], idle, 0).is_none());
    }

    #[test]
    fn an_open_count_lives_as_long_as_its_guard() {
        let counts = Mutex::new(BTreeMap::new());
        let first = OpenGuard::new(&counts, TaskId(1));
        let second = OpenGuard::new(&counts, TaskId(1));
        assert_eq!(lock(&counts).get(&TaskId(1)), Some(&2));
        drop(first);
        assert_eq!(lock(&counts).get(&TaskId(1)), Some(&1));
        drop(second);
        assert!(lock(&counts).is_empty());
    }
}
