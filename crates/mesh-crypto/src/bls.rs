//! BLS12-381 signatures for quorum certificates, on `blst`.
//!
//! The ciphersuite is `BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_` of the IETF BLS draft, as
//! Ethereum uses it: public keys are 48-byte compressed G1 points, signatures 96-byte
//! compressed G2 points, messages are hashed to G2 with RFC 9380's
//! `BLS12381G2_XMD:SHA-256_SSWU_RO_`.
//!
//! Rogue-key attacks on aggregation are prevented by proofs of possession: a validator's key
//! is accepted only with a valid [`BlsSecretKey::prove_possession`]. Only then may
//! [`fast_aggregate_verify`] be used on it.
//!
//! A quorum certificate is one aggregate [`BlsSignature`] and a [`SignerBitmap`] naming the
//! signers by their index in the validator set.

use blst::BLST_ERROR;
use blst::min_pk::{AggregatePublicKey, AggregateSignature, PublicKey, SecretKey, Signature};
use zeroize::Zeroizing;

use crate::error::{Error, Result, array};

/// Domain separation tag for signatures.
pub const DST_SIGNATURE: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
/// Domain separation tag for proofs of possession.
pub const DST_POP: &[u8] = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
/// Compressed public key length.
pub const PUBLIC_KEY_LEN: usize = 48;
/// Compressed signature length.
pub const SIGNATURE_LEN: usize = 96;
/// Secret key length.
pub const SECRET_KEY_LEN: usize = 32;
/// The most signers a bitmap (and so a certificate) may name.
pub const MAX_SIGNERS: usize = 4096;

/// A BLS secret key: a non-zero scalar below the group order. Zeroized on drop.
#[derive(Clone)]
pub struct BlsSecretKey(Zeroizing<[u8; SECRET_KEY_LEN]>, SecretKey);

impl std::fmt::Debug for BlsSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlsSecretKey(public {:?})", self.public_key())
    }
}

impl BlsSecretKey {
    /// Derives a key from at least 32 bytes of keying material (`KeyGen` of the IETF BLS
    /// signature draft, with empty `key_info`).
    pub fn from_ikm(ikm: &[u8]) -> Result<Self> {
        if ikm.len() < 32 {
            return Err(Error::Length {
                what: "BLS key material",
                expected: 32,
                got: ikm.len(),
            });
        }
        let sk = SecretKey::key_gen(ikm, &[]).map_err(|_| Error::Invalid {
            what: "BLS key material",
            detail: "rejected by KeyGen",
        })?;
        Ok(Self(Zeroizing::new(sk.to_bytes()), sk))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self> {
        let ikm = Zeroizing::new(crate::random_array::<32>()?);
        Self::from_ikm(&ikm[..])
    }

    /// Parses a 32-byte big-endian scalar; rejects zero and values not below the group order.
    pub fn from_bytes(bytes: &[u8; SECRET_KEY_LEN]) -> Result<Self> {
        if bytes.iter().all(|&b| b == 0) {
            return Err(Error::Invalid {
                what: "BLS secret key",
                detail: "zero",
            });
        }
        let sk = SecretKey::from_bytes(bytes).map_err(|_| Error::Invalid {
            what: "BLS secret key",
            detail: "not below the group order",
        })?;
        Ok(Self(Zeroizing::new(*bytes), sk))
    }

    /// The 32-byte big-endian encoding.
    pub fn to_bytes(&self) -> Zeroizing<[u8; SECRET_KEY_LEN]> {
        self.0.clone()
    }

    /// The public key.
    pub fn public_key(&self) -> BlsPublicKey {
        BlsPublicKey(self.1.sk_to_pk())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> BlsSignature {
        BlsSignature(self.1.sign(message, DST_SIGNATURE, &[]))
    }

    /// Proves possession of this key: a signature over the public key's encoding under the
    /// proof-of-possession tag.
    pub fn prove_possession(&self) -> BlsSignature {
        BlsSignature(self.1.sign(&self.public_key().to_bytes(), DST_POP, &[]))
    }
}

/// A validated BLS public key: a point of the G1 subgroup other than the identity.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BlsPublicKey(PublicKey);

impl std::fmt::Debug for BlsPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.to_bytes();
        write!(
            f,
            "BlsPublicKey({:02x}{:02x}{:02x}{:02x}..)",
            b[0], b[1], b[2], b[3]
        )
    }
}

impl BlsPublicKey {
    /// Parses a compressed key and validates it (`KeyValidate`): on the curve, in the
    /// subgroup, not the identity.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self> {
        PublicKey::key_validate(bytes)
            .map(Self)
            .map_err(|e| Error::Invalid {
                what: "BLS public key",
                detail: if e == BLST_ERROR::BLST_PK_IS_INFINITY {
                    "the identity point"
                } else {
                    "not a compressed G1 subgroup point"
                },
            })
    }

    /// Parses from a slice.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        Self::from_bytes(&array("BLS public key", bytes)?)
    }

    /// The compressed encoding.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.compress()
    }

    /// Verifies `signature` on `message`.
    pub fn verify(&self, message: &[u8], signature: &BlsSignature) -> Result<()> {
        check(
            signature
                .0
                .verify(false, message, DST_SIGNATURE, &[], &self.0, false),
            "BLS",
        )
    }

    /// Verifies a proof of possession of this key.
    pub fn verify_possession(&self, proof: &BlsSignature) -> Result<()> {
        check(
            proof
                .0
                .verify(false, &self.to_bytes(), DST_POP, &[], &self.0, false),
            "BLS possession",
        )
    }
}

fn check(e: BLST_ERROR, what: &'static str) -> Result<()> {
    if e == BLST_ERROR::BLST_SUCCESS {
        Ok(())
    } else {
        Err(Error::Verify { what })
    }
}

/// A BLS signature: a point of the G2 subgroup (checked when parsed).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BlsSignature(Signature);

impl std::fmt::Debug for BlsSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.to_bytes();
        write!(
            f,
            "BlsSignature({:02x}{:02x}{:02x}{:02x}..)",
            b[0], b[1], b[2], b[3]
        )
    }
}

impl BlsSignature {
    /// Parses a compressed signature, checking it is in the G2 subgroup.
    pub fn from_bytes(bytes: &[u8; SIGNATURE_LEN]) -> Result<Self> {
        Signature::sig_validate(bytes, false)
            .map(Self)
            .map_err(|_| Error::Invalid {
                what: "BLS signature",
                detail: "not a compressed G2 subgroup point",
            })
    }

    /// Parses from a slice.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        Self::from_bytes(&array("BLS signature", bytes)?)
    }

    /// The compressed encoding.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0.compress()
    }
}

/// Aggregates signatures into one. Fails on an empty list.
pub fn aggregate_signatures<'a>(
    signatures: impl IntoIterator<Item = &'a BlsSignature>,
) -> Result<BlsSignature> {
    let sigs: Vec<&Signature> = signatures.into_iter().map(|s| &s.0).collect();
    if sigs.is_empty() {
        return Err(Error::Invalid {
            what: "signature aggregate",
            detail: "no signatures to aggregate",
        });
    }
    // Every signature was subgroup-checked when parsed.
    AggregateSignature::aggregate(&sigs, false)
        .map(|a| BlsSignature(a.to_signature()))
        .map_err(|_| Error::Invalid {
            what: "signature aggregate",
            detail: "invalid signature",
        })
}

/// Aggregates compressed signatures into one, checking subgroup membership once, on the
/// sum, instead of on each signature: a sum of points outside the subgroup that lands inside
/// it is the sum of what their signers could have signed honestly, and a sum outside it is
/// refused. Each encoding must still be a point on the curve. This is how a quorum's votes
/// become a certificate at a fraction of the cost of [`BlsSignature::from_bytes`] on each;
/// to find which signature is bad when the aggregate fails to verify, parse them one by one.
pub fn aggregate_compressed<'a>(
    signatures: impl IntoIterator<Item = &'a [u8; SIGNATURE_LEN]>,
) -> Result<BlsSignature> {
    let invalid = |detail| Error::Invalid {
        what: "signature aggregate",
        detail,
    };
    let mut sum: Option<AggregateSignature> = None;
    for bytes in signatures {
        let point =
            Signature::from_bytes(bytes).map_err(|_| invalid("not a compressed G2 point"))?;
        match &mut sum {
            None => sum = Some(AggregateSignature::from_signature(&point)),
            Some(agg) => agg
                .add_signature(&point, false)
                .map_err(|_| invalid("invalid signature"))?,
        }
    }
    let sum = sum.ok_or_else(|| invalid("no signatures to aggregate"))?;
    sum.validate()
        .map_err(|_| invalid("the sum is not in the G2 subgroup"))?;
    Ok(BlsSignature(sum.to_signature()))
}

/// Aggregates public keys into one (the sum of the points). Fails on an empty list or if the
/// sum is the identity.
pub fn aggregate_public_keys<'a>(
    keys: impl IntoIterator<Item = &'a BlsPublicKey>,
) -> Result<BlsPublicKey> {
    let pks: Vec<&PublicKey> = keys.into_iter().map(|k| &k.0).collect();
    if pks.is_empty() {
        return Err(Error::Invalid {
            what: "key aggregate",
            detail: "no public keys",
        });
    }
    let sum = AggregatePublicKey::aggregate(&pks, false)
        .map(|a| a.to_public_key())
        .map_err(|_| Error::Invalid {
            what: "key aggregate",
            detail: "invalid key",
        })?;
    // The compressed identity has the infinity flag (bit 6 of the first byte) set.
    if sum.compress()[0] & 0x40 != 0 {
        return Err(Error::Invalid {
            what: "key aggregate",
            detail: "sums to the identity",
        });
    }
    Ok(BlsPublicKey(sum))
}

/// Verifies an aggregate signature by many signers on one message. Every key must have had
/// its proof of possession verified before.
pub fn fast_aggregate_verify(
    keys: &[BlsPublicKey],
    message: &[u8],
    signature: &BlsSignature,
) -> Result<()> {
    let aggregate = aggregate_public_keys(keys).map_err(|_| Error::Verify {
        what: "BLS aggregate",
    })?;
    check(
        signature
            .0
            .verify(false, message, DST_SIGNATURE, &[], &aggregate.0, false),
        "BLS aggregate",
    )
}

/// Verifies an aggregate signature over distinct messages, one per signer. Fails if two
/// messages are equal (the proof-of-possession scheme's `AggregateVerify` does not require
/// this, but the check keeps the function safe even for keys whose possession was never
/// proven) or the list is empty.
pub fn aggregate_verify(pairs: &[(BlsPublicKey, &[u8])], signature: &BlsSignature) -> Result<()> {
    if pairs.is_empty() {
        return Err(Error::Verify {
            what: "BLS aggregate",
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(pairs.len());
    if !pairs.iter().all(|(_, m)| seen.insert(*m)) {
        return Err(Error::Verify {
            what: "BLS aggregate",
        });
    }
    let msgs: Vec<&[u8]> = pairs.iter().map(|(_, m)| *m).collect();
    let pks: Vec<&PublicKey> = pairs.iter().map(|(k, _)| &k.0).collect();
    check(
        signature
            .0
            .aggregate_verify(false, &msgs, DST_SIGNATURE, &pks, false),
        "BLS aggregate",
    )
}

/// The set of signers of a certificate, as indices into the validator set.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SignerBitmap {
    len: usize,
    bits: Vec<u8>,
}

impl std::fmt::Debug for SignerBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SignerBitmap({}/{}: {:?})",
            self.count(),
            self.len,
            self.iter().collect::<Vec<_>>()
        )
    }
}

impl SignerBitmap {
    /// An empty bitmap for a validator set of `len` members (at most [`MAX_SIGNERS`]).
    pub fn new(len: usize) -> Result<Self> {
        if len > MAX_SIGNERS {
            return Err(Error::TooLarge {
                what: "validator set",
                len: len as u64,
                max: MAX_SIGNERS as u64,
            });
        }
        Ok(Self {
            len,
            bits: vec![0; len.div_ceil(8)],
        })
    }

    /// The validator-set size.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Marks `index` as a signer; returns whether it was newly set.
    pub fn set(&mut self, index: usize) -> Result<bool> {
        if index >= self.len {
            return Err(Error::Invalid {
                what: "signer index",
                detail: "outside the validator set",
            });
        }
        let (byte, bit) = (index / 8, 1u8 << (index % 8));
        let was = self.bits[byte] & bit != 0;
        self.bits[byte] |= bit;
        Ok(!was)
    }

    /// Whether `index` signed.
    pub fn contains(&self, index: usize) -> bool {
        index < self.len && self.bits[index / 8] & (1 << (index % 8)) != 0
    }

    /// Number of signers.
    pub fn count(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }

    /// Signer indices in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len).filter(|&i| self.contains(i))
    }

    /// Encoding: set size as u16 little-endian, then the bits (LSB first).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.bits.len());
        out.extend_from_slice(&(self.len as u16).to_le_bytes());
        out.extend_from_slice(&self.bits);
        out
    }

    /// Decodes [`Self::to_bytes`]; rejects wrong lengths and bits set beyond the set size.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let Some((len, bits)) = bytes.split_first_chunk::<2>() else {
            return Err(Error::Malformed {
                what: "signer bitmap",
                detail: "shorter than 2 bytes".into(),
            });
        };
        let len = usize::from(u16::from_le_bytes(*len));
        let mut out = Self::new(len)?;
        if bits.len() != out.bits.len() {
            return Err(Error::Malformed {
                what: "signer bitmap",
                detail: format!("{} bytes of bits for {len} signers", bits.len()),
            });
        }
        out.bits.copy_from_slice(bits);
        if len % 8 != 0 && out.bits.last().is_some_and(|b| b >> (len % 8) != 0) {
            return Err(Error::Malformed {
                what: "signer bitmap",
                detail: "bits set past the end".into(),
            });
        }
        Ok(out)
    }

    /// The public keys of the signers, from the validator set's keys in index order.
    pub fn select(&self, keys: &[BlsPublicKey]) -> Result<Vec<BlsPublicKey>> {
        if keys.len() != self.len {
            return Err(Error::Invalid {
                what: "signer bitmap",
                detail: "validator set size differs",
            });
        }
        Ok(self.iter().map(|i| keys[i]).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_aggregate_verify() {
        let keys: Vec<BlsSecretKey> = (0..5u8)
            .map(|i| BlsSecretKey::from_ikm(&[i; 32]).unwrap())
            .collect();
        let pks: Vec<BlsPublicKey> = keys.iter().map(BlsSecretKey::public_key).collect();
        for (k, pk) in keys.iter().zip(&pks) {
            pk.verify_possession(&k.prove_possession()).unwrap();
            // A PoP is not a signature over the key bytes under the signature tag.
            assert!(pk.verify(&pk.to_bytes(), &k.prove_possession()).is_err());
        }
        let sigs: Vec<BlsSignature> = keys.iter().map(|k| k.sign(b"block 7")).collect();
        pks[0].verify(b"block 7", &sigs[0]).unwrap();
        let agg = aggregate_signatures(&sigs).unwrap();
        fast_aggregate_verify(&pks, b"block 7", &agg).unwrap();
        assert!(fast_aggregate_verify(&pks[..4], b"block 7", &agg).is_err());
        assert!(fast_aggregate_verify(&pks, b"block 8", &agg).is_err());
        assert!(fast_aggregate_verify(&[], b"block 7", &agg).is_err());
        let round = BlsSignature::from_bytes(&agg.to_bytes()).unwrap();
        assert_eq!(round, agg);
        assert_eq!(
            BlsPublicKey::from_bytes(&pks[1].to_bytes()).unwrap(),
            pks[1]
        );
        assert_eq!(
            BlsSecretKey::from_bytes(&keys[2].to_bytes())
                .unwrap()
                .public_key(),
            pks[2]
        );
    }

    #[test]
    fn compressed_aggregates_check_the_sum() {
        let keys: Vec<BlsSecretKey> = (0..4u8)
            .map(|i| BlsSecretKey::from_ikm(&[i; 32]).unwrap())
            .collect();
        let pks: Vec<BlsPublicKey> = keys.iter().map(BlsSecretKey::public_key).collect();
        let sigs: Vec<[u8; SIGNATURE_LEN]> =
            keys.iter().map(|k| k.sign(b"block 9").to_bytes()).collect();
        let agg = aggregate_compressed(&sigs).unwrap();
        let parsed: Vec<BlsSignature> = sigs
            .iter()
            .map(|s| BlsSignature::from_bytes(s).unwrap())
            .collect();
        assert_eq!(agg, aggregate_signatures(&parsed).unwrap());
        fast_aggregate_verify(&pks, b"block 9", &agg).unwrap();
        assert!(aggregate_compressed(std::iter::empty()).is_err());
        // A point on the curve but outside the G2 subgroup (almost every x that decodes is
        // one): refused alone and in a sum.
        let outside = (0u8..=255)
            .map(|k| {
                let mut b = [0u8; SIGNATURE_LEN];
                b[0] = 0x80;
                b[SIGNATURE_LEN - 1] = k;
                b
            })
            .find(|b| Signature::from_bytes(b).is_ok())
            .unwrap();
        assert!(BlsSignature::from_bytes(&outside).is_err());
        assert!(aggregate_compressed([&outside]).is_err());
        assert!(aggregate_compressed([&sigs[0], &outside, &sigs[1]]).is_err());
        // Bytes that are no point at all.
        assert!(aggregate_compressed([&[0xff; SIGNATURE_LEN]]).is_err());
    }

    #[test]
    fn bitmap_encoding_is_strict() {
        let mut b = SignerBitmap::new(10).unwrap();
        assert!(b.set(0).unwrap());
        assert!(!b.set(0).unwrap());
        b.set(9).unwrap();
        assert!(b.set(10).is_err());
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 9]);
        let enc = b.to_bytes();
        assert_eq!(SignerBitmap::from_bytes(&enc).unwrap(), b);
        let mut bad = enc.clone();
        *bad.last_mut().unwrap() |= 0x80; // bit 15 of a 10-member set
        assert!(SignerBitmap::from_bytes(&bad).is_err());
        assert!(SignerBitmap::from_bytes(&enc[..2]).is_err());
        assert!(
            SignerBitmap::from_bytes(&[0xff, 0xff]).is_err(),
            "65535 > MAX_SIGNERS"
        );
    }
}
