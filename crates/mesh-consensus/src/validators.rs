//! The validator set: who votes, with what weight, and what a quorum is.

use std::collections::HashMap;

use mesh_crypto::bls::{BlsPublicKey, BlsSignature, MAX_SIGNERS, SignerBitmap};
use mesh_crypto::ed25519::VerifyingKey;
use mesh_types::wire::{Reader, put_varint};
use mesh_types::{Digest, NodeId};

use crate::error::{Error, Result};

/// The largest weight one validator may carry. Bounded so no single validator can outweigh a
/// third of any set of more than a handful of members by decree.
pub const MAX_WEIGHT: u32 = 1_000;

/// One member of the validator set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validator {
    /// The validator's node id (its Ed25519 key): signs view changes and new views.
    pub id: NodeId,
    /// Its BLS key: signs votes that are aggregated into certificates.
    pub bls: BlsPublicKey,
    /// Its voting weight, 0 ..= [`MAX_WEIGHT`]. Weight 0 marks a member removed by a
    /// reconfiguration: it keeps its index (so signer bitmaps mean the same members in every
    /// epoch) but no longer votes or leads.
    pub weight: u32,
}

/// An ordered validator set for one epoch. Indices into it name signers in certificates.
#[derive(Debug, Clone)]
pub struct ValidatorSet {
    epoch: u64,
    members: Vec<Validator>,
    ed_keys: Vec<VerifyingKey>,
    bls_keys: Vec<BlsPublicKey>,
    by_id: HashMap<NodeId, usize>,
    /// Indices of the members with a weight, in order: the primary rotation.
    active: Vec<usize>,
    total: u64,
    broken_quorum: bool,
}

impl PartialEq for ValidatorSet {
    fn eq(&self, other: &Self) -> bool {
        self.epoch == other.epoch && self.members == other.members
    }
}

impl Eq for ValidatorSet {}

impl ValidatorSet {
    /// Builds a set from members whose BLS proofs of possession are given alongside; every
    /// proof is checked (an unproven key would allow rogue-key attacks on aggregates).
    pub fn new(epoch: u64, members: Vec<(Validator, BlsSignature)>) -> Result<Self> {
        for (v, pop) in &members {
            v.bls.verify_possession(pop).map_err(|_| {
                Error::invalid(
                    "validator",
                    format!("{} has no valid BLS proof of possession", v.id.short()),
                )
            })?;
        }
        Self::from_verified(epoch, members.into_iter().map(|(v, _)| v).collect())
    }

    /// Builds a set from members whose proofs of possession were verified before (for example
    /// when the set was committed through consensus).
    pub fn from_verified(epoch: u64, members: Vec<Validator>) -> Result<Self> {
        if members.is_empty() {
            return Err(Error::invalid("validator set", "empty"));
        }
        if members.len() > MAX_SIGNERS {
            return Err(Error::invalid(
                "validator set",
                format!("{} members, at most {MAX_SIGNERS}", members.len()),
            ));
        }
        let mut by_id = HashMap::with_capacity(members.len());
        let mut ed_keys = Vec::with_capacity(members.len());
        let mut total = 0u64;
        let mut active = Vec::with_capacity(members.len());
        for (i, v) in members.iter().enumerate() {
            if v.weight > MAX_WEIGHT {
                return Err(Error::invalid(
                    "validator weight",
                    format!(
                        "{} has weight {}, allowed 0..={MAX_WEIGHT}",
                        v.id.short(),
                        v.weight
                    ),
                ));
            }
            if v.weight > 0 {
                active.push(i);
            }
            if by_id.insert(v.id, i).is_some() {
                return Err(Error::invalid(
                    "validator set",
                    format!("{} appears twice", v.id.short()),
                ));
            }
            ed_keys.push(VerifyingKey::from_bytes(v.id.as_bytes()).map_err(|_| {
                Error::invalid(
                    "validator",
                    format!("{} is not an Ed25519 key", v.id.short()),
                )
            })?);
            total += u64::from(v.weight);
        }
        if total == 0 {
            return Err(Error::invalid("validator set", "no member has a weight"));
        }
        let bls_keys = members.iter().map(|v| v.bls).collect();
        Ok(Self {
            epoch,
            members,
            ed_keys,
            bls_keys,
            by_id,
            active,
            total,
            broken_quorum: false,
        })
    }

    /// The epoch this set governs.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of validators.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a set has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members in index order.
    pub fn members(&self) -> &[Validator] {
        &self.members
    }

    /// The member at `index`.
    pub fn get(&self, index: usize) -> Option<&Validator> {
        self.members.get(index)
    }

    /// The index of `id`, if it is a validator.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The Ed25519 key of the member at `index`.
    pub fn ed_key(&self, index: usize) -> Option<&VerifyingKey> {
        self.ed_keys.get(index)
    }

    /// BLS keys in index order.
    pub fn bls_keys(&self) -> &[BlsPublicKey] {
        &self.bls_keys
    }

    /// The total weight.
    pub fn total_weight(&self) -> u64 {
        self.total
    }

    /// The weight of the members in `signers`.
    pub fn weight_of(&self, signers: &SignerBitmap) -> u64 {
        signers
            .iter()
            .filter_map(|i| self.members.get(i))
            .map(|v| u64::from(v.weight))
            .sum()
    }

    /// The weight of the member at `index` (0 if none).
    pub fn weight(&self, index: usize) -> u64 {
        self.members.get(index).map_or(0, |v| u64::from(v.weight))
    }

    /// Whether `weight` is a quorum: more than two thirds of the total.
    pub fn is_quorum(&self, weight: u64) -> bool {
        if self.broken_quorum {
            return 2 * weight >= self.total;
        }
        3 * weight > 2 * self.total
    }

    /// Replaces the quorum rule by a wrong one (half the weight: "2f" of 3f + 1), so the
    /// simulator can show that its checks catch a broken protocol. Never use it elsewhere.
    #[doc(hidden)]
    pub fn break_quorum_rule_for_testing(&mut self) {
        self.broken_quorum = true;
    }

    /// Whether `weight` surely includes an honest member: more than a third of the total
    /// (the weighted form of "f + 1").
    pub fn is_weak_quorum(&self, weight: u64) -> bool {
        3 * weight > self.total
    }

    /// The primary (leader) of `view`: round-robin over the members with a weight.
    pub fn primary(&self, view: u64) -> usize {
        let n = self.active.len().max(1) as u64;
        self.active
            .get((view % n) as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Whether the member at `index` votes (has a weight).
    pub fn is_voter(&self, index: usize) -> bool {
        self.weight(index) > 0
    }

    /// Moves the set to another epoch (when a reconfiguration changed nothing applicable).
    pub(crate) fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    /// The same members in another epoch (a weight flag for tests and reconfiguration).
    pub(crate) fn with_members(&self, epoch: u64, members: Vec<Validator>) -> Result<Self> {
        let mut next = Self::from_verified(epoch, members)?;
        next.broken_quorum = self.broken_quorum;
        Ok(next)
    }

    /// The canonical encoding: epoch, count, then each member's id, BLS key and weight.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.epoch);
        put_varint(out, self.members.len() as u64);
        for v in &self.members {
            out.extend_from_slice(v.id.as_bytes());
            out.extend_from_slice(&v.bls.to_bytes());
            put_varint(out, u64::from(v.weight));
        }
    }

    /// Decodes [`Self::encode`] (the keys were proven when the set was committed).
    pub fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let m = Error::malformed("validator set");
        let epoch = r.varint().map_err(m)?;
        let n = r
            .varint_len("validator set", MAX_SIGNERS)
            .map_err(Error::malformed("validator set"))?;
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            let id = NodeId(r.array().map_err(Error::malformed("validator id"))?);
            let bls =
                BlsPublicKey::from_bytes(&r.array().map_err(Error::malformed("validator key"))?)?;
            let weight = r.varint().map_err(Error::malformed("validator weight"))?;
            let weight = u32::try_from(weight)
                .map_err(|_| Error::invalid("validator weight", "too large"))?;
            members.push(Validator { id, bls, weight });
        }
        Self::from_verified(epoch, members)
    }

    /// The digest of the canonical encoding: the root a light client starts from.
    pub fn digest(&self) -> Digest {
        let mut out = Vec::new();
        self.encode(&mut out);
        Digest::of_parts([b"agentmesh/validators/v1".as_slice(), &out])
    }
}

/// A validator derived from `seed` (both keys), with `weight`, and its proof of possession.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_member(seed: u8, weight: u32) -> (Validator, BlsSignature) {
    crate::Keys {
        ed25519: mesh_crypto::ed25519::SigningKey::from_seed(&[seed; 32]),
        bls: mesh_crypto::bls::BlsSecretKey::from_ikm(&[seed; 32]).unwrap(),
    }
    .member(weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_member as member;

    #[test]
    fn quorums_are_weighted() {
        let set = ValidatorSet::new(0, (1..=4).map(|s| member(s, 1)).collect()).unwrap();
        assert!(!set.is_quorum(2));
        assert!(set.is_quorum(3));
        assert!(!set.is_weak_quorum(1));
        assert!(set.is_weak_quorum(2));
        let set = ValidatorSet::new(
            0,
            vec![member(1, 5), member(2, 1), member(3, 1), member(4, 1)],
        )
        .unwrap();
        // 8 total: a quorum needs more than 16/3, i.e. 6.
        assert!(!set.is_quorum(5));
        assert!(set.is_quorum(6));
    }

    #[test]
    fn bad_members_are_rejected() {
        let (mut v, pop) = member(1, 1);
        let (_, other_pop) = member(2, 1);
        assert!(ValidatorSet::new(0, vec![(v.clone(), other_pop)]).is_err());
        v.weight = MAX_WEIGHT + 1;
        assert!(ValidatorSet::new(0, vec![(v.clone(), pop)]).is_err());
        v.weight = 0;
        assert!(
            ValidatorSet::new(0, vec![(v.clone(), pop)]).is_err(),
            "no weight at all"
        );
        assert!(ValidatorSet::new(0, vec![member(1, 1), member(1, 1)]).is_err());
        assert!(ValidatorSet::new(0, vec![]).is_err());
    }

    #[test]
    fn removed_members_keep_their_index_but_never_lead() {
        let mut members: Vec<Validator> = (1..=4).map(|s| member(s, 1).0).collect();
        members[1].weight = 0;
        let set = ValidatorSet::from_verified(1, members).unwrap();
        let leaders: Vec<usize> = (0..6).map(|v| set.primary(v)).collect();
        assert_eq!(leaders, vec![0, 2, 3, 0, 2, 3]);
        assert_eq!(set.total_weight(), 3);
        assert!(!set.is_voter(1));
        assert_eq!(set.len(), 4);
    }

    #[test]
    fn encoding_round_trips() {
        let set = ValidatorSet::new(7, (1..=4).map(|s| member(s, s.into())).collect()).unwrap();
        let mut out = Vec::new();
        set.encode(&mut out);
        let mut r = Reader::new(&out);
        let back = ValidatorSet::decode(&mut r).unwrap();
        r.finish().unwrap();
        assert_eq!(back, set);
        assert_eq!(back.digest(), set.digest());
    }
}
