//! The byte codec of every request/response protocol: one frame per stream direction, a 4-byte
//! big-endian length followed by that many bytes, bounded per protocol and direction.
//!
//! An oversized or truncated inbound request is not an I/O error (libp2p would only log those):
//! it becomes [`Frame::Rejected`], so the event loop learns which peer sent it and disconnects it.
//! Oversized responses are `InvalidData` errors of the outbound request.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;

/// An inbound request as read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A well-formed frame.
    Data(Vec<u8>),
    /// A malformed, truncated or oversized frame; the reason.
    Rejected(String),
}

/// Length-prefixed bytes with bounds on both directions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameCodec {
    max_request: usize,
    max_response: usize,
}

impl FrameCodec {
    /// A codec that refuses requests above `max_request` and responses above `max_response` bytes.
    pub(crate) fn new(max_request: usize, max_response: usize) -> Self {
        Self {
            max_request,
            max_response,
        }
    }
}

/// Reads one frame of at most `limit` bytes.
pub(crate) async fn read_frame<T>(io: &mut T, limit: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut header = [0u8; 4];
    io.read_exact(&mut header).await?;
    let len = u32::from_be_bytes(header) as usize;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {limit} byte limit"),
        ));
    }
    // Grow as bytes arrive instead of trusting the header with a large allocation.
    let mut payload = Vec::with_capacity(len.min(64 * 1024));
    let read = io.take(len as u64).read_to_end(&mut payload).await?;
    if read != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame truncated: {read} of {len} bytes"),
        ));
    }
    Ok(payload)
}

/// Writes one frame, refusing payloads above `limit` bytes.
pub(crate) async fn write_frame<T>(io: &mut T, payload: &[u8], limit: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|len| (*len as usize) <= limit)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "frame of {} bytes exceeds the {limit} byte limit",
                    payload.len()
                ),
            )
        })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(payload).await?;
    io.flush().await?;
    io.close().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_frame(io, self.max_request).await {
            Ok(payload) => Ok(Frame::Data(payload)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ) =>
            {
                Ok(Frame::Rejected(e.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_response).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Frame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match req {
            Frame::Data(payload) => write_frame(io, &payload, self.max_request).await,
            Frame::Rejected(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a rejected frame is never sent",
            )),
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res, self.max_response).await
    }
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;

    use super::*;

    #[tokio::test]
    async fn round_trip_and_bounds() -> anyhow::Result<()> {
        let mut buf = Cursor::new(Vec::new());
        write_frame(&mut buf, b"hello", 16).await?;
        let mut rd = Cursor::new(buf.into_inner());
        assert_eq!(read_frame(&mut rd, 16).await?, b"hello");

        let mut big = Cursor::new(Vec::new());
        let err = write_frame(&mut big, &[0u8; 17], 16).await;
        assert_eq!(
            err.err().map(|e| e.kind()),
            Some(io::ErrorKind::InvalidInput)
        );

        let mut oversized = Cursor::new(1_000_000u32.to_be_bytes().to_vec());
        let err = read_frame(&mut oversized, 16).await;
        assert_eq!(
            err.err().map(|e| e.kind()),
            Some(io::ErrorKind::InvalidData)
        );

        let mut truncated = Cursor::new([&8u32.to_be_bytes()[..], b"abc"].concat());
        let err = read_frame(&mut truncated, 16).await;
        assert_eq!(
            err.err().map(|e| e.kind()),
            Some(io::ErrorKind::UnexpectedEof)
        );
        Ok(())
    }
}
