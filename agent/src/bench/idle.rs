//! `shoal bench idle`: what an idle agent costs its machine. Starts two real agent processes (this
//! binary, `shoal agent`) on loopback: the first forms a cluster and leads it (a manager), the
//! second joins it as a worker (below three nodes the autopilot keeps one manager). Once both are
//! ready it lets them settle, then samples each process's resident memory and CPU time from
//! `/proc` for `--seconds`, and prints them with the JSON line last.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use crate::control::api;
use crate::control::client::ControlClient;
use crate::control::views::NodeRow;
use crate::daemon::ExecutorKind;

/// Arguments of `shoal bench idle`.
#[derive(clap::Args, Debug)]
pub struct IdleBenchArgs {
    /// How long to sample the idle agents, after they settled.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// How long to let them settle once both are ready.
    #[arg(long, default_value_t = 5)]
    pub settle_seconds: u64,
    /// The executor the agents run (`sim` needs no engine; `docker` adds the engine client).
    #[arg(long, value_enum, default_value_t = ExecutorKind::Sim)]
    pub executor: ExecutorKind,
}

/// One agent process.
struct AgentProcess {
    child: Child,
    dir: PathBuf,
}

impl AgentProcess {
    fn start(dir: &Path, executor: ExecutorKind, join: Option<&str>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let executor = match executor {
            ExecutorKind::Sim => "sim",
            ExecutorKind::Docker => "docker",
        };
        let mut command = Process::new(std::env::current_exe()?);
        command
            .args([
                "agent",
                "--no-mdns",
                "--metrics-addr",
                "off",
                "--pull",
                "never",
            ])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--executor", executor])
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .env_remove("SHOAL_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(join) = join {
            command.args(["--join", join]);
        }
        Ok(AgentProcess {
            child: command.spawn()?,
            dir: dir.to_path_buf(),
        })
    }

    fn client(&self) -> ControlClient {
        ControlClient::new(crate::paths::control_socket(&self.dir))
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory (bytes) and CPU time (seconds) of a process, from `/proc`.
fn usage(pid: u32) -> anyhow::Result<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at ')'; utime and stime are
    // the 14th and 15th fields overall, the 12th and 13th after it.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> u64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0) };
    // The kernel's USER_HZ is 100 on every Linux that shoal runs on.
    let cpu_seconds = (ticks(11) + ticks(12)) as f64 / 100.0;
    Ok((rss_kib * 1024, cpu_seconds))
}

/// The join multiaddr the first agent announces (`/v1/info` does not carry it; its node record
/// does).
async fn join_address(client: &ControlClient) -> anyhow::Result<String> {
    let info: api::InfoResponse = client.get(api::INFO).await?;
    let id = info.node_id;
    let node: serde_json::Value = client.get(&format!("{}/{id}", api::NODES)).await?;
    let address = node["addresses"]
        .as_array()
        .and_then(|addresses| {
            addresses
                .iter()
                .filter_map(|a| a.as_str())
                .find(|a| a.starts_with("/ip4/127.0.0.1/tcp/"))
        })
        .ok_or_else(|| anyhow::anyhow!("the first agent announces no loopback TCP address"))?;
    Ok(format!("{address}/p2p/{id}"))
}

async fn wait_ready(client: &ControlClient, nodes: usize, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let rows: Vec<NodeRow> = client.get(api::NODES).await.unwrap_or_default();
        if rows.len() == nodes && rows.iter().all(|r| r.state == "ready") {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "the agents were not ready within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the benchmark and prints a line per role, then the JSON result line.
pub async fn run(args: &IdleBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.seconds >= 1, "--seconds must be at least 1");
    let root = std::env::temp_dir().join(format!("shoal-bench-idle-{}", std::process::id()));
    let result = measure(args, &root).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

async fn measure(args: &IdleBenchArgs, root: &Path) -> anyhow::Result<()> {
    let manager = AgentProcess::start(&root.join("manager"), args.executor, None)?;
    let first_ready = Instant::now();
    let join = loop {
        match join_address(&manager.client()).await {
            Ok(join) => break join,
            Err(_) if first_ready.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error),
        }
    };
    let worker = AgentProcess::start(&root.join("worker"), args.executor, Some(&join))?;
    wait_ready(&manager.client(), 2, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
    let pids = [manager.child.id(), worker.child.id()];
    let before = [usage(pids[0])?, usage(pids[1])?];
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let after = [usage(pids[0])?, usage(pids[1])?];
    let mut json = serde_json::json!({ "bench": "idle", "seconds": args.seconds });
    for (i, role) in ["manager", "worker"].iter().enumerate() {
        let rss_mb = after[i].0 as f64 / 1_048_576.0;
        let cpu_percent = 100.0 * (after[i].1 - before[i].1) / args.seconds as f64;
        println!("idle {role}: {rss_mb:.1} MB resident, {cpu_percent:.2} % of a core");
        json[format!("{role}_rss_mb")] = serde_json::json!((rss_mb * 10.0).round() / 10.0);
        json[format!("{role}_cpu_percent")] =
            serde_json::json!((cpu_percent * 100.0).round() / 100.0);
    }
    println!("{json}");
    Ok(())
}
