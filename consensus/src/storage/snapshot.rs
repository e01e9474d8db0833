//! Snapshots on disk. The encoded `ClusterState` of a snapshot is a file of its own in the data
//! dir's `snapshots/` (CBOR), written and read as a stream: building one never holds a second,
//! encoded copy of the state in memory, and neither does sending one (it is read in pieces) or
//! receiving one (the pieces go to a file, which is then decoded as a stream). The redb record
//! holds only the metadata and the file's name, so a large snapshot never delays the raft log's
//! group commits either.
//!
//! A file is written under a temporary name, fsync'd, then renamed, so a crash leaves either
//! the whole file or none; leftovers of unfinished transfers are removed when storage opens.

use std::fs::File;
use std::io::{self, BufReader, BufWriter};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shoal_scheduler::ClusterState;

use crate::codec::{CodecError, decode, encode};
use crate::types::SnapshotMeta;

/// The directory of snapshot files inside the data dir.
pub const SNAPSHOT_DIR: &str = "snapshots";
const PART: &str = "part";

/// What the snapshot table stores: the metadata and where the encoded state is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// Last log id and membership the snapshot covers.
    pub meta: SnapshotMeta,
    /// The file (in [`SNAPSHOT_DIR`]) holding the encoded state.
    #[serde(default)]
    pub file: Option<String>,
    /// The encoded state itself, as snapshots were stored before they had files (read only).
    #[serde(default, with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// The data of a snapshot as openraft moves it around: its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub len: u64,
}

impl SnapshotFile {
    /// The file at `path`, with its size.
    pub fn at(path: PathBuf) -> io::Result<SnapshotFile> {
        let len = std::fs::metadata(&path)?.len();
        Ok(SnapshotFile { path, len })
    }

    /// Decodes the state, reading the file as a stream (blocking).
    pub fn read_state(&self) -> io::Result<ClusterState> {
        let reader = BufReader::new(File::open(&self.path)?);
        cbor4ii::serde::from_reader(reader).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot {}: {e}", self.path.display()),
            )
        })
    }
}

/// The snapshot files of one agent.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    /// The directory in `data_dir`, created if missing, without leftovers of unfinished files.
    pub fn open(data_dir: &Path) -> io::Result<SnapshotDir> {
        let dir = data_dir.join(SNAPSHOT_DIR);
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == PART) {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(SnapshotDir { dir })
    }

    /// The path of the file named `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A temporary file to gather an incoming snapshot in.
    pub fn incoming(&self, stream: u64) -> PathBuf {
        self.dir.join(format!("incoming-{stream}.{PART}"))
    }

    /// Writes `state` as the snapshot of `meta` (blocking): streamed to a temporary file,
    /// fsync'd, renamed. Returns the file's name and the file.
    pub fn write(
        &self,
        state: &ClusterState,
        meta: &SnapshotMeta,
    ) -> io::Result<(String, SnapshotFile)> {
        let name = file_name(meta);
        let tmp = self.dir.join(format!("{name}.{PART}"));
        let mut writer = BufWriter::new(File::create(&tmp)?);
        cbor4ii::serde::to_writer(&mut writer, state).map_err(io::Error::other)?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        self.adopt(&tmp, &name)
    }

    /// Whether `path` is an incoming snapshot of this directory.
    pub fn is_incoming(&self, path: &Path) -> bool {
        path.parent() == Some(self.dir.as_path()) && path.extension().is_some_and(|e| e == PART)
    }

    /// Moves a complete incoming snapshot into place as the snapshot of `meta` (blocking).
    pub fn adopt_incoming(
        &self,
        from: &Path,
        meta: &SnapshotMeta,
    ) -> io::Result<(String, SnapshotFile)> {
        self.adopt(from, &file_name(meta))
    }

    /// Moves a complete file into place as `name` (blocking).
    fn adopt(&self, from: &Path, name: &str) -> io::Result<(String, SnapshotFile)> {
        File::open(from)?.sync_all()?;
        let path = self.dir.join(name);
        std::fs::rename(from, &path)?;
        File::open(&self.dir)?.sync_all()?;
        Ok((name.to_owned(), SnapshotFile::at(path)?))
    }

    /// Removes every snapshot file but `keep` (a sender still reading a removed one keeps its
    /// open file).
    pub fn prune(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let is_snapshot = path.extension().is_some_and(|e| e == "cbor");
            if is_snapshot && name.to_str() != Some(keep) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// A file name unique to one snapshot: the last log id it covers and a random suffix (two
/// snapshots of the same log id, one built and one received, never share a file).
fn file_name(meta: &SnapshotMeta) -> String {
    let index = meta.last_log_id.as_ref().map_or(0, |l| l.index);
    let mut salt = [0u8; 4];
    let _ = getrandom::getrandom(&mut salt);
    format!("snap-{index:020}-{:08x}.cbor", u32::from_le_bytes(salt))
}

/// Encodes a stored snapshot record.
pub fn encode_stored(s: &StoredSnapshot) -> Result<Vec<u8>, CodecError> {
    encode(s)
}

/// Decodes a stored snapshot record.
pub fn decode_stored(bytes: &[u8]) -> Result<StoredSnapshot, CodecError> {
    decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_round_trips_through_its_file_and_leftovers_go() -> io::Result<()> {
        let data = tempfile::tempdir()?;
        let dir = SnapshotDir::open(data.path())?;
        let mut state = shoal_scheduler::synthetic::cluster(
            &shoal_scheduler::synthetic::ClusterShape::new(50, 3),
        );
        state.next_task_id = 42;
        let (name, file) = dir.write(&state, &SnapshotMeta::default())?;
        assert_eq!(file.read_state()?, state);
        assert_eq!(file.len, std::fs::metadata(dir.path(&name))?.len());
        std::fs::write(dir.incoming(7), b"half a snapshot")?;
        let (other, _) = dir.write(&ClusterState::default(), &SnapshotMeta::default())?;
        dir.prune(&other);
        assert!(!dir.path(&name).exists(), "an old snapshot stays");
        let again = SnapshotDir::open(data.path())?;
        assert!(!again.incoming(7).exists(), "an unfinished transfer stays");
        assert!(again.path(&other).exists());
        std::fs::write(dir.path("garbage.cbor"), b"\xff\xff")?;
        let garbage = SnapshotFile::at(dir.path("garbage.cbor"))?;
        assert_eq!(
            garbage.read_state().map_err(|e| e.kind()),
            Err(io::ErrorKind::InvalidData)
        );
        Ok(())
    }
}
