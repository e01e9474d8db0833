//! The control API's surface: on TCP (`--api-addr`) behind the agent's bearer token, which only
//! the Unix socket's owner can read; every error JSON with its status (a bad body, query, path,
//! method or route); and the OpenAPI document, which names every route the router serves.
//! Requests are sent as raw HTTP/1.1, so that the server is checked apart from our client.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use shoal_agent::control::api::{self, ApiTokenResponse, CreateServiceRequest};
use shoal_agent::control::client::{ClientError, ControlClient};
use shoal_agent::control::forward::{ForwardedAnswer, ForwardedCall};
use shoal_agent::control::routes;
use shoal_agent::control::views::ServiceRow;
use shoal_agent::daemon::{Agent, AgentConfig, ExecutorKind};
use shoal_discovery::ShoalProtocol;
use shoal_tests::*;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Starts a sim agent that also serves its API on a free loopback port.
async fn start_tcp_agent(dir: &Path, join: Vec<String>) -> Agent {
    let mut config = AgentConfig::for_tests(dir, ExecutorKind::Sim);
    config.join = join;
    config.api_addr = Some("127.0.0.1:0".parse().expect("an address"));
    Agent::start(config).await.expect("agent starts")
}

/// Where a raw request goes.
#[derive(Debug, Clone)]
enum Target {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// A raw answer: its status, its head (lower-cased) and its body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    /// The body as JSON.
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// Asserts a JSON error of `status` whose message says `says`.
    fn assert_error(&self, status: u16, says: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert!(
            self.head.contains("content-type: application/json"),
            "{status} is not JSON: {}",
            self.head
        );
        let error = self.json()["error"].as_str().map(str::to_owned);
        let error = error.unwrap_or_else(|| panic!("no error message: {}", self.body));
        assert!(error.contains(says), "{status}: {error:?} lacks {says:?}");
    }
}

/// Sends one request as raw HTTP/1.1 and reads the whole answer.
async fn raw(
    target: &Target,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: shoal\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    match target {
        Target::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path).await.expect("socket");
            exchange(stream, request).await
        }
        Target::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("tcp");
            exchange(stream, request).await
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: String) -> Answer {
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let head = head.to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Answer { status, head, body }
}

/// The payload of a chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_tcp_api_needs_the_token_that_only_the_socket_gives() {
    init_logging();
    let dirs = temp_dirs(2);
    let agents = start_joined(&dirs, |dir, join| async move {
        start_tcp_agent(&dir, join).await
    })
    .await;
    wait_ready_nodes(&agents[0], 2).await;
    let agent = &agents[0];
    let addr = agent.api_addr().expect("a TCP API");
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    // The socket's owner reads the token; it is the one kept owner-only in the data dir.
    let given: ApiTokenResponse = client(agent).get(api::API_TOKEN).await.expect("the token");
    assert_eq!(given.addr, Some(addr.to_string()));
    let file = dirs[0].path().join("api-token");
    assert_eq!(
        std::fs::read_to_string(&file).expect("token file").trim(),
        given.token
    );
    let token = given.token;

    // With the token, the TCP API works: a write, and `shoal service ls --host`.
    let remote = ControlClient::tcp(addr.to_string(), Some(token.clone()));
    let _: serde_json::Value = remote
        .post(
            api::SERVICES,
            &CreateServiceRequest {
                spec: sim_spec("web", 1),
            },
        )
        .await
        .expect("create over TCP");
    let rows: Vec<ServiceRow> = remote.get(api::SERVICES).await.expect("list over TCP");
    assert_eq!(
        rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["web"]
    );
    let host = format!("tcp://{addr}");
    shoal_remote(&["service", "ls", "--host", &host, "--api-token", &token])
        .await
        .expect("shoal service ls --host with the token");

    // Without it, or with a wrong one: 401, JSON, and the CLI says what to do.
    let tcp = Target::Tcp(addr);
    for headers in [
        &[][..],
        &[("authorization", "Bearer wrong")][..],
        &[("authorization", "Basic eA==")][..],
    ] {
        let answer = raw(&tcp, "GET", api::SERVICES, headers, "").await;
        answer.assert_error(401, "token");
        assert!(
            answer.head.contains("www-authenticate: bearer"),
            "{}",
            answer.head
        );
    }
    let refused = ControlClient::tcp(addr.to_string(), Some("wrong".into()))
        .get::<Vec<ServiceRow>>(api::SERVICES)
        .await
        .expect_err("a wrong token is refused");
    assert!(
        matches!(refused, ClientError::Unauthorized { .. }),
        "{refused:?}"
    );
    let said = shoal_remote(&["service", "ls", "--host", &host, "--api-token", "wrong"])
        .await
        .expect_err("the CLI with a wrong token fails")
        .to_string();
    assert!(
        said.contains("401") && said.contains("--api-token") && said.contains("SHOAL_API_TOKEN"),
        "{said}"
    );
    let said = shoal_remote(&["service", "ls", "--host", &host])
        .await
        .expect_err("the CLI without a token fails")
        .to_string();
    assert!(said.contains("`shoal cluster info`"), "{said}");

    // The token is never given over TCP, nor to another agent.
    let bearer = format!("Bearer {token}");
    raw(
        &tcp,
        "GET",
        api::API_TOKEN,
        &[("authorization", &bearer)],
        "",
    )
    .await
    .assert_error(403, "Unix socket");
    // Nor are the cluster's join tokens: the API token opens the API, not the cluster.
    raw(
        &tcp,
        "GET",
        shoal_agent::control::join_tokens::JOIN_TOKENS,
        &[("authorization", &bearer)],
        "",
    )
    .await
    .assert_error(403, "own socket only");
    // `cluster info` on the agent's own socket names its TCP API and token.
    shoal_cli(agent.socket().to_path_buf(), &["cluster", "info"])
        .await
        .expect("shoal cluster info");
    let forwarded = forwarded_get(&agents[1], agent, api::API_TOKEN).await;
    let why = String::from_utf8_lossy(&forwarded.body);
    assert!(
        forwarded.status == 403 && why.contains("Unix socket"),
        "{why}"
    );

    // An agent that is not there: a clear message.
    let closed = free_port().await;
    let unreachable = ControlClient::tcp(closed.to_string(), Some(token))
        .get::<Vec<ServiceRow>>(api::SERVICES)
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(unreachable, ClientError::Connect { .. }),
        "{unreachable:?}"
    );
    assert!(
        unreachable
            .to_string()
            .contains(&format!("cannot reach the shoal agent at tcp://{closed}"))
    );
    for agent in agents {
        agent.shutdown().await;
    }
}

/// Runs `shoal ARGS` (no `--socket`) on a blocking thread, as the binary would.
async fn shoal_remote(args: &[&str]) -> anyhow::Result<()> {
    use clap::Parser as _;
    let argv: Vec<String> = std::iter::once("shoal")
        .chain(args.iter().copied())
        .map(str::to_owned)
        .collect();
    tokio::task::spawn_blocking(move || {
        shoal_agent::cli::run(shoal_agent::cli::Cli::try_parse_from(argv)?)
    })
    .await?
}

/// `GET uri` as `from` forwards calls to `to` over the mesh (`/shoal/control/1`).
async fn forwarded_get(from: &Agent, to: &Agent, uri: &str) -> ForwardedAnswer {
    let call = ForwardedCall {
        method: "GET".into(),
        uri: uri.into(),
        request_id: None,
        body: Vec::new(),
    };
    let bytes = shoal_consensus::codec::encode(&call).expect("encoded");
    let peer = to.mesh().local_peer_id();
    let answer = from
        .mesh()
        .request(peer, ShoalProtocol::Control, bytes)
        .await
        .expect("an answer");
    shoal_consensus::codec::decode(&answer).expect("decoded")
}

/// A loopback address nothing listens on (bound, then released).
async fn free_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_error_is_json_and_the_openapi_document_names_every_route() {
    init_logging();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_tcp_agent(dir.path(), vec![]).await;
    eventually("a cluster", Duration::from_secs(10), || async {
        agent.quorum().cluster_id().map(|_| ())
    })
    .await;
    let socket = Target::Unix(agent.socket().to_path_buf());
    let json = [("content-type", "application/json")];

    // Bodies, queries, methods and routes axum refuses by itself: JSON, with the right status.
    let json_body = |body: &'static str| (&json[..], body);
    let plain = (&[][..], "");
    let cases = [
        ("POST", api::SERVICES, json_body("{"), 400, "EOF"),
        ("POST", api::SERVICES, (&[][..], "{}"), 415, "Content-Type"),
        (
            "POST",
            api::SERVICES,
            json_body(r#"{"spec": 3}"#),
            422,
            "spec",
        ),
        (
            "POST",
            "/v1/services/web/scale",
            json_body(r#"{"replicas": "x"}"#),
            422,
            "replicas",
        ),
        ("GET", "/v1/services?stale=maybe", plain, 400, "stale"),
        ("DELETE", api::INFO, plain, 405, "accepts GET"),
        ("GET", "/v1/nowhere", plain, 404, "/v1/openapi.json"),
    ];
    for (method, path, (headers, body), status, says) in cases {
        raw(&socket, method, path, headers, body)
            .await
            .assert_error(status, says);
    }
    let answer = raw(&socket, "GET", "/v1/nowhere", &[], "").await;
    answer.assert_error(404, "/v1/nowhere");

    // The document, on the socket and on TCP, names exactly the routes the router serves.
    let served = served();
    let document = raw(&socket, "GET", api::OPENAPI, &[], "").await;
    assert_eq!(document.status, 200, "{}", document.body);
    assert_eq!(documented(&document.json()), served);
    let token: ApiTokenResponse = client(&agent).get(api::API_TOKEN).await.expect("the token");
    let bearer = format!("Bearer {}", token.token);
    let tcp = Target::Tcp(agent.api_addr().expect("a TCP API"));
    let over_tcp = raw(&tcp, "GET", api::OPENAPI, &[("authorization", &bearer)], "").await;
    assert_eq!(over_tcp.json(), document.json());

    // And each documented route is one the router has: never "no route", never 405.
    for (method, path) in &served {
        let path = path
            .replace("{name}", "no-such-service")
            .replace("{node}", "no-such-node")
            .replace("{task}", "no-such-task");
        let answer = raw(&socket, method, &path, &json, "[").await;
        assert!(
            answer.head.contains("content-type: application/json"),
            "{method} {path}: {}",
            answer.head
        );
        let error = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            answer.status != 405 && !error.starts_with("no route"),
            "{method} {path} is documented but not routed: {} {error}",
            answer.status
        );
    }
    agent.shutdown().await;
}

/// The `(METHOD, path)` pairs of an OpenAPI document.
fn documented(document: &Value) -> BTreeSet<(String, String)> {
    const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];
    let mut pairs = BTreeSet::new();
    let paths = document["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for method in item.as_object().expect("a path item").keys() {
            if METHODS.contains(&method.as_str()) {
                pairs.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    pairs
}

/// The `(METHOD, path)` pairs the router serves.
fn served() -> BTreeSet<(String, String)> {
    routes::served()
        .into_iter()
        .map(|(method, path)| (method.as_str().to_owned(), path))
        .collect()
}
