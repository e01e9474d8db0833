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
