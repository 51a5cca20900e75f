//! Deterministic multi-replica simulation of agentmesh consensus.
//!
//! This crate owns the harness that runs many [`mesh_consensus::Replica`]s in one thread on
//! virtual time: a seeded network that delays, loses, duplicates, reorders and partitions
//! messages; crashes and restarts with persisted state (each replica's `MemStore` outlives
//! its crash); Byzantine replicas ([`Behaviour`]); clients that submit and retry requests;
//! and the checks that decide whether a run was correct ([`Report::violations`]): safety,
//! validity, liveness after the network heals, and ledger prefix-consistency verified by a
//! light client. The same [`SimConfig`] gives the same run, byte for byte
//! ([`Report::trace`]).
//!
//! It is a dev-dependency only: nothing shipped may depend on it. Its [`SimScheme`] is a
//! cheap stand-in for BLS so thousands of seeds run in a test; runs can use real BLS with
//! [`SimConfig::real_crypto`].

#![forbid(unsafe_code)]
// A test harness: a setup that cannot start (a replica refusing its own configuration) is a
// bug in the run, reported by panicking in the test that asked for it.
#![allow(clippy::panic)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use mesh_consensus::message::{Batch, Message, Phase, vote_bytes};
use mesh_consensus::{
    Change, Config, Genesis, LightClient, Output, Replica, Request, RequestAuth, RequestKind,
    Scheme, StoreStorage, Validator, ValidatorSet, VoteSig,
};
use mesh_crypto::bls::BlsSecretKey;
use mesh_crypto::ed25519::SigningKey;
use mesh_store::MemStore;
use mesh_types::{Digest, Instant, NodeId};

/// A small deterministic generator (SplitMix64): the only randomness in a run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x6a09_e667_f3bc_c909)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }
}

/// The simulator's stand-in for BLS: a replica "signs" with a keyed BLAKE3 hash, aggregates
/// by XOR, and verifiers (which, in the simulator, know every key) recompute. It detects
/// every forgery a Byzantine replica without the others' keys can attempt, at a
/// thousandth of the cost of pairings. Never ship it: anyone with the key table can sign.
#[derive(Debug, Clone)]
pub struct SimScheme {
    index: usize,
    secrets: Arc<Vec<[u8; 32]>>,
}

impl SimScheme {
    fn mac(secret: &[u8; 32], message: &[u8]) -> [u8; 96] {
        let d = blake3::keyed_hash(secret, message);
        let mut out = [0u8; 96];
        out[..32].copy_from_slice(d.as_bytes());
        out
    }
}

impl Scheme for SimScheme {
    fn sign(&self, message: &[u8]) -> VoteSig {
        VoteSig(Self::mac(&self.secrets[self.index], message))
    }

    fn aggregate(&self, signatures: &[VoteSig]) -> Option<VoteSig> {
        let mut out = [0u8; 96];
        for s in signatures {
            for (o, b) in out.iter_mut().zip(s.0.iter()) {
                *o ^= b;
            }
        }
        Some(VoteSig(out))
    }

    fn verify(
        &self,
        _set: &ValidatorSet,
        signers: &[usize],
        message: &[u8],
        signature: &VoteSig,
    ) -> bool {
        if signers.is_empty() {
            return false;
        }
        let mut out = [0u8; 96];
        for &i in signers {
            let Some(secret) = self.secrets.get(i) else {
                return false;
            };
            for (o, b) in out.iter_mut().zip(Self::mac(secret, message).iter()) {
                *o ^= b;
            }
        }
        out == signature.0
    }
}

/// Signs a vote as an honest replica would: prepare votes with [`Scheme::sign_prepare`],
/// commit votes with [`Scheme::sign`].
fn sign_vote(scheme: &dyn Scheme, phase: Phase, message: &[u8]) -> VoteSig {
    match phase {
        Phase::Prepare => scheme.sign_prepare(message),
        Phase::Commit => scheme.sign(message),
    }
}

/// How a Byzantine replica misbehaves. Each runs an honest replica inside and corrupts what
/// it sends (or, for amnesia, what it remembers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Behaviour {
    /// Sends nothing at all.
    Silent,
    /// As primary, proposes different batches to different replicas at the same height.
    EquivocatingPrimary,
    /// Sends votes with signatures over other digests, and votes for digests never proposed.
    ForgedVotes,
    /// Re-sends old messages it received or sent, as its own.
    ReplayedVotes,
    /// Sends copies of its votes and view changes with earlier view numbers.
    StaleView,
    /// Crashes and restarts with its storage wiped, forgetting its votes.
    Amnesia,
    /// As primary, leaves the first client's requests out of every proposal (and votes
    /// accordingly), while ordering everyone else's.
    CensoringPrimary,
}

impl Behaviour {
    /// Every behaviour.
    pub const ALL: [Behaviour; 7] = [
        Self::Silent,
        Self::EquivocatingPrimary,
        Self::ForgedVotes,
        Self::ReplayedVotes,
        Self::StaleView,
        Self::Amnesia,
        Self::CensoringPrimary,
    ];
}

/// A reconfiguration every voting replica proposes at a given time (node indices: replicas
/// first, then candidates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimChange {
    /// Admit candidate node `node` (an index at or above `replicas`) with `weight`.
    Admit {
        /// The candidate's node index.
        node: usize,
        /// Its weight.
        weight: u32,
    },
    /// Remove the validator at node `node`.
    Remove(usize),
    /// Set the weight of the validator at node `node`.
    SetWeight(usize, u32),
}

/// The network's misbehaviour while faults are on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Smallest one-way delay.
    pub min_delay: Duration,
    /// Largest one-way delay (spread between the two reorders messages).
    pub max_delay: Duration,
    /// Messages lost, per mille.
    pub loss_per_mille: u32,
    /// Messages delivered twice, per mille.
    pub duplicate_per_mille: u32,
    /// Whether to cut the network in two for a while.
    pub partition: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(10),
            loss_per_mille: 0,
            duplicate_per_mille: 0,
            partition: false,
        }
    }
}

/// One simulated run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed: everything random in the run derives from it.
    pub seed: u64,
    /// Number of replicas (3f + 1 for f faults).
    pub replicas: usize,
    /// Byzantine replicas: `(index, behaviour)`.
    pub byzantine: Vec<(usize, Behaviour)>,
    /// Crash-and-restart events of honest replicas during the fault period.
    pub crashes: usize,
    /// Requests submitted.
    pub requests: usize,
    /// Distinct clients.
    pub clients: usize,
    /// Request payload size.
    pub payload: usize,
    /// Requests are submitted evenly over this span.
    pub submit_over: Duration,
    /// Network faults, crashes and partitions happen only before this time; afterwards the
    /// network is reliable (with delay) and every request must commit.
    pub faults_until: Duration,
    /// The run fails for liveness if requests are still open at this time.
    pub time_limit: Duration,
    /// How long a client waits before re-sending to every replica.
    pub client_timeout: Duration,
    /// The network.
    pub net: NetConfig,
    /// Replica configuration.
    pub consensus: Config,
    /// Use real BLS signatures instead of [`SimScheme`].
    pub real_crypto: bool,
    /// Break the quorum rule (a test of the checks).
    pub broken_quorum: bool,
    /// Extra nodes outside the genesis set, started as learners (candidates to admit).
    pub candidates: usize,
    /// Reconfigurations the voting replicas propose, with when.
    pub changes: Vec<(Duration, SimChange)>,
    /// Nodes stopped for good (a crash without restart), with when; the checks leave them
    /// out from then on.
    pub stops: Vec<(Duration, usize)>,
    /// Storage writes that fail during the fault period, per mille of replica steps: half
    /// lost, half written but reported failed. A replica whose step fails is stopped without
    /// sending that step's outputs (its contract) and restarted from its storage.
    pub storage_faults: u32,
    /// Hints from an outside failure detector during the fault period: each makes one honest
    /// replica suspect (`Replica::handle_suspicion`) the primary it knows, or (one time in
    /// two) a random replica: true suspicions of a crashed or silent primary and false ones
    /// alike. They must never break safety or validity.
    pub suspicions: usize,
    /// Also measure each request's commit latency in wall-clock time (benchmarks): from the
    /// moment the simulator hands it to a replica until f + 1 replicas executed it, all the
    /// computation of every replica in between included.
    pub wall_clock: bool,
}

impl SimConfig {
    /// A small clean run of `replicas` replicas with `seed`.
    pub fn new(seed: u64, replicas: usize) -> Self {
        Self {
            seed,
            replicas,
            byzantine: Vec::new(),
            crashes: 0,
            requests: 40,
            clients: 4,
            payload: 64,
            submit_over: Duration::from_secs(2),
            faults_until: Duration::from_secs(4),
            time_limit: Duration::from_secs(120),
            client_timeout: Duration::from_secs(3),
            net: NetConfig::default(),
            consensus: Config {
                checkpoint_interval: 4,
                window: 16,
                max_inflight: 4,
                // Small runs: pipeline every request, so pipelining is exercised.
                min_pipelined_batch: 1,
                request_timeout: Duration::from_millis(800),
                view_change_timeout: Duration::from_millis(800),
                retransmit_interval: Duration::from_millis(200),
                ..Config::default()
            },
            real_crypto: false,
            broken_quorum: false,
            candidates: 0,
            changes: Vec::new(),
            stops: Vec::new(),
            wall_clock: false,
            storage_faults: 0,
            suspicions: 0,
        }
    }
}

impl SimConfig {
    /// A one-line summary of what the run injects, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "seed {} replicas {} byzantine {:?} crashes {} storage faults {}‰ net {:?} auth {:?} \
             changes {:?} stops {:?}",
            self.seed,
            self.replicas,
            self.byzantine,
            self.crashes,
            self.storage_faults,
            self.net,
            self.consensus.request_auth,
            self.changes,
            self.stops
        )
    }
}

/// Runs `cfg` and panics, with the configuration and every violation, unless the run was
/// correct (a test's check).
#[track_caller]
pub fn check(cfg: SimConfig) -> Report {
    let desc = cfg.describe();
    let report = Sim::new(cfg).run();
    if !report.violations.is_empty() {
        panic!("{desc}:\n{}", report.violations.join("\n"));
    }
    report
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Report {
    /// Broken properties, with details; empty for a correct run.
    pub violations: Vec<String>,
    /// A digest of every delivery and commit in order: equal for equal configurations.
    pub trace: Digest,
    /// Requests executed at every honest replica.
    pub committed_everywhere: usize,
    /// Virtual time at the end.
    pub virtual_time: Duration,
    /// Messages delivered.
    pub delivered: u64,
    /// Highest view reached by an honest replica.
    pub max_view: u64,
    /// Blocks in the longest honest ledger.
    pub height: u64,
    /// Per request: virtual time from first submission to execution at f + 1 replicas.
    pub latencies: Vec<Duration>,
    /// The same in wall-clock time, when [`SimConfig::wall_clock`] is set.
    pub wall_latencies: Vec<Duration>,
    /// Sum over honest replicas of messages each refused as malformed, badly signed, invalid
    /// or from a stranger (stale messages are not counted: late votes are normal).
    pub refused: u64,
    /// The validator set in force at the end at the checked replica with the highest epoch.
    pub validators: Option<ValidatorSet>,
    /// Replica steps stopped by an injected storage failure.
    pub storage_failures: u64,
    /// Per view entered by view change: its number and how long it took, from the moment a
    /// quorum of replicas (2f + 1) had asked for it (or a later view) until the last honest
    /// replica that entered it did.
    pub view_changes: Vec<(u64, Duration)>,
}

enum Ev {
    Deliver {
        to: usize,
        from: usize,
        bytes: Arc<Vec<u8>>,
        /// The hash of `bytes` (for the trace).
        hash: [u8; 32],
    },
    Timer {
        node: usize,
        generation: u64,
    },
    Submit {
        request: usize,
        to_all: bool,
    },
    Crash {
        node: usize,
        wipe: bool,
    },
    Restart {
        node: usize,
    },
    Propose {
        change: usize,
    },
    Stop {
        node: usize,
    },
    Suspect {
        node: usize,
        /// A replica index, or `None` for the primary `node` knows.
        target: Option<usize>,
    },
}

type Store = FlakyStorage;

/// How a replica's next storage write fails, if it does.
#[derive(Debug, Default)]
struct FaultSwitch(std::sync::atomic::AtomicU8);

const WRITE_OK: u8 = 0;
/// The write does not happen and reports an error.
const LOST: u8 = 1;
/// The write happens, then reports an error (the disk wrote it; the replica cannot know).
const WRITTEN_BUT_FAILED: u8 = 2;

impl FaultSwitch {
    fn set(&self, mode: u8) {
        self.0.store(mode, std::sync::atomic::Ordering::Relaxed);
    }

    fn get(&self) -> u8 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The replica's storage with injectable write failures (see [`SimConfig::storage_faults`]).
struct FlakyStorage {
    inner: StoreStorage<MemStore>,
    faults: Arc<FaultSwitch>,
}

impl FlakyStorage {
    fn write(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut StoreStorage<MemStore>) -> mesh_consensus::Result<()>,
    ) -> mesh_consensus::Result<()> {
        let failed = || {
            mesh_consensus::Error::Storage(mesh_store::Error::Io {
                path: std::path::PathBuf::from("(simulated disk)"),
                op: what,
                source: std::io::Error::other("injected write failure"),
            })
        };
        match self.faults.get() {
            LOST => Err(failed()),
            WRITTEN_BUT_FAILED => {
                f(&mut self.inner)?;
                Err(failed())
            }
            _ => f(&mut self.inner),
        }
    }
}

impl mesh_consensus::Storage for FlakyStorage {
    fn load_state(&self) -> mesh_consensus::Result<Option<Vec<u8>>> {
        self.inner.load_state()
    }
    fn save_state(
        &mut self,
        state: &[u8],
        batches: &[Arc<Batch>],
        forget: &[Digest],
    ) -> mesh_consensus::Result<()> {
        self.write("vote state", |s| s.save_state(state, batches, forget))
    }
    fn load_batch(&self, digest: &Digest) -> mesh_consensus::Result<Option<Batch>> {
        self.inner.load_batch(digest)
    }
    fn has_batch(&self, digest: &Digest) -> mesh_consensus::Result<bool> {
        self.inner.has_batch(digest)
    }
    fn append_block(
        &mut self,
        block: &mesh_consensus::CommittedBlock,
        body_stored: bool,
    ) -> mesh_consensus::Result<()> {
        self.write("ledger append", |s| s.append_block(block, body_stored))
    }
    fn last_seq(&self) -> mesh_consensus::Result<u64> {
        self.inner.last_seq()
    }
    fn block(&self, seq: u64) -> mesh_consensus::Result<Option<mesh_consensus::CommittedBlock>> {
        self.inner.block(seq)
    }
    fn blocks(
        &self,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> mesh_consensus::Result<Vec<mesh_consensus::CommittedBlock>> {
        self.inner.blocks(from, max, max_bytes)
    }
    fn load_genesis(&self) -> mesh_consensus::Result<Option<Vec<u8>>> {
        self.inner.load_genesis()
    }
    fn save_genesis(&mut self, genesis: &[u8]) -> mesh_consensus::Result<()> {
        self.write("genesis", |s| s.save_genesis(genesis))
    }
}

struct Node {
    replica: Option<Replica<Store>>,
    store: MemStore,
    ed: SigningKey,
    scheme_index: usize,
    behaviour: Option<Behaviour>,
    generation: u64,
    received: VecDeque<Arc<Vec<u8>>>,
    /// An equivocating primary's second proposals: `(view, seq)` -> the alternative digest.
    alternatives: HashMap<(u64, u64), Digest>,
    committed: Vec<Digest>,
    executed: FastSet<(NodeId, u64)>,
    /// Stopped for good (left out of the checks).
    stopped: bool,
    /// Arms this node's storage failures.
    faults: Arc<FaultSwitch>,
    /// Ids of the change requests this node submitted.
    next_change_id: u64,
}

struct ReqState {
    request: Request,
    submitted_at: Instant,
    confirmations: usize,
    confirmed_at: Option<Instant>,
    done: bool,
    /// Wall-clock time of the first submission and the wall-clock latency (when measured).
    submitted_wall: Option<WallClock>,
    wall_latency: Option<Duration>,
}

/// A simulation in progress.
pub struct Sim {
    cfg: SimConfig,
    rng: Rng,
    now: Instant,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Ev>,
    order: u64,
    set: ValidatorSet,
    /// Every node's id: validators in set order, then candidates.
    ids: Vec<NodeId>,
    nodes: Vec<Node>,
    bls: Vec<BlsSecretKey>,
    secrets: Arc<Vec<[u8; 32]>>,
    requests: Vec<ReqState>,
    by_key: FastMap<(NodeId, u64), usize>,
    /// The client a censoring primary leaves out.
    censored: NodeId,
    canonical: BTreeMap<u64, Digest>,
    partition: Option<(Instant, Instant, Vec<bool>)>,
    trace: blake3::Hasher,
    /// The last buffer transmitted and its hash.
    last_hashed: Option<(Arc<Vec<u8>>, [u8; 32])>,
    violations: Vec<String>,
    delivered: u64,
    f: usize,
    /// The last timer event (node, time) and how many fired there in a row.
    last_timer: ((usize, Instant), u32),
    /// Replica steps stopped by a storage failure.
    storage_failures: u64,
    /// Per view: when honest replicas asked for it, and when they entered it.
    view_started: BTreeMap<u64, Vec<Instant>>,
    view_entered: BTreeMap<u64, Vec<Instant>>,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// The wall clock, for [`SimConfig::wall_clock`] measurements only (nothing in a run depends
/// on it, so runs stay deterministic).
#[derive(Debug, Clone, Copy)]
struct WallClock(std::time::Instant);

impl WallClock {
    #[allow(clippy::disallowed_methods)] // a benchmark measurement, never an input to the run
    fn now() -> Self {
        Self(std::time::Instant::now())
    }

    fn elapsed(self) -> Duration {
        Self::now().0.saturating_duration_since(self.0)
    }
}

fn at(d: Duration) -> Instant {
    Instant::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Sim {
    /// Sets up a run: keys, validator set, replicas, the client schedule and the faults.
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let n = cfg.replicas;
        let mut members = Vec::new();
        let mut eds = Vec::new();
        let mut bls = Vec::new();
        let mut secrets = Vec::new();
        let mut ids = Vec::new();
        for i in 0..n + cfg.candidates {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            seed[8..16].copy_from_slice(&cfg.seed.to_le_bytes());
            let ed = SigningKey::from_seed(&seed);
            let key = BlsSecretKey::from_ikm(&seed).unwrap_or_else(|e| unreachable_key(&e));
            ids.push(NodeId(ed.verifying_key().to_bytes()));
            if i < n {
                members.push(Validator {
                    id: NodeId(ed.verifying_key().to_bytes()),
                    bls: key.public_key(),
                    weight: 1,
                });
            }
            secrets.push(*blake3::hash(&seed).as_bytes());
            eds.push(ed);
            bls.push(key);
        }
        let mut set =
            ValidatorSet::from_verified(0, members).unwrap_or_else(|e| unreachable_key(&e));
        if cfg.broken_quorum {
            set.break_quorum_rule_for_testing();
        }
        let behaviours: HashMap<usize, Behaviour> = cfg.byzantine.iter().copied().collect();
        let nodes = eds
            .into_iter()
            .enumerate()
            .map(|(i, ed)| Node {
                replica: None,
                store: MemStore::new(),
                ed,
                scheme_index: i,
                behaviour: behaviours.get(&i).copied(),
                generation: 0,
                received: VecDeque::new(),
                alternatives: HashMap::new(),
                committed: Vec::new(),
                executed: FastSet::default(),
                stopped: false,
                next_change_id: 1,
                faults: Arc::new(FaultSwitch::default()),
            })
            .collect();
        let f = (n - 1) / 3;
        let mut sim = Self {
            rng: Rng::new(rng.next_u64()),
            now: Instant::ZERO,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            order: 0,
            set,
            ids,
            nodes,
            bls,
            secrets: Arc::new(secrets),
            requests: Vec::new(),
            by_key: FastMap::default(),
            censored: NodeId::default(),
            canonical: BTreeMap::new(),
            partition: None,
            trace: blake3::Hasher::new(),
            last_hashed: None,
            violations: Vec::new(),
            delivered: 0,
            f,
            last_timer: ((usize::MAX, Instant::ZERO), 0),
            view_started: BTreeMap::new(),
            view_entered: BTreeMap::new(),
            storage_failures: 0,
            cfg,
        };
        for i in 0..sim.total() {
            sim.start(i);
        }
        sim.schedule_clients(&mut rng);
        sim.schedule_faults(&mut rng);
        for k in 0..sim.cfg.changes.len() {
            let t = at(sim.cfg.changes[k].0);
            sim.push(t, Ev::Propose { change: k });
        }
        for k in 0..sim.cfg.stops.len() {
            let (t, node) = sim.cfg.stops[k];
            sim.push(at(t), Ev::Stop { node });
        }
        sim
    }

    /// Validators and candidates.
    fn total(&self) -> usize {
        self.cfg.replicas + self.cfg.candidates
    }

    /// Honest nodes not stopped for good: the ones the checks hold to account.
    fn checked(&self) -> Vec<usize> {
        (0..self.total())
            .filter(|&i| self.honest(i) && !self.nodes[i].stopped)
            .collect()
    }

    /// Every voting replica proposes change `k`.
    fn propose(&mut self, k: usize) {
        let change = match self.cfg.changes[k].1 {
            SimChange::Remove(node) => Change::Remove(self.ids[node]),
            SimChange::SetWeight(node, weight) => Change::SetWeight {
                id: self.ids[node],
                weight,
            },
            SimChange::Admit { node, weight } => {
                let Some(puzzle) = (0..self.total()).find_map(|i| {
                    self.nodes[i]
                        .replica
                        .as_ref()
                        .filter(|r| r.is_voter())
                        .map(|r| r.governance().puzzle())
                }) else {
                    return;
                };
                let did = mesh_consensus::reconfig::did_key(&self.ids[node]);
                let proof = puzzle
                    .mint(&did, 0, 1 << 20, |_| true)
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| panic!("no proof of computation for node {node}"));
                Change::Admit(Box::new(mesh_consensus::reconfig::Admission {
                    validator: Validator {
                        id: self.ids[node],
                        bls: self.bls[node].public_key(),
                        weight,
                    },
                    possession: self.bls[node].prove_possession(),
                    proof,
                }))
            }
        };
        let spec = self.cfg.changes[k].1;
        let mut proposed = false;
        for i in 0..self.total() {
            if !self.honest(i) {
                continue;
            }
            let node = &mut self.nodes[i];
            let Some(epoch) = node
                .replica
                .as_ref()
                .filter(|r| r.is_voter() && !applied(r.validators(), &self.ids, spec))
                .map(|r| r.validators().epoch())
            else {
                continue;
            };
            proposed = true;
            let id = node.next_change_id;
            node.next_change_id += 1;
            let request = Request::change(self.ids[i], id, epoch, &change).sign(&node.ed);
            // Refusals (busy, duplicate) are fine: proposals are repeated until in force.
            if self.step(i, |r, now| refused_is_fine(r.handle_request(now, request))) {
                self.drain(i);
            }
        }
        // Like clients, validators propose again until the change is in force (a proposal
        // is lost with a crashed replica's memory; counting it twice is harmless).
        if proposed {
            let retry = self.now + self.cfg.client_timeout;
            self.push(retry, Ev::Propose { change: k });
        }
    }

    fn scheme(&self, i: usize) -> Box<dyn Scheme> {
        if self.cfg.real_crypto {
            Box::new(mesh_consensus::BlsScheme::new(
                self.bls[i].clone(),
                SigningKey::from_seed(&self.nodes[i].ed.seed()),
            ))
        } else {
            Box::new(SimScheme {
                index: self.nodes[i].scheme_index,
                secrets: self.secrets.clone(),
            })
        }
    }

    fn start(&mut self, i: usize) {
        let inner = StoreStorage::open(&self.nodes[i].store, self.cfg.consensus.limits)
            .unwrap_or_else(|e| unreachable_key(&e));
        let storage = FlakyStorage {
            inner,
            faults: self.nodes[i].faults.clone(),
        };
        let replica = Replica::with_scheme(
            self.cfg.consensus.clone(),
            self.set.clone(),
            self.nodes[i].ed.clone(),
            self.scheme(i),
            storage,
            self.now,
        )
        .unwrap_or_else(|e| panic!("replica {i} failed to start: {e}"));
        // Blocks the ledger holds that the application never heard of (a step that failed on
        // storage after appending them had its outputs dropped): the application reads them
        // from the ledger, as a node's would after a restart.
        let mut missed = Vec::new();
        let mut from = self.nodes[i].committed.len() as u64 + 1;
        loop {
            let blocks = mesh_consensus::Storage::blocks(replica.storage(), from, 64, 1 << 24)
                .unwrap_or_else(|e| panic!("replica {i}: ledger unreadable: {e}"));
            if blocks.is_empty() {
                break;
            }
            from += blocks.len() as u64;
            missed.extend(blocks);
        }
        self.nodes[i].replica = Some(replica);
        self.nodes[i].generation += 1;
        for block in missed {
            let executed: Vec<u32> = block
                .batch
                .requests()
                .iter()
                .enumerate()
                .filter(|(_, r)| !self.nodes[i].executed.contains(&r.key()))
                .map(|(k, _)| k as u32)
                .collect();
            self.on_commit(i, &block, &executed);
        }
        self.drain(i);
    }

    /// Runs one replica step, with a storage failure armed by chance during the fault period.
    /// A step that fails on storage stops the replica there: its outputs are dropped (they
    /// may depend on what was not written) and it restarts from its storage a little later.
    /// Returns whether the replica is still up (the caller then drains it).
    fn step(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Replica<Store>, Instant) -> mesh_consensus::Result<()>,
    ) -> bool {
        if self.nodes[i].replica.is_none() {
            return false;
        }
        let faulty = self.now < at(self.cfg.faults_until)
            && self.cfg.storage_faults > 0
            && self.rng.chance(self.cfg.storage_faults);
        if faulty {
            let mode = if self.rng.chance(500) {
                LOST
            } else {
                WRITTEN_BUT_FAILED
            };
            self.nodes[i].faults.set(mode);
        }
        let now = self.now;
        let result = match self.nodes[i].replica.as_mut() {
            Some(r) => f(r, now),
            None => return false,
        };
        self.nodes[i].faults.set(WRITE_OK);
        match result {
            Err(e @ mesh_consensus::Error::Storage(_)) => {
                if !faulty {
                    self.violations
                        .push(format!("replica {i}: storage failed: {e}"));
                }
                self.storage_failures += 1;
                self.nodes[i].replica = None;
                self.nodes[i].generation += 1;
                let back = self.now + Duration::from_millis(20 + self.rng.below(300));
                self.push(back, Ev::Restart { node: i });
                false
            }
            _ => true,
        }
    }

    fn push(&mut self, t: Instant, ev: Ev) {
        self.order += 1;
        self.events.insert(self.order, ev);
        self.queue.push(Reverse((t.as_nanos(), self.order)));
    }

    fn schedule_clients(&mut self, rng: &mut Rng) {
        let n = self.cfg.requests;
        let client_keys: Vec<SigningKey> = (0..self.cfg.clients)
            .map(|c| {
                let mut seed = [0xc1u8; 32];
                seed[..8].copy_from_slice(&(c as u64).to_le_bytes());
                SigningKey::from_seed(&seed)
            })
            .collect();
        let client_ids: Vec<NodeId> = client_keys
            .iter()
            .map(|k| NodeId(k.verifying_key().to_bytes()))
            .collect();
        self.censored = client_ids.first().copied().unwrap_or_default();
        for k in 0..n {
            let c = k % self.cfg.clients.max(1);
            let id = (k / self.cfg.clients.max(1)) as u64 + 1;
            let mut payload = vec![0u8; self.cfg.payload];
            for (j, b) in payload.iter_mut().enumerate() {
                *b = (k as u8).wrapping_mul(31).wrapping_add(j as u8);
            }
            let request = match self.cfg.consensus.request_auth {
                RequestAuth::Signed => Request::signed(&client_keys[c], id, payload),
                RequestAuth::Connection => Request::new(client_ids[c], id, payload),
            };
            let t = at(self.cfg.submit_over * k as u32 / n.max(1) as u32);
            self.by_key.insert(request.key(), k);
            self.requests.push(ReqState {
                request,
                submitted_at: t,
                confirmations: 0,
                confirmed_at: None,
                submitted_wall: None,
                wall_latency: None,
                done: false,
            });
            let _ = rng;
            self.push(
                t,
                Ev::Submit {
                    request: k,
                    to_all: false,
                },
            );
        }
    }

    fn schedule_faults(&mut self, rng: &mut Rng) {
        let until = self.cfg.faults_until.as_millis() as u64;
        if self.cfg.net.partition && until > 0 {
            let start = rng.below(until / 2 + 1);
            let end = start + rng.below(until - start) + 1;
            let side: Vec<bool> = (0..self.total()).map(|_| rng.chance(500)).collect();
            self.partition = Some((Instant::from_millis(start), Instant::from_millis(end), side));
        }
        let honest: Vec<usize> = (0..self.cfg.replicas)
            .filter(|i| self.nodes[*i].behaviour.is_none())
            .collect();
        for _ in 0..self.cfg.crashes {
            if honest.is_empty() || until == 0 {
                break;
            }
            let node = honest[rng.below(honest.len() as u64) as usize];
            let t = rng.below(until);
            let down = 50 + rng.below(1_500);
            self.push(Instant::from_millis(t), Ev::Crash { node, wipe: false });
            self.push(Instant::from_millis(t + down), Ev::Restart { node });
        }
        for _ in 0..self.cfg.suspicions {
            if honest.is_empty() || until == 0 {
                break;
            }
            let node = honest[rng.below(honest.len() as u64) as usize];
            let target = rng
                .chance(500)
                .then(|| rng.below(self.cfg.replicas as u64) as usize);
            self.push(
                Instant::from_millis(rng.below(until)),
                Ev::Suspect { node, target },
            );
        }
        for i in 0..self.cfg.replicas {
            if self.nodes[i].behaviour == Some(Behaviour::Amnesia) {
                let t = rng.below(until.max(1));
                self.push(
                    Instant::from_millis(t),
                    Ev::Crash {
                        node: i,
                        wipe: true,
                    },
                );
                self.push(
                    Instant::from_millis(t + 20 + rng.below(300)),
                    Ev::Restart { node: i },
                );
            }
        }
    }

    fn honest(&self, i: usize) -> bool {
        self.nodes[i].behaviour.is_none()
    }

    /// Runs to completion: until every request executed at every honest replica and the
    /// fault period is over, or the time limit.
    pub fn run(mut self) -> Report {
        let limit = at(self.cfg.time_limit);
        let faults_end = at(self.cfg.faults_until);
        while let Some(Reverse((t, order))) = self.queue.pop() {
            let Some(ev) = self.events.remove(&order) else {
                continue;
            };
            if t > limit.as_nanos() {
                break;
            }
            self.now = Instant::from_nanos(t);
            self.handle(ev);
            if self.now >= faults_end && self.all_done() {
                break;
            }
        }
        self.finish()
    }

    fn all_done(&self) -> bool {
        let checked = self.checked();
        checked.iter().all(|&i| {
            self.nodes[i].replica.is_some() && self.nodes[i].executed.len() == self.requests.len()
        }) && self.changes_missing().is_empty()
    }

    /// `(node, change index)` for every checked node whose validator set does not reflect a
    /// scheduled change yet.
    fn changes_missing(&self) -> Vec<(usize, usize)> {
        let mut missing = Vec::new();
        for i in self.checked() {
            let Some(r) = self.nodes[i].replica.as_ref() else {
                continue;
            };
            for (k, (_, change)) in self.cfg.changes.iter().enumerate() {
                if !applied(r.validators(), &self.ids, *change) {
                    missing.push((i, k));
                }
            }
        }
        missing
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                to,
                from,
                bytes,
                hash,
            } => {
                let behaviour = self.nodes[to].behaviour;
                if behaviour == Some(Behaviour::Silent) {
                    return;
                }
                if self.nodes[to].replica.is_none() {
                    return;
                }
                self.delivered += 1;
                self.trace.update(&self.now.as_nanos().to_le_bytes());
                self.trace.update(&[to as u8, from as u8]);
                self.trace.update(&hash);
                let sender = self.ids[from];
                if !self.step(to, |r, now| r.handle_message(now, sender, &bytes)) {
                    return;
                }
                if behaviour == Some(Behaviour::ReplayedVotes) {
                    let node = &mut self.nodes[to];
                    node.received.push_back(bytes);
                    if node.received.len() > 256 {
                        node.received.pop_front();
                    }
                }
                self.drain(to);
            }
            Ev::Timer { node, generation } => {
                if self.nodes[node].generation != generation {
                    return;
                }
                // A replica whose timer keeps firing without time moving would hang the run:
                // report it instead.
                if self.last_timer.0 == (node, self.now) {
                    self.last_timer.1 += 1;
                    if self.last_timer.1 == 10_000 {
                        self.violations.push(format!(
                            "replica {node}: its timer fired 10,000 times at {:?} (a timeout it never clears)",
                            Duration::from_nanos(self.now.as_nanos())
                        ));
                        self.nodes[node].stopped = true;
                        self.nodes[node].replica = None;
                        return;
                    }
                } else {
                    self.last_timer = ((node, self.now), 0);
                }
                let mut failed = None;
                let up = self.step(node, |r, now| {
                    r.handle_timeout(now).or_else(|e| match e {
                        mesh_consensus::Error::Storage(_) => Err(e),
                        other => {
                            failed = Some(other);
                            Ok(())
                        }
                    })
                });
                if let Some(e) = failed {
                    self.violations
                        .push(format!("replica {node}: timeout step failed: {e}"));
                }
                if up {
                    self.drain(node);
                }
            }
            Ev::Submit { request, to_all } => self.submit(request, to_all),
            Ev::Crash { node, wipe } => {
                self.nodes[node].replica = None;
                self.nodes[node].generation += 1;
                if wipe {
                    self.nodes[node].store = MemStore::new();
                    self.nodes[node].committed.clear();
                    self.nodes[node].executed.clear();
                }
            }
            Ev::Restart { node } => {
                // A restarted replica re-executes nothing: its ledger is its memory.
                if !self.nodes[node].stopped {
                    self.start(node);
                }
            }
            Ev::Propose { change } => self.propose(change),
            Ev::Suspect { node, target } => {
                let id = match target {
                    Some(t) => self.ids[t],
                    None => match &self.nodes[node].replica {
                        Some(r) => r.primary(),
                        None => return,
                    },
                };
                let up = self.step(node, |r, now| r.handle_suspicion(now, id).map(|_| ()));
                if up {
                    self.drain(node);
                }
            }
            Ev::Stop { node } => {
                self.nodes[node].replica = None;
                self.nodes[node].generation += 1;
                self.nodes[node].stopped = true;
            }
        }
    }

    fn submit(&mut self, k: usize, to_all: bool) {
        let measure = self.cfg.wall_clock;
        let st = &mut self.requests[k];
        if st.done {
            return;
        }
        if measure && st.submitted_wall.is_none() {
            st.submitted_wall = Some(WallClock::now());
        }
        let request = st.request.clone();
        let targets: Vec<usize> = if to_all {
            (0..self.cfg.replicas).collect()
        } else {
            vec![self.rng.below(self.cfg.replicas as u64) as usize]
        };
        for i in targets {
            if self.nodes[i].behaviour == Some(Behaviour::Silent) {
                continue;
            }
            // Busy or duplicate answers are fine: the client retries until confirmed.
            let request = request.clone();
            if self.step(i, |r, now| refused_is_fine(r.handle_request(now, request))) {
                self.drain(i);
            }
        }
        let retry = self.now + self.cfg.client_timeout;
        self.push(
            retry,
            Ev::Submit {
                request: k,
                to_all: true,
            },
        );
    }

    fn drain(&mut self, i: usize) {
        while let Some(out) = self.nodes[i]
            .replica
            .as_mut()
            .and_then(Replica::poll_output)
        {
            match out {
                Output::Send { to, message } => {
                    if let Some(j) = self.ids.iter().position(|id| *id == to) {
                        self.emit(i, vec![j], message);
                    }
                }
                Output::Broadcast { message } => {
                    // To candidates too: they follow as learners (validators that have not
                    // admitted them yet refuse what they send back).
                    let all = (0..self.total()).filter(|&j| j != i).collect();
                    self.emit(i, all, message);
                }
                Output::Committed { block, executed } => self.on_commit(i, &block, &executed),
                Output::Reconfigured { boundary, set } => {
                    self.trace.update(b"reconfigured");
                    self.trace.update(&[i as u8]);
                    self.trace.update(&boundary.to_le_bytes());
                    self.trace.update(set.digest().as_bytes());
                }
                Output::ViewChangeStarted { view } => {
                    if self.honest(i) {
                        self.view_started.entry(view).or_default().push(self.now);
                    }
                }
                Output::ViewChanged { view, .. } => {
                    if self.honest(i) {
                        self.view_entered.entry(view).or_default().push(self.now);
                    }
                }
            }
        }
        if let Some(r) = self.nodes[i].replica.as_ref()
            && let Some(t) = r.poll_timeout()
        {
            self.nodes[i].generation += 1;
            let generation = self.nodes[i].generation;
            self.push(
                t.max(self.now),
                Ev::Timer {
                    node: i,
                    generation,
                },
            );
        }
    }

    fn on_commit(&mut self, i: usize, block: &mesh_consensus::CommittedBlock, executed: &[u32]) {
        let seq = block.seq();
        let hash = block.hash();
        self.trace.update(b"commit");
        self.trace.update(&[i as u8]);
        self.trace.update(hash.as_bytes());
        let honest = self.honest(i);
        let node = &mut self.nodes[i];
        if node.committed.len() as u64 + 1 != seq {
            self.violations.push(format!(
                "replica {i} committed height {seq} after {}",
                node.committed.len()
            ));
        }
        node.committed.push(hash);
        if !honest {
            return;
        }
        // The first honest replica to commit a height has its requests compared with what
        // clients submitted; another committing the same block (same hash, so the same
        // bytes) needs only its counts.
        let mut contents_checked = false;
        match self.canonical.get(&seq) {
            Some(h) if *h != hash => self.violations.push(format!(
                "SAFETY: replica {i} committed {} at height {seq}, another honest replica {}",
                hash.short(),
                h.short()
            )),
            Some(_) => contents_checked = true,
            None => {
                self.canonical.insert(seq, hash);
            }
        }
        for &x in executed {
            let Some(r) = block.batch.requests().get(x as usize) else {
                continue;
            };
            if r.kind == RequestKind::Change {
                // Validators' reconfiguration proposals: counted by the replicas themselves.
                continue;
            }
            let key = r.key();
            if !self.nodes[i].executed.insert(key) {
                self.violations
                    .push(format!("VALIDITY: replica {i} executed {key:?} twice"));
            }
            match self.by_key.get(&key) {
                Some(&k) if contents_checked || self.requests[k].request == *r => {
                    let st = &mut self.requests[k];
                    st.confirmations += 1;
                    if st.confirmations > self.f && st.confirmed_at.is_none() {
                        st.confirmed_at = Some(self.now);
                        st.wall_latency = st.submitted_wall.map(|w| w.elapsed());
                    }
                    if st.confirmations >= self.cfg.replicas - self.cfg.byzantine.len() {
                        st.done = true;
                    }
                }
                _ => self.violations.push(format!(
                    "VALIDITY: replica {i} executed a request no client submitted: {r:?}"
                )),
            }
        }
    }

    /// Sends `bytes` from `from` to each of `to` through the faulty network, after the
    /// sender's behaviour has had its way with them.
    fn emit(&mut self, from: usize, to: Vec<usize>, bytes: Arc<Vec<u8>>) {
        match self.nodes[from].behaviour {
            None | Some(Behaviour::Amnesia) => {
                for j in to {
                    self.transmit(from, j, bytes.clone());
                }
            }
            Some(Behaviour::Silent) => {}
            Some(b) => self.misbehave(b, from, to, bytes),
        }
    }

    fn misbehave(&mut self, b: Behaviour, from: usize, to: Vec<usize>, bytes: Arc<Vec<u8>>) {
        let limits = self.cfg.consensus.limits;
        let msg = Message::decode(&bytes, &limits).ok();
        let scheme = self.scheme(from);
        let epoch = self.set.epoch();
        match (b, msg) {
            (
                Behaviour::EquivocatingPrimary | Behaviour::CensoringPrimary,
                Some(Message::PrePrepare {
                    view, seq, batch, ..
                }),
            ) => {
                let censoring = b == Behaviour::CensoringPrimary;
                let mut reqs = batch.requests().to_vec();
                if censoring {
                    let censored = self.censored;
                    reqs.retain(|r| r.client != censored);
                } else if reqs.len() >= 2 {
                    reqs.reverse();
                } else {
                    reqs.clear();
                }
                let alt = Arc::new(Batch::new(reqs));
                self.nodes[from]
                    .alternatives
                    .insert((view, seq), alt.digest());
                let vote = scheme.sign_prepare(&vote_bytes(
                    epoch,
                    Phase::Prepare,
                    view,
                    seq,
                    &alt.digest(),
                ));
                let alt_bytes = Arc::new(
                    Message::PrePrepare {
                        view,
                        seq,
                        batch: alt,
                        vote,
                    }
                    .encode(),
                );
                self.split(from, to, &bytes, &alt_bytes, censoring);
            }
            (
                Behaviour::EquivocatingPrimary | Behaviour::CensoringPrimary,
                Some(Message::Vote {
                    phase, view, seq, ..
                }),
            ) if self.nodes[from].alternatives.contains_key(&(view, seq)) => {
                let censoring = b == Behaviour::CensoringPrimary;
                // Vote for the second proposal towards the replicas that were shown it.
                let alt = self.nodes[from].alternatives[&(view, seq)];
                let vote = Message::Vote {
                    phase,
                    view,
                    seq,
                    digest: alt,
                    signature: sign_vote(
                        scheme.as_ref(),
                        phase,
                        &vote_bytes(epoch, phase, view, seq, &alt),
                    ),
                };
                let alt_bytes = Arc::new(vote.encode());
                self.split(from, to, &bytes, &alt_bytes, censoring);
            }
            (
                Behaviour::ForgedVotes,
                Some(Message::Vote {
                    phase,
                    view,
                    seq,
                    digest,
                    ..
                }),
            ) => {
                let other = Digest::of(&digest.0);
                let wrong = sign_vote(
                    scheme.as_ref(),
                    phase,
                    &vote_bytes(epoch, phase, view, seq, &other),
                );
                let forged = Message::Vote {
                    phase,
                    view,
                    seq,
                    digest,
                    signature: wrong,
                };
                let bogus = Message::Vote {
                    phase,
                    view,
                    seq,
                    digest: other,
                    signature: sign_vote(
                        scheme.as_ref(),
                        phase,
                        &vote_bytes(epoch, phase, view, seq, &other),
                    ),
                };
                for j in to {
                    let pick = if self.rng.chance(500) {
                        &forged
                    } else {
                        &bogus
                    };
                    self.transmit(from, j, Arc::new(pick.encode()));
                }
            }
            (Behaviour::ReplayedVotes, _) => {
                for j in to {
                    self.transmit(from, j, bytes.clone());
                    let node = &self.nodes[from];
                    if !node.received.is_empty() {
                        let k = self.rng.below(node.received.len() as u64) as usize;
                        let old = node.received[k].clone();
                        self.transmit(from, j, old);
                    }
                }
            }
            (Behaviour::StaleView, Some(m)) => {
                let stale = match m {
                    Message::Vote {
                        phase,
                        view,
                        seq,
                        digest,
                        ..
                    } if view > 0 => Some(Message::Vote {
                        phase,
                        view: view - 1,
                        seq,
                        digest,
                        signature: sign_vote(
                            scheme.as_ref(),
                            phase,
                            &vote_bytes(epoch, phase, view - 1, seq, &digest),
                        ),
                    }),
                    Message::ViewChange(mut vc) if vc.view > 1 => {
                        vc.view -= 1;
                        Some(Message::ViewChange(vc))
                    }
                    _ => None,
                };
                for j in to {
                    if let Some(s) = &stale {
                        self.transmit(from, j, Arc::new(s.encode()));
                    }
                    self.transmit(from, j, bytes.clone());
                }
            }
            (_, _) => {
                for j in to {
                    self.transmit(from, j, bytes.clone());
                }
            }
        }
    }

    /// Sends `alt` instead of `original` to every other recipient (an equivocating primary),
    /// or to all of them (`everyone`: a censoring one).
    fn split(
        &mut self,
        from: usize,
        to: Vec<usize>,
        original: &Arc<Vec<u8>>,
        alt: &Arc<Vec<u8>>,
        everyone: bool,
    ) {
        for (k, j) in to.into_iter().enumerate() {
            let b = if k % 2 == 0 && !everyone {
                original
            } else {
                alt
            };
            self.transmit(from, j, b.clone());
        }
    }

    fn transmit(&mut self, from: usize, to: usize, bytes: Arc<Vec<u8>>) {
        // A broadcast transmits one buffer to each recipient in turn: hash it once.
        let hash = match &self.last_hashed {
            Some((b, h)) if Arc::ptr_eq(b, &bytes) => *h,
            _ => {
                let h = *blake3::hash(&bytes).as_bytes();
                self.last_hashed = Some((bytes.clone(), h));
                h
            }
        };
        let faulty = self.now < at(self.cfg.faults_until);
        if faulty {
            if let Some((start, end, side)) = &self.partition
                && self.now >= *start
                && self.now < *end
                && side[from] != side[to]
            {
                return;
            }
            if self.rng.chance(self.cfg.net.loss_per_mille) {
                return;
            }
        }
        let copies = if faulty && self.rng.chance(self.cfg.net.duplicate_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let span = self
                .cfg
                .net
                .max_delay
                .saturating_sub(self.cfg.net.min_delay)
                .as_nanos() as u64;
            let delay = self.cfg.net.min_delay.as_nanos() as u64 + self.rng.below(span + 1);
            let t = Instant::from_nanos(self.now.as_nanos() + delay);
            self.push(
                t,
                Ev::Deliver {
                    to,
                    from,
                    bytes: bytes.clone(),
                    hash,
                },
            );
        }
    }

    fn finish(mut self) -> Report {
        let n = self.total();
        let honest = self.checked();
        // Liveness: every request executed at every honest replica.
        let mut committed_everywhere = 0;
        for (k, st) in self.requests.iter().enumerate() {
            let key = st.request.key();
            let everywhere = honest
                .iter()
                .all(|&i| self.nodes[i].executed.contains(&key));
            if everywhere {
                committed_everywhere += 1;
            } else if self.violations.len() < 20 {
                let missing: Vec<usize> = honest
                    .iter()
                    .copied()
                    .filter(|&i| !self.nodes[i].executed.contains(&key))
                    .collect();
                let states: Vec<String> = (0..n)
                    .map(|i| match &self.nodes[i].replica {
                        Some(r) => format!("{i}: {r:?} {:?}", r.stats()),
                        None => format!("{i}: down"),
                    })
                    .collect();
                self.violations.push(format!("LIVENESS: request {k} not executed at replicas {missing:?} by {:?}; {states:?}", Duration::from_nanos(self.now.as_nanos())));
            }
        }
        // Liveness of reconfiguration: every scheduled change took effect everywhere.
        let missing = self.changes_missing();
        if !missing.is_empty() {
            self.violations.push(format!(
                "LIVENESS: reconfigurations not in force at (node, change) {missing:?}"
            ));
        }
        // Ledgers: each verifies from genesis, and all are prefixes of the longest.
        let mut longest: Vec<Digest> = Vec::new();
        let mut height = 0;
        for &i in &honest {
            let storage = match StoreStorage::open(&self.nodes[i].store, self.cfg.consensus.limits)
            {
                Ok(s) => s,
                Err(e) => {
                    self.violations
                        .push(format!("replica {i}: ledger unreadable: {e}"));
                    continue;
                }
            };
            let genesis = Genesis::new(self.set.clone(), &self.cfg.consensus);
            let mut lc = LightClient::with_scheme(&genesis, self.scheme(i));
            let mut hashes = Vec::new();
            let mut from = 1;
            loop {
                let blocks = match mesh_consensus::Storage::blocks(&storage, from, 64, 1 << 24) {
                    Ok(b) => b,
                    Err(e) => {
                        self.violations
                            .push(format!("replica {i}: ledger unreadable: {e}"));
                        break;
                    }
                };
                if blocks.is_empty() {
                    break;
                }
                for b in &blocks {
                    if let Err(e) = lc.push(b) {
                        self.violations
                            .push(format!("LEDGER: replica {i} block {}: {e}", b.seq()));
                    }
                    hashes.push(b.hash());
                }
                from += blocks.len() as u64;
            }
            height = height.max(hashes.len() as u64);
            let common = hashes.len().min(longest.len());
            if hashes[..common] != longest[..common] {
                self.violations.push(format!(
                    "LEDGER: replica {i}'s ledger is not a prefix of another's"
                ));
            }
            if hashes.len() > longest.len() {
                longest = hashes;
            }
        }
        let max_view = honest
            .iter()
            .filter_map(|&i| self.nodes[i].replica.as_ref().map(Replica::view))
            .max()
            .unwrap_or(0);
        let refused = honest
            .iter()
            .filter_map(|&i| {
                self.nodes[i].replica.as_ref().map(|r| {
                    let s = r.stats();
                    s.malformed + s.bad_signatures + s.invalid + s.unknown_sender
                })
            })
            .sum();
        let validators = honest
            .iter()
            .filter_map(|&i| {
                self.nodes[i]
                    .replica
                    .as_ref()
                    .map(|r| r.validators().clone())
            })
            .max_by_key(ValidatorSet::epoch);
        let quorum = self.cfg.replicas - self.f;
        let mut view_changes = Vec::new();
        for (&view, entered) in &self.view_entered {
            let mut asked: Vec<Instant> = self
                .view_started
                .range(view..)
                .flat_map(|(_, t)| t.iter().copied())
                .collect();
            asked.sort();
            let (Some(&start), Some(&end)) = (asked.get(quorum - 1), entered.iter().max()) else {
                continue;
            };
            view_changes.push((view, end.saturating_since(start)));
        }
        let latencies = self
            .requests
            .iter()
            .filter_map(|st| st.confirmed_at.map(|c| c.saturating_since(st.submitted_at)))
            .collect();
        let wall_latencies = self
            .requests
            .iter()
            .filter_map(|st| st.wall_latency)
            .collect();
        Report {
            wall_latencies,
            violations: self.violations,
            trace: Digest(*self.trace.finalize().as_bytes()),
            committed_everywhere,
            virtual_time: Duration::from_nanos(self.now.as_nanos()),
            delivered: self.delivered,
            max_view,
            height,
            latencies,
            refused,
            validators,
            view_changes,
            storage_failures: self.storage_failures,
        }
    }
}

/// A submission's outcome, with refusals (busy, invalid) counted as fine: only storage
/// failures matter to the simulator.
fn refused_is_fine<T>(r: mesh_consensus::Result<T>) -> mesh_consensus::Result<()> {
    match r {
        Err(e @ mesh_consensus::Error::Storage(_)) => Err(e),
        _ => Ok(()),
    }
}

/// Whether `set` already reflects `change`.
fn applied(set: &ValidatorSet, ids: &[NodeId], change: SimChange) -> bool {
    let weight = |node: usize| set.index_of(&ids[node]).map(|i| set.weight(i));
    match change {
        SimChange::Admit { node, .. } => weight(node).is_some(),
        SimChange::Remove(node) => weight(node) == Some(0),
        SimChange::SetWeight(node, w) => weight(node) == Some(u64::from(w)),
    }
}

#[track_caller]
fn unreachable_key(e: &dyn std::fmt::Display) -> ! {
    panic!("simulation setup failed: {e}")
}

/// The scenario for a seed in the standard sweep: seeds cycle (modulo 11) through clean,
/// lossy, partitioned, crashing, and each of the seven Byzantine behaviours, on 4 or 7
/// replicas, in both request modes.
pub fn sweep_config(seed: u64) -> SimConfig {
    let mut rng = Rng::new(seed.wrapping_mul(0x9e37_79b9));
    let replicas = if seed % 5 == 4 { 7 } else { 4 };
    let f = (replicas - 1) / 3;
    let mut cfg = SimConfig::new(seed, replicas);
    if seed % 3 == 2 {
        cfg.consensus.request_auth = RequestAuth::Signed;
    }
    let kind = seed % 11;
    match kind {
        0 => {}
        1 => {
            cfg.net.loss_per_mille = 50;
            cfg.net.duplicate_per_mille = 50;
            cfg.net.max_delay = Duration::from_millis(60);
        }
        2 => cfg.net.partition = true,
        3 => cfg.crashes = 2,
        _ => {
            let b = Behaviour::ALL[(kind as usize - 4) % Behaviour::ALL.len()];
            for k in 0..f {
                let primary_role = matches!(
                    b,
                    Behaviour::EquivocatingPrimary | Behaviour::CensoringPrimary
                );
                let index = if primary_role && k == 0 {
                    0
                } else {
                    1 + rng.below(replicas as u64 - 1) as usize
                };
                if !cfg.byzantine.iter().any(|(i, _)| *i == index) {
                    cfg.byzantine.push((index, b));
                }
            }
            cfg.net.loss_per_mille = 20;
            cfg.net.max_delay = Duration::from_millis(30);
        }
    }
    cfg
}
