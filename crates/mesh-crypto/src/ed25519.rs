//! Ed25519 signatures (RFC 8032): signing on `ed25519-dalek`, verification on
//! `curve25519-dalek` with one rule for single and batch checks.
//!
//! Verification uses the cofactored equation `[8](sB - kA - R) = 0` that RFC 8032 §5.1.7
//! permits, with strict encodings: `s` below the group order, `A` and `R` canonical point
//! encodings, neither of small order. Single and batch verification apply the same equation
//! to the same decoded values, so they accept exactly the same signatures — a requirement for
//! consensus, where one replica may check a signature alone and another in a batch. (With the
//! cofactorless equation, a signature whose `R` carries a small torsion component can pass a
//! randomized batch and fail alone.)

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::Signer;
use ring::digest;
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

    /// The X25519 secret of the same key: the clamped first half of SHA-512 of the seed, whose
    /// public key is [`VerifyingKey::to_x25519`] (what `did:key` uses for key agreement).
    pub fn to_x25519_secret(&self) -> crate::x25519::X25519Secret {
        let seed = Zeroizing::new(self.0.to_bytes());
        let h = digest::digest(&digest::SHA512, &seed[..]);
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(&h.as_ref()[..32]);
        k[0] &= 248;
        k[31] &= 127;
        k[31] |= 64;
        crate::x25519::X25519Secret::from_bytes(*k)
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
        if !canonical_point_encoding(bytes) {
            return Err(Error::Invalid {
                what: "Ed25519 public key",
                detail: "non-canonical encoding",
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

    /// Verifies `signature` on `message` (cofactored equation, strict encodings).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<()> {
        let d = Decoded::new(self, message, signature).ok_or(Error::Verify { what: "Ed25519" })?;
        // [8](sB - kA - R) == 0
        let check = EdwardsPoint::vartime_double_scalar_mul_basepoint(&-d.k, &d.a, &d.s) - d.r;
        if check.mul_by_cofactor().is_identity() {
            Ok(())
        } else {
            Err(Error::Verify { what: "Ed25519" })
        }
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

/// Whether an encoding that decompresses is the canonical encoding of its point, i.e. equal
/// to `decompress(bytes).compress()`, decided from the bytes alone (a re-compression costs a
/// field inversion per point). Non-canonical are: `y >= p`, and the sign bit set on a point
/// whose `x` is zero (exactly `y = 1` and `y = p - 1`).
fn canonical_point_encoding(bytes: &[u8; 32]) -> bool {
    let sign = bytes[31] & 0x80 != 0;
    let mut y = *bytes;
    y[31] &= 0x7f;
    // p = 2^255 - 19: little-endian ed ff .. ff 7f.
    let top_all_ones = y[31] == 0x7f && y[1..31].iter().all(|&b| b == 0xff);
    if top_all_ones && y[0] >= 0xed {
        return false;
    }
    let is_one = y[0] == 1 && y[1..].iter().all(|&b| b == 0);
    let is_p_minus_one = top_all_ones && y[0] == 0xec;
    !(sign && (is_one || is_p_minus_one))
}

/// A signature decoded for verification.
struct Decoded {
    a: EdwardsPoint,
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

impl Decoded {
    /// Decodes and checks encodings; `None` if the signature is malformed.
    fn new(key: &VerifyingKey, message: &[u8], signature: &Signature) -> Option<Self> {
        let r_bytes: [u8; 32] = signature.0[..32].try_into().ok()?;
        let s_bytes: [u8; 32] = signature.0[32..].try_into().ok()?;
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
        let r = CompressedEdwardsY(r_bytes).decompress()?;
        if !canonical_point_encoding(&r_bytes) || r.is_small_order() {
            return None;
        }
        let mut h = digest::Context::new(&digest::SHA512);
        h.update(&r_bytes);
        h.update(key.as_bytes());
        h.update(message);
        let wide: [u8; 64] = h.finish().as_ref().try_into().ok()?;
        let k = Scalar::from_bytes_mod_order_wide(&wide);
        Some(Self {
            a: key.0.to_edwards(),
            r,
            s,
            k,
        })
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

/// Verifies every item with one multi-scalar multiplication; on failure, checks items one by
/// one to report the first bad one. Accepts exactly what [`VerifyingKey::verify`] accepts.
///
/// The random weights are derived by hashing the whole batch (so they are unpredictable to
/// whoever chose the signatures, and the check is deterministic).
pub fn verify_batch(items: &[BatchItem<'_>]) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let find_bad = || {
        let index = items
            .iter()
            .position(|i| i.key.verify(i.message, i.signature).is_err());
        Err(Error::BatchVerify { index })
    };
    let mut decoded = Vec::with_capacity(items.len());
    for item in items {
        match Decoded::new(item.key, item.message, item.signature) {
            Some(d) => decoded.push(d),
            None => return find_bad(),
        }
    }
    let mut seed = digest::Context::new(&digest::SHA512);
    seed.update(b"agentmesh/ed25519-batch/v1");
    for (item, d) in items.iter().zip(&decoded) {
        seed.update(&item.signature.0);
        seed.update(item.key.as_bytes());
        seed.update(d.k.as_bytes());
    }
    let seed = seed.finish();
    let mut scalars = Vec::with_capacity(2 * items.len() + 1);
    let mut points = Vec::with_capacity(2 * items.len() + 1);
    let mut b_coeff = Scalar::ZERO;
    // Items by the same key share one term: sum_i(-z_i k_i) A instead of one term each, the
    // same equation with fewer points (a client signing many requests of one batch).
    let mut key_terms: Vec<(Scalar, EdwardsPoint)> = Vec::new();
    let mut key_index: std::collections::HashMap<[u8; PUBLIC_KEY_LEN], usize> =
        std::collections::HashMap::new();
    for (i, (item, d)) in items.iter().zip(&decoded).enumerate() {
        let mut zh = digest::Context::new(&digest::SHA512);
        zh.update(seed.as_ref());
        zh.update(&(i as u64).to_le_bytes());
        let mut z = [0u8; 32];
        z[..16].copy_from_slice(&zh.finish().as_ref()[..16]);
        let z = Scalar::from_bytes_mod_order(z);
        // z (sB - kA - R): accumulate -zR, -zkA, and zs on B.
        b_coeff += z * d.s;
        scalars.push(-z);
        points.push(d.r);
        let term = -(z * d.k);
        match key_index.entry(*item.key.as_bytes()) {
            std::collections::hash_map::Entry::Occupied(e) => key_terms[*e.get()].0 += term,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(key_terms.len());
                key_terms.push((term, d.a));
            }
        }
    }
    for (coeff, a) in key_terms {
        scalars.push(coeff);
        points.push(a);
    }
    scalars.push(b_coeff);
    points.push(ED25519_BASEPOINT_POINT);
    let sum = EdwardsPoint::vartime_multiscalar_mul(&scalars, &points);
    if sum.mul_by_cofactor().is_identity() {
        Ok(())
    } else {
        find_bad()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_check_matches_recompression() {
        let mut cases: Vec<[u8; 32]> = Vec::new();
        let mut p_minus = [0xffu8; 32];
        p_minus[31] = 0x7f;
        for low in 0xe0..=0xff {
            let mut b = p_minus;
            b[0] = low;
            cases.push(b);
            b[31] |= 0x80;
            cases.push(b);
        }
        let mut one = [0u8; 32];
        one[0] = 1;
        cases.push(one);
        one[31] = 0x80;
        cases.push(one);
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            let mut b = [0u8; 32];
            for chunk in b.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            cases.push(b);
        }
        let mut checked = 0;
        for b in cases {
            if let Some(p) = CompressedEdwardsY(b).decompress() {
                checked += 1;
                assert_eq!(
                    canonical_point_encoding(&b),
                    p.compress().to_bytes() == b,
                    "{b:02x?}"
                );
            }
        }
        assert!(checked > 5_000);
    }

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
        // y = p + 2 encodes the same point as y = 2 (if on the curve): any y >= p is refused.
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xed + 2;
        non_canonical[31] = 0x7f;
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_bytes(&non_canonical) {
            assert!(!k.is_weak() || VerifyingKey::from_bytes(&non_canonical).is_err());
            assert!(VerifyingKey::from_bytes(&non_canonical).is_err());
        }
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

    /// R' = R + T for a small-order T: the cofactored equation gives the same answer alone and
    /// in any batch, whatever the batch weights are.
    #[test]
    fn torsion_in_r_gets_the_same_answer_alone_and_in_any_batch() {
        use curve25519_dalek::constants::EIGHT_TORSION;
        let k = SigningKey::from_seed(&[4; 32]);
        let vk = k.verifying_key();
        let others: Vec<SigningKey> = (10..16u8)
            .map(|i| SigningKey::from_seed(&[i; 32]))
            .collect();
        for t in &EIGHT_TORSION[1..] {
            let sig = k.sign(b"m");
            let r = CompressedEdwardsY(sig.0[..32].try_into().unwrap())
                .decompress()
                .unwrap();
            let mut twisted = sig.0;
            twisted[..32].copy_from_slice(&(r + t).compress().to_bytes());
            let twisted = Signature(twisted);
            let alone = vk.verify(b"m", &twisted).is_ok();
            for n in 0..others.len() {
                let vks: Vec<VerifyingKey> =
                    others[..n].iter().map(SigningKey::verifying_key).collect();
                let sigs: Vec<Signature> = others[..n].iter().map(|o| o.sign(b"x")).collect();
                let mut items: Vec<BatchItem<'_>> = (0..n)
                    .map(|i| BatchItem {
                        key: &vks[i],
                        message: b"x",
                        signature: &sigs[i],
                    })
                    .collect();
                items.push(BatchItem {
                    key: &vk,
                    message: b"m",
                    signature: &twisted,
                });
                assert_eq!(
                    verify_batch(&items).is_ok(),
                    alone,
                    "batch of {} disagrees",
                    n + 1
                );
            }
        }
    }

    /// Items by one key share a term of the batch equation: a batch of many signatures by
    /// few keys still accepts only what single verification accepts, wherever the bad one is.
    #[test]
    fn batches_with_repeated_keys_find_the_bad_item() {
        let keys: Vec<SigningKey> = (0..3u8).map(|i| SigningKey::from_seed(&[i; 32])).collect();
        let vks: Vec<VerifyingKey> = keys.iter().map(SigningKey::verifying_key).collect();
        let msgs: Vec<Vec<u8>> = (0..30u8).map(|i| vec![i; 20]).collect();
        let good: Vec<Signature> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| keys[i % 3].sign(m))
            .collect();
        let batch = |sigs: &[Signature]| {
            let items: Vec<BatchItem<'_>> = sigs
                .iter()
                .enumerate()
                .map(|(i, s)| BatchItem {
                    key: &vks[i % 3],
                    message: &msgs[i],
                    signature: s,
                })
                .collect();
            verify_batch(&items)
        };
        assert!(batch(&good).is_ok());
        for bad in [0, 13, 29] {
            // Signed by the right key over another message, and by another key.
            let mut sigs = good.clone();
            sigs[bad] = keys[bad % 3].sign(b"something else");
            assert!(matches!(
                batch(&sigs),
                Err(Error::BatchVerify { index: Some(i) }) if i == bad
            ));
            let mut sigs = good.clone();
            sigs[bad] = keys[(bad + 1) % 3].sign(&msgs[bad]);
            assert!(batch(&sigs).is_err());
        }
        // Two signatures of one key swapped between their messages: both wrong, in one term.
        let mut sigs = good.clone();
        sigs.swap(0, 3);
        assert!(batch(&sigs).is_err());
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
