//! Request/response round trips through `serve`, and the error classes of `request`.

use std::time::Duration;

use super::{addr, agent, eventually, in_state};
use crate::{MemberState, MeshError, PeerId, RequestError, ShoalProtocol};

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_serve_and_errors() -> anyhow::Result<()> {
    let server = agent(&[], |_| {}).await?;
    let client = agent(&[addr(&server).await?], |_| {}).await?;
    let server_id = server.mesh.local_peer_id();

    let mut inbound = server.mesh.serve(ShoalProtocol::Control).await?;
    assert!(matches!(
        server.mesh.serve(ShoalProtocol::Control).await,
        Err(MeshError::AlreadyServed(ShoalProtocol::Control))
    ));
    let client_id = client.mesh.local_peer_id();
    let echo = tokio::spawn(async move {
        let mut served = 0;
        while let Some(req) = inbound.recv().await {
            assert_eq!(req.peer, client_id, "the remote is authenticated");
            assert_eq!(req.protocol, ShoalProtocol::Control);
            let mut answer = b"echo:".to_vec();
            answer.extend_from_slice(&req.payload);
            req.respond(answer);
            served += 1;
        }
        served
    });

    let answer = client
        .mesh
        .request(server_id, ShoalProtocol::Control, b"hi".to_vec())
        .await?;
    assert_eq!(answer, b"echo:hi");

    // A large (but allowed) payload.
    let big = vec![7u8; 900 * 1024];
    let answer = client
        .mesh
        .request(server_id, ShoalProtocol::Control, big.clone())
        .await?;
    assert_eq!(answer.len(), big.len() + 5);

    // Too large: refused locally, nothing sent.
    let limit = ShoalProtocol::Control.max_request_bytes();
    assert_eq!(
        client
            .mesh
            .request(server_id, ShoalProtocol::Control, vec![0; limit + 1])
            .await,
        Err(RequestError::TooLarge {
            size: limit + 1,
            limit
        })
    );

    // Nobody serves Raft on the server: the remote fails the request.
    let unserved = client
        .mesh
        .request(server_id, ShoalProtocol::Raft, b"x".to_vec())
        .await;
    assert!(
        matches!(unserved, Err(RequestError::Remote(_))),
        "{unserved:?}"
    );

    // A peer nobody knows an address for: unreachable.
    let stranger = client
        .mesh
        .request(PeerId::random(), ShoalProtocol::Control, b"x".to_vec())
        .await;
    assert!(
        matches!(stranger, Err(RequestError::Unreachable(_))),
        "{stranger:?}"
    );

    // Concurrent requests from a clone of the handle.
    let handle = client.mesh.clone();
    let many = futures::future::join_all((0..20u8).map(|i| {
        let handle = handle.clone();
        async move {
            handle
                .request(server_id, ShoalProtocol::Control, vec![i])
                .await
        }
    }))
    .await;
    for (i, answer) in many.into_iter().enumerate() {
        assert_eq!(answer?, [b"echo:".as_slice(), &[i as u8]].concat());
    }

    let mesh = client.mesh.clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            let mesh = mesh.clone();
            async move { in_state(&mesh, MemberState::Alive).await == vec![server_id] }
        })
        .await
    );

    server.mesh.shutdown().await?;
    let served = tokio::time::timeout(Duration::from_secs(5), echo).await??;
    assert_eq!(served, 22);
    client.mesh.shutdown().await?;
    assert_eq!(
        client
            .mesh
            .request(server_id, ShoalProtocol::Control, b"x".to_vec())
            .await,
        Err(RequestError::Closed)
    );
    Ok(())
}
