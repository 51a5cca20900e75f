//! The request/response wire codec: one libp2p protocol (`/agentmesh/rr/1`) carrying
//! application protocols by name.
//!
//! ```text
//! request:  u32 LE length | protocol-name length (u8) | protocol name | payload
//! response: u32 LE length | status (u8: 0 ok, 1 unknown protocol, 2 refused) | payload
//! ```
//!
//! The length is checked against the limit before anything else is read or allocated.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// The libp2p protocol id.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/agentmesh/rr/1");
/// Longest application protocol name.
pub const MAX_PROTOCOL_NAME: usize = 64;

/// A request as carried on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRequest {
    /// Application protocol name.
    pub protocol: String,
    /// Payload.
    pub data: Vec<u8>,
}

/// How a responder answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The payload is the answer.
    Ok,
    /// No handler for the protocol.
    UnknownProtocol,
    /// The handler refused; the payload is a UTF-8 reason.
    Refused,
}

/// A response as carried on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireResponse {
    /// Outcome.
    pub status: Status,
    /// Payload.
    pub data: Vec<u8>,
}

/// Checks an application protocol name: 1 to 64 of `[a-z0-9/._-]`.
pub fn valid_protocol_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PROTOCOL_NAME
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'/' | b'.' | b'_' | b'-'))
}

/// The codec, with its size limit.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    max_len: usize,
}

impl Codec {
    /// A codec refusing frames above `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Self { max_len }
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(invalid(format!(
            "frame of {len} bytes exceeds the limit of {max}"
        )));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    parts: &[&[u8]],
    max: usize,
) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > max {
        return Err(invalid(format!(
            "frame of {len} bytes exceeds the limit of {max}"
        )));
    }
    io.write_all(&(len as u32).to_le_bytes()).await?;
    for p in parts {
        io.write_all(p).await?;
    }
    io.flush().await
}

/// Decodes a request frame.
pub fn decode_request(frame: &[u8]) -> io::Result<WireRequest> {
    let (&n, rest) = frame
        .split_first()
        .ok_or_else(|| invalid("empty request"))?;
    let n = usize::from(n);
    if rest.len() < n {
        return Err(invalid("request shorter than its protocol name"));
    }
    let protocol =
        std::str::from_utf8(&rest[..n]).map_err(|_| invalid("protocol name is not UTF-8"))?;
    if !valid_protocol_name(protocol) {
        return Err(invalid(format!("invalid protocol name {protocol:?}")));
    }
    Ok(WireRequest {
        protocol: protocol.to_owned(),
        data: rest[n..].to_vec(),
    })
}

/// Decodes a response frame.
pub fn decode_response(frame: &[u8]) -> io::Result<WireResponse> {
    let (&status, data) = frame
        .split_first()
        .ok_or_else(|| invalid("empty response"))?;
    let status = match status {
        0 => Status::Ok,
        1 => Status::UnknownProtocol,
        2 => Status::Refused,
        other => return Err(invalid(format!("unknown response status {other}"))),
    };
    Ok(WireResponse {
        status,
        data: data.to_vec(),
    })
}

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = WireRequest;
    type Response = WireResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<WireRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode_request(&read_frame(io, self.max_len).await?)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<WireResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode_response(&read_frame(io, self.max_len).await?)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: WireRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        if !valid_protocol_name(&req.protocol) {
            return Err(invalid(format!("invalid protocol name {:?}", req.protocol)));
        }
        write_frame(
            io,
            &[
                &[req.protocol.len() as u8],
                req.protocol.as_bytes(),
                &req.data,
            ],
            self.max_len,
        )
        .await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: WireResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let status = match res.status {
            Status::Ok => 0u8,
            Status::UnknownProtocol => 1,
            Status::Refused => 2,
        };
        write_frame(io, &[&[status], &res.data], self.max_len).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_and_reject_garbage() {
        let r = decode_request(&[4, b'e', b'c', b'h', b'o', 9, 9]).unwrap();
        assert_eq!(
            r,
            WireRequest {
                protocol: "echo".into(),
                data: vec![9, 9]
            }
        );
        assert!(decode_request(&[]).is_err());
        assert!(decode_request(&[5, b'e']).is_err());
        assert!(decode_request(&[2, b'A', b'B']).is_err());
        assert!(decode_request(&[0]).is_err());
        assert_eq!(
            decode_response(&[1]).unwrap().status,
            Status::UnknownProtocol
        );
        assert!(decode_response(&[7]).is_err());
        assert!(!valid_protocol_name(&"a".repeat(65)));
    }
}
