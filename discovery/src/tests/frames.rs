//! Malformed and oversized frames: a raw libp2p peer writes garbage on shoal's protocols; the
//! receiver rejects it, disconnects the sender and keeps serving everyone else.

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{StreamProtocol, Swarm};
use prometheus_client::registry::Registry;

use super::{addr, agent, exposition};
use crate::protocol::{PROBE_PROTOCOL, RAFT_PROTOCOL};
use crate::{Multiaddr, PeerId, ShoalProtocol};

/// Writes requests verbatim (no framing) and reads whatever comes back, bounded.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
    ) -> io::Result<Vec<u8>> {
        Err(io::Error::other("the raw peer serves nothing"))
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        io.take(4096).read_to_end(&mut out).await?;
        Ok(out)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> io::Result<()> {
        Ok(())
    }
}

fn raw_swarm(
    protocol: &'static str,
) -> anyhow::Result<Swarm<request_response::Behaviour<RawCodec>>> {
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let transport = crate::transport::build(&keypair, None, false, &mut Registry::default())?;
    let behaviour = request_response::Behaviour::with_codec(
        RawCodec,
        [(StreamProtocol::new(protocol), ProtocolSupport::Outbound)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
    );
    Ok(Swarm::new(
        transport,
        behaviour,
        keypair.public().to_peer_id(),
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(Duration::from_secs(30)),
    ))
}

/// Sends `garbage` on `protocol` to `victim` and waits until the victim closes the connection.
async fn attack(
    protocol: &'static str,
    victim: PeerId,
    at: &Multiaddr,
    garbage: Vec<u8>,
) -> anyhow::Result<bool> {
    let mut swarm = raw_swarm(protocol)?;
    swarm
        .behaviour_mut()
        .send_request_with_addresses(&victim, garbage, vec![at.clone()]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
            Err(_) => return Ok(false),
            Ok(SwarmEvent::ConnectionClosed { peer_id, .. }) if peer_id == victim => {
                return Ok(true);
            }
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_is_rejected_and_the_receiver_keeps_serving() -> anyhow::Result<()> {
    let victim = agent(&[], |_| {}).await?;
    let victim_id = victim.mesh.local_peer_id();
    let victim_addr = addr(&victim).await?;
    let mut inbound = victim.mesh.serve(ShoalProtocol::Raft).await?;
    tokio::spawn(async move {
        while let Some(req) = inbound.recv().await {
            let payload = req.payload.clone();
            req.respond(payload);
        }
    });

    // A header announcing 32 MiB on raft (bound: 16 MiB).
    let oversized = (32u32 * 1024 * 1024).to_be_bytes().to_vec();
    assert!(
        attack(RAFT_PROTOCOL, victim_id, &victim_addr, oversized).await?,
        "oversized frame: not disconnected"
    );
    // A header announcing 100 bytes followed by 10 and the end of the stream.
    let truncated = [&100u32.to_be_bytes()[..], &[1u8; 10]].concat();
    assert!(
        attack(RAFT_PROTOCOL, victim_id, &victim_addr, truncated).await?,
        "truncated frame: not disconnected"
    );
    // A well-framed probe that is not CBOR.
    let not_cbor = [&5u32.to_be_bytes()[..], &[0xff; 5]].concat();
    assert!(
        attack(PROBE_PROTOCOL, victim_id, &victim_addr, not_cbor).await?,
        "bad probe: not disconnected"
    );

    let text = exposition(&victim.registry);
    assert!(
        text.contains("shoal_mesh_rejected_total{reason=\"request_malformed\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("shoal_mesh_rejected_total{reason=\"probe_malformed\"} 1"),
        "{text}"
    );

    // Still serving an honest peer.
    let honest = agent(std::slice::from_ref(&victim_addr), |_| {}).await?;
    let answer = honest
        .mesh
        .request(victim_id, ShoalProtocol::Raft, b"still there?".to_vec())
        .await?;
    assert_eq!(answer, b"still there?");
    honest.mesh.shutdown().await?;
    victim.mesh.shutdown().await?;
    Ok(())
}
