//! [`Stream`] and [`IncomingStreams`]: the mesh's long-lived byte streams (raft append lanes,
//! proxied connections), each holding a lease on its peer's connection.
//!
//! The connection upkeep closes connections that nothing uses while the agent is above its
//! high-water mark, and it learns use from requests. A stream carries its traffic without the
//! event loop seeing it, so a connection whose only traffic was a stream looked unused: a proxied
//! database connection or a raft append lane between two agents that were neither ring
//! neighbours nor gossip links could be cut under it. Every stream the mesh hands out now holds a
//! lease on its peer until it is dropped, and the upkeep keeps the connections of leased peers.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use libp2p::PeerId;

/// How many streams are open to each peer. Shared by the handles that hand streams out and the
/// event loop that prunes connections; held only to count, never across an await.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamLeases(Arc<Mutex<HashMap<PeerId, usize>>>);

impl StreamLeases {
    /// Counts one more stream to `peer` until the returned lease is dropped.
    pub(crate) fn lease(&self, peer: PeerId) -> Lease {
        *self.counts().entry(peer).or_insert(0) += 1;
        Lease {
            leases: self.clone(),
            peer,
        }
    }

    /// Whether a stream to `peer` is open.
    pub(crate) fn held(&self, peer: &PeerId) -> bool {
        self.counts().contains_key(peer)
    }

    fn release(&self, peer: &PeerId) {
        let mut counts = self.counts();
        if let Some(count) = counts.get_mut(peer) {
            *count -= 1;
            if *count == 0 {
                counts.remove(peer);
            }
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, usize>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One open stream's claim on its peer's connection.
#[derive(Debug)]
pub(crate) struct Lease {
    leases: StreamLeases,
    peer: PeerId,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.leases.release(&self.peer);
    }
}

/// A long-lived, ordered byte stream to a peer (futures' `AsyncRead` and `AsyncWrite`). It keeps
/// its peer's connection from being pruned until it is dropped.
#[derive(Debug)]
pub struct Stream {
    inner: libp2p::Stream,
    _lease: Lease,
}

impl Stream {
    pub(crate) fn new(inner: libp2p::Stream, lease: Lease) -> Stream {
        Stream {
            inner,
            _lease: lease,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }

    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read_vectored(cx, bufs)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// The streams of one protocol that peers open to this agent, each with its opener's id
/// (a `futures::Stream` of `(PeerId, Stream)`).
pub struct IncomingStreams {
    inner: libp2p_stream::IncomingStreams,
    leases: StreamLeases,
}

impl IncomingStreams {
    pub(crate) fn new(inner: libp2p_stream::IncomingStreams, leases: StreamLeases) -> Self {
        IncomingStreams { inner, leases }
    }
}

impl std::fmt::Debug for IncomingStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingStreams").finish_non_exhaustive()
    }
}

impl futures::Stream for IncomingStreams {
    type Item = (PeerId, Stream);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|next| {
            next.map(|(peer, stream)| (peer, Stream::new(stream, self.leases.lease(peer))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_held_while_any_of_its_leases_lives() {
        let leases = StreamLeases::default();
        let peer = PeerId::random();
        let first = leases.lease(peer);
        let second = leases.lease(peer);
        assert!(leases.held(&peer));
        drop(first);
        assert!(leases.held(&peer));
        drop(second);
        assert!(!leases.held(&peer));
        assert!(!leases.held(&PeerId::random()));
    }
}
