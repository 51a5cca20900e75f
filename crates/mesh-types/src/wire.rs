//! Wire framing and bounded decoding helpers.
//!
//! Every peer-to-peer message travels in a frame:
//!
//! ```text
//! +------+------+---------+------+----------------+-----------------+
//! | 'A'  | 'M'  | version | kind | payload length | payload         |
//! | 1 B  | 1 B  | 1 B     | 1 B  | u32 LE, 4 B    | `length` bytes  |
//! +------+------+---------+------+----------------+-----------------+
//! ```
//!
//! The length is checked against the receiver's [`Limits`] as soon as the 8-byte header is
//! in, before any payload is buffered, so an oversized frame costs the receiver 8 bytes.
//! [`FrameDecoder`] reassembles frames from a byte stream with a fixed upper bound on
//! buffered bytes. [`Reader`] and the varint helpers give payload decoders bounds-checked
//! primitives that return [`WireError`] instead of panicking.
//!
//! ```
//! use mesh_types::wire::{self, Decoded, Limits};
//!
//! let limits = Limits::default();
//! let mut buf = Vec::new();
//! wire::encode_frame(7, b"hello", &limits, &mut buf).unwrap();
//! match wire::decode_frame(&buf, &limits).unwrap() {
//!     Decoded::Frame { kind, payload, consumed } => {
//!         assert_eq!((kind, payload, consumed), (7, &b"hello"[..], buf.len()));
//!     }
//!     Decoded::Incomplete { .. } => unreachable!(),
//! }
//! ```

use crate::error::{ErrorKind, HasKind};

/// The two bytes that open every frame.
pub const MAGIC: [u8; 2] = *b"AM";
/// The frame format version this build speaks.
pub const VERSION: u8 = 1;
/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 8;
/// No configuration may allow payloads above this (64 MiB).
pub const HARD_MAX_PAYLOAD: usize = 64 * 1024 * 1024;
/// The default payload limit (4 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 4 * 1024 * 1024;
/// Longest LEB128 encoding of a `u64`.
pub const MAX_VARINT_LEN: usize = 10;

/// Why bytes could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended before the value did.
    #[error("input ended early: needed {needed} more bytes at offset {offset}")]
    UnexpectedEof {
        /// Offset where the value started.
        offset: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// The frame does not start with [`MAGIC`].
    #[error("not an agentmesh frame: magic {found:02x?}")]
    BadMagic {
        /// The two bytes found.
        found: [u8; 2],
    },
    /// The frame uses a version this build does not speak.
    #[error("unsupported frame version {found} (this build speaks {supported})")]
    UnsupportedVersion {
        /// Version found.
        found: u8,
        /// Version supported.
        supported: u8,
    },
    /// A length exceeds the applicable limit.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A varint is longer than 10 bytes, overflows `u64`, or is not minimally encoded.
    #[error("invalid varint at offset {offset}")]
    BadVarint {
        /// Offset where the varint started.
        offset: usize,
    },
    /// Bytes were left over after a complete value.
    #[error("{extra} trailing bytes after the value")]
    Trailing {
        /// Bytes left over.
        extra: usize,
    },
    /// A field has a value outside its domain.
    #[error("invalid {what}")]
    Invalid {
        /// Which field.
        what: &'static str,
    },
}

impl HasKind for WireError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::TooLarge { .. } => ErrorKind::TooLarge,
            _ => ErrorKind::Malformed,
        }
    }
}

/// Size limits a receiver enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_payload: usize,
}

impl Limits {
    /// Limits with the given payload maximum, clamped to [`HARD_MAX_PAYLOAD`].
    pub const fn new(max_payload: usize) -> Self {
        let max_payload = if max_payload > HARD_MAX_PAYLOAD {
            HARD_MAX_PAYLOAD
        } else {
            max_payload
        };
        Self { max_payload }
    }

    /// The largest payload accepted.
    pub const fn max_payload(&self) -> usize {
        self.max_payload
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PAYLOAD)
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message kind, defined by the protocol using the frame.
    pub kind: u8,
    /// Payload length in bytes (already checked against the limits).
    pub len: usize,
}

/// Appends one frame carrying `payload` to `out`.
pub fn encode_frame(
    kind: u8,
    payload: &[u8],
    limits: &Limits,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let len = check_len("frame payload", payload.len(), limits.max_payload)?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<u32, WireError> {
    if len > max {
        return Err(WireError::TooLarge {
            what,
            len: len as u64,
            max: max as u64,
        });
    }
    u32::try_from(len).map_err(|_| WireError::TooLarge {
        what,
        len: len as u64,
        max: u64::from(u32::MAX),
    })
}

/// Decodes and checks a frame header.
pub fn decode_header(bytes: &[u8; HEADER_LEN], limits: &Limits) -> Result<Header, WireError> {
    let magic = [bytes[0], bytes[1]];
    if magic != MAGIC {
        return Err(WireError::BadMagic { found: magic });
    }
    if bytes[2] != VERSION {
        return Err(WireError::UnsupportedVersion {
            found: bytes[2],
            supported: VERSION,
        });
    }
    let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let len = usize::try_from(len).map_err(|_| WireError::TooLarge {
        what: "frame payload",
        len: u64::from(len),
        max: limits.max_payload as u64,
    })?;
    if len > limits.max_payload {
        return Err(WireError::TooLarge {
            what: "frame payload",
            len: len as u64,
            max: limits.max_payload as u64,
        });
    }
    Ok(Header {
        kind: bytes[3],
        len,
    })
}

/// The result of decoding from the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole frame.
    Frame {
        /// Message kind.
        kind: u8,
        /// The payload, borrowed from the input.
        payload: &'a [u8],
        /// Bytes of input the frame occupied.
        consumed: usize,
    },
    /// More bytes are needed; at least `needed` more.
    Incomplete {
        /// Minimum number of additional bytes needed.
        needed: usize,
    },
}

/// Decodes one frame from the front of `buf`.
pub fn decode_frame<'a>(buf: &'a [u8], limits: &Limits) -> Result<Decoded<'a>, WireError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        // Reject a wrong magic early, even from a partial header.
        if let Some(&first) = buf.first()
            && first != MAGIC[0]
        {
            return Err(WireError::BadMagic {
                found: [first, buf.get(1).copied().unwrap_or(0)],
            });
        }
        return Ok(Decoded::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    };
    let header = decode_header(head, limits)?;
    let total = HEADER_LEN + header.len;
    match buf.get(HEADER_LEN..total) {
        Some(payload) => Ok(Decoded::Frame {
            kind: header.kind,
            payload,
            consumed: total,
        }),
        None => Ok(Decoded::Incomplete {
            needed: total - buf.len(),
        }),
    }
}

/// Reassembles frames from a byte stream, never buffering more than one maximal frame.
///
/// Feed it with [`FrameDecoder::feed`], which takes only as many bytes as fit (the rest is
/// backpressure: read them again later), then drain frames with [`FrameDecoder::next_frame`].
/// After an error the stream is unusable: close the connection.
#[derive(Debug)]
pub struct FrameDecoder {
    limits: Limits,
    buf: Vec<u8>,
    start: usize,
    failed: bool,
}

impl FrameDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buf: Vec::new(),
            start: 0,
            failed: false,
        }
    }

    /// The most bytes the decoder ever buffers.
    pub fn capacity(&self) -> usize {
        HEADER_LEN + self.limits.max_payload
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends as much of `data` as fits; returns how many bytes were taken.
    pub fn feed(&mut self, data: &[u8]) -> usize {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let room = self.capacity().saturating_sub(self.buf.len());
        let take = room.min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        take
    }

    /// The next complete frame as `(kind, payload)`, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, WireError> {
        if self.failed {
            return Err(WireError::Invalid {
                what: "stream after an earlier framing error",
            });
        }
        match decode_frame(&self.buf[self.start..], &self.limits) {
            Ok(Decoded::Frame {
                kind,
                payload,
                consumed,
            }) => {
                let payload = payload.to_vec();
                self.start += consumed;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                Ok(Some((kind, payload)))
            }
            Ok(Decoded::Incomplete { .. }) => Ok(None),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }
}

/// Appends `value` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends `bytes` preceded by its length as a varint.
pub fn put_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A bounds-checked cursor over a byte slice. Every read returns [`WireError`] on short or
/// invalid input; none panics.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Current offset.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads exactly `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(WireError::UnexpectedEof {
                offset: self.pos,
                needed: n - self.remaining().min(n),
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// Reads a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let bytes = self.bytes(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a little-endian `u16`.
    pub fn u16_le(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_le_bytes)
    }

    /// Reads a little-endian `u32`.
    pub fn u32_le(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_le_bytes)
    }

    /// Reads a little-endian `u64`.
    pub fn u64_le(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_le_bytes)
    }

    /// Reads a minimally encoded unsigned LEB128 varint.
    pub fn varint(&mut self) -> Result<u64, WireError> {
        let offset = self.pos;
        let mut value: u64 = 0;
        for i in 0..MAX_VARINT_LEN {
            let byte = self
                .u8()
                .map_err(|_| WireError::UnexpectedEof { offset, needed: 1 })?;
            let bits = u64::from(byte & 0x7f);
            let shift = 7 * i as u32;
            // The tenth byte may only contribute the top bit of a u64.
            if i == MAX_VARINT_LEN - 1 && bits > 1 {
                return Err(WireError::BadVarint { offset });
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                // Non-minimal: a final zero byte after at least one continuation byte.
                if i > 0 && byte == 0 {
                    return Err(WireError::BadVarint { offset });
                }
                return Ok(value);
            }
        }
        Err(WireError::BadVarint { offset })
    }

    /// Reads a varint that must not exceed `max`, as a `usize`.
    pub fn varint_len(&mut self, what: &'static str, max: usize) -> Result<usize, WireError> {
        let len = self.varint()?;
        if len > max as u64 {
            return Err(WireError::TooLarge {
                what,
                len,
                max: max as u64,
            });
        }
        usize::try_from(len).map_err(|_| WireError::TooLarge {
            what,
            len,
            max: max as u64,
        })
    }

    /// Reads a varint length (at most `max`) followed by that many bytes.
    pub fn len_prefixed(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], WireError> {
        let len = self.varint_len(what, max)?;
        self.bytes(len)
    }

    /// Succeeds only if every byte was consumed.
    pub fn finish(self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(WireError::Trailing { extra }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(kind, payload, &Limits::default(), &mut out).unwrap();
        out
    }

    #[test]
    fn header_layout_is_stable() {
        assert_eq!(frame(3, b"xy"), [b'A', b'M', 1, 3, 2, 0, 0, 0, b'x', b'y']);
    }

    #[test]
    fn oversized_frames_are_rejected_from_the_header_alone() {
        let limits = Limits::new(16);
        let mut out = Vec::new();
        assert!(matches!(
            encode_frame(0, &[0; 17], &limits, &mut out),
            Err(WireError::TooLarge {
                len: 17,
                max: 16,
                ..
            })
        ));
        // A header announcing 4 GiB is refused without any payload present.
        let header = [b'A', b'M', 1, 0, 0xff, 0xff, 0xff, 0xff];
        let err = decode_frame(&header, &limits).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        assert!(Limits::new(usize::MAX).max_payload() == HARD_MAX_PAYLOAD);
    }

    #[test]
    fn bad_magic_and_version() {
        let limits = Limits::default();
        assert_eq!(
            decode_frame(b"GET / HTTP/1.1", &limits),
            Err(WireError::BadMagic { found: *b"GE" })
        );
        assert_eq!(
            decode_frame(b"X", &limits),
            Err(WireError::BadMagic { found: [b'X', 0] })
        );
        let mut f = frame(0, b"");
        f[2] = 9;
        assert_eq!(
            decode_frame(&f, &limits),
            Err(WireError::UnsupportedVersion {
                found: 9,
                supported: VERSION
            })
        );
        assert_eq!(
            decode_frame(b"AM", &limits),
            Ok(Decoded::Incomplete { needed: 6 })
        );
        let f = frame(1, b"abcd");
        assert_eq!(
            decode_frame(&f[..10], &limits),
            Ok(Decoded::Incomplete { needed: 2 })
        );
    }

    #[test]
    fn stream_decoder_bounds_its_buffer_and_stops_after_an_error() {
        let limits = Limits::new(4);
        let mut dec = FrameDecoder::new(limits);
        let mut stream = frame(1, b"ab");
        stream.extend(frame(2, b"cdef"));
        let big = [0u8; 100];
        // Capacity is one maximal frame (12 bytes): the second frame waits for room.
        assert_eq!(dec.feed(&stream), dec.capacity());
        assert_eq!(dec.next_frame().unwrap(), Some((1, b"ab".to_vec())));
        assert_eq!(dec.next_frame().unwrap(), None);
        assert_eq!(dec.feed(&stream[12..]), stream.len() - 12);
        assert_eq!(dec.next_frame().unwrap(), Some((2, b"cdef".to_vec())));
        assert_eq!(dec.next_frame().unwrap(), None);
        // It never takes more than one maximal frame.
        assert_eq!(dec.feed(&big), dec.capacity());
        assert!(dec.buffered() <= dec.capacity());
        assert!(dec.next_frame().is_err());
        assert!(dec.next_frame().is_err(), "a failed stream stays failed");
    }

    #[test]
    fn varint_edge_cases() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.varint().unwrap(), v);
            r.finish().unwrap();
        }
        // Non-minimal encoding of zero.
        assert!(matches!(
            Reader::new(&[0x80, 0x00]).varint(),
            Err(WireError::BadVarint { .. })
        ));
        // Eleven bytes, and a tenth byte that overflows.
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
        let mut overflow = vec![0xff; 9];
        overflow.push(0x02);
        assert!(Reader::new(&overflow).varint().is_err());
        assert!(matches!(
            Reader::new(&[0x80]).varint(),
            Err(WireError::UnexpectedEof { .. })
        ));
    }

    #[test]
    fn reader_reports_shortfalls() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16_le().unwrap(), 0x0201);
        assert_eq!(
            r.u32_le(),
            Err(WireError::UnexpectedEof {
                offset: 2,
                needed: 3
            })
        );
        assert_eq!(
            r.bytes(usize::MAX),
            Err(WireError::UnexpectedEof {
                offset: 2,
                needed: usize::MAX - 1
            })
        );
        assert_eq!(r.clone().finish(), Err(WireError::Trailing { extra: 1 }));
        let mut out = Vec::new();
        put_len_prefixed(&mut out, &[9; 10]);
        assert!(matches!(
            Reader::new(&out).len_prefixed("name", 5),
            Err(WireError::TooLarge {
                what: "name",
                len: 10,
                max: 5
            })
        ));
        assert_eq!(
            Reader::new(&out).len_prefixed("name", 10).unwrap(),
            &[9; 10]
        );
    }

    proptest! {
        #[test]
        fn frames_round_trip_through_the_stream_decoder_in_any_chunking(
            frames in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..8),
            chunk in 1usize..17,
        ) {
            let mut stream = Vec::new();
            for (kind, payload) in &frames {
                encode_frame(*kind, payload, &Limits::new(64), &mut stream).unwrap();
            }
            let mut dec = FrameDecoder::new(Limits::new(64));
            let mut got = Vec::new();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let n = dec.feed(&rest[..chunk.min(rest.len())]);
                rest = &rest[n..];
                while let Some(f) = dec.next_frame().unwrap() {
                    got.push(f);
                }
            }
            prop_assert_eq!(got, frames);
            prop_assert_eq!(dec.buffered(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame(&bytes, &Limits::new(32));
            let mut dec = FrameDecoder::new(Limits::new(32));
            dec.feed(&bytes);
            while let Ok(Some(_)) = dec.next_frame() {}
            let mut r = Reader::new(&bytes);
            while r.varint().is_ok() {}
            let mut r = Reader::new(&bytes);
            let _ = r.len_prefixed("x", 16);
        }

        #[test]
        fn varint_round_trip(v in any::<u64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            prop_assert!(out.len() <= MAX_VARINT_LEN);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.varint().unwrap(), v);
            prop_assert!(r.finish().is_ok());
        }
    }
}
