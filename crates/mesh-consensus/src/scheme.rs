//! The vote-signature scheme behind certificates.
//!
//! Votes and certificates carry 96-byte signatures whose meaning is set by a [`Scheme`]. The
//! shipped scheme is [`BlsScheme`]: BLS12-381 signatures with proofs of possession, aggregated
//! into one signature per certificate. The trait exists so the protocol can be simulated
//! across thousands of seeds with a cheap stand-in (the simulator's, in `mesh-sim`), and so
//! embedders can bring another aggregatable scheme; nothing else in the crate depends on
//! which scheme signs.

use mesh_crypto::bls::{self, BlsSecretKey, BlsSignature};

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
}

/// The shipped scheme: BLS12-381 (`mesh_crypto::bls`), keys registered in the validator set
/// with proofs of possession.
pub struct BlsScheme {
    key: Option<BlsSecretKey>,
}

impl std::fmt::Debug for BlsScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlsScheme")
    }
}

impl BlsScheme {
    /// A scheme that signs with `key`.
    pub fn new(key: BlsSecretKey) -> Self {
        Self { key: Some(key) }
    }

    /// A scheme that only verifies (a light client's); its signatures are all zero bytes,
    /// which no verifier accepts.
    pub fn verifier() -> Self {
        Self { key: None }
    }
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
