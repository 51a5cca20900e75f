//! What a replica persists, behind a narrow trait, and its implementation over `mesh-store`.
//!
//! A replica writes two things: its *vote state* (view, what it pre-prepared, its prepare
//! certificates and its stable checkpoint), rewritten whole after any step that changed it and
//! before that step's messages leave; and the *ledger*, one record per committed block,
//! appended in height order. Both writes return only when durable, so a replica restarted
//! from its storage never contradicts a vote it sent.
//!
//! A block's batch is written once: the batches a replica votes for are stored with its vote
//! state (they must outlive a crash before the block commits), and when one of them commits
//! the ledger record holds the block's header and certificate and refers to that stored batch
//! instead of copying it. A block learnt by state transfer, whose batch was never stored,
//! is recorded whole.

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
    /// Whether a batch is stored under `digest` (by default: whether it loads).
    fn has_batch(&self, digest: &Digest) -> Result<bool> {
        Ok(self.load_batch(digest)?.is_some())
    }
    /// Appends the block at height `last_seq() + 1`. With `body_stored`, its batch is one
    /// that [`Storage::save_state`] stored and that will never be in a later `forget` list:
    /// the record may refer to it instead of holding a copy.
    fn append_block(&mut self, block: &CommittedBlock, body_stored: bool) -> Result<()>;
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

/// Ledger record tag: the whole block follows.
const RECORD_WHOLE: u8 = 1;
/// Ledger record tag: the block's `prev` and certificate follow; its batch is the one stored
/// under [`batch_key`] of the certificate's digest.
const RECORD_BY_REF: u8 = 2;

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

    fn has_batch(&self, digest: &Digest) -> Result<bool> {
        Ok(self.state.get(&batch_key(digest))?.is_some())
    }

    fn append_block(&mut self, block: &CommittedBlock, body_stored: bool) -> Result<()> {
        let next = self.ledger.bounds()?.next;
        if block.seq() != next + 1 {
            return Err(Error::invalid(
                "ledger append",
                format!("block {} after height {next}", block.seq()),
            ));
        }
        // The empty batch is never stored: it is always recorded inline (it costs a byte).
        let record = if body_stored && !block.batch.is_empty() {
            let mut out = Vec::with_capacity(256);
            out.push(RECORD_BY_REF);
            out.extend_from_slice(block.prev.as_bytes());
            block.cert.encode(&mut out);
            out
        } else {
            let mut out = Vec::with_capacity(block.batch.bytes().len() + 256);
            out.push(RECORD_WHOLE);
            block.encode(&mut out);
            out
        };
        self.ledger.append_one(&record)?;
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
            .map(|record| self.read_record(&record).map(|(block, _)| block))
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
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (_, record) in self.ledger.scan(from - 1, max, max_bytes)? {
            // Records that refer to a stored batch are small: count the batch too.
            let (block, size) = self.read_record(&record)?;
            if !out.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            out.push(block);
        }
        Ok(out)
    }
}

impl<S: Store> StoreStorage<S> {
    /// Decodes a ledger record (loading the batch it refers to); returns the block and its
    /// size with its batch.
    fn read_record(&self, record: &[u8]) -> Result<(CommittedBlock, usize)> {
        let m = || Error::malformed("ledger record");
        let mut r = Reader::new(record);
        let block = match r.u8().map_err(m())? {
            RECORD_WHOLE => CommittedBlock::decode(&mut r, &self.limits)?,
            RECORD_BY_REF => {
                let prev = Digest(r.array().map_err(m())?);
                let cert = Certificate::decode(&mut r, &self.limits)?;
                let batch = self.load_batch(&cert.digest)?.ok_or_else(|| {
                    Error::invalid(
                        "ledger record",
                        format!(
                            "the batch of block {} ({}) is missing from the store",
                            cert.seq,
                            cert.digest.short()
                        ),
                    )
                })?;
                CommittedBlock::new(prev, cert, Arc::new(batch))?
            }
            tag => {
                return Err(Error::invalid(
                    "ledger record",
                    format!("unknown record kind {tag}"),
                ));
            }
        };
        r.finish().map_err(m())?;
        let size = record.len() + block.batch.bytes().len();
        Ok((block, size))
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
                signatures: crate::Signatures::Aggregate(VoteSig([1; 96])),
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
        assert!(s.append_block(&b2, false).is_err());
        s.append_block(&b1, false).unwrap();
        s.append_block(&b2, false).unwrap();
        assert_eq!(s.last_seq().unwrap(), 2);
        assert_eq!(s.block(2).unwrap().unwrap(), b2);
        assert_eq!(s.block(0).unwrap(), None);
        assert_eq!(s.blocks(1, 10, 1 << 20).unwrap(), vec![b1, b2.clone()]);
        // A second handle on the same store sees the same ledger (a restart).
        let s2 = StoreStorage::open(&store, Limits::default()).unwrap();
        assert_eq!(s2.blocks(2, 10, 1).unwrap(), vec![b2]);
    }

    #[test]
    fn ledger_refers_to_stored_batches_and_counts_them_in_reads() {
        let store = MemStore::new();
        let mut s = StoreStorage::open(&store, Limits::default()).unwrap();
        let b1 = block(1, Digest::default());
        let b2 = block(2, b1.hash());
        s.save_state(b"vote state", std::slice::from_ref(&b1.batch), &[])
            .unwrap();
        s.append_block(&b1, true).unwrap();
        s.append_block(&b2, false).unwrap();
        // The first record is small: it refers to the stored batch rather than copying it.
        let log = store.log("consensus.ledger").unwrap();
        let first = log.get(0).unwrap().unwrap();
        assert!(first.len() < b1.to_bytes().len(), "{} bytes", first.len());
        assert_eq!(s.block(1).unwrap().unwrap(), b1);
        assert_eq!(
            s.blocks(1, 10, 1 << 20).unwrap(),
            vec![b1.clone(), b2.clone()]
        );
        // The byte budget counts the referred batch: one block when it does not fit both.
        let budget = b1.to_bytes().len() + 8;
        assert_eq!(s.blocks(1, 10, budget).unwrap(), vec![b1.clone()]);
        // A ledger whose referred batch went missing is reported, not misread.
        s.save_state(b"vote state", &[], &[b1.batch.digest()])
            .unwrap();
        assert!(s.block(1).is_err());
        assert!(s.blocks(1, 10, 1 << 20).is_err());
        // Unknown record kinds are refused.
        log.append_one(&[9, 9, 9]).unwrap();
        assert!(s.block(3).is_err());
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
