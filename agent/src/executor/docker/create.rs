//! Starting a task: the container body built from its spec, the image check, create + start,
//! and adoption of a container that already exists for the task.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HealthConfig, HostConfig, Mount, MountType,
    PortBinding,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, CreateImageOptionsBuilder};
use futures::StreamExt;
use shoal_scheduler::{MountKind, PortProtocol, TaskState};

use super::{AttachedNetwork, Inner, PullPolicy, status_of};
use crate::executor::{
    ExecutorError, LABEL_HEALTHCHECK, LABEL_NODE_ID, LABEL_PREFIX, LABEL_SERVICE_ID,
    LABEL_SERVICE_NAME, LABEL_SLOT, LABEL_SPEC_VERSION, LABEL_TASK_ID, Result, RunSpec,
    container_name, parse_task_id,
};

/// Creates and starts the task's container, or adopts the one that exists.
pub(super) async fn start(inner: &Inner, run: &RunSpec) -> Result<()> {
    if run.node_id != inner.config.node_id {
        return Err(ExecutorError::InvalidSpec(format!(
            "task {} is for node {}, not this node ({})",
            run.task_id, run.node_id, inner.config.node_id
        )));
    }
    let started = start_with_files(inner, run).await;
    if started.is_err() && run.needs_files() {
        inner.files.forget(run.task_id);
    }
    started
}

/// Writes the task's files (if it has any), then creates and starts its container.
async fn start_with_files(inner: &Inner, run: &RunSpec) -> Result<()> {
    let network = inner.network.as_ref().filter(|n| n.serving());
    let file_mounts = task_file_mounts(inner, run)?;
    let body = container_body(run, network, file_mounts)?;
    let name = container_name(&run.service_name, run.slot, run.task_id);
    // The semaphore is never closed, so `acquire` cannot fail; without a permit we would still
    // be correct, only less polite to the engine.
    let _permit = inner.start_permits.acquire().await.ok();

    let id = match create(inner, &name, body.clone()).await {
        Ok(id) => id,
        Err(e) if status_of(&e) == Some(409) => return adopt(inner, run, &name).await,
        Err(e) if status_of(&e) == Some(404) => {
            ensure_image(inner, &run.spec.image).await?;
            match create(inner, &name, body).await {
                Ok(id) => id,
                Err(e) if status_of(&e) == Some(409) => return adopt(inner, run, &name).await,
                Err(source) => {
                    return Err(ExecutorError::Docker {
                        op: "create",
                        source,
                    });
                }
            }
        }
        Err(source) => {
            return Err(ExecutorError::Docker {
                op: "create",
                source,
            });
        }
    };
    inner.created(run.task_id, &id);
    inner
        .docker
        .start_container(&id, None)
        .await
        .map_err(ExecutorError::docker("start"))
}

/// The read-only bind mounts of the task's secrets and configs, written on the tmpfs first; none
/// for a task that mounts none. Every file the spec names must have arrived with the task.
fn task_file_mounts(inner: &Inner, run: &RunSpec) -> Result<Vec<Mount>> {
    if !run.needs_files() {
        return Ok(Vec::new());
    }
    let wanted = run.spec.secrets.len() + run.spec.configs.len();
    if run.files.len() != wanted {
        return Err(ExecutorError::InvalidSpec(format!(
            "the task mounts {wanted} secrets and configs, and {} arrived",
            run.files.len()
        )));
    }
    if !inner.engine_is_local() {
        return Err(ExecutorError::InvalidSpec(format!(
            "secrets and configs need the Docker engine on this machine (it is at {})",
            inner.endpoint
        )));
    }
    inner.files.write(run.task_id, &run.files)
}

async fn create(
    inner: &Inner,
    name: &str,
    body: ContainerCreateBody,
) -> std::result::Result<String, bollard::errors::Error> {
    let options = CreateContainerOptionsBuilder::new().name(name).build();
    let created = inner.docker.create_container(Some(options), body).await?;
    Ok(created.id)
}

/// A container named for this task exists: make sure it is the task's and that it runs.
async fn adopt(inner: &Inner, run: &RunSpec, name: &str) -> Result<()> {
    let found = inner
        .docker
        .inspect_container(name, None)
        .await
        .map_err(ExecutorError::docker("inspect"))?;
    let labels = found.config.as_ref().and_then(|c| c.labels.as_ref());
    let owner = labels
        .and_then(|l| l.get(LABEL_TASK_ID))
        .and_then(|t| parse_task_id(t));
    if owner != Some(run.task_id) {
        return Err(ExecutorError::InvalidSpec(format!(
            "container name {name} is taken by a container that is not task {}",
            run.task_id
        )));
    }
    let id = found.id.clone().unwrap_or_else(|| name.to_string());
    inner.remember(run.task_id, &id);
    let state = found.state.as_ref();
    match state.and_then(|s| s.status) {
        Some(ContainerStateStatusEnum::CREATED) | None => inner
            .docker
            .start_container(&id, None)
            .await
            .map_err(ExecutorError::docker("start")),
        Some(
            ContainerStateStatusEnum::RUNNING
            | ContainerStateStatusEnum::PAUSED
            | ContainerStateStatusEnum::RESTARTING,
        ) => Ok(()),
        Some(_) => {
            let code = state.and_then(|s| s.exit_code).unwrap_or(0);
            let ended = if inner.is_stopping(run.task_id) {
                TaskState::Shutdown
            } else if code == 0 {
                TaskState::Complete
            } else {
                TaskState::Failed
            };
            Err(ExecutorError::AlreadyEnded {
                task: run.task_id,
                state: ended,
            })
        }
    }
}

/// The image is not on the node: pull it if the policy allows, else reject.
async fn ensure_image(inner: &Inner, image: &str) -> Result<()> {
    let not_found = |reason: String| ExecutorError::ImageNotFound {
        image: image.to_string(),
        reason,
    };
    if inner.config.pull == PullPolicy::Never {
        return Err(not_found(
            "pulling is disabled on this node (pull policy: never)".into(),
        ));
    }
    inner.pull_attempts.fetch_add(1, Ordering::Relaxed);
    let options = CreateImageOptionsBuilder::new()
        .from_image(&with_tag(image))
        .build();
    let pull = async {
        let mut progress = inner.docker.create_image(Some(options), None, None);
        while let Some(item) = progress.next().await {
            let info = item.map_err(|e| e.to_string())?;
            if let Some(detail) = info.error_detail {
                return Err(detail.message.unwrap_or_else(|| "pull failed".into()));
            }
        }
        Ok(())
    };
    match tokio::time::timeout(inner.config.pull_timeout, pull).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(not_found(reason)),
        Err(_) => Err(not_found(format!(
            "pull timed out after {} s",
            inner.config.pull_timeout.as_secs()
        ))),
    }
}

/// `image` with `:latest` added when it names neither a tag nor a digest (a pull without a tag
/// would fetch every tag).
fn with_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || image.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// The Docker create body for a task, attached to the service `network` if there is one (its
/// gateway is then the task's resolver), with `file_mounts` (its secrets and configs) beside
/// the spec's own mounts.
pub(super) fn container_body(
    run: &RunSpec,
    network: Option<&AttachedNetwork>,
    file_mounts: Vec<Mount>,
) -> Result<ContainerCreateBody> {
    let spec = &run.spec;
    if spec.image.trim().is_empty() {
        return Err(ExecutorError::InvalidSpec(
            "the service names no image".into(),
        ));
    }
    let (exposed_ports, port_bindings) = ports(run, network.is_some())?;
    let host_config = HostConfig {
        nano_cpus: positive(spec.resources.limits.nano_cpus),
        memory: positive(spec.resources.limits.memory_bytes),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        mounts: Some(with_resolver(
            mounts(run)?.into_iter().chain(file_mounts).collect(),
            network,
        ))
        .filter(|m| !m.is_empty()),
        network_mode: network.map(|n| n.name.clone()),
        dns: network.map(|n| vec![n.gateway.to_string()]),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: (!spec.command.is_empty()).then(|| spec.command.clone()),
        cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: (!spec.env.is_empty()).then(|| spec.env.clone()),
        hostname: spec.hostname.clone(),
        user: spec.user.clone(),
        working_dir: spec.working_dir.clone(),
        labels: Some(labels(run)),
        healthcheck: spec.health.as_ref().map(|h| HealthConfig {
            test: Some(vec!["CMD-SHELL".to_string(), h.command.clone()]),
            interval: nanos(h.interval_ms),
            timeout: nanos(h.timeout_ms),
            retries: i64::try_from(h.retries).ok(),
            start_period: nanos(h.start_period_ms),
            start_interval: None,
        }),
        stop_timeout: i64::try_from(spec.stop_grace_ms.div_ceil(1000)).ok(),
        exposed_ports: (!exposed_ports.is_empty()).then_some(exposed_ports),
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// The service's labels, then shoal's (which win; service labels under `io.shoal.` are dropped).
fn labels(run: &RunSpec) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = run
        .spec
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with(LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_TASK_ID.into(), run.task_id.to_string());
    labels.insert(LABEL_SERVICE_ID.into(), run.service_id.to_string());
    labels.insert(LABEL_SERVICE_NAME.into(), run.service_name.clone());
    labels.insert(LABEL_NODE_ID.into(), run.node_id.to_string());
    labels.insert(LABEL_SPEC_VERSION.into(), run.spec_version.to_string());
    labels.insert(
        LABEL_HEALTHCHECK.into(),
        run.spec.health.is_some().to_string(),
    );
    if let Some(slot) = run.slot {
        labels.insert(LABEL_SLOT.into(), slot.to_string());
    }
    labels
}

type PortBindings = HashMap<String, Option<Vec<PortBinding>>>;

/// Exposed ports and host-port bindings. A port published in host mode binds the node's own
/// port; one published in ingress mode is the routing mesh's (the agent listens on every node)
/// when the task is on the service network, and binds the node's port otherwise.
fn ports(run: &RunSpec, routing_mesh: bool) -> Result<(Vec<String>, PortBindings)> {
    let mut exposed = Vec::new();
    let mut bindings = PortBindings::new();
    let mut published = HashSet::new();
    for port in &run.spec.ports {
        if port.target == 0 {
            return Err(ExecutorError::InvalidSpec("port target 0".into()));
        }
        let proto = match port.protocol {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        };
        let key = format!("{}/{proto}", port.target);
        exposed.push(key.clone());
        let meshed = routing_mesh && !port.host_mode;
        if port.published == 0 || meshed {
            continue;
        }
        if !published.insert((port.published, proto)) {
            return Err(ExecutorError::InvalidSpec(format!(
                "host port {}/{proto} is published twice",
                port.published
            )));
        }
        let binding = PortBinding {
            host_ip: None,
            host_port: Some(port.published.to_string()),
        };
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(binding);
    }
    Ok((exposed, bindings))
}

/// `mounts` and, on the service network, the agent's `resolv.conf` over the task's own (unless
/// the spec mounts one itself).
fn with_resolver(mut mounts: Vec<Mount>, network: Option<&AttachedNetwork>) -> Vec<Mount> {
    const RESOLV_CONF: &str = "/etc/resolv.conf";
    let Some(network) = network else {
        return mounts;
    };
    if mounts
        .iter()
        .any(|m| m.target.as_deref() == Some(RESOLV_CONF))
    {
        return mounts;
    }
    mounts.push(Mount {
        target: Some(RESOLV_CONF.to_owned()),
        source: Some(network.resolv_conf.display().to_string()),
        typ: Some(MountType::BIND),
        read_only: Some(true),
        ..Default::default()
    });
    mounts
}

/// Docker mounts for the spec's mounts, checked.
fn mounts(run: &RunSpec) -> Result<Vec<Mount>> {
    run.spec
        .mounts
        .iter()
        .map(|m| {
            if !m.target.starts_with('/') {
                return Err(ExecutorError::InvalidSpec(format!(
                    "mount target {:?} is not an absolute path",
                    m.target
                )));
            }
            let (typ, source) = match m.kind {
                MountKind::Bind if !m.source.starts_with('/') => {
                    return Err(ExecutorError::InvalidSpec(format!(
                        "bind mount source {:?} is not an absolute path",
                        m.source
                    )));
                }
                MountKind::Bind => (MountType::BIND, Some(m.source.clone())),
                // An empty source makes an anonymous volume (removed with the container).
                MountKind::Volume => (
                    MountType::VOLUME,
                    Some(m.source.clone()).filter(|s| !s.is_empty()),
                ),
                MountKind::Tmpfs if !m.source.is_empty() => {
                    return Err(ExecutorError::InvalidSpec(format!(
                        "tmpfs mount at {} cannot have a source",
                        m.target
                    )));
                }
                MountKind::Tmpfs => (MountType::TMPFS, None),
            };
            Ok(Mount {
                target: Some(m.target.clone()),
                source,
                typ: Some(typ),
                read_only: Some(m.read_only),
                ..Default::default()
            })
        })
        .collect()
}

/// `value` as an `i64`, or `None` when zero (unlimited) or out of range.
fn positive(value: u64) -> Option<i64> {
    i64::try_from(value).ok().filter(|v| *v > 0)
}

/// Milliseconds as Docker's nanoseconds; `None` for zero (Docker's default).
fn nanos(millis: u64) -> Option<i64> {
    positive(millis).and_then(|ms| ms.checked_mul(1_000_000))
}

#[cfg(test)]
mod body_tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use shoal_scheduler::{
        HealthCheck, MountSpec, NodeId, PortSpec, ResourceRequirements, Resources, ServiceId,
        TaskId,
    };

    use super::*;
    use crate::executor::tests::base_spec;

    fn run_of(spec: shoal_scheduler::ServiceSpec) -> RunSpec {
        RunSpec {
            task_id: TaskId(0x2a),
            service_id: ServiceId(3),
            service_name: "web".into(),
            slot: Some(2),
            node_id: NodeId::new("n1"),
            spec_version: 7,
            spec: Arc::new(spec),
            files: Arc::from([]),
        }
    }

    #[test]
    fn body_carries_labels_limits_ports_mounts_and_health() {
        let mut spec = base_spec("shoal-test/busybox:latest");
        spec.labels = BTreeMap::from([
            ("team".to_string(), "a".to_string()),
            (LABEL_TASK_ID.to_string(), "forged".to_string()),
        ]);
        spec.resources = ResourceRequirements {
            reservations: Resources::default(),
            limits: Resources {
                nano_cpus: 500_000_000,
                memory_bytes: 64 << 20,
            },
        };
        spec.ports = vec![PortSpec {
            target: 80,
            published: 8080,
            protocol: PortProtocol::Tcp,
            host_mode: true,
        }];
        spec.mounts = vec![MountSpec {
            kind: MountKind::Tmpfs,
            source: String::new(),
            target: "/scratch".into(),
            read_only: false,
        }];
        spec.health = Some(HealthCheck {
            command: "true".into(),
            interval_ms: 200,
            timeout_ms: 1000,
            retries: 3,
            start_period_ms: 0,
        });
        spec.stop_grace_ms = 1500;
        let body = container_body(&run_of(spec), None, Vec::new()).expect("valid spec");
        let labels = body.labels.expect("labels");
        assert_eq!(labels[LABEL_TASK_ID], "t0000000002a");
        assert_eq!(labels[LABEL_SERVICE_ID], "s00000000003");
        assert_eq!(labels[LABEL_SLOT], "2");
        assert_eq!(labels[LABEL_SPEC_VERSION], "7");
        assert_eq!(labels[LABEL_HEALTHCHECK], "true");
        assert_eq!(labels["team"], "a");
        let host = body.host_config.expect("host config");
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        let bindings = host.port_bindings.expect("bindings");
        let bound = bindings["80/tcp"].as_ref().expect("binding list");
        assert_eq!(bound[0].host_port.as_deref(), Some("8080"));
        assert_eq!(host.mounts.expect("mounts")[0].typ, Some(MountType::TMPFS));
        let health = body.healthcheck.expect("health");
        assert_eq!(health.interval, Some(200_000_000));
        assert_eq!(health.test.expect("test")[0], "CMD-SHELL");
        assert_eq!(body.stop_timeout, Some(2));
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut spec = base_spec("x");
        spec.mounts = vec![MountSpec {
            kind: MountKind::Bind,
            source: "relative".into(),
            target: "/data".into(),
            read_only: true,
        }];
        let error =
            container_body(&run_of(spec), None, Vec::new()).expect_err("relative bind source");
        assert!(error.rejects_task(), "{error}");
        assert!(container_body(&run_of(base_spec(" ")), None, Vec::new()).is_err());
    }

    #[test]
    fn pulls_name_a_tag() {
        assert_eq!(with_tag("busybox"), "busybox:latest");
        assert_eq!(with_tag("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
        assert_eq!(with_tag("a/b:1"), "a/b:1");
        assert_eq!(with_tag("a@sha256:00"), "a@sha256:00");
    }
}
