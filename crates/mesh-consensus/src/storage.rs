//! What a replica persists, behind a narrow trait, and its implementation over `mesh-store`.
//!
//! A replica writes two things: its *vote state* (view, what it pre-prepared, its prepare
//! certificates and its stable checkpoint), rewritten whole after any step that changed it and
//! before that step's messages leave; and the *ledger*, one record per committed block,
//! appended in height order. Both writes return only when durable, so a replica restarted
//! from its storage never contradicts a vote it sent.

use mesh_store::{Kv, Log, Store};
use mesh_types::Digest;
use mesh_types::wire::{Reader, put_varint};

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::message::{Batch, Certificate, CheckpointCert, CommittedBlock, Limits};

/// The storage a [`Replica`](crate::Replica) needs. Writes must be durable when they return.
pub trait Storage {
    /// The last saved vote state, if any.
    fn load_state(&self) -> Result<Option<Vec<u8>>>;
    /// Replaces the vote state, stores the batches this replica proposed or voted for since
    /// the last call and forgets the ones below its stable checkpoint, all at once. A batch
    /// a replica voted to prepare must outlive a crash: if every replica holding it restarted
    /// without it, a prepared block could never execute.
    fn save_state(&mut self, state: &[u8], batches: &[Arc<Batch>], forget: &[Digest])
    -> Result<()>;
    /// A batch stored by [`Storage::save_state`], if still held.
    fn load_batch(&self, digest: &Digest) -> Result<Option<Batch>>;
    /// Appends the block at height `last_seq() + 1`.
    fn append_block(&mut self, block: &CommittedBlock) -> Result<()>;
    /// The height of the last appended block (0 if none).
    fn last_seq(&self) -> Result<u64>;
    /// The block at `seq`, if held.
    fn block(&self, seq: u64) -> Result<Option<CommittedBlock>>;
    /// Blocks from `from` on, at most `max` of them and about `max_bytes` (at least one if
    /// any exists).
    fn blocks(&self, from: u64, max: usize, max_bytes: usize) -> Result<Vec<CommittedBlock>>;
    /// The genesis validator set this ledger started from (its canonical encoding), if any.
    fn load_genesis(&self) -> Result<Option<Vec<u8>>>;
    /// Records the genesis validator set (once, when the ledger is created).
    fn save_genesis(&mut self, genesis: &[u8]) -> Result<()>;
}

/// The key of a stored batch in the state tree.
fn batch_key(digest: &Digest) -> Vec<u8> {
    let mut key = b"batch/".to_vec();
    key.extend_from_slice(digest.as_bytes());
    key
}

/// [`Storage`] over any [`mesh_store::Store`]: the ledger is the log `consensus.ledger`
/// (record `i` holds height `i + 1`), the vote state the key `state`, the genesis the key
/// `genesis` and the batches voted for `batch/<digest>` of the tree `consensus.state`. Over a `DiskStore` this is the shipped path; over a `MemStore` it is
/// what the simulator restarts replicas from.
#[derive(Debug)]
pub struct StoreStorage<S: Store> {
    ledger: S::Log,
    state: S::Kv,
    limits: Limits,
}

impl<S: Store> StoreStorage<S> {
    /// Opens (or creates) the consensus log and tree in `store`.
    pub fn open(store: &S, limits: Limits) -> Result<Self> {
        Ok(Self {
            ledger: store.log("consensus.ledger")?,
            state: store.kv("consensus.state")?,
            limits,
        })
    }
}

impl<S: Store> Storage for StoreStorage<S> {
    fn load_state(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.state.get(b"state")?)
    }

    fn save_state(
        &mut self,
        state: &[u8],
        batches: &[Arc<Batch>],
        forget: &[Digest],
    ) -> Result<()> {
        if batches.is_empty() && forget.is_empty() {
            return Ok(self.state.put(b"state", state)?);
        }
        let mut write = mesh_store::Batch::new();
        for d in forget {
            write.delete(batch_key(d));
        }
        for b in batches {
            write.put(batch_key(&b.digest()), b.bytes().to_vec());
        }
        write.put(b"state".to_vec(), state.to_vec());
        Ok(self.state.apply(&write)?)
    }

    fn load_batch(&self, digest: &Digest) -> Result<Option<Batch>> {
        self.state
            .get(&batch_key(digest))?
            .map(|bytes| Batch::decode(&bytes, &self.limits))
            .transpose()
    }

    fn append_block(&mut self, block: &CommittedBlock) -> Result<()> {
        let next = self.ledger.bounds()?.next;
        if block.seq() != next + 1 {
            return Err(Error::invalid(
                "ledger append",
                format!("block {} after height {next}", block.seq()),
            ));
        }
        self.ledger.append_one(&block.to_bytes())?;
        Ok(())
    }

    fn last_seq(&self) -> Result<u64> {
        Ok(self.ledger.bounds()?.next)
    }

    fn block(&self, seq: u64) -> Result<Option<CommittedBlock>> {
        let Some(index) = seq.checked_sub(1) else {
            return Ok(None);
        };
        self.ledger
            .get(index)?
            .map(|b| CommittedBlock::from_bytes(&b, &self.limits))
            .transpose()
    }

    fn load_genesis(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.state.get(b"genesis")?)
    }

    fn save_genesis(&mut self, genesis: &[u8]) -> Result<()> {
        Ok(self.state.put(b"genesis", genesis)?)
    }

    fn blocks(&self, from: u64, max: usize, max_bytes: usize) -> Result<Vec<CommittedBlock>> {
        let from = from.max(1);
        self.ledger
            .scan(from - 1, max, max_bytes)?
            .into_iter()
            .map(|(_, b)| CommittedBlock::from_bytes(&b, &self.limits))
            .collect()
    }
}

/// The durable part of a replica's protocol state for one height.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotRecord {
    pub(crate) seq: u64,
    /// The `(view, digest)` this replica last accepted a pre-prepare for (and so voted to
    /// prepare); it must never vote for another digest in that view.
    pub(crate) accepted: Option<(u64, Digest)>,
    /// The highest-view prepare certificate held (which this replica also commit-voted for).
    pub(crate) prepared: Option<Certificate>,
}

/// The durable vote state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct VoteState {
    /// The view this replica is in, or is changing to.
    pub(crate) view: u64,
    /// Whether it is changing to `view` (has not seen its new-view yet).
    pub(crate) changing: bool,
    /// Its latest stable checkpoint.
    pub(crate) checkpoint: Option<CheckpointCert>,
    /// Slots above the checkpoint with something to remember.
    pub(crate) slots: Vec<SlotRecord>,
}

impl VoteState {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.slots.len() * 240);
        out.push(1); // format version
        put_varint(&mut out, self.view);
        out.push(u8::from(self.changing));
        match &self.checkpoint {
            None => out.push(0),
            Some(c) => {
                out.push(1);
                c.encode(&mut out);
            }
        }
        put_varint(&mut out, self.slots.len() as u64);
        for s in &self.slots {
            put_varint(&mut out, s.seq);
            match &s.accepted {
                None => out.push(0),
                Some((v, d)) => {
                    out.push(1);
                    put_varint(&mut out, *v);
                    out.extend_from_slice(d.as_bytes());
                }
            }
            match &s.prepared {
                None => out.push(0),
                Some(c) => {
                    out.push(1);
                    c.encode(&mut out);
                }
            }
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let m = || Error::malformed("vote state");
        let mut r = Reader::new(bytes);
        if r.u8().map_err(m())? != 1 {
            return Err(Error::invalid("vote state", "unknown format version"));
        }
        let view = r.varint().map_err(m())?;
        let changing = match r.u8().map_err(m())? {
            0 => false,
            1 => true,
            _ => return Err(Error::invalid("vote state", "bad flag")),
        };
        let checkpoint = match r.u8().map_err(m())? {
            0 => None,
            1 => Some(CheckpointCert::decode(&mut r, limits)?),
            _ => return Err(Error::invalid("vote state", "bad flag")),
        };
        let n = r
            .varint_len("vote state slots", limits.max_prepared)
            .map_err(m())?;
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            let seq = r.varint().map_err(m())?;
            let accepted = match r.u8().map_err(m())? {
                0 => None,
                1 => Some((r.varint().map_err(m())?, Digest(r.array().map_err(m())?))),
                _ => return Err(Error::invalid("vote state", "bad flag")),
            };
            let prepared = match r.u8().map_err(m())? {
                0 => None,
                1 => Some(Certificate::decode(&mut r, limits)?),
                _ => return Err(Error::invalid("vote state", "bad flag")),
            };
            slots.push(SlotRecord {
                seq,
                accepted,
                prepared,
            });
        }
        r.finish().map_err(m())?;
        Ok(Self {
            view,
            changing,
            checkpoint,
            slots,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Batch, Phase, Request};
    use crate::scheme::VoteSig;
    use mesh_crypto::bls::SignerBitmap;
    use mesh_store::MemStore;
    use mesh_types::NodeId;
    use std::sync::Arc;

    fn block(seq: u64, prev: Digest) -> CommittedBlock {
        let batch = Arc::new(Batch::new(vec![Request::new(
            NodeId([1; 32]),
            seq,
            vec![1, 2],
        )]));
        CommittedBlock {
            prev,
            cert: Certificate {
                phase: Phase::Commit,
                view: 0,
                seq,
                digest: batch.digest(),
                signers: SignerBitmap::new(4).unwrap(),
                signature: VoteSig([1; 96]),
            },
            batch,
        }
    }

    #[test]
    fn ledger_appends_in_order_and_reads_back() {
        let store = MemStore::new();
        let mut s = StoreStorage::open(&store, Limits::default()).unwrap();
        assert_eq!(s.last_seq().unwrap(), 0);
        let b1 = block(1, Digest::default());
        let b2 = block(2, b1.hash());
        assert!(s.append_block(&b2).is_err());
        s.append_block(&b1).unwrap();
        s.append_block(&b2).unwrap();
        assert_eq!(s.last_seq().unwrap(), 2);
        assert_eq!(s.block(2).unwrap().unwrap(), b2);
        assert_eq!(s.block(0).unwrap(), None);
        assert_eq!(s.blocks(1, 10, 1 << 20).unwrap(), vec![b1, b2.clone()]);
        // A second handle on the same store sees the same ledger (a restart).
        let s2 = StoreStorage::open(&store, Limits::default()).unwrap();
        assert_eq!(s2.blocks(2, 10, 1).unwrap(), vec![b2]);
    }

    #[test]
    fn vote_state_round_trips() {
        let b = block(3, Digest::default());
        let state = VoteState {
            view: 4,
            changing: true,
            checkpoint: None,
            slots: vec![SlotRecord {
                seq: 3,
                accepted: Some((4, b.cert.digest)),
                prepared: Some(b.cert),
            }],
        };
        let bytes = state.encode();
        assert_eq!(
            VoteState::decode(&bytes, &Limits::default()).unwrap(),
            state
        );
        assert!(VoteState::decode(&bytes[..bytes.len() - 1], &Limits::default()).is_err());
    }
}
