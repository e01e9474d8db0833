//! Zero config on a LAN: three agents with default settings (mDNS on, no join) in three network
//! namespaces joined by a Linux bridge find each other. libp2p's mDNS skips loopback, hence the
//! namespaces. Needs root and `ip`; fails loudly otherwise. Everything created is removed.

use std::process::Command;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use prometheus_client::registry::Registry;

use crate::{MemberState, MeshConfig, NodeInfo};

const AGENTS: usize = 3;

/// Names unique to this process, so that parallel runs do not collide.
struct Net {
    bridge: String,
    namespaces: Vec<String>,
}

impl Net {
    fn new() -> Self {
        let tag = std::process::id() % 100_000;
        Self {
            bridge: format!("shbr{tag}"),
            namespaces: (0..AGENTS)
                .map(|i| format!("shoal-mdns-{tag}-{i}"))
                .collect(),
        }
    }

    fn veth(&self, i: usize) -> (String, String) {
        let tag = std::process::id() % 100_000;
        (format!("shva{tag}{i}"), format!("shvb{tag}{i}"))
    }

    fn remove(&self) {
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
        while iptables(&[
            "-D",
            "FORWARD",
            "-i",
            &self.bridge,
            "-o",
            &self.bridge,
            "-j",
            "ACCEPT",
        ])
        .is_ok()
        {}
    }

    fn create(&self) -> anyhow::Result<()> {
        self.remove();
        // Docker hosts filter bridged frames through iptables (FORWARD policy DROP); keep ours out of it.
        ip(&[
            "link",
            "add",
            &self.bridge,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
            "nf_call_iptables",
            "0",
        ])?;
        ip(&["link", "set", &self.bridge, "up"])?;
        // With br_netfilter loaded the global bridge-nf-call-iptables wins over the per-bridge
        // option, so also accept our bridge's own traffic (removed again in `remove`).
        if std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
            .is_ok_and(|v| v.trim() == "1")
        {
            iptables(&[
                "-I",
                "FORWARD",
                "-i",
                &self.bridge,
                "-o",
                &self.bridge,
                "-j",
                "ACCEPT",
            ])?;
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            let (host, inner) = self.veth(i);
            let addr = format!("10.213.77.{}/24", i + 1);
            ip(&["netns", "add", ns])?;
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner])?;
            ip(&["link", "set", &inner, "netns", ns])?;
            ip(&["link", "set", &host, "master", &self.bridge, "up"])?;
            ip(&["-n", ns, "addr", "add", &addr, "dev", &inner])?;
            ip(&["-n", ns, "link", "set", &inner, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", &inner])?;
        }
        Ok(())
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn iptables(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("iptables").arg("-w").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "iptables {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn require_root_and_ip() -> anyhow::Result<()> {
    let uid = Command::new("id").arg("-u").output()?;
    anyhow::ensure!(
        String::from_utf8_lossy(&uid.stdout).trim() == "0",
        "the mDNS test needs root (it creates network namespaces and a bridge)"
    );
    anyhow::ensure!(
        Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
        "the mDNS test needs the `ip` tool (iproute2)"
    );
    Ok(())
}

/// Runs one default agent inside `ns` on its own thread and runtime; reports how long it took
/// to see every other agent alive, then waits for `stop` before shutting down.
fn agent_in(
    ns: String,
    found: std_mpsc::Sender<anyhow::Result<Duration>>,
    stop: std_mpsc::Receiver<()>,
) {
    let run = move || -> anyhow::Result<()> {
        let netns = std::fs::File::open(format!("/run/netns/{ns}"))?;
        setns(&netns, CloneFlags::CLONE_NEWNET)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let dir = tempfile::tempdir()?;
            let mut registry = Registry::default();
            // No flags: production defaults (mDNS on, no join, default port).
            let mesh = crate::start(
                MeshConfig::new(dir.path()),
                NodeInfo::default(),
                &mut registry,
            )
            .await?;
            let started = Instant::now();
            let complete = super::eventually(Duration::from_secs(15), || {
                let mesh = mesh.clone();
                async move { super::in_state(&mesh, MemberState::Alive).await.len() == AGENTS - 1 }
            })
            .await;
            let _ = found.send(if complete {
                Ok(started.elapsed())
            } else {
                Err(anyhow::anyhow!(
                    "agent in {ns} did not find the others by mDNS"
                ))
            });
            let _ = tokio::task::spawn_blocking(move || stop.recv_timeout(Duration::from_secs(20)))
                .await;
            mesh.shutdown().await?;
            Ok(())
        })
    };
    if let Err(e) = run() {
        eprintln!("mdns agent failed: {e:#}");
    }
}

#[test]
fn agents_with_no_flags_find_each_other_by_mdns() -> anyhow::Result<()> {
    require_root_and_ip()?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let net = Net::new();
    let result = (|| -> anyhow::Result<()> {
        net.create()?;
        let (found_tx, found_rx) = std_mpsc::channel();
        let mut stops = Vec::new();
        let mut threads = Vec::new();
        for ns in &net.namespaces {
            let (stop_tx, stop_rx) = std_mpsc::channel();
            stops.push(stop_tx);
            let (ns, found) = (ns.clone(), found_tx.clone());
            threads.push(std::thread::spawn(move || agent_in(ns, found, stop_rx)));
        }
        let mut outcome = Ok(());
        for _ in 0..AGENTS {
            match found_rx.recv_timeout(Duration::from_secs(25)) {
                Ok(Ok(took)) => eprintln!("mDNS: an agent saw the others after {took:?}"),
                Ok(Err(e)) => outcome = Err(e),
                Err(_) => outcome = Err(anyhow::anyhow!("an mDNS agent never reported")),
            }
        }
        for stop in stops {
            let _ = stop.send(());
        }
        for t in threads {
            let _ = t.join();
        }
        outcome
    })();
    net.remove();
    result
}
