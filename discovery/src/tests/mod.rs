//! In-process mesh tests over the real libp2p stack on 127.0.0.1 (and, for mDNS, in network
//! namespaces the test creates). One test binary; every wait is bounded.

mod cluster;
mod frames;
mod mdns_netns;
mod overlay;
mod pause;
mod request_response;
mod ring_link;
mod roster;
mod streams;
mod token;

use std::future::Future;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tempfile::TempDir;

use crate::{MemberState, Mesh, MeshConfig, Multiaddr, NodeInfo, PeerId};

/// One agent of a test: its handle, registry and data dir.
pub(crate) struct Agent {
    pub mesh: Mesh,
    pub registry: Registry,
    _dir: TempDir,
}

/// Loopback config with test-friendly thresholds left at their defaults.
pub(crate) fn config(dir: &TempDir, join: &[Multiaddr]) -> MeshConfig {
    let mut cfg = MeshConfig::for_tests(dir.path());
    cfg.join = join.to_vec();
    cfg.cluster = "test".to_owned();
    cfg
}

/// Starts one agent.
pub(crate) async fn agent(
    join: &[Multiaddr],
    tweak: impl FnOnce(&mut MeshConfig),
) -> anyhow::Result<Agent> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir()?;
    let mut cfg = config(&dir, join);
    tweak(&mut cfg);
    let mut registry = Registry::default();
    let info = NodeInfo {
        hostname: format!("host-{}", dir.path().display()),
        ..NodeInfo::default()
    };
    let mesh = crate::start(cfg, info, &mut registry).await?;
    Ok(Agent {
        mesh,
        registry,
        _dir: dir,
    })
}

/// Starts a seed and `count - 1` agents that join it, all with `tweak`, and waits (up to `limit`)
/// until every one holds all the others alive. The seed is first.
pub(crate) async fn joined_agents(
    count: usize,
    tweak: impl Fn(&mut MeshConfig) + Copy,
    limit: Duration,
) -> anyhow::Result<Vec<Agent>> {
    let seed = agent(&[], tweak).await?;
    let seed_addr = addr(&seed).await?;
    let mut agents = vec![seed];
    for _ in 1..count {
        agents.push(agent(std::slice::from_ref(&seed_addr), tweak).await?);
    }
    for a in &agents {
        let mesh = a.mesh.clone();
        let complete = eventually(limit, || {
            let mesh = mesh.clone();
            async move { in_state(&mesh, MemberState::Alive).await.len() == count - 1 }
        })
        .await;
        anyhow::ensure!(
            complete,
            "{} has an incomplete view",
            a.mesh.local_peer_id()
        );
    }
    Ok(agents)
}

/// The agent's first listen address (with `/p2p/`).
pub(crate) async fn addr(agent: &Agent) -> anyhow::Result<Multiaddr> {
    agent
        .mesh
        .listen_addrs()
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no listen address"))
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns whether it held.
pub(crate) async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Peers `mesh` sees in `state`.
pub(crate) async fn in_state(mesh: &Mesh, state: MemberState) -> Vec<PeerId> {
    mesh.members()
        .await
        .map(|all| {
            all.into_iter()
                .filter(|m| m.state == state)
                .map(|m| m.peer_id)
                .collect()
        })
        .unwrap_or_default()
}

/// Text exposition of a registry.
pub(crate) fn exposition(registry: &Registry) -> String {
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}
