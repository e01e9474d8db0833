//! `shoal bench ...`: benchmark programs that print figures anyone can rerun. Each prints a
//! line for people and, last, one JSON line.

pub mod cluster;
pub mod e2e;
pub mod failover;
pub mod idle;
pub mod mesh;
pub mod net;
pub mod raft;
pub mod scheduler;

use std::time::{Duration, Instant};

/// The local engine, once it holds `image` (benchmarks never pull: build it with
/// tests/images/build-busybox-image.sh).
pub async fn engine_with_image(image: &str) -> anyhow::Result<bollard::Docker> {
    use anyhow::Context as _;
    let docker = bollard::Docker::connect_with_local_defaults()
        .context("connect to the local Docker engine")?;
    docker.inspect_image(image).await.with_context(|| {
        format!(
            "image {image} is not on this engine; build it with tests/images/build-busybox-image.sh"
        )
    })?;
    Ok(docker)
}

/// Polls `done` every 10 ms until it holds, or fails after `limit`.
pub async fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while !done() {
        anyhow::ensure!(
            started.elapsed() < limit,
            "gave up after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
