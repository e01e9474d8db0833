//! The resolver the tasks of this node ask (over UDP and TCP, on the service network's
//! gateway): `SERVICE` is the service's virtual address, `tasks.SERVICE` the addresses of its
//! running tasks on this node's service network. A stack's services (`STACK_NAME`) are also
//! `NAME.STACK`, and a task of a stack finds the others by `NAME` alone, as the services of a
//! Compose file name each other. Every other name is forwarded, as asked, to the node's own
//! resolvers, and their answer relayed.
//!
//! Answers come from the endpoint table alone ([`crate::endpoints`]), read afresh for each
//! query, so that a change of the state is seen by the next query. Bounded: queries being
//! forwarded at once, TCP connections at once and queries per connection, and every wait.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};

use crate::endpoints::EndpointTable;

/// The label that asks for a service's tasks rather than its virtual address.
pub const TASKS_LABEL: &str = "tasks";
/// The largest DNS answer over UDP without EDNS.
const UDP_PAYLOAD: usize = 512;
/// The largest DNS message this resolver reads or relays.
const MAX_MESSAGE: usize = 65_535;
/// Queries forwarded at once; more are answered SERVFAIL.
const MAX_FORWARDS: usize = 256;
/// TCP connections served at once; more wait to be accepted.
const MAX_TCP_CONNECTIONS: usize = 64;
/// Queries one TCP connection may send.
const MAX_QUERIES_PER_CONNECTION: usize = 100;
/// How long a TCP connection may sit idle.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// How the resolver answers.
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// The resolvers that names outside the cluster go to, tried in order.
    pub upstream: Vec<SocketAddr>,
    /// How long a client may keep an answer about a service, in seconds.
    pub ttl: u32,
    /// How long one upstream resolver may take to answer.
    pub forward_timeout: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            upstream: Vec::new(),
            ttl: 5,
            forward_timeout: Duration::from_secs(2),
        }
    }
}

impl ResolverConfig {
    /// The name servers of a `resolv.conf` text, port 53.
    pub fn upstream_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
        text.lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some("nameserver")).then_some(())?;
                let ip: std::net::IpAddr = words.next()?.parse().ok()?;
                Some(SocketAddr::new(ip, 53))
            })
            .collect()
    }
}

/// What the resolver makes of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A name of the cluster: this answer.
    Local(Message),
    /// Another name: ask the upstream resolvers.
    Forward,
}

/// The service resolver of one node.
pub struct Resolver {
    table: watch::Receiver<Arc<EndpointTable>>,
    config: ResolverConfig,
    forwards: Semaphore,
}

impl Resolver {
    /// A resolver answering from the tables `table` sends.
    pub fn new(table: watch::Receiver<Arc<EndpointTable>>, config: ResolverConfig) -> Arc<Self> {
        Arc::new(Resolver {
            table,
            config,
            forwards: Semaphore::new(MAX_FORWARDS),
        })
    }

    /// The answer to `query`, asked from `asker`, from the current table.
    pub fn answer(&self, query: &Message, asker: Option<IpAddr>) -> Answer {
        let Some(question) = query.queries.first() else {
            return Answer::Local(reply(query, ResponseCode::FormErr));
        };
        let table = self.table.borrow().clone();
        let stack = match asker {
            Some(IpAddr::V4(address)) => table.stack_at(address),
            _ => None,
        };
        let Some(records) = cluster_records(&table, question.name(), stack, self.config.ttl) else {
            return Answer::Forward;
        };
        let mut answer = reply(query, ResponseCode::NoError);
        answer.metadata.authoritative = true;
        // A name of the cluster has IPv4 addresses only: any other type is answered empty
        // (no data), so that a client asking AAAA first goes on to ask A.
        if matches!(question.query_type(), RecordType::A | RecordType::ANY) {
            answer.add_answers(records);
        }
        Answer::Local(answer)
    }

    /// The bytes answering the query `bytes` from `asker`, if there is anything to answer: a
    /// malformed query whose header cannot be read is dropped.
    pub async fn respond(
        &self,
        bytes: &[u8],
        over_udp: bool,
        asker: Option<IpAddr>,
    ) -> Option<Vec<u8>> {
        let query = match Message::from_vec(bytes) {
            Ok(query) if query.metadata.message_type == MessageType::Query => query,
            Ok(_) => return None,
            Err(_) => return formerr(bytes),
        };
        if query.metadata.op_code != OpCode::Query {
            return reply(&query, ResponseCode::NotImp).to_vec().ok();
        }
        match self.answer(&query, asker) {
            Answer::Local(answer) => encode(answer, &query, over_udp),
            Answer::Forward => match self.forward(bytes).await {
                Some(relayed) => Some(relayed),
                None => reply(&query, ResponseCode::ServFail).to_vec().ok(),
            },
        }
    }

    /// The first answer of an upstream resolver to the query `bytes`, asked over UDP.
    async fn forward(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let _permit = self.forwards.try_acquire().ok()?;
        for upstream in &self.config.upstream {
            let asked = tokio::time::timeout(self.config.forward_timeout, ask(*upstream, bytes));
            match asked.await {
                Ok(Ok(answer)) => return Some(answer),
                Ok(Err(error)) => tracing::debug!(%upstream, %error, "upstream resolver failed"),
                Err(_) => tracing::debug!(%upstream, "upstream resolver timed out"),
            }
        }
        None
    }

    /// Answers the queries `socket` receives until it fails.
    pub async fn serve_udp(self: Arc<Self>, socket: UdpSocket) {
        let socket = Arc::new(socket);
        let mut buffer = vec![0u8; MAX_MESSAGE];
        loop {
            let (len, from) = match socket.recv_from(&mut buffer).await {
                Ok(received) => received,
                Err(error) => {
                    tracing::warn!(%error, "the service resolver's UDP socket failed");
                    return;
                }
            };
            let query = buffer[..len].to_vec();
            let (resolver, socket) = (self.clone(), socket.clone());
            tokio::spawn(async move {
                if let Some(answer) = resolver.respond(&query, true, Some(from.ip())).await {
                    let _ = socket.send_to(&answer, from).await;
                }
            });
        }
    }

    /// Answers the connections `listener` accepts until it fails.
    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener) {
        let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
        loop {
            let Ok(permit) = connections.clone().acquire_owned().await else {
                return;
            };
            let (stream, asker) = match listener.accept().await {
                Ok((stream, asker)) => (stream, asker.ip()),
                Err(error) => {
                    tracing::warn!(%error, "the service resolver's TCP listener failed");
                    return;
                }
            };
            let resolver = self.clone();
            tokio::spawn(async move {
                resolver.serve_connection(stream, asker).await;
                drop(permit);
            });
        }
    }

    async fn serve_connection(&self, mut stream: TcpStream, asker: IpAddr) {
        for _ in 0..MAX_QUERIES_PER_CONNECTION {
            let Ok(Ok(query)) = tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await
            else {
                return;
            };
            let Some(answer) = self.respond(&query, false, Some(asker)).await else {
                return;
            };
            let Ok(len) = u16::try_from(answer.len()) else {
                return;
            };
            let mut framed = Vec::with_capacity(answer.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&answer);
            if stream.write_all(&framed).await.is_err() {
                return;
            }
        }
    }
}

/// Whether `name` can be asked for as one DNS label: 1 to 63 letters, digits and `-`, neither
/// first nor last a `-`. Other service names work, but not through the resolver.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The records of `name`, asked by a task of `stack`, if it is a name of the cluster: a
/// service's virtual address (`SERVICE`, `SERVICE.STACK`), or its tasks' addresses
/// (`tasks.SERVICE`, `tasks.SERVICE.STACK`).
fn cluster_records(
    table: &EndpointTable,
    name: &Name,
    stack: Option<&str>,
    ttl: u32,
) -> Option<Vec<Record>> {
    let labels: Vec<String> = name
        .iter()
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .collect();
    let tasks_of = |service: &crate::ServiceEndpoints| -> Vec<Ipv4Addr> {
        service
            .endpoints
            .iter()
            .filter_map(|e| e.local_address)
            .collect()
    };
    let addresses: Vec<Ipv4Addr> = match labels.as_slice() {
        [service] => vec![table.service_in_stack(service, stack)?.address?],
        [tasks, service] if tasks == TASKS_LABEL => {
            tasks_of(table.service_in_stack(service, stack)?)
        }
        [tasks, service, named] if tasks == TASKS_LABEL => {
            tasks_of(table.service(&format!("{named}_{service}"))?)
        }
        [service, named] => vec![table.service(&format!("{named}_{service}"))?.address?],
        _ => return None,
    };
    Some(
        addresses
            .into_iter()
            .map(|ip| Record::from_rdata(name.clone(), ttl, RData::from(ip)))
            .collect(),
    )
}

/// A response to `query` with its question and `code`.
fn reply(query: &Message, code: ResponseCode) -> Message {
    let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
    answer.metadata.recursion_desired = query.metadata.recursion_desired;
    answer.metadata.recursion_available = true;
    answer.metadata.response_code = code;
    answer.add_queries(query.queries.iter().cloned());
    answer
}

/// FORMERR for a query whose header at least can be read.
fn formerr(bytes: &[u8]) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]);
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
        .to_vec()
        .ok()
}

/// `answer` encoded; over UDP, cut to the truncated form when larger than the client takes (it
/// then asks again over TCP).
fn encode(answer: Message, query: &Message, over_udp: bool) -> Option<Vec<u8>> {
    let bytes = answer.to_vec().ok()?;
    let limit = query.edns.as_ref().map_or(UDP_PAYLOAD, |e| {
        usize::from(e.max_payload()).max(UDP_PAYLOAD)
    });
    if over_udp && bytes.len() > limit {
        let mut cut = reply(query, ResponseCode::NoError);
        cut.metadata.authoritative = true;
        cut.metadata.truncation = true;
        return cut.to_vec().ok();
    }
    Some(bytes)
}

/// One query to `upstream` over UDP, from a socket of its own (so answers cannot cross).
async fn ask(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buffer = vec![0u8; MAX_MESSAGE];
    let len = socket.recv(&mut buffer).await?;
    buffer.truncate(len);
    Ok(buffer)
}

/// One length-prefixed DNS message from a TCP stream.
async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = usize::from(stream.read_u16().await?);
    let mut message = vec![0u8; len];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

#[cfg(test)]
mod tests;
