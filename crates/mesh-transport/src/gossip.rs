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
//!
//! A node publishing quickly packs the messages it publishes on one topic within a short
//! linger (see [`crate::Config::gossip_linger`]) into one envelope: one signature, one
//! gossipsub message and one content id for the lot, so the per-message costs of signing,
//! verifying, encoding, forwarding and duplicate tracking are paid once per batch. Receivers
//! hand the application each message separately, in publishing order.
//!
//! ```text
//! envelope: version (2) | author Ed25519 key (32) | sequence (u64 LE) | signature (64) | batch
//! batch:    (varint length | message)+            at most MAX_BATCH_ITEMS messages
//! signed:   "agentmesh/gossip/v2" | topic length (u8) | topic | key | sequence | batch
//! ```

use libp2p::{PeerId, identity};
use mesh_crypto::ed25519::{BatchItem, Signature, VerifyingKey, verify_batch};

const VERSION: u8 = 2;
/// Most messages in one envelope.
pub(crate) const MAX_BATCH_ITEMS: usize = 1024;
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
    out.extend_from_slice(b"agentmesh/gossip/v2");
    out.push(topic.len() as u8);
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Messages waiting to be sealed into one envelope.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    body: Vec<u8>,
    count: usize,
}

impl Batch {
    /// Whether `len` more bytes of message fit within `max` bytes of batch (a first message
    /// always fits: the caller bounds single messages).
    pub(crate) fn fits(&self, len: usize, max: usize) -> bool {
        self.count == 0
            || (self.count < MAX_BATCH_ITEMS
                && self.body.len() + len + mesh_types::wire::MAX_VARINT_LEN <= max)
    }

    pub(crate) fn push(&mut self, message: &[u8]) {
        mesh_types::wire::put_len_prefixed(&mut self.body, message);
        self.count += 1;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    pub(crate) fn body(&self) -> &[u8] {
        &self.body
    }
}

/// Wraps `payload` (a [`Batch`] body) for `topic`, signed by `keypair`.
pub(crate) fn seal(
    keypair: &identity::ed25519::Keypair,
    topic: &str,
    seq: u64,
    payload: &[u8],
) -> Vec<u8> {
    let key = keypair.public().to_bytes();
    let sig = keypair.sign(&signed_bytes(topic, &key, seq, payload));
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(VERSION);
    out.extend_from_slice(&key);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&sig);
    out.extend_from_slice(payload);
    out
}

/// An envelope taken apart, not yet verified.
pub(crate) struct Opened {
    key: VerifyingKey,
    signed: Vec<u8>,
    signature: Signature,
    payload: Vec<u8>,
    /// Where each message lies in `payload`.
    items: Vec<std::ops::Range<usize>>,
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
        let items = split(&payload)?;
        Some(Self {
            key: keys.get(&key_bytes)?,
            signed: signed_bytes(topic, &key_bytes, seq, &payload),
            signature,
            payload,
            items,
        })
    }

    /// How many messages the envelope carries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The messages, in publishing order.
    pub(crate) fn into_messages(self) -> impl Iterator<Item = Vec<u8>> {
        let payload = self.payload;
        self.items.into_iter().map(move |r| payload[r].to_vec())
    }

    /// The author's peer id.
    pub(crate) fn author(&self) -> Option<PeerId> {
        let pk = identity::ed25519::PublicKey::try_from_bytes(self.key.as_bytes()).ok()?;
        Some(identity::PublicKey::from(pk).to_peer_id())
    }
}

/// The messages of a batch body; `None` unless it holds 1 to `MAX_BATCH_ITEMS` well-formed
/// messages and nothing else.
fn split(body: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
    let mut reader = mesh_types::wire::Reader::new(body);
    let mut items = Vec::new();
    while reader.remaining() > 0 {
        if items.len() == MAX_BATCH_ITEMS {
            return None;
        }
        let len = reader.varint_len("gossip message", body.len()).ok()?;
        let start = reader.position();
        reader.bytes(len).ok()?;
        items.push(start..start + len);
    }
    (!items.is_empty()).then_some(items)
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
        let kp = crate::keypair_from_seed(&[5; 32])
            .unwrap()
            .try_into_ed25519()
            .unwrap();
        let mut batch = Batch::default();
        batch.push(b"hello");
        let sealed = seal(&kp, "t", 9, batch.body());
        let keys = &mut KeyCache::default();
        let o = Opened::parse("t", &sealed, keys).unwrap();
        assert_eq!(
            o.author(),
            Some(identity::PublicKey::from(kp.public()).to_peer_id())
        );
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
        assert_eq!(
            o.into_messages().collect::<Vec<_>>(),
            vec![b"hello".to_vec()]
        );
        assert!(Opened::parse("t", &sealed[..HEADER - 1], keys).is_none());
        let mut bad_version = sealed;
        bad_version[0] = 1;
        assert!(Opened::parse("t", &bad_version, keys).is_none());
    }

    #[test]
    fn batches_keep_order_and_bounds() {
        let kp = crate::keypair_from_seed(&[6; 32])
            .unwrap()
            .try_into_ed25519()
            .unwrap();
        let mut batch = Batch::default();
        let messages: Vec<Vec<u8>> = (0..300u16)
            .map(|i| vec![i as u8; usize::from(i % 7)])
            .collect();
        for m in &messages {
            assert!(batch.fits(m.len(), 1 << 20));
            batch.push(m);
        }
        assert_eq!(batch.len(), 300);
        assert!(
            !batch.fits(1 << 20, 1 << 20),
            "a full batch takes no more bytes"
        );
        let sealed = seal(&kp, "t", 1, batch.body());
        let o = Opened::parse("t", &sealed, &mut KeyCache::default()).unwrap();
        assert_eq!(o.len(), 300);
        assert_eq!(o.into_messages().collect::<Vec<_>>(), messages);

        let mut full = Batch::default();
        while full.fits(0, usize::MAX) {
            full.push(b"");
        }
        assert_eq!(full.len(), MAX_BATCH_ITEMS);
    }

    #[test]
    fn malformed_batches_are_refused() {
        assert!(split(b"").is_none(), "no message");
        assert!(split(&[5, 1, 2]).is_none(), "truncated message");
        assert!(split(&[0x80]).is_none(), "truncated length");
        assert!(split(&[0x80, 0x00]).is_none(), "non-canonical length");
        assert!(
            split(&vec![0; MAX_BATCH_ITEMS + 1]).is_none(),
            "too many messages"
        );
        assert_eq!(
            split(&vec![0; MAX_BATCH_ITEMS]).map(|i| i.len()),
            Some(MAX_BATCH_ITEMS)
        );
        let kp = crate::keypair_from_seed(&[7; 32])
            .unwrap()
            .try_into_ed25519()
            .unwrap();
        let sealed = seal(&kp, "t", 1, &[3, 1, 2]);
        assert!(Opened::parse("t", &sealed, &mut KeyCache::default()).is_none());
    }
}
