//! One agent on the real engine with its service network: tasks join the agent's network, find
//! services by name through the agent's resolver, and reach them through the agent's proxy,
//! balanced over the running tasks, over TCP and UDP; a task that stopped gets no more
//! connections.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use shoal_agent::control::api::{self, CreateServiceRequest, CreateServiceResponse, ScaleRequest};
use shoal_agent::daemon::ServiceNetworkConfig;
use shoal_agent::executor::NetworkConfig;
use shoal_scheduler::{PortProtocol, PortSpec, ServiceId, ServiceSpec};
use shoal_tests::*;

const CONVERGE: Duration = Duration::from_secs(30);
/// The test's own network, bridge and proxy port, clear of a real agent's.
const NETWORK: &str = "shoal-test";
const BRIDGE: &str = "shoaltest0";
const PROXY_PORT: u16 = 17948;
/// The port `web` publishes.
const PUBLISHED: u16 = 18080;
/// The UDP port `echo` publishes, and the one its tasks serve.
const ECHO_PUBLISHED: u16 = 18053;
const ECHO_PORT: u16 = 9053;

fn web_ports() -> Vec<PortSpec> {
    vec![PortSpec {
        target: 80,
        published: PUBLISHED,
        protocol: PortProtocol::Tcp,
        host_mode: false,
    }]
}

/// The page the node's published port answers (from this process, over loopback).
async fn fetch_published() -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", PUBLISHED))
            .await
            .ok()?;
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        Some(response.lines().last()?.trim().to_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()?
}

fn spec(name: &str, replicas: u64, script: &str) -> ServiceSpec {
    let mut spec = shoal_scheduler::synthetic::spec(name, replicas);
    spec.image = TEST_IMAGE.into();
    spec.args = vec!["sh".into(), "-c".into(), script.into()];
    spec.stop_grace_ms = 1_000;
    spec
}

/// Runs `args` in `container`, bounded; its stdout when it succeeds.
fn exec(container: &str, args: &[&str]) -> Option<String> {
    let output = Command::new("timeout")
        .args(["10", "docker", "exec", container])
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The IPv4 addresses an `nslookup` printed for its name (the server's own line left out).
fn looked_up(output: &str) -> BTreeSet<String> {
    output
        .split("Name:")
        .skip(1)
        .flat_map(|answer| answer.lines().skip(1))
        .filter_map(|line| line.trim().strip_prefix("Address:"))
        .map(|a| a.trim().trim_end_matches(":53").to_owned())
        .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .collect()
}

/// The pages `count` fetches of `http://web/` from `client` answered (each a task's hostname).
/// Plain HTTP through `nc`: the static busybox's `wget` crashes in these containers.
fn fetch_pages(client: &str, count: usize) -> Vec<String> {
    let fetch = r#"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 web 80"#;
    (0..count)
        .filter_map(|_| exec(client, &["sh", "-c", fetch]))
        .filter_map(|response| Some(response.lines().last()?.trim().to_owned()))
        .filter(|page| !page.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_reach_services_by_name_balanced_over_their_running_tasks() {
    let _network = NetworkGuard::new(
        NETWORK,
        BRIDGE,
        shoal_net::addresses::DEFAULT_RANGE,
        PROXY_PORT,
    );
    let DockerAgent {
        agent,
        node,
        client,
        dir: _dir,
        guard,
    } = DockerAgent::start_with(|config| {
        config.metrics_addr = Some(([127, 0, 0, 1], 0).into());
        config.service_network = Some(ServiceNetworkConfig {
            proxy_port: PROXY_PORT,
            ..ServiceNetworkConfig::on(NetworkConfig::new(NETWORK, BRIDGE, &config.data_dir))
        });
    })
    .await;
    let mut web = spec(
        "web",
        2,
        "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www",
    );
    web.ports = web_ports();
    let created: CreateServiceResponse = client
        .post(api::SERVICES, &CreateServiceRequest { spec: web })
        .await
        .expect("web created");
    let mut echo = spec("echo", 2, &format!("exec udp-echo serve {ECHO_PORT}"));
    echo.ports = vec![PortSpec {
        target: ECHO_PORT,
        published: ECHO_PUBLISHED,
        protocol: PortProtocol::Udp,
        host_mode: false,
    }];
    let echo: CreateServiceResponse = client
        .post(api::SERVICES, &CreateServiceRequest { spec: echo })
        .await
        .expect("echo created");
    let caller: CreateServiceResponse = client
        .post(
            api::SERVICES,
            &CreateServiceRequest {
                spec: spec("client", 1, "exec sleep 3600"),
            },
        )
        .await
        .expect("client created");
    wait_running(&client, "web", 2, CONVERGE).await;
    wait_running(&client, "client", 1, CONVERGE).await;
    let caller = running_containers(&node, &caller.id.to_string())
        .pop()
        .expect("the client's container");

    // Every task is on the service network and asks the agent's resolver.
    let networks = exec_docker(&[
        "inspect",
        "-f",
        "{{json .NetworkSettings.Networks}}",
        &caller,
    ]);
    assert!(networks.contains(NETWORK), "{networks}");

    // `web` is the service's virtual address; `tasks.web` its two tasks. The first answers may
    // wait for the table to see the tasks' addresses.
    let started = Instant::now();
    let mut tasks_seen = BTreeSet::new();
    while started.elapsed() < CONVERGE {
        tasks_seen = looked_up(&exec(&caller, &["nslookup", "tasks.web"]).unwrap_or_default());
        if tasks_seen.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(tasks_seen.len(), 2, "tasks.web: {tasks_seen:?}");
    let vip = looked_up(&exec(&caller, &["nslookup", "web"]).expect("nslookup web"));
    assert_eq!(
        vip,
        BTreeSet::from(["10.254.0.1".to_owned()]),
        "web is its virtual address"
    );
    let outside = exec(&caller, &["nslookup", "no-such-service"]);
    assert!(
        outside.is_none_or(|o| looked_up(&o).is_empty()),
        "a name of no service has no address"
    );

    // Connections to `web` go to both tasks.
    let answered_by: BTreeSet<String> = fetch_pages(&caller, 12).into_iter().collect();
    assert_eq!(
        answered_by.len(),
        2,
        "answers from both tasks: {answered_by:?}"
    );

    // The published port answers on the node (the routing mesh), from both tasks too.
    let mut published = BTreeSet::new();
    for _ in 0..12 {
        published.insert(fetch_published().await.expect("the published port answers"));
    }
    assert_eq!(
        published, answered_by,
        "the routing mesh reaches both tasks"
    );
    // Another service cannot take the port.
    let mut other = spec("other", 1, "exec sleep 3600");
    other.ports = web_ports();
    let refused = client
        .post::<_, CreateServiceResponse>(api::SERVICES, &CreateServiceRequest { spec: other })
        .await
        .expect_err("the port is web's");
    assert!(
        refused.to_string().contains("is published by service web"),
        "{refused}"
    );

    // The proxy counts what it carried.
    let metrics = scrape(agent.metrics_addr().expect("metrics served")).await;
    let carried = |line: &str| {
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let connections: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("shoal_proxy_connections_total{") && l.contains("service=\"web\"")
        })
        .map(carried)
        .sum();
    assert!(
        connections >= 24.0,
        "{connections} connections counted:\n{metrics}"
    );
    assert!(
        metrics.contains("shoal_proxy_bytes_total{service=\"web\",direction=\"to_client\"}"),
        "bytes counted"
    );

    // UDP: each client socket is a session with one of `echo`'s tasks, through the service's
    // name (a task's datagrams), its address (the node's own) and its published port.
    wait_running(&client, "echo", 2, CONVERGE).await;
    let echo_vip = looked_up(&exec(&caller, &["nslookup", "echo"]).expect("nslookup echo"))
        .pop_first()
        .expect("echo has an address");
    let echoed_by = udp_answers(&caller, &format!("{echo_vip}:{ECHO_PORT}"), 8);
    let echo_tasks: BTreeSet<String> = running_containers(&node, &echo.id.to_string())
        .iter()
        .map(|id| id.chars().take(12).collect())
        .collect();
    assert_eq!(
        echoed_by, echo_tasks,
        "sessions through the name reach both tasks"
    );
    let from_node = udp_exchange(format!("{echo_vip}:{ECHO_PORT}"), "node").await;
    assert!(
        from_node
            .as_deref()
            .is_some_and(|a| a.ends_with(":node") && echo_tasks.contains(&a[..12])),
        "the node reaches the service address over UDP: {from_node:?}"
    );
    let published_echo = udp_exchange(format!("127.0.0.1:{ECHO_PUBLISHED}"), "mesh").await;
    assert!(
        published_echo
            .as_deref()
            .is_some_and(|a| a.ends_with(":mesh") && echo_tasks.contains(&a[..12])),
        "the published UDP port answers: {published_echo:?}"
    );

    // Scaled to one: the stopped task gets no more connections.
    let _: ServiceId = client
        .post(&api::service_scale("web"), &ScaleRequest { replicas: 1 })
        .await
        .expect("scaled");
    wait_running(&client, "web", 1, CONVERGE).await;
    let left: BTreeSet<String> = running_containers(&node, &created.id.to_string())
        .iter()
        .map(|id| id.chars().take(12).collect())
        .collect();
    assert_eq!(left.len(), 1);
    let pages = fetch_pages(&caller, 8);
    assert_eq!(pages.len(), 8, "every fetch answered");
    assert!(
        pages.iter().all(|page| left.contains(page)),
        "only the running task answers: {pages:?}, running {left:?}"
    );
    let _: ServiceId = client
        .post(&api::service_scale("echo"), &ScaleRequest { replicas: 1 })
        .await
        .expect("scaled");
    wait_running(&client, "echo", 1, CONVERGE).await;
    let echo_left: BTreeSet<String> = running_containers(&node, &echo.id.to_string())
        .iter()
        .map(|id| id.chars().take(12).collect())
        .collect();
    assert_eq!(
        udp_answers(&caller, &format!("{echo_vip}:{ECHO_PORT}"), 6),
        echo_left,
        "only the running task answers datagrams"
    );

    agent.shutdown().await;
    drop(guard);
}

/// The tasks (by hostname) that answered `count` UDP sessions from `client` to `to`, each
/// session a socket of its own sending two datagrams.
fn udp_answers(client: &str, to: &str, count: usize) -> BTreeSet<String> {
    let mut tasks = BTreeSet::new();
    for _ in 0..count {
        let answers = exec(client, &["udp-echo", "send", to, "ping", "2"]).unwrap_or_default();
        let in_session: BTreeSet<&str> = answers
            .lines()
            .filter_map(|line| line.strip_suffix(":ping"))
            .collect();
        assert!(
            in_session.len() <= 1,
            "one session, one task: {in_session:?}"
        );
        tasks.extend(in_session.into_iter().map(str::to_owned));
    }
    tasks
}

/// One datagram from this process to `to` and its answer, within a few seconds (resent while
/// the relay may still be starting).
async fn udp_exchange(to: String, message: &str) -> Option<String> {
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.ok()?;
    socket.connect(&to).await.ok()?;
    let mut buffer = vec![0u8; 2048];
    for _ in 0..10 {
        socket.send(message.as_bytes()).await.ok()?;
        if let Ok(Ok(length)) =
            tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buffer)).await
        {
            return Some(String::from_utf8_lossy(&buffer[..length]).into_owned());
        }
    }
    None
}

fn exec_docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
