//! Signed gossip envelopes, verified once per message and in batches.
//!
//! gossipsub's own signing verifies every copy a node receives, inside the stream decoder,
//! before duplicates are dropped: in a well-meshed topic a node verifies each message several
//! times, one signature at a time. Here gossipsub runs anonymous (no author, sequence number
//! or signature of its own) with content-addressed message ids, so duplicates are dropped
//! first; the payload travels in our envelope, whose signature the node checks once, batched
//! with the other messages that arrived together, before telling gossipsub to accept
//! (forward) or reject (and penalise the peer that sent it).
//!
//! ```text
//! envelope: version (1) | author Ed25519 key (32) | sequence (u64 LE) | signature (64) | payload
//! signed:   "agentmesh/gossip/v1" | topic length (u8) | topic | key | sequence | payload
//! ```

use libp2p::{PeerId, identity};
use mesh_crypto::ed25519::{BatchItem, Signature, VerifyingKey, verify_batch};

const VERSION: u8 = 1;
/// Authors' keys kept decompressed (a decompression is a field square root).
const KEY_CACHE: usize = 4096;

/// Decompressed author keys, bounded (emptied when full).
#[derive(Default)]
pub(crate) struct KeyCache(std::collections::HashMap<[u8; 32], VerifyingKey>);

impl KeyCache {
    fn get(&mut self, bytes: &[u8; 32]) -> Option<VerifyingKey> {
        if let Some(k) = self.0.get(bytes) {
            return Some(*k);
        }
        let k = VerifyingKey::from_bytes(bytes).ok()?;
        if self.0.len() >= KEY_CACHE {
            self.0.clear();
        }
        self.0.insert(*bytes, k);
        Some(k)
    }
}
const HEADER: usize = 1 + 32 + 8 + 64;

fn signed_bytes(topic: &str, key: &[u8; 32], seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + 1 + topic.len() + 40 + payload.len());
    out.extend_from_slice(b"agentmesh/gossip/v1");
    out.push(topic.len() as u8);
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Wraps `payload` for `topic`, signed by `keypair` (an Ed25519 key).
pub(crate) fn seal(
    keypair: &identity::Keypair,
    topic: &str,
    seq: u64,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let key = keypair.public().try_into_ed25519().ok()?.to_bytes();
    let sig = keypair
        .sign(&signed_bytes(topic, &key, seq, payload))
        .ok()?;
    let sig: [u8; 64] = sig.try_into().ok()?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(VERSION);
    out.extend_from_slice(&key);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&sig);
    out.extend_from_slice(payload);
    Some(out)
}

/// An envelope taken apart, not yet verified.
pub(crate) struct Opened {
    key: VerifyingKey,
    signed: Vec<u8>,
    signature: Signature,
    pub(crate) payload: Vec<u8>,
}

impl Opened {
    /// Parses an envelope; `None` if malformed (including a key that is not a valid point).
    pub(crate) fn parse(topic: &str, data: &[u8], keys: &mut KeyCache) -> Option<Self> {
        if data.len() < HEADER || data[0] != VERSION {
            return None;
        }
        let key_bytes: [u8; 32] = data[1..33].try_into().ok()?;
        let seq = u64::from_le_bytes(data[33..41].try_into().ok()?);
        let signature = Signature(data[41..105].try_into().ok()?);
        let payload = data[HEADER..].to_vec();
        Some(Self {
            key: keys.get(&key_bytes)?,
            signed: signed_bytes(topic, &key_bytes, seq, &payload),
            signature,
            payload,
        })
    }

    /// The author's peer id.
    pub(crate) fn author(&self) -> Option<PeerId> {
        let pk = identity::ed25519::PublicKey::try_from_bytes(self.key.as_bytes()).ok()?;
        Some(identity::PublicKey::from(pk).to_peer_id())
    }
}

/// Checks every envelope's signature (one multi-scalar multiplication when all are good);
/// returns, per envelope, whether it verified.
pub(crate) fn verify_all(items: &[&Opened]) -> Vec<bool> {
    let batch: Vec<BatchItem<'_>> = items
        .iter()
        .map(|o| BatchItem {
            key: &o.key,
            message: &o.signed,
            signature: &o.signature,
        })
        .collect();
    if verify_batch(&batch).is_ok() {
        return vec![true; items.len()];
    }
    items
        .iter()
        .map(|o| o.key.verify(&o.signed, &o.signature).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_verify_and_reject_tampering() {
        let kp = crate::keypair_from_seed(&[5; 32]).unwrap();
        let sealed = seal(&kp, "t", 9, b"hello").unwrap();
        let keys = &mut KeyCache::default();
        let o = Opened::parse("t", &sealed, keys).unwrap();
        assert_eq!(o.payload, b"hello");
        assert_eq!(o.author(), Some(kp.public().to_peer_id()));
        // Another topic, a flipped payload bit, a short envelope.
        let other_topic = Opened::parse("u", &sealed, keys).unwrap();
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let flipped = Opened::parse("t", &flipped, keys).unwrap();
        assert_eq!(
            verify_all(&[&o, &other_topic, &flipped]),
            vec![true, false, false]
        );
        assert!(Opened::parse("t", &sealed[..HEADER - 1], keys).is_none());
        let mut bad_version = sealed;
        bad_version[0] = 2;
        assert!(Opened::parse("t", &bad_version, keys).is_none());
    }
}
