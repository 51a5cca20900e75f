//! Reconfiguration: the validator set changes only through committed blocks.
//!
//! A validator proposes a [`Change`] (admit a candidate, remove a member, set a weight, set
//! the admission puzzle) for the current epoch by submitting it as a request of kind
//! [`RequestKind::Change`](crate::message::RequestKind) under its own id (see
//! [`proposal_payload`]). As it executes blocks, every replica counts, for each distinct
//! change, the weight of the validators that proposed it; a change proposed by more than two
//! thirds of the weight is *adopted*. This is replicated state: every replica (and every light
//! client) executing the same blocks adopts the same changes at the same height. Counting is
//! idempotent (a validator counts once per change and epoch, an adopted change is not counted
//! again in its epoch, a proposal for another epoch is ignored), so it looks at every change
//! request in a block, duplicates included: a light client, which keeps no client table,
//! counts exactly as a replica does.
//!
//! Adopted changes take effect together at the *boundary*: the first checkpoint height at
//! least `window` blocks above the height of the first adoption. Blocks up to the boundary are
//! certified by the old set; from the next one on, by the new set, in the next epoch (every
//! vote and checkpoint signature names its epoch, so a vote cannot count in another epoch).
//!
//! Why `window` blocks later: a replica proposes and votes only within `window` blocks above
//! its stable checkpoint, which is at most its executed height. So when the first adoption
//! executes at height `k`, no honest replica that has not yet executed `k` can vote above
//! `k - 1 + window`, below the boundary; and every replica that has executed `k` knows the
//! boundary and keeps messages above it until it has executed the boundary and switched sets.
//! No honest vote above the boundary is ever cast in the old epoch.
//!
//! Indices are stable: a removed validator keeps its index with weight 0 (it no longer votes
//! or leads), an admitted one takes the next index. Signer bitmaps therefore name the same
//! members in every epoch, and a message's sender has one index whatever the epoch.
//!
//! Admission: a candidate shows a BLS proof of possession of its vote key and a proof of
//! computation ([`admission`](crate::admission)) for its DID (`did:key` of its node id) and the
//! current epoch, at the difficulty the set decided ([`Change::SetPuzzle`]). Both are checked
//! once per replica, when the first validator's proposal for it executes.

use std::collections::{BTreeMap, BTreeSet};

use mesh_crypto::bls::{BlsPublicKey, BlsSignature};
use mesh_types::NodeId;
use mesh_types::wire::{Reader, put_varint};

use crate::admission::{Proof, Puzzle};
use crate::error::{Error, Result};
use crate::validators::{MAX_WEIGHT, Validator, ValidatorSet};

/// Most distinct changes proposed and not yet adopted at once.
pub const MAX_OPEN_CHANGES: usize = 64;
/// Most open changes one validator may have proposed at once.
pub const MAX_OPEN_PER_VALIDATOR: usize = 8;

/// A candidate's application to join the validator set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The candidate: its node id, BLS key and weight (1 ..= [`MAX_WEIGHT`]).
    pub validator: Validator,
    /// Its BLS proof of possession.
    pub possession: BlsSignature,
    /// Its proof of computation for the current epoch's puzzle.
    pub proof: Proof,
}

/// A change to the validator set or its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Admits a candidate validator.
    Admit(Box<Admission>),
    /// Removes a validator (it keeps its index with weight 0).
    Remove(NodeId),
    /// Sets a validator's weight (1 ..= [`MAX_WEIGHT`]; removal is [`Change::Remove`]).
    SetWeight {
        /// The validator.
        id: NodeId,
        /// Its new weight.
        weight: u32,
    },
    /// Sets the admission puzzle (its `epoch` field is ignored: proofs are always bound to
    /// the epoch in force).
    SetPuzzle(Puzzle),
}

const ADMIT: u8 = 1;
const REMOVE: u8 = 2;
const SET_WEIGHT: u8 = 3;
const SET_PUZZLE: u8 = 4;

impl Change {
    /// The canonical encoding (the payload of a change request).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        match self {
            Self::Admit(a) => {
                let Admission {
                    validator,
                    possession,
                    proof,
                } = a.as_ref();
                out.push(ADMIT);
                out.extend_from_slice(validator.id.as_bytes());
                out.extend_from_slice(&validator.bls.to_bytes());
                put_varint(&mut out, u64::from(validator.weight));
                out.extend_from_slice(&possession.to_bytes());
                put_varint(&mut out, proof.nonce);
            }
            Self::Remove(id) => {
                out.push(REMOVE);
                out.extend_from_slice(id.as_bytes());
            }
            Self::SetWeight { id, weight } => {
                out.push(SET_WEIGHT);
                out.extend_from_slice(id.as_bytes());
                put_varint(&mut out, u64::from(*weight));
            }
            Self::SetPuzzle(p) => {
                out.push(SET_PUZZLE);
                out.push(p.difficulty);
                put_varint(&mut out, u64::from(p.memory_kib));
                put_varint(&mut out, u64::from(p.passes));
            }
        }
        out
    }

    /// Decodes [`Change::encode`]; only canonical encodings are accepted.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let m = || Error::malformed("change");
        let mut r = Reader::new(bytes);
        let u32_of = |v: u64, what: &'static str| {
            u32::try_from(v).map_err(|_| Error::invalid(what, "too large"))
        };
        let change = match r.u8().map_err(m())? {
            ADMIT => {
                let id = NodeId(r.array().map_err(m())?);
                let bls = BlsPublicKey::from_bytes(&r.array().map_err(m())?)?;
                let weight = u32_of(r.varint().map_err(m())?, "weight")?;
                let possession = BlsSignature::from_bytes(&r.array().map_err(m())?)?;
                let nonce = r.varint().map_err(m())?;
                Self::Admit(Box::new(Admission {
                    validator: Validator { id, bls, weight },
                    possession,
                    proof: Proof { nonce },
                }))
            }
            REMOVE => Self::Remove(NodeId(r.array().map_err(m())?)),
            SET_WEIGHT => Self::SetWeight {
                id: NodeId(r.array().map_err(m())?),
                weight: u32_of(r.varint().map_err(m())?, "weight")?,
            },
            SET_PUZZLE => Self::SetPuzzle(Puzzle {
                epoch: 0,
                difficulty: r.u8().map_err(m())?,
                memory_kib: u32_of(r.varint().map_err(m())?, "puzzle memory")?,
                passes: u32_of(r.varint().map_err(m())?, "puzzle passes")?,
            }),
            _ => return Err(Error::invalid("change", "unknown kind")),
        };
        r.finish().map_err(m())?;
        Ok(change)
    }
}

/// The payload of a change request: the epoch it is proposed for, then the change.
pub fn proposal_payload(epoch: u64, change: &Change) -> Vec<u8> {
    let mut out = Vec::with_capacity(266);
    put_varint(&mut out, epoch);
    out.extend_from_slice(&change.encode());
    out
}

/// Whether `request` carries a valid signature by its client.
pub(crate) fn verify_signature(request: &crate::message::Request) -> bool {
    let Some(signature) = &request.signature else {
        return false;
    };
    mesh_crypto::ed25519::VerifyingKey::from_bytes(request.client.as_bytes())
        .is_ok_and(|key| key.verify(&request.signing_bytes(), signature).is_ok())
}

/// The `did:key` DID of a node id (an Ed25519 public key): `did:key:z` + base58btc of the
/// multicodec `ed25519-pub` prefix (0xed 0x01) and the key. Proofs of computation are bound
/// to it.
pub fn did_key(id: &NodeId) -> String {
    let mut bytes = Vec::with_capacity(34);
    bytes.extend_from_slice(&[0xed, 0x01]);
    bytes.extend_from_slice(id.as_bytes());
    format!("did:key:z{}", bs58::encode(bytes).into_string())
}

/// Where a ledger starts: the genesis validator set and the protocol parameters every replica
/// and light client must agree on to follow reconfigurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genesis {
    /// The validator set of epoch 0.
    pub set: ValidatorSet,
    /// Blocks between checkpoints (PBFT's K).
    pub checkpoint_interval: u64,
    /// The watermark window.
    pub window: u64,
    /// The admission puzzle of epoch 0 (its epoch field is ignored).
    pub puzzle: Puzzle,
}

const GENESIS_TAG: &[u8] = b"agentmesh/genesis/v1";

impl Genesis {
    /// Builds a genesis from the set and the replica configuration's protocol parameters.
    pub fn new(set: ValidatorSet, cfg: &crate::Config) -> Self {
        Self {
            set,
            checkpoint_interval: cfg.checkpoint_interval,
            window: cfg.window,
            puzzle: cfg.admission,
        }
    }

    /// The canonical encoding (what a ledger records).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(GENESIS_TAG.len() + 64 + 136 * self.set.len());
        out.extend_from_slice(GENESIS_TAG);
        self.set.encode(&mut out);
        put_varint(&mut out, self.checkpoint_interval);
        put_varint(&mut out, self.window);
        out.push(self.puzzle.difficulty);
        put_varint(&mut out, u64::from(self.puzzle.memory_kib));
        put_varint(&mut out, u64::from(self.puzzle.passes));
        out
    }

    /// Decodes [`Genesis::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let m = || Error::malformed("genesis");
        let Some(rest) = bytes.strip_prefix(GENESIS_TAG) else {
            return Err(Error::invalid("genesis", "not a genesis record"));
        };
        let mut r = Reader::new(rest);
        let set = ValidatorSet::decode(&mut r)?;
        let checkpoint_interval = r.varint().map_err(m())?;
        let window = r.varint().map_err(m())?;
        let difficulty = r.u8().map_err(m())?;
        let memory_kib = u32::try_from(r.varint().map_err(m())?)
            .map_err(|_| Error::invalid("genesis", "puzzle memory too large"))?;
        let passes = u32::try_from(r.varint().map_err(m())?)
            .map_err(|_| Error::invalid("genesis", "puzzle passes too large"))?;
        r.finish().map_err(m())?;
        if checkpoint_interval == 0 || window == 0 {
            return Err(Error::invalid(
                "genesis",
                "zero checkpoint interval or window",
            ));
        }
        Ok(Self {
            set,
            checkpoint_interval,
            window,
            puzzle: Puzzle {
                epoch: 0,
                difficulty,
                memory_kib,
                passes,
            },
        })
    }

    /// The hash a ledger's first block links to.
    pub fn hash(&self) -> mesh_types::Digest {
        mesh_types::Digest::of_parts([b"agentmesh/genesis-hash/v1".as_slice(), &self.encode()])
    }
}

/// What became of a proposal when its block executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proposal {
    /// Counted; the change is not adopted yet.
    Counted,
    /// This proposal made the change adopted; it takes effect at the boundary.
    Adopted {
        /// The height after which the new set certifies blocks.
        boundary: u64,
    },
    /// Not counted, for the reason given (the block still commits).
    Ignored(&'static str),
}

/// The replicated reconfiguration state: the set in force, open proposals, adopted changes
/// and the pending boundary.
#[derive(Debug, Clone)]
pub struct Governance {
    set: ValidatorSet,
    previous: Option<(u64, ValidatorSet)>,
    puzzle: Puzzle,
    checkpoint_interval: u64,
    window: u64,
    /// Open changes by canonical encoding, with the indices of the validators proposing them.
    open: BTreeMap<Vec<u8>, (Change, BTreeSet<usize>)>,
    adopted: Vec<Change>,
    boundary: Option<u64>,
}

impl Governance {
    /// The state at genesis.
    pub fn new(genesis: &Genesis) -> Self {
        Self {
            set: genesis.set.clone(),
            previous: None,
            puzzle: genesis.puzzle,
            checkpoint_interval: genesis.checkpoint_interval.max(1),
            window: genesis.window,
            open: BTreeMap::new(),
            adopted: Vec::new(),
            boundary: None,
        }
    }

    /// The validator set in force (certifying blocks above the last boundary).
    pub fn set(&self) -> &ValidatorSet {
        &self.set
    }

    /// The set that certifies the block at `seq`: the one in force, or the one before it for
    /// blocks up to the last boundary.
    pub fn set_for(&self, seq: u64) -> &ValidatorSet {
        match &self.previous {
            Some((boundary, old)) if seq <= *boundary => old,
            _ => &self.set,
        }
    }

    /// The set before the last switch and the height of that switch, if any.
    pub fn previous(&self) -> Option<(u64, &ValidatorSet)> {
        self.previous.as_ref().map(|(b, s)| (*b, s))
    }

    /// The admission puzzle in force, bound to the current epoch.
    pub fn puzzle(&self) -> Puzzle {
        Puzzle {
            epoch: self.set.epoch(),
            ..self.puzzle
        }
    }

    /// The height at which adopted changes take effect, if any are pending.
    pub fn boundary(&self) -> Option<u64> {
        self.boundary
    }

    /// Adopted changes waiting for the boundary.
    pub fn adopted(&self) -> &[Change] {
        &self.adopted
    }

    /// Counts the change request `request` (kind [`RequestKind::Change`], payload from
    /// [`proposal_payload`]) executed in the block at `seq`. Change requests must carry the
    /// proposing validator's Ed25519 signature in every request mode: a validator relaying
    /// others' requests could otherwise propose in their name.
    ///
    /// [`RequestKind::Change`]: crate::message::RequestKind::Change
    pub fn propose(&mut self, seq: u64, request: &crate::message::Request) -> Proposal {
        if request.kind != crate::message::RequestKind::Change {
            return Proposal::Ignored("not a change request");
        }
        if !verify_signature(request) {
            return Proposal::Ignored("unsigned or badly signed change");
        }
        self.count(seq, &request.client, &request.payload)
    }

    /// Counts an authenticated proposal.
    fn count(&mut self, seq: u64, client: &NodeId, payload: &[u8]) -> Proposal {
        let Some(voter) = self.set.index_of(client).filter(|&i| self.set.is_voter(i)) else {
            return Proposal::Ignored("not proposed by a validator");
        };
        let mut r = Reader::new(payload);
        let Ok(epoch) = r.varint() else {
            return Proposal::Ignored("malformed change");
        };
        if epoch != self.set.epoch() {
            return Proposal::Ignored("proposed for another epoch");
        }
        let body = &payload[r.position()..];
        let Ok(change) = Change::decode(body) else {
            return Proposal::Ignored("malformed change");
        };
        let key = change.encode();
        if key != body {
            return Proposal::Ignored("non-canonical change");
        }
        if self.adopted.contains(&change) {
            return Proposal::Ignored("already adopted in this epoch");
        }
        if !self.open.contains_key(&key) {
            if self.open.len() >= MAX_OPEN_CHANGES {
                return Proposal::Ignored("too many open changes");
            }
            let mine = self
                .open
                .values()
                .filter(|(_, voters)| voters.contains(&voter))
                .count();
            if mine >= MAX_OPEN_PER_VALIDATOR {
                return Proposal::Ignored("this validator has too many open changes");
            }
            if let Err(why) = self.check(&change) {
                return Proposal::Ignored(why);
            }
            self.open.insert(key.clone(), (change, BTreeSet::new()));
        }
        let Some((_, voters)) = self.open.get_mut(&key) else {
            return Proposal::Ignored("unreachable: the change was just opened");
        };
        voters.insert(voter);
        let weight: u64 = voters.iter().map(|&i| self.set.weight(i)).sum();
        if !self.set.is_quorum(weight) {
            return Proposal::Counted;
        }
        let Some((change, _)) = self.open.remove(&key) else {
            return Proposal::Counted;
        };
        self.adopted.push(change);
        let boundary = *self.boundary.get_or_insert_with(|| {
            let at = seq.saturating_add(self.window);
            at.div_ceil(self.checkpoint_interval)
                .saturating_mul(self.checkpoint_interval)
        });
        Proposal::Adopted { boundary }
    }

    /// Whether `change` may be proposed against the set in force.
    fn check(&self, change: &Change) -> std::result::Result<(), &'static str> {
        match change {
            Change::Admit(a) => {
                let Admission {
                    validator,
                    possession,
                    proof,
                } = a.as_ref();
                if self.set.index_of(&validator.id).is_some() {
                    return Err("the candidate is or was a member");
                }
                if !(1..=MAX_WEIGHT).contains(&validator.weight) {
                    return Err("candidate weight out of range");
                }
                if mesh_crypto::ed25519::VerifyingKey::from_bytes(validator.id.as_bytes()).is_err()
                {
                    return Err("candidate id is not an Ed25519 key");
                }
                if validator.bls.verify_possession(possession).is_err() {
                    return Err("candidate BLS proof of possession does not verify");
                }
                if self
                    .puzzle()
                    .verify(&did_key(&validator.id), proof)
                    .is_err()
                {
                    return Err("candidate proof of computation does not verify");
                }
                Ok(())
            }
            Change::Remove(id) => match self.set.index_of(id) {
                Some(i) if self.set.is_voter(i) => {
                    if self.set.total_weight() == self.set.weight(i) {
                        Err("the last voting member cannot be removed")
                    } else {
                        Ok(())
                    }
                }
                _ => Err("not a voting member"),
            },
            Change::SetWeight { id, weight } => {
                if !(1..=MAX_WEIGHT).contains(weight) {
                    return Err("weight out of range");
                }
                match self.set.index_of(id) {
                    Some(i) if self.set.is_voter(i) => Ok(()),
                    _ => Err("not a voting member"),
                }
            }
            Change::SetPuzzle(p) => Puzzle {
                epoch: self.set.epoch(),
                ..*p
            }
            .validate()
            .map_err(|_| "puzzle parameters out of bounds"),
        }
    }

    /// Ends the block at `seq`: at the boundary, applies the adopted changes in adoption
    /// order (skipping any that no longer applies) and returns the new set, in the next
    /// epoch; open proposals are dropped with the old epoch.
    pub fn end_block(&mut self, seq: u64) -> Option<&ValidatorSet> {
        if self.boundary != Some(seq) {
            return None;
        }
        let mut members = self.set.members().to_vec();
        for change in std::mem::take(&mut self.adopted) {
            let mut next = members.clone();
            match change {
                Change::Admit(a) => {
                    if next.iter().all(|v| v.id != a.validator.id) {
                        next.push(a.validator);
                    }
                }
                Change::Remove(id) => {
                    if let Some(v) = next.iter_mut().find(|v| v.id == id) {
                        v.weight = 0;
                    }
                }
                Change::SetWeight { id, weight } => {
                    if let Some(v) = next.iter_mut().find(|v| v.id == id && v.weight > 0) {
                        v.weight = weight;
                    }
                }
                Change::SetPuzzle(p) => self.puzzle = p,
            }
            // A change that would leave no valid set (no weight left, too many members) is
            // skipped; the others still apply.
            if self
                .set
                .with_members(self.set.epoch() + 1, next.clone())
                .is_ok()
            {
                members = next;
            }
        }
        let next = self
            .set
            .with_members(self.set.epoch() + 1, members)
            .unwrap_or_else(|_| {
                let mut same = self.set.clone();
                same.set_epoch(self.set.epoch() + 1);
                same
            });
        let old = std::mem::replace(&mut self.set, next);
        self.previous = Some((seq, old));
        self.open.clear();
        self.boundary = None;
        Some(&self.set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::MIN_MEMORY_KIB;
    use mesh_crypto::ed25519::SigningKey;

    use crate::test_member as member;

    fn genesis(weights: &[u32]) -> Genesis {
        let members = weights
            .iter()
            .enumerate()
            .map(|(i, w)| member(i as u8 + 1, *w))
            .collect();
        Genesis {
            set: ValidatorSet::new(0, members).unwrap(),
            checkpoint_interval: 4,
            window: 8,
            puzzle: Puzzle {
                epoch: 0,
                difficulty: 0,
                memory_kib: MIN_MEMORY_KIB,
                passes: 1,
            },
        }
    }

    fn id(seed: u8) -> NodeId {
        member(seed, 1).0.id
    }

    impl Change {
        fn at(&self, epoch: u64) -> Vec<u8> {
            proposal_payload(epoch, self)
        }
    }

    #[test]
    fn did_key_matches_the_w3c_vector() {
        // did:key test vector (seed 0): public key 3b6a27bc...
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            let hex = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        assert_eq!(
            did_key(&NodeId(key)),
            "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
        );
    }

    #[test]
    fn changes_and_genesis_round_trip_and_reject_garbage() {
        let (v, pop) = member(9, 2);
        let changes = [
            Change::Admit(Box::new(Admission {
                validator: v,
                possession: pop,
                proof: Proof { nonce: 77 },
            })),
            Change::Remove(id(1)),
            Change::SetWeight {
                id: id(2),
                weight: 5,
            },
            Change::SetPuzzle(Puzzle {
                epoch: 0,
                difficulty: 3,
                memory_kib: MIN_MEMORY_KIB,
                passes: 2,
            }),
        ];
        for c in &changes {
            let bytes = c.encode();
            assert_eq!(&Change::decode(&bytes).unwrap(), c);
            for cut in 0..bytes.len() {
                assert!(Change::decode(&bytes[..cut]).is_err());
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(Change::decode(&long).is_err());
        }
        assert!(Change::decode(&[9]).is_err());
        let g = genesis(&[1, 1, 1, 1]);
        let bytes = g.encode();
        assert_eq!(Genesis::decode(&bytes).unwrap(), g);
        assert!(Genesis::decode(&bytes[1..]).is_err());
        assert!(Genesis::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_change_needs_a_quorum_and_takes_effect_at_the_boundary() {
        let mut g = Governance::new(&genesis(&[1, 1, 1, 1]));
        let change = Change::SetWeight {
            id: id(4),
            weight: 3,
        };
        let payload = change.at(0);
        assert!(matches!(
            g.count(5, &id(1), &change.at(1)),
            Proposal::Ignored("proposed for another epoch")
        ));
        assert_eq!(g.count(5, &id(1), &payload), Proposal::Counted);
        // The same validator twice still counts once.
        assert_eq!(g.count(5, &id(1), &payload), Proposal::Counted);
        assert_eq!(g.count(6, &id(2), &payload), Proposal::Counted);
        // Not a validator: ignored.
        assert!(matches!(g.count(6, &id(9), &payload), Proposal::Ignored(_)));
        // The third of four makes a quorum at height 7: the boundary is the first
        // checkpoint (every 4) at or above 7 + window (8).
        assert_eq!(
            g.count(7, &id(3), &payload),
            Proposal::Adopted { boundary: 16 }
        );
        assert_eq!(g.adopted(), std::slice::from_ref(&change));
        // A duplicate of an adopted proposal changes nothing.
        assert!(matches!(
            g.count(8, &id(4), &payload),
            Proposal::Ignored("already adopted in this epoch")
        ));
        for seq in 8..16 {
            assert!(g.end_block(seq).is_none());
        }
        let set = g.end_block(16).unwrap();
        assert_eq!(set.epoch(), 1);
        assert_eq!(set.total_weight(), 6);
        assert_eq!(g.set_for(16).epoch(), 0);
        assert_eq!(g.set_for(17).epoch(), 1);
        assert!(g.boundary().is_none());
    }

    #[test]
    fn weights_decide_quorums_and_removed_members_stop_counting() {
        // Validator 1 holds 3 of 6: with one other (4 of 6) it is not a quorum, with two
        // (5 > 2/3 of 6) it is.
        let mut g = Governance::new(&genesis(&[3, 1, 1, 1]));
        let remove = Change::Remove(id(4)).at(0);
        assert_eq!(g.count(1, &id(1), &remove), Proposal::Counted);
        assert_eq!(g.count(1, &id(2), &remove), Proposal::Counted);
        assert_eq!(
            g.count(1, &id(3), &remove),
            Proposal::Adopted { boundary: 12 }
        );
        let set = g.end_block(12).unwrap().clone();
        assert_eq!(set.total_weight(), 5);
        assert_eq!(set.len(), 4, "the removed member keeps its index");
        assert!(!set.is_voter(3));
        // The removed member's proposals no longer count; a second removal is refused.
        assert!(matches!(
            g.count(13, &id(4), &Change::Remove(id(1)).at(1)),
            Proposal::Ignored(_)
        ));
        assert!(matches!(
            g.count(13, &id(1), &Change::Remove(id(4)).at(1)),
            Proposal::Ignored("not a voting member")
        ));
    }

    #[test]
    fn admission_needs_possession_and_computation() {
        let mut g = Governance::new(&genesis(&[1, 1, 1]));
        let (candidate, pop) = member(9, 1);
        let puzzle = g.puzzle();
        let proof = puzzle
            .mint(&did_key(&candidate.id), 0, 100, |_| true)
            .unwrap()
            .unwrap();
        let (_, wrong_pop) = member(8, 1);
        let forged = Change::Admit(Box::new(Admission {
            validator: candidate.clone(),
            possession: wrong_pop,
            proof,
        }));
        assert_eq!(
            g.count(1, &id(1), &forged.at(0)),
            Proposal::Ignored("candidate BLS proof of possession does not verify")
        );
        // A harder puzzle refuses a proof minted for difficulty 0 (unless lucky: then mint
        // the counterexample explicitly).
        let hard = Puzzle {
            difficulty: 24,
            ..puzzle
        };
        let set_hard = Change::SetPuzzle(hard).at(0);
        for v in 1..=3 {
            let _ = g.count(1, &id(v), &set_hard);
        }
        g.end_block(12).unwrap();
        assert_eq!(g.puzzle().difficulty, 24);
        assert_eq!(g.puzzle().epoch, 1);
        let stale = Change::Admit(Box::new(Admission {
            validator: candidate.clone(),
            possession: pop,
            proof,
        }));
        assert_eq!(
            g.count(13, &id(1), &stale.at(1)),
            Proposal::Ignored("candidate proof of computation does not verify")
        );
        // Back to difficulty 0: a proof for the new epoch admits the candidate.
        let easy = Change::SetPuzzle(puzzle).at(1);
        for v in 1..=3 {
            let _ = g.count(13, &id(v), &easy);
        }
        g.end_block(24).unwrap();
        let proof = g
            .puzzle()
            .mint(&did_key(&candidate.id), 0, 100, |_| true)
            .unwrap()
            .unwrap();
        let admit = Change::Admit(Box::new(Admission {
            validator: candidate.clone(),
            possession: pop,
            proof,
        }))
        .at(2);
        for v in 1..=2 {
            assert_eq!(g.count(25, &id(v), &admit), Proposal::Counted);
        }
        assert_eq!(
            g.count(26, &id(3), &admit),
            Proposal::Adopted { boundary: 36 }
        );
        let set = g.end_block(36).unwrap();
        assert_eq!(set.len(), 4);
        assert_eq!(set.index_of(&candidate.id), Some(3));
        assert_eq!(set.epoch(), 3);
    }

    #[test]
    fn proposals_must_be_signed_by_the_proposing_validator() {
        let mut g = Governance::new(&genesis(&[1, 1, 1, 1]));
        let change = Change::SetWeight {
            id: id(2),
            weight: 2,
        };
        let key = |seed: u8| SigningKey::from_seed(&[seed; 32]);
        let unsigned = crate::message::Request::change(id(1), 1, 0, &change);
        assert_eq!(
            g.propose(1, &unsigned),
            Proposal::Ignored("unsigned or badly signed change")
        );
        // Signed by validator 2 in validator 1's name.
        let forged = unsigned.clone().sign(&key(2));
        assert_eq!(
            g.propose(1, &forged),
            Proposal::Ignored("unsigned or badly signed change")
        );
        let app = crate::message::Request::new(id(1), 2, change.encode()).sign(&key(1));
        assert_eq!(
            g.propose(1, &app),
            Proposal::Ignored("not a change request")
        );
        for v in 1..=2 {
            let r = crate::message::Request::change(id(v), 1, 0, &change).sign(&key(v));
            assert_eq!(g.propose(1, &r), Proposal::Counted);
        }
        let r = crate::message::Request::change(id(3), 1, 0, &change).sign(&key(3));
        assert_eq!(g.propose(1, &r), Proposal::Adopted { boundary: 12 });
    }

    #[test]
    fn open_proposals_are_bounded() {
        let mut g = Governance::new(&genesis(&[1, 1, 1, 1]));
        for w in 1..=MAX_OPEN_PER_VALIDATOR as u32 {
            let c = Change::SetWeight {
                id: id(2),
                weight: w,
            };
            assert_eq!(g.count(1, &id(1), &c.at(0)), Proposal::Counted);
        }
        let one_more = Change::SetWeight {
            id: id(2),
            weight: 100,
        };
        assert_eq!(
            g.count(1, &id(1), &one_more.at(0)),
            Proposal::Ignored("this validator has too many open changes")
        );
        // Another validator may still propose it.
        assert_eq!(g.count(1, &id(3), &one_more.at(0)), Proposal::Counted);
    }
}
