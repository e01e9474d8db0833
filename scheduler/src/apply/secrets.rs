//! Secrets and configs: creation (with validation), removal (refused while a service refers to
//! the object), and the checks of services' references to them.

use std::collections::{BTreeMap, BTreeSet};

use crate::command::{ApplyError, Outcome};
use crate::model::{ClusterState, Service, ServiceSpec, Timestamp};
use crate::secrets::{
    Blob, Config, ConfigId, FileRef, MAX_KEY_ID_LEN, MAX_VALUE_BYTES, NONCE_BYTES, ObjectKind,
    SEAL_OVERHEAD_BYTES, SealedValue, Secret, SecretId,
};

use super::service::{MAX_LIST_LEN, validate_name};

/// The longest label key or value of a secret or config.
pub const MAX_LABEL_LEN: usize = 1_024;
/// The longest target path of a reference.
pub const MAX_TARGET_LEN: usize = 4_096;

fn invalid(msg: impl Into<String>) -> ApplyError {
    ApplyError::InvalidSpec(msg.into())
}

/// Creates a secret from its sealed value.
pub fn create_secret(
    state: &mut ClusterState,
    name: &str,
    labels: &BTreeMap<String, String>,
    sealed: &SealedValue,
    at: Timestamp,
) -> Result<Outcome, ApplyError> {
    validate_object(ObjectKind::Secret, name, labels)?;
    if sealed.nonce.len() != NONCE_BYTES
        || sealed.ciphertext.len() < SEAL_OVERHEAD_BYTES
        || sealed.key_id.is_empty()
        || sealed.key_id.len() > MAX_KEY_ID_LEN
    {
        return Err(invalid(format!(
            "secret {name:?}: a malformed sealed value"
        )));
    }
    if sealed.ciphertext.len() > MAX_VALUE_BYTES + SEAL_OVERHEAD_BYTES {
        return Err(too_large(ObjectKind::Secret, name));
    }
    if state.secrets.values().any(|s| s.name == name) {
        return Err(ApplyError::ObjectNameInUse(ObjectKind::Secret, name.into()));
    }
    let id = SecretId(state.next_secret_id);
    state.next_secret_id += 1;
    state.secrets.insert(
        id,
        Secret {
            id,
            name: name.to_owned(),
            labels: labels.clone(),
            sealed: sealed.clone(),
            created_at: at,
        },
    );
    Ok(Outcome::SecretCreated(id))
}

/// Creates a config.
pub fn create_config(
    state: &mut ClusterState,
    name: &str,
    labels: &BTreeMap<String, String>,
    data: &Blob,
    at: Timestamp,
) -> Result<Outcome, ApplyError> {
    validate_object(ObjectKind::Config, name, labels)?;
    if data.len() > MAX_VALUE_BYTES {
        return Err(too_large(ObjectKind::Config, name));
    }
    if state.configs.values().any(|c| c.name == name) {
        return Err(ApplyError::ObjectNameInUse(ObjectKind::Config, name.into()));
    }
    let id = ConfigId(state.next_config_id);
    state.next_config_id += 1;
    state.configs.insert(
        id,
        Config {
            id,
            name: name.to_owned(),
            labels: labels.clone(),
            data: data.clone(),
            created_at: at,
        },
    );
    Ok(Outcome::ConfigCreated(id))
}

/// Removes a secret, unless a service refers to it.
pub fn remove_secret(state: &mut ClusterState, id: SecretId) -> Result<Outcome, ApplyError> {
    let secret = state
        .secrets
        .get(&id)
        .ok_or_else(|| ApplyError::NoSuchObject(ObjectKind::Secret, id.to_string()))?;
    refuse_if_used(state, ObjectKind::Secret, &secret.name)?;
    state.secrets.remove(&id);
    Ok(Outcome::SecretRemoved(id))
}

/// Removes a config, unless a service refers to it.
pub fn remove_config(state: &mut ClusterState, id: ConfigId) -> Result<Outcome, ApplyError> {
    let config = state
        .configs
        .get(&id)
        .ok_or_else(|| ApplyError::NoSuchObject(ObjectKind::Config, id.to_string()))?;
    refuse_if_used(state, ObjectKind::Config, &config.name)?;
    state.configs.remove(&id);
    Ok(Outcome::ConfigRemoved(id))
}

/// The names of the services whose spec (current, or previous kept for rollback) refers to the
/// `kind` named `name`, in name order.
pub fn services_using(state: &ClusterState, kind: ObjectKind, name: &str) -> Vec<String> {
    let refers = |spec: &ServiceSpec| references(spec, kind).iter().any(|r| r.source == name);
    let users: BTreeSet<&str> = state
        .services
        .values()
        .filter(|s: &&Service| refers(&s.spec) || s.previous_spec.as_ref().is_some_and(refers))
        .map(|s| s.spec.name.as_str())
        .collect();
    users.into_iter().map(str::to_owned).collect()
}

fn refuse_if_used(state: &ClusterState, kind: ObjectKind, name: &str) -> Result<(), ApplyError> {
    let users = services_using(state, kind, name);
    if users.is_empty() {
        return Ok(());
    }
    let flag = format!("--{kind}-rm {name}");
    Err(ApplyError::Refused(format!(
        "{kind} {name} is in use by service{} {}: remove it from them first \
         (`shoal service update {flag} SERVICE`; a service's previous spec, kept for rollback, \
         counts too)",
        if users.len() == 1 { "" } else { "s" },
        users.join(", ")
    )))
}

fn references(spec: &ServiceSpec, kind: ObjectKind) -> &[FileRef] {
    match kind {
        ObjectKind::Secret => &spec.secrets,
        ObjectKind::Config => &spec.configs,
    }
}

fn too_large(kind: ObjectKind, name: &str) -> ApplyError {
    invalid(format!(
        "{kind} {name:?} is larger than {} KiB",
        MAX_VALUE_BYTES / 1024
    ))
}

fn validate_object(
    kind: ObjectKind,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), ApplyError> {
    validate_name(name).map_err(|_| {
        invalid(format!(
            "{kind} name {name:?} must be 1 to 63 letters, digits, '-', '_' or '.', starting \
             with a letter or digit"
        ))
    })?;
    if labels.len() > MAX_LIST_LEN {
        return Err(invalid(format!(
            "{kind} {name:?} has more than {MAX_LIST_LEN} labels"
        )));
    }
    if labels
        .iter()
        .any(|(k, v)| k.is_empty() || k.len() > MAX_LABEL_LEN || v.len() > MAX_LABEL_LEN)
    {
        return Err(invalid(format!(
            "{kind} {name:?}: a label needs a name, and names and values are at most \
             {MAX_LABEL_LEN} bytes"
        )));
    }
    Ok(())
}

/// Checks the shape of a spec's references: valid names, absolute targets without `..`, no
/// target twice, permission bits only.
pub fn validate_references(spec: &ServiceSpec) -> Result<(), ApplyError> {
    if spec.secrets.len() > MAX_LIST_LEN || spec.configs.len() > MAX_LIST_LEN {
        return Err(invalid(format!(
            "a service refers to at most {MAX_LIST_LEN} secrets and {MAX_LIST_LEN} configs"
        )));
    }
    let mut targets = BTreeSet::new();
    for (kind, refs) in [
        (ObjectKind::Secret, &spec.secrets),
        (ObjectKind::Config, &spec.configs),
    ] {
        for r in refs {
            validate_name(&r.source)
                .map_err(|_| invalid(format!("{kind} name {:?} is not valid", r.source)))?;
            let clean = r.target.starts_with('/')
                && r.target.len() > 1
                && r.target.len() <= MAX_TARGET_LEN
                && !r.target.ends_with('/')
                && !r.target.contains('\0')
                && r.target.split('/').all(|part| part != ".." && part != ".");
            if !clean {
                return Err(invalid(format!(
                    "{kind} {}: target {:?} must be an absolute file path without `.` or `..`",
                    r.source, r.target
                )));
            }
            if r.mode > 0o777 {
                return Err(invalid(format!(
                    "{kind} {}: mode {:o} has more than permission bits (at most 0777)",
                    r.source, r.mode
                )));
            }
            if !targets.insert(r.target.as_str()) {
                return Err(invalid(format!(
                    "two secrets or configs have the target {:?}",
                    r.target
                )));
            }
        }
    }
    Ok(())
}

/// Refuses a spec that refers to a secret or config the cluster does not hold.
pub fn check_references_exist(state: &ClusterState, spec: &ServiceSpec) -> Result<(), ApplyError> {
    for r in &spec.secrets {
        if !state.secrets.values().any(|s| s.name == r.source) {
            return Err(ApplyError::Refused(format!(
                "secret {} not found: create it first (`shoal secret create {} FILE`), or see \
                 `shoal secret ls`",
                r.source, r.source
            )));
        }
    }
    for r in &spec.configs {
        if !state.configs.values().any(|c| c.name == r.source) {
            return Err(ApplyError::Refused(format!(
                "config {} not found: create it first (`shoal config create {} FILE`), or see \
                 `shoal config ls`",
                r.source, r.source
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
