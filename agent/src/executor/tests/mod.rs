//! Tests of the executors against the real Docker engine and the local test image.
//!
//! The harness: [`engine`] connects (and fails the test loudly when no engine answers),
//! [`ensure_test_image`] builds `shoal-test/busybox:latest` once with the repository's script when
//! it is missing, and every test works under its own node id with a [`Cleanup`] guard that
//! removes the node's containers when the test ends, even when it fails.

mod docker;
mod sim;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use shoal_scheduler::{NodeId, ServiceId, ServiceSpec, TaskId};

use super::{DockerConfig, DockerExecutor, LABEL_NODE_ID, PullPolicy, RunSpec};

/// The image every Docker test runs.
pub(crate) const TEST_IMAGE: &str = "shoal-test/busybox:latest";

/// A minimal spec for `image`: one replica, no limits, no health check, 1 s grace.
pub(crate) fn base_spec(image: &str) -> ServiceSpec {
    let mut spec = shoal_scheduler::synthetic::spec("svc", 1);
    spec.image = image.into();
    spec.stop_grace_ms = 1_000;
    spec
}

/// A spec running `script` with `sh -c` in the test image.
pub(crate) fn shell_spec(script: &str) -> ServiceSpec {
    let mut spec = base_spec(TEST_IMAGE);
    spec.command = vec!["/bin/sh".into(), "-c".into(), script.into()];
    spec
}

/// Ids unique across tests and concurrent test processes.
pub(crate) fn unique() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // Low bits of the clock and the pid keep runs apart; the counter keeps calls apart.
    let base = ((nanos as u64) & 0xffff_ffff) << 20 ^ (u64::from(std::process::id()) << 8);
    base.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed) << 40)
}

/// A fresh node id for one test.
pub(crate) fn test_node(name: &str) -> NodeId {
    NodeId::new(format!("test-{name}-{:x}", unique()))
}

/// A run spec of `spec` for `node`, with fresh task and service ids.
pub(crate) fn run_spec(node: &NodeId, service: &str, slot: u64, spec: ServiceSpec) -> RunSpec {
    RunSpec {
        task_id: TaskId(unique()),
        service_id: ServiceId(unique()),
        service_name: service.into(),
        slot: Some(slot),
        node_id: node.clone(),
        spec_version: 1,
        spec: Arc::new(ServiceSpec {
            name: service.into(),
            ..spec
        }),
        files: Arc::from([]),
    }
}

/// Builds the test image once per process if it is missing (the script is idempotent and
/// serialises concurrent builders with a lock file).
pub(crate) fn ensure_test_image() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/images/build-busybox-image.sh"
        );
        let output = std::process::Command::new("bash")
            .arg(script)
            .output()
            .map_err(|e| format!("cannot run {script}: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{script} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    if let Err(message) = result {
        panic!("the test image {TEST_IMAGE} is missing and could not be built: {message}");
    }
}

/// A Docker executor for `node` with pulls disabled. Fails the test when no engine answers.
pub(crate) async fn engine(node: &NodeId) -> DockerExecutor {
    engine_with(node, |_| {}).await
}

/// Like [`engine`], with the config adjusted by `adjust`.
pub(crate) async fn engine_with(
    node: &NodeId,
    adjust: impl FnOnce(&mut DockerConfig),
) -> DockerExecutor {
    let mut config = DockerConfig::new(node.clone());
    config.pull = PullPolicy::Never;
    adjust(&mut config);
    match DockerExecutor::connect(config).await {
        Ok(executor) => {
            ensure_test_image();
            executor
        }
        Err(e) => panic!(
            "these tests need a Docker engine and none answers: {e}. \
             Start dockerd (CI's .ci/run does) and run them again."
        ),
    }
}

/// Removes every container of a test node when dropped, so a failing test leaves nothing
/// behind.
pub(crate) struct Cleanup {
    node: NodeId,
}

impl Cleanup {
    /// Guards the containers of `node`.
    pub(crate) fn new(node: &NodeId) -> Self {
        Cleanup { node: node.clone() }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let node = self.node.clone();
        // Drop cannot await, and may run inside a runtime: clean up on a thread of its own.
        let joined = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(remove_node_containers(&node)),
                Err(e) => eprintln!("cleanup of {node}: no runtime: {e}"),
            }
        })
        .join();
        if joined.is_err() {
            eprintln!("cleanup of {} panicked", self.node);
        }
    }
}

/// Removes all containers labelled with `node` (best effort, reports what it could not do).
pub(crate) async fn remove_node_containers(node: &NodeId) {
    let docker = match Docker::connect_with_defaults() {
        Ok(docker) => docker,
        Err(e) => return eprintln!("cleanup of {node}: {e}"),
    };
    let docker = match docker.negotiate_version().await {
        Ok(docker) => docker,
        Err(e) => return eprintln!("cleanup of {node}: {e}"),
    };
    let filters: HashMap<&str, Vec<String>> =
        HashMap::from([("label", vec![format!("{LABEL_NODE_ID}={node}")])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let containers = match docker.list_containers(Some(options)).await {
        Ok(containers) => containers,
        Err(e) => return eprintln!("cleanup of {node}: {e}"),
    };
    for id in containers.into_iter().filter_map(|c| c.id) {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        if let Err(e) = docker.remove_container(&id, Some(options)).await {
            eprintln!("cleanup of {node}: removing {id}: {e}");
        }
    }
}

/// Waits (at most `limit`) for an observation of `task` that satisfies `pred` on `events`.
pub(crate) async fn wait_for(
    events: &mut tokio::sync::mpsc::Receiver<super::Observation>,
    task: TaskId,
    limit: Duration,
    pred: impl Fn(&super::Observation) -> bool,
) -> Option<super::Observation> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let next = tokio::time::timeout_at(deadline, events.recv())
            .await
            .ok()??;
        if next.task_id == task && pred(&next) {
            return Some(next);
        }
    }
}
