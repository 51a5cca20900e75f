//! Validators' two names: the consensus [`NodeId`] (an Ed25519 public key) and the libp2p
//! [`PeerId`] derived from the same key. Because the transport's node key *is* the validator's
//! Ed25519 key, a connection authenticated by Noise as `PeerId` proves the sender's `NodeId`.

use mesh_crypto::ed25519::VerifyingKey;
use mesh_transport::PeerId;
use mesh_types::NodeId;

use crate::error::{Error, Result};

/// How libp2p writes the PeerId of an Ed25519 key: the identity multihash (code 0x00, length
/// 0x24) of the key's protobuf encoding (field 1 = key type 1 (Ed25519), field 2 = 32 bytes).
const ED25519_PEER_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// The libp2p peer id of `node` (whose bytes must be an Ed25519 public key).
pub fn peer_id(node: &NodeId) -> Result<PeerId> {
    let key = VerifyingKey::from_bytes(node.as_bytes())
        .map_err(|e| Error::Config(format!("{} is not an Ed25519 key: {e}", node.short())))?;
    PeerId::from_bytes(&mesh_identity::did::peer_id_bytes(&key))
        .map_err(|e| Error::Config(format!("no peer id for {}: {e}", node.short())))
}

/// The node id inside `peer`, if it is the peer id of an Ed25519 key (other key types, whose
/// peer ids are hashes, name no node id).
pub fn node_id(peer: &PeerId) -> Option<NodeId> {
    let bytes = peer.to_bytes();
    bytes
        .strip_prefix(ED25519_PEER_PREFIX.as_slice())
        .and_then(NodeId::from_slice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_crypto::ed25519::SigningKey;

    #[test]
    fn node_ids_and_peer_ids_map_both_ways_as_libp2p_derives_them() {
        for seed in [[0u8; 32], [7; 32], [0xff; 32]] {
            let node = NodeId(SigningKey::from_seed(&seed).verifying_key().to_bytes());
            // libp2p's own derivation from the same seed (the transport's node key).
            let libp2p = mesh_transport::keypair_from_seed(&seed)
                .unwrap()
                .public()
                .to_peer_id();
            let peer = peer_id(&node).unwrap();
            assert_eq!(peer, libp2p);
            assert!(peer.to_string().starts_with("12D3KooW"));
            assert_eq!(node_id(&peer), Some(node));
        }
    }

    #[test]
    fn peer_ids_of_other_key_types_name_no_node() {
        // A sha2-256 multihash, as libp2p writes the peer ids of RSA keys.
        let mut bytes = vec![0x12, 0x20];
        bytes.extend_from_slice(&[5; 32]);
        let rsa_like = PeerId::from_bytes(&bytes).unwrap();
        assert_eq!(node_id(&rsa_like), None);
    }

    #[test]
    fn bytes_that_are_no_ed25519_key_have_no_peer_id() {
        // The identity point: a valid encoding, but of small order.
        let mut bad = [0u8; 32];
        bad[0] = 1;
        assert!(matches!(peer_id(&NodeId(bad)), Err(Error::Config(_))));
    }
}
