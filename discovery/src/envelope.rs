//! The signed envelope of every gossip message. gossipsub's own signing verifies every copy of a
//! message it receives (a mesh of degree D costs D signature checks per message and agent,
//! duplicates included). shoal signs the payload itself and the event loop checks the signature
//! once per distinct message, after gossipsub dropped the duplicates by content id, and before the
//! message is forwarded (gossipsub's `validate_messages`).

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Domain separation of the gossip signatures.
const SIGNING_DOMAIN: &[u8] = b"shoal/gossip/v1\0";

/// A gossip payload with its author's public key and signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Envelope {
    /// The author's public key (libp2p protobuf encoding).
    key: Vec<u8>,
    /// The CBOR-encoded message.
    body: Vec<u8>,
    /// Signature over [`SIGNING_DOMAIN`] followed by `body`.
    sig: Vec<u8>,
}

/// Why an envelope was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnvelopeError {
    /// Not an envelope, or an unknown key type.
    Malformed,
    /// The signature does not match the key.
    BadSignature,
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(SIGNING_DOMAIN.len() + body.len());
    bytes.extend_from_slice(SIGNING_DOMAIN);
    bytes.extend_from_slice(body);
    bytes
}

/// Signs `body` with `keypair` and encodes the envelope; `None` if signing failed.
pub(crate) fn seal(keypair: &Keypair, body: Vec<u8>) -> Option<Vec<u8>> {
    let sig = keypair.sign(&signed_bytes(&body)).ok()?;
    let envelope = Envelope {
        key: keypair.public().encode_protobuf(),
        body,
        sig,
    };
    cbor4ii::serde::to_vec(Vec::new(), &envelope).ok()
}

/// Decodes and verifies an envelope: its author and body.
pub(crate) fn open(data: &[u8]) -> Result<(PeerId, Vec<u8>), EnvelopeError> {
    let envelope: Envelope =
        cbor4ii::serde::from_slice(data).map_err(|_| EnvelopeError::Malformed)?;
    let key =
        PublicKey::try_decode_protobuf(&envelope.key).map_err(|_| EnvelopeError::Malformed)?;
    if !key.verify(&signed_bytes(&envelope.body), &envelope.sig) {
        return Err(EnvelopeError::BadSignature);
    }
    Ok((key.to_peer_id(), envelope.body))
}

/// gossipsub's message id: a hash of the content, so that a forged copy can never shadow the
/// genuine message in the duplicate cache.
pub(crate) fn message_id(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data)[..20].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let keypair = Keypair::generate_ed25519();
        let sealed = seal(&keypair, b"hello".to_vec()).unwrap_or_default();
        assert_eq!(
            open(&sealed),
            Ok((keypair.public().to_peer_id(), b"hello".to_vec()))
        );
        let mut envelope: Envelope = cbor4ii::serde::from_slice(&sealed).unwrap_or(Envelope {
            key: Vec::new(),
            body: Vec::new(),
            sig: Vec::new(),
        });
        envelope.body = b"hellO".to_vec();
        let forged = cbor4ii::serde::to_vec(Vec::new(), &envelope).unwrap_or_default();
        assert_eq!(open(&forged), Err(EnvelopeError::BadSignature));
        assert_eq!(open(b"garbage"), Err(EnvelopeError::Malformed));
    }
}
