//! What sync puts on the wire: namespaces, the three kinds of delta and grants, signed
//! deltas, and the two sync messages; their bounded, versioned binary encodings.
//!
//! A signed delta is `body || signature` where
//!
//! ```text
//! body = version (1) | owner (32) | name (len-prefixed) | writer (32) | seq (varint)
//!      | payload tag (1 facts, 2 episodes, 3 attributes, 4 grant) | payload
//! ```
//!
//! and the Ed25519 signature covers `len-prefixed "agentmesh/memory-delta/v1" || body`, so a
//! sync signature can never be taken for another kind of statement. A message is
//! `version (1) | kind (1 deltas, 2 digest) | ...`. Decoding checks every length against
//! its bound before reading, requires keys in strictly increasing order (one encoding per
//! value), refuses trailing bytes and never panics; failures are [`Error::Malformed`] or
//! [`Error::TooLong`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use mesh_types::wire::{Reader, WireError, put_len_prefixed, put_varint};
use mesh_types::{NodeId, Timestamp};

use super::crdt::{AppendLog, CausalContext, Dot, LwwMap, OrSet, Stamp};
use crate::codec::{MAX_NAME_BYTES, MAX_VALUE_BYTES, check_name, check_text};
use crate::episodic::{self, NewEpisode};
use crate::error::{Error, Result};
use crate::graph::MAX_ID_BYTES;

/// Largest encoded signed delta, in bytes (an episode of 64 KiB of text and 32 metadata
/// pairs of 4 KiB fits).
pub const MAX_DELTA_BYTES: usize = 256 * 1024;
/// Largest sync message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Most deltas in one message.
pub const MAX_DELTAS_PER_MESSAGE: usize = 256;
/// Most attribute registers in one delta (a facts or an episodes delta carries at most one
/// item, numbered with the delta itself).
pub const MAX_ITEMS: usize = 64;
/// Most dots tagging one fact in a delta.
pub const MAX_DOTS: usize = 1_024;
/// Most writers in a causal context or version vector (and in a namespace).
pub const MAX_WRITERS: usize = 1_024;
/// Most out-of-order counters per writer in a causal context or version vector.
pub const MAX_CLOUD: usize = 4_096;
/// Most out-of-order counters in a whole causal context or version vector as encoded
/// (about 1 MiB of varints at most, well within a message).
pub const MAX_CLOUD_TOTAL: usize = 100_000;
/// Longest attribute subject, in bytes (an entity id).
pub const MAX_SUBJECT_BYTES: usize = MAX_ID_BYTES;
/// Length of a signature.
pub const SIGNATURE_LEN: usize = 64;

const DELTA_VERSION: u8 = 1;
const MESSAGE_VERSION: u8 = 1;
const DOMAIN: &[u8] = b"agentmesh/memory-delta/v1";
const KIND_DELTAS: u8 = 1;
const KIND_DIGEST: u8 = 2;

/// A shared memory: its owner (an Ed25519 key, the key of the owner's `did:key`) and a
/// name (1 to 64 bytes of `[A-Za-z0-9_.:-]`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Namespace {
    owner: NodeId,
    name: String,
}

impl Namespace {
    /// Checks the name.
    pub fn new(owner: NodeId, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        check_name("namespace name", &name)?;
        Ok(Self { owner, name })
    }

    /// The owner.
    pub fn owner(&self) -> NodeId {
        self.owner
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner.short(), self.name)
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Namespace({self})")
    }
}

/// A knowledge-graph assertion, an element of the facts set. Attributes are not part of a
/// fact: they are last-writer-wins registers ([`AttributeKey`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fact {
    /// An entity exists with this type.
    Entity {
        /// Its id (1 to 256 bytes of text, no control characters).
        id: String,
        /// Its type (a name).
        kind: String,
    },
    /// A typed relation between two entities.
    Relation {
        /// Where it starts.
        from: String,
        /// Its type (a name).
        kind: String,
        /// Where it points.
        to: String,
    },
}

impl Fact {
    /// An entity assertion.
    pub fn entity(id: impl Into<String>, kind: impl Into<String>) -> Self {
        Self::Entity {
            id: id.into(),
            kind: kind.into(),
        }
    }

    /// A relation assertion.
    pub fn relation(
        from: impl Into<String>,
        kind: impl Into<String>,
        to: impl Into<String>,
    ) -> Self {
        Self::Relation {
            from: from.into(),
            kind: kind.into(),
            to: to.into(),
        }
    }

    /// Checks the ids and names against the knowledge graph's rules.
    pub fn check(&self) -> Result<()> {
        match self {
            Self::Entity { id, kind } => {
                check_text("entity id", id, MAX_ID_BYTES, false)?;
                check_name("entity type", kind)
            }
            Self::Relation { from, kind, to } => {
                check_text("entity id", from, MAX_ID_BYTES, false)?;
                check_name("relation type", kind)?;
                check_text("entity id", to, MAX_ID_BYTES, false)
            }
        }
    }
}

/// The key of an attribute register: a subject (an entity id, or any text naming what the
/// attribute describes) and an attribute name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttributeKey {
    /// What it describes (1 to 256 bytes of text, no control characters).
    pub subject: String,
    /// The attribute's name.
    pub name: String,
}

impl AttributeKey {
    /// A key.
    pub fn new(subject: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            name: name.into(),
        }
    }

    /// Checks the subject and the name.
    pub fn check(&self) -> Result<()> {
        check_text("attribute subject", &self.subject, MAX_SUBJECT_BYTES, false)?;
        check_name("attribute name", &self.name)
    }
}

/// Checks an attribute value (`None` deletes): at most 4 KiB of text.
pub(crate) fn check_value(value: Option<&str>) -> Result<()> {
    match value {
        Some(v) if !v.is_empty() => check_text("attribute value", v, MAX_VALUE_BYTES, true),
        _ => Ok(()),
    }
}

/// What the owner grants a peer in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Nothing (a revocation).
    None,
    /// The peer receives the namespace's deltas.
    Read,
    /// The peer receives them and may write.
    Write,
}

/// A grant, signed by the namespace's owner as one of its deltas.
///
/// The owner's latest grant for a peer (by the owner's sequence numbers) decides. A grant
/// other than [`Access::Write`] keeps the peer's deltas numbered up to `writes_until` valid
/// and withdraws the later ones, on every replica alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grant {
    /// Who.
    pub peer: NodeId,
    /// What.
    pub access: Access,
    /// The peer's deltas numbered up to this stay valid however access changes.
    pub writes_until: u64,
}

/// The change one signed delta carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Graph facts: an observed-remove set delta.
    Facts(OrSet<Fact>),
    /// Episodes: append-log entries of the writer.
    Episodes(AppendLog<NewEpisode>),
    /// Attributes: last-writer-wins registers written by the writer.
    Attributes(LwwMap<AttributeKey, Option<String>>),
    /// An access grant (the owner only).
    Grant(Grant),
}

impl Payload {
    fn tag(&self) -> u8 {
        match self {
            Self::Facts(_) => 1,
            Self::Episodes(_) => 2,
            Self::Attributes(_) => 3,
            Self::Grant(_) => 4,
        }
    }
}

/// Signs sync deltas: the local node's Ed25519 key (the node implements it over its
/// `mesh_identity::Identity`).
pub trait Signer {
    /// The public key, which is the writer's id.
    fn id(&self) -> NodeId;
    /// An Ed25519 signature of `message`.
    fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN];
}

/// Verifies sync deltas' signatures (the node implements it with `mesh_crypto`'s cofactored
/// Ed25519 verification).
pub trait Verifier {
    /// Whether `signature` is `key`'s Ed25519 signature of `message`.
    fn verify(&self, key: &NodeId, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool;
}

/// A delta of one writer in one namespace, numbered by the writer (1, 2, 3, ... in each
/// namespace) and signed by it. Relayed unchanged, so any peer can check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDelta {
    namespace: Namespace,
    writer: NodeId,
    seq: u64,
    payload: Payload,
    signature: [u8; SIGNATURE_LEN],
    bytes: Vec<u8>,
}

impl SignedDelta {
    /// Encodes and signs `payload` as `signer`'s delta number `seq`.
    pub fn sign(
        namespace: &Namespace,
        seq: u64,
        payload: Payload,
        signer: &impl Signer,
    ) -> Result<Self> {
        let writer = signer.id();
        let mut bytes = Vec::with_capacity(128);
        bytes.push(DELTA_VERSION);
        put_node(&mut bytes, &namespace.owner);
        put_len_prefixed(&mut bytes, namespace.name.as_bytes());
        put_node(&mut bytes, &writer);
        put_varint(&mut bytes, seq);
        bytes.push(payload.tag());
        put_payload(&mut bytes, &payload);
        if bytes.len() + SIGNATURE_LEN > MAX_DELTA_BYTES {
            return Err(Error::TooLong {
                what: "sync delta",
                len: bytes.len() + SIGNATURE_LEN,
                max: MAX_DELTA_BYTES,
            });
        }
        let signature = signer.sign(&signing_bytes(&bytes));
        bytes.extend_from_slice(&signature);
        // What every replica will decode, so the writer joins exactly that (an encoding that
        // would not decode, or decode to something else, never leaves).
        let decoded = Self::decode(&bytes)?;
        if decoded.payload != payload {
            return Err(Error::Malformed {
                what: "sync delta",
                detail: "the payload does not survive its encoding".into(),
            });
        }
        Ok(decoded)
    }

    /// Decodes a delta (bounded; never panics). The signature is not checked here.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "sync delta";
        if bytes.len() > MAX_DELTA_BYTES {
            return Err(Error::TooLong {
                what: WHAT,
                len: bytes.len(),
                max: MAX_DELTA_BYTES,
            });
        }
        let mut r = In::new(WHAT, bytes);
        let version = r.u8()?;
        if version != DELTA_VERSION {
            return Err(r.fail(format!("unknown version {version}")));
        }
        let owner = r.node()?;
        let name = r.str("namespace name", MAX_NAME_BYTES)?;
        let namespace = Namespace::new(owner, name).map_err(|e| r.fail(e.to_string()))?;
        let writer = r.node()?;
        let seq = r.varint()?;
        if seq == 0 {
            return Err(r.fail("sequence number 0"));
        }
        let payload = match r.u8()? {
            1 => Payload::Facts(read_facts(&mut r, &writer, seq)?),
            2 => Payload::Episodes(read_episodes(&mut r, &writer, seq)?),
            3 => Payload::Attributes(read_attributes(&mut r, &writer)?),
            4 => Payload::Grant(read_grant(&mut r)?),
            t => return Err(r.fail(format!("unknown payload kind {t}"))),
        };
        let signature = r.array::<SIGNATURE_LEN>()?;
        r.finish()?;
        Ok(Self {
            namespace,
            writer,
            seq,
            payload,
            signature,
            bytes: bytes.to_vec(),
        })
    }

    /// Whether the signature is the writer's.
    pub fn verify(&self, verifier: &impl Verifier) -> bool {
        let body = &self.bytes[..self.bytes.len() - SIGNATURE_LEN];
        verifier.verify(&self.writer, &signing_bytes(body), &self.signature)
    }

    /// The namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The writer.
    pub fn writer(&self) -> NodeId {
        self.writer
    }

    /// The writer's sequence number of this delta in the namespace.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The change.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The encoding (body and signature).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The delta's dot in the namespace's version vector.
    pub fn dot(&self) -> Dot {
        Dot {
            writer: self.writer,
            counter: self.seq,
        }
    }
}

fn signing_bytes(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 1 + body.len());
    put_len_prefixed(&mut m, DOMAIN);
    m.extend_from_slice(body);
    m
}

/// A sync message between two replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Deltas: pushed after a local write, or sent in answer to a digest.
    Deltas(Vec<SignedDelta>),
    /// Anti-entropy: the sender's version vector of a namespace. The receiver answers with
    /// the deltas the sender lacks and, if `reply` is false and the sender has deltas the
    /// receiver lacks, with its own digest (`reply` true, which is not answered by a digest).
    Digest {
        /// The namespace.
        namespace: Namespace,
        /// Whether this digest answers another.
        reply: bool,
        /// The `(writer, seq)` of every delta the sender holds (the out-of-order part may be
        /// cut to [`MAX_CLOUD`] per writer, which only costs redundant deltas).
        have: CausalContext,
    },
}

impl Message {
    /// Encodes the message. Deltas beyond the message bounds are the caller's to split
    /// (the node never builds larger messages).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![MESSAGE_VERSION];
        match self {
            Self::Deltas(ds) => {
                out.push(KIND_DELTAS);
                put_varint(&mut out, ds.len() as u64);
                for d in ds {
                    put_len_prefixed(&mut out, &d.bytes);
                }
            }
            Self::Digest {
                namespace,
                reply,
                have,
            } => {
                out.push(KIND_DIGEST);
                put_node(&mut out, &namespace.owner);
                put_len_prefixed(&mut out, namespace.name.as_bytes());
                out.push(u8::from(*reply));
                put_context(&mut out, have);
            }
        }
        out
    }

    /// Decodes a message (bounded; never panics). Signatures are not checked here.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "sync message";
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(Error::TooLong {
                what: WHAT,
                len: bytes.len(),
                max: MAX_MESSAGE_BYTES,
            });
        }
        let mut r = In::new(WHAT, bytes);
        let version = r.u8()?;
        if version != MESSAGE_VERSION {
            return Err(r.fail(format!("unknown version {version}")));
        }
        let msg = match r.u8()? {
            KIND_DELTAS => {
                let n = r.count("deltas", MAX_DELTAS_PER_MESSAGE)?;
                let mut ds = Vec::with_capacity(n);
                for _ in 0..n {
                    ds.push(SignedDelta::decode(
                        r.bytes("sync delta", MAX_DELTA_BYTES)?,
                    )?);
                }
                Self::Deltas(ds)
            }
            KIND_DIGEST => {
                let owner = r.node()?;
                let name = r.str("namespace name", MAX_NAME_BYTES)?;
                let namespace = Namespace::new(owner, name).map_err(|e| r.fail(e.to_string()))?;
                let reply = match r.u8()? {
                    0 => false,
                    1 => true,
                    b => return Err(r.fail(format!("reply flag {b}"))),
                };
                let have = read_context(&mut r)?;
                Self::Digest {
                    namespace,
                    reply,
                    have,
                }
            }
            k => return Err(r.fail(format!("unknown message kind {k}"))),
        };
        r.finish()?;
        Ok(msg)
    }
}

// ---- encoding ----

fn put_node(out: &mut Vec<u8>, n: &NodeId) {
    out.extend_from_slice(&n.0);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len_prefixed(out, s.as_bytes());
}

fn put_dot(out: &mut Vec<u8>, d: &Dot) {
    put_node(out, &d.writer);
    put_varint(out, d.counter);
}

/// Writes a context; a writer's out-of-order dots beyond [`MAX_CLOUD`] are left out (the
/// lowest kept), and writers beyond [`MAX_WRITERS`] too, and out-of-order dots beyond
/// [`MAX_CLOUD_TOTAL`] in all, so a digest always fits in a message. (A digest cut short
/// claims less than its sender holds, which costs only redundant deltas.)
pub(crate) fn put_context(out: &mut Vec<u8>, c: &CausalContext) {
    let mut budget = MAX_CLOUD_TOTAL;
    let mut entries = Vec::new();
    for w in c.writers() {
        if entries.len() == MAX_WRITERS {
            break;
        }
        let (prefix, cloud) = c.parts(&w);
        let cloud: Vec<u64> = cloud.take(MAX_CLOUD.min(budget)).collect();
        budget -= cloud.len();
        if prefix > 0 || !cloud.is_empty() {
            entries.push((w, prefix, cloud));
        }
    }
    put_varint(out, entries.len() as u64);
    for (w, prefix, cloud) in entries {
        put_node(out, &w);
        put_varint(out, prefix);
        put_varint(out, cloud.len() as u64);
        for x in cloud {
            put_varint(out, x);
        }
    }
}

fn put_fact(out: &mut Vec<u8>, f: &Fact) {
    match f {
        Fact::Entity { id, kind } => {
            out.push(1);
            put_str(out, id);
            put_str(out, kind);
        }
        Fact::Relation { from, kind, to } => {
            out.push(2);
            put_str(out, from);
            put_str(out, kind);
            put_str(out, to);
        }
    }
}

fn put_payload(out: &mut Vec<u8>, p: &Payload) {
    match p {
        Payload::Facts(set) => {
            put_varint(out, set.entries().len() as u64);
            for (f, dots) in set.entries() {
                put_fact(out, f);
                put_varint(out, dots.len() as u64);
                for d in dots {
                    put_dot(out, d);
                }
            }
            put_context(out, set.context());
        }
        Payload::Episodes(log) => {
            put_varint(out, log.len() as u64);
            for ((w, seq), e) in log.entries() {
                put_node(out, w);
                put_varint(out, *seq);
                put_len_prefixed(out, &episodic::encode_episode(e));
            }
        }
        Payload::Attributes(map) => {
            put_varint(out, map.len() as u64);
            for (k, (stamp, v)) in map.entries() {
                put_str(out, &k.subject);
                put_str(out, &k.name);
                put_varint(out, stamp.at.0);
                put_node(out, &stamp.writer);
                match v {
                    None => out.push(0),
                    Some(v) => {
                        out.push(1);
                        put_str(out, v);
                    }
                }
            }
        }
        Payload::Grant(g) => {
            put_node(out, &g.peer);
            out.push(match g.access {
                Access::None => 0,
                Access::Read => 1,
                Access::Write => 2,
            });
            put_varint(out, g.writes_until);
        }
    }
}

/// Canonical bytes of a whole replica state (for comparing replicas).
pub(crate) fn put_state(
    out: &mut Vec<u8>,
    facts: &OrSet<Fact>,
    episodes: &AppendLog<NewEpisode>,
    attributes: &LwwMap<AttributeKey, Option<String>>,
) {
    put_payload(out, &Payload::Facts(facts.clone()));
    put_payload(out, &Payload::Episodes(episodes.clone()));
    put_payload(out, &Payload::Attributes(attributes.clone()));
}

// ---- decoding ----

/// A bounded reader whose failures are this crate's errors.
pub(crate) struct In<'a> {
    r: Reader<'a>,
    what: &'static str,
}

impl<'a> In<'a> {
    pub(crate) fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Self {
            r: Reader::new(bytes),
            what,
        }
    }

    pub(crate) fn fail(&self, detail: impl Into<String>) -> Error {
        Error::Malformed {
            what: self.what,
            detail: format!("{} (at byte {})", detail.into(), self.r.position()),
        }
    }

    fn wire(&self, e: WireError) -> Error {
        match e {
            WireError::TooLarge { what, len, max } => Error::TooLong {
                what,
                len: usize::try_from(len).unwrap_or(usize::MAX),
                max: usize::try_from(max).unwrap_or(usize::MAX),
            },
            e => self.fail(e.to_string()),
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        self.r.u8().map_err(|e| self.wire(e))
    }

    pub(crate) fn varint(&mut self) -> Result<u64> {
        self.r.varint().map_err(|e| self.wire(e))
    }

    pub(crate) fn count(&mut self, what: &'static str, max: usize) -> Result<usize> {
        self.r.varint_len(what, max).map_err(|e| self.wire(e))
    }

    pub(crate) fn bytes(&mut self, what: &'static str, max: usize) -> Result<&'a [u8]> {
        self.r.len_prefixed(what, max).map_err(|e| self.wire(e))
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.r.array::<N>().map_err(|e| self.wire(e))
    }

    pub(crate) fn node(&mut self) -> Result<NodeId> {
        Ok(NodeId(self.array::<32>()?))
    }

    pub(crate) fn str(&mut self, what: &'static str, max: usize) -> Result<&'a str> {
        let b = self.bytes(what, max)?;
        std::str::from_utf8(b).map_err(|_| self.fail(format!("{what} is not UTF-8")))
    }

    pub(crate) fn finish(self) -> Result<()> {
        let what = self.what;
        self.r.finish().map_err(|e| Error::Malformed {
            what,
            detail: e.to_string(),
        })
    }
}

fn read_dot(r: &mut In<'_>) -> Result<Dot> {
    let writer = r.node()?;
    let counter = r.varint()?;
    if counter == 0 {
        return Err(r.fail("dot counter 0"));
    }
    Ok(Dot { writer, counter })
}

pub(crate) fn read_context(r: &mut In<'_>) -> Result<CausalContext> {
    let n = r.count("context writers", MAX_WRITERS)?;
    let mut c = CausalContext::new();
    let mut last: Option<NodeId> = None;
    for _ in 0..n {
        let w = r.node()?;
        if last.is_some_and(|l| l >= w) {
            return Err(r.fail("context writers out of order"));
        }
        last = Some(w);
        let prefix = r.varint()?;
        let m = r.count("context dots", MAX_CLOUD)?;
        let mut cloud = Vec::with_capacity(m);
        for _ in 0..m {
            cloud.push(r.varint()?);
        }
        if !c.push_parts(w, prefix, &cloud) {
            return Err(r.fail("context not canonical"));
        }
    }
    Ok(c)
}

fn read_fact(r: &mut In<'_>) -> Result<Fact> {
    let f = match r.u8()? {
        1 => Fact::Entity {
            id: r.str("entity id", MAX_ID_BYTES)?.to_owned(),
            kind: r.str("entity type", MAX_NAME_BYTES)?.to_owned(),
        },
        2 => Fact::Relation {
            from: r.str("entity id", MAX_ID_BYTES)?.to_owned(),
            kind: r.str("relation type", MAX_NAME_BYTES)?.to_owned(),
            to: r.str("entity id", MAX_ID_BYTES)?.to_owned(),
        },
        t => return Err(r.fail(format!("unknown fact kind {t}"))),
    };
    f.check().map_err(|e| r.fail(e.to_string()))?;
    Ok(f)
}

/// A facts delta adds at most one fact, tagged with the delta's own `(writer, seq)`, so a
/// dot can never tag two facts nor be minted twice.
fn read_facts(r: &mut In<'_>, writer: &NodeId, seq: u64) -> Result<OrSet<Fact>> {
    let n = r.count("facts", 1)?;
    let mut entries = BTreeMap::new();
    let mut last: Option<Fact> = None;
    for _ in 0..n {
        let f = read_fact(r)?;
        if last.as_ref().is_some_and(|l| *l >= f) {
            return Err(r.fail("facts out of order"));
        }
        last = Some(f.clone());
        let m = r.count("fact dots", MAX_DOTS)?;
        if m == 0 {
            return Err(r.fail("a fact without dots"));
        }
        let mut dots = BTreeSet::new();
        let mut prev: Option<Dot> = None;
        for _ in 0..m {
            let d = read_dot(r)?;
            if prev.is_some_and(|p| p >= d) {
                return Err(r.fail("dots out of order"));
            }
            if d.writer != *writer || d.counter != seq {
                return Err(r.fail("a dot other than the delta's own"));
            }
            prev = Some(d);
            dots.insert(d);
        }
        entries.insert(f, dots);
    }
    let context = read_context(r)?;
    if entries.values().flatten().any(|d| !context.contains(d)) {
        return Err(r.fail("a dot outside the context"));
    }
    Ok(OrSet::from_parts(entries, context))
}

/// An episodes delta appends at most one episode, numbered with the delta's own
/// `(writer, seq)`, so an episode's id is never reused.
fn read_episodes(r: &mut In<'_>, writer: &NodeId, seq: u64) -> Result<AppendLog<NewEpisode>> {
    let n = r.count("episodes", 1)?;
    let mut entries = BTreeMap::new();
    for _ in 0..n {
        let w = r.node()?;
        let s = r.varint()?;
        if (w, s) != (*writer, seq) {
            return Err(r.fail("an episode numbered other than its delta"));
        }
        let record = r.bytes("episode", MAX_DELTA_BYTES)?;
        let e = episodic::decode_episode(0, record).map_err(|e| {
            let detail = match e.at("episode", b"") {
                Error::Corrupt { detail, .. } => detail,
                other => other.to_string(),
            };
            r.fail(format!("episode: {detail}"))
        })?;
        let e = NewEpisode {
            at: e.at,
            peer: e.peer,
            kind: e.kind,
            text: e.text,
            metadata: e.metadata,
        };
        entries.insert((w, s), e);
    }
    Ok(AppendLog::from_entries(entries))
}

fn read_attributes(
    r: &mut In<'_>,
    writer: &NodeId,
) -> Result<LwwMap<AttributeKey, Option<String>>> {
    let n = r.count("attributes", MAX_ITEMS)?;
    let mut entries = BTreeMap::new();
    let mut last: Option<AttributeKey> = None;
    for _ in 0..n {
        let key = AttributeKey {
            subject: r.str("attribute subject", MAX_SUBJECT_BYTES)?.to_owned(),
            name: r.str("attribute name", MAX_NAME_BYTES)?.to_owned(),
        };
        key.check().map_err(|e| r.fail(e.to_string()))?;
        if last.as_ref().is_some_and(|l| *l >= key) {
            return Err(r.fail("attributes out of order"));
        }
        last = Some(key.clone());
        let at = Timestamp(r.varint()?);
        let w = r.node()?;
        if w != *writer {
            return Err(r.fail("an attribute stamped by another writer"));
        }
        let value = match r.u8()? {
            0 => None,
            1 => Some(r.str("attribute value", MAX_VALUE_BYTES)?.to_owned()),
            b => return Err(r.fail(format!("value flag {b}"))),
        };
        check_value(value.as_deref()).map_err(|e| r.fail(e.to_string()))?;
        entries.insert(key, (Stamp { at, writer: w }, value));
    }
    Ok(LwwMap::from_entries(entries))
}

fn read_grant(r: &mut In<'_>) -> Result<Grant> {
    let peer = r.node()?;
    let access = match r.u8()? {
        0 => Access::None,
        1 => Access::Read,
        2 => Access::Write,
        b => return Err(r.fail(format!("access {b}"))),
    };
    let writes_until = r.varint()?;
    Ok(Grant {
        peer,
        access,
        writes_until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episodic::{Kind, Peer};

    /// Signs with a keyed hash: enough to test the codec.
    struct Fake(u8);

    impl Signer for Fake {
        fn id(&self) -> NodeId {
            NodeId([self.0; 32])
        }
        fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
            let d = mesh_types::Digest::of_parts([&[self.0][..], message]);
            let mut s = [0; SIGNATURE_LEN];
            s[..32].copy_from_slice(&d.0);
            s
        }
    }

    impl Verifier for Fake {
        fn verify(&self, key: &NodeId, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
            Fake(key.0[0]).sign(message) == *signature
        }
    }

    fn round_trip(payload: Payload) {
        let ns = Namespace::new(NodeId([1; 32]), "ns").unwrap();
        let d = SignedDelta::sign(&ns, 7, payload, &Fake(1)).unwrap();
        let back = SignedDelta::decode(d.as_bytes()).unwrap();
        assert_eq!(back, d);
        assert!(back.verify(&Fake(1)));
        let msg = Message::Deltas(vec![d]);
        assert_eq!(Message::decode(&msg.encode()).unwrap(), msg);
    }

    #[test]
    fn every_payload_round_trips() {
        let w = NodeId([1; 32]);
        let mut set = OrSet::new();
        let dot = |counter| Dot { writer: w, counter };
        set.join(&set.add_delta_at(dot(3), Fact::entity("a", "t")));
        // Covers the earlier dot.
        round_trip(Payload::Facts(
            set.add_delta_at(dot(7), Fact::entity("a", "t")),
        ));
        round_trip(Payload::Facts(set.remove_delta(&Fact::entity("a", "t"))));
        let ep = NewEpisode::new(
            Timestamp(5),
            Peer::new("did:key:z6MkX").unwrap(),
            Kind::Custom("note".into()),
            "text",
        )
        .with("k", "v");
        round_trip(Payload::Episodes(AppendLog::append_delta_at(w, 7, ep)));
        let lww: LwwMap<AttributeKey, Option<String>> = LwwMap::new();
        round_trip(Payload::Attributes(lww.set_delta(
            w,
            AttributeKey::new("a", "city"),
            Some("Lyon".into()),
            Timestamp(3),
        )));
        round_trip(Payload::Attributes(lww.set_delta(
            w,
            AttributeKey::new("a", "city"),
            None,
            Timestamp(3),
        )));
        round_trip(Payload::Grant(Grant {
            peer: NodeId([2; 32]),
            access: Access::Write,
            writes_until: 3,
        }));
    }

    #[test]
    fn contexts_must_be_canonical_and_deltas_their_writers() {
        let mut c = CausalContext::new();
        for n in [1, 2, 5, 9] {
            c.insert(Dot {
                writer: NodeId([3; 32]),
                counter: n,
            });
        }
        let mut out = Vec::new();
        put_context(&mut out, &c);
        assert_eq!(read_context(&mut In::new("t", &out)).unwrap(), c);
        // Cloud dot 3 right after the prefix 2: not canonical.
        let mut bad = vec![1];
        bad.extend_from_slice(&[3; 32]);
        bad.extend_from_slice(&[2, 1, 3]);
        assert!(matches!(
            read_context(&mut In::new("t", &bad)),
            Err(Error::Malformed { .. })
        ));
        // A digest of a context with many gaps still fits in a message.
        let mut big = CausalContext::new();
        for w in 0..100u8 {
            for n in 0..5_000u64 {
                big.insert(Dot {
                    writer: NodeId([w; 32]),
                    counter: 2 * n + 2,
                });
            }
        }
        let digest = Message::Digest {
            namespace: Namespace::new(NodeId([1; 32]), "ns").unwrap(),
            reply: false,
            have: big,
        }
        .encode();
        assert!(digest.len() <= MAX_MESSAGE_BYTES);
        let Message::Digest { have, .. } = Message::decode(&digest).unwrap() else {
            panic!("not a digest");
        };
        assert_eq!(have.len(), MAX_CLOUD_TOTAL as u64);
        // A fact delta carrying another writer's dot: the writer cannot sign it, and a
        // hand-made one (here: a valid delta renumbered) does not decode.
        let mut set = OrSet::new();
        let d = set.add(NodeId([9; 32]), Fact::entity("a", "t"));
        let ns = Namespace::new(NodeId([1; 32]), "ns").unwrap();
        assert!(matches!(
            SignedDelta::sign(&ns, 1, Payload::Facts(d), &Fake(1)),
            Err(Error::Malformed { .. })
        ));
        let own = OrSet::new().add_delta_at(
            Dot {
                writer: NodeId([1; 32]),
                counter: 1,
            },
            Fact::entity("a", "t"),
        );
        let signed = SignedDelta::sign(&ns, 1, Payload::Facts(own), &Fake(1)).unwrap();
        let mut bytes = signed.as_bytes().to_vec();
        let at = 1 + 32 + 1 + 2 + 32; // version, owner, name, writer
        assert_eq!(bytes[at], 1);
        bytes[at] = 2;
        assert!(matches!(
            SignedDelta::decode(&bytes),
            Err(Error::Malformed { .. })
        ));
    }
}
