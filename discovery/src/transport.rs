//! The transport stack: TCP (+ pnet when a token is set) and QUIC (open mode only), each with
//! noise and yamux, under DNS resolution and libp2p's bandwidth counters.

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, OrTransport};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::{PeerId, Transport, dns, noise, quic, tcp, yamux};
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};

use crate::error::MeshError;

/// Domain separation of the token -> PSK derivation.
const PSK_DOMAIN: &[u8] = b"shoal/mesh/pnet-psk/v1\0";

/// The authenticated, multiplexed transport the Swarm runs on.
pub(crate) type MeshTransport = Boxed<(PeerId, StreamMuxerBox)>;

/// Derives the 32-byte pre-shared key of a closed cluster from its token.
pub(crate) fn psk_from_token(token: &str) -> PreSharedKey {
    let mut hasher = Sha256::new();
    hasher.update(PSK_DOMAIN);
    hasher.update(token.as_bytes());
    PreSharedKey::new(hasher.finalize().into())
}

/// Builds the transport. With a `psk`, TCP is wrapped in pnet and QUIC is never used.
pub(crate) fn build(
    keypair: &Keypair,
    psk: Option<PreSharedKey>,
    quic: bool,
    registry: &mut Registry,
) -> Result<MeshTransport, MeshError> {
    let noise = noise::Config::new(keypair).map_err(|e| MeshError::Transport(e.to_string()))?;
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let tcp: MeshTransport = match psk {
        Some(psk) => tcp
            .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed(),
        None => tcp
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed(),
    };
    let base = if quic && psk.is_none() {
        let quic = quic::tokio::Transport::new(quic::Config::new(keypair))
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
        OrTransport::new(quic, tcp)
            .map(|either, _| either.into_inner())
            .boxed()
    } else {
        tcp
    };
    let resolved: MeshTransport = match dns::tokio::Transport::system(base) {
        Ok(dns) => dns.boxed(),
        Err(e) => {
            return Err(MeshError::Transport(format!(
                "cannot read the system DNS configuration: {e}"
            )));
        }
    };
    Ok(libp2p::metrics::BandwidthTransport::new(resolved, registry)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psk_depends_on_the_token_only() {
        let a = psk_from_token("alpha").fingerprint().to_string();
        assert_eq!(a, psk_from_token("alpha").fingerprint().to_string());
        assert_ne!(a, psk_from_token("beta").fingerprint().to_string());
    }
}
