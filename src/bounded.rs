//! HTTP bodies read up to a limit: nothing from outside (a provider's
//! answer, an image URL) can make genq hold more than it planned for.

use bytes::Bytes;

/// A body read up to a limit.
#[derive(Debug)]
pub enum Bounded {
    Whole(Bytes),
    /// The first `limit` bytes of a longer body.
    Cut(Bytes),
}

/// Reads `response`'s body, stopping at `limit` bytes (a declared
/// `Content-Length` over the limit stops it before anything is read).
pub async fn read(mut response: reqwest::Response, limit: u64) -> Result<Bounded, reqwest::Error> {
    let declared = response.content_length().unwrap_or(0);
    if declared > limit {
        return Ok(Bounded::Cut(Bytes::new()));
    }
    let mut body = bytes::BytesMut::with_capacity(declared as usize);
    while let Some(chunk) = response.chunk().await? {
        let room = limit as usize - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok(Bounded::Cut(body.freeze()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bounded::Whole(body.freeze()))
}
