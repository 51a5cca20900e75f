//! `did:key` identifiers for Ed25519 keys, and their DID documents.
//!
//! A DID is `did:key:z` + base58btc(multicodec `ed25519-pub` (0xed 0x01) ‖ 32-byte key),
//! as the W3C CCG did:key method specifies. The document derives an X25519 key-agreement key
//! from the same key (multicodec `x25519-pub`, 0xec 0x01).

use std::fmt;
use std::str::FromStr;

use mesh_crypto::ed25519::VerifyingKey;
use mesh_crypto::x25519::X25519Public;
use mesh_types::NodeId;
use serde_json::{Value, json};

use crate::error::{Error, Result};

const PREFIX: &str = "did:key:";
const ED25519_PUB: [u8; 2] = [0xed, 0x01];
const X25519_PUB: [u8; 2] = [0xec, 0x01];
/// The length of every Ed25519 `did:key` string.
pub const DID_LEN: usize = 56;

/// A validated Ed25519 `did:key`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Did {
    text: String,
    key: [u8; 32],
}

fn multibase(codec: [u8; 2], key: &[u8; 32]) -> String {
    let mut bytes = Vec::with_capacity(34);
    bytes.extend_from_slice(&codec);
    bytes.extend_from_slice(key);
    format!("z{}", bs58::encode(bytes).into_string())
}

impl Did {
    /// The DID of `key`.
    pub fn from_key(key: &VerifyingKey) -> Self {
        let key = key.to_bytes();
        Self {
            text: format!("{PREFIX}{}", multibase(ED25519_PUB, &key)),
            key,
        }
    }

    /// Parses and validates a `did:key` string (an Ed25519 key that is a valid, non-weak
    /// curve point).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |detail: &str| Error::InvalidDid {
            did: text.chars().take(80).collect(),
            detail: detail.to_owned(),
        };
        if text.len() > 128 {
            return Err(bad("longer than any did:key"));
        }
        let rest = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("does not start with did:key:"))?;
        let encoded = rest
            .strip_prefix('z')
            .ok_or_else(|| bad("the key is not multibase base58btc (must start with 'z')"))?;
        let bytes = bs58::decode(encoded)
            .into_vec()
            .map_err(|_| bad("the key is not valid base58"))?;
        let Some((codec, key)) = bytes.split_first_chunk::<2>() else {
            return Err(bad("the key is too short"));
        };
        if *codec != ED25519_PUB {
            return Err(bad("not an Ed25519 key (multicodec 0xed01)"));
        }
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| bad("the Ed25519 key is not 32 bytes"))?;
        VerifyingKey::from_bytes(&key).map_err(|e| bad(&e.to_string()))?;
        let did = Self {
            text: text.to_owned(),
            key,
        };
        // Only the canonical encoding is accepted, so a DID has exactly one spelling.
        if Self::from_key(&did.verifying_key()?).text != did.text {
            return Err(bad("not the canonical encoding of its key"));
        }
        Ok(did)
    }

    /// The DID string.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The multibase key part (`z6Mk…`), also the fragment of its verification method.
    pub fn fingerprint(&self) -> &str {
        &self.text[PREFIX.len()..]
    }

    /// The Ed25519 key.
    pub fn verifying_key(&self) -> Result<VerifyingKey> {
        Ok(VerifyingKey::from_bytes(&self.key)?)
    }

    /// The key as a [`NodeId`].
    pub fn node_id(&self) -> NodeId {
        NodeId(self.key)
    }

    /// The X25519 key-agreement key derived from the Ed25519 key.
    pub fn key_agreement_key(&self) -> Result<X25519Public> {
        Ok(self.verifying_key()?.to_x25519())
    }

    /// The multibase form of the key-agreement key (`z6LS…`).
    pub fn key_agreement_fingerprint(&self) -> Result<String> {
        Ok(multibase(X25519_PUB, &self.key_agreement_key()?.0))
    }

    /// The DID document, as the did:key method resolves it.
    pub fn document(&self) -> Result<Value> {
        let did = self.as_str();
        let vm = format!("{did}#{}", self.fingerprint());
        let ka_fp = self.key_agreement_fingerprint()?;
        Ok(json!({
            "@context": [
                "https://www.w3.org/ns/did/v1",
                "https://w3id.org/security/suites/ed25519-2020/v1",
                "https://w3id.org/security/suites/x25519-2020/v1"
            ],
            "id": did,
            "verificationMethod": [{
                "id": vm,
                "type": "Ed25519VerificationKey2020",
                "controller": did,
                "publicKeyMultibase": self.fingerprint(),
            }],
            "authentication": [vm],
            "assertionMethod": [vm],
            "capabilityDelegation": [vm],
            "capabilityInvocation": [vm],
            "keyAgreement": [{
                "id": format!("{did}#{ka_fp}"),
                "type": "X25519KeyAgreementKey2020",
                "controller": did,
                "publicKeyMultibase": ka_fp,
            }],
        }))
    }
}

impl fmt::Display for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Did({}…)", &self.text[..self.text.len().min(20)])
    }
}

impl FromStr for Did {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl serde::Serialize for Did {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Did {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The libp2p PeerId bytes of an Ed25519 key: the identity multihash of the key's protobuf
/// encoding (`0x00 0x24 | 0x08 0x01 0x12 0x20 | key`), as libp2p derives it for keys whose
/// encoding is at most 42 bytes.
pub fn peer_id_bytes(key: &VerifyingKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(38);
    out.extend_from_slice(&[0x00, 0x24, 0x08, 0x01, 0x12, 0x20]);
    out.extend_from_slice(key.as_bytes());
    out
}

/// The libp2p PeerId of an Ed25519 key in its usual text form (base58btc, `12D3KooW…`).
pub fn peer_id_string(key: &VerifyingKey) -> String {
    bs58::encode(peer_id_bytes(key)).into_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_crypto::ed25519::SigningKey;

    #[test]
    fn parse_rejects_bad_dids() {
        let did = Did::from_key(&SigningKey::from_seed(&[1; 32]).verifying_key());
        assert_eq!(did.as_str().len(), DID_LEN);
        assert_eq!(Did::parse(did.as_str()).unwrap(), did);
        for bad in [
            "",
            "did:web:example.com",
            "did:key:",
            "did:key:x6Mk",
            "did:key:z0OIl",
            "did:key:z6LSj72tK8brWgZja8NLRwPigth2T9QRiG1uH9oKZuKjdh9p", // an X25519 key
            "did:key:z6Mk",
        ] {
            assert!(Did::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}{}", did.as_str(), "1".repeat(100));
        assert!(Did::parse(&long).is_err());
        // A weak (small-order) key inside a well-formed did:key.
        let weak = format!("{PREFIX}{}", multibase(ED25519_PUB, &[0; 32]));
        assert!(Did::parse(&weak).is_err());
    }
}
