//! The membership messages and their compact, versioned binary encoding.
//!
//! ```text
//! message = version:u8 (=1) | kind:u8 | seq:varint | [node:32 B, ping-req and ack only]
//!           | claims:varint (<= MAX_PIGGYBACK) | claim*
//! claim   = member:32 B | incarnation:varint | state:u8 | origin:32 B
//!           | signature: varint length (<= MAX_SIGNATURE) + bytes
//! ```
//!
//! A message is at most [`MAX_MESSAGE`] bytes; [`Message::decode`] refuses anything longer,
//! truncated, of an unknown version, kind or state, with too many claims, a non-minimal
//! varint or trailing bytes, with an error and never a panic. A driver sends each message
//! as one datagram or one length-delimited frame.

use mesh_types::NodeId;
use mesh_types::wire::{Reader, WireError, put_len_prefixed, put_varint};

use crate::error::Result;

/// The encoding version this build speaks.
pub const WIRE_VERSION: u8 = 1;
/// Most claims one message carries.
pub const MAX_PIGGYBACK: usize = 32;
/// Longest signature accepted (an Ed25519 signature is 64 bytes).
pub const MAX_SIGNATURE: usize = 128;
/// Longest encoded message: 32 claims of the longest size plus the header fit.
pub const MAX_MESSAGE: usize = 8 * 1024;

const KIND_PING: u8 = 1;
const KIND_PING_REQ: u8 = 2;
const KIND_ACK: u8 = 3;

/// What a member is believed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Answering probes.
    Alive,
    /// A probe went unanswered, directly and through other members; it has until the
    /// suspicion timeout to refute.
    Suspect,
    /// Suspected and not refuted in time: considered crashed.
    Dead,
    /// Announced its own departure.
    Left,
}

impl State {
    fn code(self) -> u8 {
        match self {
            Self::Alive => 0,
            Self::Suspect => 1,
            Self::Dead => 2,
            Self::Left => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Alive,
            1 => Self::Suspect,
            2 => Self::Dead,
            3 => Self::Left,
            _ => return None,
        })
    }
}

/// One membership claim, as disseminated: "`member` is `state` at `incarnation`", signed by
/// `origin`. `Alive` and `Left` claims are only valid from the member itself
/// (`origin == member`); `Suspect` and `Dead` claims name their accuser as `origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The member the claim is about.
    pub member: NodeId,
    /// The member's incarnation the claim refers to.
    pub incarnation: u64,
    /// The claimed state.
    pub state: State,
    /// Who makes the claim (and signed it).
    pub origin: NodeId,
    /// `origin`'s signature over [`Claim::signed_bytes`].
    pub signature: Vec<u8>,
}

impl Claim {
    /// The bytes a claim's signature covers: a domain tag, the member, the incarnation
    /// (little-endian), the state and the origin.
    pub fn signed_bytes(
        member: &NodeId,
        incarnation: u64,
        state: State,
        origin: &NodeId,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + 32 + 8 + 1 + 32);
        out.extend_from_slice(b"mesh-fault/swim/claim/v1");
        out.extend_from_slice(member.as_bytes());
        out.extend_from_slice(&incarnation.to_le_bytes());
        out.push(state.code());
        out.extend_from_slice(origin.as_bytes());
        out
    }

    /// The bytes this claim's signature must cover.
    pub fn payload(&self) -> Vec<u8> {
        Self::signed_bytes(&self.member, self.incarnation, self.state, &self.origin)
    }
}

/// What a message asks or answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// "Are you there?" The receiver answers with an [`Body::Ack`] of the same `seq`.
    Ping {
        /// The prober's sequence number.
        seq: u64,
    },
    /// "Ping `target` for me": the receiver pings `target` and forwards its ack.
    PingReq {
        /// The requester's sequence number, echoed in the forwarded ack.
        seq: u64,
        /// Whom to ping.
        target: NodeId,
    },
    /// "`about` answered probe `seq`": sent by the probed member itself, or forwarded by
    /// the member asked to probe it.
    Ack {
        /// The probe's sequence number.
        seq: u64,
        /// The member that answered.
        about: NodeId,
    },
}

/// A membership message: a probe or an answer, with piggybacked claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The probe or answer.
    pub body: Body,
    /// Disseminated claims (at most [`MAX_PIGGYBACK`]).
    pub claims: Vec<Claim>,
}

impl Message {
    /// The encoded message (at most [`MAX_MESSAGE`] bytes when it holds at most
    /// [`MAX_PIGGYBACK`] claims with signatures of at most [`MAX_SIGNATURE`] bytes, which
    /// is all the core ever builds).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.claims.len() * 112);
        out.push(WIRE_VERSION);
        match self.body {
            Body::Ping { seq } => {
                out.push(KIND_PING);
                put_varint(&mut out, seq);
            }
            Body::PingReq { seq, target } => {
                out.push(KIND_PING_REQ);
                put_varint(&mut out, seq);
                out.extend_from_slice(target.as_bytes());
            }
            Body::Ack { seq, about } => {
                out.push(KIND_ACK);
                put_varint(&mut out, seq);
                out.extend_from_slice(about.as_bytes());
            }
        }
        put_varint(&mut out, self.claims.len() as u64);
        for c in &self.claims {
            out.extend_from_slice(c.member.as_bytes());
            put_varint(&mut out, c.incarnation);
            out.push(c.state.code());
            out.extend_from_slice(c.origin.as_bytes());
            put_len_prefixed(&mut out, &c.signature);
        }
        out
    }

    /// Decodes one message, refusing malformed or oversized input.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_MESSAGE {
            return Err(WireError::TooLarge {
                what: "membership message",
                len: bytes.len() as u64,
                max: MAX_MESSAGE as u64,
            }
            .into());
        }
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != WIRE_VERSION {
            return Err(WireError::UnsupportedVersion {
                found: version,
                supported: WIRE_VERSION,
            }
            .into());
        }
        let kind = r.u8()?;
        let seq = r.varint()?;
        let body = match kind {
            KIND_PING => Body::Ping { seq },
            KIND_PING_REQ => Body::PingReq {
                seq,
                target: NodeId(r.array()?),
            },
            KIND_ACK => Body::Ack {
                seq,
                about: NodeId(r.array()?),
            },
            _ => {
                return Err(WireError::Invalid {
                    what: "membership message kind",
                }
                .into());
            }
        };
        let count = r.varint_len("piggybacked claims", MAX_PIGGYBACK)?;
        let mut claims = Vec::with_capacity(count);
        for _ in 0..count {
            let member = NodeId(r.array()?);
            let incarnation = r.varint()?;
            let state = State::from_code(r.u8()?).ok_or(WireError::Invalid {
                what: "member state",
            })?;
            let origin = NodeId(r.array()?);
            let signature = r.len_prefixed("claim signature", MAX_SIGNATURE)?.to_vec();
            claims.push(Claim {
                member,
                incarnation,
                state,
                origin,
                signature,
            });
        }
        r.finish()?;
        Ok(Self { body, claims })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn id(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    fn claim(i: u8) -> Claim {
        Claim {
            member: id(i),
            incarnation: u64::from(i) * 1_000,
            state: State::from_code(i % 4).unwrap(),
            origin: id(i.wrapping_add(1)),
            signature: vec![i; 64],
        }
    }

    #[test]
    fn every_kind_round_trips() {
        for body in [
            Body::Ping { seq: 0 },
            Body::PingReq {
                seq: u64::MAX,
                target: id(9),
            },
            Body::Ack {
                seq: 300,
                about: id(3),
            },
        ] {
            let m = Message {
                body,
                claims: (0..MAX_PIGGYBACK as u8).map(claim).collect(),
            };
            let bytes = m.encode();
            assert!(bytes.len() <= MAX_MESSAGE);
            assert_eq!(Message::decode(&bytes).unwrap(), m);
        }
        // The longest possible message still fits the limit.
        let longest = Message {
            body: Body::Ack {
                seq: u64::MAX,
                about: id(1),
            },
            claims: (0..MAX_PIGGYBACK)
                .map(|_| Claim {
                    incarnation: u64::MAX,
                    signature: vec![0; MAX_SIGNATURE],
                    ..claim(1)
                })
                .collect(),
        };
        let bytes = longest.encode();
        assert!(bytes.len() <= MAX_MESSAGE, "{}", bytes.len());
        assert_eq!(Message::decode(&bytes).unwrap(), longest);
    }

    #[test]
    fn malformed_input_is_refused_without_panicking() {
        let m = Message {
            body: Body::PingReq {
                seq: 7,
                target: id(2),
            },
            claims: vec![claim(1), claim(2)],
        };
        let good = m.encode();
        // Every truncation fails.
        for cut in 0..good.len() {
            assert!(Message::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        // Trailing bytes, a bad version, kind or state.
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            Message::decode(&trailing),
            Err(Error::Decode {
                source: WireError::Trailing { extra: 1 }
            })
        ));
        let mut version = good.clone();
        version[0] = 2;
        assert!(matches!(
            Message::decode(&version),
            Err(Error::Decode {
                source: WireError::UnsupportedVersion { found: 2, .. }
            })
        ));
        let mut kind = good.clone();
        kind[1] = 9;
        assert!(Message::decode(&kind).is_err());
        let mut state = good.clone();
        // version, kind, seq (1 B), target (32 B), count (1 B), member (32 B), inc (2 B).
        let state_at = 2 + 1 + 32 + 1 + 32 + 2;
        assert_eq!(state[state_at], 1, "claim(1) is Suspect");
        state[state_at] = 4;
        assert!(Message::decode(&state).is_err());
        // Too many claims, an oversized signature, an oversized message.
        let mut many = vec![WIRE_VERSION, KIND_PING, 0];
        put_varint(&mut many, MAX_PIGGYBACK as u64 + 1);
        assert!(matches!(
            Message::decode(&many),
            Err(Error::Decode {
                source: WireError::TooLarge { .. }
            })
        ));
        let mut long_sig = Message {
            body: Body::Ping { seq: 1 },
            claims: vec![claim(1)],
        };
        long_sig.claims[0].signature = vec![0; MAX_SIGNATURE + 1];
        assert!(Message::decode(&long_sig.encode()).is_err());
        assert!(Message::decode(&vec![0; MAX_MESSAGE + 1]).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        use crate::rng::{Random, SplitMix64};
        let mut r = SplitMix64::new(1);
        let good = Message {
            body: Body::Ack {
                seq: 5,
                about: id(4),
            },
            claims: vec![claim(3)],
        }
        .encode();
        for _ in 0..20_000 {
            let mut bytes = good.clone();
            // Flip a few bytes, or cut, or both.
            for _ in 0..1 + r.below(3) {
                let at = r.below(bytes.len() as u64) as usize;
                bytes[at] = r.next_u64() as u8;
            }
            bytes.truncate(r.below(bytes.len() as u64 + 1) as usize);
            if let Ok(m) = Message::decode(&bytes) {
                assert_eq!(m.encode(), bytes, "only canonical encodings decode");
            }
        }
    }
}
