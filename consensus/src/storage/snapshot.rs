//! The snapshot format: the whole `ClusterState` in CBOR, next to openraft's snapshot metadata.

use serde::{Deserialize, Serialize};
use shoal_scheduler::ClusterState;

use crate::codec::{CodecError, decode, encode};
use crate::types::SnapshotMeta;

/// What the snapshot table stores: the metadata and the encoded state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// Last log id and membership the snapshot covers.
    pub meta: SnapshotMeta,
    /// CBOR of the `ClusterState` (a byte string, not an array of integers).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Encodes a state for a snapshot.
pub fn encode_state(state: &ClusterState) -> Result<Vec<u8>, CodecError> {
    encode(state)
}

/// Decodes a snapshot's state.
pub fn decode_state(data: &[u8]) -> Result<ClusterState, CodecError> {
    decode(data)
}

/// Encodes a stored snapshot.
pub fn encode_stored(s: &StoredSnapshot) -> Result<Vec<u8>, CodecError> {
    encode(s)
}

/// Decodes a stored snapshot.
pub fn decode_stored(bytes: &[u8]) -> Result<StoredSnapshot, CodecError> {
    decode(bytes)
}
