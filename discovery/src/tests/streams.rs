//! Streams keep their connections: above the high-water mark the upkeep closes connections that
//! carry no request, but never one that carries an open stream (a proxied connection, a raft
//! append lane); once the streams are dropped the connections are pruned as before.

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};

use super::{eventually, joined_agents};
use crate::{ShoalStream, Stream};

const AGENTS: usize = 12;

/// Writes `message` and reads it back from an echoing peer.
async fn round_trip(stream: &mut Stream, message: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(message).await?;
    stream.flush().await?;
    let mut echoed = vec![0; message.len()];
    stream.read_exact(&mut echoed).await?;
    Ok(echoed)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_stream_keeps_its_connection_above_the_high_water_mark() -> anyhow::Result<()> {
    let tweak = |c: &mut crate::MeshConfig| {
        c.target_peers = 3;
        c.peers_high_water = 4;
        // One watcher each way: the ring keeps at most two of the seed's connections, gossip at
        // most eight, so with eleven connected some are always the upkeep's to close.
        c.watchers = 1;
        // A connection counts as in use for three request timeouts after its last request.
        c.request_timeout = Duration::from_secs(1);
    };
    let agents = joined_agents(AGENTS, tweak, Duration::from_secs(15)).await?;
    // Every other agent echoes what arrives on its proxy streams.
    for a in &agents[1..] {
        let mut incoming = a.mesh.accept_streams(ShoalStream::Proxy)?;
        tokio::spawn(async move {
            while let Some((_, stream)) = incoming.next().await {
                tokio::spawn(async move {
                    let (mut reader, mut writer) = stream.split();
                    let _ = futures::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
    }
    let seed_mesh = agents[0].mesh.clone();
    let mut streams = Vec::new();
    for a in &agents[1..] {
        let peer = a.mesh.local_peer_id();
        let mut stream = seed_mesh.open_stream(peer, ShoalStream::Proxy).await?;
        anyhow::ensure!(round_trip(&mut stream, b"hello").await? == b"hello");
        streams.push((peer, stream));
    }

    // Past the new-connection grace (5 s) and three request timeouts, with the seed far above
    // its high-water mark: the upkeep would have closed most of these connections.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let connected = seed_mesh.connected_peers().await?;
    for (peer, stream) in &mut streams {
        anyhow::ensure!(
            connected.contains(peer),
            "the seed's connection to {peer} was closed under its stream"
        );
        let echoed =
            tokio::time::timeout(Duration::from_secs(5), round_trip(stream, b"still here"))
                .await
                .map_err(|_| anyhow::anyhow!("the stream to {peer} went silent"))??;
        anyhow::ensure!(
            echoed == b"still here",
            "the stream to {peer} echoed {echoed:?}"
        );
    }

    // Without streams the connections are unused again, and pruned: the ones the ring and the
    // gossip mesh keep stay (how many that is depends on the gossip mesh of the moment), the
    // others close.
    drop(streams);
    let pruned = eventually(Duration::from_secs(15), || {
        let mesh = seed_mesh.clone();
        async move {
            mesh.connected_peers()
                .await
                .is_ok_and(|p| p.len() < AGENTS - 1)
        }
    })
    .await;
    let left = seed_mesh.connected_peers().await?.len();
    anyhow::ensure!(
        pruned,
        "the seed still has {left} connections once the streams are gone"
    );
    for a in &agents {
        let _ = a.mesh.shutdown().await;
    }
    Ok(())
}
