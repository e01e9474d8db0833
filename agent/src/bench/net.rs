//! `shoal bench net`: the service network's paths side by side, on the local engine with the
//! locally built test image. Two agents run in this process, each with its own service network
//! on the engine: the near one, which every measured connection enters, and the far one, which
//! stands for another machine (its proxy is reached over a mesh stream on loopback). Each runs
//! one task serving HTTP (busybox httpd). This process sends many short requests (one
//! connection each, `concurrency` at a time) and fetches one large file, five ways: straight
//! to the near task's address (the floor); to the near service's virtual address (the node's
//! packet filter turns it to the near agent's proxy, which carries it to its task); to the far
//! service's virtual address (the near proxy carries it over a mesh stream to the far agent,
//! which connects to its task); and to the port each service publishes on the near agent (the
//! routing mesh's listener, then the proxy). The near agent's own counters must show that the
//! connections took the paths named, or the run fails.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shoal_scheduler::{
    Constraint, ConstraintKey, ConstraintOp, NodeId, NodeState, PortProtocol, PortSpec,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::control::api::{self, CreateServiceRequest, CreateServiceResponse};
use crate::control::client::ControlClient;
use crate::daemon::{Agent, AgentConfig, ExecutorKind, ServiceNetworkConfig};
use crate::executor::NetworkConfig;

/// Flags of `shoal bench net`.
#[derive(clap::Args, Debug)]
pub struct NetBenchArgs {
    /// The image to serve with (busybox with `httpd`; must exist locally: build it with
    /// tests/images/build-busybox-image.sh).
    #[arg(long, default_value = "shoal-test/busybox:latest")]
    pub image: String,
    /// Short requests per path.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Size of the bulk transfer, in MiB.
    #[arg(long, default_value_t = 256)]
    pub bulk_mib: u64,
}

const LIMIT: Duration = Duration::from_secs(120);

/// One of the benchmark's two agents: its service network, proxy port, the address its
/// routing mesh listens on, its service and the port that service publishes.
struct Side {
    network: &'static str,
    bridge: &'static str,
    proxy_port: u16,
    publish_address: Ipv4Addr,
    service: &'static str,
    published: u16,
}

/// The agent every measured connection enters.
const NEAR: Side = Side {
    network: "shoal-bench-near",
    bridge: "shoalbenchn0",
    proxy_port: 17949,
    publish_address: Ipv4Addr::new(127, 0, 0, 2),
    service: "bench-near",
    published: 18089,
};
/// The agent that stands for another machine.
const FAR: Side = Side {
    network: "shoal-bench-far",
    bridge: "shoalbenchf0",
    proxy_port: 17950,
    publish_address: Ipv4Addr::new(127, 0, 0, 3),
    service: "bench-far",
    published: 18090,
};

/// What one path did.
struct PathFigures {
    requests_per_second: f64,
    p50: Duration,
    p99: Duration,
    bulk_mib_per_second: f64,
}

/// One measured path: its name, its key in the JSON line, where it connects.
struct MeasuredPath {
    name: &'static str,
    key: &'static str,
    at: SocketAddr,
}

/// Runs the benchmark.
pub async fn run(args: &NetBenchArgs) -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        crate::daemon::init_logging();
    }
    let docker = crate::bench::engine_with_image(&args.image).await?;
    let dir = crate::bench::e2e::tempfile_dir("net")?;
    let far = Agent::start(side_config(&dir.join("far"), &FAR, Vec::new())).await?;
    let join = far
        .mesh()
        .listen_addrs()
        .await?
        .first()
        .map(ToString::to_string)
        .context("the far agent has no listen address")?;
    let mut near_config = side_config(&dir.join("near"), &NEAR, vec![join]);
    near_config.metrics_addr = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let near = Agent::start(near_config).await;
    let result = match &near {
        Ok(near) => measure(near, &far, args).await,
        Err(error) => Err(anyhow::anyhow!("the near agent did not start: {error}")),
    };
    for agent in [near.ok(), Some(far)].into_iter().flatten() {
        let node = agent.node_id().to_string();
        agent.shutdown().await;
        crate::bench::e2e::remove_labelled(&docker, "io.shoal.node.id", &node).await;
    }
    for side in [&NEAR, &FAR] {
        let _ = docker.remove_network(side.network).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    report(&result?);
    Ok(())
}

fn side_config(dir: &Path, side: &Side, join: Vec<String>) -> AgentConfig {
    let mut config = AgentConfig::for_tests(dir, ExecutorKind::Docker);
    config.join = join;
    config.service_network = Some(ServiceNetworkConfig {
        proxy_port: side.proxy_port,
        publish_address: side.publish_address.into(),
        ..ServiceNetworkConfig::on(NetworkConfig::new(side.network, side.bridge, dir))
    });
    config
}

fn report(paths: &[(MeasuredPath, PathFigures)]) {
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>12}",
        "path", "req/s", "p50", "p99", "bulk MiB/s"
    );
    for (path, figures) in paths {
        println!(
            "{:<44} {:>10.0} {:>8.0}µs {:>8.0}µs {:>12.0}",
            path.name,
            figures.requests_per_second,
            micros(figures.p50),
            micros(figures.p99),
            figures.bulk_mib_per_second
        );
    }
    let floor = &paths[0].1;
    for (path, figures) in &paths[1..] {
        println!(
            "{}: {:.0}% of the floor's requests/s, p50 +{:.0}µs, bulk {:.0}% of the floor's",
            path.name,
            100.0 * figures.requests_per_second / floor.requests_per_second,
            micros(figures.p50) - micros(floor.p50),
            100.0 * figures.bulk_mib_per_second / floor.bulk_mib_per_second,
        );
    }
    let json: Vec<String> = paths
        .iter()
        .map(|(path, f)| {
            format!(
                "\"{}\":{{\"rps\":{:.0},\"p50_us\":{:.0},\"p99_us\":{:.0},\"bulk_mib_s\":{:.0}}}",
                path.key,
                f.requests_per_second,
                micros(f.p50),
                micros(f.p99),
                f.bulk_mib_per_second
            )
        })
        .collect();
    println!("{{\"bench\":\"net\",{}}}", json.join(","));
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Serves one task on each agent, waits until every path answers, measures each, and checks
/// that the near agent's proxy carried them as named.
async fn measure(
    near: &Agent,
    far: &Agent,
    args: &NetBenchArgs,
) -> anyhow::Result<Vec<(MeasuredPath, PathFigures)>> {
    crate::bench::wait_until("both nodes are ready", LIMIT, || {
        let state = far.quorum().state();
        [near.node_id(), far.node_id()].iter().all(|id| {
            state
                .nodes
                .get(*id)
                .is_some_and(|n| n.state == NodeState::Ready)
        })
    })
    .await?;
    let client = ControlClient::new(far.socket());
    let near_vip = create_web(&client, far, &NEAR, near.node_id(), args).await?;
    let far_vip = create_web(&client, far, &FAR, far.node_id(), args).await?;
    let near_task = first_task_address(near).await?;
    first_task_address(far).await?;
    let paths = [
        MeasuredPath {
            name: "task address (the floor)",
            key: "floor",
            at: SocketAddr::from((near_task, 80)),
        },
        MeasuredPath {
            name: "service address, local task",
            key: "service_address",
            at: SocketAddr::from((near_vip, 80)),
        },
        MeasuredPath {
            name: "service address, task on the other node",
            key: "service_address_remote",
            at: SocketAddr::from((far_vip, 80)),
        },
        MeasuredPath {
            name: "published port, local task",
            key: "published_port",
            at: SocketAddr::from((NEAR.publish_address, NEAR.published)),
        },
        MeasuredPath {
            name: "published port, task on the other node",
            key: "published_port_remote",
            at: SocketAddr::from((NEAR.publish_address, FAR.published)),
        },
    ];
    let mut figures = Vec::new();
    for path in paths {
        let started = Instant::now();
        // The bulk file is written before httpd starts: an answer means it is all there.
        while get(path.at, "/").await.is_err() {
            anyhow::ensure!(
                started.elapsed() < LIMIT,
                "{} ({}) never answered",
                path.name,
                path.at
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let measured = path_figures(path.at, args)
            .await
            .with_context(|| format!("{} ({})", path.name, path.at))?;
        figures.push((path, measured));
    }
    check_paths(near, args.requests).await?;
    Ok(figures)
}

/// Creates the HTTP service of `side`, on node `on` only: its virtual address.
async fn create_web(
    client: &ControlClient,
    manager: &Agent,
    side: &Side,
    on: &NodeId,
    args: &NetBenchArgs,
) -> anyhow::Result<Ipv4Addr> {
    let mut spec = shoal_scheduler::synthetic::spec(side.service, 1);
    spec.image = args.image.clone();
    spec.args = vec![
        "sh".into(),
        "-c".into(),
        format!(
            "mkdir -p /www && echo ok > /www/index.html && head -c {}m /dev/zero > /www/bulk && \
             exec httpd -f -p 80 -h /www",
            args.bulk_mib
        ),
    ];
    spec.ports = vec![PortSpec {
        target: 80,
        published: side.published,
        protocol: PortProtocol::Tcp,
        host_mode: false,
    }];
    spec.constraints = vec![Constraint {
        key: ConstraintKey::NodeId,
        op: ConstraintOp::Eq,
        value: on.to_string(),
    }];
    let created: CreateServiceResponse = client
        .post(api::SERVICES, &CreateServiceRequest { spec })
        .await?;
    let index = manager.quorum().state().services[&created.id]
        .address_index
        .context("the service has no address")?;
    shoal_net::AddressRange::default()
        .address(index)
        .context("the address is out of range")
}

/// The address of the first task `agent` runs, once it has one.
async fn first_task_address(agent: &Agent) -> anyhow::Result<Ipv4Addr> {
    let executor = agent.executor().context("no executor")?.clone();
    let started = Instant::now();
    loop {
        let addresses = executor.task_addresses().await?;
        if let Some(address) = addresses.values().next() {
            return Ok(*address);
        }
        anyhow::ensure!(started.elapsed() < LIMIT, "the task never got an address");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fails unless the near agent's proxy counted at least `requests` connections on each
/// service's path: the near service's local, the far service's remote.
async fn check_paths(near: &Agent, requests: usize) -> anyhow::Result<()> {
    let at = near
        .metrics_addr()
        .context("the near agent serves no metrics")?;
    let text = get_text(at, "/metrics").await?;
    for (service, path) in [(NEAR.service, "local"), (FAR.service, "remote")] {
        let series =
            format!("shoal_proxy_connections_total{{service=\"{service}\",path=\"{path}\"}} ");
        let counted: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0);
        anyhow::ensure!(
            counted >= requests as f64,
            "the near agent's proxy carried {counted} connections of {service} on the {path} path, \
             not the {requests} or more measured: another agent's packet filter rule took the \
             node's connections (is a shoal agent running on this machine?)"
        );
    }
    Ok(())
}

async fn path_figures(at: SocketAddr, args: &NetBenchArgs) -> anyhow::Result<PathFigures> {
    let per_worker = args.requests.div_ceil(args.concurrency.max(1));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            tokio::spawn(async move {
                let mut took = Vec::with_capacity(per_worker);
                for _ in 0..per_worker {
                    let one = Instant::now();
                    get(at, "/").await?;
                    took.push(one.elapsed());
                }
                Ok::<_, std::io::Error>(took)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at_rank = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    let bulk_started = Instant::now();
    let bytes = get(at, "/bulk").await?;
    let bulk = bulk_started.elapsed();
    Ok(PathFigures {
        requests_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at_rank(0.5),
        p99: at_rank(0.99),
        bulk_mib_per_second: bytes as f64 / (1024.0 * 1024.0) / bulk.as_secs_f64(),
    })
}

/// One HTTP/1.0 GET of `path` on a connection of its own: the answer, as text.
async fn get_text(at: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(at).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text))
        .await
        .map_err(|_| std::io::Error::other("no answer within 10 s"))??;
    Ok(text)
}

/// One HTTP/1.0 GET of `path` on a connection of its own: the bytes of the answer.
async fn get(at: SocketAddr, path: &str) -> std::io::Result<usize> {
    let exchange = async {
        let mut stream = TcpStream::connect(at).await?;
        stream.set_nodelay(true)?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await?;
        let mut buffer = vec![0u8; 256 * 1024];
        let mut total = 0;
        loop {
            let n = stream.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            total += n;
        }
        if total == 0 {
            return Err(std::io::Error::other("an empty answer"));
        }
        Ok(total)
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| std::io::Error::other("no answer within 30 s"))?
}
