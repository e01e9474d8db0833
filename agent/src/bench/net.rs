//! `shoal bench net`: the service network's paths side by side, on the local engine with the
//! locally built test image. One task serves HTTP (busybox httpd); this process sends many
//! short requests (one connection each, `concurrency` at a time) and fetches one large file,
//! three ways: straight to the task's address on the service network (the floor), to the
//! service's virtual address (the node's packet filter turns it to the agent's proxy, which
//! carries it to the task), and to the port the service publishes (the routing mesh's
//! listener, then the proxy). The remote path (a task on another node, over a mesh stream)
//! needs a second machine: the container harness's tests cover it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shoal_scheduler::{NodeState, PortProtocol, PortSpec};
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
const NETWORK: &str = "shoal-bench";
const BRIDGE: &str = "shoalbench0";
const PROXY_PORT: u16 = 17949;
const PUBLISHED: u16 = 18089;

/// What one path did.
struct PathFigures {
    requests_per_second: f64,
    p50: Duration,
    p99: Duration,
    bulk_mib_per_second: f64,
}

/// Runs the benchmark.
pub async fn run(args: &NetBenchArgs) -> anyhow::Result<()> {
    let docker = crate::bench::engine_with_image(&args.image).await?;
    let dir = crate::bench::e2e::tempfile_dir("net")?;
    let mut config = AgentConfig::for_tests(&dir, ExecutorKind::Docker);
    config.service_network = Some(ServiceNetworkConfig {
        proxy_port: PROXY_PORT,
        ..ServiceNetworkConfig::on(NetworkConfig::new(NETWORK, BRIDGE, &dir))
    });
    let agent = Agent::start(config).await?;
    let result = measure(&agent, args).await;
    let node = agent.node_id().to_string();
    agent.shutdown().await;
    crate::bench::e2e::remove_labelled(&docker, "io.shoal.node.id", &node).await;
    let _ = docker.remove_network(NETWORK).await;
    let _ = std::fs::remove_dir_all(&dir);
    let paths = result?;

    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>12}",
        "path", "req/s", "p50", "p99", "bulk MiB/s"
    );
    for (name, figures) in &paths {
        println!(
            "{name:<44} {:>10.0} {:>8.0}µs {:>8.0}µs {:>12.0}",
            figures.requests_per_second,
            micros(figures.p50),
            micros(figures.p99),
            figures.bulk_mib_per_second
        );
    }
    let floor = &paths[0].1;
    for (name, figures) in &paths[1..] {
        println!(
            "{name}: {:.0}% of the floor's requests/s, p50 +{:.0}µs, bulk {:.0}% of the floor's",
            100.0 * figures.requests_per_second / floor.requests_per_second,
            micros(figures.p50) - micros(floor.p50),
            100.0 * figures.bulk_mib_per_second / floor.bulk_mib_per_second,
        );
    }
    let json: Vec<String> = ["floor", "service_address", "published_port"]
        .iter()
        .zip(&paths)
        .map(|(key, (_, f))| {
            format!(
                "\"{key}\":{{\"rps\":{:.0},\"p50_us\":{:.0},\"p99_us\":{:.0},\"bulk_mib_s\":{:.0}}}",
                f.requests_per_second,
                micros(f.p50),
                micros(f.p99),
                f.bulk_mib_per_second
            )
        })
        .collect();
    println!("{{\"bench\":\"net\",{}}}", json.join(","));
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Serves, waits until every path answers, and measures each.
async fn measure(agent: &Agent, args: &NetBenchArgs) -> anyhow::Result<Vec<(String, PathFigures)>> {
    crate::bench::wait_until("this node is ready", LIMIT, || {
        let state = agent.quorum().state();
        state
            .nodes
            .get(agent.node_id())
            .is_some_and(|n| n.state == NodeState::Ready)
    })
    .await?;
    let mut spec = shoal_scheduler::synthetic::spec("bench-web", 1);
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
        published: PUBLISHED,
        protocol: PortProtocol::Tcp,
        host_mode: false,
    }];
    let client = ControlClient::new(agent.socket());
    let created: CreateServiceResponse = client
        .post(api::SERVICES, &CreateServiceRequest { spec })
        .await?;
    let executor = agent.executor().context("no executor")?.clone();
    let started = Instant::now();
    let task = loop {
        let addresses = executor.task_addresses().await?;
        if let Some(address) = addresses.values().next() {
            break *address;
        }
        anyhow::ensure!(started.elapsed() < LIMIT, "the task never got an address");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let index = agent.quorum().state().services[&created.id]
        .address_index
        .context("the service has no address")?;
    let vip = shoal_net::AddressRange::default()
        .address(index)
        .context("the address is out of range")?;
    let paths = [
        ("task address (the floor)", SocketAddr::from((task, 80))),
        (
            "service address (proxy, local task)",
            SocketAddr::from((vip, 80)),
        ),
        (
            "published port (routing mesh, proxy)",
            SocketAddr::from((Ipv4Addr::LOCALHOST, PUBLISHED)),
        ),
    ];
    let mut figures = Vec::new();
    for (name, at) in paths {
        let started = Instant::now();
        // The bulk file is written before httpd starts: an answer means it is all there.
        while get(at, "/").await.is_err() {
            anyhow::ensure!(started.elapsed() < LIMIT, "{name} ({at}) never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        figures.push((name.to_owned(), path_figures(at, args).await?));
    }
    Ok(figures)
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
