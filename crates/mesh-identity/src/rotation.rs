//! Key rotation records: a statement, signed by both the old and the new key, that the
//! holder of the old DID now uses the new one. Committed through consensus so every peer
//! learns it; [`verify_chain`] follows a chain of them from an original DID to the current one.

use mesh_crypto::ed25519::{Signature, SigningKey};
use mesh_types::Timestamp;

use crate::canon::{Parser, Writer};
use crate::did::Did;
use crate::error::{Error, Result, malformed};

const DOMAIN: &str = "agentmesh/key-rotation/v1";

/// A rotation from `old` to `new`, the `sequence`-th of its chain (starting at 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotation {
    /// The DID being retired.
    pub old: Did,
    /// The DID replacing it.
    pub new: Did,
    /// Position in the chain of rotations, from 1.
    pub sequence: u64,
    /// When the rotation was made.
    pub timestamp: Timestamp,
    /// Signature by the old key: authorises the change.
    pub old_signature: Signature,
    /// Signature by the new key: proves possession of it.
    pub new_signature: Signature,
}

impl KeyRotation {
    /// Makes a rotation from `old` to `new`.
    pub fn sign(old: &SigningKey, new: &SigningKey, sequence: u64, timestamp: Timestamp) -> Self {
        let old_did = Did::from_key(&old.verifying_key());
        let new_did = Did::from_key(&new.verifying_key());
        let body = body(&old_did, &new_did, sequence, timestamp);
        Self {
            old_signature: old.sign(&body),
            new_signature: new.sign(&body),
            old: old_did,
            new: new_did,
            sequence,
            timestamp,
        }
    }

    /// Checks both signatures.
    pub fn verify(&self) -> Result<()> {
        if self.old == self.new {
            return Err(malformed("key rotation", "old and new keys are the same"));
        }
        let body = body(&self.old, &self.new, self.sequence, self.timestamp);
        self.old
            .verifying_key()?
            .verify(&body, &self.old_signature)
            .map_err(|_| Error::BadSignature {
                what: "key rotation (old key)",
            })?;
        self.new
            .verifying_key()?
            .verify(&body, &self.new_signature)
            .map_err(|_| Error::BadSignature {
                what: "key rotation (new key)",
            })
    }

    /// The encoding: the signed body followed by the two signatures.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = body(&self.old, &self.new, self.sequence, self.timestamp);
        out.extend_from_slice(&self.old_signature.0);
        out.extend_from_slice(&self.new_signature.0);
        out
    }

    /// Decodes [`Self::to_bytes`] (does not verify).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut p = Parser::new("key rotation", DOMAIN, bytes)?;
        let old = p.did()?;
        let new = p.did()?;
        let sequence = p.u64()?;
        let timestamp = Timestamp(p.u64()?);
        let old_signature = p.signature()?;
        let new_signature = p.signature()?;
        p.finish()?;
        Ok(Self {
            old,
            new,
            sequence,
            timestamp,
            old_signature,
            new_signature,
        })
    }
}

fn body(old: &Did, new: &Did, sequence: u64, timestamp: Timestamp) -> Vec<u8> {
    Writer::new(DOMAIN)
        .did(old)
        .did(new)
        .u64(sequence)
        .u64(timestamp.0)
        .finish()
}

/// Follows `rotations` from `origin`: each must verify, continue from the previous DID, carry
/// the next sequence number and not go back in time. Returns the current DID.
pub fn verify_chain(origin: &Did, rotations: &[KeyRotation]) -> Result<Did> {
    let mut current = origin.clone();
    let mut last_time = Timestamp(0);
    let mut seen = std::collections::HashSet::from([origin.clone()]);
    for (i, r) in rotations.iter().enumerate() {
        r.verify()?;
        if r.old != current {
            return Err(malformed(
                "rotation chain",
                format!("rotation {} does not continue from {current}", i + 1),
            ));
        }
        if r.sequence != i as u64 + 1 {
            return Err(malformed(
                "rotation chain",
                format!("rotation {} has sequence {}", i + 1, r.sequence),
            ));
        }
        if r.timestamp < last_time {
            return Err(malformed(
                "rotation chain",
                format!("rotation {} goes back in time", i + 1),
            ));
        }
        if !seen.insert(r.new.clone()) {
            return Err(malformed(
                "rotation chain",
                format!("rotation {} returns to an earlier key", i + 1),
            ));
        }
        last_time = r.timestamp;
        current = r.new.clone();
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_of_rotations() {
        let keys: Vec<SigningKey> = (1..=4u8).map(|i| SigningKey::from_seed(&[i; 32])).collect();
        let origin = Did::from_key(&keys[0].verifying_key());
        let chain: Vec<KeyRotation> = (0..3)
            .map(|i| {
                KeyRotation::sign(
                    &keys[i],
                    &keys[i + 1],
                    i as u64 + 1,
                    Timestamp(100 * i as u64),
                )
            })
            .collect();
        let current = verify_chain(&origin, &chain).unwrap();
        assert_eq!(current, Did::from_key(&keys[3].verifying_key()));
        for r in &chain {
            assert_eq!(&KeyRotation::from_bytes(&r.to_bytes()).unwrap(), r);
        }
        // Out of order, a gap, or a forged link all fail.
        assert!(verify_chain(&origin, &[chain[1].clone()]).is_err());
        assert!(verify_chain(&origin, &[chain[0].clone(), chain[2].clone()]).is_err());
        let mut forged = chain[1].clone();
        forged.new = Did::from_key(&SigningKey::from_seed(&[9; 32]).verifying_key());
        assert!(matches!(forged.verify(), Err(Error::BadSignature { .. })));
        // Only the old key signed: missing proof of possession of the new key.
        let mut half = chain[0].clone();
        half.new_signature = half.old_signature;
        assert!(half.verify().is_err());
    }
}
