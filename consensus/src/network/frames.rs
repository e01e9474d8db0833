//! Length-prefixed CBOR frames on a byte stream: a 4-byte big-endian length, then that many bytes
//! of CBOR. Both directions are bounded by [`MAX_FRAME_BYTES`]: a longer frame is never sent, and a
//! length prefix above it ends the stream before anything is allocated.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{decode, encode_bounded};
use crate::limits::MAX_FRAME_BYTES;

/// Bytes of the length prefix.
const PREFIX: usize = 4;

/// Encodes `value` as one frame (prefix included), refusing one above [`MAX_FRAME_BYTES`].
pub(crate) fn encode_frame<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let body = encode_bounded(value, MAX_FRAME_BYTES).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(PREFIX + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Writes `value` as one frame (not flushed); returns the frame's size.
pub(crate) async fn write_frame<W, T>(w: &mut W, value: &T) -> io::Result<usize>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let frame = encode_frame(value)?;
    w.write_all(&frame).await?;
    Ok(frame.len())
}

/// Reads one frame, with its size: `None` when the stream ends cleanly between frames.
pub(crate) async fn read_frame<R, T>(r: &mut R) -> io::Result<Option<(T, usize)>>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    read_frame_if(r, |_| Ok(())).await
}

/// Reads one frame like [`read_frame`], but asks `admit` (given the body's length) whether to
/// read it at all before anything is allocated for it: a sender the receiver does not accept
/// never makes it hold a large buffer.
pub(crate) async fn read_frame_if<R, T, F>(r: &mut R, admit: F) -> io::Result<Option<(T, usize)>>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
    F: FnOnce(usize) -> io::Result<()>,
{
    let mut prefix = [0u8; PREFIX];
    match r.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes"),
        ));
    }
    admit(len)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    decode(&body)
        .map(|value| Some((value, PREFIX + len)))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn frames_round_trip_and_end_cleanly() {
        let mut buf = Vec::new();
        let one = ok(write_frame(&mut buf, &("one", 1u32)).await);
        let two = ok(write_frame(&mut buf, &("two", 2u32)).await);
        assert_eq!(one + two, buf.len());
        let mut r = futures::io::Cursor::new(buf);
        let a: Option<((String, u32), usize)> = ok(read_frame(&mut r).await);
        let b: Option<((String, u32), usize)> = ok(read_frame(&mut r).await);
        let end: Option<((String, u32), usize)> = ok(read_frame(&mut r).await);
        assert_eq!(a, Some((("one".to_owned(), 1), one)));
        assert_eq!(b, Some((("two".to_owned(), 2), two)));
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn an_oversized_cut_or_garbled_frame_is_an_error() {
        let huge = ok(u32::try_from(MAX_FRAME_BYTES + 1)).to_be_bytes();
        let mut r = futures::io::Cursor::new(huge.to_vec());
        match read_frame::<_, u32>(&mut r).await {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::InvalidData),
            Ok(v) => panic!("an oversized frame was read: {v:?}"),
        }
        let mut cut = ok(encode_frame(&"a longer string"));
        cut.truncate(cut.len() - 3);
        let mut r = futures::io::Cursor::new(cut);
        assert!(read_frame::<_, String>(&mut r).await.is_err());
        let mut garbage = 3u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
        let mut r = futures::io::Cursor::new(garbage);
        assert!(read_frame::<_, String>(&mut r).await.is_err());
    }
}
