//! Secrets and configs: validation, uniqueness, references from services, refusal to remove
//! what is in use, events, and (property) no sequence of commands leaves a dangling reference.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::events::{EventKind, Probe};
use crate::model::*;
use crate::secrets::*;
use crate::synthetic;
use crate::testkit::*;
use crate::{ApplyError, Command, Outcome};

fn sealed(len: usize) -> SealedValue {
    SealedValue {
        key_id: "k-test".into(),
        nonce: Blob(vec![7; NONCE_BYTES]),
        ciphertext: Blob(vec![9; len + SEAL_OVERHEAD_BYTES]),
    }
}

fn create_secret(name: &str) -> Command {
    Command::CreateSecret {
        name: name.into(),
        labels: BTreeMap::from([("env".into(), "prod".into())]),
        sealed: sealed(10),
        at: Timestamp(5),
    }
}

fn create_config(name: &str, data: &[u8]) -> Command {
    Command::CreateConfig {
        name: name.into(),
        labels: BTreeMap::new(),
        data: Blob(data.to_vec()),
        at: Timestamp(5),
    }
}

fn with_refs(name: &str, secrets: &[&str], configs: &[&str]) -> ServiceSpec {
    let mut spec = synthetic::spec(name, 1);
    spec.secrets = secrets.iter().map(|s| FileRef::secret(s)).collect();
    spec.configs = configs.iter().map(|c| FileRef::config(c)).collect();
    spec
}

#[test]
fn secrets_and_configs_get_ids_and_unique_names_per_kind() {
    let mut state = cluster(1);
    assert_eq!(
        state.apply(&create_secret("db")),
        Ok(Outcome::SecretCreated(SecretId(0)))
    );
    assert_eq!(
        state.apply(&create_config("db", b"x")),
        Ok(Outcome::ConfigCreated(ConfigId(0))),
        "a secret and a config may share a name"
    );
    let before = state.clone();
    assert_eq!(
        state.apply(&create_secret("db")),
        Err(ApplyError::ObjectNameInUse(ObjectKind::Secret, "db".into()))
    );
    assert_eq!(
        state.apply(&create_config("db", b"y")),
        Err(ApplyError::ObjectNameInUse(ObjectKind::Config, "db".into()))
    );
    assert_eq!(state, before);
    assert_eq!(state.secrets[&SecretId(0)].labels["env"], "prod");
    assert_eq!(state.secrets[&SecretId(0)].created_at, Timestamp(5));
}

#[test]
fn bad_names_sizes_and_sealed_values_are_refused() {
    let mut state = cluster(1);
    let before = state.clone();
    for name in ["", "-x", "a b", "a/b", &"n".repeat(64)] {
        assert!(matches!(
            state.apply(&create_secret(name)),
            Err(ApplyError::InvalidSpec(_))
        ));
    }
    let big = vec![0u8; MAX_VALUE_BYTES + 1];
    let refused = state.apply(&create_config("big", &big));
    assert!(
        matches!(&refused, Err(ApplyError::InvalidSpec(m)) if m.contains("500 KiB")),
        "{refused:?}"
    );
    assert!(state.apply(&create_config("max", &big[1..])).is_ok());
    state = before.clone();
    let too_big = Command::CreateSecret {
        name: "big".into(),
        labels: BTreeMap::new(),
        sealed: sealed(MAX_VALUE_BYTES + 1),
        at: Timestamp(1),
    };
    assert!(state.apply(&too_big).is_err());
    let mut short_nonce = sealed(1);
    short_nonce.nonce = Blob(vec![0; 12]);
    let malformed = Command::CreateSecret {
        name: "n".into(),
        labels: BTreeMap::new(),
        sealed: short_nonce,
        at: Timestamp(1),
    };
    assert!(state.apply(&malformed).is_err());
    assert_eq!(state, before);
}

#[test]
fn services_may_refer_only_to_objects_that_exist() {
    let mut state = cluster(1);
    let refused = state.apply(&Command::CreateService {
        spec: with_refs("web", &["db"], &[]),
        at: Timestamp(1),
    });
    assert!(
        matches!(&refused, Err(ApplyError::Refused(m)) if m.contains("secret db not found") && m.contains("shoal secret create")),
        "{refused:?}"
    );
    state.apply(&create_secret("db")).expect("created");
    let refused = state.apply(&Command::CreateService {
        spec: with_refs("web", &["db"], &["site"]),
        at: Timestamp(1),
    });
    assert!(
        matches!(&refused, Err(ApplyError::Refused(m)) if m.contains("config site not found")),
        "{refused:?}"
    );
    state.apply(&create_config("site", b"x")).expect("created");
    let id = create(&mut state, with_refs("web", &["db"], &["site"]));
    // An update to a missing one is refused too.
    let refused = state.apply(&Command::UpdateService {
        id,
        expected_revision: 1,
        spec: with_refs("web", &["db", "other"], &["site"]),
        at: Timestamp(2),
    });
    assert!(
        matches!(refused, Err(ApplyError::Refused(_))),
        "{refused:?}"
    );
}

#[test]
fn references_are_validated() {
    let mut state = cluster(1);
    state.apply(&create_secret("db")).expect("created");
    state.apply(&create_config("db", b"x")).expect("created");
    let mut cases = Vec::new();
    let mut spec = with_refs("w", &["db"], &[]);
    spec.secrets[0].target = "relative".into();
    cases.push(spec);
    let mut spec = with_refs("w", &["db"], &[]);
    spec.secrets[0].target = "/run/secrets/../../etc/passwd".into();
    cases.push(spec);
    let mut spec = with_refs("w", &["db"], &[]);
    spec.secrets[0].mode = 0o4755;
    cases.push(spec);
    let mut spec = with_refs("w", &["db"], &["db"]);
    spec.configs[0].target = "/run/secrets/db".into();
    cases.push(spec);
    for spec in cases {
        let refused = state.apply(&Command::CreateService {
            spec: spec.clone(),
            at: Timestamp(1),
        });
        assert!(
            matches!(refused, Err(ApplyError::InvalidSpec(_))),
            "{:?}: {refused:?}",
            spec.secrets
        );
    }
}

#[test]
fn removal_is_refused_while_a_service_refers_and_names_the_services() {
    let mut state = cluster(1);
    state.apply(&create_secret("db")).expect("created");
    state.apply(&create_config("site", b"x")).expect("created");
    let web = create(&mut state, with_refs("web", &["db"], &["site"]));
    create(&mut state, with_refs("api", &["db"], &[]));
    let before = state.clone();
    let refused = state.apply(&Command::RemoveSecret {
        id: SecretId(0),
        at: Timestamp(3),
    });
    match &refused {
        Err(ApplyError::Refused(m)) => {
            assert!(m.contains("services api, web"), "{m}");
            assert!(m.contains("--secret-rm db"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    let refused = state.apply(&Command::RemoveConfig {
        id: ConfigId(0),
        at: Timestamp(3),
    });
    assert!(
        matches!(&refused, Err(ApplyError::Refused(m)) if m.contains("service web")),
        "{refused:?}"
    );
    assert_eq!(state, before);
    // The previous spec (kept for rollback) still counts after an update drops the reference.
    state
        .apply(&Command::UpdateService {
            id: web,
            expected_revision: 1,
            spec: with_refs("web", &[], &[]),
            at: Timestamp(4),
        })
        .expect("updated");
    let refused = state.apply(&Command::RemoveConfig {
        id: ConfigId(0),
        at: Timestamp(5),
    });
    assert!(
        matches!(refused, Err(ApplyError::Refused(_))),
        "{refused:?}"
    );
    state
        .apply(&Command::RemoveService {
            id: web,
            at: Timestamp(6),
        })
        .expect("removed");
    assert_eq!(
        state.apply(&Command::RemoveConfig {
            id: ConfigId(0),
            at: Timestamp(7),
        }),
        Ok(Outcome::ConfigRemoved(ConfigId(0)))
    );
    assert!(matches!(
        state.apply(&Command::RemoveConfig {
            id: ConfigId(0),
            at: Timestamp(7),
        }),
        Err(ApplyError::NoSuchObject(ObjectKind::Config, _))
    ));
}

#[test]
fn events_name_the_objects_and_never_carry_values() {
    let mut state = cluster(1);
    let events = |state: &mut ClusterState, cmd: &Command| {
        let probe = Probe::before(state, cmd);
        let outcome = state.apply(cmd).expect("applies");
        probe.after(state, cmd, &outcome, 9, Timestamp(0))
    };
    let created = events(&mut state, &create_secret("db"));
    assert_eq!(
        created.iter().map(|e| e.kind.clone()).collect::<Vec<_>>(),
        vec![EventKind::SecretCreated {
            id: SecretId(0),
            name: "db".into()
        }]
    );
    assert_eq!(created[0].time, Timestamp(5));
    let created = events(&mut state, &create_config("site", b"x"));
    assert_eq!(created[0].kind.subject_name(), "site");
    assert_eq!(created[0].kind.subject_id(), "c00000000000");
    let removed = events(
        &mut state,
        &Command::RemoveSecret {
            id: SecretId(0),
            at: Timestamp(8),
        },
    );
    assert_eq!(
        removed[0].kind,
        EventKind::SecretRemoved {
            id: SecretId(0),
            name: "db".into()
        }
    );
    assert_eq!(removed[0].kind.event_type().as_str(), "secret");
}

#[test]
fn an_old_state_without_secrets_still_decodes() {
    let state = cluster(1);
    let mut json: serde_json::Value = serde_json::to_value(&state).expect("encodes");
    let object = json.as_object_mut().expect("an object");
    for key in ["secrets", "configs", "next_secret_id", "next_config_id"] {
        object.remove(key);
    }
    let back: ClusterState = serde_json::from_value(json).expect("decodes");
    assert_eq!(back, state);
    let mut spec = serde_json::to_value(synthetic::spec("a", 1)).expect("encodes");
    let spec_object = spec.as_object_mut().expect("an object");
    spec_object.remove("secrets");
    spec_object.remove("configs");
    let back: ServiceSpec = serde_json::from_value(spec).expect("decodes");
    assert!(back.secrets.is_empty() && back.configs.is_empty());
}

/// One step of a random history: `(kind 0..6, object 0..3, service 0..2)`.
type Step = (u8, u8, u8);

proptest! {
    /// Whatever is created, updated and removed in whatever order, no service's spec (nor its
    /// rollback spec) ever refers to a secret or config the cluster does not hold, and applying
    /// the same history twice gives the same state.
    #[test]
    fn no_history_leaves_a_dangling_reference(steps in prop::collection::vec((0..6u8, 0..3u8, 0..2u8), 1..40)) {
        let run = |steps: &[Step]| {
            let mut state = cluster(1);
            for &(kind, object, service) in steps {
                let object_name = format!("o{object}");
                let service_name = format!("svc{service}");
                let service_id = state
                    .services
                    .values()
                    .find(|s| s.spec.name == service_name)
                    .map(|s| (s.id, s.revision));
                let cmd = match kind {
                    0 => create_secret(&object_name),
                    1 => create_config(&object_name, object_name.as_bytes()),
                    2 => match state.secrets.values().find(|s| s.name == object_name) {
                        Some(s) => Command::RemoveSecret { id: s.id, at: Timestamp(1) },
                        None => continue,
                    },
                    3 => match state.configs.values().find(|c| c.name == object_name) {
                        Some(c) => Command::RemoveConfig { id: c.id, at: Timestamp(1) },
                        None => continue,
                    },
                    4 => {
                        let spec = with_refs(&service_name, &[&object_name], &[&object_name]);
                        match service_id {
                            Some((id, revision)) => Command::UpdateService { id, expected_revision: revision, spec, at: Timestamp(2) },
                            None => Command::CreateService { spec, at: Timestamp(2) },
                        }
                    }
                    _ => match service_id {
                        Some((id, _)) => Command::RemoveService { id, at: Timestamp(3) },
                        None => continue,
                    },
                };
                let _ = state.apply(&cmd);
            }
            state
        };
        let state = run(&steps);
        for service in state.services.values() {
            for spec in std::iter::once(&service.spec).chain(service.previous_spec.as_ref()) {
                for r in &spec.secrets {
                    prop_assert!(state.secrets.values().any(|s| s.name == r.source), "dangling secret {}", r.source);
                }
                for r in &spec.configs {
                    prop_assert!(state.configs.values().any(|c| c.name == r.source), "dangling config {}", r.source);
                }
            }
        }
        prop_assert_eq!(state, run(&steps));
    }
}
