//! The signed agent envelope: `{id, type, sender, recipient, timestamp, content, signature,
//! metadata{priority, ttl}}`, with DIDs as sender and recipient.
//!
//! The signature covers the canonical encoding of every other field (a domain tag, then each field in order, variable-length ones length-prefixed),
//! so any change to any byte invalidates it. The content is opaque here; between agents it is
//! a Double Ratchet ciphertext (`mesh_crypto::ratchet`).

use std::time::Duration;

use mesh_crypto::ed25519::Signature;
use mesh_types::{MessageId, Timestamp};

use crate::canon::{Parser, Writer};
use crate::did::Did;
use crate::error::{Error, Result, malformed};
use crate::identity::Identity;

const DOMAIN: &str = "agentmesh/envelope/v1";
/// The most content bytes an envelope may carry (1 MiB).
pub const MAX_CONTENT_LEN: usize = 1024 * 1024;
/// The longest message type.
pub const MAX_KIND_LEN: usize = 64;
/// The longest time-to-live (30 days).
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How far in the future a timestamp may be before it is refused (clock skew allowance).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Delivery priority.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Background traffic.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Ahead of normal traffic.
    High,
    /// Ahead of everything.
    Urgent,
}

impl Priority {
    fn code(self) -> u8 {
        match self {
            Self::Low => 0,
            Self::Normal => 1,
            Self::High => 2,
            Self::Urgent => 3,
        }
    }

    fn from_code(c: u8) -> Result<Self> {
        Ok(match c {
            0 => Self::Low,
            1 => Self::Normal,
            2 => Self::High,
            3 => Self::Urgent,
            other => return Err(malformed("envelope", format!("unknown priority {other}"))),
        })
    }
}

/// Envelope metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// Delivery priority.
    pub priority: Priority,
    /// How long after `timestamp` the message stays deliverable.
    pub ttl: Duration,
}

impl Default for Metadata {
    fn default() -> Self {
        Self {
            priority: Priority::Normal,
            ttl: Duration::from_secs(3600),
        }
    }
}

/// A signed envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Unique id, for deduplication and acknowledgement.
    pub id: MessageId,
    /// Message type, such as `chat` or `task.result` (`[a-z0-9._/-]`, 1 to 64 characters).
    pub kind: String,
    /// The signer.
    pub sender: Did,
    /// The addressee.
    pub recipient: Did,
    /// When it was sent.
    pub timestamp: Timestamp,
    /// The payload.
    pub content: Vec<u8>,
    /// Priority and time-to-live.
    pub metadata: Metadata,
    /// The sender's signature over all of the above.
    pub signature: Signature,
}

fn check_kind(kind: &str) -> Result<()> {
    let ok = !kind.is_empty()
        && kind.len() <= MAX_KIND_LEN
        && kind
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(malformed(
            "envelope",
            format!("message type {kind:?}: use 1 to {MAX_KIND_LEN} of [a-z0-9._/-]"),
        ))
    }
}

fn check_fields(kind: &str, content: &[u8], ttl: Duration) -> Result<()> {
    check_kind(kind)?;
    if content.len() > MAX_CONTENT_LEN {
        return Err(Error::TooLarge {
            what: "envelope content",
            len: content.len() as u64,
            max: MAX_CONTENT_LEN as u64,
        });
    }
    if !ttl.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(malformed(
            "envelope",
            "ttl must be a whole number of milliseconds",
        ));
    }
    if ttl > MAX_TTL {
        return Err(malformed(
            "envelope",
            format!("ttl {ttl:?} above the maximum {MAX_TTL:?}"),
        ));
    }
    Ok(())
}

impl Envelope {
    /// Builds and signs an envelope from `sender`.
    pub fn sign(
        sender: &Identity,
        id: MessageId,
        kind: &str,
        recipient: Did,
        timestamp: Timestamp,
        content: Vec<u8>,
        metadata: Metadata,
    ) -> Result<Self> {
        check_fields(kind, &content, metadata.ttl)?;
        let mut env = Self {
            id,
            kind: kind.to_owned(),
            sender: sender.did().clone(),
            recipient,
            timestamp,
            content,
            metadata,
            signature: Signature([0; 64]),
        };
        env.signature = sender.sign(&env.signing_bytes());
        Ok(env)
    }

    /// The canonical bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        Writer::new(DOMAIN)
            .fixed(self.id.as_bytes())
            .bytes(self.kind.as_bytes())
            .did(&self.sender)
            .did(&self.recipient)
            .u64(self.timestamp.0)
            .fixed(&[self.metadata.priority.code()])
            .u64(u64::try_from(self.metadata.ttl.as_millis()).unwrap_or(u64::MAX))
            .bytes(&self.content)
            .finish()
    }

    /// When the envelope stops being deliverable.
    pub fn expires_at(&self) -> Timestamp {
        self.timestamp.saturating_add(self.metadata.ttl)
    }

    /// Whether the envelope has expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.timestamp.is_expired(self.metadata.ttl, now)
    }

    /// Checks the signature against the sender's DID, the field limits, and that at `now` the
    /// envelope is neither expired nor dated more than [`MAX_CLOCK_SKEW`] in the future.
    pub fn verify(&self, now: Timestamp) -> Result<()> {
        check_fields(&self.kind, &self.content, self.metadata.ttl)?;
        self.sender
            .verifying_key()?
            .verify(&self.signing_bytes(), &self.signature)
            .map_err(|_| Error::BadSignature { what: "envelope" })?;
        if self.timestamp > now.saturating_add(MAX_CLOCK_SKEW) {
            return Err(Error::NotYetValid {
                what: "envelope",
                not_before: self.timestamp.0,
                now: now.0,
            });
        }
        if self.is_expired(now) {
            return Err(Error::Expired {
                what: "envelope",
                expired_at: self.expires_at().0,
                now: now.0,
            });
        }
        Ok(())
    }

    /// The wire encoding: the signing bytes followed by the signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.signing_bytes();
        out.extend_from_slice(&self.signature.0);
        out
    }

    /// Decodes [`Self::to_bytes`], enforcing every limit (does not verify the signature).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_CONTENT_LEN + 1024 {
            return Err(Error::TooLarge {
                what: "envelope",
                len: bytes.len() as u64,
                max: (MAX_CONTENT_LEN + 1024) as u64,
            });
        }
        let mut p = Parser::new("envelope", DOMAIN, bytes)?;
        let id = MessageId(p.fixed::<16>()?);
        let kind = p.string(MAX_KIND_LEN)?.to_owned();
        let sender = p.did()?;
        let recipient = p.did()?;
        let timestamp = Timestamp(p.u64()?);
        let priority = Priority::from_code(p.fixed::<1>()?[0])?;
        let ttl = Duration::from_millis(p.u64()?);
        let content = p.bytes(MAX_CONTENT_LEN)?.to_vec();
        let signature = p.signature()?;
        p.finish()?;
        check_fields(&kind, &content, ttl)?;
        Ok(Self {
            id,
            kind,
            sender,
            recipient,
            timestamp,
            content,
            metadata: Metadata { priority, ttl },
            signature,
        })
    }
}
