//! The vote-signature scheme behind certificates.
//!
//! Votes and certificates carry 96-byte signatures whose meaning is set by a [`Scheme`]. The
//! shipped scheme is [`BlsScheme`]: BLS12-381 signatures with proofs of possession, aggregated
//! into one signature per commit and checkpoint certificate, and Ed25519 signatures (by the
//! validator's node key) on prepare votes, which a prepare certificate lists one by one.
//!
//! Why prepares are not BLS: a prepare certificate never reaches the ledger; it is only
//! shown in view changes, which are rare. Signing a vote with BLS costs about 0.4 ms and
//! checking an aggregate about 1.1 ms (two pairings and a hash to the curve); an Ed25519
//! signature costs 20 us and checking two or three of them in a batch about 60 us. Prepares
//! in BLS were a third of the CPU a block cost the four replicas of a loopback mesh. The
//! prepare certificate stays transferable (every signature in it is checkable by anyone who
//! knows the validator set), only larger: one signature per signer instead of one in all.
//!
//! The trait exists so the protocol can be simulated
//! across thousands of seeds with a cheap stand-in (the simulator's, in `mesh-sim`), and so
//! embedders can bring another aggregatable scheme; nothing else in the crate depends on
//! which scheme signs.

use mesh_crypto::bls::{self, BlsSecretKey, BlsSignature};
use mesh_crypto::ed25519::{self, SigningKey};

use crate::validators::ValidatorSet;

/// Length of a vote signature.
pub const SIG_LEN: usize = 96;

/// A vote or certificate signature as it travels: opaque bytes until a [`Scheme`] checks
/// them (for BLS, a compressed G2 point).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VoteSig(pub [u8; SIG_LEN]);

impl std::fmt::Debug for VoteSig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VoteSig({:02x?}..)", &self.0[..4])
    }
}

/// Signs votes and checks aggregates of them. Implementations must be deterministic.
pub trait Scheme: Send + Sync {
    /// Signs `message` with this replica's key.
    fn sign(&self, message: &[u8]) -> VoteSig;
    /// Combines signatures on one message; `None` if one of them is not a valid encoding.
    fn aggregate(&self, signatures: &[VoteSig]) -> Option<VoteSig>;
    /// Whether `signature` is a valid aggregate by `signers` (indices into `set`) on `message`.
    fn verify(
        &self,
        set: &ValidatorSet,
        signers: &[usize],
        message: &[u8],
        signature: &VoteSig,
    ) -> bool;
    /// Aggregates a quorum's `signatures` (by `signers`, in the same order) on `message` and
    /// returns the aggregate if it verifies. The default is [`Scheme::aggregate`] then
    /// [`Scheme::verify`]; a scheme may fuse the two more cheaply.
    fn certify(
        &self,
        set: &ValidatorSet,
        signers: &[usize],
        message: &[u8],
        signatures: &[VoteSig],
    ) -> Option<VoteSig> {
        let agg = self.aggregate(signatures)?;
        self.verify(set, signers, message, &agg).then_some(agg)
    }
    /// Signs a prepare vote on `message`. Prepare certificates list their votes instead of
    /// aggregating them (see the module docs), so a scheme may use a cheaper individual
    /// signature here. The default is [`Scheme::sign`].
    fn sign_prepare(&self, message: &[u8]) -> VoteSig {
        self.sign(message)
    }
    /// Whether `signatures[k]` is a valid prepare vote of `signers[k]` (an index into `set`)
    /// on `message`, for every `k` (false if the lengths differ or nobody signed). The
    /// default checks each with [`Scheme::verify`] as an aggregate of one.
    fn verify_prepares(
        &self,
        set: &ValidatorSet,
        signers: &[usize],
        message: &[u8],
        signatures: &[VoteSig],
    ) -> bool {
        !signers.is_empty()
            && signers.len() == signatures.len()
            && signers
                .iter()
                .zip(signatures)
                .all(|(&i, s)| self.verify(set, &[i], message, s))
    }
}

/// The shipped scheme: BLS12-381 (`mesh_crypto::bls`), keys registered in the validator set
/// with proofs of possession, for commit and checkpoint votes; Ed25519 with the validator's
/// node key for prepare votes (the signature in the first 64 bytes of a [`VoteSig`], the
/// rest zero).
pub struct BlsScheme {
    key: Option<BlsSecretKey>,
    prepare_key: Option<SigningKey>,
}

impl std::fmt::Debug for BlsScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlsScheme")
    }
}

impl BlsScheme {
    /// A scheme that signs commit and checkpoint votes with `key` and prepare votes with
    /// `node_key` (the validator's Ed25519 key, whose public half is its [`NodeId`] in the
    /// validator set).
    ///
    /// [`NodeId`]: mesh_types::NodeId
    pub fn new(key: BlsSecretKey, node_key: SigningKey) -> Self {
        Self {
            key: Some(key),
            prepare_key: Some(node_key),
        }
    }

    /// A scheme that only verifies (a light client's); its signatures are all zero bytes,
    /// which no verifier accepts.
    pub fn verifier() -> Self {
        Self {
            key: None,
            prepare_key: None,
        }
    }
}

/// The Ed25519 signature a prepare [`VoteSig`] carries, if it has the shape one must (the
/// last 32 bytes zero, so that each vote has one encoding).
fn ed25519_part(sig: &VoteSig) -> Option<ed25519::Signature> {
    let (head, tail) = sig.0.split_at(ed25519::SIGNATURE_LEN);
    if tail.iter().any(|&b| b != 0) {
        return None;
    }
    ed25519::Signature::from_slice(head).ok()
}

impl Scheme for BlsScheme {
    fn sign(&self, message: &[u8]) -> VoteSig {
        match &self.key {
            Some(k) => VoteSig(k.sign(message).to_bytes()),
            None => VoteSig([0; SIG_LEN]),
        }
    }

    fn aggregate(&self, signatures: &[VoteSig]) -> Option<VoteSig> {
        let parsed: Option<Vec<BlsSignature>> = signatures
            .iter()
            .map(|s| BlsSignature::from_bytes(&s.0).ok())
            .collect();
        let agg = bls::aggregate_signatures(&parsed?).ok()?;
        Some(VoteSig(agg.to_bytes()))
    }

    fn verify(
        &self,
        set: &ValidatorSet,
        signers: &[usize],
        message: &[u8],
        signature: &VoteSig,
    ) -> bool {
        let Ok(sig) = BlsSignature::from_bytes(&signature.0) else {
            return false;
        };
        verify_parsed(set, signers, message, &sig)
    }

    /// Subgroup-checks only the sum of the votes and verifies the parsed sum directly: one
    /// subgroup check instead of one per vote plus one for the re-parsed aggregate.
    fn certify(
        &self,
        set: &ValidatorSet,
        signers: &[usize],
        message: &[u8],
        signatures: &[VoteSig],
    ) -> Option<VoteSig> {
        let agg = bls::aggregate_compressed(signatures.iter().map(|s| &s.0)).ok()?;
        verify_parsed(set, signers, message, &agg).then(|| VoteSig(agg.to_bytes()))
    }

    fn sign_prepare(&self, message: &[u8]) -> VoteSig {
        let mut out = [0; SIG_LEN];
        if let Some(k) = &self.prepare_key {
            out[..ed25519::SIGNATURE_LEN].copy_from_slice(&k.sign(message).0);
        }
        VoteSig(out)
    }

    /// One batch verification of all the Ed25519 signatures.
    fn verify_prepares(
        &self,
        set: &ValidatorSet,
        signers: &[usize],
        message: &[u8],
        signatures: &[VoteSig],
    ) -> bool {
        if signers.is_empty() || signers.len() != signatures.len() {
            return false;
        }
        let mut sigs = Vec::with_capacity(signatures.len());
        for s in signatures {
            match ed25519_part(s) {
                Some(sig) => sigs.push(sig),
                None => return false,
            }
        }
        let mut items = Vec::with_capacity(signers.len());
        for (&i, signature) in signers.iter().zip(&sigs) {
            let Some(key) = set.ed_key(i) else {
                return false;
            };
            items.push(ed25519::BatchItem {
                key,
                message,
                signature,
            });
        }
        ed25519::verify_batch(&items).is_ok()
    }
}

/// Whether `sig` is a valid aggregate by `signers` (indices into `set`) on `message`.
fn verify_parsed(
    set: &ValidatorSet,
    signers: &[usize],
    message: &[u8],
    sig: &BlsSignature,
) -> bool {
    let keys: Option<Vec<_>> = signers
        .iter()
        .map(|&i| set.bls_keys().get(i).copied())
        .collect();
    match keys {
        Some(keys) if !keys.is_empty() => bls::fast_aggregate_verify(&keys, message, sig).is_ok(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Phase, vote_bytes};
    use mesh_types::Digest;

    fn setup() -> (ValidatorSet, Vec<BlsScheme>) {
        let set = ValidatorSet::new(0, (1..=4).map(|s| crate::test_member(s, 1)).collect())
            .expect("a valid set");
        let schemes = (1..=4u8)
            .map(|s| {
                BlsScheme::new(
                    BlsSecretKey::from_ikm(&[s; 32]).expect("a key"),
                    SigningKey::from_seed(&[s; 32]),
                )
            })
            .collect();
        (set, schemes)
    }

    #[test]
    fn prepare_votes_are_checked_one_signer_at_a_time() {
        let (set, schemes) = setup();
        let msg = vote_bytes(0, Phase::Prepare, 1, 2, &Digest([3; 32]));
        let sigs: Vec<VoteSig> = schemes.iter().map(|s| s.sign_prepare(&msg)).collect();
        let verifier = BlsScheme::verifier();
        assert!(verifier.verify_prepares(&set, &[0, 1, 2, 3], &msg, &sigs));
        assert!(verifier.verify_prepares(&set, &[1, 3], &msg, &[sigs[1], sigs[3]]));
        // Attributed to the wrong signer, over another message, or missing one.
        assert!(!verifier.verify_prepares(&set, &[0, 1], &msg, &[sigs[1], sigs[0]]));
        let other = vote_bytes(0, Phase::Prepare, 1, 2, &Digest([4; 32]));
        assert!(!verifier.verify_prepares(&set, &[0, 1, 2, 3], &other, &sigs));
        assert!(!verifier.verify_prepares(&set, &[0, 1, 2], &msg, &sigs));
        assert!(!verifier.verify_prepares(&set, &[], &msg, &[]));
        // An index outside the set.
        assert!(!verifier.verify_prepares(&set, &[7], &msg, &sigs[..1]));
        // One encoding per vote: bytes after the Ed25519 signature must be zero.
        let mut padded = sigs[2];
        padded.0[80] = 1;
        assert!(!verifier.verify_prepares(&set, &[2], &msg, &[padded]));
        // A BLS commit vote is not a prepare vote, and the reverse.
        let commit = vote_bytes(0, Phase::Commit, 1, 2, &Digest([3; 32]));
        let bls = schemes[0].sign(&commit);
        assert!(!verifier.verify_prepares(&set, &[0], &commit, &[bls]));
        let ed = schemes[0].sign_prepare(&commit);
        assert!(!verifier.verify(&set, &[0], &commit, &ed));
        // A verifier signs nothing valid.
        assert!(!verifier.verify_prepares(&set, &[0], &msg, &[verifier.sign_prepare(&msg)]));
    }

    #[test]
    fn commit_certificates_aggregate_and_one_bad_vote_spoils_the_aggregate() {
        let (set, schemes) = setup();
        let msg = vote_bytes(0, Phase::Commit, 1, 2, &Digest([3; 32]));
        let sigs: Vec<VoteSig> = schemes.iter().take(3).map(|s| s.sign(&msg)).collect();
        let verifier = BlsScheme::verifier();
        let agg = verifier
            .certify(&set, &[0, 1, 2], &msg, &sigs)
            .expect("three good votes certify");
        assert!(verifier.verify(&set, &[0, 1, 2], &msg, &agg));
        // One vote over another message spoils the aggregate.
        let bad = schemes[2].sign(&vote_bytes(0, Phase::Commit, 1, 2, &Digest([4; 32])));
        assert!(
            verifier
                .certify(&set, &[0, 1, 2], &msg, &[sigs[0], sigs[1], bad])
                .is_none()
        );
    }
}
