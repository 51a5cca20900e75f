//! End-to-end sessions with forward secrecy and post-compromise security: the Double Ratchet,
//! as vodozemac's audited Olm implementation.
//!
//! Olm is the Signal Double Ratchet with a triple Diffie-Hellman (3DH) start, as deployed in
//! Matrix. Each party has a [`RatchetAccount`]: an X25519 identity key plus one-time prekeys
//! it publishes. To open a session, Alice takes Bob's identity key and one of his prekeys;
//! her first messages are prekey messages from which Bob creates the matching session.
//!
//! Properties the tests check: every message decrypts exactly once; messages may arrive in
//! any order within a chain as long as no more than [`MAX_SKIPPED_KEYS`] keys are held back
//! and no message is more than [`MAX_MESSAGE_GAP`] ahead; a replayed message fails with
//! [`Error::Replay`]; a tampered message fails to authenticate.
//!
//! Binding to agentmesh identities is the caller's part: `mesh-identity` signs an account's
//! identity key and prekeys with the owner's Ed25519 key, and a peer checks that signature
//! before opening a session.
//!
//! The Olm version is 1 (AES-256-CBC, HMAC-SHA256 truncated to 8 bytes), the version deployed
//! and audited; vodozemac's version 2 is still marked experimental.

use vodozemac::Curve25519PublicKey;
use vodozemac::olm::{
    Account, AccountPickle, DecryptionError, OlmMessage, Session, SessionConfig, SessionPickle,
};

use crate::error::{Error, Result};
use crate::x25519::X25519Public;

/// The most plaintext one message may carry (1 MiB).
pub const MAX_PLAINTEXT_LEN: usize = 1024 * 1024;
/// The most encoded bytes one message may take.
pub const MAX_MESSAGE_LEN: usize = MAX_PLAINTEXT_LEN + 1024;
/// Message keys held for messages that have not arrived yet, per receiving chain.
pub const MAX_SKIPPED_KEYS: usize = 40;
/// How far ahead of the next expected message a message may be.
pub const MAX_MESSAGE_GAP: u64 = 2000;

const PREKEY: u8 = 0;
const NORMAL: u8 = 1;

fn x(key: Curve25519PublicKey) -> X25519Public {
    X25519Public(key.to_bytes())
}

fn c(key: &X25519Public) -> Curve25519PublicKey {
    Curve25519PublicKey::from_bytes(key.0)
}

/// A party's long-lived ratchet state: identity key and unused prekeys.
pub struct RatchetAccount {
    account: Account,
}

impl std::fmt::Debug for RatchetAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RatchetAccount({:?})", self.identity_key())
    }
}

impl RatchetAccount {
    /// A fresh account with random keys.
    pub fn new() -> Self {
        Self {
            account: Account::new(),
        }
    }

    /// The account's X25519 identity key.
    pub fn identity_key(&self) -> X25519Public {
        x(self.account.curve25519_key())
    }

    /// Generates up to `count` new one-time prekeys and returns every unpublished one.
    pub fn generate_prekeys(&mut self, count: usize) -> Vec<X25519Public> {
        self.account.generate_one_time_keys(count);
        let mut keys: Vec<X25519Public> =
            self.account.one_time_keys().into_values().map(x).collect();
        keys.sort_by_key(|k| k.0);
        keys
    }

    /// Marks the generated prekeys as published (they stop being returned by
    /// [`Self::generate_prekeys`] but remain usable until consumed).
    pub fn mark_prekeys_published(&mut self) {
        self.account.mark_keys_as_published();
    }

    /// A fallback prekey, used when a peer finds no one-time prekey left.
    pub fn generate_fallback_key(&mut self) -> Option<X25519Public> {
        self.account.generate_fallback_key();
        self.account.fallback_key().into_values().next().map(x)
    }

    /// Opens a session to the owner of `their_identity` using one of their prekeys.
    pub fn open_session(
        &self,
        their_identity: &X25519Public,
        their_prekey: &X25519Public,
    ) -> Result<RatchetSession> {
        let session = self
            .account
            .create_outbound_session(
                SessionConfig::version_1(),
                c(their_identity),
                c(their_prekey),
            )
            .map_err(|e| Error::Session {
                detail: e.to_string(),
            })?;
        Ok(RatchetSession { session })
    }

    /// Accepts a session from the first message a peer sent us; returns the session and that
    /// message's plaintext. The prekey it used is consumed.
    pub fn accept_session(
        &mut self,
        their_identity: &X25519Public,
        first: &RatchetMessage,
    ) -> Result<(RatchetSession, Vec<u8>)> {
        let OlmMessage::PreKey(prekey) = &first.0 else {
            return Err(Error::Session {
                detail: "the first message of a session must be a prekey message".into(),
            });
        };
        let created = self
            .account
            .create_inbound_session(SessionConfig::version_1(), c(their_identity), prekey)
            .map_err(|e| Error::Session {
                detail: e.to_string(),
            })?;
        Ok((
            RatchetSession {
                session: created.session,
            },
            created.plaintext,
        ))
    }

    /// The account encrypted under `key` (vodozemac's pickle format), to persist it.
    pub fn to_encrypted(&self, key: &[u8; 32]) -> String {
        self.account.pickle().encrypt(key)
    }

    /// Restores an account from [`Self::to_encrypted`].
    pub fn from_encrypted(sealed: &str, key: &[u8; 32]) -> Result<Self> {
        let pickle =
            AccountPickle::from_encrypted(sealed, key).map_err(|_| Error::WrongPassphrase)?;
        Ok(Self {
            account: Account::from_pickle(pickle),
        })
    }
}

impl Default for RatchetAccount {
    fn default() -> Self {
        Self::new()
    }
}

/// One direction-agnostic end-to-end session between two accounts.
pub struct RatchetSession {
    session: Session,
}

impl std::fmt::Debug for RatchetSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RatchetSession({})", self.session.session_id())
    }
}

impl RatchetSession {
    /// A stable id both ends share.
    pub fn id(&self) -> String {
        self.session.session_id()
    }

    /// Encrypts one message.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<RatchetMessage> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(Error::TooLarge {
                what: "ratchet plaintext",
                len: plaintext.len() as u64,
                max: MAX_PLAINTEXT_LEN as u64,
            });
        }
        self.session
            .encrypt(plaintext)
            .map(RatchetMessage)
            .map_err(|e| Error::Session {
                detail: e.to_string(),
            })
    }

    /// Decrypts one message. A replay, or a message whose key was discarded, fails with
    /// [`Error::Replay`]; a forged or damaged one with [`Error::Decrypt`].
    pub fn decrypt(&mut self, message: &RatchetMessage) -> Result<Vec<u8>> {
        self.session.decrypt(&message.0).map_err(|e| match e {
            DecryptionError::MissingMessageKey(index) => Error::Replay { index },
            DecryptionError::TooBigMessageGap(gap, max) => Error::Session {
                detail: format!("message is {gap} ahead of the chain, more than {max}"),
            },
            DecryptionError::InvalidMAC(_)
            | DecryptionError::InvalidMACLength(..)
            | DecryptionError::InvalidPadding(_) => Error::Decrypt {
                what: "ratchet message",
            },
            other => Error::Session {
                detail: other.to_string(),
            },
        })
    }

    /// The session encrypted under `key`, to persist it.
    pub fn to_encrypted(&self, key: &[u8; 32]) -> String {
        self.session.pickle().encrypt(key)
    }

    /// Restores a session from [`Self::to_encrypted`].
    pub fn from_encrypted(sealed: &str, key: &[u8; 32]) -> Result<Self> {
        let pickle =
            SessionPickle::from_encrypted(sealed, key).map_err(|_| Error::WrongPassphrase)?;
        Ok(Self {
            session: Session::from_pickle(pickle),
        })
    }
}

/// An encrypted ratchet message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RatchetMessage(OlmMessage);

impl RatchetMessage {
    /// Whether this is a prekey message (one that can start a session).
    pub fn is_prekey(&self) -> bool {
        matches!(self.0, OlmMessage::PreKey(_))
    }

    /// Encoding: one type byte (0 prekey, 1 normal), then the Olm message.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (kind, body) = self.0.to_parts();
        let mut out = Vec::with_capacity(1 + body.len());
        out.push(if kind == 0 { PREKEY } else { NORMAL });
        out.extend_from_slice(&body);
        out
    }

    /// Decodes [`Self::to_bytes`], rejecting oversized and malformed input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(Error::TooLarge {
                what: "ratchet message",
                len: bytes.len() as u64,
                max: MAX_MESSAGE_LEN as u64,
            });
        }
        let Some((&kind, body)) = bytes.split_first() else {
            return Err(Error::Malformed {
                what: "ratchet message",
                detail: "empty".into(),
            });
        };
        if kind != PREKEY && kind != NORMAL {
            return Err(Error::Malformed {
                what: "ratchet message",
                detail: format!("unknown type {kind}"),
            });
        }
        OlmMessage::from_parts(usize::from(kind), body)
            .map(Self)
            .map_err(|e| Error::Malformed {
                what: "ratchet message",
                detail: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn pair() -> (RatchetSession, RatchetSession) {
        let alice = RatchetAccount::new();
        let mut bob = RatchetAccount::new();
        let prekey = bob.generate_prekeys(1)[0];
        bob.mark_prekeys_published();
        let mut a = alice.open_session(&bob.identity_key(), &prekey).unwrap();
        let first = a.encrypt(b"hi bob").unwrap();
        assert!(first.is_prekey());
        let (b, pt) = bob.accept_session(&alice.identity_key(), &first).unwrap();
        assert_eq!(pt, b"hi bob");
        assert_eq!(a.id(), b.id());
        // The prekey is consumed: the same first message cannot open a second session.
        assert!(bob.accept_session(&alice.identity_key(), &first).is_err());
        (a, b)
    }

    #[test]
    fn conversation_replay_and_tamper() {
        let (mut a, mut b) = pair();
        let reply = b.encrypt(b"hi alice").unwrap();
        assert_eq!(a.decrypt(&reply).unwrap(), b"hi alice");
        assert!(matches!(a.decrypt(&reply), Err(Error::Replay { .. })));
        let m = a.encrypt(b"after the ratchet step").unwrap();
        assert!(!m.is_prekey(), "after a reply Alice sends normal messages");
        let mut bytes = m.to_bytes();
        let n = bytes.len();
        bytes[n - 12] ^= 1;
        let tampered = RatchetMessage::from_bytes(&bytes).unwrap();
        assert!(matches!(b.decrypt(&tampered), Err(Error::Decrypt { .. })));
        assert_eq!(
            b.decrypt(&RatchetMessage::from_bytes(&m.to_bytes()).unwrap())
                .unwrap(),
            b"after the ratchet step"
        );
    }

    #[test]
    fn pickles_restore_state_and_need_the_key() {
        let (mut a, mut b) = pair();
        let sealed = b.to_encrypted(&[5; 32]);
        assert!(matches!(
            RatchetSession::from_encrypted(&sealed, &[6; 32]),
            Err(Error::WrongPassphrase)
        ));
        let mut b2 = RatchetSession::from_encrypted(&sealed, &[5; 32]).unwrap();
        let m = a.encrypt(b"x").unwrap();
        assert_eq!(b2.decrypt(&m).unwrap(), b"x");
        assert_eq!(
            b.decrypt(&m).unwrap(),
            b"x",
            "the original copy is independent"
        );
    }

    #[test]
    fn malformed_messages_are_rejected() {
        assert!(RatchetMessage::from_bytes(&[]).is_err());
        assert!(RatchetMessage::from_bytes(&[7, 1, 2]).is_err());
        assert!(RatchetMessage::from_bytes(&[1, 0xff, 0xff]).is_err());
        assert!(RatchetMessage::from_bytes(&vec![1; MAX_MESSAGE_LEN + 1]).is_err());
    }
}
