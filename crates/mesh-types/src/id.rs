//! Identifiers.
//!
//! - [`NodeId`]: a node's Ed25519 public key, the root of its PeerId and `did:key`;
//! - [`Digest`]: a BLAKE3-256 content hash, used to name blobs, blocks and models;
//! - [`RequestId`]: a per-sender counter that correlates a command with its response;
//! - [`MessageId`]: a 16-byte id for deduplicating messages across the mesh.

use std::fmt;
use std::str::FromStr;

/// Why a textual id could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseIdError {
    /// The text has the wrong number of hex digits.
    #[error("expected {expected} hex digits, got {got}")]
    Length {
        /// Hex digits expected.
        expected: usize,
        /// Hex digits found.
        got: usize,
    },
    /// The text contains a character that is not a hex digit.
    #[error("invalid hex digit {found:?} at position {position}")]
    Digit {
        /// The offending character.
        found: char,
        /// Its byte position.
        position: usize,
    },
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], ParseIdError> {
    if s.len() != N * 2 {
        return Err(ParseIdError::Length {
            expected: N * 2,
            got: s.len(),
        });
    }
    let mut out = [0u8; N];
    let bytes = s.as_bytes();
    for (i, slot) in out.iter_mut().enumerate() {
        let hi = hex_value(bytes[2 * i], 2 * i, s)?;
        let lo = hex_value(bytes[2 * i + 1], 2 * i + 1, s)?;
        *slot = (hi << 4) | lo;
    }
    Ok(out)
}

fn hex_value(c: u8, position: usize, s: &str) -> Result<u8, ParseIdError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(ParseIdError::Digit {
            found: s[position..].chars().next().unwrap_or('\u{fffd}'),
            position,
        }),
    }
}

macro_rules! byte_id {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// Wraps raw bytes.
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Parses from a byte slice of exactly [`Self::LEN`] bytes.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; $len]>::try_from(bytes).ok().map(Self)
            }

            /// The first four bytes as hex, for compact log lines.
            pub fn short(&self) -> String {
                let mut s = String::with_capacity(8);
                for b in &self.0[..4] {
                    s.push_str(&format!("{b:02x}"));
                }
                s
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.short())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex::<$len>(s).map(Self)
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }
    };
}

byte_id!(
    /// A node's Ed25519 public key (32 bytes). The same key gives the node's libp2p PeerId
    /// and its `did:key`; this type only carries the bytes, `mesh-identity` validates them.
    NodeId,
    32
);

byte_id!(
    /// A BLAKE3-256 digest naming content: a blob, a block, a model.
    Digest,
    32
);

byte_id!(
    /// A 16-byte message id used for end-to-end deduplication.
    MessageId,
    16
);

impl Digest {
    /// Hashes `data` with BLAKE3-256.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    /// Hashes several parts as one stream (no separators: callers that need domain
    /// separation put a length or tag into the parts themselves).
    pub fn of_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut hasher = blake3::Hasher::new();
        for part in parts {
            hasher.update(part);
        }
        Self(*hasher.finalize().as_bytes())
    }
}

/// Correlates a command with the event or response that answers it.
///
/// Request ids are unique per issuer (a node, a client); pair them with the issuer's
/// [`NodeId`] when they must be unique across the mesh.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Debug)]
pub struct RequestId(pub u64);

impl RequestId {
    /// The id after this one (wrapping: ids are correlation tokens, not counters of record).
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0.wrapping_add(1))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "req-{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn digest_matches_blake3_reference() {
        // BLAKE3 of the empty input, from the BLAKE3 reference test vectors.
        let expected = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
        assert_eq!(Digest::of(b"").to_string(), expected);
        assert_eq!(
            Digest::of_parts([&b"ab"[..], &b"c"[..]]),
            Digest::of(b"abc")
        );
    }

    #[test]
    fn parse_errors_are_specific() {
        assert_eq!(
            "abc".parse::<NodeId>(),
            Err(ParseIdError::Length {
                expected: 64,
                got: 3
            })
        );
        let mut s = "0".repeat(64);
        s.replace_range(10..11, "g");
        assert_eq!(
            s.parse::<Digest>(),
            Err(ParseIdError::Digit {
                found: 'g',
                position: 10
            })
        );
        // A multi-byte character must not panic on slicing.
        let mut s = "0".repeat(62);
        s.push('é');
        assert!(matches!(
            s.parse::<Digest>(),
            Err(ParseIdError::Digit { found: 'é', .. })
        ));
    }

    #[test]
    fn short_and_debug() {
        let id = NodeId([0xab; 32]);
        assert_eq!(id.short(), "abababab");
        assert_eq!(format!("{id:?}"), "NodeId(abababab)");
        assert_eq!(RequestId(7).next(), RequestId(8));
        assert_eq!(RequestId(u64::MAX).next(), RequestId(0));
    }

    proptest! {
        #[test]
        fn hex_round_trip(bytes in any::<[u8; 32]>()) {
            let id = Digest(bytes);
            prop_assert_eq!(id.to_string().parse::<Digest>().unwrap(), id);
            prop_assert_eq!(id.to_string().to_uppercase().parse::<Digest>().unwrap(), id);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(s in ".{0,80}") {
            let _ = s.parse::<MessageId>();
            let _ = s.parse::<NodeId>();
        }
    }
}
