//! ChaCha20-Poly1305 authenticated encryption (RFC 8439), on `ring`.
//!
//! A key must never encrypt two messages under the same nonce. Callers either use a counter
//! nonce per key ([`nonce_from_counter`]) or a fresh random key per message.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Key length in bytes.
pub const KEY_LEN: usize = 32;
/// Nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// Authentication tag length in bytes.
pub const TAG_LEN: usize = 16;

/// A ChaCha20-Poly1305 key.
pub struct AeadKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(..)")
    }
}

/// A 12-byte nonce from a 64-bit counter (little-endian, zero-padded).
pub fn nonce_from_counter(counter: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

impl AeadKey {
    /// A key from 32 bytes.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        // ring rejects only wrong lengths, which the array type rules out.
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key)
            .unwrap_or_else(|_| unreachable!("a 32-byte ChaCha20-Poly1305 key is always valid"));
        Self {
            key: LessSafeKey::new(unbound),
        }
    }

    /// A fresh random key, with its bytes (to store or send sealed).
    pub fn generate() -> Result<(Self, Zeroizing<[u8; KEY_LEN]>)> {
        let bytes = Zeroizing::new(crate::random_array::<KEY_LEN>()?);
        Ok((Self::new(&bytes), bytes))
    }

    /// Encrypts `plaintext`; returns ciphertext followed by the 16-byte tag.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        self.seal_in_place(nonce, aad, &mut buf)?;
        Ok(buf)
    }

    /// Encrypts `buf` in place and appends the tag. Fails only for inputs above the
    /// algorithm's limit (256 GiB).
    pub fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .map_err(|_| Error::TooLarge {
                what: "AEAD plaintext",
                len: buf.len() as u64,
                max: 256 << 30,
            })
    }

    /// Decrypts ciphertext-with-tag; fails if the key, nonce, aad or data do not match.
    pub fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        let mut buf = sealed.to_vec();
        let len = self.open_in_place(nonce, aad, &mut buf)?.len();
        buf.truncate(len);
        Ok(buf)
    }

    /// Decrypts in place; returns the plaintext prefix of `buf`.
    pub fn open_in_place<'a>(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &'a mut [u8],
    ) -> Result<&'a mut [u8]> {
        if buf.len() < TAG_LEN {
            return Err(Error::Decrypt {
                what: "ciphertext shorter than its tag",
            });
        }
        self.key
            .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .map(|pt| &mut pt[..])
            .map_err(|_| Error::Decrypt { what: "ciphertext" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = AeadKey::new(&[7; 32]);
        let n = nonce_from_counter(1);
        let ct = key.seal(&n, b"aad", b"hello").unwrap();
        assert_eq!(ct.len(), 5 + TAG_LEN);
        assert_eq!(key.open(&n, b"aad", &ct).unwrap(), b"hello");
        assert!(key.open(&n, b"aaD", &ct).is_err());
        assert!(key.open(&nonce_from_counter(2), b"aad", &ct).is_err());
        assert!(AeadKey::new(&[8; 32]).open(&n, b"aad", &ct).is_err());
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 1;
            assert!(key.open(&n, b"aad", &bad).is_err());
        }
        assert!(key.open(&n, b"", &[0; 3]).is_err());
        assert_eq!(
            key.open(&n, b"", &key.seal(&n, b"", b"").unwrap()).unwrap(),
            b""
        );
    }
}
