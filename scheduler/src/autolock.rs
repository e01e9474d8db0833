//! Autolock: the cluster's data key kept on managers' disks only wrapped with an unlock key
//! that a person holds (`shoal cluster update --autolock true`).
//!
//! The state records whether autolock is on and the current unlock key **sealed with the
//! cluster's data key** ([`SealedUnlockKey`]): every manager holding the data key in memory can
//! learn the unlock key from the replicated state (to wrap its own key file, and to show the key
//! to its operator), while a worker, a disk thief or a locked manager cannot. The unlock key's
//! public fingerprint ([`SealedUnlockKey::id`]) is stored beside it, so that a locked manager
//! can say which key it waits for and whether its file predates a rotation.
//!
//! Like every piece of this crate nothing here draws randomness or seals anything: the manager
//! that takes the request makes the key and seals it (see `shoal_consensus::autolock`); this
//! module only records it and checks that the record is well formed and consistent.

use serde::{Deserialize, Serialize};

use crate::command::{ApplyError, Outcome};
use crate::model::{ClusterState, Timestamp};
use crate::secrets::{MAX_KEY_ID_LEN, NONCE_BYTES, SEAL_OVERHEAD_BYTES, SealedValue};

/// The length of an unlock key, in bytes.
pub const UNLOCK_KEY_BYTES: usize = 32;

/// The associated data that binds a sealed unlock key to its purpose (a sealed secret cannot be
/// passed off as an unlock key, nor the other way round).
pub const UNLOCK_KEY_ASSOCIATED_DATA: &[u8] = b"shoal/unlock-key/v1";

/// The unlock key as the state holds it: sealed with the cluster's data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedUnlockKey {
    /// The unlock key's public fingerprint (`u` and 16 hex digits): safe to show.
    pub id: String,
    /// The unlock key, sealed with the data key ([`SealedValue::key_id`] names it).
    pub sealed: SealedValue,
}

/// Autolock as the cluster records it (`ClusterState::autolock`). Never shown by a view as a
/// whole: views show [`Autolock::is_on`] and the key's id only.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Autolock {
    /// The current unlock key while autolock is on; `None` while it is off.
    pub unlock_key: Option<SealedUnlockKey>,
    /// The unlock key it replaced at the last rotation (`None` after turning autolock on or
    /// off). A manager that was locked during the rotation still has its file wrapped with
    /// this one: its id lets that manager say so.
    pub previous_id: Option<String>,
    /// When autolock was last turned on, or its key last rotated.
    pub changed_at: Option<Timestamp>,
    /// How many times the unlock key was rotated since autolock was turned on.
    pub rotations: u64,
}

impl Autolock {
    /// Whether autolock is on.
    pub fn is_on(&self) -> bool {
        self.unlock_key.is_some()
    }

    /// The current unlock key's id, while autolock is on.
    pub fn unlock_key_id(&self) -> Option<&str> {
        self.unlock_key.as_ref().map(|k| k.id.as_str())
    }
}

fn refused(message: impl Into<String>) -> ApplyError {
    ApplyError::Refused(message.into())
}

/// Checks a sealed unlock key's shape, and that it is sealed with the data key the cluster's
/// secrets (and its current unlock key) are sealed with: a key sealed with another data key
/// would lock managers out for good.
fn check(state: &ClusterState, key: &SealedUnlockKey) -> Result<(), ApplyError> {
    let sealed = &key.sealed;
    if key.id.is_empty()
        || key.id.len() > MAX_KEY_ID_LEN
        || sealed.key_id.is_empty()
        || sealed.key_id.len() > MAX_KEY_ID_LEN
        || sealed.nonce.len() != NONCE_BYTES
        || sealed.ciphertext.len() != UNLOCK_KEY_BYTES + SEAL_OVERHEAD_BYTES
    {
        return Err(ApplyError::InvalidSpec(
            "a malformed sealed unlock key".into(),
        ));
    }
    let data_key_in_use = state
        .autolock
        .unlock_key
        .as_ref()
        .map(|k| k.sealed.key_id.as_str())
        .or_else(|| {
            state
                .secrets
                .values()
                .next()
                .map(|s| s.sealed.key_id.as_str())
        });
    match data_key_in_use {
        Some(in_use) if in_use != sealed.key_id => Err(refused(format!(
            "the unlock key is sealed with data key {}, and the cluster's is {in_use}",
            sealed.key_id
        ))),
        _ => Ok(()),
    }
}

/// Turns autolock on with `key`. Refused while it is on (its key is rotated instead).
pub fn enable(
    state: &mut ClusterState,
    key: &SealedUnlockKey,
    at: Timestamp,
) -> Result<Outcome, ApplyError> {
    if let Some(current) = state.autolock.unlock_key_id() {
        return Err(refused(format!(
            "autolock is already on (unlock key {current}): `shoal cluster unlock-key` shows \
             the key, `--rotate` replaces it"
        )));
    }
    check(state, key)?;
    state.autolock = Autolock {
        unlock_key: Some(key.clone()),
        previous_id: None,
        changed_at: Some(at),
        rotations: 0,
    };
    state.settings.autolock = true;
    Ok(Outcome::Done)
}

/// Turns autolock off: managers write their data key in plain again. Off already is fine.
pub fn disable(state: &mut ClusterState, at: Timestamp) -> Result<Outcome, ApplyError> {
    if state.autolock.is_on() {
        state.autolock = Autolock {
            changed_at: Some(at),
            ..Autolock::default()
        };
        state.settings.autolock = false;
    }
    Ok(Outcome::Done)
}

/// Replaces the unlock key with `key`. Refused while autolock is off, or with the same key.
pub fn rotate(
    state: &mut ClusterState,
    key: &SealedUnlockKey,
    at: Timestamp,
) -> Result<Outcome, ApplyError> {
    let Some(current) = state.autolock.unlock_key_id().map(str::to_owned) else {
        return Err(refused(
            "autolock is off: there is no unlock key to rotate (`shoal cluster update \
             --autolock true` turns it on)",
        ));
    };
    if current == key.id {
        return Err(refused("the new unlock key is the current one"));
    }
    check(state, key)?;
    state.autolock.unlock_key = Some(key.clone());
    state.autolock.previous_id = Some(current);
    state.autolock.changed_at = Some(at);
    state.autolock.rotations += 1;
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use crate::secrets::Blob;

    fn sealed_key(id: &str, data_key: &str) -> SealedUnlockKey {
        SealedUnlockKey {
            id: id.into(),
            sealed: SealedValue {
                key_id: data_key.into(),
                nonce: Blob(vec![1; NONCE_BYTES]),
                ciphertext: Blob(vec![2; UNLOCK_KEY_BYTES + SEAL_OVERHEAD_BYTES]),
            },
        }
    }

    fn enable_cmd(key: SealedUnlockKey) -> Command {
        Command::EnableAutolock {
            unlock_key: key,
            at: Timestamp(10),
        }
    }

    #[test]
    fn autolock_turns_on_rotates_and_turns_off() {
        let mut state = ClusterState::default();
        assert!(!state.autolock.is_on());
        state
            .apply(&enable_cmd(sealed_key("u1", "kdata")))
            .expect("on");
        assert!(state.autolock.is_on() && state.settings.autolock);
        assert_eq!(state.autolock.unlock_key_id(), Some("u1"));
        assert_eq!(state.autolock.changed_at, Some(Timestamp(10)));

        // On twice: refused, and nothing changes.
        let before = state.clone();
        let again = state
            .apply(&enable_cmd(sealed_key("u2", "kdata")))
            .expect_err("already on");
        assert!(again.to_string().contains("already on"), "{again}");
        assert_eq!(state, before);

        // Rotation keeps the previous key's id.
        state
            .apply(&Command::RotateUnlockKey {
                unlock_key: sealed_key("u2", "kdata"),
                at: Timestamp(20),
            })
            .expect("rotated");
        assert_eq!(state.autolock.unlock_key_id(), Some("u2"));
        assert_eq!(state.autolock.previous_id.as_deref(), Some("u1"));
        assert_eq!(state.autolock.rotations, 1);
        // The same key again, or one sealed with another data key: refused.
        for (key, expected) in [
            (sealed_key("u2", "kdata"), "is the current one"),
            (sealed_key("u3", "kother"), "cluster's is kdata"),
        ] {
            let before = state.clone();
            let error = state
                .apply(&Command::RotateUnlockKey {
                    unlock_key: key,
                    at: Timestamp(30),
                })
                .expect_err("refused");
            assert!(error.to_string().contains(expected), "{error}");
            assert_eq!(state, before);
        }

        state
            .apply(&Command::DisableAutolock { at: Timestamp(40) })
            .expect("off");
        assert!(!state.autolock.is_on() && !state.settings.autolock);
        assert_eq!(state.autolock.previous_id, None);
        // Off twice is fine; rotating while off is refused.
        let before = state.clone();
        state
            .apply(&Command::DisableAutolock { at: Timestamp(50) })
            .expect("off again");
        assert_eq!(state, before);
        let error = state
            .apply(&Command::RotateUnlockKey {
                unlock_key: sealed_key("u4", "kdata"),
                at: Timestamp(60),
            })
            .expect_err("off");
        assert!(error.to_string().contains("autolock is off"), "{error}");
    }

    #[test]
    fn a_malformed_key_or_one_sealed_with_another_data_key_is_refused() {
        let mut state = ClusterState::default();
        let mut short = sealed_key("u1", "kdata");
        short.sealed.ciphertext = Blob(vec![0; 3]);
        let mut no_id = sealed_key("", "kdata");
        no_id.id.clear();
        let mut bad_nonce = sealed_key("u1", "kdata");
        bad_nonce.sealed.nonce = Blob(vec![0; 2]);
        for key in [short, no_id, bad_nonce] {
            let error = state.apply(&enable_cmd(key)).expect_err("malformed");
            assert!(matches!(error, ApplyError::InvalidSpec(_)), "{error}");
        }
        // Secrets sealed with data key kdata: an unlock key sealed with another is refused.
        state
            .apply(&Command::CreateSecret {
                name: "db".into(),
                labels: Default::default(),
                sealed: sealed_key("x", "kdata").sealed,
                at: Timestamp(1),
            })
            .expect("a secret");
        assert_eq!(state.secrets.values().count(), 1);
        let error = state
            .apply(&enable_cmd(sealed_key("u1", "kother")))
            .expect_err("another data key");
        assert!(error.to_string().contains("cluster's is kdata"), "{error}");
        assert!(!state.autolock.is_on());
        state
            .apply(&enable_cmd(sealed_key("u1", "kdata")))
            .expect("the cluster's data key");
    }

    #[test]
    fn a_state_written_before_autolock_reads_as_off() {
        let state: ClusterState = serde_json::from_str("{\"cluster_id\":null,\"nodes\":{},\"services\":{},\"tasks\":{},\"next_service_id\":0,\"next_task_id\":0}")
            .expect("an old state");
        assert!(!state.autolock.is_on());
        assert!(!state.settings.autolock);
    }
}
