//! Closed clusters: the same token connects; different tokens, or one side without, never do.

use std::time::Duration;

use super::{addr, agent, eventually, in_state};
use crate::MemberState;

#[tokio::test(flavor = "multi_thread")]
async fn only_the_same_token_connects() -> anyhow::Result<()> {
    let token = |t: &'static str| move |c: &mut crate::MeshConfig| c.token = Some(t.to_owned());
    let a = agent(&[], token("alpha")).await?;
    let a_addr = addr(&a).await?;
    let same = agent(std::slice::from_ref(&a_addr), token("alpha")).await?;
    let other = agent(std::slice::from_ref(&a_addr), token("beta")).await?;
    let open = agent(std::slice::from_ref(&a_addr), |_| {}).await?;
    let open_addr = addr(&open).await?;
    let closed_to_open = agent(std::slice::from_ref(&open_addr), token("alpha")).await?;

    let (a_mesh, same_id) = (a.mesh.clone(), same.mesh.local_peer_id());
    assert!(
        eventually(Duration::from_secs(5), || {
            let mesh = a_mesh.clone();
            async move { in_state(&mesh, MemberState::Alive).await == vec![same_id] }
        })
        .await,
        "same token must connect"
    );
    // Give the others time to (fail to) connect; seeds are re-dialled every 2 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, stranger) in [
        ("other token", &other),
        ("no token", &open),
        ("token vs open", &closed_to_open),
    ] {
        assert!(
            stranger.mesh.connected_peers().await?.is_empty(),
            "{name} connected"
        );
        assert!(
            stranger.mesh.members().await?.is_empty(),
            "{name} sees members"
        );
    }
    assert_eq!(a.mesh.connected_peers().await?, vec![same_id]);
    assert_eq!(in_state(&a.mesh, MemberState::Alive).await, vec![same_id]);
    for x in [a, same, other, open, closed_to_open] {
        x.mesh.shutdown().await?;
    }
    Ok(())
}

/// The service proxy's streams are as closed as the rest of the mesh: an agent with the same
/// token opens one and its bytes arrive; an agent with another token, or none, that knows the
/// address and the peer id cannot open one, for either kind of proxy stream.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_same_token_opens_a_proxy_stream() -> anyhow::Result<()> {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};

    use crate::ShoalStream;

    let token = |t: &'static str| move |c: &mut crate::MeshConfig| c.token = Some(t.to_owned());
    let server = agent(&[], token("alpha")).await?;
    let server_addr = addr(&server).await?;
    let server_id = server.mesh.local_peer_id();
    let mut incoming = server.mesh.accept_streams(ShoalStream::Proxy)?;
    let _datagrams = server.mesh.accept_streams(ShoalStream::ProxyDatagrams)?;
    let echo = tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            let mut byte = [0u8; 1];
            if stream.read_exact(&mut byte).await.is_ok() {
                let _ = stream.write_all(&byte).await;
                let _ = stream.flush().await;
            }
        }
    });

    let same = agent(std::slice::from_ref(&server_addr), token("alpha")).await?;
    let other = agent(std::slice::from_ref(&server_addr), token("beta")).await?;
    let open = agent(std::slice::from_ref(&server_addr), |_| {}).await?;
    let mut answered = None;
    let echo_once = || async {
        let mut stream = same.mesh.open_stream(server_id, ShoalStream::Proxy).await?;
        stream.write_all(&[42]).await?;
        stream.flush().await?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await?;
        anyhow::Ok(byte[0])
    };
    for _ in 0..20 {
        if let Ok(Ok(byte)) = tokio::time::timeout(Duration::from_secs(5), echo_once()).await {
            answered = Some(byte);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answered, Some(42), "the same token opens a proxy stream");

    for (name, stranger) in [("other token", &other), ("no token", &open)] {
        for kind in [ShoalStream::Proxy, ShoalStream::ProxyDatagrams] {
            let opened = tokio::time::timeout(
                Duration::from_secs(10),
                stranger.mesh.open_stream(server_id, kind),
            )
            .await;
            assert!(
                !matches!(opened, Ok(Ok(_))),
                "{name} opened a {kind} stream"
            );
        }
    }
    echo.abort();
    for x in [server, same, other, open] {
        x.mesh.shutdown().await?;
    }
    Ok(())
}
