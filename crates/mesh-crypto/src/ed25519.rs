//! Ed25519 signatures (RFC 8032), on `ed25519-dalek`.
//!
//! Verification is strict: non-canonical signatures and small-order ("weak") public keys are
//! rejected, so a signature that verifies individually also verifies in a batch and vice
//! versa. [`verify_batch`] checks many signatures at once and, when the batch fails, finds
//! the first bad item by checking them one by one.

use ed25519_dalek::{Signer, Verifier as _};
use zeroize::Zeroizing;

use crate::error::{Error, Result, array};

/// Public key length.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Signature length.
pub const SIGNATURE_LEN: usize = 64;

/// An Ed25519 signing key (the 32-byte seed of RFC 8032). Zeroized on drop.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(public {:?})", self.verifying_key())
    }
}

impl SigningKey {
    /// A key from its 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self> {
        let seed = Zeroizing::new(crate::random_array::<32>()?);
        Ok(Self::from_seed(&seed))
    }

    /// The 32-byte seed.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

/// An Ed25519 public key, validated: a canonical encoding of a point that is not of small
/// order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl std::hash::Hash for VerifyingKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_bytes().hash(state);
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0.as_bytes();
        write!(
            f,
            "VerifyingKey({:02x}{:02x}{:02x}{:02x}..)",
            b[0], b[1], b[2], b[3]
        )
    }
}

impl VerifyingKey {
    /// Parses and validates a 32-byte public key.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes).map_err(|_| Error::Invalid {
            what: "Ed25519 public key",
            detail: "not a valid curve point encoding",
        })?;
        if key.is_weak() {
            return Err(Error::Invalid {
                what: "Ed25519 public key",
                detail: "small-order point",
            });
        }
        Ok(Self(key))
    }

    /// Parses and validates a public key from a slice.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        Self::from_bytes(&array("Ed25519 public key", bytes)?)
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.to_bytes()
    }

    /// The encoding, borrowed.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        self.0.as_bytes()
    }

    /// Verifies `signature` on `message` (strict: rejects malleable signatures).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<()> {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.0
            .verify_strict(message, &sig)
            .map_err(|_| Error::Verify { what: "Ed25519" })
    }

    /// Verifies with the cofactorless RFC 8032 equation only (used to cross-check batches).
    fn verify_loose(&self, message: &[u8], signature: &Signature) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.0.verify(message, &sig).is_ok()
    }

    /// The X25519 public key of the same secret (the birational map from Edwards to
    /// Montgomery form), as `did:key` uses for key agreement.
    pub fn to_x25519(&self) -> crate::x25519::X25519Public {
        crate::x25519::X25519Public(self.0.to_montgomery().to_bytes())
    }
}

/// A 64-byte Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Signature({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

impl Signature {
    /// Parses 64 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        array("Ed25519 signature", bytes).map(Self)
    }

    /// The raw bytes.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0
    }
}

/// One item of a batch: who signed what.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    /// The signer.
    pub key: &'a VerifyingKey,
    /// The signed message.
    pub message: &'a [u8],
    /// The signature.
    pub signature: &'a Signature,
}

/// Verifies every item; on failure reports the first bad one.
///
/// Uses ed25519-dalek's randomized batch equation (about twice as fast per signature as one
/// by one), then confirms each item with strict verification only when the batch fails, or
/// when an item's signature is malleable (which the batch equation does not reject).
pub fn verify_batch(items: &[BatchItem<'_>]) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let messages: Vec<&[u8]> = items.iter().map(|i| i.message).collect();
    let signatures: Vec<ed25519_dalek::Signature> = items
        .iter()
        .map(|i| ed25519_dalek::Signature::from_bytes(&i.signature.0))
        .collect();
    let keys: Vec<ed25519_dalek::VerifyingKey> = items.iter().map(|i| i.key.0).collect();
    let batch_ok = ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok();
    if batch_ok && items.iter().all(|i| scalar_is_canonical(i.signature)) {
        return Ok(());
    }
    for (index, item) in items.iter().enumerate() {
        if item.key.verify(item.message, item.signature).is_err() {
            return Err(Error::BatchVerify { index: Some(index) });
        }
    }
    // Every item verifies on its own: the batch equation can only disagree through its
    // randomization, which a valid set never triggers; report rather than accept silently.
    if items
        .iter()
        .all(|i| i.key.verify_loose(i.message, i.signature))
    {
        Ok(())
    } else {
        Err(Error::BatchVerify { index: None })
    }
}

/// Whether the signature's `s` half is below the group order (RFC 8032's malleability check).
fn scalar_is_canonical(signature: &Signature) -> bool {
    // l = 2^252 + 27742317777372353535851937790883648493, little-endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x10,
    ];
    let s = &signature.0[32..];
    for i in (0..32).rev() {
        if s[i] != L[i] {
            return s[i] < L[i];
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_reject() {
        let k = SigningKey::from_seed(&[9; 32]);
        let vk = k.verifying_key();
        let sig = k.sign(b"msg");
        vk.verify(b"msg", &sig).unwrap();
        assert!(vk.verify(b"msh", &sig).is_err());
        assert!(
            VerifyingKey::from_bytes(&[0; 32]).is_err(),
            "identity-ish/small order"
        );
        assert!(VerifyingKey::from_slice(&[1; 5]).is_err());
        // Malleated signature: s + l.
        let mut mal = sig.0;
        let mut carry = 0u16;
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        for i in 0..32 {
            let v = u16::from(mal[32 + i]) + u16::from(l[i]) + carry;
            mal[32 + i] = v as u8;
            carry = v >> 8;
        }
        let mal = Signature(mal);
        assert!(vk.verify(b"msg", &mal).is_err());
        let item = BatchItem {
            key: &vk,
            message: b"msg",
            signature: &mal,
        };
        assert!(
            verify_batch(&[item]).is_err(),
            "batch must be as strict as single verification"
        );
    }

    #[test]
    fn batch_finds_the_bad_item() {
        let keys: Vec<SigningKey> = (0..8u8).map(|i| SigningKey::from_seed(&[i; 32])).collect();
        let vks: Vec<VerifyingKey> = keys.iter().map(SigningKey::verifying_key).collect();
        let msgs: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 10]).collect();
        let mut sigs: Vec<Signature> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        let items = |sigs: &[Signature]| -> Vec<(usize, Signature)> {
            sigs.iter().copied().enumerate().collect()
        };
        let check = |sigs: &[Signature]| {
            let owned = items(sigs);
            let batch: Vec<BatchItem<'_>> = owned
                .iter()
                .map(|(i, s)| BatchItem {
                    key: &vks[*i],
                    message: &msgs[*i],
                    signature: s,
                })
                .collect();
            verify_batch(&batch)
        };
        check(&sigs).unwrap();
        sigs[5].0[3] ^= 1;
        assert_eq!(check(&sigs), Err(Error::BatchVerify { index: Some(5) }));
        assert!(verify_batch(&[]).is_ok());
    }
}
