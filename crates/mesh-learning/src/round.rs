//! The federated round protocol: a sans-IO state machine for trainers, the aggregator and
//! validators, with every global model committed through consensus before anyone adopts it.
//!
//! One [`Node`] runs on each participant, with the roles the [`Plan`] gives its id. A round
//! goes:
//!
//! 1. Every trainer starts from the adopted global model ([`Output::Train`]); the driver
//!    trains it on local data and hands back the trained parameters
//!    ([`Node::handle_trained`]). The trainer sends its delta from the global model,
//!    compressed (with error feedback) if the node has a [`Compressor`], in a signed
//!    [`Message::Update`] to the aggregator.
//! 2. The aggregator checks each update (signature, a trainer of the plan, this round and
//!    attempt, the current global model as base, shape, finite values, one per trainer) and
//!    counts what it refuses in [`Stats`]. Once every trainer reported, or at the round's
//!    deadline with at least `min_updates`, it combines the deltas with its [`Aggregator`]
//!    and broadcasts the candidate model in a signed [`Message::Proposal`].
//! 3. Each validator checks that the candidate is built on the current model and that its
//!    content hash ([`ModelId`]) is what the proposal names, has the driver evaluate it on
//!    held-out data ([`Output::Evaluate`]) and votes ([`Message::Vote`], signed): accept when
//!    its accuracy is at most `max_regression` below the current model's.
//! 4. When more than two thirds of the validators accepted, the aggregator hands a
//!    [`ModelRecord`] (the candidate's hash, its base, the signed accepting votes) to
//!    consensus ([`Output::Submit`]). Whatever consensus commits comes back to every node
//!    ([`Node::handle_committed`]), which checks the record itself (base, round, a quorum of
//!    valid votes) and only then adopts the candidate ([`Output::Adopted`]), fetching its
//!    parameters from the aggregator if it missed the proposal. The next round starts.
//!
//! Committed records are handled in ledger order: one for a round this node has not reached
//! yet waits in a bounded backlog ([`MAX_BACKLOG`]), so a node replaying the ledger after a
//! restart adopts round after round, fetching each candidate from the aggregator, which keeps
//! its past global models for that ([`HISTORY_BYTES`]).
//!
//! A round that gathers too few updates by its deadline, or whose candidate is rejected or
//! not committed in time, is tried again (a new attempt, announced in a signed
//! [`Message::Retry`]): trainers train again from the same global model.
//!
//! Call order, as in the consensus core: feed inputs with the `handle_*` methods (each takes
//! `now`), then drain [`Node::poll_output`] until `None`, and call [`Node::handle_timeout`]
//! when [`Node::poll_timeout`] says. Training and evaluation are outputs, not calls: the
//! core never computes on a model itself except to combine updates, so it stays
//! deterministic and cheap to test.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use mesh_crypto::ed25519::{Signature, SigningKey, VerifyingKey};
use mesh_types::wire::{Reader, put_len_prefixed, put_varint};
use mesh_types::{Digest, Instant, NodeId};

use crate::aggregate::{Aggregator, Update};
use crate::compress::{Compressor, decode as decode_compressed};
use crate::error::{Error, Result};
use crate::model::Architecture;
use crate::rng::Rng;
use crate::version::{ModelId, architecture_bytes};

/// Format version of every message and record of this module.
const VERSION: u8 = 1;
/// Domain of the signatures over messages.
const DOMAIN: &[u8] = b"agentmesh/learning/round/v1";
/// Most validators a plan may have (bounds a record's votes).
pub const MAX_VALIDATORS: usize = 256;
/// Most trainers a plan may have.
pub const MAX_TRAINERS: usize = 10_000;
/// Most committed records kept for rounds this node has not reached yet (a node catching up
/// on the ledger receives many at once); beyond it the newest are dropped and counted stale.
pub const MAX_BACKLOG: usize = 4096;
/// How often a node waiting for a committed candidate's parameters asks the aggregator again.
pub const FETCH_RETRY: Duration = Duration::from_secs(1);
/// Messages for later rounds kept per sender (an update, a vote, a proposal, a retry).
const EARLY_PER_SENDER: usize = 4;
/// Bytes of past global models the aggregator keeps to answer fetches from nodes catching
/// up on the ledger (at least the last model is always kept).
pub const HISTORY_BYTES: usize = 256 << 20;
/// Most parameters a plan's model may have (bounds every message).
pub const MAX_PARAMETERS: usize = 1 << 26;

const KIND_UPDATE: u8 = 1;
const KIND_PROPOSAL: u8 = 2;
const KIND_VOTE: u8 = 3;
const KIND_RETRY: u8 = 4;
const KIND_FETCH: u8 = 5;

const ENCODING_DENSE: u8 = 0;
const ENCODING_COMPRESSED: u8 = 1;

/// Who takes part in a federation and how its rounds run. Every participant holds the same
/// plan (its hash is the federation's `task` id, bound into every signature).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The model trained.
    pub architecture: Architecture,
    /// The trainers (their node ids are their Ed25519 keys).
    pub trainers: Vec<NodeId>,
    /// The aggregator.
    pub aggregator: NodeId,
    /// The validators.
    pub validators: Vec<NodeId>,
    /// Updates needed to aggregate at the deadline (with fewer, the round is retried).
    pub min_updates: usize,
    /// How long the aggregator waits for updates, and then for a commit, before retrying.
    pub round_timeout: Duration,
    /// Validators accept a candidate whose accuracy is at most this far below the current
    /// model's (0.01: one point).
    pub max_regression: f64,
    /// Rounds to run (the federation stops after adopting this many models).
    pub rounds: u64,
}

impl Plan {
    /// Refuses inconsistent plans.
    pub fn validate(&self) -> Result<()> {
        let n = self.architecture.num_parameters();
        if n == 0 || n > MAX_PARAMETERS {
            return Err(Error::invalid("plan", format!("{n} parameters")));
        }
        if self.trainers.is_empty() || self.trainers.len() > MAX_TRAINERS {
            return Err(Error::invalid(
                "plan",
                format!("{} trainers (1..={MAX_TRAINERS})", self.trainers.len()),
            ));
        }
        if self.validators.is_empty() || self.validators.len() > MAX_VALIDATORS {
            return Err(Error::invalid(
                "plan",
                format!(
                    "{} validators (1..={MAX_VALIDATORS})",
                    self.validators.len()
                ),
            ));
        }
        let distinct = |ids: &[NodeId]| ids.iter().collect::<BTreeSet<_>>().len() == ids.len();
        if !distinct(&self.trainers) || !distinct(&self.validators) {
            return Err(Error::invalid(
                "plan",
                "a trainer or validator is listed twice",
            ));
        }
        for id in self.trainers.iter().chain(&self.validators) {
            key_of(id).map_err(|_| Error::invalid("plan", "a node id is not an Ed25519 key"))?;
        }
        key_of(&self.aggregator)
            .map_err(|_| Error::invalid("plan", "the aggregator is not an Ed25519 key"))?;
        if self.min_updates == 0 || self.min_updates > self.trainers.len() {
            return Err(Error::invalid(
                "plan",
                format!(
                    "min_updates {} must be 1..={}",
                    self.min_updates,
                    self.trainers.len()
                ),
            ));
        }
        if self.round_timeout.is_zero() {
            return Err(Error::invalid("plan", "round_timeout is zero"));
        }
        if !(0.0..=1.0).contains(&self.max_regression) {
            return Err(Error::invalid("plan", "max_regression must be in [0, 1]"));
        }
        Ok(())
    }

    /// Accepting votes needed to commit a candidate: more than two thirds of the validators.
    pub fn quorum(&self) -> usize {
        self.validators.len() * 2 / 3 + 1
    }

    /// The federation's id: the hash of the plan's canonical encoding.
    pub fn task(&self) -> Digest {
        let mut out = Vec::new();
        put_len_prefixed(&mut out, &architecture_bytes(&self.architecture));
        for list in [&self.trainers, &self.validators] {
            put_varint(&mut out, list.len() as u64);
            for id in list {
                out.extend_from_slice(id.as_bytes());
            }
        }
        out.extend_from_slice(self.aggregator.as_bytes());
        put_varint(&mut out, self.min_updates as u64);
        put_varint(&mut out, self.round_timeout.as_millis() as u64);
        out.extend_from_slice(&self.max_regression.to_le_bytes());
        put_varint(&mut out, self.rounds);
        Digest::of_parts([b"agentmesh/learning/plan/v1".as_slice(), &out])
    }
}

fn key_of(id: &NodeId) -> mesh_crypto::Result<VerifyingKey> {
    VerifyingKey::from_bytes(id.as_bytes())
}

/// What a round message says (the signed envelope adds the task and the signer).
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A trainer's delta from the global model `base`.
    Update {
        /// The round (1 for the first model after the initial one).
        round: u64,
        /// The attempt within the round (from 0).
        attempt: u32,
        /// The global model the trainer started from.
        base: Digest,
        /// Training examples behind the update (weights FedAvg).
        samples: u64,
        /// The delta: dense little-endian `f32`, or a [`Compressor`] message.
        delta: Delta,
    },
    /// The aggregator's candidate model.
    Proposal {
        /// The round.
        round: u64,
        /// The attempt.
        attempt: u32,
        /// The global model it builds on.
        base: Digest,
        /// Its content hash ([`ModelId`]).
        candidate: Digest,
        /// How many updates went into it.
        contributors: u32,
        /// Its parameters.
        parameters: Arc<Vec<f32>>,
    },
    /// A validator's verdict on a candidate.
    Vote(Vote),
    /// The aggregator's call to train the round again.
    Retry {
        /// The round.
        round: u64,
        /// The new attempt.
        attempt: u32,
        /// The global model to start from.
        base: Digest,
    },
    /// A request for a candidate's parameters (a node that missed the proposal).
    Fetch {
        /// The candidate wanted.
        candidate: Digest,
    },
}

/// An update's delta as it travels.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// Every coordinate.
    Dense(Vec<f32>),
    /// A [`Compressor`] message (see [`crate::compress::decode`]).
    Compressed(Vec<u8>),
}

/// A validator's vote, as signed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vote {
    /// The round.
    pub round: u64,
    /// The attempt.
    pub attempt: u32,
    /// The global model the candidate builds on.
    pub base: Digest,
    /// The candidate.
    pub candidate: Digest,
    /// Its accuracy on the validator's held-out data, in millionths.
    pub accuracy_ppm: u32,
    /// Whether the validator accepts it.
    pub accept: bool,
}

/// A signed message: who sent it, for which federation.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The federation ([`Plan::task`]).
    pub task: Digest,
    /// The signer.
    pub signer: NodeId,
    /// The message.
    pub message: Message,
    /// Ed25519 over the domain `agentmesh/learning/round/v1` and everything before it.
    pub signature: Signature,
}

/// Decoding bounds, from the plan.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    dim: usize,
}

impl Bounds {
    /// A compressed delta is never larger than index + value per coordinate plus a header.
    fn max_delta_bytes(&self) -> usize {
        self.dim.saturating_mul(8).saturating_add(64)
    }
}

fn encode_body(message: &Message, out: &mut Vec<u8>) {
    match message {
        Message::Update {
            round,
            attempt,
            base,
            samples,
            delta,
        } => {
            out.push(KIND_UPDATE);
            put_varint(out, *round);
            put_varint(out, u64::from(*attempt));
            out.extend_from_slice(base.as_bytes());
            put_varint(out, *samples);
            match delta {
                Delta::Dense(values) => {
                    out.push(ENCODING_DENSE);
                    put_floats(out, values);
                }
                Delta::Compressed(bytes) => {
                    out.push(ENCODING_COMPRESSED);
                    put_len_prefixed(out, bytes);
                }
            }
        }
        Message::Proposal {
            round,
            attempt,
            base,
            candidate,
            contributors,
            parameters,
        } => {
            out.push(KIND_PROPOSAL);
            put_varint(out, *round);
            put_varint(out, u64::from(*attempt));
            out.extend_from_slice(base.as_bytes());
            out.extend_from_slice(candidate.as_bytes());
            put_varint(out, u64::from(*contributors));
            put_floats(out, parameters);
        }
        Message::Vote(v) => {
            out.push(KIND_VOTE);
            encode_vote(v, out);
        }
        Message::Retry {
            round,
            attempt,
            base,
        } => {
            out.push(KIND_RETRY);
            put_varint(out, *round);
            put_varint(out, u64::from(*attempt));
            out.extend_from_slice(base.as_bytes());
        }
        Message::Fetch { candidate } => {
            out.push(KIND_FETCH);
            out.extend_from_slice(candidate.as_bytes());
        }
    }
}

fn encode_vote(v: &Vote, out: &mut Vec<u8>) {
    put_varint(out, v.round);
    put_varint(out, u64::from(v.attempt));
    out.extend_from_slice(v.base.as_bytes());
    out.extend_from_slice(v.candidate.as_bytes());
    out.extend_from_slice(&v.accuracy_ppm.to_le_bytes());
    out.push(u8::from(v.accept));
}

fn put_floats(out: &mut Vec<u8>, values: &[f32]) {
    put_varint(out, values.len() as u64);
    out.reserve(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// The bytes a signature covers: the domain, the version, the task, the signer, the body.
fn signed_part(task: &Digest, signer: &NodeId, message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(DOMAIN);
    out.push(VERSION);
    out.extend_from_slice(task.as_bytes());
    out.extend_from_slice(signer.as_bytes());
    encode_body(message, &mut out);
    out
}

impl Envelope {
    /// Signs `message` for `task` with `key`.
    pub fn seal(task: Digest, key: &SigningKey, message: Message) -> Self {
        let signer = NodeId(key.verifying_key().to_bytes());
        let signature = key.sign(&signed_part(&task, &signer, &message));
        Self {
            task,
            signer,
            message,
            signature,
        }
    }

    /// The wire encoding: the signed part without the domain, then the signature.
    pub fn encode(&self) -> Vec<u8> {
        let signed = signed_part(&self.task, &self.signer, &self.message);
        let mut out = Vec::with_capacity(signed.len() - DOMAIN.len() + 64);
        out.extend_from_slice(&signed[DOMAIN.len()..]);
        out.extend_from_slice(&self.signature.0);
        out
    }

    /// Decodes an envelope whose model has `dim` parameters, refusing anything malformed,
    /// oversized or trailing. Does not check the signature ([`Envelope::verify`] does).
    pub fn decode(bytes: &[u8], dim: usize) -> Result<Self> {
        let bounds = Bounds { dim };
        let max = bounds.max_delta_bytes().saturating_add(256);
        if bytes.len() > max {
            return Err(malformed(format!("{} bytes, at most {max}", bytes.len())));
        }
        let mut r = Reader::new(bytes);
        let version = r.u8().map_err(wire)?;
        if version != VERSION {
            return Err(malformed(format!("unknown version {version}")));
        }
        let task = Digest(r.array().map_err(wire)?);
        let signer = NodeId(r.array().map_err(wire)?);
        let message = decode_body(&mut r, bounds)?;
        let signature = Signature(r.array().map_err(wire)?);
        r.finish().map_err(wire)?;
        Ok(Self {
            task,
            signer,
            message,
            signature,
        })
    }

    /// Checks the signature against the signer's key.
    pub fn verify(&self) -> Result<()> {
        let key =
            key_of(&self.signer).map_err(|_| Error::invalid("signer", "not an Ed25519 key"))?;
        key.verify(
            &signed_part(&self.task, &self.signer, &self.message),
            &self.signature,
        )
        .map_err(|_| Error::invalid("round message", "bad signature"))
    }
}

fn malformed(detail: String) -> Error {
    Error::Malformed {
        what: "round message",
        line: 0,
        detail,
    }
}

fn wire(e: mesh_types::wire::WireError) -> Error {
    malformed(e.to_string())
}

fn get_floats(r: &mut Reader<'_>, max: usize) -> Result<Vec<f32>> {
    let n = r.varint_len("parameters", max).map_err(wire)?;
    let bytes = r.bytes(n * 4).map_err(wire)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn get_u32(r: &mut Reader<'_>) -> Result<u32> {
    let v = r.varint().map_err(wire)?;
    u32::try_from(v).map_err(|_| malformed(format!("{v} does not fit 32 bits")))
}

fn decode_vote(r: &mut Reader<'_>) -> Result<Vote> {
    let round = r.varint().map_err(wire)?;
    let attempt = get_u32(r)?;
    let base = Digest(r.array().map_err(wire)?);
    let candidate = Digest(r.array().map_err(wire)?);
    let accuracy_ppm = r.u32_le().map_err(wire)?;
    if accuracy_ppm > 1_000_000 {
        return Err(malformed(format!("accuracy {accuracy_ppm} ppm")));
    }
    let accept = match r.u8().map_err(wire)? {
        0 => false,
        1 => true,
        b => return Err(malformed(format!("bad flag {b}"))),
    };
    Ok(Vote {
        round,
        attempt,
        base,
        candidate,
        accuracy_ppm,
        accept,
    })
}

fn decode_body(r: &mut Reader<'_>, bounds: Bounds) -> Result<Message> {
    let kind = r.u8().map_err(wire)?;
    Ok(match kind {
        KIND_UPDATE => {
            let round = r.varint().map_err(wire)?;
            let attempt = get_u32(r)?;
            let base = Digest(r.array().map_err(wire)?);
            let samples = r.varint().map_err(wire)?;
            let delta = match r.u8().map_err(wire)? {
                ENCODING_DENSE => Delta::Dense(get_floats(r, bounds.dim)?),
                ENCODING_COMPRESSED => Delta::Compressed(
                    r.len_prefixed("compressed delta", bounds.max_delta_bytes())
                        .map_err(wire)?
                        .to_vec(),
                ),
                e => return Err(malformed(format!("unknown delta encoding {e}"))),
            };
            Message::Update {
                round,
                attempt,
                base,
                samples,
                delta,
            }
        }
        KIND_PROPOSAL => Message::Proposal {
            round: r.varint().map_err(wire)?,
            attempt: get_u32(r)?,
            base: Digest(r.array().map_err(wire)?),
            candidate: Digest(r.array().map_err(wire)?),
            contributors: get_u32(r)?,
            parameters: Arc::new(get_floats(r, bounds.dim)?),
        },
        KIND_VOTE => Message::Vote(decode_vote(r)?),
        KIND_RETRY => Message::Retry {
            round: r.varint().map_err(wire)?,
            attempt: get_u32(r)?,
            base: Digest(r.array().map_err(wire)?),
        },
        KIND_FETCH => Message::Fetch {
            candidate: Digest(r.array().map_err(wire)?),
        },
        k => return Err(malformed(format!("unknown message kind {k}"))),
    })
}

/// What the aggregator submits to consensus, and what every node checks before adopting a
/// model: the candidate, its base, and a quorum of validators' signed accepting votes.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRecord {
    /// The federation.
    pub task: Digest,
    /// The round.
    pub round: u64,
    /// The attempt the votes were for.
    pub attempt: u32,
    /// The model it builds on.
    pub base: Digest,
    /// The new global model.
    pub candidate: Digest,
    /// Accepting votes: validator, accuracy in millionths, signature of its vote.
    pub votes: Vec<(NodeId, u32, Signature)>,
}

impl ModelRecord {
    /// The canonical encoding (the consensus payload).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.votes.len() * 100);
        out.extend_from_slice(b"AMFL");
        out.push(VERSION);
        out.extend_from_slice(self.task.as_bytes());
        put_varint(&mut out, self.round);
        put_varint(&mut out, u64::from(self.attempt));
        out.extend_from_slice(self.base.as_bytes());
        out.extend_from_slice(self.candidate.as_bytes());
        put_varint(&mut out, self.votes.len() as u64);
        for (id, acc, sig) in &self.votes {
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&acc.to_le_bytes());
            out.extend_from_slice(&sig.0);
        }
        out
    }

    /// Decodes a record; refuses malformed input and more than [`MAX_VALIDATORS`] votes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        if r.bytes(4).map_err(wire)? != b"AMFL" || r.u8().map_err(wire)? != VERSION {
            return Err(malformed("not a model record of this version".into()));
        }
        let task = Digest(r.array().map_err(wire)?);
        let round = r.varint().map_err(wire)?;
        let attempt = get_u32(&mut r)?;
        let base = Digest(r.array().map_err(wire)?);
        let candidate = Digest(r.array().map_err(wire)?);
        let n = r.varint_len("votes", MAX_VALIDATORS).map_err(wire)?;
        let mut votes = Vec::with_capacity(n);
        for _ in 0..n {
            let id = NodeId(r.array().map_err(wire)?);
            let acc = r.u32_le().map_err(wire)?;
            let sig = Signature(r.array().map_err(wire)?);
            votes.push((id, acc, sig));
        }
        r.finish().map_err(wire)?;
        Ok(Self {
            task,
            round,
            attempt,
            base,
            candidate,
            votes,
        })
    }

    /// Checks the record against `plan`: distinct validators of the plan, each signature an
    /// accepting vote for this candidate on this base, and at least a quorum of them.
    pub fn verify(&self, plan: &Plan) -> Result<()> {
        if self.task != plan.task() {
            return Err(Error::invalid("model record", "another federation's"));
        }
        let mut seen = BTreeSet::new();
        for (id, acc, sig) in &self.votes {
            if !plan.validators.contains(id) || !seen.insert(*id) {
                return Err(Error::invalid(
                    "model record",
                    "a vote from a stranger or a repeated voter",
                ));
            }
            let vote = Message::Vote(Vote {
                round: self.round,
                attempt: self.attempt,
                base: self.base,
                candidate: self.candidate,
                accuracy_ppm: *acc,
                accept: true,
            });
            Envelope {
                task: self.task,
                signer: *id,
                message: vote,
                signature: *sig,
            }
            .verify()?;
        }
        if seen.len() < plan.quorum() {
            return Err(Error::invalid(
                "model record",
                format!("{} accepting votes, {} needed", seen.len(), plan.quorum()),
            ));
        }
        Ok(())
    }
}

/// What a [`Node`] asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `bytes` (an encoded [`Envelope`]) to `to`.
    Send {
        /// The recipient.
        to: NodeId,
        /// The message.
        bytes: Arc<Vec<u8>>,
    },
    /// Train `parameters` (the global model `base`) on local data for `round`, then call
    /// [`Node::handle_trained`].
    Train {
        /// The round.
        round: u64,
        /// The attempt.
        attempt: u32,
        /// The global model's parameters.
        parameters: Arc<Vec<f32>>,
    },
    /// Evaluate model `model` on held-out data, then call [`Node::handle_evaluated`].
    Evaluate {
        /// The model's id.
        model: Digest,
        /// Its parameters.
        parameters: Arc<Vec<f32>>,
    },
    /// Submit this [`ModelRecord`] encoding to consensus; feed what commits to every node's
    /// [`Node::handle_committed`].
    Submit {
        /// The payload.
        payload: Vec<u8>,
    },
    /// A committed model was adopted: the new global model.
    Adopted {
        /// The round it ends.
        round: u64,
        /// Its id.
        model: Digest,
        /// Its parameters.
        parameters: Arc<Vec<f32>>,
    },
    /// The federation ran all its rounds.
    Finished,
}

/// Counters of what a node refused, by reason, and of what it did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages that did not decode.
    pub malformed: u64,
    /// Messages with a bad signature or for another federation.
    pub bad_signature: u64,
    /// Messages from a node whose role does not allow them.
    pub unauthorized: u64,
    /// Messages for another round or attempt.
    pub stale: u64,
    /// Updates or proposals built on another model than the current global one.
    pub wrong_base: u64,
    /// Updates or proposals of the wrong dimension, or whose compressed delta does not decode.
    pub wrong_shape: u64,
    /// Updates or proposals with NaN or infinite values.
    pub non_finite: u64,
    /// A second update from one trainer in one attempt.
    pub duplicate: u64,
    /// Proposals whose parameters do not hash to the candidate they name.
    pub wrong_hash: u64,
    /// Committed records that did not verify.
    pub bad_records: u64,
    /// Updates accepted (aggregator).
    pub updates: u64,
    /// Votes cast (validator).
    pub votes_cast: u64,
    /// Candidates rejected by this validator.
    pub rejected_candidates: u64,
    /// Retries announced (aggregator) or followed.
    pub retries: u64,
    /// Models adopted.
    pub adopted: u64,
}

/// The aggregator's work on the current attempt.
#[derive(Default)]
struct Collecting {
    updates: BTreeMap<NodeId, Update>,
    proposal: Option<(Digest, Arc<Vec<f32>>)>,
    votes: BTreeMap<NodeId, (u32, bool, Signature)>,
    submitted: bool,
}

/// A committed record waiting for its candidate's parameters.
struct Pending {
    record: ModelRecord,
}

/// The round protocol on one participant. See the module docs.
pub struct Node {
    plan: Plan,
    task: Digest,
    dim: usize,
    me: NodeId,
    key: SigningKey,
    aggregator: Box<dyn Aggregator + Send>,
    compressor: Option<Box<dyn Compressor + Send>>,
    rng: Rng,
    now: Instant,

    round: u64,
    attempt: u32,
    global: Arc<Vec<f32>>,
    global_id: Digest,
    /// The deadline of the current attempt (aggregator).
    deadline: Option<Instant>,
    finished: bool,

    residual: Vec<f32>,
    /// Candidates seen this round (their parameters), by id.
    candidates: BTreeMap<Digest, Arc<Vec<f32>>>,
    /// The accuracy of the current global model on this validator's data, once evaluated.
    baseline: Option<f64>,
    /// Candidates this validator waits to evaluate or to vote on: (round, attempt, base).
    to_vote: BTreeMap<Digest, (u64, u32, Digest)>,
    /// Evaluated accuracies by model id (this round's).
    accuracies: BTreeMap<Digest, f64>,
    collecting: Collecting,
    pending: Option<Pending>,
    /// Committed records not handled yet: for later rounds, or arriving while a candidate's
    /// parameters are being fetched. In ledger order.
    backlog: VecDeque<ModelRecord>,
    /// The aggregator's past global models, oldest first (bounded by [`HISTORY_BYTES`]).
    history: VecDeque<(Digest, Arc<Vec<f32>>)>,
    /// Trainers the driver's failure detector says are down (bounded by the plan).
    down: BTreeSet<NodeId>,
    /// When to ask the aggregator again for a pending committed candidate.
    fetch_at: Option<Instant>,
    /// Signed messages for rounds this node has not reached yet, oldest first (bounded by
    /// `early_limit`).
    early: VecDeque<(NodeId, Vec<u8>)>,
    replaying: bool,

    outputs: VecDeque<Output>,
    stats: Stats,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("me", &self.me)
            .field("round", &self.round)
            .field("attempt", &self.attempt)
            .field("global", &self.global_id)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A participant starting from the initial global model `initial` (every participant
    /// must start from the same one). `aggregator` combines updates if this node aggregates;
    /// `compressor` compresses its updates if it trains (none: dense). `rng` drives
    /// compression's sampling.
    pub fn new(
        plan: Plan,
        key: SigningKey,
        initial: Vec<f32>,
        aggregator: Box<dyn Aggregator + Send>,
        compressor: Option<Box<dyn Compressor + Send>>,
        rng: Rng,
        now: Instant,
    ) -> Result<Self> {
        plan.validate()?;
        let dim = plan.architecture.num_parameters();
        if initial.len() != dim {
            return Err(Error::invalid(
                "initial model",
                format!("{} parameters, the plan's model has {dim}", initial.len()),
            ));
        }
        if initial.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid("initial model", "non-finite parameters"));
        }
        let global_id = ModelId::of(&plan.architecture, &initial)?.0;
        let me = NodeId(key.verifying_key().to_bytes());
        let mut node = Self {
            task: plan.task(),
            dim,
            me,
            key,
            aggregator,
            compressor,
            rng,
            now,
            round: 1,
            attempt: 0,
            global: Arc::new(initial),
            global_id,
            deadline: None,
            finished: plan.rounds == 0,
            residual: Vec::new(),
            candidates: BTreeMap::new(),
            baseline: None,
            to_vote: BTreeMap::new(),
            accuracies: BTreeMap::new(),
            collecting: Collecting::default(),
            pending: None,
            backlog: VecDeque::new(),
            history: VecDeque::new(),
            down: BTreeSet::new(),
            fetch_at: None,
            early: VecDeque::new(),
            replaying: false,
            outputs: VecDeque::new(),
            stats: Stats::default(),
            plan,
        };
        if node.finished {
            node.outputs.push_back(Output::Finished);
        } else {
            node.start_round();
        }
        Ok(node)
    }

    // ----- accessors ---------------------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// The round being worked on (the number of models adopted so far, plus one).
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The current global model's id.
    pub fn global_id(&self) -> Digest {
        self.global_id
    }

    /// The current global model's parameters.
    pub fn global(&self) -> &Arc<Vec<f32>> {
        &self.global
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether every round of the plan ran.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn is_trainer(&self) -> bool {
        self.plan.trainers.contains(&self.me)
    }

    fn is_validator(&self) -> bool {
        self.plan.validators.contains(&self.me)
    }

    fn is_aggregator(&self) -> bool {
        self.plan.aggregator == self.me
    }

    // ----- driving -----------------------------------------------------------------------

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Node::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.deadline, self.fetch_at].into_iter().flatten().min()
    }

    /// Time passed: an aggregator whose attempt ran out aggregates what it has or retries.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        // A fetch of a committed candidate may have been lost (the aggregator unreachable for
        // a moment, say while this node restarts): ask again until the parameters arrive.
        if let Some(at) = self.fetch_at
            && self.now >= at
        {
            match self.pending.as_ref().map(|p| p.record.candidate) {
                Some(candidate) => {
                    self.fetch_at = Some(self.now + FETCH_RETRY);
                    let aggregator = self.plan.aggregator;
                    self.send(aggregator, Message::Fetch { candidate });
                }
                None => self.fetch_at = None,
            }
        }
        let Some(deadline) = self.deadline else {
            return;
        };
        if self.now < deadline || self.finished {
            return;
        }
        if self.collecting.proposal.is_none()
            && self.collecting.updates.len() >= self.plan.min_updates
        {
            self.propose();
            self.deadline = Some(self.now + self.plan.round_timeout);
        } else {
            self.retry();
        }
    }

    /// A message arrived from `from` (the transport's authenticated peer; the envelope's
    /// own signature is what counts).
    pub fn handle_message(&mut self, now: Instant, bytes: &[u8]) {
        self.now = self.now.max(now);
        let env = match Envelope::decode(bytes, self.dim) {
            Ok(e) => e,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        if env.task != self.task || env.verify().is_err() {
            self.stats.bad_signature += 1;
            return;
        }
        let from = env.signer;
        // A message for a later round than ours: its sender adopted the last committed model
        // before we did (we follow the same ledger a little behind). Keep it until we get
        // there instead of losing an update or a vote to the race.
        let round = match &env.message {
            // The answer to our fetch of a committed candidate is taken whatever its round.
            Message::Proposal { candidate, .. }
                if self
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.record.candidate == *candidate) =>
            {
                None
            }
            Message::Update { round, .. }
            | Message::Proposal { round, .. }
            | Message::Retry { round, .. } => Some(*round),
            Message::Vote(v) => Some(v.round),
            Message::Fetch { .. } => None,
        };
        if let Some(round) = round
            && round > self.round
            && !self.finished
        {
            // Only participants' messages are kept, at most a few each, so that nobody can
            // push the others' out.
            let participant = self.plan.trainers.contains(&from)
                || self.plan.validators.contains(&from)
                || self.plan.aggregator == from;
            let theirs = self
                .early
                .iter()
                .filter(|(sender, _)| *sender == from)
                .count();
            if !participant {
                self.stats.unauthorized += 1;
            } else if theirs >= EARLY_PER_SENDER || self.early.len() >= self.early_limit() {
                self.stats.stale += 1;
            } else {
                self.early.push_back((from, bytes.to_vec()));
            }
            return;
        }
        match env.message {
            Message::Update {
                round,
                attempt,
                base,
                samples,
                delta,
            } => self.on_update(from, round, attempt, base, samples, delta),
            Message::Proposal {
                round,
                attempt,
                base,
                candidate,
                parameters,
                ..
            } => self.on_proposal(from, round, attempt, base, candidate, parameters),
            Message::Vote(v) => self.on_vote(from, v, env.signature),
            Message::Retry {
                round,
                attempt,
                base,
            } => self.on_retry(from, round, attempt, base),
            Message::Fetch { candidate } => self.on_fetch(from, candidate),
        }
        // A fetched candidate may have been adopted: records waiting for the next rounds go on.
        self.process_backlog();
        self.replay_early();
    }

    /// Messages kept for later rounds: two per participant and a few more.
    fn early_limit(&self) -> usize {
        2 * (self.plan.trainers.len() + self.plan.validators.len()) + 16
    }

    /// Hands the kept messages of the round just reached back to [`Node::handle_message`]
    /// (those for still later rounds are kept again, older ones dropped as stale).
    fn replay_early(&mut self) {
        if self.replaying || self.early.is_empty() {
            return;
        }
        self.replaying = true;
        let mut kept = std::mem::take(&mut self.early);
        let mut round = self.round;
        // Each pass replays what the previous adoption made current.
        loop {
            let mut later = VecDeque::new();
            for (_, bytes) in kept.drain(..) {
                self.handle_message(self.now, &bytes);
                // Re-kept messages are for a round still ahead.
                later.extend(self.early.drain(..));
            }
            if self.round == round || later.is_empty() {
                self.early = later;
                break;
            }
            round = self.round;
            kept = later;
        }
        self.replaying = false;
    }

    /// The driver trained the global model of `(round, attempt)` into `parameters`, on
    /// `samples` examples.
    pub fn handle_trained(
        &mut self,
        now: Instant,
        round: u64,
        attempt: u32,
        parameters: &[f32],
        samples: u64,
    ) -> Result<()> {
        self.now = self.now.max(now);
        if round != self.round || attempt != self.attempt || self.finished {
            return Ok(()); // overtaken by a retry or a commit
        }
        if parameters.len() != self.dim || parameters.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "trained model",
                "wrong dimension or non-finite values",
            ));
        }
        let delta: Vec<f32> = parameters
            .iter()
            .zip(self.global.iter())
            .map(|(w, g)| w - g)
            .collect();
        let delta = match &self.compressor {
            Some(c) => Delta::Compressed(c.compress(&delta, &mut self.residual, &mut self.rng)?),
            None => Delta::Dense(delta),
        };
        let msg = Message::Update {
            round,
            attempt,
            base: self.global_id,
            samples,
            delta,
        };
        let aggregator = self.plan.aggregator;
        self.send(aggregator, msg);
        Ok(())
    }

    /// The driver evaluated `model` on held-out data.
    pub fn handle_evaluated(&mut self, now: Instant, model: Digest, accuracy: f64) {
        self.now = self.now.max(now);
        let accuracy = if accuracy.is_finite() {
            accuracy.clamp(0.0, 1.0)
        } else {
            0.0
        };
        if model == self.global_id {
            self.baseline = Some(accuracy);
        }
        if self.accuracies.len() < 64 {
            self.accuracies.insert(model, accuracy);
        }
        self.cast_votes();
    }

    /// Consensus committed `payload` (in the mesh's one order; every node sees the same
    /// sequence). Records for this federation's current round are checked and adopted;
    /// anything else is counted and ignored.
    pub fn handle_committed(&mut self, now: Instant, payload: &[u8]) {
        self.now = self.now.max(now);
        let record = match ModelRecord::decode(payload) {
            Ok(r) => r,
            Err(_) => {
                self.stats.bad_records += 1;
                return;
            }
        };
        if record.task != self.task {
            return; // another federation's
        }
        if self.finished || record.round < self.round {
            // A second record for a round already decided (the first committed wins).
            self.stats.stale += 1;
            return;
        }
        if self.backlog.len() >= MAX_BACKLOG {
            self.stats.stale += 1;
            return;
        }
        self.backlog.push_back(record);
        self.process_backlog();
        self.replay_early();
    }

    /// Handles the committed records in ledger order while this node can: a record for its
    /// current round is checked and adopted (or its candidate fetched, which pauses the
    /// backlog until the parameters arrive); one for a later round waits for this node to
    /// get there (a node catching up on the ledger adopts round after round).
    fn process_backlog(&mut self) {
        while self.pending.is_none() && !self.finished {
            let Some(record) = self.backlog.front() else {
                return;
            };
            if record.round > self.round {
                return;
            }
            let Some(record) = self.backlog.pop_front() else {
                return;
            };
            if record.round < self.round || record.base != self.global_id {
                // A second record for a round already decided (the first committed wins).
                self.stats.stale += 1;
                continue;
            }
            if record.verify(&self.plan).is_err() {
                self.stats.bad_records += 1;
                continue;
            }
            match self.candidates.get(&record.candidate).cloned() {
                Some(params) => self.adopt(record, params),
                None => {
                    let candidate = record.candidate;
                    self.pending = Some(Pending { record });
                    self.fetch_at = Some(self.now + FETCH_RETRY);
                    let aggregator = self.plan.aggregator;
                    self.send(aggregator, Message::Fetch { candidate });
                }
            }
        }
        if self.finished {
            self.backlog.clear();
        }
    }

    // ----- the round -----------------------------------------------------------------------

    fn start_round(&mut self) {
        self.candidates.clear();
        self.accuracies.clear();
        self.to_vote.clear();
        self.collecting = Collecting::default();
        self.pending = None;
        if self.is_aggregator() {
            self.deadline = Some(self.now + self.plan.round_timeout);
        }
        if self.is_validator() && self.baseline.is_none() {
            self.outputs.push_back(Output::Evaluate {
                model: self.global_id,
                parameters: self.global.clone(),
            });
        }
        if self.is_trainer() {
            self.outputs.push_back(Output::Train {
                round: self.round,
                attempt: self.attempt,
                parameters: self.global.clone(),
            });
        }
    }

    fn adopt(&mut self, record: ModelRecord, params: Arc<Vec<f32>>) {
        let round = self.round;
        if self.is_aggregator() {
            // Nodes replaying the ledger later fetch every round's model from here.
            let keep = (HISTORY_BYTES / (self.dim.max(1) * 4)).max(1);
            self.history.push_back((record.candidate, params.clone()));
            while self.history.len() > keep {
                self.history.pop_front();
            }
        }
        self.baseline = self.accuracies.get(&record.candidate).copied();
        self.global = params.clone();
        self.global_id = record.candidate;
        self.stats.adopted += 1;
        self.outputs.push_back(Output::Adopted {
            round,
            model: record.candidate,
            parameters: params,
        });
        self.round += 1;
        self.attempt = 0;
        if round >= self.plan.rounds {
            self.finished = true;
            self.deadline = None;
            self.outputs.push_back(Output::Finished);
            return;
        }
        self.start_round();
    }

    fn retry(&mut self) {
        self.attempt = self.attempt.saturating_add(1);
        self.stats.retries += 1;
        self.collecting = Collecting::default();
        self.deadline = Some(self.now + self.plan.round_timeout);
        let msg = Message::Retry {
            round: self.round,
            attempt: self.attempt,
            base: self.global_id,
        };
        let bytes = self.seal(msg);
        for t in self.participants() {
            self.send_bytes(t, bytes.clone());
        }
        if self.is_trainer() {
            self.outputs.push_back(Output::Train {
                round: self.round,
                attempt: self.attempt,
                parameters: self.global.clone(),
            });
        }
    }

    /// Everyone in the plan but this node.
    fn participants(&self) -> BTreeSet<NodeId> {
        let mut to: BTreeSet<NodeId> = self.plan.validators.iter().copied().collect();
        to.extend(self.plan.trainers.iter().copied());
        to.insert(self.plan.aggregator);
        to.remove(&self.me);
        to
    }

    /// Checks that a message is for the current round and attempt; counts it if not.
    fn current(&mut self, round: u64, attempt: u32) -> bool {
        if round == self.round && attempt == self.attempt && !self.finished {
            true
        } else {
            self.stats.stale += 1;
            false
        }
    }

    fn on_update(
        &mut self,
        from: NodeId,
        round: u64,
        attempt: u32,
        base: Digest,
        samples: u64,
        delta: Delta,
    ) {
        if !self.is_aggregator() || !self.plan.trainers.contains(&from) {
            self.stats.unauthorized += 1;
            return;
        }
        if !self.current(round, attempt) {
            return;
        }
        if self.collecting.proposal.is_some() {
            self.stats.stale += 1; // too late: the candidate is out
            return;
        }
        if base != self.global_id {
            self.stats.wrong_base += 1;
            return;
        }
        if self.collecting.updates.contains_key(&from) {
            self.stats.duplicate += 1;
            return;
        }
        let values = match delta {
            Delta::Dense(v) if v.len() == self.dim => v,
            Delta::Dense(_) => {
                self.stats.wrong_shape += 1;
                return;
            }
            Delta::Compressed(bytes) => match decode_compressed(&bytes, self.dim) {
                Ok(v) => v,
                Err(_) => {
                    self.stats.wrong_shape += 1;
                    return;
                }
            },
        };
        if values.iter().any(|v| !v.is_finite()) {
            self.stats.non_finite += 1;
            return;
        }
        self.stats.updates += 1;
        self.collecting.updates.insert(
            from,
            Update {
                parameters: values,
                samples: samples.max(1),
            },
        );
        self.propose_if_complete();
    }

    /// The aggregator proposes as soon as every trainer not known to be down has reported
    /// (and at least `min_updates` did); the deadline covers the rest.
    fn propose_if_complete(&mut self) {
        if !self.is_aggregator() || self.finished || self.collecting.proposal.is_some() {
            return;
        }
        let have = self.collecting.updates.len();
        let waiting = self
            .plan
            .trainers
            .iter()
            .filter(|t| !self.collecting.updates.contains_key(t) && !self.down.contains(t))
            .count();
        if waiting == 0 && have >= self.plan.min_updates {
            self.propose();
        }
    }

    /// The driver's failure detector declared `member` down (or up again, with `down` false).
    /// The aggregator stops waiting for a down trainer's update: once the others reported
    /// (at least `min_updates`), it proposes without waiting for the deadline. Only the
    /// waiting changes: a down trainer's update that arrives after all is still taken, and
    /// nothing else about the round depends on the hint.
    pub fn handle_member(&mut self, now: Instant, member: NodeId, down: bool) {
        self.now = self.now.max(now);
        if down {
            if self.plan.trainers.contains(&member) {
                self.down.insert(member);
            }
        } else {
            self.down.remove(&member);
        }
        self.propose_if_complete();
    }

    /// Combines the collected deltas into a candidate and broadcasts it.
    fn propose(&mut self) {
        let updates: Vec<Update> = std::mem::take(&mut self.collecting.updates)
            .into_values()
            .collect();
        let contributors = updates.len() as u32;
        let candidate = match self.aggregator.aggregate(&updates) {
            Ok(delta) => delta
                .iter()
                .zip(self.global.iter())
                .map(|(d, g)| g + d)
                .collect::<Vec<f32>>(),
            Err(_) => {
                // Nothing usable (every rule refuses only malformed sets, which were
                // filtered): try the round again.
                self.retry();
                return;
            }
        };
        if candidate.iter().any(|v| !v.is_finite()) {
            self.retry();
            return;
        }
        let Ok(ModelId(id)) = ModelId::of(&self.plan.architecture, &candidate) else {
            self.retry();
            return;
        };
        let params = Arc::new(candidate);
        self.collecting.proposal = Some((id, params.clone()));
        self.candidates.insert(id, params.clone());
        let msg = Message::Proposal {
            round: self.round,
            attempt: self.attempt,
            base: self.global_id,
            candidate: id,
            contributors,
            parameters: params,
        };
        let bytes = self.seal(msg.clone());
        for t in self.participants() {
            self.send_bytes(t, bytes.clone());
        }
        // The aggregator's own roles see the proposal as the others do.
        if let Message::Proposal {
            round,
            attempt,
            base,
            candidate,
            parameters,
            ..
        } = msg
        {
            let me = self.me;
            self.on_proposal(me, round, attempt, base, candidate, parameters);
        }
    }

    fn on_proposal(
        &mut self,
        from: NodeId,
        round: u64,
        attempt: u32,
        base: Digest,
        candidate: Digest,
        parameters: Arc<Vec<f32>>,
    ) {
        if from != self.plan.aggregator {
            self.stats.unauthorized += 1;
            return;
        }
        if parameters.len() != self.dim {
            self.stats.wrong_shape += 1;
            return;
        }
        if parameters.iter().any(|v| !v.is_finite()) {
            self.stats.non_finite += 1;
            return;
        }
        if ModelId::of(&self.plan.architecture, &parameters).map(|m| m.0) != Ok(candidate) {
            self.stats.wrong_hash += 1;
            return;
        }
        // A node waiting for a committed candidate's parameters takes them from any round.
        if let Some(p) = &self.pending
            && p.record.candidate == candidate
        {
            if let Some(p) = self.pending.take() {
                self.adopt(p.record, parameters);
            }
            return;
        }
        // A later attempt than this node knows of means it missed a retry: follow it.
        if round != self.round || attempt < self.attempt || self.finished {
            self.stats.stale += 1;
            return;
        }
        if base != self.global_id {
            self.stats.wrong_base += 1;
            return;
        }
        self.attempt = attempt;
        if self.candidates.len() >= 16 && !self.candidates.contains_key(&candidate) {
            return; // a flood of candidates in one round: keep the first few
        }
        self.candidates.insert(candidate, parameters.clone());
        if self.is_validator() && !self.to_vote.contains_key(&candidate) {
            self.to_vote.insert(candidate, (round, attempt, base));
            self.outputs.push_back(Output::Evaluate {
                model: candidate,
                parameters,
            });
        }
    }

    /// Votes on every candidate evaluated, once the baseline is known.
    fn cast_votes(&mut self) {
        let Some(baseline) = self.baseline else {
            return;
        };
        let ready: Vec<(Digest, (u64, u32, Digest), f64)> = self
            .to_vote
            .iter()
            .filter_map(|(c, meta)| self.accuracies.get(c).map(|a| (*c, *meta, *a)))
            .collect();
        for (candidate, (round, attempt, base), accuracy) in ready {
            self.to_vote.remove(&candidate);
            if round != self.round || attempt != self.attempt || base != self.global_id {
                continue;
            }
            let accept = accuracy + self.plan.max_regression >= baseline;
            if !accept {
                self.stats.rejected_candidates += 1;
            }
            self.stats.votes_cast += 1;
            let vote = Vote {
                round,
                attempt,
                base,
                candidate,
                accuracy_ppm: (accuracy * 1e6).round() as u32,
                accept,
            };
            let aggregator = self.plan.aggregator;
            self.send(aggregator, Message::Vote(vote));
        }
    }

    fn on_vote(&mut self, from: NodeId, vote: Vote, signature: Signature) {
        if !self.is_aggregator() || !self.plan.validators.contains(&from) {
            self.stats.unauthorized += 1;
            return;
        }
        if !self.current(vote.round, vote.attempt) {
            return;
        }
        let Some((candidate, _)) = &self.collecting.proposal else {
            self.stats.stale += 1;
            return;
        };
        if vote.candidate != *candidate || vote.base != self.global_id {
            self.stats.wrong_base += 1;
            return;
        }
        if self.collecting.votes.contains_key(&from) {
            self.stats.duplicate += 1;
            return;
        }
        self.collecting
            .votes
            .insert(from, (vote.accuracy_ppm, vote.accept, signature));
        let accepting: Vec<(NodeId, u32, Signature)> = self
            .collecting
            .votes
            .iter()
            .filter(|(_, v)| v.1)
            .map(|(id, v)| (*id, v.0, v.2))
            .collect();
        let rejecting = self.collecting.votes.len() - accepting.len();
        let quorum = self.plan.quorum();
        if accepting.len() >= quorum && !self.collecting.submitted {
            self.collecting.submitted = true;
            let record = ModelRecord {
                task: self.task,
                round: self.round,
                attempt: self.attempt,
                base: self.global_id,
                candidate: vote.candidate,
                votes: accepting.into_iter().take(quorum).collect(),
            };
            self.outputs.push_back(Output::Submit {
                payload: record.encode(),
            });
        } else if rejecting > self.plan.validators.len() - quorum {
            // A quorum can no longer accept this candidate: train the round again.
            self.retry();
        }
    }

    fn on_retry(&mut self, from: NodeId, round: u64, attempt: u32, base: Digest) {
        if from != self.plan.aggregator {
            self.stats.unauthorized += 1;
            return;
        }
        if round != self.round || attempt <= self.attempt || base != self.global_id {
            self.stats.stale += 1;
            return;
        }
        self.attempt = attempt;
        self.stats.retries += 1;
        if self.is_trainer() {
            self.outputs.push_back(Output::Train {
                round,
                attempt,
                parameters: self.global.clone(),
            });
        }
    }

    fn on_fetch(&mut self, from: NodeId, candidate: Digest) {
        if !self.is_aggregator() {
            self.stats.unauthorized += 1;
            return;
        }
        // The current global model, a candidate of this round, or a past global model (for
        // nodes catching up on the ledger).
        let params = if candidate == self.global_id {
            Some(self.global.clone())
        } else {
            self.candidates.get(&candidate).cloned().or_else(|| {
                self.history
                    .iter()
                    .rev()
                    .find(|(id, _)| *id == candidate)
                    .map(|(_, p)| p.clone())
            })
        };
        let Some(parameters) = params else {
            return;
        };
        let msg = Message::Proposal {
            round: self.round,
            attempt: self.attempt,
            base: self.global_id,
            candidate,
            contributors: 0,
            parameters,
        };
        self.send(from, msg);
    }

    fn seal(&self, message: Message) -> Arc<Vec<u8>> {
        Arc::new(Envelope::seal(self.task, &self.key, message).encode())
    }

    fn send(&mut self, to: NodeId, message: Message) {
        let bytes = self.seal(message);
        self.send_bytes(to, bytes);
    }

    fn send_bytes(&mut self, to: NodeId, bytes: Arc<Vec<u8>>) {
        if to == self.me {
            // A node in several roles talks to itself without the network.
            self.handle_message(self.now, &bytes);
        } else {
            self.outputs.push_back(Output::Send { to, bytes });
        }
    }
}
