//! SLIP-10 hierarchical derivation of Ed25519 keys (hardened indices only, as SLIP-10
//! requires for Ed25519), for per-purpose keys derived from one seed.

use zeroize::Zeroizing;

use crate::ed25519::SigningKey;
use crate::error::{Error, Result};
use crate::kdf::hmac_sha512;

/// Offset of hardened indices.
pub const HARDENED: u32 = 0x8000_0000;
/// The deepest path accepted.
pub const MAX_DEPTH: usize = 32;

/// A node of the derivation tree: a private key and its chain code.
#[derive(Clone)]
pub struct ExtendedKey {
    key: Zeroizing<[u8; 32]>,
    chain_code: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ExtendedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ExtendedKey(public {:?})",
            self.signing_key().verifying_key()
        )
    }
}

impl ExtendedKey {
    /// The master key of `seed` (16 to 64 bytes).
    pub fn master(seed: &[u8]) -> Result<Self> {
        if !(16..=64).contains(&seed.len()) {
            return Err(Error::Derivation {
                detail: format!("seed of {} bytes; use 16 to 64", seed.len()),
            });
        }
        let i = Zeroizing::new(hmac_sha512(b"ed25519 seed", &[seed]));
        Ok(Self::split(&i))
    }

    fn split(i: &[u8; 64]) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&i[..32]);
        let mut chain_code = Zeroizing::new([0u8; 32]);
        chain_code.copy_from_slice(&i[32..]);
        Self { key, chain_code }
    }

    /// The hardened child at `index` (which is hardened by adding [`HARDENED`] if needed).
    pub fn child(&self, index: u32) -> Self {
        let index = index | HARDENED;
        let i = Zeroizing::new(hmac_sha512(
            &self.chain_code[..],
            &[&[0u8], &self.key[..], &index.to_be_bytes()],
        ));
        Self::split(&i)
    }

    /// Derives along `path`, such as `m/44'/0'/1'` (every component must be hardened).
    pub fn derive(seed: &[u8], path: &str) -> Result<Self> {
        let mut parts = path.split('/');
        if parts.next() != Some("m") {
            return Err(Error::Derivation {
                detail: format!("path {path:?} must start with \"m\""),
            });
        }
        let mut key = Self::master(seed)?;
        for (depth, part) in parts.enumerate() {
            if depth >= MAX_DEPTH {
                return Err(Error::Derivation {
                    detail: format!("path deeper than {MAX_DEPTH}"),
                });
            }
            let Some(number) = part.strip_suffix('\'').or_else(|| part.strip_suffix('h')) else {
                return Err(Error::Derivation {
                    detail: format!(
                        "component {part:?}: Ed25519 supports only hardened indices (add ')"
                    ),
                });
            };
            let index: u32 = number
                .parse()
                .ok()
                .filter(|n| *n < HARDENED)
                .ok_or_else(|| Error::Derivation {
                    detail: format!("component {part:?} is not an index below 2^31"),
                })?;
            key = key.child(index);
        }
        Ok(key)
    }

    /// The private key bytes (an Ed25519 seed).
    pub fn private_key(&self) -> Zeroizing<[u8; 32]> {
        self.key.clone()
    }

    /// The chain code.
    pub fn chain_code(&self) -> [u8; 32] {
        *self.chain_code
    }

    /// The Ed25519 signing key of this node.
    pub fn signing_key(&self) -> SigningKey {
        SigningKey::from_seed(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_paths_and_seeds() {
        let seed = [1u8; 32];
        assert!(ExtendedKey::derive(&seed, "m/0").is_err());
        assert!(ExtendedKey::derive(&seed, "x/0'").is_err());
        assert!(ExtendedKey::derive(&seed, "m/2147483648'").is_err());
        assert!(ExtendedKey::derive(&seed, "m/a'").is_err());
        assert!(ExtendedKey::master(&[0; 15]).is_err());
        assert!(ExtendedKey::master(&[0; 65]).is_err());
        let deep = format!("m{}", "/1'".repeat(MAX_DEPTH + 1));
        assert!(ExtendedKey::derive(&seed, &deep).is_err());
        assert_eq!(
            ExtendedKey::derive(&seed, "m/1'/2h").unwrap().chain_code(),
            ExtendedKey::master(&seed)
                .unwrap()
                .child(1)
                .child(2)
                .chain_code()
        );
    }
}
