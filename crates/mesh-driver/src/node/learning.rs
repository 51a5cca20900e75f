//! Federated learning in the node: runs agreed through consensus, rounds over the transport.
//!
//! A run starts with a [`RunRecord`] committed to the ledger (`POST /v1/learning/runs` on any
//! validator submits one): the model, the rounds, the local training settings, a seed, the
//! aggregator and the participants (the voting validators of the genesis; each trains and
//! validates). Every node follows the ledger and, for each run in which it has a role, drives
//! a [`mesh_learning::round::Node`] (the sans-IO round protocol):
//!
//! - round messages (signed envelopes: updates, proposals, votes, retries, fetches) travel on
//!   [`ROUND_PROTOCOL`], one request per message, answered with an empty acknowledgement; a
//!   message to ourselves (the aggregator is also a trainer) is handed back directly;
//! - training and evaluation run on tokio's blocking pool (candle on the CPU), never on the
//!   task's loop; their results come back over a channel;
//! - the aggregator's [`ModelRecord`] (the candidate's hash and a quorum of validators'
//!   signed votes) is submitted to consensus, and every node feeds the model records it finds
//!   in the ledger to its round node, which adopts a model only once its record is committed;
//! - each adopted model is written to `<data>/learning/<model hash>.f32` (little-endian `f32`,
//!   through a temporary file, fsynced, then renamed) and announced as a `round_finished`
//!   event with the mean accuracy the accepting validators measured.
//!
//! # Data
//!
//! Every participant reads the 8x8 digits from `digits.csv` in the node's datasets directory
//! ([`crate::node::Config::datasets_dir`]), splits it with the run's seed (20% test, then 15%
//! of the rest held out) and takes its own Dirichlet(0.5) shard of the training part (its
//! index among the participants); validators check candidates on the held-out part: the
//! processes agree on the split without talking. A node without the file fails the run
//! locally (its status says why) and the others go on without it (a round needs two thirds of
//! the trainers' updates).
//!
//! # Bounds
//!
//! Runs remembered: [`MAX_RUNS`] (the oldest finished one is forgotten first); runs active at
//! once: [`MAX_ACTIVE`]; round messages waiting for the task: [`QUEUE`] (beyond it a message
//! is refused as busy, and the protocol's retries cover the loss); messages in flight:
//! [`MAX_SENDS`]. A run record is at most a few kilobytes and every field is range-checked.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mesh_api::types::{Event, RoundInfo, RunInfo, StartRun};
use mesh_crypto::ed25519::SigningKey;
use mesh_learning::round::{ModelRecord, Node as RoundNode, Output, Plan};
use mesh_learning::{
    Architecture, Compressor, Config as TrainConfig, Dataset, FedAvg, Model, Optimizer, Rng, TopK,
    evaluate, train,
};
use mesh_transport::{InboundRequest, Transport};
use mesh_types::wire::{Reader, put_varint};
use mesh_types::{Digest, NodeId};
use tokio::sync::{Semaphore, broadcast, mpsc, watch};

use crate::consensus::{self, Clock};

/// The request protocol of round messages (payload: an encoded round envelope).
pub const ROUND_PROTOCOL: &str = "mesh/learning/round";
/// Runs remembered for the API.
pub const MAX_RUNS: usize = 64;
/// Runs this node takes part in at once.
pub const MAX_ACTIVE: usize = 4;
/// Round messages waiting for the learning task.
pub const QUEUE: usize = 256;
/// Round messages being sent at once.
pub const MAX_SENDS: usize = 64;
/// Most participants a run may have.
pub const MAX_PARTICIPANTS: usize = 256;
/// The data set file participants read.
pub const DIGITS_FILE: &str = "digits.csv";

const RUN_MAGIC: &[u8; 5] = b"AMRUN";
const RUN_VERSION: u8 = 1;
/// Blocks read per step while following the ledger.
const PAGE: usize = 64;

/// The models a run may train (inputs: the 64 pixels of a digit; 10 classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Multinomial logistic regression.
    Logistic,
    /// One hidden layer of 64 ReLU units.
    Mlp,
    /// 3x3 convolution to 8 maps, 2x2 pooling, a linear layer.
    Cnn,
}

impl ModelKind {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "logistic" => Some(Self::Logistic),
            "mlp" => Some(Self::Mlp),
            "cnn" => Some(Self::Cnn),
            _ => None,
        }
    }

    /// The name the API uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Logistic => "logistic",
            Self::Mlp => "mlp",
            Self::Cnn => "cnn",
        }
    }

    /// The architecture on the digits.
    pub fn architecture(self) -> Architecture {
        match self {
            Self::Logistic => Architecture::Logistic {
                inputs: 64,
                classes: 10,
            },
            Self::Mlp => Architecture::Mlp {
                inputs: 64,
                hidden: 64,
                classes: 10,
            },
            Self::Cnn => Architecture::Cnn {
                side: 8,
                channels: 8,
                classes: 10,
            },
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::Logistic => 0,
            Self::Mlp => 1,
            Self::Cnn => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        [Self::Logistic, Self::Mlp, Self::Cnn]
            .into_iter()
            .find(|k| k.code() == code)
    }
}

/// A federated run as committed to the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// The model trained.
    pub model: ModelKind,
    /// Global models to produce, 1..=1000.
    pub rounds: u64,
    /// Local epochs per round, 1..=100.
    pub epochs: u32,
    /// Local SGD learning rate (momentum 0.9), in (0, 10].
    pub learning_rate: f64,
    /// Top-k compression of updates (fraction sent, with error feedback), in (0, 1].
    pub top_k: Option<f64>,
    /// The seed of the initial model and of the data split.
    pub seed: u64,
    /// How long the aggregator waits for updates, then for a commit, before retrying.
    pub round_timeout: Duration,
    /// The aggregator (one of the participants).
    pub aggregator: NodeId,
    /// The trainers and validators, in the order that assigns data shards.
    pub participants: Vec<NodeId>,
}

/// Why a run record or a start request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("federated run: {0}")]
pub struct RunError(pub String);

fn bad(detail: impl Into<String>) -> RunError {
    RunError(detail.into())
}

impl RunRecord {
    /// The ledger payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 32 * self.participants.len());
        out.extend_from_slice(RUN_MAGIC);
        out.push(RUN_VERSION);
        out.push(self.model.code());
        put_varint(&mut out, self.rounds);
        put_varint(&mut out, u64::from(self.epochs));
        out.extend_from_slice(&self.learning_rate.to_le_bytes());
        match self.top_k {
            None => out.push(0),
            Some(f) => {
                out.push(1);
                out.extend_from_slice(&f.to_le_bytes());
            }
        }
        put_varint(&mut out, self.seed);
        put_varint(
            &mut out,
            u64::try_from(self.round_timeout.as_millis()).unwrap_or(u64::MAX),
        );
        out.extend_from_slice(self.aggregator.as_bytes());
        put_varint(&mut out, self.participants.len() as u64);
        for p in &self.participants {
            out.extend_from_slice(p.as_bytes());
        }
        out
    }

    /// Whether a ledger payload is a run record (of any version).
    pub fn is_run_record(payload: &[u8]) -> bool {
        payload.starts_with(RUN_MAGIC)
    }

    /// Decodes and checks a run record.
    pub fn decode(bytes: &[u8]) -> Result<Self, RunError> {
        let wire = |e: mesh_types::wire::WireError| bad(format!("malformed record: {e}"));
        let mut r = Reader::new(bytes);
        if r.bytes(RUN_MAGIC.len()).map_err(wire)? != RUN_MAGIC {
            return Err(bad("not a run record"));
        }
        let version = r.u8().map_err(wire)?;
        if version != RUN_VERSION {
            return Err(bad(format!("record version {version}")));
        }
        let model = ModelKind::from_code(r.u8().map_err(wire)?).ok_or_else(|| bad("model"))?;
        let rounds = r.varint().map_err(wire)?;
        let epochs = u32::try_from(r.varint().map_err(wire)?).map_err(|_| bad("epochs"))?;
        let learning_rate = f64_le(&mut r).map_err(wire)?;
        let top_k = match r.u8().map_err(wire)? {
            0 => None,
            1 => Some(f64_le(&mut r).map_err(wire)?),
            _ => return Err(bad("top-k flag")),
        };
        let seed = r.varint().map_err(wire)?;
        let round_timeout = Duration::from_millis(r.varint().map_err(wire)?);
        let aggregator = node_id(&mut r).map_err(wire)?;
        let count = r.varint().map_err(wire)?;
        if count == 0 || count > MAX_PARTICIPANTS as u64 {
            return Err(bad(format!("{count} participants")));
        }
        let participants = (0..count)
            .map(|_| node_id(&mut r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(wire)?;
        if r.remaining() != 0 {
            return Err(bad("trailing bytes"));
        }
        let record = Self {
            model,
            rounds,
            epochs,
            learning_rate,
            top_k,
            seed,
            round_timeout,
            aggregator,
            participants,
        };
        record.check()?;
        Ok(record)
    }

    fn check(&self) -> Result<(), RunError> {
        if !(1..=1000).contains(&self.rounds) {
            return Err(bad("rounds must be 1..=1000"));
        }
        if !(1..=100).contains(&self.epochs) {
            return Err(bad("epochs must be 1..=100"));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 10.0) {
            return Err(bad("learning_rate must be in (0, 10]"));
        }
        if let Some(f) = self.top_k
            && !(f > 0.0 && f <= 1.0)
        {
            return Err(bad("top_k must be in (0, 1]"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.round_timeout) {
            return Err(bad("round_timeout_s must be 1..=3600"));
        }
        if self.participants.is_empty() || self.participants.len() > MAX_PARTICIPANTS {
            return Err(bad("participants"));
        }
        if !self.participants.contains(&self.aggregator) {
            return Err(bad("the aggregator is not a participant"));
        }
        self.plan().validate().map_err(|e| bad(e.to_string()))
    }

    /// The round protocol's plan: every participant trains and validates; a round goes on
    /// with the updates of two thirds of them.
    pub fn plan(&self) -> Plan {
        let n = self.participants.len();
        Plan {
            architecture: self.model.architecture(),
            trainers: self.participants.clone(),
            aggregator: self.aggregator,
            validators: self.participants.clone(),
            min_updates: (n * 2).div_ceil(3).max(1),
            round_timeout: self.round_timeout,
            // Early rounds over non-IID shards may dip on a validator's slice.
            max_regression: 0.05,
            rounds: self.rounds,
        }
    }

    /// Builds a record from an API request.
    pub fn from_request(
        request: &StartRun,
        aggregator: NodeId,
        participants: Vec<NodeId>,
        default_seed: u64,
    ) -> Result<Self, RunError> {
        let model = match &request.model {
            None => ModelKind::Mlp,
            Some(m) => ModelKind::parse(m)
                .ok_or_else(|| bad(format!("model {m:?}: use logistic, mlp or cnn")))?,
        };
        let record = Self {
            model,
            rounds: request.rounds.unwrap_or(5),
            epochs: request.epochs.unwrap_or(1),
            learning_rate: request.learning_rate.unwrap_or(0.1),
            top_k: request.top_k,
            seed: request.seed.unwrap_or(default_seed),
            round_timeout: Duration::from_secs(request.round_timeout_s.unwrap_or(30)),
            aggregator,
            participants,
        };
        record.check()?;
        Ok(record)
    }
}

fn f64_le(r: &mut Reader<'_>) -> Result<f64, mesh_types::wire::WireError> {
    let b = r.bytes(8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(f64::from_le_bytes(a))
}

fn node_id(r: &mut Reader<'_>) -> Result<NodeId, mesh_types::wire::WireError> {
    let b = r.bytes(32)?;
    let mut a = [0u8; 32];
    a.copy_from_slice(b);
    Ok(NodeId(a))
}

/// What the API and the learning task share.
#[derive(Debug)]
pub(crate) struct Shared {
    runs: RwLock<Vec<RunInfo>>,
    /// This node.
    pub(crate) me: NodeId,
    /// The participants of new runs: the genesis's voting validators.
    pub(crate) participants: Vec<NodeId>,
    /// Where the data sets are.
    pub(crate) datasets: PathBuf,
}

impl Shared {
    pub(crate) fn new(me: NodeId, participants: Vec<NodeId>, datasets: PathBuf) -> Self {
        Self {
            runs: RwLock::new(Vec::new()),
            me,
            participants,
            datasets,
        }
    }

    /// Every run remembered, oldest first.
    pub(crate) fn runs(&self) -> Vec<RunInfo> {
        self.runs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut RunInfo)) {
        let mut runs = self.runs.write().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = runs.iter_mut().find(|r| r.id == id) {
            f(r);
        }
    }

    fn insert(&self, info: RunInfo) {
        let mut runs = self.runs.write().unwrap_or_else(|p| p.into_inner());
        if runs.len() >= MAX_RUNS {
            let oldest_done = runs.iter().position(|r| r.state != "running");
            runs.remove(oldest_done.unwrap_or(0));
        }
        runs.push(info);
    }
}

/// `POST /v1/learning/runs`: checks the request and that this node has the data, submits the
/// run record and answers once it has executed.
pub(crate) async fn start(
    shared: &Shared,
    consensus: &consensus::Handle,
    request: StartRun,
) -> Result<RunInfo, mesh_api::ApiError> {
    use mesh_api::ApiError;
    if shared.participants.is_empty() {
        return Err(ApiError::NotAValidator);
    }
    let aggregator = if shared.participants.contains(&shared.me) {
        shared.me
    } else {
        shared.participants[0]
    };
    let seed = super::wall_clock().as_millis();
    let record = RunRecord::from_request(&request, aggregator, shared.participants.clone(), seed)
        .map_err(|e| ApiError::BadRequest(e.0))?;
    let data = shared.datasets.join(DIGITS_FILE);
    if !data.is_file() {
        return Err(ApiError::Unavailable(format!(
            "no data set at {}: run `cargo xtask data` and point the node at it (MESH_DATASETS \
             or `datasets` in mesh.toml)",
            data.display()
        )));
    }
    let committed = consensus
        .submit(record.encode())
        .await
        .map_err(|e| ApiError::Unavailable(format!("the run was not committed: {e}")))?;
    // The learning task applies the block right after it executes; answer with its view so
    // that the run is listed by the time the caller asks.
    let id = run_id(&record);
    for _ in 0..100 {
        if let Some(info) = shared.runs().into_iter().find(|r| r.id == id) {
            return Ok(info);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(run_info(&record, &shared.me, committed.seq))
}

fn run_id(record: &RunRecord) -> String {
    hex::encode(record.plan().task().as_bytes())
}

fn roles(record: &RunRecord, me: &NodeId) -> Vec<String> {
    let mut roles = Vec::new();
    if record.participants.contains(me) {
        roles.push("trainer".to_owned());
        roles.push("validator".to_owned());
    }
    if record.aggregator == *me {
        roles.push("aggregator".to_owned());
    }
    roles
}

fn run_info(record: &RunRecord, me: &NodeId, height: u64) -> RunInfo {
    RunInfo {
        id: run_id(record),
        model: record.model.name().to_owned(),
        rounds: record.rounds,
        roles: roles(record, me),
        height,
        state: "running".to_owned(),
        error: None,
        finished_rounds: Vec::new(),
    }
}

/// A participant's part of the digits for one run.
struct LocalData {
    shard: Dataset,
    validation: Dataset,
}

fn load_data(dir: &Path, record: &RunRecord, index: usize) -> Result<LocalData, String> {
    let path = dir.join(DIGITS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {} ({e}): run `cargo xtask data` and set MESH_DATASETS",
            path.display()
        )
    })?;
    let digits = Dataset::digits_from_csv(&text).map_err(|e| e.to_string())?;
    let n = record.participants.len();
    let mut rng = Rng::new(record.seed);
    let (train_set, _test) = digits.split(0.2, &mut rng).map_err(|e| e.to_string())?;
    let (train_set, held_out) = train_set.split(0.15, &mut rng).map_err(|e| e.to_string())?;
    let shards = train_set
        .partition_dirichlet(n, 0.5, 10, &mut rng)
        .map_err(|e| e.to_string())?;
    let shard = train_set
        .subset(&shards[index])
        .map_err(|e| e.to_string())?;
    // Every validator checks candidates on the whole held-out part (about 270 images): a
    // slice of a quarter of it moves by almost two points per image, enough for one unlucky
    // slice to reject a good candidate and stall a round until its retry.
    Ok(LocalData {
        shard,
        validation: held_out,
    })
}

/// A run this node takes part in.
struct Active {
    id: String,
    /// The run's task id (its plan's hash), the key of the runs map.
    task: Digest,
    /// The height of its run record.
    height: u64,
    record: RunRecord,
    index: usize,
    node: RoundNode,
    data: Arc<LocalData>,
    /// The committed model records' (mean accuracy, height) by round, for the status.
    committed: BTreeMap<u64, (f64, u64)>,
    finished: bool,
    /// A training job runs on the blocking pool.
    training: bool,
    /// The newest training asked for while one ran.
    next_training: Option<(u64, u32, Arc<Vec<f32>>)>,
}

/// Trains the global model `parameters` of `(round, attempt)` on this node's shard, on the
/// blocking pool; the result comes back as [`Done::Trained`].
fn start_training(
    run: &mut Active,
    task: Digest,
    round: u64,
    attempt: u32,
    parameters: Arc<Vec<f32>>,
    done: &mpsc::Sender<Done>,
) {
    run.training = true;
    let arch = run.record.model.architecture();
    let data = run.data.clone();
    let config = TrainConfig {
        epochs: run.record.epochs as usize,
        batch_size: 16,
        optimizer: Optimizer::sgd(run.record.learning_rate as f32),
        proximal_mu: 0.0,
    };
    let mut rng = Rng::new(
        run.record.seed
            ^ (run.index as u64 + 1).rotate_left(40)
            ^ round.rotate_left(20)
            ^ u64::from(attempt),
    );
    let done = done.clone();
    tokio::task::spawn_blocking(move || {
        let result = Model::from_parameters(arch, &parameters).and_then(|mut m| {
            train(&mut m, &data.shard, &config, &mut rng)?;
            m.parameters()
        });
        let message = match result {
            Ok(parameters) => Done::Trained {
                task,
                round,
                attempt,
                parameters,
                samples: data.shard.len() as u64,
            },
            Err(e) => Done::Failed {
                task,
                what: "training",
                detail: e.to_string(),
            },
        };
        let _ = done.blocking_send(message);
    });
}

/// Results from the blocking pool.
enum Done {
    Trained {
        task: Digest,
        round: u64,
        attempt: u32,
        parameters: Vec<f32>,
        samples: u64,
    },
    Evaluated {
        task: Digest,
        model: Digest,
        accuracy: f64,
    },
    Failed {
        task: Digest,
        what: &'static str,
        detail: String,
    },
}

/// What the learning task works with.
pub(crate) struct Context {
    pub(crate) shared: Arc<Shared>,
    pub(crate) transport: Transport,
    pub(crate) consensus: consensus::Handle,
    pub(crate) key: SigningKey,
    pub(crate) data_dir: PathBuf,
    pub(crate) events: broadcast::Sender<Event>,
}

/// The learning task: follows the ledger for run and model records, drives the round
/// protocol of each run this node takes part in, until `stop`.
pub(crate) async fn run(
    ctx: Context,
    mut requests: mpsc::Receiver<InboundRequest>,
    mut stop: watch::Receiver<bool>,
) {
    let clock = Clock::start();
    let sends = Arc::new(Semaphore::new(MAX_SENDS));
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(64);
    let mut runs: BTreeMap<Digest, Active> = BTreeMap::new();
    let mut status = ctx.consensus.watch_status();
    // The membership task's verdicts: an aggregator stops waiting for a dead trainer.
    let mut members = ctx.events.subscribe();
    let mut applied = 0u64;
    loop {
        let executed = status.borrow_and_update().executed;
        while applied < executed {
            match ctx.consensus.blocks(applied + 1, PAGE).await {
                Ok(blocks) if !blocks.is_empty() => {
                    for b in &blocks {
                        for r in b.batch.requests() {
                            on_payload(&ctx, &mut runs, &r.payload, b.cert.seq, &clock);
                        }
                        applied = applied.max(b.cert.seq);
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, from = applied + 1, "cannot read the ledger for federated learning");
                    break;
                }
            }
        }
        for run in runs.values_mut() {
            drain(&ctx, run, &clock, &sends, &done_tx);
        }
        let deadline = runs
            .values()
            .filter(|r| !r.finished)
            .filter_map(|r| r.node.poll_timeout())
            .min()
            .map(|t| clock.deadline(t));
        tokio::select! {
            changed = status.changed() => if changed.is_err() { return },
            Some(request) = requests.recv() => {
                let _ = ctx.transport.respond(request.token, Ok(Vec::new())).await;
                // The envelope's task follows its version byte.
                let task = request.data.get(1..33).and_then(|t| <[u8; 32]>::try_from(t).ok());
                match task.map(Digest).and_then(|t| runs.get_mut(&t)) {
                    // Finished runs too: their aggregator still answers the fetches of
                    // nodes catching up on the ledger.
                    Some(run) => run.node.handle_message(clock.now(), &request.data),
                    _ => tracing::debug!(peer = %request.peer, "a round message for no run of ours"),
                }
            }
            Some(done) = done_rx.recv() => on_done(&ctx, &mut runs, done, &clock, &done_tx),
            event = members.recv() => match event {
                Ok(Event::Member { peer_id, state, .. }) => {
                    let node = peer_id
                        .parse::<mesh_transport::PeerId>()
                        .ok()
                        .and_then(|p| consensus::node_id(&p));
                    if let Some(node) = node {
                        let down = state == "dead" || state == "left";
                        let now = clock.now();
                        for run in runs.values_mut() {
                            run.node.handle_member(now, node, down);
                        }
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = clock.now();
                for run in runs.values_mut() {
                    run.node.handle_timeout(now);
                }
            }
            _ = stop.changed() => return,
        }
    }
}

fn on_payload(
    ctx: &Context,
    runs: &mut BTreeMap<Digest, Active>,
    payload: &[u8],
    height: u64,
    clock: &Clock,
) {
    if RunRecord::is_run_record(payload) {
        match RunRecord::decode(payload) {
            Ok(record) => start_run(ctx, runs, record, height, clock),
            Err(e) => tracing::warn!(height, error = %e, "a bad run record in the ledger"),
        }
        return;
    }
    if !payload.starts_with(b"AMFL") {
        return;
    }
    let Ok(record) = ModelRecord::decode(payload) else {
        tracing::warn!(height, "a malformed model record in the ledger");
        return;
    };
    let accuracy = if record.votes.is_empty() {
        0.0
    } else {
        record
            .votes
            .iter()
            .map(|(_, a, _)| f64::from(*a) / 1e6)
            .sum::<f64>()
            / record.votes.len() as f64
    };
    let id = hex::encode(record.task.as_bytes());
    match runs.get_mut(&record.task) {
        Some(run) => {
            run.committed
                .entry(record.round)
                .or_insert((accuracy, height));
            run.node.handle_committed(clock.now(), payload);
        }
        None => {
            // A run this node only follows: the first record of each round is what the
            // participants adopt (they check it; a record they refuse never shows here
            // as adopted on their side).
            ctx.shared.update(&id, |info| {
                if !info.finished_rounds.iter().any(|r| r.round == record.round) {
                    info.finished_rounds.push(RoundInfo {
                        round: record.round,
                        model: hex::encode(record.candidate.as_bytes()),
                        accuracy,
                        height,
                    });
                    if info.finished_rounds.len() as u64 >= info.rounds {
                        info.state = "finished".to_owned();
                    }
                }
            });
        }
    }
}

fn start_run(
    ctx: &Context,
    runs: &mut BTreeMap<Digest, Active>,
    record: RunRecord,
    height: u64,
    clock: &Clock,
) {
    let plan = record.plan();
    let task = plan.task();
    let mut info = run_info(&record, &ctx.shared.me, height);
    if runs.contains_key(&task) || ctx.shared.runs().iter().any(|r| r.id == info.id) {
        tracing::info!(run = %info.id, height, "a run record repeated: ignored");
        return;
    }
    let Some(index) = record.participants.iter().position(|p| *p == ctx.shared.me) else {
        tracing::info!(run = %info.id, height, "a federated run started (this node follows it)");
        ctx.shared.insert(info);
        return;
    };
    let active = runs.values().filter(|r| !r.finished).count();
    let node = if active >= MAX_ACTIVE {
        Err(format!("{MAX_ACTIVE} runs are active here already"))
    } else {
        load_data(&ctx.shared.datasets, &record, index).and_then(|data| {
            let mut init = Rng::new(record.seed);
            let initial = Model::new(record.model.architecture(), &mut init)
                .and_then(|m| m.parameters())
                .map_err(|e| e.to_string())?;
            let compressor = record
                .top_k
                .map(|fraction| Box::new(TopK { fraction }) as Box<dyn Compressor + Send>);
            RoundNode::new(
                plan,
                ctx.key.clone(),
                initial,
                Box::new(FedAvg),
                compressor,
                Rng::new(record.seed ^ (index as u64 + 1).rotate_left(32)),
                clock.now(),
            )
            .map(|node| (node, data))
            .map_err(|e| e.to_string())
        })
    };
    // Finished runs stay (an aggregator serves their past models to nodes catching up),
    // the oldest going first beyond MAX_RUNS.
    while runs.len() >= MAX_RUNS {
        let Some(oldest) = runs
            .iter()
            .filter(|(_, r)| r.finished)
            .min_by_key(|(_, r)| r.height)
            .map(|(t, _)| *t)
        else {
            break;
        };
        runs.remove(&oldest);
    }
    match node {
        Ok((node, data)) => {
            tracing::info!(run = %info.id, height, model = record.model.name(), rounds = record.rounds, roles = ?info.roles, "federated run started");
            ctx.shared.insert(info.clone());
            runs.insert(
                task,
                Active {
                    id: info.id,
                    task,
                    height,
                    record,
                    index,
                    node,
                    data: Arc::new(data),
                    committed: BTreeMap::new(),
                    finished: false,
                    training: false,
                    next_training: None,
                },
            );
        }
        Err(e) => {
            tracing::warn!(run = %info.id, error = %e, "cannot take part in a federated run");
            info.state = "failed".to_owned();
            info.error = Some(e);
            ctx.shared.insert(info);
        }
    }
}

/// Carries out a run's outputs.
fn drain(
    ctx: &Context,
    run: &mut Active,
    clock: &Clock,
    sends: &Arc<Semaphore>,
    done: &mpsc::Sender<Done>,
) {
    let task = run.task;
    let mut local: VecDeque<Vec<u8>> = VecDeque::new();
    loop {
        while let Some(bytes) = local.pop_front() {
            run.node.handle_message(clock.now(), &bytes);
        }
        let Some(out) = run.node.poll_output() else {
            break;
        };
        match out {
            Output::Send { to, bytes } => {
                if to == ctx.shared.me {
                    local.push_back(bytes.to_vec());
                    continue;
                }
                let Ok(peer) = consensus::peer_id(&to) else {
                    continue;
                };
                let Ok(permit) = sends.clone().try_acquire_owned() else {
                    tracing::debug!("round messages backed up: one dropped (rounds retry)");
                    continue;
                };
                let transport = ctx.transport.clone();
                tokio::spawn(async move {
                    if let Err(e) = transport
                        .request(peer, ROUND_PROTOCOL, bytes.to_vec())
                        .await
                    {
                        tracing::debug!(%peer, error = %e, "a round message was not delivered");
                    }
                    drop(permit);
                });
            }
            Output::Train {
                round,
                attempt,
                parameters,
            } => {
                // One training job per run at a time: a newer request (a retry) replaces
                // one still waiting, so nobody can queue up work on this node's CPU.
                if run.training {
                    run.next_training = Some((round, attempt, parameters));
                } else {
                    start_training(run, task, round, attempt, parameters, done);
                }
            }
            Output::Evaluate { model, parameters } => {
                let arch = run.record.model.architecture();
                let data = run.data.clone();
                let done = done.clone();
                tokio::task::spawn_blocking(move || {
                    let result = Model::from_parameters(arch, &parameters)
                        .and_then(|m| evaluate(&m, &data.validation));
                    let message = match result {
                        Ok(e) => Done::Evaluated {
                            task,
                            model,
                            accuracy: e.accuracy,
                        },
                        Err(e) => Done::Failed {
                            task,
                            what: "evaluation",
                            detail: e.to_string(),
                        },
                    };
                    let _ = done.blocking_send(message);
                });
            }
            Output::Submit { payload } => {
                let consensus = ctx.consensus.clone();
                let id = run.id.clone();
                tokio::spawn(async move {
                    match consensus.submit(payload).await {
                        Ok(c) => {
                            tracing::debug!(run = %id, height = c.seq, "model record committed")
                        }
                        Err(e) => {
                            tracing::warn!(run = %id, error = %e, "model record not committed (the round retries)")
                        }
                    }
                });
            }
            Output::Adopted {
                round,
                model,
                parameters,
            } => adopted(ctx, run, round, model, &parameters),
            Output::Finished => {
                // The status turns `finished` once the last model is stored (`adopted`).
                run.finished = true;
                tracing::info!(run = %run.id, "federated run finished");
            }
        }
    }
}

/// Stores an adopted model durably, then reports the round: a `round_finished` event means
/// the model is on disk, unless the run's status carries an error saying it could not be
/// stored (the round is still reported: the node adopted the model, the ledger holds its
/// record, and the aggregator keeps it for fetching).
fn adopted(ctx: &Context, run: &Active, round: u64, model: Digest, parameters: &[f32]) {
    let (accuracy, height) = run.committed.get(&round).copied().unwrap_or((0.0, 0));
    let model_hex = hex::encode(model.as_bytes());
    tracing::info!(run = %run.id, round, accuracy, height, model = %model_hex, "federated round finished");
    let path = ctx
        .data_dir
        .join("learning")
        .join(format!("{model_hex}.f32"));
    let bytes: Vec<u8> = parameters.iter().flat_map(|v| v.to_le_bytes()).collect();
    let (shared, events, id) = (ctx.shared.clone(), ctx.events.clone(), run.id.clone());
    tokio::task::spawn_blocking(move || {
        let stored = write_durably(&path, &bytes);
        if let Err(e) = &stored {
            tracing::error!(path = %path.display(), error = %e, "cannot store an adopted model");
        }
        shared.update(&id, |info| {
            if let Err(e) = &stored {
                info.error = Some(format!(
                    "round {round}: the model could not be stored at {}: {e}",
                    path.display()
                ));
            }
            info.finished_rounds.push(RoundInfo {
                round,
                model: model_hex.clone(),
                accuracy,
                height,
            });
            info.finished_rounds.sort_by_key(|r| r.round);
            if info.finished_rounds.len() as u64 >= info.rounds {
                info.state = "finished".to_owned();
            }
        });
        let _ = events.send(Event::RoundFinished {
            run: id,
            round,
            model: model_hex,
            accuracy,
            height,
        });
    });
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn on_done(
    ctx: &Context,
    runs: &mut BTreeMap<Digest, Active>,
    done: Done,
    clock: &Clock,
    jobs: &mpsc::Sender<Done>,
) {
    let now = clock.now();
    // A training job ended (with a model or an error): start the one asked for meanwhile.
    let training_ended = |run: &mut Active, task: Digest| {
        run.training = false;
        if let Some((round, attempt, parameters)) = run.next_training.take() {
            start_training(run, task, round, attempt, parameters, jobs);
        }
    };
    match done {
        Done::Trained {
            task,
            round,
            attempt,
            parameters,
            samples,
        } => {
            if let Some(run) = runs.get_mut(&task) {
                if let Err(e) = run
                    .node
                    .handle_trained(now, round, attempt, &parameters, samples)
                {
                    tracing::warn!(run = %run.id, error = %e, "a trained model was refused");
                }
                training_ended(run, task);
            }
        }
        Done::Evaluated {
            task,
            model,
            accuracy,
        } => {
            if let Some(run) = runs.get_mut(&task) {
                run.node.handle_evaluated(now, model, accuracy);
            }
        }
        Done::Failed { task, what, detail } => {
            if let Some(run) = runs.get_mut(&task) {
                tracing::warn!(run = %run.id, what, error = %detail, "federated work failed here");
                ctx.shared.update(&run.id, |info| {
                    info.error = Some(format!("{what}: {detail}"));
                });
                if what == "training" {
                    training_ended(run, task);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u8) -> NodeId {
        NodeId(SigningKey::from_seed(&[i; 32]).verifying_key().to_bytes())
    }

    fn record() -> RunRecord {
        RunRecord::from_request(
            &StartRun {
                rounds: Some(3),
                top_k: Some(0.1),
                ..StartRun::default()
            },
            id(1),
            vec![id(1), id(2), id(3), id(4)],
            42,
        )
        .expect("a valid request")
    }

    #[test]
    fn run_records_round_trip_and_bad_ones_are_refused() {
        let r = record();
        assert_eq!(RunRecord::decode(&r.encode()), Ok(r.clone()));
        assert_eq!(r.plan().min_updates, 3);
        let good = r.encode();
        for cut in 0..good.len() {
            assert!(RunRecord::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        assert!(RunRecord::decode(&[good.as_slice(), &[0]].concat()).is_err());
        let mut wrong_model = good.clone();
        wrong_model[6] = 9;
        assert!(RunRecord::decode(&wrong_model).is_err());
        for bad in [
            RunRecord {
                rounds: 0,
                ..r.clone()
            },
            RunRecord {
                rounds: 1001,
                ..r.clone()
            },
            RunRecord {
                epochs: 0,
                ..r.clone()
            },
            RunRecord {
                learning_rate: f64::NAN,
                ..r.clone()
            },
            RunRecord {
                top_k: Some(1.5),
                ..r.clone()
            },
            RunRecord {
                round_timeout: Duration::ZERO,
                ..r.clone()
            },
            RunRecord {
                aggregator: id(9),
                ..r.clone()
            },
            RunRecord {
                participants: vec![id(1), id(1)],
                ..r.clone()
            },
        ] {
            assert!(RunRecord::decode(&bad.encode()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn start_requests_are_checked() {
        let bad_model = StartRun {
            model: Some("transformer".into()),
            ..StartRun::default()
        };
        assert!(RunRecord::from_request(&bad_model, id(1), vec![id(1)], 1).is_err());
        let bad_lr = StartRun {
            learning_rate: Some(-1.0),
            ..StartRun::default()
        };
        assert!(RunRecord::from_request(&bad_lr, id(1), vec![id(1)], 1).is_err());
        let defaults = RunRecord::from_request(&StartRun::default(), id(1), vec![id(1)], 7)
            .expect("defaults are valid");
        assert_eq!(
            (
                defaults.model,
                defaults.rounds,
                defaults.epochs,
                defaults.seed
            ),
            (ModelKind::Mlp, 5, 1, 7)
        );
    }
}
