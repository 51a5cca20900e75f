//! The PBFT replica state machine.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use mesh_crypto::bls::{BlsSecretKey, SignerBitmap};
use mesh_crypto::ed25519::{self, SigningKey};
use mesh_types::{Digest, Instant, NodeId};

use crate::clients::ClientTable;
use crate::config::{Config, RequestAuth};
use crate::error::{Error, Result};
use crate::message::{
    Batch, Certificate, CheckpointCert, CommittedBlock, Message, NewView, Phase, Request,
    RequestKind, Signatures, ViewChange, checkpoint_bytes, vote_bytes,
};
use crate::reconfig::{Genesis, Governance, Proposal};
use crate::scheme::{BlsScheme, Scheme, VoteSig};
use crate::storage::{SlotRecord, Storage, VoteState};
use crate::validators::ValidatorSet;

/// Bytes of blocks sent in one state-transfer reply (at least one block is always sent).
const TRANSFER_BYTES: usize = 8 * 1024 * 1024;
/// State-transfer and batch requests served per peer between two retransmission ticks.
const SERVE_PER_TICK: u32 = 8;

/// `me` of a replica that is not a voting member (yet): matches no validator index.
const NOBODY: usize = usize::MAX;

/// A validator's secret keys.
pub struct Keys {
    /// The Ed25519 key whose public half is the validator's [`NodeId`].
    pub ed25519: SigningKey,
    /// The BLS key registered in the validator set.
    pub bls: BlsSecretKey,
}

impl Keys {
    /// This validator's entry for a validator set, with `weight`, and the proof of
    /// possession of its BLS key that [`ValidatorSet::new`] checks.
    pub fn member(&self, weight: u32) -> (crate::Validator, mesh_crypto::bls::BlsSignature) {
        (
            crate::Validator {
                id: NodeId(self.ed25519.verifying_key().to_bytes()),
                bls: self.bls.public_key(),
                weight,
            },
            self.bls.prove_possession(),
        )
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// What a replica asks its driver to do.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send `message` to the validator `to`.
    Send {
        /// The destination.
        to: NodeId,
        /// The encoded message.
        message: Arc<Vec<u8>>,
    },
    /// Send `message` to every other validator.
    Broadcast {
        /// The encoded message.
        message: Arc<Vec<u8>>,
    },
    /// A block was committed and executed (and appended to the ledger). Emitted in height
    /// order, exactly once per height.
    Committed {
        /// The block.
        block: Arc<CommittedBlock>,
        /// Indices into the block's requests that executed (the others were duplicates of
        /// requests executed before).
        executed: Vec<u32>,
    },
    /// A reconfiguration took effect after the block at `boundary`: `set` certifies the
    /// blocks above it (drivers update whom they broadcast to).
    Reconfigured {
        /// The last block of the previous epoch.
        boundary: u64,
        /// The validator set in force now.
        set: ValidatorSet,
    },
    /// The replica suspects the primary and asks for `view` (it stops voting in the normal
    /// case until that view, or a later one, begins).
    ViewChangeStarted {
        /// The view asked for.
        view: u64,
    },
    /// The replica entered a new view.
    ViewChanged {
        /// The view.
        view: u64,
        /// Its primary.
        primary: NodeId,
    },
}

/// How a submitted request was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Queued for ordering; a [`Output::Committed`] will include it.
    Queued,
    /// Already waiting; nothing changed.
    AlreadyPending,
    /// Already executed in an earlier block.
    AlreadyExecuted,
}

/// Counters of what a replica did and refused. Refusals never stop a replica: they are
/// counted here and returned as errors from the `handle_*` call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages that failed to decode.
    pub malformed: u64,
    /// Messages from peers outside the validator set (or claiming another sender).
    pub unknown_sender: u64,
    /// Messages for an old view, or below the low watermark.
    pub stale: u64,
    /// Messages above the high watermark.
    pub out_of_window: u64,
    /// Votes, certificates or view changes whose signatures failed.
    pub bad_signatures: u64,
    /// Proposals or view changes that broke a protocol rule.
    pub invalid: u64,
    /// Messages dropped because a bounded buffer was full.
    pub dropped: u64,
    /// View changes this replica started.
    pub view_changes: u64,
    /// Blocks executed.
    pub blocks: u64,
    /// Requests executed.
    pub requests: u64,
    /// Blocks received by state transfer.
    pub transferred: u64,
    /// Reconfiguration proposals counted (each executed change request from a validator).
    pub proposals: u64,
    /// Change requests not counted (see [`Proposal::Ignored`]).
    pub proposals_ignored: u64,
    /// Reconfigurations that took effect.
    pub reconfigurations: u64,
}

/// Votes of one phase at one height in one view: one per voter, the first one counts.
#[derive(Debug, Default)]
struct VoteBox {
    votes: HashMap<usize, (Digest, VoteSig)>,
    /// A certificate was formed from this box.
    done: bool,
}

impl VoteBox {
    fn insert(&mut self, voter: usize, digest: Digest, sig: VoteSig) -> bool {
        if self.votes.contains_key(&voter) {
            return false;
        }
        self.votes.insert(voter, (digest, sig));
        true
    }
}

#[derive(Debug, Default)]
struct Slot {
    /// The `(view, digest)` this replica accepted a proposal for.
    accepted: Option<(u64, Digest)>,
    /// The view the vote boxes belong to.
    votes_view: u64,
    prepares: VoteBox,
    commits: VoteBox,
    /// The highest-view prepare certificate held.
    prepared: Option<Certificate>,
    /// The commit certificate, once committed.
    committed: Option<Certificate>,
}

impl Slot {
    fn reset_votes(&mut self, view: u64) {
        if self.votes_view != view {
            self.votes_view = view;
            self.prepares = VoteBox::default();
            self.commits = VoteBox::default();
        }
    }
}

#[derive(Debug)]
struct PendingRequest {
    request: Request,
    /// When this replica started waiting for it (reset when a new view begins).
    since: Instant,
    /// When it was last forwarded to the primary.
    forwarded: Instant,
}

/// One PBFT replica: a state machine without IO, clock or randomness.
///
/// # Driving it
///
/// A driver owns the replica and a clock, and loops:
///
/// 1. Feed inputs as they come, each with the current time:
///    [`handle_message`](Self::handle_message) for bytes a validator sent (the driver vouches
///    for the sender's identity, e.g. by an authenticated connection),
///    [`handle_request`](Self::handle_request) for client requests, and
///    [`handle_timeout`](Self::handle_timeout) once the time returned by
///    [`poll_timeout`](Self::poll_timeout) has come, and optionally
///    [`handle_suspicion`](Self::handle_suspicion) when an outside failure detector suspects
///    a validator (a hint that replaces a primary this replica waits for sooner).
/// 2. After each call, drain [`poll_output`](Self::poll_output) and act on every output in
///    order: send messages, deliver committed blocks to the application.
///
/// Every call writes what must survive a crash (its votes and committed blocks) to its
/// [`Storage`] before returning, so by the time an output is polled, the state it depends on
/// is durable: a driver may send outputs as soon as it has them. A `handle_*` call that fails
/// with [`Error::Storage`] leaves the replica unable to promise that; the driver must stop it
/// (and may restart it from the same storage). Every other error is a refused input, already
/// counted in [`stats`](Self::stats).
///
/// To restart after a crash, build the replica again with [`Replica::new`] over the same
/// storage: it reloads its view, votes, checkpoint and ledger, and catches up from its peers.
pub struct Replica<S: Storage> {
    cfg: Config,
    /// The validator set in force (`gov.set()`, kept at hand).
    set: ValidatorSet,
    gov: Governance,
    /// This replica's index in `set`, or [`NOBODY`] while it is not a member. A member
    /// removed by a reconfiguration keeps its index with weight 0: it no longer votes.
    me: usize,
    /// A reconfiguration just took effect: messages kept for the new epoch are due.
    replay_future: bool,
    /// Batches proposed or voted for in this step, stored with the vote state at its end.
    unsaved_batches: Vec<Arc<Batch>>,
    /// Stored batches no longer needed (below the stable checkpoint).
    forget_batches: Vec<Digest>,
    /// Batches held in storage (saved with the vote state, not yet forgotten), each with
    /// whether a ledger record refers to it as a block's body (then it is never forgotten).
    stored: HashMap<Digest, bool>,
    id: NodeId,
    ed25519: SigningKey,
    scheme: Box<dyn Scheme>,
    storage: S,
    now: Instant,

    view: u64,
    changing: bool,
    vc_attempts: u32,
    new_view_proof: Option<Arc<Vec<u8>>>,
    view_changes: HashMap<usize, (ViewChange, bool)>,

    checkpoint: Option<CheckpointCert>,
    low: u64,
    executed: u64,
    head: Digest,
    next_seq: u64,
    slots: BTreeMap<u64, Slot>,
    batches: crate::FastMap<Digest, Arc<Batch>>,
    wanted: BTreeSet<Digest>,
    checkpoint_votes: BTreeMap<u64, HashMap<usize, (Digest, VoteSig)>>,
    own_checkpoints: BTreeMap<u64, Digest>,
    transfer_target: u64,
    highest_seen: u64,

    pending: VecDeque<Request>,
    pending_keys: crate::FastSet<(NodeId, u64)>,
    in_flight: crate::FastSet<(NodeId, u64)>,
    awaiting: crate::FastMap<(NodeId, u64), PendingRequest>,
    /// `awaiting` by age, oldest first: the request timer is the oldest request's.
    awaiting_by_age: BTreeSet<(Instant, (NodeId, u64))>,
    forward_buf: Vec<Request>,
    clients: ClientTable,

    future: VecDeque<(usize, Message)>,
    outputs: VecDeque<Output>,
    dirty: bool,
    progress_deadline: Option<Instant>,
    vc_deadline: Option<Instant>,
    tick_at: Instant,
    executed_at_tick: u64,
    served: HashMap<usize, u32>,
    fetch_sent: bool,
    query_sent: bool,
    forward_due: Option<Instant>,
    own_checkpoint_vote: Option<(u64, Digest, VoteSig)>,
    rotation: usize,
    stats: Stats,
}

impl<S: Storage> std::fmt::Debug for Replica<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("me", &self.me)
            .field("view", &self.view)
            .field("changing", &self.changing)
            .field("low", &self.low)
            .field("executed", &self.executed)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> Replica<S> {
    /// Starts (or restarts, if `storage` holds state) the replica of validator `keys` in
    /// `set`. Replays the stored ledger to rebuild the client table.
    pub fn new(
        cfg: Config,
        set: ValidatorSet,
        keys: Keys,
        storage: S,
        now: Instant,
    ) -> Result<Self> {
        let id = NodeId(keys.ed25519.verifying_key().to_bytes());
        if let Some(me) = set.index_of(&id)
            && set.get(me).map(|v| v.bls) != Some(keys.bls.public_key())
        {
            return Err(Error::Config(
                "BLS key differs from the validator set's".into(),
            ));
        }
        Self::with_scheme(
            cfg,
            set,
            SigningKey::from_seed(&keys.ed25519.seed()),
            Box::new(BlsScheme::new(keys.bls, keys.ed25519)),
            storage,
            now,
        )
    }

    /// Like [`Replica::new`], with another vote-signature [`Scheme`] than BLS (the simulator's
    /// stand-in, or an embedder's own). Every replica of a set must use the same scheme.
    ///
    /// `set` is the genesis validator set. A replica whose key is not in it (a candidate
    /// that the validators admit later) starts as a *learner*: it follows the ledger without
    /// voting, and votes from the block after the reconfiguration that admits it.
    pub fn with_scheme(
        cfg: Config,
        set: ValidatorSet,
        ed25519: SigningKey,
        scheme: Box<dyn Scheme>,
        storage: S,
        now: Instant,
    ) -> Result<Self> {
        cfg.validate()?;
        let id = NodeId(ed25519.verifying_key().to_bytes());
        let me = set.index_of(&id).unwrap_or(NOBODY);
        let genesis_record = Genesis::new(set.clone(), &cfg);
        let genesis = genesis_record.hash();
        let mut r = Self {
            clients: ClientTable::new(cfg.client_window, cfg.max_clients),
            gov: Governance::new(&genesis_record),
            cfg,
            set,
            me,
            replay_future: false,
            unsaved_batches: Vec::new(),
            forget_batches: Vec::new(),
            stored: HashMap::new(),
            id,
            ed25519,
            scheme,
            storage,
            now,
            view: 0,
            changing: false,
            vc_attempts: 0,
            new_view_proof: None,
            view_changes: HashMap::new(),
            checkpoint: None,
            low: 0,
            executed: 0,
            head: genesis,
            next_seq: 1,
            slots: BTreeMap::new(),
            batches: crate::FastMap::default(),
            wanted: BTreeSet::new(),
            checkpoint_votes: BTreeMap::new(),
            own_checkpoints: BTreeMap::new(),
            transfer_target: 0,
            highest_seen: 0,
            pending: VecDeque::new(),
            pending_keys: crate::FastSet::default(),
            in_flight: crate::FastSet::default(),
            awaiting: crate::FastMap::default(),
            awaiting_by_age: BTreeSet::new(),
            forward_buf: Vec::new(),
            future: VecDeque::new(),
            outputs: VecDeque::new(),
            dirty: false,
            progress_deadline: None,
            vc_deadline: None,
            tick_at: now,
            executed_at_tick: 0,
            served: HashMap::new(),
            fetch_sent: false,
            query_sent: false,
            forward_due: None,
            own_checkpoint_vote: None,
            rotation: 0,
            stats: Stats::default(),
        };
        r.tick_at = now + r.cfg.retransmit_interval;
        r.check_genesis(&genesis_record)?;
        r.recover()?;
        Ok(r)
    }

    /// A new ledger records its genesis validator set; an existing one must have been started
    /// from the set given now (a data directory never silently changes mesh).
    fn check_genesis(&mut self, genesis: &Genesis) -> Result<()> {
        let encoded = genesis.encode();
        match self.storage.load_genesis()? {
            None => self.storage.save_genesis(&encoded),
            Some(stored) if stored == encoded => Ok(()),
            Some(stored) => {
                let what = match Genesis::decode(&stored) {
                    Ok(g) if g.set == genesis.set => format!(
                        "the same validator set {} with other protocol parameters \
                         (checkpoint interval {}, window {}, admission puzzle {:?})",
                        g.set.digest(),
                        g.checkpoint_interval,
                        g.window,
                        g.puzzle
                    ),
                    Ok(g) => format!("genesis validator set {}", g.set.digest()),
                    Err(e) => format!("an unreadable genesis ({e})"),
                };
                Err(Error::Config(format!(
                    "this ledger was started from {what}, not from the configured validator \
                     set {} (checkpoint interval {}, window {}): refusing to mix meshes in one \
                     data directory",
                    genesis.set.digest(),
                    genesis.checkpoint_interval,
                    genesis.window
                )))
            }
        }
    }

    fn recover(&mut self) -> Result<()> {
        // Replay the ledger: the chain head and the client table.
        let last = self.storage.last_seq()?;
        let mut seq = 1;
        while seq <= last {
            let blocks = self.storage.blocks(seq, 64, TRANSFER_BYTES)?;
            if blocks.is_empty() {
                break;
            }
            for b in blocks {
                if b.seq() != seq || b.prev != self.head {
                    return Err(Error::invalid(
                        "stored ledger",
                        format!("block {} does not extend height {}", b.seq(), seq - 1),
                    ));
                }
                for r in b.batch.requests() {
                    self.clients.execute(r.client, r.id, seq);
                }
                self.govern(seq, &b);
                self.head = b.hash();
                self.executed = seq;
                if seq % self.cfg.checkpoint_interval == 0 {
                    self.own_checkpoints.insert(seq, self.head);
                }
                if let Some(set) = self.gov.end_block(seq) {
                    self.set = set.clone();
                    self.me = self.set.index_of(&self.id).unwrap_or(NOBODY);
                }
                seq += 1;
            }
        }
        if let Some(bytes) = self.storage.load_state()? {
            let st = VoteState::decode(&bytes, &self.cfg.limits)?;
            self.view = st.view;
            self.changing = st.changing;
            if let Some(c) = st.checkpoint {
                self.low = c.seq;
                self.checkpoint = Some(c);
            }
            for s in st.slots {
                // The batches voted for, so a prepared block can execute even if every
                // replica holding its batch restarted.
                let digests = s
                    .accepted
                    .map(|(_, d)| d)
                    .into_iter()
                    .chain(s.prepared.as_ref().map(|c| c.digest));
                for d in digests {
                    if d != Batch::empty_digest()
                        && !self.batches.contains_key(&d)
                        && let Some(b) = self.storage.load_batch(&d)?
                    {
                        self.batches.insert(d, Arc::new(b));
                        // The ledger may refer to this batch: at this height if it is
                        // executed, or at an earlier one (the same batch can be proposed again
                        // at a later height). After a restart nothing tells which, so keep it
                        // for good (at worst a redundant copy stays behind).
                        self.stored.insert(d, true);
                    }
                }
                let slot = self.slots.entry(s.seq).or_default();
                slot.accepted = s.accepted;
                slot.prepared = s.prepared;
                slot.votes_view = self.view;
            }
        }
        self.own_checkpoints = self.own_checkpoints.split_off(&self.low);
        self.next_seq = self.executed.max(self.low) + 1;
        if self.changing {
            // Resume the view change: re-announce it (the same content, signed again).
            let target = self.view;
            self.changing = false;
            self.view = target.saturating_sub(1);
            self.start_view_change(target)?;
            self.flush()?;
        }
        Ok(())
    }

    // ----- accessors -------------------------------------------------------------------

    /// This replica's node id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The current view (or the view being changed to).
    pub fn view(&self) -> u64 {
        self.view
    }

    /// Whether a view change is under way.
    pub fn is_changing_view(&self) -> bool {
        self.changing
    }

    /// Whether this replica is the primary of its view.
    pub fn is_primary(&self) -> bool {
        !self.changing && self.set.primary(self.view) == self.me
    }

    /// The node id of the current view's primary.
    pub fn primary(&self) -> NodeId {
        self.node(self.set.primary(self.view))
    }

    /// The height of the last executed block.
    pub fn executed(&self) -> u64 {
        self.executed
    }

    /// The chain hash after the last executed block.
    pub fn head(&self) -> Digest {
        self.head
    }

    /// The last stable checkpoint height (the low watermark).
    pub fn low_watermark(&self) -> u64 {
        self.low
    }

    /// Requests waiting at this replica (submitted here and not yet executed).
    pub fn awaiting(&self) -> usize {
        self.awaiting.len()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The validator set in force.
    pub fn validators(&self) -> &ValidatorSet {
        &self.set
    }

    /// The reconfiguration state: open and adopted changes, the pending boundary, the
    /// admission puzzle in force.
    pub fn governance(&self) -> &Governance {
        &self.gov
    }

    /// Whether this replica votes (a member of the set in force with a weight). A learner,
    /// or a removed member, follows the ledger without voting.
    pub fn is_voter(&self) -> bool {
        self.set.is_voter(self.me)
    }

    /// The storage (for reading the ledger).
    pub fn storage(&self) -> &S {
        &self.storage
    }

    // ----- driving ---------------------------------------------------------------------

    /// The next output, in the order they must be acted on.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            Some(self.tick_at),
            self.forward_due,
            self.progress_deadline,
            self.vc_deadline,
            self.request_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Advances time: suspects a slow primary, retries a stalled view change, re-sends the
    /// latest votes of a stalled replica and asks for what it is missing.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<()> {
        self.now = now;
        if !self.is_voter() {
            // A learner or removed member suspects no one.
            self.progress_deadline = None;
            self.vc_deadline = None;
        } else if self.changing {
            if self.vc_deadline.is_some_and(|d| now >= d) {
                let next = self.view + 1;
                self.start_view_change(next)?;
            }
        } else if self.progress_deadline.is_some_and(|d| now >= d)
            || self.request_deadline().is_some_and(|d| now >= d)
        {
            let next = self.view + 1;
            self.start_view_change(next)?;
        }
        if now >= self.tick_at {
            self.tick_at = now + self.cfg.retransmit_interval;
            self.tick();
        }
        self.flush()
    }

    /// A failure detector outside the protocol (the node's membership) suspects `node`. If
    /// it is the primary of the current view and this replica is waiting for it (an open
    /// block or a request not yet executed), the replica asks for the next view now instead
    /// of at its timers' expiry, and returns `true`. Otherwise nothing happens: a suspicion
    /// is a hint, never a vote by itself. Safety does not depend on it (a view change needs
    /// a quorum of replicas asking); a wrong suspicion costs at most this replica's votes in
    /// the current view until the others join it or it catches up.
    pub fn handle_suspicion(&mut self, now: Instant, node: NodeId) -> Result<bool> {
        self.now = now;
        let waiting = self.has_work() || !self.awaiting_by_age.is_empty();
        if !self.is_voter()
            || self.changing
            || node != self.primary()
            || node == self.id()
            || !waiting
        {
            return Ok(false);
        }
        let next = self.view + 1;
        self.start_view_change(next)?;
        self.flush()?;
        Ok(true)
    }

    /// Submits a client request at this replica. In [`RequestAuth::Connection`] mode the
    /// driver must set `request.client` to the submitting peer. The replica keeps the request
    /// until it executes, forwarding it to the primary (again after each view change), and
    /// suspects the primary if it waits longer than the request timeout.
    pub fn handle_request(&mut self, now: Instant, request: Request) -> Result<Submitted> {
        self.now = now;
        if !self.is_voter() {
            return Err(Error::invalid(
                "request",
                "this replica is not a voting validator (a learner or a removed member)",
            ));
        }
        self.check_request(&request)?;
        let key = request.key();
        if self.clients.is_executed(&key.0, key.1) {
            return Ok(Submitted::AlreadyExecuted);
        }
        if self.awaiting.contains_key(&key) {
            return Ok(Submitted::AlreadyPending);
        }
        if self.awaiting.len() >= self.cfg.max_pending {
            return Err(Error::Busy {
                what: "request queue",
                capacity: self.cfg.max_pending,
            });
        }
        self.awaiting.insert(
            key,
            PendingRequest {
                request: request.clone(),
                since: now,
                forwarded: now,
            },
        );
        self.awaiting_by_age.insert((now, key));
        if !self.changing {
            if self.is_primary() {
                self.enqueue(request);
                self.try_propose()?;
            } else {
                self.forward_buf.push(request);
            }
        }
        self.arm_progress();
        self.flush()?;
        Ok(Submitted::Queued)
    }

    /// Handles bytes that the validator `from` sent.
    pub fn handle_message(&mut self, now: Instant, from: NodeId, bytes: &[u8]) -> Result<()> {
        self.now = now;
        let msg = match Message::decode(bytes, &self.cfg.limits) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        let result = self.handle_decoded(from, msg);
        let flushed = self.flush();
        result.and(flushed)
    }

    fn handle_decoded(&mut self, from: NodeId, msg: Message) -> Result<()> {
        let Some(sender) = self.set.index_of(&from) else {
            self.stats.unknown_sender += 1;
            return Err(Error::invalid(
                "sender",
                format!("{} is not a validator", from.short()),
            ));
        };
        if sender == self.me {
            self.stats.unknown_sender += 1;
            return Err(Error::invalid("sender", "a message from ourselves"));
        }
        self.step(sender, msg)
    }

    fn step(&mut self, sender: usize, msg: Message) -> Result<()> {
        match msg {
            Message::Forward(reqs) => self.on_forward(sender, reqs),
            Message::PrePrepare { .. } | Message::Vote { .. } => match self.defer(sender, msg)? {
                Some(Message::PrePrepare {
                    view,
                    seq,
                    batch,
                    vote,
                }) => self.on_pre_prepare(sender, view, seq, batch, vote),
                Some(Message::Vote {
                    phase,
                    seq,
                    digest,
                    signature,
                    ..
                }) => self.on_vote(sender, phase, seq, digest, signature),
                _ => Ok(()),
            },
            Message::Checkpoint {
                seq,
                state,
                signature,
            } => self.on_checkpoint(sender, seq, state, signature),
            Message::ViewChange(vc) => self.on_view_change(sender, vc),
            Message::NewView(nv) => self.on_new_view(sender, nv),
            Message::FetchBatch(d) => {
                if self.may_serve(sender)
                    && let Some(b) = self.batches.get(&d)
                {
                    let msg = Arc::new(Message::Batch(b.clone()).encode());
                    self.send(sender, msg);
                }
                Ok(())
            }
            Message::Batch(b) => {
                if self.wanted.remove(&b.digest()) {
                    self.keep_batch(&b);
                    self.batches.insert(b.digest(), b);
                    self.try_execute()?;
                }
                Ok(())
            }
            Message::FetchBlocks { from } => self.on_fetch_blocks(sender, from),
            Message::Blocks(blocks) => self.on_blocks(sender, blocks),
            Message::Status {
                view,
                changing,
                executed,
            } => {
                self.on_status(sender, view, changing, executed);
                Ok(())
            }
            Message::QueryView => {
                if !self.changing
                    && self.may_serve(sender)
                    && let Some(nv) = &self.new_view_proof
                {
                    let nv = nv.clone();
                    self.send(sender, nv);
                }
                Ok(())
            }
        }
    }

    /// Sorts a normal-case message by view and height: `Ok(None)` if it was kept for a view
    /// not entered yet, `Ok(Some(msg))` if it is for now, `Err` if stale or out of the window.
    fn defer(&mut self, sender: usize, msg: Message) -> Result<Option<Message>> {
        let (view, seq) = match &msg {
            Message::PrePrepare { view, seq, .. } | Message::Vote { view, seq, .. } => {
                (*view, *seq)
            }
            _ => return Ok(Some(msg)),
        };
        if view < self.view {
            self.stats.stale += 1;
            return Err(Error::invalid(
                "message",
                format!("for old view {view} (now {})", self.view),
            ));
        }
        if seq <= self.low {
            self.stats.stale += 1;
            return Err(Error::invalid(
                "message",
                format!("height {seq} below the low watermark {}", self.low),
            ));
        }
        if seq > self.low + self.cfg.window {
            self.stats.out_of_window += 1;
            self.highest_seen = self.highest_seen.max(seq);
            return Err(Error::invalid(
                "message",
                format!(
                    "height {seq} above the window ({}..={})",
                    self.low + 1,
                    self.low + self.cfg.window
                ),
            ));
        }
        let next_epoch = self.gov.boundary().is_some_and(|b| seq > b);
        if view > self.view || self.changing || next_epoch {
            if self.future.len() >= self.cfg.max_future_messages {
                self.future.pop_front();
                self.stats.dropped += 1;
            }
            self.future.push_back((sender, msg));
            return Ok(None);
        }
        Ok(Some(msg))
    }

    // ----- requests and proposals --------------------------------------------------------

    fn check_request(&mut self, r: &Request) -> Result<()> {
        if r.payload.len() > self.cfg.limits.max_request_bytes {
            return Err(Error::invalid(
                "request",
                format!(
                    "{} bytes, at most {}",
                    r.payload.len(),
                    self.cfg.limits.max_request_bytes
                ),
            ));
        }
        if r.kind == RequestKind::Change {
            // Signed in every mode (see `Governance::propose`); checked here so garbage never
            // reaches a block.
            return if crate::reconfig::verify_signature(r) {
                Ok(())
            } else {
                Err(Error::invalid(
                    "request",
                    "a change request must be signed by the proposing validator",
                ))
            };
        }
        match self.cfg.request_auth {
            RequestAuth::Signed if r.signature.is_none() => Err(Error::invalid(
                "request",
                "unsigned, but this mesh requires signed requests",
            )),
            RequestAuth::Connection if r.signature.is_some() => Err(Error::invalid(
                "request",
                "signed, but this mesh orders opaque requests",
            )),
            _ => Ok(()),
        }
    }

    fn enqueue(&mut self, r: Request) {
        let key = r.key();
        if self.clients.is_executed(&key.0, key.1)
            || self.in_flight.contains(&key)
            || self.pending_keys.contains(&key)
        {
            return;
        }
        if self.pending.len() >= self.cfg.max_pending {
            self.stats.dropped += 1;
            return;
        }
        self.pending_keys.insert(key);
        self.pending.push_back(r);
    }

    fn on_forward(&mut self, _sender: usize, reqs: Vec<Request>) -> Result<()> {
        if !self.is_primary() {
            return Ok(());
        }
        for r in reqs {
            if self.check_request(&r).is_err() {
                self.stats.invalid += 1;
                continue;
            }
            self.enqueue(r);
        }
        self.try_propose()
    }

    fn try_propose(&mut self) -> Result<()> {
        if !self.is_primary() {
            return Ok(());
        }
        while !self.pending.is_empty()
            && self.next_seq <= self.low + self.cfg.window
            && self.next_seq.saturating_sub(self.executed + 1) < self.cfg.max_inflight
            // With a block already open, start another only for a full enough batch: small
            // ones wait for the open block to execute and travel together (every block costs
            // each replica two signatures and two aggregate checks, whatever its size).
            && (self.next_seq == self.executed + 1
                || self.pending.len() >= self.cfg.min_pipelined_batch)
            // Blocks above a pending reconfiguration wait for the new set.
            && self.gov.boundary().is_none_or(|b| self.next_seq <= b)
        {
            let mut reqs = Vec::new();
            let mut bytes = 16usize;
            while let Some(r) = self.pending.front() {
                let len = r.payload.len() + 112;
                if reqs.len() >= self.cfg.limits.max_batch_requests
                    || (!reqs.is_empty() && bytes + len > self.cfg.limits.max_batch_bytes)
                {
                    break;
                }
                let Some(r) = self.pending.pop_front() else {
                    break;
                };
                let key = r.key();
                self.pending_keys.remove(&key);
                if self.clients.is_executed(&key.0, key.1) || self.in_flight.contains(&key) {
                    continue;
                }
                bytes += len;
                reqs.push(r);
            }
            if self.cfg.request_auth == RequestAuth::Signed {
                reqs = self.keep_well_signed(reqs);
            }
            if reqs.is_empty() {
                continue;
            }
            for r in &reqs {
                self.in_flight.insert(r.key());
            }
            self.propose(Arc::new(Batch::new(reqs)))?;
        }
        // A pending reconfiguration takes effect at its boundary height: with nothing to
        // order, empty blocks carry the ledger there (one at a time).
        if let Some(boundary) = self.gov.boundary()
            && self.pending.is_empty()
            && self.next_seq <= boundary
            && self.next_seq == self.executed + 1
            && self.next_seq <= self.low + self.cfg.window
        {
            self.propose(Arc::new(Batch::empty()))?;
        }
        Ok(())
    }

    /// Proposes `batch` at the next height (the primary's pre-prepare and prepare vote).
    fn propose(&mut self, batch: Arc<Batch>) -> Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let digest = batch.digest();
        let vote = self.sign_vote(Phase::Prepare, seq, &digest);
        self.batches.insert(digest, batch.clone());
        self.keep_batch(&batch);
        let view = self.view;
        let slot = self.slots.entry(seq).or_default();
        slot.reset_votes(view);
        slot.accepted = Some((view, digest));
        slot.prepares.insert(self.me, digest, vote);
        self.dirty = true;
        self.broadcast(Message::PrePrepare {
            view,
            seq,
            batch,
            vote,
        });
        self.try_certify(seq, Phase::Prepare, digest)
    }

    /// Batch-verifies client signatures; on failure, finds and drops the bad ones.
    fn keep_well_signed(&mut self, reqs: Vec<Request>) -> Vec<Request> {
        match verify_requests(&reqs) {
            Ok(()) => reqs,
            Err(()) => {
                let before = reqs.len();
                let good: Vec<Request> = reqs
                    .into_iter()
                    .filter(|r| verify_requests(std::slice::from_ref(r)).is_ok())
                    .collect();
                self.stats.bad_signatures += (before - good.len()) as u64;
                good
            }
        }
    }

    fn on_pre_prepare(
        &mut self,
        sender: usize,
        view: u64,
        seq: u64,
        batch: Arc<Batch>,
        vote: VoteSig,
    ) -> Result<()> {
        if sender != self.set.primary(view) {
            self.stats.invalid += 1;
            return Err(Error::invalid("pre-prepare", "not from the primary"));
        }
        if seq <= self.executed {
            return Ok(());
        }
        let digest = batch.digest();
        let slot = self.slots.entry(seq).or_default();
        slot.reset_votes(view);
        if let Some((v, d)) = slot.accepted
            && v == view
        {
            if d != digest {
                self.stats.invalid += 1;
                return Err(Error::invalid(
                    "pre-prepare",
                    format!("a second proposal at height {seq} in view {view}"),
                ));
            }
            return Ok(());
        }
        if let Some(c) = &slot.committed
            && c.digest != digest
        {
            self.stats.invalid += 1;
            return Err(Error::invalid(
                "pre-prepare",
                "conflicts with a committed block",
            ));
        }
        if self.cfg.request_auth == RequestAuth::Signed {
            if batch.requests().iter().any(|r| r.signature.is_none())
                || verify_requests(batch.requests()).is_err()
            {
                self.stats.bad_signatures += 1;
                return Err(Error::Verify {
                    what: "client signatures in a proposal",
                });
            }
        } else if batch
            .requests()
            .iter()
            .any(|r| r.signature.is_some() && r.kind != RequestKind::Change)
        {
            self.stats.invalid += 1;
            return Err(Error::invalid(
                "pre-prepare",
                "signed requests in an opaque-request mesh",
            ));
        }
        if !self.is_voter() {
            // A learner keeps the batch and counts the others' votes, without voting.
            let slot = self.slots.entry(seq).or_default();
            slot.prepares.insert(sender, digest, vote);
            self.batches.insert(digest, batch);
            self.wanted.remove(&digest);
            return self.try_certify(seq, Phase::Prepare, digest);
        }
        let own = self.sign_vote(Phase::Prepare, seq, &digest);
        let slot = self.slots.entry(seq).or_default();
        slot.accepted = Some((view, digest));
        slot.prepares.insert(sender, digest, vote);
        slot.prepares.insert(self.me, digest, own);
        self.keep_batch(&batch);
        self.batches.insert(digest, batch);
        self.wanted.remove(&digest);
        self.dirty = true;
        self.broadcast(Message::Vote {
            phase: Phase::Prepare,
            view,
            seq,
            digest,
            signature: own,
        });
        self.arm_progress();
        self.try_certify(seq, Phase::Prepare, digest)
    }

    fn sign_vote(&self, phase: Phase, seq: u64, digest: &Digest) -> VoteSig {
        let epoch = self.gov.set_for(seq).epoch();
        let msg = vote_bytes(epoch, phase, self.view, seq, digest);
        match phase {
            Phase::Prepare => self.scheme.sign_prepare(&msg),
            Phase::Commit => self.scheme.sign(&msg),
        }
    }

    fn on_vote(
        &mut self,
        sender: usize,
        phase: Phase,
        seq: u64,
        digest: Digest,
        sig: VoteSig,
    ) -> Result<()> {
        if phase == Phase::Commit && seq <= self.executed {
            return Ok(());
        }
        let view = self.view;
        let slot = self.slots.entry(seq).or_default();
        slot.reset_votes(view);
        let inserted = match phase {
            Phase::Prepare => slot.prepares.insert(sender, digest, sig),
            Phase::Commit => slot.commits.insert(sender, digest, sig),
        };
        if inserted {
            self.try_certify(seq, phase, digest)?;
        }
        Ok(())
    }

    /// Forms a certificate once a quorum voted for `digest`: verifies the quorum's votes at
    /// once (a commit quorum's aggregate, a prepare quorum's signatures in one batch); if that
    /// fails, checks each vote to drop the bad ones. Votes are not checked one by one as
    /// they arrive.
    fn try_certify(&mut self, seq: u64, phase: Phase, digest: Digest) -> Result<()> {
        let view = self.view;
        let Some(slot) = self.slots.get_mut(&seq) else {
            return Ok(());
        };
        let (vbox, done) = match phase {
            Phase::Prepare => {
                let done = slot.prepared.as_ref().is_some_and(|c| c.view == view);
                (&mut slot.prepares, done)
            }
            Phase::Commit => (&mut slot.commits, slot.committed.is_some()),
        };
        if done || vbox.done {
            return Ok(());
        }
        let set = self.gov.set_for(seq);
        let msg = vote_bytes(set.epoch(), phase, view, seq, &digest);
        let form = match phase {
            Phase::Prepare => Form::Each,
            Phase::Commit => Form::Aggregate,
        };
        let Some((signers, signatures)) = certify_votes(
            set,
            self.scheme.as_ref(),
            self.me,
            &mut self.stats,
            &mut vbox.votes,
            &digest,
            &msg,
            form,
        )?
        else {
            return Ok(());
        };
        vbox.done = true;
        let cert = Certificate {
            phase,
            view,
            seq,
            digest,
            signers,
            signatures,
        };
        match phase {
            Phase::Prepare => self.on_prepared(cert),
            Phase::Commit => self.on_committed(cert),
        }
    }

    fn on_prepared(&mut self, cert: Certificate) -> Result<()> {
        let (seq, digest) = (cert.seq, cert.digest);
        let Some(slot) = self.slots.get_mut(&seq) else {
            return Ok(());
        };
        slot.prepared = Some(cert);
        if !self.is_voter() {
            // A learner's view of the slot is not a vote: nothing to persist or send.
            return Ok(());
        }
        self.dirty = true;
        if self.changing {
            return Ok(());
        }
        let own = self.sign_vote(Phase::Commit, seq, &digest);
        if let Some(slot) = self.slots.get_mut(&seq) {
            slot.commits.insert(self.me, digest, own);
        }
        self.broadcast(Message::Vote {
            phase: Phase::Commit,
            view: self.view,
            seq,
            digest,
            signature: own,
        });
        self.try_certify(seq, Phase::Commit, digest)
    }

    fn on_committed(&mut self, cert: Certificate) -> Result<()> {
        let seq = cert.seq;
        if let Some(slot) = self.slots.get_mut(&seq)
            && slot.committed.is_none()
        {
            slot.committed = Some(cert);
        }
        self.try_execute()
    }

    // ----- execution -----------------------------------------------------------------------

    fn try_execute(&mut self) -> Result<()> {
        loop {
            let seq = self.executed + 1;
            let Some(cert) = self.slots.get(&seq).and_then(|s| s.committed.clone()) else {
                break;
            };
            let batch = if cert.digest == Batch::empty_digest() {
                Arc::new(Batch::empty())
            } else if let Some(b) = self.batches.get(&cert.digest) {
                b.clone()
            } else {
                if self.wanted.insert(cert.digest) {
                    self.broadcast(Message::FetchBatch(cert.digest));
                }
                break;
            };
            let block = CommittedBlock {
                prev: self.head,
                batch,
                cert,
            };
            self.execute(block)?;
        }
        if std::mem::take(&mut self.replay_future) {
            // Messages kept for the epoch that just began (their senders' indices are stable
            // across epochs); those still early are kept again.
            for (sender, msg) in std::mem::take(&mut self.future) {
                // Errors here were counted; a bad early message must not stop the others.
                let _ = self.step(sender, msg);
            }
        }
        self.try_propose()
    }

    /// Stores `batch` with the vote state at the end of this step (the empty batch needs no
    /// storing).
    fn keep_batch(&mut self, batch: &Arc<Batch>) {
        if !batch.is_empty()
            && !self
                .unsaved_batches
                .iter()
                .any(|b| b.digest() == batch.digest())
        {
            self.unsaved_batches.push(batch.clone());
            self.dirty = true;
        }
    }

    /// Counts the block's change requests (all of them, duplicates included: counting is
    /// idempotent, and a light client counts the same way without a client table).
    fn govern(&mut self, seq: u64, block: &CommittedBlock) {
        for r in block.batch.requests() {
            if r.kind != RequestKind::Change {
                continue;
            }
            match self.gov.propose(seq, r) {
                Proposal::Ignored(_) => self.stats.proposals_ignored += 1,
                Proposal::Counted | Proposal::Adopted { .. } => self.stats.proposals += 1,
            }
        }
    }

    fn execute(&mut self, block: CommittedBlock) -> Result<()> {
        let seq = block.seq();
        // A batch already stored with the vote state becomes the block's body by reference.
        let body_stored = match self.stored.get_mut(&block.cert.digest) {
            Some(in_ledger) => {
                *in_ledger = true;
                true
            }
            None => false,
        };
        self.storage.append_block(&block, body_stored)?;
        self.head = block.hash();
        self.executed = seq;
        let mut executed = Vec::new();
        for (i, r) in block.batch.requests().iter().enumerate() {
            let key = r.key();
            if self.clients.execute(key.0, key.1, seq) {
                executed.push(i as u32);
            }
            if let Some(p) = self.awaiting.remove(&key) {
                self.awaiting_by_age.remove(&(p.since, key));
            }
            self.in_flight.remove(&key);
        }
        self.stats.blocks += 1;
        self.stats.requests += executed.len() as u64;
        self.govern(seq, &block);
        self.outputs.push_back(Output::Committed {
            block: Arc::new(block),
            executed,
        });
        self.next_seq = self.next_seq.max(seq + 1);
        if seq.is_multiple_of(self.cfg.checkpoint_interval) {
            self.own_checkpoints.insert(seq, self.head);
            // The checkpoint at a boundary is the old set's: it hands over to the new one.
            if self.is_voter() {
                let epoch = self.gov.set_for(seq).epoch();
                let signature = self.scheme.sign(&checkpoint_bytes(epoch, seq, &self.head));
                let state = self.head;
                self.own_checkpoint_vote = Some((seq, state, signature));
                self.broadcast(Message::Checkpoint {
                    seq,
                    state,
                    signature,
                });
                self.on_checkpoint_vote(self.me, seq, state, signature)?;
            }
        }
        if let Some(set) = self.gov.end_block(seq) {
            self.set = set.clone();
            self.me = self.set.index_of(&self.id).unwrap_or(NOBODY);
            self.stats.reconfigurations += 1;
            self.replay_future = true;
            self.outputs.push_back(Output::Reconfigured {
                boundary: seq,
                set: self.set.clone(),
            });
        }
        self.progress_deadline = None;
        self.arm_progress();
        Ok(())
    }

    // ----- checkpoints and state transfer ---------------------------------------------------

    fn on_checkpoint(
        &mut self,
        sender: usize,
        seq: u64,
        state: Digest,
        sig: VoteSig,
    ) -> Result<()> {
        if !seq.is_multiple_of(self.cfg.checkpoint_interval) || seq <= self.low {
            self.stats.stale += 1;
            return Ok(());
        }
        if seq > self.low + 2 * self.cfg.window {
            self.stats.out_of_window += 1;
            self.highest_seen = self.highest_seen.max(seq);
            return Ok(());
        }
        self.on_checkpoint_vote(sender, seq, state, sig)
    }

    fn on_checkpoint_vote(
        &mut self,
        sender: usize,
        seq: u64,
        state: Digest,
        sig: VoteSig,
    ) -> Result<()> {
        let votes = self.checkpoint_votes.entry(seq).or_default();
        if votes.contains_key(&sender) {
            return Ok(());
        }
        votes.insert(sender, (state, sig));
        let set = self.gov.set_for(seq);
        let msg = checkpoint_bytes(set.epoch(), seq, &state);
        let Some((signers, Signatures::Aggregate(agg))) = certify_votes(
            set,
            self.scheme.as_ref(),
            self.me,
            &mut self.stats,
            votes,
            &state,
            &msg,
            Form::Aggregate,
        )?
        else {
            return Ok(());
        };
        self.install_checkpoint(CheckpointCert {
            seq,
            state,
            signers,
            signature: agg,
        })
    }

    /// Makes `cert` the stable checkpoint: moves the low watermark, drops the log below it,
    /// and starts a state transfer if this replica has not executed that far.
    fn install_checkpoint(&mut self, cert: CheckpointCert) -> Result<()> {
        if cert.seq <= self.low {
            return Ok(());
        }
        if let Some(own) = self.own_checkpoints.get(&cert.seq)
            && *own != cert.state
        {
            return Err(Error::invalid(
                "checkpoint",
                format!(
                    "a quorum certified a state at height {} that differs from ours: this replica diverged",
                    cert.seq
                ),
            ));
        }
        let seq = cert.seq;
        self.low = seq;
        self.checkpoint = Some(cert);
        self.slots = self.slots.split_off(&(seq + 1));
        self.checkpoint_votes = self.checkpoint_votes.split_off(&(seq + 1));
        self.own_checkpoints = self.own_checkpoints.split_off(&seq);
        let live: HashSet<Digest> = self
            .slots
            .values()
            .filter_map(|s| s.accepted.map(|a| a.1))
            .collect();
        let forget = &mut self.forget_batches;
        let stored = &mut self.stored;
        self.batches.retain(|d, _| {
            let keep = live.contains(d);
            // A block's body in the ledger stays in storage.
            // A body the ledger refers to stays in storage.
            if !keep && stored.remove(d) != Some(true) {
                forget.push(*d);
            }
            keep
        });
        self.wanted.retain(|d| live.contains(d));
        self.next_seq = self.next_seq.max(seq + 1);
        self.dirty = true;
        if self.executed < seq {
            self.transfer_target = self.transfer_target.max(seq);
            self.request_blocks();
        }
        self.try_propose()
    }

    fn request_blocks(&mut self) {
        let n = self.set.len();
        for _ in 0..n {
            self.rotation = (self.rotation + 1) % n;
            if self.rotation != self.me && self.set.is_voter(self.rotation) {
                let msg = Arc::new(
                    Message::FetchBlocks {
                        from: self.executed + 1,
                    }
                    .encode(),
                );
                self.send(self.rotation, msg);
                return;
            }
        }
    }

    fn on_status(&mut self, sender: usize, view: u64, changing: bool, executed: u64) {
        if executed < self.executed && !self.set.is_voter(sender) && self.may_serve(sender) {
            // A learner (or a removed member) hears of blocks only this way: answer it.
            let msg = Arc::new(
                Message::Status {
                    view: self.view,
                    changing: self.changing,
                    executed: self.executed,
                }
                .encode(),
            );
            self.send(sender, msg);
        }
        if executed > self.executed && !self.fetch_sent {
            self.fetch_sent = true;
            self.highest_seen = self.highest_seen.max(executed);
            let msg = Arc::new(
                Message::FetchBlocks {
                    from: self.executed + 1,
                }
                .encode(),
            );
            self.send(sender, msg);
        }
        let ahead = if self.changing {
            view >= self.view
        } else {
            view > self.view
        };
        if !changing && ahead && !self.query_sent {
            self.query_sent = true;
            let msg = Arc::new(Message::QueryView.encode());
            self.send(sender, msg);
        }
    }

    fn may_serve(&mut self, sender: usize) -> bool {
        let served = self.served.entry(sender).or_default();
        if *served >= SERVE_PER_TICK {
            self.stats.dropped += 1;
            return false;
        }
        *served += 1;
        true
    }

    fn on_fetch_blocks(&mut self, sender: usize, from: u64) -> Result<()> {
        if from == 0 || from > self.executed || !self.may_serve(sender) {
            return Ok(());
        }
        let blocks = self
            .storage
            .blocks(from, self.cfg.limits.max_blocks, TRANSFER_BYTES)?;
        if !blocks.is_empty() {
            let msg = Arc::new(Message::Blocks(blocks).encode());
            self.send(sender, msg);
        }
        Ok(())
    }

    fn on_blocks(&mut self, _sender: usize, blocks: Vec<CommittedBlock>) -> Result<()> {
        let mut progressed = false;
        for b in blocks {
            if b.seq() <= self.executed {
                continue;
            }
            if b.seq() != self.executed + 1 || b.prev != self.head {
                self.stats.invalid += 1;
                return Err(Error::invalid(
                    "state transfer",
                    "blocks do not extend our ledger",
                ));
            }
            if let Err(e) = b
                .cert
                .verify(self.gov.set_for(b.seq()), self.scheme.as_ref())
            {
                self.stats.bad_signatures += 1;
                return Err(e);
            }
            let seq = b.seq();
            self.stats.transferred += 1;
            self.execute(b)?;
            progressed = true;
            if let Some(c) = self.checkpoint.as_ref().filter(|c| c.seq == seq)
                && c.state != self.head
            {
                return Err(Error::invalid(
                    "state transfer",
                    "ledger differs from the stable checkpoint",
                ));
            }
        }
        if progressed {
            // Blocks committed by the normal case may be waiting right above.
            self.try_execute()?;
            if self.executed
                < self
                    .transfer_target
                    .max(self.highest_seen.saturating_sub(self.cfg.window))
            {
                self.request_blocks();
            }
        }
        Ok(())
    }

    // ----- view changes ----------------------------------------------------------------------

    fn start_view_change(&mut self, target: u64) -> Result<()> {
        if target <= self.view || !self.is_voter() {
            return Ok(());
        }
        self.view = target;
        self.changing = true;
        self.vc_attempts = self.vc_attempts.saturating_add(1);
        self.stats.view_changes += 1;
        self.new_view_proof = None;
        self.progress_deadline = None;
        // As in PBFT, the timer for the next view starts only once a quorum asked for this
        // one (see `arm_view_change_timer`): a lone suspicious replica waits instead of
        // climbing views by itself.
        self.vc_deadline = None;
        self.pending.clear();
        self.pending_keys.clear();
        self.in_flight.clear();
        self.dirty = true;
        self.outputs
            .push_back(Output::ViewChangeStarted { view: target });
        let vc = self.own_view_change(target);
        self.broadcast(Message::ViewChange(vc.clone()));
        self.view_changes.insert(self.me, (vc, true));
        self.arm_view_change_timer();
        self.try_new_view()
    }

    fn arm_view_change_timer(&mut self) {
        if !self.changing || self.vc_deadline.is_some() {
            return;
        }
        let weight: u64 = self
            .view_changes
            .iter()
            .filter(|(_, (v, _))| v.view == self.view)
            .map(|(i, _)| self.set.weight(*i))
            .sum();
        if self.set.is_quorum(weight) {
            let backoff = 1u32 << self.vc_attempts.saturating_sub(1).min(6);
            self.vc_deadline = Some(self.now + self.cfg.view_change_timeout * backoff);
        }
    }

    fn own_view_change(&self, view: u64) -> ViewChange {
        let prepared = self
            .slots
            .range(self.low + 1..)
            .filter_map(|(_, s)| s.prepared.clone())
            .collect();
        let mut vc = ViewChange {
            view,
            replica: self.me as u32,
            checkpoint: self.checkpoint.clone(),
            prepared,
            signature: ed25519::Signature([0; 64]),
        };
        vc.signature = self.ed25519.sign(&vc.signing_bytes(self.set.epoch()));
        vc
    }

    fn on_view_change(&mut self, sender: usize, vc: ViewChange) -> Result<()> {
        if vc.replica as usize != sender {
            self.stats.unknown_sender += 1;
            return Err(Error::invalid("view change", "signed for another replica"));
        }
        if vc.view < self.view || (vc.view == self.view && !self.changing) {
            // The sender is behind: show it the view we are in.
            if !self.changing
                && self.may_serve(sender)
                && let Some(nv) = self.new_view_proof.clone()
            {
                self.send(sender, nv);
            }
            self.stats.stale += 1;
            return Ok(());
        }
        self.check_view_change_shape(&vc)?;
        if self
            .view_changes
            .get(&sender)
            .is_some_and(|(old, _)| old.view >= vc.view)
        {
            return Ok(());
        }
        let Some(key) = self.set.ed_key(sender) else {
            return Ok(());
        };
        if key
            .verify(&vc.signing_bytes(self.set.epoch()), &vc.signature)
            .is_err()
        {
            self.stats.bad_signatures += 1;
            return Err(Error::Verify {
                what: "view change signature",
            });
        }
        self.view_changes.insert(sender, (vc, false));
        // Join a view change that more than a third of the weight asks for.
        let above: Vec<(u64, usize)> = self
            .view_changes
            .iter()
            .filter(|(_, (v, _))| v.view > self.view)
            .map(|(i, (v, _))| (v.view, *i))
            .collect();
        let weight: u64 = above.iter().map(|(_, i)| self.set.weight(*i)).sum();
        if self.set.is_weak_quorum(weight)
            && let Some(min) = above.iter().map(|(v, _)| *v).min()
        {
            self.start_view_change(min)?;
        }
        self.arm_view_change_timer();
        self.try_new_view()
    }

    fn check_view_change_shape(&mut self, vc: &ViewChange) -> Result<()> {
        let cp = vc.checkpoint_seq();
        let mut last = cp;
        for c in &vc.prepared {
            if c.phase != Phase::Prepare
                || c.seq <= last
                || c.view >= vc.view
                || c.seq > cp + self.cfg.window
            {
                self.stats.invalid += 1;
                return Err(Error::invalid(
                    "view change",
                    "prepared certificates out of order or range",
                ));
            }
            last = c.seq;
        }
        if vc
            .checkpoint
            .as_ref()
            .is_some_and(|c| c.seq % self.cfg.checkpoint_interval != 0)
        {
            self.stats.invalid += 1;
            return Err(Error::invalid("view change", "checkpoint off the interval"));
        }
        Ok(())
    }

    /// Fully verifies a view change's certificates (the new primary does this before using it).
    fn verify_view_change_certs(&self, vc: &ViewChange) -> bool {
        vc.checkpoint.as_ref().is_none_or(|c| {
            c.verify(self.gov.set_for(c.seq), self.scheme.as_ref())
                .is_ok()
        }) && vc.prepared.iter().all(|c| {
            c.verify(self.gov.set_for(c.seq), self.scheme.as_ref())
                .is_ok()
        })
    }

    fn try_new_view(&mut self) -> Result<()> {
        if !self.changing || self.set.primary(self.view) != self.me {
            return Ok(());
        }
        let target = self.view;
        let candidates: Vec<usize> = {
            let mut c: Vec<usize> = self
                .view_changes
                .iter()
                .filter(|(_, (v, _))| v.view == target)
                .map(|(i, _)| *i)
                .collect();
            c.sort_unstable();
            c
        };
        let weight: u64 = candidates.iter().map(|&i| self.set.weight(i)).sum();
        if !self.set.is_quorum(weight) {
            return Ok(());
        }
        // Verify the certificates of those not yet verified; drop the ones that fail.
        for i in &candidates {
            let Some((vc, verified)) = self.view_changes.get(i) else {
                continue;
            };
            if !*verified {
                if self.verify_view_change_certs(vc) {
                    if let Some(e) = self.view_changes.get_mut(i) {
                        e.1 = true;
                    }
                } else {
                    self.view_changes.remove(i);
                    self.stats.bad_signatures += 1;
                }
            }
        }
        let vcs: Vec<ViewChange> = candidates
            .iter()
            .filter_map(|i| self.view_changes.get(i).map(|(v, _)| v.clone()))
            .collect();
        let weight: u64 = vcs
            .iter()
            .map(|v| self.set.weight(v.replica as usize))
            .sum();
        if !self.set.is_quorum(weight) {
            return Ok(());
        }
        let Some((_, proposals)) = select_proposals(&vcs, self.cfg.window) else {
            self.stats.invalid += 1;
            return Ok(());
        };
        let mut nv = NewView {
            view: target,
            view_changes: vcs,
            proposals,
            signature: ed25519::Signature([0; 64]),
        };
        nv.signature = self.ed25519.sign(&nv.signing_bytes(self.set.epoch()));
        let bytes = Arc::new(Message::NewView(nv.clone()).encode());
        self.outputs.push_back(Output::Broadcast {
            message: bytes.clone(),
        });
        self.enter_view(nv, bytes)
    }

    fn on_new_view(&mut self, sender: usize, nv: NewView) -> Result<()> {
        if nv.view < self.view || (nv.view == self.view && !self.changing) {
            self.stats.stale += 1;
            return Ok(());
        }
        let primary = self.set.primary(nv.view);
        let Some(key) = self.set.ed_key(primary).cloned() else {
            return Ok(());
        };
        if key
            .verify(&nv.signing_bytes(self.set.epoch()), &nv.signature)
            .is_err()
        {
            self.stats.bad_signatures += 1;
            return Err(Error::Verify {
                what: "new-view signature",
            });
        }
        let _ = sender;
        // Distinct senders, all for this view, validly signed, a quorum by weight.
        let mut seen = HashSet::new();
        let mut weight = 0;
        for vc in &nv.view_changes {
            let i = vc.replica as usize;
            let Some(k) = self.set.ed_key(i).cloned() else {
                self.stats.invalid += 1;
                return Err(Error::invalid(
                    "new view",
                    "a view change from a non-validator",
                ));
            };
            if vc.view != nv.view || !seen.insert(i) {
                self.stats.invalid += 1;
                return Err(Error::invalid(
                    "new view",
                    "view changes for another view or repeated",
                ));
            }
            self.check_view_change_shape(vc)?;
            if k.verify(&vc.signing_bytes(self.set.epoch()), &vc.signature)
                .is_err()
            {
                self.stats.bad_signatures += 1;
                return Err(Error::Verify {
                    what: "view change in a new view",
                });
            }
            weight += self.set.weight(i);
        }
        if !self.set.is_quorum(weight) {
            self.stats.invalid += 1;
            return Err(Error::invalid("new view", "view changes short of a quorum"));
        }
        let Some((cp, proposals)) = select_proposals(&nv.view_changes, self.cfg.window) else {
            self.stats.invalid += 1;
            return Err(Error::invalid(
                "new view",
                "prepared certificates span more than the window",
            ));
        };
        if proposals != nv.proposals {
            self.stats.invalid += 1;
            return Err(Error::invalid(
                "new view",
                "proposals do not follow from its view changes",
            ));
        }
        // Verify only what decides the outcome: the highest checkpoint and the chosen
        // certificate at each height.
        if let Some(c) = cp
            && c.verify(self.gov.set_for(c.seq), self.scheme.as_ref())
                .is_err()
        {
            self.stats.bad_signatures += 1;
            return Err(Error::Verify {
                what: "checkpoint in a new view",
            });
        }
        for c in chosen_certificates(&nv.view_changes) {
            if c.verify(self.gov.set_for(c.seq), self.scheme.as_ref())
                .is_err()
            {
                self.stats.bad_signatures += 1;
                return Err(Error::Verify {
                    what: "prepared certificate in a new view",
                });
            }
        }
        let bytes = Arc::new(Message::NewView(nv.clone()).encode());
        self.enter_view(nv, bytes)
    }

    fn enter_view(&mut self, nv: NewView, bytes: Arc<Vec<u8>>) -> Result<()> {
        let view = nv.view;
        self.view = view;
        self.changing = false;
        self.vc_attempts = 0;
        self.vc_deadline = None;
        self.new_view_proof = Some(bytes);
        self.view_changes.retain(|_, (v, _)| v.view > view);
        self.dirty = true;
        let best_cp = nv
            .view_changes
            .iter()
            .filter_map(|v| v.checkpoint.clone())
            .max_by_key(|c| c.seq);
        if let Some(cp) = best_cp {
            self.install_checkpoint(cp)?;
        }
        let mut max_s = self.low;
        for slot in self.slots.values_mut() {
            slot.reset_votes(view);
            if slot.accepted.is_some_and(|(v, _)| v < view) {
                slot.accepted = None;
            }
        }
        for (seq, digest) in nv.proposals.iter().copied() {
            max_s = max_s.max(seq);
            if seq <= self.low {
                continue;
            }
            if digest == Batch::empty_digest() {
                self.batches.insert(digest, Arc::new(Batch::empty()));
            }
            let slot = self.slots.entry(seq).or_default();
            slot.reset_votes(view);
            if !self.is_voter() {
                continue;
            }
            let own = self.sign_vote(Phase::Prepare, seq, &digest);
            let slot = self.slots.entry(seq).or_default();
            slot.accepted = Some((view, digest));
            slot.prepares.insert(self.me, digest, own);
            self.broadcast(Message::Vote {
                phase: Phase::Prepare,
                view,
                seq,
                digest,
                signature: own,
            });
        }
        self.next_seq = max_s.max(self.executed) + 1;
        let primary = self.set.primary(view);
        self.outputs.push_back(Output::ViewChanged {
            view,
            primary: self.node(primary),
        });
        // Requests submitted here go to the new primary, which gets a full timeout for them.
        let now = self.now;
        self.awaiting_by_age.clear();
        for (key, p) in self.awaiting.iter_mut() {
            p.since = now;
            p.forwarded = now;
            self.awaiting_by_age.insert((now, *key));
        }
        let mut waiting: Vec<&PendingRequest> = self.awaiting.values().collect();
        waiting.sort_by_key(|p| p.request.key());
        let waiting: Vec<Request> = waiting.into_iter().map(|p| p.request.clone()).collect();
        if primary == self.me {
            for r in waiting {
                self.enqueue(r);
            }
        } else {
            self.forward_buf.extend(waiting);
        }
        let proposals: Vec<(u64, Digest)> = nv.proposals.clone();
        for (seq, digest) in proposals {
            if seq > self.low {
                self.try_certify(seq, Phase::Prepare, digest)?;
            }
        }
        // Messages that arrived early for this view.
        let future = std::mem::take(&mut self.future);
        for (sender, msg) in future {
            let keep = match &msg {
                Message::PrePrepare { view: v, .. } | Message::Vote { view: v, .. } => *v >= view,
                _ => false,
            };
            if keep {
                // Errors here were counted; a bad early message must not stop the others.
                let _ = self.step(sender, msg);
            }
        }
        self.arm_progress();
        self.try_execute()
    }

    // ----- timers and retransmission -----------------------------------------------------------

    /// When the oldest request waiting here times out (PBFT's per-request timer: it runs
    /// while other requests execute, so a primary that leaves out particular requests is
    /// suspected all the same).
    fn request_deadline(&self) -> Option<Instant> {
        if self.changing || !self.is_voter() {
            return None;
        }
        self.awaiting_by_age
            .first()
            .map(|(since, _)| *since + self.cfg.request_timeout)
    }

    /// Open blocks (proposed, not yet executed) are the progress timer's concern; waiting
    /// requests have their own (`request_deadline`).
    fn has_work(&self) -> bool {
        self.slots
            .range(self.executed + 1..)
            .any(|(_, s)| s.accepted.is_some() || s.committed.is_some())
            || (self.is_primary() && !self.pending.is_empty())
    }

    fn arm_progress(&mut self) {
        if self.changing {
            return;
        }
        if !self.is_voter() {
            self.progress_deadline = None;
            return;
        }
        if self.has_work() {
            if self.progress_deadline.is_none() {
                self.progress_deadline = Some(self.now + self.cfg.request_timeout);
            }
        } else {
            self.progress_deadline = None;
        }
    }

    fn tick(&mut self) {
        self.served.clear();
        self.fetch_sent = false;
        self.query_sent = false;
        let stalled = self.executed == self.executed_at_tick;
        self.executed_at_tick = self.executed;
        self.reforward();
        if !stalled && !self.changing {
            return;
        }
        let view = self.view;
        let mut resend = Vec::new();
        if self.changing {
            if let Some((vc, _)) = self.view_changes.get(&self.me) {
                resend.push(Message::ViewChange(vc.clone()));
            }
        } else {
            // Re-send our latest votes for the heights still open.
            for (&seq, slot) in self.slots.range(self.executed + 1..) {
                let Some((v, digest)) = slot.accepted else {
                    continue;
                };
                if v != view {
                    continue;
                }
                if self.set.primary(view) == self.me {
                    if let (Some(batch), Some((_, sig))) =
                        (self.batches.get(&digest), slot.prepares.votes.get(&self.me))
                    {
                        resend.push(Message::PrePrepare {
                            view,
                            seq,
                            batch: batch.clone(),
                            vote: *sig,
                        });
                    }
                } else if let Some((_, sig)) = slot.prepares.votes.get(&self.me) {
                    resend.push(Message::Vote {
                        phase: Phase::Prepare,
                        view,
                        seq,
                        digest,
                        signature: *sig,
                    });
                }
                if let Some((d, sig)) = slot.commits.votes.get(&self.me) {
                    resend.push(Message::Vote {
                        phase: Phase::Commit,
                        view,
                        seq,
                        digest: *d,
                        signature: *sig,
                    });
                }
            }
        }
        if let Some((seq, state, signature)) = self.own_checkpoint_vote {
            resend.push(Message::Checkpoint {
                seq,
                state,
                signature,
            });
        }
        resend.push(Message::Status {
            view,
            changing: self.changing,
            executed: self.executed,
        });
        for m in resend {
            self.broadcast(m);
        }
        for d in self.wanted.iter().copied().collect::<Vec<_>>() {
            self.broadcast(Message::FetchBatch(d));
        }
        if self.executed < self.transfer_target {
            self.request_blocks();
        }
        // A replica that hears of views it has not entered asks for their proof.
        let ahead = self.future.iter().find(|(_, m)| {
            matches!(m, Message::PrePrepare { view: v, .. } | Message::Vote { view: v, .. } if *v > self.view)
        });
        if let Some(&(sender, _)) = ahead {
            self.query_sent = true;
            let msg = Arc::new(Message::QueryView.encode());
            self.send(sender, msg);
        }
    }

    /// Forwards again, oldest first, the requests that have waited half a request timeout
    /// since they were last forwarded (the primary may have lost them, or left them out).
    fn reforward(&mut self) {
        if self.changing || self.is_primary() {
            return;
        }
        let half = self.cfg.request_timeout / 2;
        let mut picked = Vec::new();
        for (since, key) in &self.awaiting_by_age {
            if *since + half > self.now || picked.len() >= self.cfg.limits.max_forward {
                break;
            }
            if self
                .awaiting
                .get(key)
                .is_some_and(|p| p.forwarded + half <= self.now)
            {
                picked.push(*key);
            }
        }
        for key in picked {
            if let Some(p) = self.awaiting.get_mut(&key) {
                p.forwarded = self.now;
                self.forward_buf.push(p.request.clone());
            }
        }
    }

    // ----- output plumbing -----------------------------------------------------------------

    fn node(&self, index: usize) -> NodeId {
        self.set.get(index).map(|v| v.id).unwrap_or_default()
    }

    fn broadcast(&mut self, msg: Message) {
        self.outputs.push_back(Output::Broadcast {
            message: Arc::new(msg.encode()),
        });
    }

    fn send(&mut self, to: usize, message: Arc<Vec<u8>>) {
        let to = self.node(to);
        self.outputs.push_back(Output::Send { to, message });
    }

    /// Ends a step: forwards buffered requests and persists the vote state if it changed.
    /// Persisting last is safe because outputs are only polled after the step returns.
    fn flush(&mut self) -> Result<()> {
        if !self.forward_buf.is_empty() && !self.changing && !self.is_primary() {
            // Requests arriving together go to the primary together: wait up to
            // `forward_delay` (or until a bundle is full) before forwarding.
            let due = *self
                .forward_due
                .get_or_insert(self.now + self.cfg.forward_delay);
            if self.now >= due || self.forward_buf.len() >= self.cfg.limits.max_forward {
                self.forward_due = None;
                let primary = self.set.primary(self.view);
                let reqs = std::mem::take(&mut self.forward_buf);
                for chunk in reqs.chunks(self.cfg.limits.max_forward) {
                    let msg = Arc::new(Message::Forward(chunk.to_vec()).encode());
                    self.send(primary, msg);
                }
            }
        } else if self.is_primary() && !self.forward_buf.is_empty() {
            for r in std::mem::take(&mut self.forward_buf) {
                self.enqueue(r);
            }
            self.try_propose()?;
        }
        if self.forward_buf.is_empty() || self.changing {
            self.forward_due = None;
        }
        if self.dirty {
            self.dirty = false;
            let state = VoteState {
                view: self.view,
                changing: self.changing,
                checkpoint: self.checkpoint.clone(),
                slots: self
                    .slots
                    .range(self.low + 1..)
                    .filter(|(_, s)| s.accepted.is_some() || s.prepared.is_some())
                    .map(|(&seq, s)| SlotRecord {
                        seq,
                        accepted: s.accepted,
                        prepared: s.prepared.clone(),
                    })
                    .collect(),
            };
            // One pruned below the stable checkpoint in this same step needs no storing.
            let mut batches = std::mem::take(&mut self.unsaved_batches);
            batches.retain(|b| self.batches.contains_key(&b.digest()));
            // A batch already in storage that this replica does not track may be the body of
            // a block in the ledger: the same batch (the same requests in the same order) can
            // be proposed again at a later height, honestly after a view change or by a
            // Byzantine primary on purpose. Saving it again must not make it forgettable, or
            // the next checkpoint would delete an executed block's body (the simulator found
            // this with failure-detector hints).
            for b in &batches {
                let d = b.digest();
                if !self.stored.contains_key(&d) && self.storage.has_batch(&d)? {
                    self.stored.insert(d, true);
                }
            }
            let forget = std::mem::take(&mut self.forget_batches);
            self.storage
                .save_state(&state.encode(), &batches, &forget)?;
            for b in &batches {
                self.stored.entry(b.digest()).or_insert(false);
            }
        }
        Ok(())
    }
}

/// Which form of certificate [`certify_votes`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// One aggregate signature (commit and checkpoint certificates).
    Aggregate,
    /// Each signer's signature (prepare certificates).
    Each,
}

/// Forms a quorum certificate from the `votes` for `digest` (signed over `msg`): verifies
/// the quorum's signatures together, optimistically (one aggregate check, or one batch
/// check of the individual prepare signatures, leaving out this replica's own vote); if
/// that fails, checks each vote and drops the bad ones (their voters may vote again).
/// `None` while short of a quorum of good votes.
#[allow(clippy::too_many_arguments)]
fn certify_votes(
    set: &ValidatorSet,
    scheme: &dyn Scheme,
    me: usize,
    stats: &mut Stats,
    votes: &mut HashMap<usize, (Digest, VoteSig)>,
    digest: &Digest,
    msg: &[u8],
    form: Form,
) -> Result<Option<(SignerBitmap, Signatures)>> {
    let mut voters: Vec<usize> = votes
        .iter()
        .filter(|(_, (d, _))| d == digest)
        .map(|(i, _)| *i)
        .collect();
    voters.sort_unstable();
    let weight: u64 = voters.iter().map(|&i| set.weight(i)).sum();
    if !set.is_quorum(weight) {
        return Ok(None);
    }
    let sigs: Vec<VoteSig> = voters
        .iter()
        .filter_map(|i| votes.get(i).map(|v| v.1))
        .collect();
    let checked = match form {
        Form::Aggregate => scheme
            .certify(set, &voters, msg, &sigs)
            .map(Signatures::Aggregate),
        Form::Each => {
            // Our own vote is ours: only the others' need checking.
            let (others, other_sigs): (Vec<usize>, Vec<VoteSig>) = voters
                .iter()
                .zip(&sigs)
                .filter(|(i, _)| **i != me)
                .map(|(i, s)| (*i, *s))
                .unzip();
            (others.is_empty() || scheme.verify_prepares(set, &others, msg, &other_sigs))
                .then(|| Signatures::Each(sigs.clone()))
        }
    };
    match checked {
        Some(signatures) => {
            let mut signers = SignerBitmap::new(set.len())?;
            for &i in &voters {
                signers.set(i)?;
            }
            Ok(Some((signers, signatures)))
        }
        None => {
            for (i, s) in voters.iter().zip(&sigs) {
                if *i == me {
                    continue;
                }
                let good = match form {
                    Form::Aggregate => scheme.verify(set, &[*i], msg, s),
                    Form::Each => scheme.verify_prepares(set, &[*i], msg, std::slice::from_ref(s)),
                };
                if !good {
                    votes.remove(i);
                    stats.bad_signatures += 1;
                }
            }
            Ok(None)
        }
    }
}

fn verify_requests(reqs: &[Request]) -> std::result::Result<(), ()> {
    let mut keys = Vec::with_capacity(reqs.len());
    let mut msgs = Vec::with_capacity(reqs.len());
    // A client's key is decoded (a point decompression) once per batch, not per request.
    let mut decoded: crate::FastMap<NodeId, ed25519::VerifyingKey> = Default::default();
    for r in reqs {
        let key = match decoded.get(&r.client) {
            Some(k) => *k,
            None => {
                let k = ed25519::VerifyingKey::from_bytes(r.client.as_bytes()).map_err(|_| ())?;
                decoded.insert(r.client, k);
                k
            }
        };
        keys.push(key);
        msgs.push(r.signing_bytes());
    }
    let mut items = Vec::with_capacity(reqs.len());
    for ((r, k), m) in reqs.iter().zip(&keys).zip(&msgs) {
        let sig = r.signature.as_ref().ok_or(())?;
        items.push(ed25519::BatchItem {
            key: k,
            message: m,
            signature: sig,
        });
    }
    ed25519::verify_batch(&items).map_err(|_| ())
}

/// The certificate chosen at each height: the highest-view prepare certificate among the
/// view changes (ties broken by the first in order).
fn chosen_certificates(vcs: &[ViewChange]) -> Vec<&Certificate> {
    let mut best: BTreeMap<u64, &Certificate> = BTreeMap::new();
    for vc in vcs {
        for c in &vc.prepared {
            match best.get(&c.seq) {
                Some(b) if b.view >= c.view => {}
                _ => {
                    best.insert(c.seq, c);
                }
            }
        }
    }
    best.into_values().collect()
}

/// PBFT's new-view rule: from the highest stable checkpoint among the view changes up to the
/// highest prepared height, re-propose the highest-view prepared digest at each height, or
/// the empty batch where none was prepared. `None` if the range exceeds `window`.
#[allow(clippy::type_complexity)]
fn select_proposals(
    vcs: &[ViewChange],
    window: u64,
) -> Option<(Option<&CheckpointCert>, Vec<(u64, Digest)>)> {
    let cp = vcs
        .iter()
        .filter_map(|v| v.checkpoint.as_ref())
        .max_by_key(|c| c.seq);
    let min_s = cp.map_or(0, |c| c.seq);
    let chosen = chosen_certificates(vcs);
    let max_s = chosen
        .iter()
        .map(|c| c.seq)
        .max()
        .unwrap_or(min_s)
        .max(min_s);
    if max_s - min_s > window {
        return None;
    }
    let by_seq: HashMap<u64, Digest> = chosen.iter().map(|c| (c.seq, c.digest)).collect();
    let proposals = (min_s + 1..=max_s)
        .map(|s| {
            (
                s,
                by_seq.get(&s).copied().unwrap_or_else(Batch::empty_digest),
            )
        })
        .collect();
    Some((cp, proposals))
}
