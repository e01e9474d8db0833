//! Services: creation (with spec validation), updates, rollbacks and removal.

use std::collections::HashSet;

use crate::command::{ApplyError, Outcome};
use crate::model::{
    ClusterSettings, ClusterState, ConstraintKey, DesiredState, MountKind, PlacementPreference,
    Service, ServiceId, ServiceMode, ServiceSpec, Timestamp, UpdateState, UpdateStatus,
};

/// The most replicas a service may ask for.
pub const MAX_REPLICAS: u64 = 10_000_000;
/// The longest service name.
pub const MAX_NAME_LEN: usize = 63;
/// The longest image reference.
pub const MAX_IMAGE_LEN: usize = 512;
/// The most entries in any list of a spec (env, args, constraints, ports, mounts, labels).
pub const MAX_LIST_LEN: usize = 1_000;

/// Creates a service from a valid spec with the next service id.
pub fn create(
    state: &mut ClusterState,
    spec: &ServiceSpec,
    at: Timestamp,
) -> Result<Outcome, ApplyError> {
    validate(spec)?;
    check_mounts_allowed(spec, &state.settings)?;
    check_ports_free(state, None, spec)?;
    super::secrets::check_references_exist(state, spec)?;
    if state.services.values().any(|s| s.spec.name == spec.name) {
        return Err(ApplyError::NameInUse(spec.name.clone()));
    }
    let id = ServiceId(state.next_service_id);
    state.next_service_id += 1;
    let address_index = Some(lowest_free_address(state));
    let service = Service {
        id,
        spec: spec.clone(),
        version: 1,
        revision: 1,
        previous_spec: None,
        previous_version: None,
        update_status: None,
        equivalent_version: None,
        address_index,
        created_at: at,
        updated_at: at,
    };
    state.services.insert(id, service);
    Ok(Outcome::ServiceCreated(id))
}

/// The lowest address offset that no service holds.
fn lowest_free_address(state: &ClusterState) -> u32 {
    let held: std::collections::BTreeSet<u32> = state
        .services
        .values()
        .filter_map(|s| s.address_index)
        .collect();
    (0..).find(|i| !held.contains(i)).unwrap_or(u32::MAX)
}

/// Replaces a service's spec. A change of the replica count alone is a scale: it keeps the
/// version (tasks stay current) and starts no update. Any other change bumps the version, keeps
/// the old spec for rollback and starts a rolling update.
pub fn update(
    state: &mut ClusterState,
    id: ServiceId,
    expected_revision: u64,
    spec: &ServiceSpec,
    at: Timestamp,
) -> Result<Outcome, ApplyError> {
    validate(spec)?;
    check_mounts_allowed(spec, &state.settings)?;
    check_ports_free(state, Some(id), spec)?;
    super::secrets::check_references_exist(state, spec)?;
    let svc = state
        .services
        .get_mut(&id)
        .ok_or(ApplyError::NoSuchService(id))?;
    if svc.revision != expected_revision {
        return Err(ApplyError::Stale(format!(
            "service {id} changed meanwhile (revision {}, not {expected_revision}): read it \
             again and retry",
            svc.revision
        )));
    }
    if svc.spec.name != spec.name {
        return Err(ApplyError::Refused("a service cannot be renamed".into()));
    }
    if svc.spec.replicas().is_some() != spec.replicas().is_some() {
        return Err(ApplyError::Refused(
            "a service cannot change between replicated and global".into(),
        ));
    }
    svc.updated_at = at;
    svc.revision += 1;
    let mut scaled = svc.spec.clone();
    scaled.mode = spec.mode;
    if scaled == *spec {
        svc.spec.mode = spec.mode;
        return Ok(Outcome::ServiceUpdated(id));
    }
    let old = std::mem::replace(&mut svc.spec, spec.clone());
    svc.previous_spec = Some(old);
    svc.equivalent_version = None;
    svc.previous_version = Some(svc.version);
    svc.version += 1;
    svc.update_status = Some(UpdateStatus {
        state: UpdateState::Updating,
        started_at: at,
        message: "update in progress".into(),
    });
    Ok(Outcome::ServiceUpdated(id))
}

/// Rolls a service back to its previous spec (the replica count stays as it is now).
pub fn rollback(
    state: &mut ClusterState,
    id: ServiceId,
    at: Timestamp,
    message: Option<&str>,
) -> Result<Outcome, ApplyError> {
    let svc = state
        .services
        .get_mut(&id)
        .ok_or(ApplyError::NoSuchService(id))?;
    let Some(mut previous) = svc.previous_spec.take() else {
        return Err(ApplyError::Refused(format!(
            "service {id} has no previous spec"
        )));
    };
    previous.mode = svc.spec.mode;
    let current = std::mem::replace(&mut svc.spec, previous);
    svc.equivalent_version = svc.previous_version;
    svc.previous_spec = Some(current);
    svc.previous_version = Some(svc.version);
    svc.version += 1;
    svc.revision += 1;
    svc.updated_at = at;
    svc.update_status = Some(UpdateStatus {
        state: UpdateState::RollingBack,
        started_at: at,
        message: message.unwrap_or("rollback in progress").to_string(),
    });
    Ok(Outcome::ServiceUpdated(id))
}

/// Removes a service and tells all its tasks to shut down. The tasks stay, so their nodes can
/// report them stopped, until [`prune`](crate::apply::prune) forgets them once they ended.
pub fn remove(state: &mut ClusterState, id: ServiceId) -> Result<Outcome, ApplyError> {
    state
        .services
        .remove(&id)
        .ok_or(ApplyError::NoSuchService(id))?;
    for task in state.tasks.values_mut().filter(|t| t.service == id) {
        task.desired = DesiredState::Shutdown;
    }
    Ok(Outcome::ServiceRemoved(id))
}

fn invalid(msg: impl Into<String>) -> ApplyError {
    ApplyError::InvalidSpec(msg.into())
}

/// Checks a spec: name syntax, image, replica bound, list sizes, constraints, preferences,
/// ports, mounts and update configs.
pub fn validate(spec: &ServiceSpec) -> Result<(), ApplyError> {
    validate_name(&spec.name)?;
    if spec.image.is_empty()
        || spec.image.len() > MAX_IMAGE_LEN
        || spec.image.contains(char::is_whitespace)
    {
        return Err(invalid(format!(
            "image {:?} must be 1 to {MAX_IMAGE_LEN} characters without spaces",
            spec.image
        )));
    }
    if let ServiceMode::Replicated { replicas } = spec.mode
        && replicas > MAX_REPLICAS
    {
        return Err(invalid(format!(
            "{replicas} replicas is more than the limit of {MAX_REPLICAS}"
        )));
    }
    let lists = [
        spec.command.len(),
        spec.args.len(),
        spec.env.len(),
        spec.constraints.len(),
        spec.preferences.len(),
        spec.ports.len(),
        spec.mounts.len(),
        spec.labels.len(),
    ];
    if lists.iter().any(|&n| n > MAX_LIST_LEN) {
        return Err(invalid(format!(
            "a list of the spec has more than {MAX_LIST_LEN} entries"
        )));
    }
    validate_placement(spec)?;
    validate_ports(spec)?;
    if let Some(m) = spec.mounts.iter().find(|m| !m.target.starts_with('/')) {
        return Err(invalid(format!(
            "mount target {:?} must be an absolute path",
            m.target
        )));
    }
    super::secrets::validate_references(spec)?;
    validate_process(spec)?;
    for cfg in [&spec.update, &spec.rollback] {
        if cfg.max_failure_permille > 1000 {
            return Err(invalid("max failure ratio must be between 0 and 1"));
        }
    }
    Ok(())
}

/// A name is 1 to 63 characters: letters, digits, `-`, `_`, `.`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), ApplyError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.len() > MAX_NAME_LEN || !starts_well || !name.chars().all(ok_char) {
        return Err(invalid(format!(
            "name {name:?} must be 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit"
        )));
    }
    Ok(())
}

/// Longest hostname (one DNS label, as the kernel's UTS name allows 64 bytes).
const MAX_HOSTNAME_LEN: usize = 63;
/// Longest `user` and working directory.
const MAX_PROCESS_FIELD_LEN: usize = 4096;

/// The hostname is one DNS label; the user is `name|id[:group|gid]` without spaces; the
/// working directory is absolute.
fn validate_process(spec: &ServiceSpec) -> Result<(), ApplyError> {
    if let Some(host) = &spec.hostname {
        let label_char = |c: char| c.is_ascii_alphanumeric() || c == '-';
        let valid = !host.is_empty()
            && host.len() <= MAX_HOSTNAME_LEN
            && host.chars().all(label_char)
            && !host.starts_with('-')
            && !host.ends_with('-');
        if !valid {
            return Err(invalid(format!(
                "hostname {host:?} must be 1 to {MAX_HOSTNAME_LEN} letters, digits or '-', not \
                 starting or ending with '-'"
            )));
        }
    }
    if let Some(user) = &spec.user {
        let parts: Vec<&str> = user.split(':').collect();
        let part_ok = |p: &&str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if user.len() > MAX_PROCESS_FIELD_LEN || parts.len() > 2 || !parts.iter().all(part_ok) {
            return Err(invalid(format!(
                "user {user:?} must be NAME, UID, NAME:GROUP or UID:GID"
            )));
        }
    }
    if let Some(dir) = &spec.working_dir
        && (!dir.starts_with('/') || dir.len() > MAX_PROCESS_FIELD_LEN || dir.contains('\0'))
    {
        return Err(invalid(format!(
            "working directory {dir:?} must be an absolute path"
        )));
    }
    Ok(())
}

fn validate_placement(spec: &ServiceSpec) -> Result<(), ApplyError> {
    for c in &spec.constraints {
        if matches!(&c.key, ConstraintKey::Label(l) if l.is_empty()) || c.value.is_empty() {
            return Err(invalid(format!(
                "constraint {c} needs a label name and a value"
            )));
        }
    }
    for PlacementPreference::SpreadOverLabel(l) in &spec.preferences {
        if l.is_empty() {
            return Err(invalid("placement preference needs a label name"));
        }
    }
    Ok(())
}

fn validate_ports(spec: &ServiceSpec) -> Result<(), ApplyError> {
    let mut published = HashSet::new();
    for p in &spec.ports {
        if p.target == 0 {
            return Err(invalid("a published port needs a target port"));
        }
        if p.host_mode && p.published == 0 {
            return Err(invalid(format!(
                "host-mode port {} needs a published port",
                p.target
            )));
        }
        if p.published != 0 && !published.insert((p.protocol, p.published)) {
            return Err(invalid(format!(
                "port {}/{} is published twice",
                p.published, p.protocol
            )));
        }
    }
    Ok(())
}

/// Container engine sockets: a task that mounts one (or a directory holding one) controls the
/// engine, and with it the node.
const ENGINE_SOCKETS: [&str; 4] = [
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
];

/// Refuses bind mounts of the host's root or of an engine's socket unless the cluster allows
/// them (`shoal cluster update --allow-sensitive-mounts`).
/// Refuses a published port that another service publishes too, where either of them does so
/// in ingress mode (the routing mesh takes such a port on every node). Two services may share a
/// port published in host mode only: placement keeps them on different nodes.
fn check_ports_free(
    state: &ClusterState,
    this: Option<ServiceId>,
    spec: &ServiceSpec,
) -> Result<(), ApplyError> {
    for port in spec.ports.iter().filter(|p| p.published != 0) {
        let holder = state
            .services
            .values()
            .filter(|other| Some(other.id) != this)
            .find(|other| {
                other.spec.ports.iter().any(|o| {
                    o.published == port.published
                        && o.protocol == port.protocol
                        && !(o.host_mode && port.host_mode)
                })
            });
        if let Some(holder) = holder {
            return Err(ApplyError::Refused(format!(
                "port {}/{} is published by service {}: publish another port, or remove it \
                 from {} first",
                port.published,
                port.protocol.name(),
                holder.spec.name,
                holder.spec.name
            )));
        }
    }
    Ok(())
}

fn check_mounts_allowed(spec: &ServiceSpec, settings: &ClusterSettings) -> Result<(), ApplyError> {
    if settings.allow_sensitive_mounts {
        return Ok(());
    }
    let binds = spec.mounts.iter().filter(|m| m.kind == MountKind::Bind);
    match binds.map(|m| &m.source).find(|s| is_sensitive_bind(s)) {
        Some(source) => Err(ApplyError::Refused(format!(
            "bind mount of {source:?} hands the task its node (the host's root or a container \
             engine's socket); a cluster manager can allow it with \
             `shoal cluster update --allow-sensitive-mounts`"
        ))),
        None => Ok(()),
    }
}

/// Whether a bind source is the host's root, an engine socket, or a directory above one.
pub fn is_sensitive_bind(source: &str) -> bool {
    let path = normalize_path(source);
    path == "/"
        || ENGINE_SOCKETS
            .iter()
            .any(|socket| *socket == path || socket.starts_with(&format!("{path}/")))
}

/// An absolute path with `.`, `..`, repeated and trailing slashes resolved lexically.
fn normalize_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod mount_tests {
    use super::*;

    #[test]
    fn the_root_and_engine_sockets_are_sensitive_however_written() {
        for source in [
            "/",
            "//",
            "/var/..",
            "/var/run/docker.sock",
            "/var/run/./docker.sock/",
            "/run",
            "/var",
            "/var/run",
            "/tmp/../run/docker.sock",
        ] {
            assert!(is_sensitive_bind(source), "{source}");
        }
        for source in [
            "/data",
            "/var/lib/app",
            "/run/user/1000",
            "/srv/docker.sock.bak",
        ] {
            assert!(!is_sensitive_bind(source), "{source}");
        }
    }
}
