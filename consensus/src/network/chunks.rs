//! Reassembly of snapshot streams on the receiving side: one unfinished stream per sender,
//! pieces accepted only in order, total size bounded.

use std::collections::HashMap;

use super::messages::SnapshotChunk;
use crate::limits::MAX_SNAPSHOT_BYTES;
use crate::types::{RaftId, SnapshotMeta, Vote};

/// A finished snapshot, ready to install.
pub(crate) struct Assembled {
    pub(crate) vote: Vote,
    pub(crate) meta: SnapshotMeta,
    pub(crate) data: Vec<u8>,
}

struct Partial {
    stream: u64,
    total: u64,
    data: Vec<u8>,
}

/// Unfinished snapshot streams by sender.
#[derive(Default)]
pub(crate) struct Assembler {
    streams: HashMap<RaftId, Partial>,
}

impl Assembler {
    /// Adds one piece. `Ok(None)`: more to come; `Ok(Some)`: complete.
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
            let capacity = usize::try_from(chunk.total)
                .unwrap_or(0)
                .min(64 * 1024 * 1024);
            self.streams.insert(
                from,
                Partial {
                    stream: chunk.stream,
                    total: chunk.total,
                    data: Vec::with_capacity(capacity),
                },
            );
        }
        let Some(partial) = self.streams.get_mut(&from) else {
            return Err("snapshot piece without a start".to_owned());
        };
        if partial.stream != chunk.stream
            || partial.data.len() as u64 != chunk.offset
            || partial.total != chunk.total
        {
            self.streams.remove(&from);
            return Err("snapshot piece out of order".to_owned());
        }
        if partial.data.len() as u64 + chunk.data.len() as u64 > partial.total {
            self.streams.remove(&from);
            return Err("snapshot longer than announced".to_owned());
        }
        partial.data.extend_from_slice(&chunk.data);
        if !chunk.done {
            return Ok(None);
        }
        let Some(done) = self.streams.remove(&from) else {
            return Err("snapshot stream vanished".to_owned());
        };
        if done.data.len() as u64 != done.total {
            return Err("snapshot shorter than announced".to_owned());
        }
        Ok(Some(Assembled {
            vote: chunk.vote,
            meta: chunk.meta,
            data: done.data,
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
    fn reassembles_in_order_and_refuses_gaps() {
        let mut a = Assembler::default();
        assert!(matches!(
            a.accept(1, chunk(7, 0, 6, b"abc", false)),
            Ok(None)
        ));
        let done = a.accept(1, chunk(7, 3, 6, b"def", true));
        assert!(matches!(done, Ok(Some(ref s)) if s.data == b"abcdef"));
        assert!(a.accept(1, chunk(8, 0, 6, b"abc", false)).is_ok());
        assert!(a.accept(1, chunk(8, 4, 6, b"ef", true)).is_err(), "gap");
        assert!(
            a.accept(1, chunk(8, 3, 6, b"def", true)).is_err(),
            "stream was dropped"
        );
        assert!(
            a.accept(2, chunk(9, 0, 2, b"abc", true)).is_err(),
            "longer than announced"
        );
    }
}
