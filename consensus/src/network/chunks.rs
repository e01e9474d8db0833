//! Reassembly of snapshot streams on the receiving side: one unfinished stream per sender,
//! pieces accepted only in order, total size bounded, and written to a file as they come (the
//! snapshot is never held whole in memory); the finished file is what gets installed.

use std::collections::HashMap;
use std::io::Write as _;

use super::messages::SnapshotChunk;
use crate::limits::MAX_SNAPSHOT_BYTES;
use crate::storage::snapshot::{SnapshotDir, SnapshotFile};
use crate::types::{RaftId, SnapshotMeta, Vote};

/// A finished snapshot, ready to install.
pub(crate) struct Assembled {
    pub(crate) vote: Vote,
    pub(crate) meta: SnapshotMeta,
    pub(crate) file: SnapshotFile,
}

struct Partial {
    stream: u64,
    total: u64,
    written: u64,
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl Drop for Partial {
    fn drop(&mut self) {
        // An abandoned transfer leaves nothing behind; a finished one was renamed already.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Unfinished snapshot streams by sender.
pub(crate) struct Assembler {
    dir: SnapshotDir,
    streams: HashMap<RaftId, Partial>,
}

impl Assembler {
    /// Gathers snapshots into files of `dir`.
    pub(crate) fn new(dir: SnapshotDir) -> Assembler {
        Assembler {
            dir,
            streams: HashMap::new(),
        }
    }

    /// Adds one piece (blocking: it is written to the file). `Ok(None)`: more to come;
    /// `Ok(Some)`: complete, and the file flushed.
    pub(crate) fn accept(
        &mut self,
        from: RaftId,
        chunk: SnapshotChunk,
    ) -> Result<Option<Assembled>, String> {
        if chunk.total > MAX_SNAPSHOT_BYTES as u64 {
            self.streams.remove(&from);
            return Err(format!(
                "snapshot of {} bytes exceeds {MAX_SNAPSHOT_BYTES}",
                chunk.total
            ));
        }
        if chunk.offset == 0 {
            // A new transfer replaces whatever this sender had in flight.
            self.streams.remove(&from);
            let path = self.dir.incoming(chunk.stream);
            let file = std::fs::File::create(&path).map_err(|e| format!("snapshot file: {e}"))?;
            let partial = Partial {
                stream: chunk.stream,
                total: chunk.total,
                written: 0,
                file,
                path,
            };
            self.streams.insert(from, partial);
        }
        let Some(partial) = self.streams.get_mut(&from) else {
            return Err("snapshot piece without a start".to_owned());
        };
        if partial.stream != chunk.stream
            || partial.written != chunk.offset
            || partial.total != chunk.total
        {
            self.streams.remove(&from);
            return Err("snapshot piece out of order".to_owned());
        }
        if partial.written + chunk.data.len() as u64 > partial.total {
            self.streams.remove(&from);
            return Err("snapshot longer than announced".to_owned());
        }
        if let Err(e) = partial.file.write_all(&chunk.data) {
            self.streams.remove(&from);
            return Err(format!("snapshot file: {e}"));
        }
        partial.written += chunk.data.len() as u64;
        if !chunk.done {
            return Ok(None);
        }
        let Some(mut done) = self.streams.remove(&from) else {
            return Err("snapshot stream vanished".to_owned());
        };
        if done.written != done.total {
            return Err("snapshot shorter than announced".to_owned());
        }
        done.file
            .flush()
            .map_err(|e| format!("snapshot file: {e}"))?;
        // Installing moves the file away; until then it is the transfer's.
        let path = std::mem::take(&mut done.path);
        let file = SnapshotFile {
            path,
            len: done.total,
        };
        Ok(Some(Assembled {
            vote: chunk.vote,
            meta: chunk.meta,
            file,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(stream: u64, offset: u64, total: u64, data: &[u8], done: bool) -> SnapshotChunk {
        SnapshotChunk {
            stream,
            vote: Vote::new(1, 1),
            meta: SnapshotMeta::default(),
            offset,
            total,
            data: data.to_vec(),
            done,
        }
    }

    #[test]
    fn reassembles_in_order_and_refuses_gaps() -> std::io::Result<()> {
        let data = tempfile::tempdir()?;
        let dir = SnapshotDir::open(data.path())?;
        let mut a = Assembler::new(dir.clone());
        assert!(matches!(
            a.accept(1, chunk(7, 0, 6, b"abc", false)),
            Ok(None)
        ));
        let done = a.accept(1, chunk(7, 3, 6, b"def", true));
        let Ok(Some(done)) = done else {
            panic!("the snapshot is whole");
        };
        assert_eq!(std::fs::read(&done.file.path)?, b"abcdef");
        assert!(a.accept(1, chunk(8, 0, 6, b"abc", false)).is_ok());
        assert!(a.accept(1, chunk(8, 4, 6, b"ef", true)).is_err(), "gap");
        assert!(
            !dir.incoming(8).exists(),
            "an abandoned transfer leaves no file"
        );
        assert!(
            a.accept(1, chunk(8, 3, 6, b"def", true)).is_err(),
            "stream was dropped"
        );
        assert!(
            a.accept(2, chunk(9, 0, 2, b"abc", true)).is_err(),
            "longer than announced"
        );
        Ok(())
    }
}
