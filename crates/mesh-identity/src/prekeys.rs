//! Binding Double Ratchet keys to an identity: a bundle of an account's X25519 identity key
//! and one-time prekeys, signed by the owner's Ed25519 key. A peer checks the bundle before
//! opening a session (`mesh_crypto::ratchet`), so a session is end-to-end with the DID, not
//! with whoever relayed the keys.

use mesh_crypto::ed25519::Signature;
use mesh_crypto::x25519::X25519Public;
use mesh_types::Timestamp;

use crate::canon::{Parser, Writer};
use crate::did::Did;
use crate::error::{Error, Result};
use crate::identity::Identity;

const DOMAIN: &str = "agentmesh/prekeys/v1";
/// The most prekeys one bundle carries.
pub const MAX_PREKEYS: usize = 100;

/// A signed prekey bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPrekeys {
    /// The owner.
    pub owner: Did,
    /// The ratchet account's identity key.
    pub identity_key: X25519Public,
    /// One-time prekeys (each usable for one session).
    pub prekeys: Vec<X25519Public>,
    /// When the bundle was made.
    pub timestamp: Timestamp,
    /// The owner's signature.
    pub signature: Signature,
}

impl SignedPrekeys {
    /// Signs a bundle as `owner`.
    pub fn sign(
        owner: &Identity,
        identity_key: X25519Public,
        prekeys: Vec<X25519Public>,
        timestamp: Timestamp,
    ) -> Result<Self> {
        if prekeys.len() > MAX_PREKEYS {
            return Err(Error::TooLarge {
                what: "prekey bundle",
                len: prekeys.len() as u64,
                max: MAX_PREKEYS as u64,
            });
        }
        let mut b = Self {
            owner: owner.did().clone(),
            identity_key,
            prekeys,
            timestamp,
            signature: Signature([0; 64]),
        };
        b.signature = owner.sign(&b.body());
        Ok(b)
    }

    fn body(&self) -> Vec<u8> {
        let mut w = Writer::new(DOMAIN);
        w.did(&self.owner)
            .fixed(&self.identity_key.0)
            .u64(self.prekeys.len() as u64);
        for k in &self.prekeys {
            w.fixed(&k.0);
        }
        w.u64(self.timestamp.0).finish()
    }

    /// Checks the owner's signature.
    pub fn verify(&self) -> Result<()> {
        self.owner
            .verifying_key()?
            .verify(&self.body(), &self.signature)
            .map_err(|_| Error::BadSignature {
                what: "prekey bundle",
            })
    }

    /// The encoding: body then signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature.0);
        out
    }

    /// Decodes [`Self::to_bytes`] (does not verify).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut p = Parser::new("prekey bundle", DOMAIN, bytes)?;
        let owner = p.did()?;
        let identity_key = X25519Public(p.fixed::<32>()?);
        let n = p.u64()?;
        if n > MAX_PREKEYS as u64 {
            return Err(Error::TooLarge {
                what: "prekey bundle",
                len: n,
                max: MAX_PREKEYS as u64,
            });
        }
        let mut prekeys = Vec::with_capacity(n as usize);
        for _ in 0..n {
            prekeys.push(X25519Public(p.fixed::<32>()?));
        }
        let timestamp = Timestamp(p.u64()?);
        let signature = p.signature()?;
        p.finish()?;
        Ok(Self {
            owner,
            identity_key,
            prekeys,
            timestamp,
            signature,
        })
    }
}
