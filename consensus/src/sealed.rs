//! Secret values at rest: sealed with the cluster's data key (XChaCha20-Poly1305) before the
//! command that carries them is proposed, so that the raft log, its snapshots and every
//! replica's state hold only ciphertext.
//!
//! - [`DataKey`]: 32 random bytes, never printed (`Debug` says `<redacted>`), zeroed on drop.
//!   Its [`DataKey::id`] (a fingerprint) is recorded with every value it sealed.
//! - [`seal`] / [`open`]: pure functions of the key, the nonce and the associated data (which
//!   binds a ciphertext to its secret's name: see `shoal_scheduler::secrets`).
//!   [`seal_fresh`] draws a fresh random nonce.
//! - [`task_files`] / [`task_files_from`]: the files of a task (its secrets opened), which the
//!   leader gives to the task's node.
//! - [`DataKeyStore`]: the key in a manager's data dir (`data-key`, mode 0600), created by the
//!   leader when first needed, or installed from the leader by another manager. While the
//!   cluster's autolock is on the file holds the key wrapped with the unlock key
//!   ([`crate::autolock`]); a manager that starts with such a file is *locked*: it holds no key
//!   ([`DataKeyStore::get`] is `None`) until [`DataKeyStore::unlock`] is given the unlock key.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use shoal_scheduler::secrets::{NONCE_BYTES, SealedValue};
use shoal_scheduler::{Blob, ClusterState, FileRef, ObjectKind, TaskId, secrets};
use zeroize::{Zeroize, Zeroizing};

use crate::autolock::{LockedFile, UnlockKey};

/// The data key's file in a manager's data dir.
pub const DATA_KEY_FILE: &str = "data-key";
/// The first word of the plain key file (its format's version; the locked format is
/// [`crate::autolock::LOCKED_FILE_HEADER`]).
pub const PLAIN_FILE_HEADER: &str = "shoal-data-key-v1";

/// Why a value could not be sealed or opened, or the key not kept. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The value was sealed with another key than this one.
    #[error("the value was sealed with data key {sealed_with}, and this manager holds {held}")]
    WrongKey {
        /// The key id the value names.
        sealed_with: String,
        /// The key id this manager holds.
        held: String,
    },
    /// The ciphertext, its nonce or its associated data do not match (tampered with, or moved
    /// to another secret).
    #[error("the sealed value does not open: it was altered or belongs to another secret")]
    Corrupt,
    /// No randomness for a key or a nonce.
    #[error("no randomness from the OS: {0}")]
    Random(String),
    /// This manager holds no data key yet.
    #[error("this manager holds no data key yet")]
    NoKey,
    /// A different key is already kept here.
    #[error("this manager already holds data key {held}, not {offered}")]
    Conflict {
        /// The key held.
        held: String,
        /// The key offered.
        offered: String,
    },
    /// This manager is locked (autolock): its key file is wrapped with the unlock key, and it
    /// holds no key until it is unlocked.
    #[error(
        "this manager is locked (autolock is on and it restarted): run `shoal cluster unlock` \
         on it with the unlock key (unlock key {unlock_key_id})"
    )]
    Locked {
        /// The id of the unlock key the file is wrapped with.
        unlock_key_id: String,
    },
    /// The unlock key given is not the one the key file is wrapped with.
    #[error(
        "wrong unlock key: it is {given}, and this manager's data key file is wrapped with \
         {wanted}"
    )]
    WrongUnlockKey {
        /// The id of the key given.
        given: String,
        /// The id of the key the file needs.
        wanted: String,
    },
    /// The text given is not an unlock key. Never repeats the text.
    #[error("not an unlock key: it reads `SHOALKEY-1-` and 52 base32 digits")]
    BadUnlockKey,
    /// An unlock was asked of a manager that is not locked.
    #[error("this manager is not locked")]
    NotLocked,
    /// The key file could not be read or written.
    #[error("data key file {path}: {reason}")]
    File {
        /// Its path.
        path: PathBuf,
        /// What went wrong (never the key).
        reason: String,
    },
}

/// The cluster's data key: 32 random bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; 32]);

impl DataKey {
    /// A new random key.
    pub fn generate() -> Result<DataKey, SealError> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).map_err(|e| SealError::Random(e.to_string()))?;
        Ok(DataKey(bytes))
    }

    /// The key from its bytes (a key sent by the leader).
    pub fn from_bytes(bytes: [u8; 32]) -> DataKey {
        DataKey(bytes)
    }

    /// The key's bytes (to send it to another manager over the authenticated mesh only).
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key's fingerprint: `k` and 16 hex digits of `sha256("shoal/data-key/id" || key)`.
    /// Safe to show and to store beside what the key sealed.
    pub fn id(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"shoal/data-key/id")
            .chain_update(self.0)
            .finalize();
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("k{hex}")
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey({} <redacted>)", self.id())
    }
}

/// Seals `plaintext` with `key` and `nonce`, binding `associated_data`. Pure: the same inputs
/// give the same sealed value. A nonce must never be used twice with one key ([`seal_fresh`]).
pub fn seal(
    key: &DataKey,
    nonce: [u8; NONCE_BYTES],
    associated_data: &[u8],
    plaintext: &[u8],
) -> Result<SealedValue, SealError> {
    let ciphertext = key
        .cipher()
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: associated_data,
            },
        )
        .map_err(|_| SealError::Corrupt)?;
    Ok(SealedValue {
        key_id: key.id(),
        nonce: Blob(nonce.to_vec()),
        ciphertext: Blob(ciphertext),
    })
}

/// Seals `plaintext` with a fresh random nonce.
pub fn seal_fresh(
    key: &DataKey,
    associated_data: &[u8],
    plaintext: &[u8],
) -> Result<SealedValue, SealError> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::getrandom(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
    seal(key, nonce, associated_data, plaintext)
}

/// Opens a sealed value with `key` and the same `associated_data` it was sealed with. The
/// plaintext is zeroed when dropped.
pub fn open(
    key: &DataKey,
    sealed: &SealedValue,
    associated_data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if sealed.key_id != key.id() {
        return Err(SealError::WrongKey {
            sealed_with: sealed.key_id.clone(),
            held: key.id(),
        });
    }
    if sealed.nonce.len() != NONCE_BYTES {
        return Err(SealError::Corrupt);
    }
    key.cipher()
        .decrypt(
            XNonce::from_slice(sealed.nonce.as_slice()),
            Payload {
                msg: sealed.ciphertext.as_slice(),
                aad: associated_data,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SealError::Corrupt)
}

/// Seals secret `name`'s value (the associated data names the secret).
pub fn seal_secret(key: &DataKey, name: &str, plaintext: &[u8]) -> Result<SealedValue, SealError> {
    seal_fresh(key, &secrets::secret_associated_data(name), plaintext)
}

/// Opens secret `name`'s sealed value.
pub fn open_secret(
    key: &DataKey,
    name: &str,
    sealed: &SealedValue,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    open(key, sealed, &secrets::secret_associated_data(name))
}

/// How a manager holds the data key ([`DataKeyStore::status`]). Never carries a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStatus {
    /// It holds no key (a worker, or a manager of a cluster without secrets yet).
    None,
    /// It holds the key, kept on disk in plain (autolock off).
    Plain {
        /// The data key's id.
        data_key_id: String,
    },
    /// It holds the key, kept on disk wrapped with the unlock key (autolock on).
    Wrapped {
        /// The data key's id.
        data_key_id: String,
        /// The unlock key's id.
        unlock_key_id: String,
    },
    /// It holds no key until it is unlocked: its file is wrapped with the unlock key.
    Locked {
        /// The data key's id, as the file says.
        data_key_id: String,
        /// The id of the unlock key that opens the file.
        unlock_key_id: String,
    },
}

impl KeyStatus {
    /// Whether the manager is locked.
    pub fn is_locked(&self) -> bool {
        matches!(self, KeyStatus::Locked { .. })
    }
}

/// What the store holds, under its lock.
#[derive(Debug, Default)]
struct Held {
    /// The key, unless there is none or the store is locked.
    key: Option<DataKey>,
    /// The locked file, while locked.
    locked: Option<LockedFile>,
    /// What the file is (to be) wrapped with: `Some` while autolock is on.
    wrap: Option<UnlockKey>,
}

/// A manager's data key, kept in its data dir ([`DATA_KEY_FILE`], mode 0600) and in memory.
/// Cloning the store is not possible; share it behind an `Arc`. Its lock is a
/// `std::sync::Mutex`: held for a file read or write, never across an `.await`.
///
/// The file is in plain (`shoal-data-key-v1`) or, while the cluster's autolock is on, wrapped
/// with the unlock key (`shoal-data-key-v2-locked`, see [`crate::autolock`];
/// [`Self::protect`] switches). A store opened on a wrapped file is locked: [`Self::get`] is
/// `None`, it creates and installs nothing, and [`Self::unlock`] opens it.
#[derive(Debug)]
pub struct DataKeyStore {
    path: PathBuf,
    held: Mutex<Held>,
}

impl DataKeyStore {
    /// The store of the data dir `data_dir`, with the key it holds if any (locked if the file
    /// is wrapped).
    pub fn open(data_dir: &Path) -> Result<DataKeyStore, SealError> {
        let path = data_dir.join(DATA_KEY_FILE);
        let held = match read_key(&path)? {
            None => Held::default(),
            Some(KeyFile::Plain(key)) => Held {
                key: Some(key),
                ..Held::default()
            },
            Some(KeyFile::Locked(file)) => Held {
                locked: Some(file),
                ..Held::default()
            },
        };
        Ok(DataKeyStore {
            path,
            held: Mutex::new(held),
        })
    }

    /// The key, if this manager holds one (`None` while locked).
    pub fn get(&self) -> Option<DataKey> {
        self.lock().key.clone()
    }

    /// Whether this manager holds the key (without copying it).
    pub fn holds_key(&self) -> bool {
        self.lock().key.is_some()
    }

    /// Whether this manager is locked (see [`Self::unlock`]).
    pub fn is_locked(&self) -> bool {
        self.lock().locked.is_some()
    }

    /// How this manager holds the key.
    pub fn status(&self) -> KeyStatus {
        let held = self.lock();
        match (&held.key, &held.locked, &held.wrap) {
            (_, Some(file), _) => KeyStatus::Locked {
                data_key_id: file.data_key_id.clone(),
                unlock_key_id: file.unlock_key_id.clone(),
            },
            (Some(key), None, Some(wrap)) => KeyStatus::Wrapped {
                data_key_id: key.id(),
                unlock_key_id: wrap.id(),
            },
            (Some(key), None, None) => KeyStatus::Plain {
                data_key_id: key.id(),
            },
            (None, None, _) => KeyStatus::None,
        }
    }

    /// The key, created (and written) now if this manager holds none. Only the leader creates
    /// the key: another manager fetches the leader's ([`Self::install`]). Refused while locked.
    pub fn get_or_create(&self) -> Result<DataKey, SealError> {
        let mut held = self.lock();
        refuse_if_locked(&held)?;
        if let Some(key) = held.key.as_ref() {
            return Ok(key.clone());
        }
        let key = DataKey::generate()?;
        write_key(&self.path, &key, held.wrap.as_ref())?;
        tracing::info!(key_id = %key.id(), "created the cluster's data key");
        held.key = Some(key.clone());
        Ok(key)
    }

    /// Keeps `key` (fetched from the leader), written as [`Self::protect`] last said. The same
    /// key again is fine; a different one is refused (the values sealed with the one held would
    /// no longer open), and so is any key while locked.
    pub fn install(&self, key: DataKey) -> Result<(), SealError> {
        let mut held = self.lock();
        refuse_if_locked(&held)?;
        match held.key.as_ref() {
            Some(existing) if *existing == key => Ok(()),
            Some(existing) => Err(SealError::Conflict {
                held: existing.id(),
                offered: key.id(),
            }),
            None => {
                write_key(&self.path, &key, held.wrap.as_ref())?;
                tracing::info!(key_id = %key.id(), "installed the cluster's data key");
                held.key = Some(key);
                Ok(())
            }
        }
    }

    /// Keeps the file in plain (`None`) or wrapped with `unlock` (autolock on), rewriting it
    /// now if the store holds the key and the file is not so already; a key installed later is
    /// written the same way. Answers whether the file was rewritten. Refused while locked.
    pub fn protect(&self, unlock: Option<&UnlockKey>) -> Result<bool, SealError> {
        let mut held = self.lock();
        refuse_if_locked(&held)?;
        if held.wrap.as_ref() == unlock {
            return Ok(false);
        }
        let rewritten = match held.key.as_ref() {
            Some(key) => {
                write_key(&self.path, key, unlock)?;
                true
            }
            None => false,
        };
        held.wrap = unlock.cloned();
        if rewritten {
            match unlock {
                Some(unlock) => tracing::info!(
                    unlock_key_id = %unlock.id(),
                    "autolock: the data key file is now wrapped with the unlock key"
                ),
                None => tracing::info!("autolock off: the data key file is plain again"),
            }
        }
        Ok(rewritten)
    }

    /// Unlocks a locked store with `unlock`: opens its file and holds the key (the file stays as
    /// it is). A wrong key, or a file that does not open, changes nothing. Giving the key that
    /// unlocked an already unlocked store again is fine (the call may have been repeated).
    pub fn unlock(&self, unlock: &UnlockKey) -> Result<DataKey, SealError> {
        let mut held = self.lock();
        let Some(file) = held.locked.as_ref() else {
            return match (&held.key, &held.wrap) {
                (Some(key), Some(wrap)) if wrap == unlock => Ok(key.clone()),
                _ => Err(SealError::NotLocked),
            };
        };
        let key = file.open(unlock)?;
        tracing::info!(key_id = %key.id(), "unlocked: this manager holds the data key again");
        held.locked = None;
        held.key = Some(key.clone());
        held.wrap = Some(unlock.clone());
        Ok(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn refuse_if_locked(held: &Held) -> Result<(), SealError> {
    match &held.locked {
        Some(file) => Err(SealError::Locked {
            unlock_key_id: file.unlock_key_id.clone(),
        }),
        None => Ok(()),
    }
}

fn file_error(path: &Path, reason: impl fmt::Display) -> SealError {
    SealError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// What a key file holds.
enum KeyFile {
    /// The key in plain.
    Plain(DataKey),
    /// The key wrapped with an unlock key.
    Locked(LockedFile),
}

fn read_key(path: &Path) -> Result<Option<KeyFile>, SealError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error(path, e)),
    };
    let mode = fs::metadata(path)
        .map_err(|e| file_error(path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the data key file is readable by others: chmod 600 it");
    }
    if let Some(locked) = LockedFile::parse(&text) {
        return locked
            .map(|file| Some(KeyFile::Locked(file)))
            .map_err(|reason| file_error(path, reason));
    }
    let mut words = text.split_whitespace();
    let (Some(PLAIN_FILE_HEADER), Some(hex), None) = (words.next(), words.next(), words.next())
    else {
        return Err(file_error(path, "not a shoal data key file"));
    };
    let mut bytes = [0u8; 32];
    if hex.len() != 64 {
        return Err(file_error(path, "the key is not 64 hex digits"));
    }
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| file_error(path, "the key is not 64 hex digits"))?;
    }
    Ok(Some(KeyFile::Plain(DataKey(bytes))))
}

/// Writes the key, in plain or wrapped with `wrap`, with mode 0600 via a temporary file, fsync
/// and rename (then an fsync of the directory).
fn write_key(path: &Path, key: &DataKey, wrap: Option<&UnlockKey>) -> Result<(), SealError> {
    let text = match wrap {
        Some(unlock) => Zeroizing::new(crate::autolock::wrap(key, unlock)?),
        None => {
            let mut text = Zeroizing::new(format!("{PLAIN_FILE_HEADER} "));
            for b in key.0 {
                text.push_str(&format!("{b:02x}"));
            }
            text.push('\n');
            text
        }
    };
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| file_error(path, e))
}

/// One file a task's container gets: a secret's value (opened) or a config's, with where it
/// goes and its owner and mode. `Debug` never shows the bytes, which are zeroed when dropped.
/// Serialized (the leader to the task's node, over the authenticated mesh) with its bytes as one
/// byte string.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskFile {
    /// A secret or a config.
    pub kind: ObjectKind,
    /// The secret's or config's name.
    pub source: String,
    /// The file's absolute path in the container.
    pub target: String,
    /// The file's owner.
    pub uid: u32,
    /// The file's group.
    pub gid: u32,
    /// The file's permission bits.
    pub mode: u32,
    /// The value.
    #[serde(with = "zeroizing_bytes")]
    pub bytes: Zeroizing<Vec<u8>>,
}

/// Serde for a [`Zeroizing`] byte vector as one byte string (compact in CBOR), decoded straight
/// into the buffer that is zeroed on drop.
mod zeroizing_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub fn serialize<S: Serializer>(bytes: &Zeroizing<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::serialize(bytes.as_slice(), s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<Vec<u8>>, D::Error> {
        serde_bytes::ByteBuf::deserialize(d).map(|b| Zeroizing::new(b.into_vec()))
    }
}

impl fmt::Debug for TaskFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskFile")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .field("target", &self.target)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("mode", &format_args!("{:o}", self.mode))
            .field(
                "bytes",
                &format_args!("<{} bytes redacted>", self.bytes.len()),
            )
            .finish()
    }
}

/// Why a task's files could not be made. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum TaskFilesError {
    /// No such task, or its service is gone.
    #[error("no task {0} with a service")]
    NoSuchTask(TaskId),
    /// Its spec refers to a secret or config the state does not hold.
    #[error("task {task} refers to {kind} {name}, which does not exist")]
    Missing {
        /// The task.
        task: TaskId,
        /// Secret or config.
        kind: ObjectKind,
        /// Its name.
        name: String,
    },
    /// A secret could not be opened.
    #[error("task {task}: secret {name}: {source}")]
    Open {
        /// The task.
        task: TaskId,
        /// The secret's name.
        name: String,
        /// Why.
        source: SealError,
    },
}

/// The files of `task`: each secret and config its spec (the version it runs) refers to, secrets
/// opened with `key`. Run on the leader (a manager holding the key), which gives them to the
/// task's node (`shoal-agent`'s `dispatch::files`).
pub fn task_files(
    state: &ClusterState,
    key: Option<&DataKey>,
    task: TaskId,
) -> Result<Vec<TaskFile>, TaskFilesError> {
    task_files_from(state, key, task, 0, |_| true).map(|(_, files)| files)
}

/// How many files `task` has, and its files from the `skip`th on, in the spec's order (secrets,
/// then configs), for as long as `fits` takes them (the first is always taken): only those are
/// opened. A missing secret or config is an error wherever it is.
pub fn task_files_from(
    state: &ClusterState,
    key: Option<&DataKey>,
    task: TaskId,
    skip: usize,
    mut fits: impl FnMut(&TaskFile) -> bool,
) -> Result<(usize, Vec<TaskFile>), TaskFilesError> {
    let found = state.tasks.get(&task).and_then(|t| {
        let service = state.services.get(&t.service)?;
        Some(service.spec_for(t.spec_version))
    });
    let spec = found.ok_or(TaskFilesError::NoSuchTask(task))?;
    let missing = |kind, name: &str| TaskFilesError::Missing {
        task,
        kind,
        name: name.to_owned(),
    };
    let mut sources = Vec::with_capacity(spec.secrets.len() + spec.configs.len());
    for r in &spec.secrets {
        let secret = state.secrets.values().find(|s| s.name == r.source);
        sources.push((
            r,
            FileSource::Secret(secret.ok_or_else(|| missing(ObjectKind::Secret, &r.source))?),
        ));
    }
    for r in &spec.configs {
        let config = state.configs.values().find(|c| c.name == r.source);
        sources.push((
            r,
            FileSource::Config(config.ok_or_else(|| missing(ObjectKind::Config, &r.source))?),
        ));
    }
    let total = sources.len();
    let mut files = Vec::new();
    for (r, source) in sources.into_iter().skip(skip) {
        let file = match source {
            FileSource::Secret(secret) => {
                let open_error = |source| TaskFilesError::Open {
                    task,
                    name: r.source.clone(),
                    source,
                };
                let key = key.ok_or_else(|| open_error(SealError::NoKey))?;
                let bytes = open_secret(key, &secret.name, &secret.sealed).map_err(open_error)?;
                file(ObjectKind::Secret, r, bytes)
            }
            FileSource::Config(config) => file(
                ObjectKind::Config,
                r,
                Zeroizing::new(config.data.as_slice().to_vec()),
            ),
        };
        let fitting = fits(&file);
        if !fitting && !files.is_empty() {
            break;
        }
        files.push(file);
    }
    Ok((total, files))
}

/// Where a task's file comes from.
enum FileSource<'s> {
    Secret(&'s shoal_scheduler::secrets::Secret),
    Config(&'s shoal_scheduler::secrets::Config),
}

fn file(kind: ObjectKind, r: &FileRef, bytes: Zeroizing<Vec<u8>>) -> TaskFile {
    TaskFile {
        kind,
        source: r.source.clone(),
        target: r.target.clone(),
        uid: r.uid,
        gid: r.gid,
        mode: r.mode,
        bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DataKey {
        DataKey::from_bytes([42; 32])
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_and_name_only() {
        let plain = b"the planted value";
        let sealed = seal_secret(&key(), "db", plain).expect("seals");
        assert_eq!(sealed.nonce.len(), NONCE_BYTES);
        assert!(
            !sealed
                .ciphertext
                .as_slice()
                .windows(plain.len())
                .any(|w| w == plain)
        );
        assert_eq!(
            open_secret(&key(), "db", &sealed)
                .expect("opens")
                .as_slice(),
            plain
        );
        // Moved to another secret: the associated data differs.
        assert!(matches!(
            open_secret(&key(), "other", &sealed),
            Err(SealError::Corrupt)
        ));
        // Another key.
        let other = DataKey::from_bytes([7; 32]);
        assert!(matches!(
            open_secret(&other, "db", &sealed),
            Err(SealError::WrongKey { .. })
        ));
        // Another key that claims the same id still fails authentication.
        let mut forged = sealed.clone();
        forged.key_id = other.id();
        assert!(matches!(
            open_secret(&other, "db", &forged),
            Err(SealError::Corrupt)
        ));
        // Tampered.
        let mut tampered = sealed.clone();
        tampered.ciphertext.0[0] ^= 1;
        assert!(matches!(
            open_secret(&key(), "db", &tampered),
            Err(SealError::Corrupt)
        ));
    }

    #[test]
    fn sealing_is_a_pure_function_of_its_nonce_and_fresh_nonces_differ() {
        let a = seal(&key(), [1; NONCE_BYTES], b"ad", b"v").expect("seals");
        let b = seal(&key(), [1; NONCE_BYTES], b"ad", b"v").expect("seals");
        assert_eq!(a, b);
        let c = seal_secret(&key(), "n", b"v").expect("seals");
        let d = seal_secret(&key(), "n", b"v").expect("seals");
        assert_ne!(c.nonce, d.nonce);
        assert_ne!(c.ciphertext, d.ciphertext);
    }

    #[test]
    fn the_key_never_prints() {
        let shown = format!("{:?}", key());
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("42"), "{shown}");
        assert!(!shown.contains("2a2a"), "{shown}");
    }

    #[test]
    fn the_store_creates_once_keeps_0600_and_refuses_another_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DataKeyStore::open(dir.path()).expect("opens");
        assert!(store.get().is_none());
        let created = store.get_or_create().expect("creates");
        assert_eq!(store.get_or_create().expect("keeps"), created);
        let path = dir.path().join(DATA_KEY_FILE);
        let mode = fs::metadata(&path).expect("exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let reopened = DataKeyStore::open(dir.path()).expect("reopens");
        assert_eq!(reopened.get(), Some(created.clone()));
        assert!(reopened.install(created.clone()).is_ok());
        assert!(matches!(
            reopened.install(DataKey::from_bytes([1; 32])),
            Err(SealError::Conflict { .. })
        ));
        let other = tempfile::tempdir().expect("tempdir");
        let follower = DataKeyStore::open(other.path()).expect("opens");
        follower.install(created.clone()).expect("installs");
        assert_eq!(
            DataKeyStore::open(other.path()).expect("reopens").get(),
            Some(created)
        );
    }

    fn file_text(dir: &Path) -> String {
        fs::read_to_string(dir.join(DATA_KEY_FILE)).expect("the key file")
    }

    fn key_hex(key: &DataKey) -> String {
        key.expose_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn autolock_wraps_the_file_and_a_reopened_store_stays_locked_until_unlocked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DataKeyStore::open(dir.path()).expect("opens");
        let data_key = store.get_or_create().expect("creates");
        assert_eq!(
            store.status(),
            KeyStatus::Plain {
                data_key_id: data_key.id()
            }
        );
        assert!(file_text(dir.path()).starts_with("shoal-data-key-v1 "));
        let unlock = UnlockKey::generate().expect("random");
        assert!(store.protect(Some(&unlock)).expect("wraps"), "rewritten");
        assert!(
            !store.protect(Some(&unlock)).expect("as it is"),
            "already so"
        );
        let text = file_text(dir.path());
        assert!(text.starts_with("shoal-data-key-v2-locked "), "{text}");
        assert!(
            !text.contains(&key_hex(&data_key)),
            "the key is not in plain"
        );
        let mode = fs::metadata(dir.path().join(DATA_KEY_FILE))
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // This process still holds the key.
        assert_eq!(store.get(), Some(data_key.clone()));

        // A restart: locked.
        let restarted = DataKeyStore::open(dir.path()).expect("reopens");
        assert!(restarted.is_locked());
        assert_eq!(restarted.get(), None);
        assert!(!restarted.holds_key());
        assert_eq!(
            restarted.status(),
            KeyStatus::Locked {
                data_key_id: data_key.id(),
                unlock_key_id: unlock.id()
            }
        );
        for refused in [
            restarted.get_or_create().map(|_| ()),
            restarted.install(data_key.clone()),
            restarted.protect(None).map(|_| ()),
        ] {
            let error = refused.expect_err("locked");
            assert!(matches!(error, SealError::Locked { .. }), "{error}");
            assert!(
                error.to_string().contains("shoal cluster unlock"),
                "{error}"
            );
        }
        // A wrong key changes nothing.
        let wrong = UnlockKey::generate().expect("random");
        let error = restarted.unlock(&wrong).expect_err("wrong key");
        assert!(matches!(error, SealError::WrongUnlockKey { .. }), "{error}");
        assert!(restarted.is_locked() && restarted.get().is_none());
        assert_eq!(file_text(dir.path()), text);
        // The right one unlocks; the file stays as it is, and a repeat is fine.
        assert_eq!(restarted.unlock(&unlock).expect("unlocks"), data_key);
        assert_eq!(restarted.get(), Some(data_key.clone()));
        assert_eq!(restarted.unlock(&unlock).expect("again"), data_key);
        assert!(matches!(
            restarted.unlock(&wrong),
            Err(SealError::NotLocked)
        ));
        assert_eq!(file_text(dir.path()), text);
        assert!(matches!(
            restarted.status(),
            KeyStatus::Wrapped { unlock_key_id, .. } if unlock_key_id == unlock.id()
        ));
        // Rotation rewraps; turning autolock off writes the plain format again.
        let rotated = UnlockKey::generate().expect("random");
        assert!(restarted.protect(Some(&rotated)).expect("rewraps"));
        let after_rotation = DataKeyStore::open(dir.path()).expect("reopens");
        assert!(matches!(
            after_rotation.unlock(&unlock),
            Err(SealError::WrongUnlockKey { .. })
        ));
        after_rotation.unlock(&rotated).expect("the new key");
        assert!(after_rotation.protect(None).expect("plain again"));
        let plain = DataKeyStore::open(dir.path()).expect("reopens");
        assert!(!plain.is_locked());
        assert_eq!(plain.get(), Some(data_key));
        assert!(matches!(plain.unlock(&rotated), Err(SealError::NotLocked)));
    }

    #[test]
    fn a_key_installed_while_autolock_is_on_is_written_wrapped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DataKeyStore::open(dir.path()).expect("opens");
        let unlock = UnlockKey::generate().expect("random");
        assert!(
            !store.protect(Some(&unlock)).expect("no key yet"),
            "nothing written"
        );
        assert!(!dir.path().join(DATA_KEY_FILE).exists());
        store.install(key()).expect("installs");
        assert!(file_text(dir.path()).starts_with("shoal-data-key-v2-locked "));
        let reopened = DataKeyStore::open(dir.path()).expect("reopens");
        assert_eq!(reopened.unlock(&unlock).expect("unlocks"), key());
    }

    #[test]
    fn a_tampered_or_unknown_key_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DataKeyStore::open(dir.path()).expect("opens");
        store.install(key()).expect("installs");
        let unlock = UnlockKey::generate().expect("random");
        store.protect(Some(&unlock)).expect("wraps");
        let text = file_text(dir.path());
        let path = dir.path().join(DATA_KEY_FILE);
        // One ciphertext digit changed: the store opens locked, and the right key cannot open it.
        let last = text.trim_end().chars().last().expect("a digit");
        let swapped = if last == '0' { '1' } else { '0' };
        let tampered = format!(
            "{}{swapped}\n",
            &text.trim_end()[..text.trim_end().len() - 1]
        );
        fs::write(&path, &tampered).expect("tamper");
        let opened = DataKeyStore::open(dir.path()).expect("opens locked");
        assert!(matches!(opened.unlock(&unlock), Err(SealError::Corrupt)));
        assert!(opened.is_locked());
        // A future version, a truncated locked file, garbage: refused at open.
        for bad in [
            "shoal-data-key-v3 00\n".to_owned(),
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            "garbage".to_owned(),
        ] {
            fs::write(&path, &bad).expect("write");
            let error = DataKeyStore::open(dir.path()).expect_err(&bad);
            assert!(matches!(error, SealError::File { .. }), "{error}");
            assert!(!error.to_string().contains(&key_hex(&key())));
        }
    }

    #[test]
    fn a_task_gets_its_secrets_opened_and_its_configs_as_files() {
        use shoal_scheduler::{
            Command, DesiredState, ServiceId, Task, TaskState, Timestamp, status_at, synthetic,
        };
        let mut state = ClusterState::default();
        let plain = b"planted-task-value";
        let sealed = seal_secret(&key(), "db", plain).expect("seals");
        state
            .apply(&Command::CreateSecret {
                name: "db".into(),
                labels: Default::default(),
                sealed,
                at: Timestamp(1),
            })
            .expect("created");
        state
            .apply(&Command::CreateConfig {
                name: "site".into(),
                labels: Default::default(),
                data: Blob(b"server {}".to_vec()),
                at: Timestamp(1),
            })
            .expect("created");
        let mut spec = synthetic::spec("web", 1);
        let mut secret_ref = FileRef::secret("db");
        secret_ref.uid = 1000;
        spec.secrets = vec![secret_ref];
        spec.configs = vec![FileRef::config("site")];
        state
            .apply(&Command::CreateService {
                spec,
                at: Timestamp(2),
            })
            .expect("created");
        let task = TaskId(7);
        state.tasks.insert(
            task,
            Task {
                id: task,
                service: ServiceId(0),
                slot: Some(1),
                node: None,
                spec_version: 1,
                desired: DesiredState::Running,
                status: status_at(TaskState::New, Timestamp(2)),
                created_at: Timestamp(2),
                not_before: Timestamp(2),
            },
        );
        let files = task_files(&state, Some(&key()), task).expect("files");
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].target, "/run/secrets/db");
        assert_eq!((files[0].uid, files[0].mode), (1000, 0o400));
        assert_eq!(files[0].bytes.as_slice(), plain);
        assert_eq!(files[1].target, "/site");
        assert_eq!(files[1].mode, 0o444);
        assert_eq!(files[1].bytes.as_slice(), b"server {}");
        let shown = format!("{files:?}");
        assert!(!shown.contains("planted"), "{shown}");
        assert!(matches!(
            task_files(&state, None, task),
            Err(TaskFilesError::Open { .. })
        ));
        let other = DataKey::from_bytes([3; 32]);
        let refused = task_files(&state, Some(&other), task).expect_err("wrong key");
        assert!(!refused.to_string().contains("planted"));
        assert!(matches!(
            task_files(&state, Some(&key()), TaskId(99)),
            Err(TaskFilesError::NoSuchTask(_))
        ));
    }
}
