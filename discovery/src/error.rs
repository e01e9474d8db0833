//! The crate's error types: [`MeshError`] for the mesh itself and [`RequestError`] for one request.

use std::path::PathBuf;

use libp2p::Multiaddr;

use crate::protocol::{ShoalProtocol, ShoalStream};

/// Errors of the mesh (start-up, commands to the event loop).
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The identity key file could not be read or written.
    #[error("identity key {path}: {source}")]
    IdentityIo {
        /// The key file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The identity key file exists but does not hold an ed25519 key.
    #[error("identity key {path} is not a valid ed25519 key: {reason}")]
    IdentityDecode {
        /// The key file.
        path: PathBuf,
        /// Why decoding failed.
        reason: String,
    },
    /// The transport stack could not be built.
    #[error("cannot build the transport: {0}")]
    Transport(String),
    /// A behaviour could not be configured.
    #[error("cannot configure {behaviour}: {reason}")]
    Behaviour {
        /// Which behaviour.
        behaviour: &'static str,
        /// Why.
        reason: String,
    },
    /// Listening on an address failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// Dialing an address failed at once.
    #[error("cannot dial {addr}: {reason}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// `serve` was called twice for the same protocol.
    #[error("protocol {0} already has a consumer")]
    AlreadyServed(ShoalProtocol),
    /// `accept_streams` was called twice for the same stream protocol.
    #[error("stream protocol {0} already has a consumer")]
    AlreadyAccepted(ShoalStream),
    /// The configuration is inconsistent.
    #[error("invalid mesh configuration: {0}")]
    Config(String),
    /// The event loop has stopped (shutdown or crash).
    #[error("the mesh is closed")]
    Closed,
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenStreamError {
    /// The peer does not accept this stream protocol (not serving it, or an older version).
    #[error("peer does not accept {0}")]
    Unsupported(ShoalStream),
    /// No connection to the peer could be made, or it closed while the stream was negotiated.
    #[error("cannot open {protocol}: {reason}")]
    Unreachable {
        /// The stream protocol.
        protocol: ShoalStream,
        /// What failed.
        reason: String,
    },
}

/// Why one request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No connection to the peer could be made (dial failed, no known address).
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// No response arrived within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The request is larger than the protocol allows (checked before sending).
    #[error("request of {size} bytes exceeds the {limit} byte limit")]
    TooLarge {
        /// Size of the payload.
        size: usize,
        /// The protocol's bound.
        limit: usize,
    },
    /// The remote failed: it does not speak the protocol, dropped the request, closed the
    /// connection, or sent a malformed or oversized response.
    #[error("remote failed: {0}")]
    Remote(String),
    /// The mesh is closed.
    #[error("the mesh is closed")]
    Closed,
}
