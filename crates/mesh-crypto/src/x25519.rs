//! X25519 key agreement (RFC 7748), on `x25519-dalek`.

use zeroize::Zeroizing;

use crate::error::{Error, Result, array};

/// An X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct X25519Public(pub [u8; 32]);

impl X25519Public {
    /// Parses 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        array("X25519 public key", bytes).map(Self)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// An X25519 static secret. Zeroized on drop.
#[derive(Clone)]
pub struct X25519Secret(x25519_dalek::StaticSecret);

impl std::fmt::Debug for X25519Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "X25519Secret(public {:02x?}..)",
            &self.public_key().0[..4]
        )
    }
}

impl X25519Secret {
    /// A secret from 32 bytes (clamped when used, as RFC 7748 specifies).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(x25519_dalek::StaticSecret::from(bytes))
    }

    /// A fresh random secret.
    pub fn generate() -> Result<Self> {
        let bytes = Zeroizing::new(crate::random_array::<32>()?);
        Ok(Self::from_bytes(*bytes))
    }

    /// The secret's bytes.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn public_key(&self) -> X25519Public {
        X25519Public(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// The shared secret with `their` public key. Rejects an all-zero result, which a
    /// low-order public key forces.
    pub fn diffie_hellman(&self, their: &X25519Public) -> Result<Zeroizing<[u8; 32]>> {
        let shared = self
            .0
            .diffie_hellman(&x25519_dalek::PublicKey::from(their.0));
        if !shared.was_contributory() {
            return Err(Error::NonContributory);
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_is_symmetric_and_low_order_points_are_rejected() {
        let a = X25519Secret::from_bytes([1; 32]);
        let b = X25519Secret::from_bytes([2; 32]);
        assert_eq!(
            *a.diffie_hellman(&b.public_key()).unwrap(),
            *b.diffie_hellman(&a.public_key()).unwrap()
        );
        assert_eq!(
            a.diffie_hellman(&X25519Public([0; 32])),
            Err(Error::NonContributory)
        );
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(
            a.diffie_hellman(&X25519Public(one)),
            Err(Error::NonContributory)
        );
        assert!(X25519Public::from_slice(&[0; 31]).is_err());
    }
}
