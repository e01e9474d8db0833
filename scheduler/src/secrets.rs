//! Secrets and configs: small named values that services mount into their tasks as files.
//!
//! A [`Config`] holds its bytes as they are. A [`Secret`] holds only a [`SealedValue`]: the
//! value encrypted (an AEAD) by a manager before the command that creates it is proposed, so the
//! raft log, its snapshots and this crate only ever see ciphertext. The encryption itself is not
//! done here (this crate reads no randomness and holds no key): see `shoal_consensus::sealed`.
//!
//! Both are immutable: rotating a value is a new object and a service update
//! (`--secret-rm old --secret-add source=new,target=name`). Neither may be removed while a
//! service's spec (its current one, or the previous one kept for rollback) refers to it.
//!
//! Nothing here prints a value: [`Blob`]'s `Debug` prints its length only.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::Timestamp;

/// The largest value of a secret or a config, in bytes (as Docker Swarm: 500 KiB).
pub const MAX_VALUE_BYTES: usize = 500 * 1024;
/// Room the AEAD adds to a sealed value (its tag).
pub const SEAL_OVERHEAD_BYTES: usize = 16;
/// The length of a sealed value's nonce (XChaCha20-Poly1305: 192 bits).
pub const NONCE_BYTES: usize = 24;
/// The longest key id a sealed value names.
pub const MAX_KEY_ID_LEN: usize = 64;
/// The directory a secret is mounted in when its reference gives no target.
pub const SECRETS_DIR: &str = "/run/secrets";
/// The mode of a secret's file unless its reference says otherwise.
pub const DEFAULT_SECRET_MODE: u32 = 0o400;
/// The mode of a config's file unless its reference says otherwise.
pub const DEFAULT_CONFIG_MODE: u32 = 0o444;

/// A secret's identity, assigned by the state machine when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SecretId(pub u64);

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "x{:011x}", self.0)
    }
}

/// A config's identity, assigned by the state machine when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConfigId(pub u64);

impl fmt::Display for ConfigId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{:011x}", self.0)
    }
}

/// Bytes that are never printed: `Debug` shows their length. Serialized as a byte string
/// (compact in CBOR, where the log and snapshots hold it).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Blob(pub Vec<u8>);

impl Blob {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// How many bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                Ok(Blob(bytes))
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}

/// A secret's value as the cluster stores it: encrypted with the cluster's data key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SealedValue {
    /// Which data key sealed it (a fingerprint of the key, never the key).
    pub key_id: String,
    /// The AEAD's nonce, fresh and random for every value.
    pub nonce: Blob,
    /// The ciphertext with its tag. The associated data binds it to the secret's name.
    pub ciphertext: Blob,
}

/// A secret: its metadata and its sealed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// Its id.
    pub id: SecretId,
    /// Its name, unique among secrets.
    pub name: String,
    /// Operator-defined labels.
    pub labels: BTreeMap<String, String>,
    /// The value, sealed.
    pub sealed: SealedValue,
    /// Creation time.
    pub created_at: Timestamp,
}

/// A config: its metadata and its value as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Its id.
    pub id: ConfigId,
    /// Its name, unique among configs.
    pub name: String,
    /// Operator-defined labels.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub data: Blob,
    /// Creation time.
    pub created_at: Timestamp,
}

/// A service's reference to a secret or a config: which one, and the file it becomes in each
/// of the service's tasks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileRef {
    /// The secret's or config's name.
    pub source: String,
    /// The file's absolute path in the container (`/run/secrets/NAME`, `/NAME` by default).
    pub target: String,
    /// The file's owner.
    #[serde(default)]
    pub uid: u32,
    /// The file's group.
    #[serde(default)]
    pub gid: u32,
    /// The file's permission bits (0o400 for secrets, 0o444 for configs by default).
    pub mode: u32,
}

impl FileRef {
    /// A reference to secret `name` with the defaults: `/run/secrets/NAME`, root, 0400.
    pub fn secret(name: &str) -> FileRef {
        FileRef {
            source: name.to_owned(),
            target: format!("{SECRETS_DIR}/{name}"),
            uid: 0,
            gid: 0,
            mode: DEFAULT_SECRET_MODE,
        }
    }

    /// A reference to config `name` with the defaults: `/NAME`, root, 0444.
    pub fn config(name: &str) -> FileRef {
        FileRef {
            source: name.to_owned(),
            target: format!("/{name}"),
            uid: 0,
            gid: 0,
            mode: DEFAULT_CONFIG_MODE,
        }
    }
}

/// Whether an object is a secret or a config (in messages and lookups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// A secret.
    Secret,
    /// A config.
    Config,
}

impl ObjectKind {
    /// `secret` or `config`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Secret => "secret",
            ObjectKind::Config => "config",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The associated data a secret's value is sealed with: binds the ciphertext to the secret's
/// name, so that a ciphertext copied to another secret does not open. Given to the AEAD by
/// whoever seals and opens (`shoal_consensus::sealed`).
pub fn secret_associated_data(name: &str) -> Vec<u8> {
    let mut aad = b"shoal/secret/v1\0".to_vec();
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_never_print_their_bytes() {
        let blob = Blob(b"hunter2".to_vec());
        assert_eq!(format!("{blob:?}"), "<7 bytes>");
        let sealed = SealedValue {
            key_id: "k1".into(),
            nonce: Blob(vec![1; NONCE_BYTES]),
            ciphertext: blob,
        };
        assert!(!format!("{sealed:?}").contains("104"));
    }

    #[test]
    fn blobs_round_trip_as_bytes_and_as_a_sequence() {
        let blob = Blob(vec![0, 1, 2, 255]);
        let json = serde_json::to_string(&blob).expect("encodes");
        assert_eq!(json, "[0,1,2,255]");
        let back: Blob = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, blob);
    }

    #[test]
    fn default_references() {
        assert_eq!(FileRef::secret("db").target, "/run/secrets/db");
        assert_eq!(FileRef::secret("db").mode, 0o400);
        assert_eq!(FileRef::config("nginx.conf").target, "/nginx.conf");
        assert_eq!(FileRef::config("nginx.conf").mode, 0o444);
    }
}
