//! Consensus messages and their canonical, bounded encoding.
//!
//! Every message is one tag byte followed by its fields; integers are minimal varints, keys
//! and signatures fixed-size arrays. Decoders check every length against [`Limits`] before
//! allocating and reject trailing bytes, so a decoded message re-encodes to the same bytes.

use std::sync::Arc;

use bytes::Bytes;
use mesh_crypto::bls::SignerBitmap;
use mesh_crypto::ed25519::{self, Signature};
use mesh_types::wire::{Reader, put_len_prefixed, put_varint};
use mesh_types::{Digest, NodeId};

use crate::error::{Error, Result};
use crate::scheme::{SIG_LEN, Scheme, VoteSig};

/// Size bounds applied by every decoder. The defaults suit 512-byte requests batched into
/// blocks of up to 4 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request payload.
    pub max_request_bytes: usize,
    /// Most requests in one block.
    pub max_batch_requests: usize,
    /// Largest encoded batch.
    pub max_batch_bytes: usize,
    /// Most requests in one forwarded bundle.
    pub max_forward: usize,
    /// Most blocks in one state-transfer reply.
    pub max_blocks: usize,
    /// Most prepared certificates in one view change (bounded by the watermark window).
    pub max_prepared: usize,
    /// Most validators.
    pub max_validators: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 64 * 1024,
            max_batch_requests: 16_384,
            max_batch_bytes: 4 * 1024 * 1024,
            max_forward: 4_096,
            max_blocks: 64,
            max_prepared: 1_024,
            max_validators: mesh_crypto::bls::MAX_SIGNERS,
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestKind {
    /// An application decision: the payload is opaque to consensus.
    #[default]
    App,
    /// A validator's proposal to reconfigure the validator set: the payload is an encoded
    /// [`Change`](crate::reconfig::Change), counted only when the client is a validator (see
    /// [`reconfig`](crate::reconfig)).
    Change,
}

/// A client request: an opaque payload identified by its client and a client-chosen id.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// The submitting client (in the connection-authenticated mode: the submitting peer).
    pub client: NodeId,
    /// The client's id for this request; `(client, id)` is executed at most once.
    pub id: u64,
    /// The payload, opaque to consensus. Shared: a decoded batch's payloads are slices of
    /// one buffer (no copy or allocation per request), and clones are cheap.
    pub payload: Bytes,
    /// The client's Ed25519 signature over [`Request::signing_bytes`], in signed mode.
    pub signature: Option<Signature>,
    /// An application request or a reconfiguration proposal.
    pub kind: RequestKind,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}({}#{}, {} bytes{})",
            match self.kind {
                RequestKind::App => "Request",
                RequestKind::Change => "Change",
            },
            self.client.short(),
            self.id,
            self.payload.len(),
            if self.signature.is_some() {
                ", signed"
            } else {
                ""
            }
        )
    }
}

const REQUEST_DOMAIN: &[u8] = b"agentmesh/consensus-request/v1";
const CHANGE_DOMAIN: &[u8] = b"agentmesh/consensus-change/v1";
/// Request flags: a signature follows; the request is a reconfiguration proposal.
const FLAG_SIGNED: u8 = 1;
const FLAG_CHANGE: u8 = 2;

impl Request {
    /// An unsigned request (connection-authenticated mode).
    pub fn new(client: NodeId, id: u64, payload: impl Into<Bytes>) -> Self {
        Self {
            client,
            id,
            payload: payload.into(),
            signature: None,
            kind: RequestKind::App,
        }
    }

    /// A reconfiguration proposal by the validator `client` for `epoch`. Sign it with
    /// [`Request::sign`] (in every request mode: replicas ignore unsigned changes).
    pub fn change(client: NodeId, id: u64, epoch: u64, change: &crate::reconfig::Change) -> Self {
        let mut r = Self::new(client, id, crate::reconfig::proposal_payload(epoch, change));
        r.kind = RequestKind::Change;
        r
    }

    /// Signs the request with `key` (whose public key must be the client id).
    pub fn sign(mut self, key: &ed25519::SigningKey) -> Self {
        self.signature = Some(key.sign(&self.signing_bytes()));
        self
    }

    /// A request signed by `key`, whose public key is the client id.
    pub fn signed(key: &ed25519::SigningKey, id: u64, payload: impl Into<Bytes>) -> Self {
        let client = NodeId(key.verifying_key().to_bytes());
        let mut r = Self::new(client, id, payload);
        r.signature = Some(key.sign(&r.signing_bytes()));
        r
    }

    /// The bytes a client signs: a domain tag (one per kind), the client, the id and the
    /// payload.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let domain = match self.kind {
            RequestKind::App => REQUEST_DOMAIN,
            RequestKind::Change => CHANGE_DOMAIN,
        };
        let mut out = Vec::with_capacity(domain.len() + 48 + self.payload.len());
        out.extend_from_slice(domain);
        out.extend_from_slice(self.client.as_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// The deduplication key.
    pub fn key(&self) -> (NodeId, u64) {
        (self.client, self.id)
    }

    fn encoded_len(&self) -> usize {
        32 + 10 + 5 + self.payload.len() + 1 + 64
    }

    /// Appends the canonical encoding (as inside batches and forwarded bundles).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.client.as_bytes());
        put_varint(out, self.id);
        put_len_prefixed(out, &self.payload);
        let kind = match self.kind {
            RequestKind::App => 0,
            RequestKind::Change => FLAG_CHANGE,
        };
        match &self.signature {
            None => out.push(kind),
            Some(s) => {
                out.push(kind | FLAG_SIGNED);
                out.extend_from_slice(&s.0);
            }
        }
    }

    /// Reads one request written by [`Request::encode`], within `limits`.
    pub fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self> {
        Self::decode_in(r, limits, None)
    }

    /// Like [`Request::decode`]; when `shared` holds the bytes `r` reads, the payload is a
    /// slice of it instead of a copy.
    fn decode_in(r: &mut Reader<'_>, limits: &Limits, shared: Option<&Bytes>) -> Result<Self> {
        let m = || Error::malformed("request");
        let client = NodeId(r.array().map_err(m())?);
        let id = r.varint().map_err(m())?;
        let payload = r
            .len_prefixed("request payload", limits.max_request_bytes)
            .map_err(m())?;
        let end = r.position();
        let payload = match shared {
            Some(buf) => buf.slice(end - payload.len()..end),
            None => Bytes::copy_from_slice(payload),
        };
        let flags = r.u8().map_err(m())?;
        if flags & !(FLAG_SIGNED | FLAG_CHANGE) != 0 {
            return Err(Error::invalid("request", "unknown flags"));
        }
        let signature = if flags & FLAG_SIGNED != 0 {
            Some(Signature(r.array().map_err(m())?))
        } else {
            None
        };
        let kind = if flags & FLAG_CHANGE != 0 {
            RequestKind::Change
        } else {
            RequestKind::App
        };
        Ok(Self {
            client,
            id,
            payload,
            signature,
            kind,
        })
    }
}

/// An ordered batch of requests: the content of one block. Its digest is taken over its
/// canonical encoding, which it keeps.
#[derive(Clone, PartialEq, Eq)]
pub struct Batch {
    requests: Vec<Request>,
    bytes: Bytes,
    digest: Digest,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Batch({} requests, {} bytes, {})",
            self.requests.len(),
            self.bytes.len(),
            self.digest.short()
        )
    }
}

fn batch_digest(bytes: &[u8]) -> Digest {
    Digest::of_parts([b"agentmesh/batch/v1".as_slice(), bytes])
}

impl Batch {
    /// Encodes `requests` into a batch.
    pub fn new(requests: Vec<Request>) -> Self {
        let mut bytes =
            Vec::with_capacity(10 + requests.iter().map(Request::encoded_len).sum::<usize>());
        put_varint(&mut bytes, requests.len() as u64);
        for r in &requests {
            r.encode(&mut bytes);
        }
        let digest = batch_digest(&bytes);
        Self {
            requests,
            bytes: bytes.into(),
            digest,
        }
    }

    /// The empty batch (the "null request" a new primary proposes for a gap).
    pub fn empty() -> Self {
        Self::new(Vec::new())
    }

    /// The digest of the empty batch.
    pub fn empty_digest() -> Digest {
        batch_digest(&[0])
    }

    /// Decodes a batch from its canonical encoding.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self> {
        if bytes.len() > limits.max_batch_bytes {
            return Err(Error::invalid(
                "batch",
                format!("{} bytes, at most {}", bytes.len(), limits.max_batch_bytes),
            ));
        }
        // One copy of the whole batch; every payload is a slice of it.
        let shared = Bytes::copy_from_slice(bytes);
        let mut r = Reader::new(&shared);
        let n = r
            .varint_len("batch", limits.max_batch_requests)
            .map_err(Error::malformed("batch"))?;
        let mut requests = Vec::with_capacity(n.min(bytes.len() / 34 + 1));
        for _ in 0..n {
            requests.push(Request::decode_in(&mut r, limits, Some(&shared))?);
        }
        r.finish().map_err(Error::malformed("batch"))?;
        Ok(Self {
            requests,
            digest: batch_digest(&shared),
            bytes: shared,
        })
    }

    /// The requests in order.
    pub fn requests(&self) -> &[Request] {
        &self.requests
    }

    /// The canonical encoding.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The digest votes refer to.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Number of requests.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether the batch holds no request.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }
}

/// The two voting phases of the normal case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Second phase: agreement on the order within a view.
    Prepare,
    /// Third phase: agreement that enough replicas are prepared.
    Commit,
}

impl Phase {
    fn tag(self) -> u8 {
        match self {
            Self::Prepare => 1,
            Self::Commit => 2,
        }
    }

    fn from_tag(tag: u8) -> Result<Self> {
        match tag {
            1 => Ok(Self::Prepare),
            2 => Ok(Self::Commit),
            _ => Err(Error::invalid("vote", "unknown phase")),
        }
    }
}

/// The bytes a replica signs to vote in `phase` for `digest` at `(view, seq)` (with
/// [`BlsScheme`](crate::BlsScheme): Ed25519 for prepare votes, BLS for commit votes).
pub fn vote_bytes(epoch: u64, phase: Phase, view: u64, seq: u64, digest: &Digest) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    out.extend_from_slice(b"agentmesh/consensus-vote/v1");
    out.push(phase.tag());
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&view.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(digest.as_bytes());
    out
}

/// The bytes a replica signs (with BLS) to vouch for the ledger state after `seq`.
pub fn checkpoint_bytes(epoch: u64, seq: u64, state: &Digest) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    out.extend_from_slice(b"agentmesh/consensus-checkpoint/v1");
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(state.as_bytes());
    out
}

/// How a [`Certificate`] shows its signers' votes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signatures {
    /// One aggregate of every signer's vote: commit certificates (BLS with [`BlsScheme`]).
    ///
    /// [`BlsScheme`]: crate::BlsScheme
    Aggregate(VoteSig),
    /// Each signer's vote, in signer order: prepare certificates (Ed25519 with
    /// [`BlsScheme`]; see [`scheme`](crate::scheme) for why).
    ///
    /// [`BlsScheme`]: crate::BlsScheme
    Each(Vec<VoteSig>),
}

/// A quorum certificate: more than two thirds of the weight voted in `phase` for `digest` at
/// `(view, seq)`, shown by the signers' bitmap and their signatures: one aggregate for a
/// commit certificate (the ledger's), one per signer for a prepare certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The phase voted in.
    pub phase: Phase,
    /// The view.
    pub view: u64,
    /// The sequence number (block height).
    pub seq: u64,
    /// The batch digest.
    pub digest: Digest,
    /// Who signed.
    pub signers: SignerBitmap,
    /// Their signatures: [`Signatures::Aggregate`] in the commit phase,
    /// [`Signatures::Each`] in the prepare phase (as encoded and as [`Certificate::verify`]
    /// requires).
    pub signatures: Signatures,
}

/// A stable-checkpoint certificate: a quorum vouches for the ledger state after `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointCert {
    /// The checkpointed height.
    pub seq: u64,
    /// The chain hash after executing `seq`.
    pub state: Digest,
    /// Who signed.
    pub signers: SignerBitmap,
    /// The aggregate signature.
    pub signature: VoteSig,
}

fn put_bitmap(out: &mut Vec<u8>, b: &SignerBitmap) {
    put_len_prefixed(out, &b.to_bytes());
}

fn get_bitmap(r: &mut Reader<'_>, limits: &Limits) -> Result<SignerBitmap> {
    let bytes = r
        .len_prefixed("signer bitmap", 2 + limits.max_validators.div_ceil(8))
        .map_err(Error::malformed("signer bitmap"))?;
    Ok(SignerBitmap::from_bytes(bytes)?)
}

fn get_bls(r: &mut Reader<'_>) -> Result<VoteSig> {
    let bytes: [u8; SIG_LEN] = r.array().map_err(Error::malformed("vote signature"))?;
    Ok(VoteSig(bytes))
}

fn get_digest(r: &mut Reader<'_>) -> Result<Digest> {
    Ok(Digest(r.array().map_err(Error::malformed("digest"))?))
}

fn get_u64(r: &mut Reader<'_>, what: &'static str) -> Result<u64> {
    r.varint().map_err(Error::malformed(what))
}

impl Certificate {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.phase.tag());
        put_varint(out, self.view);
        put_varint(out, self.seq);
        out.extend_from_slice(self.digest.as_bytes());
        put_bitmap(out, &self.signers);
        // The phase says which form follows; the count of `Each` is the bitmap's.
        match &self.signatures {
            Signatures::Aggregate(s) => out.extend_from_slice(&s.0),
            Signatures::Each(sigs) => {
                for s in sigs {
                    out.extend_from_slice(&s.0);
                }
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self> {
        let phase = Phase::from_tag(r.u8().map_err(Error::malformed("certificate"))?)?;
        let view = get_u64(r, "certificate view")?;
        let seq = get_u64(r, "certificate seq")?;
        let digest = get_digest(r)?;
        let signers = get_bitmap(r, limits)?;
        let signatures = match phase {
            Phase::Commit => Signatures::Aggregate(get_bls(r)?),
            Phase::Prepare => {
                // Bounded: the bitmap holds at most `max_validators` bits.
                let count = signers.iter().count();
                let mut sigs = Vec::with_capacity(count);
                for _ in 0..count {
                    sigs.push(get_bls(r)?);
                }
                Signatures::Each(sigs)
            }
        };
        Ok(Self {
            phase,
            view,
            seq,
            digest,
            signers,
            signatures,
        })
    }

    /// Checks the signatures and that the signers hold a quorum of `set`.
    pub fn verify(&self, set: &crate::ValidatorSet, scheme: &dyn Scheme) -> Result<()> {
        if self.signers.len() != set.len() || !set.is_quorum(set.weight_of(&self.signers)) {
            return Err(Error::Verify {
                what: "certificate quorum",
            });
        }
        let signers: Vec<usize> = self.signers.iter().collect();
        let msg = vote_bytes(set.epoch(), self.phase, self.view, self.seq, &self.digest);
        let valid = match (self.phase, &self.signatures) {
            (Phase::Commit, Signatures::Aggregate(s)) => scheme.verify(set, &signers, &msg, s),
            (Phase::Prepare, Signatures::Each(sigs)) => {
                scheme.verify_prepares(set, &signers, &msg, sigs)
            }
            _ => false,
        };
        if valid {
            Ok(())
        } else {
            Err(Error::Verify {
                what: "certificate",
            })
        }
    }
}

impl CheckpointCert {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.seq);
        out.extend_from_slice(self.state.as_bytes());
        put_bitmap(out, &self.signers);
        out.extend_from_slice(&self.signature.0);
    }

    pub(crate) fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self> {
        Ok(Self {
            seq: get_u64(r, "checkpoint seq")?,
            state: get_digest(r)?,
            signers: get_bitmap(r, limits)?,
            signature: get_bls(r)?,
        })
    }

    /// Checks the aggregate signature and quorum against `set`.
    pub fn verify(&self, set: &crate::ValidatorSet, scheme: &dyn Scheme) -> Result<()> {
        if self.signers.len() != set.len() || !set.is_quorum(set.weight_of(&self.signers)) {
            return Err(Error::Verify {
                what: "checkpoint quorum",
            });
        }
        let signers: Vec<usize> = self.signers.iter().collect();
        let msg = checkpoint_bytes(set.epoch(), self.seq, &self.state);
        if scheme.verify(set, &signers, &msg, &self.signature) {
            Ok(())
        } else {
            Err(Error::Verify {
                what: "checkpoint certificate",
            })
        }
    }
}

/// A replica's request to move to `view`, carrying what it knows: its latest stable
/// checkpoint and, for every height above it, the highest-view prepare certificate it holds.
/// Signed with the replica's Ed25519 key so the new primary can forward it as proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewChange {
    /// The view asked for.
    pub view: u64,
    /// The sender's index in the validator set.
    pub replica: u32,
    /// The sender's latest stable checkpoint (`None`: the genesis state, height 0).
    pub checkpoint: Option<CheckpointCert>,
    /// Prepare certificates above the checkpoint, ascending by height, one per height.
    pub prepared: Vec<Certificate>,
    /// Ed25519 signature over everything above.
    pub signature: Signature,
}

impl ViewChange {
    /// The signed bytes: a domain tag, the epoch and the body's encoding.
    pub fn signing_bytes(&self, epoch: u64) -> Vec<u8> {
        let mut out = b"agentmesh/consensus-view-change/v1".to_vec();
        out.extend_from_slice(&epoch.to_le_bytes());
        self.encode_body(&mut out);
        out
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        put_varint(out, self.view);
        put_varint(out, u64::from(self.replica));
        match &self.checkpoint {
            None => out.push(0),
            Some(c) => {
                out.push(1);
                c.encode(out);
            }
        }
        put_varint(out, self.prepared.len() as u64);
        for c in &self.prepared {
            c.encode(out);
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        self.encode_body(out);
        out.extend_from_slice(&self.signature.0);
    }

    fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self> {
        let view = get_u64(r, "view change view")?;
        let replica = u32::try_from(get_u64(r, "view change replica")?)
            .map_err(|_| Error::invalid("view change", "replica index too large"))?;
        let checkpoint = match r.u8().map_err(Error::malformed("view change"))? {
            0 => None,
            1 => Some(CheckpointCert::decode(r, limits)?),
            _ => return Err(Error::invalid("view change", "bad checkpoint flag")),
        };
        let n = r
            .varint_len("prepared certificates", limits.max_prepared)
            .map_err(Error::malformed("view change"))?;
        let mut prepared = Vec::with_capacity(n);
        for _ in 0..n {
            prepared.push(Certificate::decode(r, limits)?);
        }
        let signature = Signature(r.array().map_err(Error::malformed("view change"))?);
        Ok(Self {
            view,
            replica,
            checkpoint,
            prepared,
            signature,
        })
    }

    /// The checkpoint height (0 for genesis).
    pub fn checkpoint_seq(&self) -> u64 {
        self.checkpoint.as_ref().map_or(0, |c| c.seq)
    }
}

/// The new primary's announcement of `view`: a quorum of view changes and the proposals for
/// every height between the highest checkpoint among them and the highest prepared height.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewView {
    /// The view begun.
    pub view: u64,
    /// The view changes it is built from (a quorum by weight, distinct senders).
    pub view_changes: Vec<ViewChange>,
    /// `(height, batch digest)` re-proposed in the new view, ascending and gap-free.
    pub proposals: Vec<(u64, Digest)>,
    /// The new primary's Ed25519 signature.
    pub signature: Signature,
}

impl NewView {
    /// The signed bytes.
    pub fn signing_bytes(&self, epoch: u64) -> Vec<u8> {
        let mut out = b"agentmesh/consensus-new-view/v1".to_vec();
        out.extend_from_slice(&epoch.to_le_bytes());
        self.encode_body(&mut out);
        out
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        put_varint(out, self.view);
        put_varint(out, self.view_changes.len() as u64);
        for vc in &self.view_changes {
            vc.encode(out);
        }
        put_varint(out, self.proposals.len() as u64);
        for (seq, d) in &self.proposals {
            put_varint(out, *seq);
            out.extend_from_slice(d.as_bytes());
        }
    }

    fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self> {
        let view = get_u64(r, "new view view")?;
        let n = r
            .varint_len("view changes", limits.max_validators)
            .map_err(Error::malformed("new view"))?;
        let mut view_changes = Vec::with_capacity(n);
        for _ in 0..n {
            view_changes.push(ViewChange::decode(r, limits)?);
        }
        let n = r
            .varint_len("proposals", limits.max_prepared)
            .map_err(Error::malformed("new view"))?;
        let mut proposals = Vec::with_capacity(n);
        for _ in 0..n {
            proposals.push((get_u64(r, "proposal seq")?, get_digest(r)?));
        }
        let signature = Signature(r.array().map_err(Error::malformed("new view"))?);
        Ok(Self {
            view,
            view_changes,
            proposals,
            signature,
        })
    }
}

/// A committed block as the ledger keeps it: the batch, the hash of the previous block and
/// the commit certificate that made it final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedBlock {
    /// Hash of the block at `seq - 1` (for height 1: the genesis hash).
    pub prev: Digest,
    /// The batch.
    pub batch: Arc<Batch>,
    /// The commit certificate (its `seq` is the height, its digest the batch digest).
    pub cert: Certificate,
}

impl CommittedBlock {
    /// A block of `batch` under `cert`; refuses a certificate that is not a commit
    /// certificate for this batch.
    pub fn new(prev: Digest, cert: Certificate, batch: Arc<Batch>) -> Result<Self> {
        if cert.phase != Phase::Commit || batch.digest() != cert.digest {
            return Err(Error::invalid(
                "block",
                "certificate is not a commit certificate for this batch",
            ));
        }
        Ok(Self { prev, batch, cert })
    }

    /// The height.
    pub fn seq(&self) -> u64 {
        self.cert.seq
    }

    /// This block's hash: what the next block's `prev` names.
    pub fn hash(&self) -> Digest {
        chain_hash(&self.prev, self.cert.seq, &self.cert.digest)
    }

    /// The canonical encoding (as stored in the ledger and sent in state transfer).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.prev.as_bytes());
        self.cert.encode(out);
        put_len_prefixed(out, self.batch.bytes());
    }

    /// Decodes one block; checks that the batch matches the certificate's digest.
    pub fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self> {
        let prev = get_digest(r)?;
        let cert = Certificate::decode(r, limits)?;
        let bytes = r
            .len_prefixed("block batch", limits.max_batch_bytes)
            .map_err(Error::malformed("block"))?;
        let batch = Batch::decode(bytes, limits)?;
        Self::new(prev, cert, Arc::new(batch))
    }

    /// Decodes a whole buffer holding one block.
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let b = Self::decode(&mut r, limits)?;
        r.finish().map_err(Error::malformed("block"))?;
        Ok(b)
    }

    /// The encoding as one buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.batch.bytes().len() + 256);
        self.encode(&mut out);
        out
    }
}

/// The hash chaining block `seq` (with batch `digest`) to its predecessor `prev`.
pub fn chain_hash(prev: &Digest, seq: u64, digest: &Digest) -> Digest {
    Digest::of_parts([
        b"agentmesh/block/v1".as_slice(),
        prev.as_bytes(),
        &seq.to_le_bytes(),
        digest.as_bytes(),
    ])
}

/// Everything replicas say to each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Requests a replica received, forwarded to the primary.
    Forward(Vec<Request>),
    /// The primary's proposal of `batch` at `(view, seq)`, with its own prepare vote.
    PrePrepare {
        /// The view.
        view: u64,
        /// The height.
        seq: u64,
        /// The proposed batch.
        batch: Arc<Batch>,
        /// The primary's prepare vote ([`Scheme::sign_prepare`]).
        vote: VoteSig,
    },
    /// A prepare or commit vote.
    Vote {
        /// The phase.
        phase: Phase,
        /// The view.
        view: u64,
        /// The height.
        seq: u64,
        /// The batch digest voted for.
        digest: Digest,
        /// The voter's signature over [`vote_bytes`]: [`Scheme::sign_prepare`] in the prepare
        /// phase, [`Scheme::sign`] in the commit phase.
        signature: VoteSig,
    },
    /// A checkpoint vote for the state after `seq`.
    Checkpoint {
        /// The height.
        seq: u64,
        /// The chain hash after it.
        state: Digest,
        /// BLS signature over [`checkpoint_bytes`].
        signature: VoteSig,
    },
    /// A view-change request.
    ViewChange(ViewChange),
    /// A new primary's new-view proof.
    NewView(NewView),
    /// Asks for the batch with this digest.
    FetchBatch(Digest),
    /// A batch sent in answer to [`Message::FetchBatch`].
    Batch(Arc<Batch>),
    /// Asks for committed blocks from this height on (state transfer).
    FetchBlocks {
        /// First height wanted.
        from: u64,
    },
    /// Committed blocks, ascending and consecutive, in answer to [`Message::FetchBlocks`].
    Blocks(Vec<CommittedBlock>),
    /// Asks a replica for the proof of the view it is in.
    QueryView,
    /// A stalled replica's periodic note of where it is, so peers that lag behind it can
    /// ask it for blocks or for the proof of its view.
    Status {
        /// The sender's view.
        view: u64,
        /// Whether it is changing to that view.
        changing: bool,
        /// The height it has executed.
        executed: u64,
    },
}

mod tag {
    pub(super) const FORWARD: u8 = 1;
    pub(super) const PRE_PREPARE: u8 = 2;
    pub(super) const VOTE: u8 = 3;
    pub(super) const CHECKPOINT: u8 = 4;
    pub(super) const VIEW_CHANGE: u8 = 5;
    pub(super) const NEW_VIEW: u8 = 6;
    pub(super) const FETCH_BATCH: u8 = 7;
    pub(super) const BATCH: u8 = 8;
    pub(super) const FETCH_BLOCKS: u8 = 9;
    pub(super) const BLOCKS: u8 = 10;
    pub(super) const QUERY_VIEW: u8 = 11;
    pub(super) const STATUS: u8 = 12;
}

impl Message {
    /// A short name for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Forward(_) => "forward",
            Self::PrePrepare { .. } => "pre-prepare",
            Self::Vote {
                phase: Phase::Prepare,
                ..
            } => "prepare",
            Self::Vote {
                phase: Phase::Commit,
                ..
            } => "commit",
            Self::Checkpoint { .. } => "checkpoint",
            Self::ViewChange(_) => "view-change",
            Self::NewView(_) => "new-view",
            Self::FetchBatch(_) => "fetch-batch",
            Self::Batch(_) => "batch",
            Self::FetchBlocks { .. } => "fetch-blocks",
            Self::Blocks(_) => "blocks",
            Self::QueryView => "query-view",
            Self::Status { .. } => "status",
        }
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(match self {
            Self::PrePrepare { batch, .. } | Self::Batch(batch) => batch.bytes().len() + 128,
            _ => 256,
        });
        match self {
            Self::Forward(reqs) => {
                out.push(tag::FORWARD);
                put_varint(&mut out, reqs.len() as u64);
                for r in reqs {
                    r.encode(&mut out);
                }
            }
            Self::PrePrepare {
                view,
                seq,
                batch,
                vote,
            } => {
                out.push(tag::PRE_PREPARE);
                put_varint(&mut out, *view);
                put_varint(&mut out, *seq);
                out.extend_from_slice(&vote.0);
                put_len_prefixed(&mut out, batch.bytes());
            }
            Self::Vote {
                phase,
                view,
                seq,
                digest,
                signature,
            } => {
                out.push(tag::VOTE);
                out.push(phase.tag());
                put_varint(&mut out, *view);
                put_varint(&mut out, *seq);
                out.extend_from_slice(digest.as_bytes());
                out.extend_from_slice(&signature.0);
            }
            Self::Checkpoint {
                seq,
                state,
                signature,
            } => {
                out.push(tag::CHECKPOINT);
                put_varint(&mut out, *seq);
                out.extend_from_slice(state.as_bytes());
                out.extend_from_slice(&signature.0);
            }
            Self::ViewChange(vc) => {
                out.push(tag::VIEW_CHANGE);
                vc.encode(&mut out);
            }
            Self::NewView(nv) => {
                out.push(tag::NEW_VIEW);
                nv.encode_body(&mut out);
                out.extend_from_slice(&nv.signature.0);
            }
            Self::FetchBatch(d) => {
                out.push(tag::FETCH_BATCH);
                out.extend_from_slice(d.as_bytes());
            }
            Self::Batch(b) => {
                out.push(tag::BATCH);
                put_len_prefixed(&mut out, b.bytes());
            }
            Self::FetchBlocks { from } => {
                out.push(tag::FETCH_BLOCKS);
                put_varint(&mut out, *from);
            }
            Self::Blocks(blocks) => {
                out.push(tag::BLOCKS);
                put_varint(&mut out, blocks.len() as u64);
                for b in blocks {
                    b.encode(&mut out);
                }
            }
            Self::QueryView => out.push(tag::QUERY_VIEW),
            Self::Status {
                view,
                changing,
                executed,
            } => {
                out.push(tag::STATUS);
                put_varint(&mut out, *view);
                out.push(u8::from(*changing));
                put_varint(&mut out, *executed);
            }
        }
        out
    }

    /// Decodes one message; rejects unknown tags, oversized fields and trailing bytes.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let m = |what| Error::malformed(what);
        let msg = match r.u8().map_err(m("message"))? {
            tag::FORWARD => {
                let n = r
                    .varint_len("forwarded requests", limits.max_forward)
                    .map_err(m("forward"))?;
                let mut reqs = Vec::with_capacity(n.min(bytes.len() / 34 + 1));
                for _ in 0..n {
                    reqs.push(Request::decode(&mut r, limits)?);
                }
                Self::Forward(reqs)
            }
            tag::PRE_PREPARE => {
                let view = get_u64(&mut r, "pre-prepare view")?;
                let seq = get_u64(&mut r, "pre-prepare seq")?;
                let vote = get_bls(&mut r)?;
                let batch = r
                    .len_prefixed("batch", limits.max_batch_bytes)
                    .map_err(m("pre-prepare"))?;
                Self::PrePrepare {
                    view,
                    seq,
                    batch: Arc::new(Batch::decode(batch, limits)?),
                    vote,
                }
            }
            tag::VOTE => {
                let phase = Phase::from_tag(r.u8().map_err(m("vote"))?)?;
                Self::Vote {
                    phase,
                    view: get_u64(&mut r, "vote view")?,
                    seq: get_u64(&mut r, "vote seq")?,
                    digest: get_digest(&mut r)?,
                    signature: get_bls(&mut r)?,
                }
            }
            tag::CHECKPOINT => Self::Checkpoint {
                seq: get_u64(&mut r, "checkpoint seq")?,
                state: get_digest(&mut r)?,
                signature: get_bls(&mut r)?,
            },
            tag::VIEW_CHANGE => Self::ViewChange(ViewChange::decode(&mut r, limits)?),
            tag::NEW_VIEW => Self::NewView(NewView::decode(&mut r, limits)?),
            tag::FETCH_BATCH => Self::FetchBatch(get_digest(&mut r)?),
            tag::BATCH => {
                let bytes = r
                    .len_prefixed("batch", limits.max_batch_bytes)
                    .map_err(m("batch"))?;
                Self::Batch(Arc::new(Batch::decode(bytes, limits)?))
            }
            tag::FETCH_BLOCKS => Self::FetchBlocks {
                from: get_u64(&mut r, "fetch from")?,
            },
            tag::BLOCKS => {
                let n = r
                    .varint_len("blocks", limits.max_blocks)
                    .map_err(m("blocks"))?;
                let mut blocks = Vec::with_capacity(n);
                for _ in 0..n {
                    blocks.push(CommittedBlock::decode(&mut r, limits)?);
                }
                Self::Blocks(blocks)
            }
            tag::QUERY_VIEW => Self::QueryView,
            tag::STATUS => Self::Status {
                view: get_u64(&mut r, "status view")?,
                changing: match r.u8().map_err(m("status"))? {
                    0 => false,
                    1 => true,
                    _ => return Err(Error::invalid("status", "bad flag")),
                },
                executed: get_u64(&mut r, "status executed")?,
            },
            other => {
                return Err(Error::invalid("message", format!("unknown tag {other}")));
            }
        };
        r.finish().map_err(m("message"))?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_messages() -> Vec<Message> {
        let key = ed25519::SigningKey::from_seed(&[3; 32]);
        let sig = VoteSig([9; SIG_LEN]);
        let batch = Arc::new(Batch::new(vec![
            Request::new(NodeId([1; 32]), 7, b"hello".to_vec()),
            Request::signed(&key, 8, vec![0; 512]),
        ]));
        let mut signers = SignerBitmap::new(4).unwrap();
        signers.set(0).unwrap();
        signers.set(2).unwrap();
        let cert = Certificate {
            phase: Phase::Commit,
            view: 1,
            seq: 5,
            digest: batch.digest(),
            signers: signers.clone(),
            signatures: Signatures::Aggregate(sig),
        };
        let vc = ViewChange {
            view: 2,
            replica: 3,
            checkpoint: Some(CheckpointCert {
                seq: 4,
                state: Digest([5; 32]),
                signers,
                signature: sig,
            }),
            prepared: vec![Certificate {
                phase: Phase::Prepare,
                signatures: Signatures::Each(vec![sig, VoteSig([10; SIG_LEN])]),
                ..cert.clone()
            }],
            signature: Signature([7; 64]),
        };
        vec![
            Message::Forward(batch.requests().to_vec()),
            Message::PrePrepare {
                view: 1,
                seq: 5,
                batch: batch.clone(),
                vote: sig,
            },
            Message::Vote {
                phase: Phase::Prepare,
                view: 300,
                seq: 1 << 40,
                digest: Digest([2; 32]),
                signature: sig,
            },
            Message::Checkpoint {
                seq: 64,
                state: Digest([4; 32]),
                signature: sig,
            },
            Message::ViewChange(vc.clone()),
            Message::NewView(NewView {
                view: 2,
                view_changes: vec![vc],
                proposals: vec![(5, batch.digest()), (6, Batch::empty_digest())],
                signature: Signature([8; 64]),
            }),
            Message::FetchBatch(Digest([6; 32])),
            Message::Batch(batch.clone()),
            Message::FetchBlocks { from: 17 },
            Message::Blocks(vec![CommittedBlock {
                prev: Digest([1; 32]),
                batch,
                cert,
            }]),
            Message::QueryView,
            Message::Status {
                view: 3,
                changing: true,
                executed: 99,
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        let limits = Limits::default();
        for msg in sample_messages() {
            let bytes = msg.encode();
            assert_eq!(
                Message::decode(&bytes, &limits).unwrap(),
                msg,
                "{}",
                msg.name()
            );
        }
    }

    #[test]
    fn truncations_and_trailing_bytes_are_errors() {
        let limits = Limits::default();
        for msg in sample_messages() {
            let bytes = msg.encode();
            for cut in 0..bytes.len() {
                assert!(
                    Message::decode(&bytes[..cut], &limits).is_err(),
                    "{} cut {cut}",
                    msg.name()
                );
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(Message::decode(&long, &limits).is_err());
        }
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_request_bytes: 4,
            ..Limits::default()
        };
        let msg = Message::Forward(vec![Request::new(NodeId([1; 32]), 1, vec![0; 5])]);
        assert!(Message::decode(&msg.encode(), &limits).is_err());
        assert_eq!(Batch::empty().digest(), Batch::empty_digest());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::decode(&bytes, &Limits::default());
        }

        #[test]
        fn mutated_messages_never_panic(index in 0usize..12, pos in any::<usize>(), byte in any::<u8>()) {
            let msgs = sample_messages();
            let mut bytes = msgs[index % msgs.len()].encode();
            let p = pos % bytes.len();
            bytes[p] = byte;
            if let Ok(m) = Message::decode(&bytes, &Limits::default()) {
                // Anything accepted is canonical.
                prop_assert_eq!(m.encode(), bytes);
            }
        }
    }
}
