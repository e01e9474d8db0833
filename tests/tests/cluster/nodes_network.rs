//! The service network across machines, on five nodes with their own engines that joined a seed
//! (see `shoal_tests::nodes`): a task on a worker (whose endpoint table comes from a manager)
//! reaches, by the service's name, a service whose only task runs on another node (the proxy
//! carries the connection over a mesh stream to that node's agent); the port the service
//! publishes answers on a node that runs none of its tasks (the routing mesh); when that task
//! is killed, the connections go to its replacement. The same over UDP: a task's datagrams to a
//! service on another node, and a published UDP port on a node that runs none of its tasks. The
//! worker's task also reads a secret, which its node had from the leader.

use std::time::Duration;

use shoal_tests::nodes::NodeCluster;
use shoal_tests::nodes::views::*;
use shoal_tests::*;

/// A plain HTTP request to `web` from a task, through `nc` (the static busybox's `wget` crashes
/// in containers).
const FETCH: &str = r#"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 web 80"#;
/// The secret the client task gets.
const TOKEN: &str = "node-secret-3f9a";
/// The port `web` publishes (the routing mesh answers it on every node).
const PUBLISHED: u16 = 8080;
/// The UDP port `echo` serves, and the one it publishes.
const ECHO_PORT: u16 = 9053;
const ECHO_PUBLISHED: u16 = 8053;
/// One datagram to `echo` by name from a task: its address from the node's resolver, then
/// `udp-echo` (the test image's UDP tool; it cannot resolve names itself).
const ECHO: &str =
    "udp-echo send \"$(nslookup echo | awk '/^Address/ {a=$2} END {print a}'):9053\" ping";

/// The page `node`'s published port answers, asked from this process over the test's network.
fn fetch_published(cluster: &NodeCluster, node: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let address = format!("{}:{PUBLISHED}", cluster.ip(node));
    let address: std::net::SocketAddr = address.parse().map_err(|e| format!("{address}: {e}"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(3))
        .map_err(|e| format!("connect {address}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    response
        .lines()
        .last()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .ok_or_else(|| format!("an empty answer from {address}"))
}

/// A web server that answers its container's hostname.
const SERVE: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";

/// The id of the running container of `service` in `node`'s engine.
fn container(cluster: &NodeCluster, node: &str, service: &str) -> Result<String, String> {
    let filter = format!("label=io.shoal.service.name={service}");
    let listed = cluster.exec(node, &["docker", "ps", "-q", "--filter", &filter]);
    let ids = String::from_utf8_lossy(&listed.stdout).into_owned();
    let mut ids = ids.lines().filter(|l| !l.is_empty());
    match (ids.next(), ids.next()) {
        (Some(id), None) => Ok(id.to_owned()),
        (None, _) => Err(format!("no container of {service} runs on {node}")),
        _ => Err(format!(
            "more than one container of {service} runs on {node}"
        )),
    }
}

/// The page `web` answered to the client task on `node`.
fn fetch(cluster: &NodeCluster, node: &str) -> Result<String, String> {
    from_client(cluster, node, FETCH)
}

/// The last line `script` printed in the client task on `node`, when it succeeded.
fn from_client(cluster: &NodeCluster, node: &str, script: &str) -> Result<String, String> {
    let client = container(cluster, node, "client")?;
    let output = cluster.exec_within(
        node,
        Duration::from_secs(10),
        &["docker", "exec", &client, "sh", "-c", script],
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    match text.lines().last().map(str::trim) {
        Some(page) if output.status.success() && !page.is_empty() => Ok(page.to_owned()),
        _ => Err(format!(
            "no answer: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

fn create(cluster: &NodeCluster, through: &str, name: &str, on: &str, script: &str) {
    let constraint = format!("node.hostname=={on}");
    let publish = format!("{PUBLISHED}:80");
    let echo_publish = format!("{ECHO_PUBLISHED}:{ECHO_PORT}/udp");
    let mut args = vec!["service", "create", "--name", name];
    match name {
        "web" => args.extend(["--publish", publish.as_str()]),
        "echo" => args.extend(["--publish", echo_publish.as_str()]),
        "client" => args.extend(["--secret", "token"]),
        _ => {}
    }
    let created = cluster.shoal(
        through,
        &[
            args.as_slice(),
            &[
                "--constraint",
                &constraint,
                "--stop-grace-period",
                "1s",
                "--timeout",
                "60s",
                TEST_IMAGE,
                "sh",
                "-c",
                script,
            ],
        ]
        .concat(),
    );
    assert!(
        created.status.success(),
        "create {name}: {}",
        String::from_utf8_lossy(&created.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_task_reaches_a_service_whose_only_task_runs_on_another_node() {
    init_logging();
    let mut cluster = NodeCluster::new("net");
    start_joined_cluster(&mut cluster, 5).await;
    let nodes = cluster.nodes().to_vec();
    let rows = cluster.node_ls(&nodes[0]).expect("node ls");
    let worker = rows
        .iter()
        .find(|r| r.role == "worker")
        .map(|r| r.hostname.clone())
        .expect("a worker among five nodes");
    let server = nodes
        .iter()
        .find(|n| **n != worker)
        .cloned()
        .expect("another node");
    create(&cluster, &nodes[0], "web", &server, SERVE);
    // The client gets a secret: the worker, in its own engine, has it from the leader.
    let written = cluster.exec(
        &nodes[0],
        &["sh", "-c", &format!("printf {TOKEN} > /tmp/token")],
    );
    assert!(written.status.success(), "write the secret's file");
    let made = cluster.shoal(&nodes[0], &["secret", "create", "token", "/tmp/token"]);
    assert!(
        made.status.success(),
        "secret create: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    create(&cluster, &nodes[0], "client", &worker, "exec sleep 3600");
    let token = from_client(&cluster, &worker, "cat /run/secrets/token").expect("the secret");
    assert_eq!(token, TOKEN, "the worker's task reads its secret");

    let first = container(&cluster, &server, "web").expect("web runs on its node");
    let page = cluster
        .until(
            "the worker's task reaches web on another node",
            Duration::from_secs(60),
            |c| fetch(c, &worker),
        )
        .await;
    assert_eq!(page, first[..12], "the page of web's only task");
    eprintln!("network: a task on worker {worker} reached web on {server} by name");

    // The published port answers on a node that runs no task of web (the routing mesh).
    let page = cluster
        .until(
            "web's published port answers on the worker",
            Duration::from_secs(30),
            |c| fetch_published(c, &worker),
        )
        .await;
    assert_eq!(page, first[..12]);

    // The task is killed: the connections go to its replacement once it runs.
    let killed = cluster.exec(&server, &["docker", "kill", &first]);
    assert!(killed.status.success(), "docker kill");
    let replaced = cluster
        .until("web's replacement answers", Duration::from_secs(60), |c| {
            let page = fetch(c, &worker)?;
            (page != first[..12])
                .then_some(page)
                .ok_or_else(|| "the killed task's page".to_owned())
        })
        .await;
    let second = container(&cluster, &server, "web").expect("the replacement runs");
    assert_eq!(replaced, second[..12]);

    // UDP: the worker's task reaches `echo` on the other node by name (a datagram session over
    // a mesh stream), and its published UDP port answers on the worker.
    create(
        &cluster,
        &nodes[0],
        "echo",
        &server,
        &format!("exec udp-echo serve {ECHO_PORT}"),
    );
    let answer = cluster
        .until(
            "the worker's task reaches echo on another node over UDP",
            Duration::from_secs(60),
            |c| from_client(c, &worker, ECHO),
        )
        .await;
    let echo = container(&cluster, &server, "echo").expect("echo runs on its node");
    assert_eq!(answer, format!("{}:ping", &echo[..12]));
    let answer = cluster
        .until(
            "echo's published UDP port answers on the worker",
            Duration::from_secs(30),
            |c| udp_exchange(c, &worker),
        )
        .await;
    assert_eq!(answer, format!("{}:mesh", &echo[..12]));
    eprintln!(
        "network: UDP from worker {worker} reached echo on {server}, by name and by its published port"
    );
}

/// The answer to one datagram sent from this process to `echo`'s published port on `node`.
fn udp_exchange(cluster: &NodeCluster, node: &str) -> Result<String, String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let to = format!("{}:{ECHO_PUBLISHED}", cluster.ip(node));
    socket.connect(&to).map_err(|e| format!("{to}: {e}"))?;
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    socket.send(b"mesh").map_err(|e| e.to_string())?;
    let mut buffer = [0u8; 2048];
    let length = socket
        .recv(&mut buffer)
        .map_err(|e| format!("no answer from {to}: {e}"))?;
    Ok(String::from_utf8_lossy(&buffer[..length]).into_owned())
}
