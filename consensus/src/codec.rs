//! CBOR encoding (cbor4ii) of everything this crate stores or sends, with size bounds.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Serialising failed.
    #[error("cbor encode: {0}")]
    Encode(String),
    /// The bytes are not a valid value of the expected type.
    #[error("cbor decode: {0}")]
    Decode(String),
    /// The encoded value exceeds the bound for its kind.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The bound.
        limit: usize,
    },
}

/// Encodes `value` as CBOR.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    cbor4ii::serde::to_vec(Vec::new(), value).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Encodes `value` as CBOR and refuses results larger than `limit` bytes.
pub fn encode_bounded<T: Serialize>(value: &T, limit: usize) -> Result<Vec<u8>, CodecError> {
    let bytes = encode(value)?;
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok(bytes)
}

/// Decodes a CBOR value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    cbor4ii::serde::from_slice(bytes).map_err(|e| CodecError::Decode(e.to_string()))
}

/// Decodes a CBOR value, refusing inputs larger than `limit` bytes before parsing.
pub fn decode_bounded<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    decode(bytes)
}

/// Maps a codec error to the `io::Error` that openraft's storage traits speak.
pub fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
