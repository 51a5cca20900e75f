//! Secure aggregation: the aggregator learns the sum of the clients' updates and nothing else,
//! even when some clients drop out mid-round.
//!
//! This is the protocol of Bonawitz et al., "Practical Secure Aggregation for
//! Privacy-Preserving Machine Learning" (CCS 2017), with double masking, in its
//! honest-but-curious form (no consistency-check round), as two sans-IO state machines: a
//! [`Client`] per participant and one [`Server`] (the aggregator), exchanging the typed
//! [`Message`]s of [`wire`].
//!
//! # The rounds
//!
//! 0. **Advertise keys.** Each client derives from its caller-given seed two X25519 key pairs
//!    (one for the channel to the other clients, one for agreeing pairwise masks) and a
//!    self-mask seed `b_i`; it sends both public keys and a commitment to `b_i`
//!    ([`Client::advertise`]). The server collects them (set `U1`) and sends everybody the
//!    [`KeyList`].
//! 1. **Share keys.** Each client splits its mask secret key and `b_i` into `t`-of-`|U1|`
//!    Shamir shares ([`shamir`], GF(2^8)), and seals each other client's pair of shares with
//!    ChaCha20-Poly1305 under a key derived (HKDF-SHA256) from their channel agreement
//!    ([`ShareKeys`]). The server (which cannot read them) keeps the senders (`U2`) and routes
//!    to each client the ciphertexts addressed to it ([`RoutedShares`]).
//! 2. **Masked input.** Each client sends `y_i = x_i + PRG(b_i) + sum_{j in U2, j != i} ±
//!    PRG(s_ij)` modulo 2^32, with `+` when `i < j` and `-` otherwise, where `s_ij` is agreed
//!    from the mask keys and `x_i` is the encoded update ([`MaskedInput`]). The pairwise masks
//!    cancel in the sum over any set of clients that contains both ends of every pair.
//! 3. **Unmasking.** The server names the survivors `U3` (whose inputs it holds) and the
//!    dropped `U2 \ U3` ([`UnmaskRequest`]). Each survivor returns its shares of `b_j` for the
//!    survivors and of the mask secret key for the dropped ([`UnmaskShares`]), refusing any
//!    request that would reveal both for one client, now or together with an earlier answer.
//!    With `t` answers the server reconstructs, checks every secret against what its owner
//!    advertised (the mask key against its public key, `b_j` against its commitment),
//!    removes the self-masks of the survivors and the dropped clients' pairwise masks with the
//!    survivors, and obtains the exact sum ([`Sum`]).
//!
//! # Encoding and bounds
//!
//! Updates are clipped coordinate-wise to `[-clip, clip]` and encoded in fixed point as
//! two's-complement integers modulo 2^32: a coordinate becomes `round(x * s)` with
//! `s = floor((2^31 - 1) / n) / clip`, where `n` is the session's number of clients, so every
//! encoded value is at most `(2^31 - 1) / n` in magnitude and the sum of all `n` cannot wrap:
//! the integer sum is exact, and [`Sum::values`] decodes it as `sum / s`. The resolution per
//! client is `clip / floor((2^31 - 1) / n)` (for `n = 10` and `clip = 1`, about 4.7e-9).
//! NaN and infinities are refused before encoding ([`Error::NonFinite`]): a masked input can
//! carry neither, so the server never sees one. At most 255 clients per session (ids 0 to
//! 254 are the Shamir points 1 to 255); `threshold` must exceed half the clients, so that no
//! server can collect `threshold` answers of each kind for one client from clients that each
//! reveal only one kind.
//!
//! # Randomness and keys
//!
//! Every secret comes from the caller's 32-byte seed per client and session, through BLAKE3's
//! key derivation with the round, the model id and the client id as context: a seed reused
//! across rounds still gives fresh keys, but a seed must never be reused for the same round
//! and model. The PRG is BLAKE3's keyed extendable output (`PRG(k)` is the XOF of
//! `"agentmesh/secagg/prg/v1"` keyed with `k`, read as little-endian `u32`s). The pairwise
//! seed `s_ij` is HKDF-SHA256 of the mask keys' X25519 agreement with the session and both
//! ids as info; each direction of each channel has its own HKDF key sealing exactly one
//! message (nonce 0), with the session and both ids as associated data.
//!
//! # Driving it
//!
//! Client: [`Client::new`] with the update, send [`Client::advertise`], then feed every
//! message from the server to [`Client::handle`] and send what it returns. Server:
//! [`Server::new`], feed every client message to [`Server::handle`] (rejections are counted by
//! reason in [`Server::rejections`]); when every expected client has answered, or the
//! caller's timeout for the phase expires, call [`Server::close`] and deliver the returned
//! messages to their recipients; in the unmasking phase call [`Server::finish`] instead. A
//! phase closed with fewer than `threshold` clients is an [`Error::TooFewClients`] and leaves
//! the server waiting.
//!
//! Senders must be authenticated: either by the transport ([`Server::new`]), or by Ed25519
//! signatures on every client message ([`encode_signed`]; [`Server::with_signatures`] checks
//! each against its sender's key and counts failures, and forwards each client's signature of
//! its advertised keys in the key list). Clients built [`with_peer_keys`](Client::with_peer_keys)
//! check those signatures, so a server cannot substitute a client's keys to read the shares
//! sealed to it. The paper's other active-security step, a signed consistency check of the
//! survivor set before unmasking, is not implemented: each client's refusal to reveal both
//! secrets of one peer, with a threshold above half the session, is what stands against a
//! server naming different survivors to different clients.

pub mod shamir;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};

use mesh_crypto::aead::{AeadKey, nonce_from_counter};
use mesh_crypto::ed25519::{Signature, VerifyingKey};
use mesh_crypto::kdf::hkdf_sha256;
use mesh_crypto::x25519::{X25519Public, X25519Secret};
use zeroize::Zeroizing;

pub use shamir::Share;
pub use wire::{
    AdvertiseKeys, CIPHERTEXT_LEN, ClientId, Header, KeyList, MAX_CLIENT_ID, MAX_DIM, MaskedInput,
    Message, PublicKeys, RoutedShares, ShareKeys, UnmaskRequest, UnmaskShares, WireError,
    encode_signed,
};

/// The most clients in one session.
pub const MAX_CLIENTS: usize = MAX_CLIENT_ID as usize + 1;

const PRG_DOMAIN: &[u8] = b"agentmesh/secagg/prg/v1";
const CHANNEL_SALT: &[u8] = b"agentmesh/secagg/channel/v1";
const PAIR_SALT: &[u8] = b"agentmesh/secagg/pair-mask/v1";
const SHARES_AAD: &[u8] = b"agentmesh/secagg/shares/v1";
const COMMIT_CONTEXT: &str = "agentmesh 2026 secagg v1 self-mask commitment";
const CHANNEL_KEY_CONTEXT: &str = "agentmesh 2026 secagg v1 channel key";
const MASK_KEY_CONTEXT: &str = "agentmesh 2026 secagg v1 mask key";
const SELF_MASK_CONTEXT: &str = "agentmesh 2026 secagg v1 self-mask seed";
const SHAMIR_CONTEXT: &str = "agentmesh 2026 secagg v1 shamir coefficients";

/// Why a secure-aggregation step failed or a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a message.
    #[error("malformed message: {0}")]
    Wire(#[from] WireError),
    /// The session settings are unusable.
    #[error("invalid secure-aggregation settings: {detail}")]
    Config {
        /// What is wrong.
        detail: String,
    },
    /// A message of another round.
    #[error("message of round {found}, expected round {expected}")]
    WrongRound {
        /// This session's round.
        expected: u64,
        /// The message's.
        found: u64,
    },
    /// A message for another base model (model version).
    #[error("message for another base model")]
    WrongModel,
    /// A message that does not belong to the current phase.
    #[error("{kind} message during the {phase:?} phase")]
    OutOfPhase {
        /// The message's kind.
        kind: &'static str,
        /// The receiver's phase.
        phase: Phase,
    },
    /// A second message of one kind from one client.
    #[error("second {kind} message from client {sender}")]
    Duplicate {
        /// The message's kind.
        kind: &'static str,
        /// The client.
        sender: ClientId,
    },
    /// A sender that is not (or no longer) a member of the session at this step.
    #[error("{kind} message from client {sender}, unknown at this step")]
    UnknownSender {
        /// The message's kind.
        kind: &'static str,
        /// The claimed sender.
        sender: ClientId,
    },
    /// An update of the wrong length.
    #[error("update of {found} values, expected {expected}")]
    WrongShape {
        /// The session's dimension.
        expected: usize,
        /// The update's.
        found: u64,
    },
    /// An update with a NaN or an infinity.
    #[error("non-finite update value at index {index}")]
    NonFinite {
        /// The first such coordinate.
        index: usize,
    },
    /// A well-formed message whose contents do not fit the session (missing or extra ids,
    /// another client's keys, a recipient that is not the receiver).
    #[error("{kind} message: {detail}")]
    BadContents {
        /// The message's kind.
        kind: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A message to a server that checks signatures, unsigned or with a signature that is not
    /// its sender's.
    #[error("bad or missing signature on a {kind} message from client {sender}")]
    BadSignature {
        /// The message's kind.
        kind: &'static str,
        /// The claimed sender.
        sender: ClientId,
    },
    /// A public key of small order (its agreements would be predictable).
    #[error("client {client} advertised an invalid {which} key")]
    InvalidKey {
        /// The client.
        client: ClientId,
        /// Which key.
        which: &'static str,
    },
    /// A phase ended with fewer clients than the threshold.
    #[error("{phase:?} phase: {have} clients, at least {need} needed")]
    TooFewClients {
        /// The phase.
        phase: Phase,
        /// Clients that took part.
        have: usize,
        /// The threshold.
        need: usize,
    },
    /// An unmask request (alone or with an earlier one) asks for both the self-mask share and
    /// the mask-key share of one client, which would unmask its input.
    #[error("refused: the unmask request would reveal both secrets of client {peer}")]
    BothSharesRequested {
        /// The client whose input would be exposed.
        peer: ClientId,
    },
    /// A sealed pair of shares did not open.
    #[error("the shares from client {from} do not decrypt")]
    Decrypt {
        /// Their sender.
        from: ClientId,
    },
    /// Reconstructed shares do not give what their owner advertised.
    #[error("the shares of client {client}'s {what} do not reconstruct the advertised value")]
    Reconstruction {
        /// The owner.
        client: ClientId,
        /// Which secret.
        what: &'static str,
    },
    /// Secret sharing was asked something impossible.
    #[error("secret sharing: {detail}")]
    Shamir {
        /// What.
        detail: String,
    },
    /// A cryptographic primitive failed.
    #[error("crypto: {0}")]
    Crypto(#[from] mesh_crypto::Error),
}

/// The reasons the server counts rejected messages under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Not a decodable message.
    Malformed,
    /// Another round.
    WrongRound,
    /// Another base model.
    WrongModel,
    /// Not expected in the current phase (or never sent to a server).
    OutOfPhase,
    /// A second message of one kind from one client.
    Duplicate,
    /// A sender unknown at this step.
    UnknownSender,
    /// An update of the wrong length.
    WrongShape,
    /// Contents that do not fit the session, or invalid keys.
    BadContents,
    /// A missing or invalid signature.
    BadSignature,
}

impl Error {
    /// Under which reason a server counts this refusal, if it is about a received message.
    pub fn reason(&self) -> Option<Reason> {
        Some(match self {
            Self::Wire(_) => Reason::Malformed,
            Self::WrongRound { .. } => Reason::WrongRound,
            Self::WrongModel => Reason::WrongModel,
            Self::OutOfPhase { .. } => Reason::OutOfPhase,
            Self::Duplicate { .. } => Reason::Duplicate,
            Self::UnknownSender { .. } => Reason::UnknownSender,
            Self::WrongShape { .. } => Reason::WrongShape,
            Self::BadContents { .. } | Self::InvalidKey { .. } => Reason::BadContents,
            Self::BadSignature { .. } => Reason::BadSignature,
            _ => return None,
        })
    }
}

/// Rejected messages by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejections {
    /// Undecodable bytes.
    pub malformed: u64,
    /// Another round.
    pub wrong_round: u64,
    /// Another base model.
    pub wrong_model: u64,
    /// Not expected in the phase.
    pub out_of_phase: u64,
    /// Repeated.
    pub duplicate: u64,
    /// From a client unknown at that step.
    pub unknown_sender: u64,
    /// Updates of the wrong length.
    pub wrong_shape: u64,
    /// Contents not fitting the session, invalid keys.
    pub bad_contents: u64,
    /// Missing or invalid signatures.
    pub bad_signature: u64,
}

impl Rejections {
    /// Counts one rejection.
    pub fn count(&mut self, reason: Reason) {
        let field = match reason {
            Reason::Malformed => &mut self.malformed,
            Reason::WrongRound => &mut self.wrong_round,
            Reason::WrongModel => &mut self.wrong_model,
            Reason::OutOfPhase => &mut self.out_of_phase,
            Reason::Duplicate => &mut self.duplicate,
            Reason::UnknownSender => &mut self.unknown_sender,
            Reason::WrongShape => &mut self.wrong_shape,
            Reason::BadContents => &mut self.bad_contents,
            Reason::BadSignature => &mut self.bad_signature,
        };
        *field += 1;
    }

    /// All rejections.
    pub fn total(&self) -> u64 {
        self.malformed
            + self.wrong_round
            + self.wrong_model
            + self.out_of_phase
            + self.duplicate
            + self.unknown_sender
            + self.wrong_shape
            + self.bad_contents
            + self.bad_signature
    }
}

/// The phases of a session: what the server collects, or which message a client sent last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Public keys ([`AdvertiseKeys`], answered by a [`KeyList`]).
    AdvertiseKeys,
    /// Encrypted shares ([`ShareKeys`], answered by [`RoutedShares`]).
    ShareKeys,
    /// Masked inputs ([`MaskedInput`], answered by an [`UnmaskRequest`]).
    MaskedInput,
    /// Shares for unmasking ([`UnmaskShares`]).
    Unmask,
    /// The sum was computed (server) or the request answered (client).
    Done,
}

/// The settings every participant of one session shares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// The training round.
    pub round: u64,
    /// The id of the global model the updates start from.
    pub model: [u8; 32],
    /// Clients in the session (ids `0..clients`; at most [`MAX_CLIENTS`]).
    pub clients: usize,
    /// Shares needed to reconstruct a secret; more than half of `clients`, at most `clients`.
    /// Up to `clients - threshold` clients may drop out after sharing keys.
    pub threshold: usize,
    /// Coordinates per update (at most [`MAX_DIM`]).
    pub dim: usize,
    /// The clipping bound: each coordinate is clamped to `[-clip, clip]` before encoding.
    pub clip: f32,
}

impl Config {
    /// Checks the settings.
    pub fn check(&self) -> Result<(), Error> {
        let bad = |detail: String| Err(Error::Config { detail });
        if !(2..=MAX_CLIENTS).contains(&self.clients) {
            return bad(format!(
                "{} clients (2 to {MAX_CLIENTS} allowed)",
                self.clients
            ));
        }
        if self.threshold > self.clients || 2 * self.threshold <= self.clients {
            return bad(format!(
                "threshold {} for {} clients (must exceed half of them)",
                self.threshold, self.clients
            ));
        }
        if !(1..=MAX_DIM).contains(&self.dim) {
            return bad(format!("dimension {} (1 to {MAX_DIM} allowed)", self.dim));
        }
        if !(self.clip > 0.0 && self.clip.is_finite()) {
            return bad(format!("clip {}", self.clip));
        }
        Ok(())
    }

    /// The messages' header.
    pub fn header(&self) -> Header {
        Header {
            round: self.round,
            model: self.model,
        }
    }

    /// The largest encoded magnitude of one coordinate: `floor((2^31 - 1) / clients)`.
    pub fn max_level(&self) -> i64 {
        i64::from(i32::MAX) / self.clients.max(1) as i64
    }

    /// The fixed-point scale: encoded units per unit of value.
    pub fn scale(&self) -> f64 {
        self.max_level() as f64 / f64::from(self.clip)
    }

    /// Clips and encodes an update (`dim` finite values) as integers modulo 2^32.
    pub fn encode(&self, update: &[f32]) -> Result<Vec<u32>, Error> {
        self.check()?;
        if update.len() != self.dim {
            return Err(Error::WrongShape {
                expected: self.dim,
                found: update.len() as u64,
            });
        }
        if let Some(index) = update.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { index });
        }
        let (scale, max, clip) = (self.scale(), self.max_level() as f64, self.clip);
        Ok(update
            .iter()
            .map(|&v| {
                let q = (f64::from(v.clamp(-clip, clip)) * scale)
                    .round()
                    .clamp(-max, max);
                // In range of i32 by the clamp; two's complement modulo 2^32.
                (q as i32) as u32
            })
            .collect())
    }

    /// Decodes a sum of encoded updates back to values.
    pub fn decode(&self, sum: &[i32]) -> Vec<f32> {
        let scale = self.scale();
        sum.iter().map(|&s| (f64::from(s) / scale) as f32).collect()
    }

    fn context(&self, id: ClientId) -> [u8; 41] {
        let mut c = [0u8; 41];
        c[..8].copy_from_slice(&self.round.to_le_bytes());
        c[8..40].copy_from_slice(&self.model);
        c[40] = id;
        c
    }

    fn check_header(&self, h: &Header) -> Result<(), Error> {
        if h.round != self.round {
            return Err(Error::WrongRound {
                expected: self.round,
                found: h.round,
            });
        }
        if h.model != self.model {
            return Err(Error::WrongModel);
        }
        Ok(())
    }
}

/// The result of a session: the exact sum of the survivors' encoded updates and its decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Sum {
    /// Clients whose updates are in the sum.
    pub survivors: Vec<ClientId>,
    /// Clients that shared keys but whose updates are not in the sum.
    pub dropped: Vec<ClientId>,
    /// The sum of the encoded updates (exact: it cannot wrap).
    pub integers: Vec<i32>,
    /// The sum decoded (`integers / scale`).
    pub values: Vec<f32>,
}

fn derive(context: &str, seed: &[u8; 32], config: &Config, id: ClientId) -> Zeroizing<[u8; 32]> {
    let mut h = blake3::Hasher::new_derive_key(context);
    h.update(seed);
    h.update(&config.context(id));
    Zeroizing::new(*h.finalize().as_bytes())
}

fn commitment(config: &Config, id: ClientId, self_mask: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(COMMIT_CONTEXT);
    h.update(&config.context(id));
    h.update(self_mask);
    *h.finalize().as_bytes()
}

/// The key sealing shares from `from` to `to`.
fn channel_key(
    config: &Config,
    shared: &[u8; 32],
    from: ClientId,
    to: ClientId,
) -> Result<AeadKey, Error> {
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf_sha256(
        CHANNEL_SALT,
        shared,
        &[&config.round.to_le_bytes(), &config.model, &[from, to]],
        &mut key[..],
    )?;
    Ok(AeadKey::new(&key))
}

fn shares_aad(config: &Config, from: ClientId, to: ClientId) -> Vec<u8> {
    let mut aad = SHARES_AAD.to_vec();
    aad.extend_from_slice(&config.round.to_le_bytes());
    aad.extend_from_slice(&config.model);
    aad.extend_from_slice(&[from, to]);
    aad
}

/// The pairwise mask seed of clients `a` and `b` from their mask-key agreement.
fn pair_seed(
    config: &Config,
    shared: &[u8; 32],
    a: ClientId,
    b: ClientId,
) -> Result<Zeroizing<[u8; 32]>, Error> {
    let mut seed = Zeroizing::new([0u8; 32]);
    hkdf_sha256(
        PAIR_SALT,
        shared,
        &[
            &config.round.to_le_bytes(),
            &config.model,
            &[a.min(b), a.max(b)],
        ],
        &mut seed[..],
    )?;
    Ok(seed)
}

/// Adds (or subtracts) `PRG(seed)` to `out`, modulo 2^32.
pub fn apply_mask(seed: &[u8; 32], out: &mut [u32], subtract: bool) {
    let mut h = blake3::Hasher::new_keyed(seed);
    h.update(PRG_DOMAIN);
    let mut xof = h.finalize_xof();
    let mut buf = [0u8; 16 * 1024];
    for chunk in out.chunks_mut(buf.len() / 4) {
        let bytes = &mut buf[..chunk.len() * 4];
        xof.fill(bytes);
        for (o, b) in chunk.iter_mut().zip(bytes.chunks_exact(4)) {
            let m = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            *o = if subtract {
                o.wrapping_sub(m)
            } else {
                o.wrapping_add(m)
            };
        }
    }
}

fn x25519_public(bytes: &[u8; 32]) -> X25519Public {
    X25519Public(*bytes)
}

/// Whether an X25519 public key is of small order: its product with any clamped scalar (a
/// multiple of the cofactor) is the identity.
fn is_low_order(key: &[u8; 32]) -> bool {
    X25519Secret::from_bytes([0x5a; 32])
        .diffie_hellman(&x25519_public(key))
        .is_err()
}

/// What a client learned about one other client of the session.
#[derive(Debug)]
struct Peer {
    /// Seals our shares for it.
    to: AeadKey,
    /// Opens its shares for us.
    from: AeadKey,
    /// The pairwise mask seed.
    seed: Zeroizing<[u8; 32]>,
}

/// Which secret of a client this client has revealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revealed {
    SelfMask,
    MaskKey,
}

/// The shares of one client's two secrets held by another.
#[derive(Clone)]
struct Held {
    mask_key: Zeroizing<[u8; 32]>,
    self_mask: Zeroizing<[u8; 32]>,
}

/// One participant of a secure-aggregation session (see the module docs for the rounds).
///
/// Driving it: build it with the update, send [`advertise`](Self::advertise)'s message to
/// the server, and pass each message from the server to [`handle`](Self::handle) (or the
/// bytes to [`handle_bytes`](Self::handle_bytes)), sending what it returns. Messages arrive in
/// phase order: the key list, the routed shares, the unmask request. A repeated unmask request
/// with the same sets gets the same answer; one with other sets is refused when it would
/// reveal both secrets of a client.
///
/// Persistence: the client keeps nothing on disk, and that refusal rests on its memory of
/// what it revealed. A client that restarts mid-session must not answer an unmask request of
/// that session again (a driver that restarts clients records, before sending an answer, that
/// the session was answered, and abandons the session after a restart). Its keys derive from
/// the seed, so the same seed gives the same messages again.
pub struct Client {
    config: Config,
    id: ClientId,
    channel: X25519Secret,
    mask: X25519Secret,
    self_mask: Zeroizing<[u8; 32]>,
    shamir_seed: Zeroizing<[u8; 32]>,
    input: Vec<u32>,
    phase: Phase,
    peers: BTreeMap<ClientId, Peer>,
    held: BTreeMap<ClientId, Held>,
    revealed: BTreeMap<ClientId, Revealed>,
    /// When set, every client's Ed25519 key: the key list must carry each client's signature
    /// of its advertisement.
    peer_keys: Option<BTreeMap<ClientId, VerifyingKey>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("phase", &self.phase)
            .field("peers", &self.peers.len())
            .finish()
    }
}

impl Client {
    /// A client with id `id` (below `config.clients`) contributing `update`, its secrets
    /// derived from `seed` (32 secret, uniformly random bytes from the caller, never reused for
    /// the same round and model). Refuses an update of the wrong length or with NaN or
    /// infinities.
    pub fn new(
        config: Config,
        id: ClientId,
        seed: &[u8; 32],
        update: &[f32],
    ) -> Result<Self, Error> {
        config.check()?;
        if usize::from(id) >= config.clients {
            return Err(Error::Config {
                detail: format!("client id {id} in a session of {}", config.clients),
            });
        }
        let input = config.encode(update)?;
        Ok(Self {
            channel: X25519Secret::from_bytes(*derive(CHANNEL_KEY_CONTEXT, seed, &config, id)),
            mask: X25519Secret::from_bytes(*derive(MASK_KEY_CONTEXT, seed, &config, id)),
            self_mask: derive(SELF_MASK_CONTEXT, seed, &config, id),
            shamir_seed: derive(SHAMIR_CONTEXT, seed, &config, id),
            config,
            id,
            input,
            phase: Phase::AdvertiseKeys,
            peers: BTreeMap::new(),
            held: BTreeMap::new(),
            revealed: BTreeMap::new(),
            peer_keys: None,
        })
    }

    /// Requires a signed key list: each client's keys must come with its signature of its
    /// [`AdvertiseKeys`] under its key in `keys`, so a server cannot substitute keys (and read
    /// the shares sealed to them). Clients then send their messages signed
    /// ([`encode_signed`]) to a server [`with_signatures`](Server::with_signatures).
    pub fn with_peer_keys(mut self, keys: BTreeMap<ClientId, VerifyingKey>) -> Self {
        self.peer_keys = Some(keys);
        self
    }

    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The phase the client is in: it sent that phase's message and waits for the server's
    /// answer (`Done` once it has answered an unmask request).
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// This client's public keys.
    pub fn public_keys(&self) -> PublicKeys {
        PublicKeys {
            channel: self.channel.public_key().0,
            mask: self.mask.public_key().0,
            commitment: commitment(&self.config, self.id, &self.self_mask),
        }
    }

    /// Round 0: the message advertising this client's keys.
    pub fn advertise(&self) -> Message {
        Message::AdvertiseKeys(AdvertiseKeys {
            header: self.config.header(),
            sender: self.id,
            keys: self.public_keys(),
        })
    }

    /// Decodes a message from the server and [`handle`](Self::handle)s it.
    pub fn handle_bytes(&mut self, bytes: &[u8]) -> Result<Message, Error> {
        let message = Message::decode(bytes, self.config.dim)?;
        self.handle(&message)
    }

    /// Handles the server's next message and returns the answer for the server.
    pub fn handle(&mut self, message: &Message) -> Result<Message, Error> {
        self.config.check_header(message.header())?;
        match (message, self.phase) {
            (Message::KeyList(m), Phase::AdvertiseKeys) => self.share_keys(m),
            (Message::RoutedShares(m), Phase::ShareKeys) => self.masked_input(m),
            (Message::UnmaskRequest(m), Phase::MaskedInput | Phase::Done) => self.unmask(m),
            (m, phase) => Err(Error::OutOfPhase {
                kind: m.kind(),
                phase,
            }),
        }
    }

    fn share_keys(&mut self, list: &KeyList) -> Result<Message, Error> {
        let kind = "key-list";
        if let Some((sender, _)) = list
            .clients
            .iter()
            .find(|(c, _)| usize::from(*c) >= self.config.clients)
        {
            return Err(Error::UnknownSender {
                kind,
                sender: *sender,
            });
        }
        let ours = list.clients.iter().find(|(c, _)| *c == self.id);
        if ours.map(|(_, k)| *k) != Some(self.public_keys()) {
            return Err(Error::BadContents {
                kind,
                detail: format!("client {} is missing or has other keys", self.id),
            });
        }
        if list.clients.len() < self.config.threshold {
            return Err(Error::TooFewClients {
                phase: Phase::AdvertiseKeys,
                have: list.clients.len(),
                need: self.config.threshold,
            });
        }
        if let Some(peer_keys) = &self.peer_keys {
            for (i, &(id, keys)) in list.clients.iter().enumerate() {
                let key = peer_keys
                    .get(&id)
                    .ok_or(Error::UnknownSender { kind, sender: id })?;
                let signed = wire::signed_bytes(&list.advertisement(id, keys).encode());
                let valid = list
                    .signatures
                    .get(i)
                    .is_some_and(|s| key.verify(&signed, &Signature(*s)).is_ok());
                if !valid {
                    return Err(Error::BadSignature { kind, sender: id });
                }
            }
        }
        let mut peers = BTreeMap::new();
        for (j, keys) in list.clients.iter().filter(|(j, _)| *j != self.id) {
            let channel = self
                .channel
                .diffie_hellman(&x25519_public(&keys.channel))
                .map_err(|_| Error::InvalidKey {
                    client: *j,
                    which: "channel",
                })?;
            let mask = self
                .mask
                .diffie_hellman(&x25519_public(&keys.mask))
                .map_err(|_| Error::InvalidKey {
                    client: *j,
                    which: "mask",
                })?;
            peers.insert(
                *j,
                Peer {
                    to: channel_key(&self.config, &channel, self.id, *j)?,
                    from: channel_key(&self.config, &channel, *j, self.id)?,
                    seed: pair_seed(&self.config, &mask, self.id, *j)?,
                },
            );
        }
        let points: Vec<u8> = list.clients.iter().map(|(c, _)| c + 1).collect();
        let secret_key = self.mask.to_bytes();
        let key_shares = shamir::split(
            &secret_key,
            self.config.threshold,
            &points,
            xof(&self.shamir_seed, b"mask key"),
        )?;
        let mask_shares = shamir::split(
            &self.self_mask,
            self.config.threshold,
            &points,
            xof(&self.shamir_seed, b"self mask"),
        )?;
        let mut ciphertexts = Vec::with_capacity(peers.len());
        for ((key_share, mask_share), (j, _)) in
            key_shares.iter().zip(&mask_shares).zip(&list.clients)
        {
            let held = Held {
                mask_key: Zeroizing::new(key_share.y),
                self_mask: Zeroizing::new(mask_share.y),
            };
            let Some(peer) = peers.get(j) else {
                // Our own shares stay with us.
                self.held.insert(self.id, held);
                continue;
            };
            let mut plain = Zeroizing::new([0u8; 64]);
            plain[..32].copy_from_slice(&held.mask_key[..]);
            plain[32..].copy_from_slice(&held.self_mask[..]);
            let sealed = peer.to.seal(
                &nonce_from_counter(0),
                &shares_aad(&self.config, self.id, *j),
                &plain[..],
            )?;
            let mut ct = [0u8; CIPHERTEXT_LEN];
            if sealed.len() != CIPHERTEXT_LEN {
                return Err(Error::Shamir {
                    detail: format!("sealed shares of {} bytes", sealed.len()),
                });
            }
            ct.copy_from_slice(&sealed);
            ciphertexts.push((*j, ct));
        }
        self.peers = peers;
        self.phase = Phase::ShareKeys;
        Ok(Message::ShareKeys(ShareKeys {
            header: self.config.header(),
            sender: self.id,
            ciphertexts,
        }))
    }

    fn masked_input(&mut self, routed: &RoutedShares) -> Result<Message, Error> {
        let kind = "routed-shares";
        if routed.recipient != self.id {
            return Err(Error::BadContents {
                kind,
                detail: format!("addressed to client {}", routed.recipient),
            });
        }
        if routed.ciphertexts.len() + 1 < self.config.threshold {
            return Err(Error::TooFewClients {
                phase: Phase::ShareKeys,
                have: routed.ciphertexts.len() + 1,
                need: self.config.threshold,
            });
        }
        let mut received = Vec::with_capacity(routed.ciphertexts.len());
        for (from, ct) in &routed.ciphertexts {
            let peer = self.peers.get(from).ok_or(Error::UnknownSender {
                kind,
                sender: *from,
            })?;
            let plain = Zeroizing::new(
                peer.from
                    .open(
                        &nonce_from_counter(0),
                        &shares_aad(&self.config, *from, self.id),
                        ct,
                    )
                    .map_err(|_| Error::Decrypt { from: *from })?,
            );
            let (Some(k), Some(m)) = (plain.get(..32), plain.get(32..64)) else {
                return Err(Error::Decrypt { from: *from });
            };
            let mut held = Held {
                mask_key: Zeroizing::new([0; 32]),
                self_mask: Zeroizing::new([0; 32]),
            };
            held.mask_key.copy_from_slice(k);
            held.self_mask.copy_from_slice(m);
            received.push((*from, held));
        }
        let mut masked = std::mem::take(&mut self.input);
        apply_mask(&self.self_mask, &mut masked, false);
        for (j, _) in &received {
            if let Some(peer) = self.peers.get(j) {
                apply_mask(&peer.seed, &mut masked, *j < self.id);
            }
        }
        self.held.extend(received);
        self.phase = Phase::MaskedInput;
        Ok(Message::MaskedInput(MaskedInput {
            header: self.config.header(),
            sender: self.id,
            masked,
        }))
    }

    fn unmask(&mut self, request: &UnmaskRequest) -> Result<Message, Error> {
        let kind = "unmask-request";
        let survivors: BTreeSet<ClientId> = request.survivors.iter().copied().collect();
        let dropped: BTreeSet<ClientId> = request.dropped.iter().copied().collect();
        if let Some(&peer) = survivors.intersection(&dropped).next() {
            return Err(Error::BothSharesRequested { peer });
        }
        for (&peer, &was) in &self.revealed {
            let now = if survivors.contains(&peer) {
                Revealed::SelfMask
            } else if dropped.contains(&peer) {
                Revealed::MaskKey
            } else {
                continue;
            };
            if now != was {
                return Err(Error::BothSharesRequested { peer });
            }
        }
        let shared: BTreeSet<ClientId> = self.held.keys().copied().collect();
        if survivors.union(&dropped).copied().collect::<BTreeSet<_>>() != shared {
            return Err(Error::BadContents {
                kind,
                detail: "survivors and dropped are not the clients that shared keys".into(),
            });
        }
        if !survivors.contains(&self.id) {
            return Err(Error::BadContents {
                kind,
                detail: format!("client {} is not among the survivors", self.id),
            });
        }
        if survivors.len() < self.config.threshold {
            return Err(Error::TooFewClients {
                phase: Phase::MaskedInput,
                have: survivors.len(),
                need: self.config.threshold,
            });
        }
        let mut self_mask_shares = Vec::with_capacity(survivors.len());
        let mut mask_key_shares = Vec::with_capacity(dropped.len());
        for (&peer, held) in &self.held {
            if survivors.contains(&peer) {
                self.revealed.insert(peer, Revealed::SelfMask);
                self_mask_shares.push((peer, *held.self_mask));
            } else {
                self.revealed.insert(peer, Revealed::MaskKey);
                mask_key_shares.push((peer, *held.mask_key));
            }
        }
        self.phase = Phase::Done;
        Ok(Message::UnmaskShares(UnmaskShares {
            header: self.config.header(),
            sender: self.id,
            self_mask_shares,
            mask_key_shares,
        }))
    }
}

/// A filler of secret random bytes: BLAKE3's XOF keyed with `key`, for one purpose.
fn xof(key: &[u8; 32], purpose: &[u8]) -> impl FnMut(&mut [u8]) {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(purpose);
    let mut reader = h.finalize_xof();
    move |buf: &mut [u8]| reader.fill(buf)
}

/// Shares listed per owner, as in [`UnmaskShares`].
type SharesOf = [(ClientId, [u8; 32])];

/// The aggregator of one session (see the module docs for the rounds).
///
/// Driving it: pass every client message to [`handle`](Self::handle) (refusals are returned
/// and counted in [`rejections`](Self::rejections); the session goes on). When all expected
/// clients have sent this phase's message, or the caller's deadline passed, call
/// [`close`](Self::close) and send each returned message to its recipient; after the masked
/// inputs, the next close sends the unmask requests, and once the answers are in (or the
/// deadline passed) [`finish`](Self::finish) returns the sum. Closing with fewer than the
/// threshold is an error that leaves the phase open.
#[derive(Debug, Clone)]
pub struct Server {
    config: Config,
    phase: Phase,
    /// `U1`: clients that advertised keys.
    keys: BTreeMap<ClientId, PublicKeys>,
    /// `U2`: clients that shared keys, with their ciphertexts (dropped once routed).
    shared: BTreeMap<ClientId, Vec<(ClientId, [u8; CIPHERTEXT_LEN])>>,
    /// `U3`: clients whose masked input is in `sum`.
    survivors: BTreeSet<ClientId>,
    /// `U2 \ U3`, fixed when the masked-input phase closes.
    dropped: Vec<ClientId>,
    sum: Vec<u32>,
    answers: BTreeMap<ClientId, UnmaskShares>,
    rejections: Rejections,
    /// With signatures: every client's Ed25519 key.
    verifiers: Option<BTreeMap<ClientId, VerifyingKey>>,
    /// With signatures: each advertising client's signature, forwarded in the key list.
    key_signatures: BTreeMap<ClientId, [u8; wire::SIGNATURE_LEN]>,
}

impl Server {
    /// A server for one session whose transport authenticates senders: messages are not
    /// signed.
    pub fn new(config: Config) -> Result<Self, Error> {
        config.check()?;
        Ok(Self {
            verifiers: None,
            key_signatures: BTreeMap::new(),
            sum: vec![0; config.dim],
            config,
            phase: Phase::AdvertiseKeys,
            keys: BTreeMap::new(),
            shared: BTreeMap::new(),
            survivors: BTreeSet::new(),
            dropped: Vec::new(),
            answers: BTreeMap::new(),
            rejections: Rejections::default(),
        })
    }

    /// A server that accepts only signed messages ([`encode_signed`]), each checked against
    /// its sender's key in `verifiers`; a message from a client without a key is from an
    /// unknown sender.
    pub fn with_signatures(
        config: Config,
        verifiers: BTreeMap<ClientId, VerifyingKey>,
    ) -> Result<Self, Error> {
        Ok(Self {
            verifiers: Some(verifiers),
            ..Self::new(config)?
        })
    }

    /// The phase being collected.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Refused messages so far, by reason.
    pub fn rejections(&self) -> Rejections {
        self.rejections
    }

    /// Decodes, checks the signature of (on a server [`with_signatures`](Self::with_signatures))
    /// and records a client's message. Undecodable bytes are counted as malformed, a masked
    /// input of another length as a wrong shape, a bad signature as such.
    pub fn handle(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let (encoding, signature) = if self.verifiers.is_some() {
            match wire::split_signed(bytes) {
                Ok((e, s)) => (e, Some(s)),
                Err(e) => return self.reject(e.into()),
            }
        } else {
            (bytes, None)
        };
        let message = match Message::decode(encoding, self.config.dim) {
            Ok(m) => m,
            Err(WireError::TooLarge { found, .. }) => {
                return self.reject(Error::WrongShape {
                    expected: self.config.dim,
                    found,
                });
            }
            Err(e) => return self.reject(e.into()),
        };
        if let (Some(verifiers), Some(signature), Some(sender)) =
            (&self.verifiers, signature, message.sender())
        {
            let kind = message.kind();
            let Some(key) = verifiers.get(&sender) else {
                return self.reject(Error::UnknownSender { kind, sender });
            };
            if key
                .verify(&wire::signed_bytes(encoding), &Signature(signature))
                .is_err()
            {
                return self.reject(Error::BadSignature { kind, sender });
            }
        }
        let advertised = match &message {
            Message::AdvertiseKeys(m) => Some(m.sender),
            _ => None,
        };
        let result = self.accept(message);
        match result {
            Err(e) => self.reject(e),
            ok => {
                if let (Some(sender), Some(signature)) = (advertised, signature) {
                    self.key_signatures.insert(sender, signature);
                }
                ok
            }
        }
    }

    /// Checks and records a client's message that is already decoded (refused, as unsigned, by
    /// a server that checks signatures); a refusal is counted and returned.
    pub fn handle_message(&mut self, message: Message) -> Result<(), Error> {
        if let (Some(_), Some(sender)) = (&self.verifiers, message.sender()) {
            return self.reject(Error::BadSignature {
                kind: message.kind(),
                sender,
            });
        }
        let result = self.accept(message);
        match result {
            Err(e) => self.reject(e),
            ok => ok,
        }
    }

    fn reject(&mut self, e: Error) -> Result<(), Error> {
        if let Some(reason) = e.reason() {
            self.rejections.count(reason);
        }
        Err(e)
    }

    fn accept(&mut self, message: Message) -> Result<(), Error> {
        self.config.check_header(message.header())?;
        let kind = message.kind();
        let expected = match &message {
            Message::AdvertiseKeys(_) => Phase::AdvertiseKeys,
            Message::ShareKeys(_) => Phase::ShareKeys,
            Message::MaskedInput(_) => Phase::MaskedInput,
            Message::UnmaskShares(_) => Phase::Unmask,
            // Messages only a server sends.
            _ => Phase::Done,
        };
        if expected != self.phase || expected == Phase::Done {
            return Err(Error::OutOfPhase {
                kind,
                phase: self.phase,
            });
        }
        match message {
            Message::AdvertiseKeys(m) => {
                if usize::from(m.sender) >= self.config.clients {
                    return Err(Error::UnknownSender {
                        kind,
                        sender: m.sender,
                    });
                }
                if self.keys.contains_key(&m.sender) {
                    return Err(Error::Duplicate {
                        kind,
                        sender: m.sender,
                    });
                }
                for (which, key) in [("channel", &m.keys.channel), ("mask", &m.keys.mask)] {
                    if is_low_order(key) {
                        return Err(Error::InvalidKey {
                            client: m.sender,
                            which,
                        });
                    }
                }
                self.keys.insert(m.sender, m.keys);
            }
            Message::ShareKeys(m) => {
                if !self.keys.contains_key(&m.sender) {
                    return Err(Error::UnknownSender {
                        kind,
                        sender: m.sender,
                    });
                }
                if self.shared.contains_key(&m.sender) {
                    return Err(Error::Duplicate {
                        kind,
                        sender: m.sender,
                    });
                }
                let others = self.keys.keys().copied().filter(|&c| c != m.sender);
                if !m.ciphertexts.iter().map(|e| e.0).eq(others) {
                    return Err(Error::BadContents {
                        kind,
                        detail: format!(
                            "client {} did not send one ciphertext to every other client",
                            m.sender
                        ),
                    });
                }
                self.shared.insert(m.sender, m.ciphertexts);
            }
            Message::MaskedInput(m) => {
                if !self.shared.contains_key(&m.sender) {
                    return Err(Error::UnknownSender {
                        kind,
                        sender: m.sender,
                    });
                }
                if self.survivors.contains(&m.sender) {
                    return Err(Error::Duplicate {
                        kind,
                        sender: m.sender,
                    });
                }
                if m.masked.len() != self.config.dim {
                    return Err(Error::WrongShape {
                        expected: self.config.dim,
                        found: m.masked.len() as u64,
                    });
                }
                for (s, v) in self.sum.iter_mut().zip(&m.masked) {
                    *s = s.wrapping_add(*v);
                }
                self.survivors.insert(m.sender);
            }
            Message::UnmaskShares(m) => {
                if !self.survivors.contains(&m.sender) {
                    return Err(Error::UnknownSender {
                        kind,
                        sender: m.sender,
                    });
                }
                if self.answers.contains_key(&m.sender) {
                    return Err(Error::Duplicate {
                        kind,
                        sender: m.sender,
                    });
                }
                if !m
                    .self_mask_shares
                    .iter()
                    .map(|e| e.0)
                    .eq(self.survivors.iter().copied())
                    || !m
                        .mask_key_shares
                        .iter()
                        .map(|e| e.0)
                        .eq(self.dropped.iter().copied())
                {
                    return Err(Error::BadContents {
                        kind,
                        detail: format!("client {} did not send the shares asked for", m.sender),
                    });
                }
                self.answers.insert(m.sender, m);
            }
            _ => {}
        }
        Ok(())
    }

    fn enough(&self, have: usize) -> Result<(), Error> {
        if have < self.config.threshold {
            return Err(Error::TooFewClients {
                phase: self.phase,
                have,
                need: self.config.threshold,
            });
        }
        Ok(())
    }

    /// Ends the current collection phase (key advertising, key sharing or masked inputs) and
    /// returns the messages to deliver, one per recipient.
    pub fn close(&mut self) -> Result<Vec<(ClientId, Message)>, Error> {
        let header = self.config.header();
        match self.phase {
            Phase::AdvertiseKeys => {
                self.enough(self.keys.len())?;
                let signatures = if self.verifiers.is_some() {
                    self.keys
                        .keys()
                        .map(|c| self.key_signatures.get(c).copied().unwrap_or([0; 64]))
                        .collect()
                } else {
                    Vec::new()
                };
                let list = Message::KeyList(KeyList {
                    header,
                    clients: self.keys.iter().map(|(&c, &k)| (c, k)).collect(),
                    signatures,
                });
                self.phase = Phase::ShareKeys;
                Ok(self.keys.keys().map(|&c| (c, list.clone())).collect())
            }
            Phase::ShareKeys => {
                self.enough(self.shared.len())?;
                let out = self
                    .shared
                    .keys()
                    .map(|&recipient| {
                        let ciphertexts = self
                            .shared
                            .iter()
                            .filter(|(from, _)| **from != recipient)
                            .filter_map(|(&from, cts)| {
                                cts.iter()
                                    .find(|(to, _)| *to == recipient)
                                    .map(|e| (from, e.1))
                            })
                            .collect();
                        (
                            recipient,
                            Message::RoutedShares(RoutedShares {
                                header,
                                recipient,
                                ciphertexts,
                            }),
                        )
                    })
                    .collect();
                for cts in self.shared.values_mut() {
                    *cts = Vec::new();
                }
                self.phase = Phase::MaskedInput;
                Ok(out)
            }
            Phase::MaskedInput => {
                self.enough(self.survivors.len())?;
                self.dropped = self
                    .shared
                    .keys()
                    .copied()
                    .filter(|c| !self.survivors.contains(c))
                    .collect();
                let request = Message::UnmaskRequest(UnmaskRequest {
                    header,
                    survivors: self.survivors.iter().copied().collect(),
                    dropped: self.dropped.clone(),
                });
                self.phase = Phase::Unmask;
                Ok(self
                    .survivors
                    .iter()
                    .map(|&c| (c, request.clone()))
                    .collect())
            }
            phase => Err(Error::OutOfPhase {
                kind: "close",
                phase,
            }),
        }
    }

    /// Ends the unmasking phase: reconstructs the survivors' self-masks and the dropped
    /// clients' mask keys from `threshold` answers, removes the masks and returns the sum.
    pub fn finish(&mut self) -> Result<Sum, Error> {
        if self.phase != Phase::Unmask {
            return Err(Error::OutOfPhase {
                kind: "finish",
                phase: self.phase,
            });
        }
        self.enough(self.answers.len())?;
        let answers: Vec<&UnmaskShares> =
            self.answers.values().take(self.config.threshold).collect();
        let gather = |owner: ClientId, pick: fn(&UnmaskShares) -> &SharesOf| {
            answers
                .iter()
                .filter_map(|a| {
                    pick(a)
                        .iter()
                        .find(|(c, _)| *c == owner)
                        .map(|(_, y)| Share {
                            x: a.sender + 1,
                            y: *y,
                        })
                })
                .collect::<Vec<Share<32>>>()
        };
        // Reconstruct and check every secret before touching the sum, so a failure leaves the
        // server as it was.
        let mut self_masks = Vec::with_capacity(self.survivors.len());
        for &u in &self.survivors {
            let b = Zeroizing::new(shamir::combine(&gather(u, |a| &a.self_mask_shares))?);
            if self.keys.get(&u).map(|k| k.commitment) != Some(commitment(&self.config, u, &b)) {
                return Err(Error::Reconstruction {
                    client: u,
                    what: "self-mask seed",
                });
            }
            self_masks.push(b);
        }
        let mut pair_masks = Vec::new();
        for &v in &self.dropped {
            let secret =
                X25519Secret::from_bytes(shamir::combine(&gather(v, |a| &a.mask_key_shares))?);
            if self.keys.get(&v).map(|k| k.mask) != Some(secret.public_key().0) {
                return Err(Error::Reconstruction {
                    client: v,
                    what: "mask key",
                });
            }
            for &u in &self.survivors {
                let Some(keys) = self.keys.get(&u) else {
                    continue;
                };
                let shared = secret.diffie_hellman(&x25519_public(&keys.mask))?;
                // u added PRG(s_uv) when u < v and subtracted it otherwise: undo that.
                pair_masks.push((pair_seed(&self.config, &shared, u, v)?, u < v));
            }
        }
        let mut sum = std::mem::take(&mut self.sum);
        for b in &self_masks {
            apply_mask(b, &mut sum, true);
        }
        for (seed, subtract) in &pair_masks {
            apply_mask(seed, &mut sum, *subtract);
        }
        let integers: Vec<i32> = sum.iter().map(|&s| s as i32).collect();
        self.phase = Phase::Done;
        Ok(Sum {
            survivors: self.survivors.iter().copied().collect(),
            dropped: self.dropped.clone(),
            values: self.config.decode(&integers),
            integers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the advertised keys start in an encoded `AdvertiseKeys`.
    const HEADER_OFFSET_OF_KEYS: usize = wire::HEADER_LEN + 1;

    fn config(clients: usize, threshold: usize, dim: usize) -> Config {
        Config {
            round: 7,
            model: [3; 32],
            clients,
            threshold,
            dim,
            clip: 1.0,
        }
    }

    fn seed(i: ClientId) -> [u8; 32] {
        let mut s = [0x5e; 32];
        s[0] = i;
        s
    }

    /// Updates in [-1.2, 1.2]: some coordinates are clipped.
    fn inputs(clients: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = crate::Rng::new(seed);
        (0..clients)
            .map(|_| (0..dim).map(|_| rng.uniform(-1.2, 1.2) as f32).collect())
            .collect()
    }

    /// Runs a session through the wire encodings. A client listed in `stops` with a phase
    /// takes no part from that phase on (`ShareKeys`: advertised only; `MaskedInput`: shared
    /// keys but sent no input; `Unmask`: sent its input but does not answer the request).
    /// `tap` sees every client message.
    fn run_with(
        config: Config,
        inputs: &[Vec<f32>],
        stops: &[(ClientId, Phase)],
        tap: &mut dyn FnMut(&Message),
    ) -> Result<(Sum, Server), Error> {
        let mut server = Server::new(config)?;
        let mut clients = inputs
            .iter()
            .enumerate()
            .map(|(i, x)| Client::new(config, i as ClientId, &seed(i as ClientId), x))
            .collect::<Result<Vec<_>, _>>()?;
        let active = |c: ClientId, phase: Phase| !stops.iter().any(|&(s, p)| s == c && p <= phase);
        for c in &clients {
            if active(c.id(), Phase::AdvertiseKeys) {
                let m = c.advertise();
                tap(&m);
                server.handle(&m.encode())?;
            }
        }
        let mut outbox = server.close()?;
        for phase in [Phase::ShareKeys, Phase::MaskedInput, Phase::Unmask] {
            for (to, m) in &outbox {
                if active(*to, phase) {
                    let answer = clients[usize::from(*to)].handle_bytes(&m.encode())?;
                    tap(&answer);
                    server.handle(&answer.encode())?;
                }
            }
            if phase != Phase::Unmask {
                outbox = server.close()?;
            }
        }
        Ok((server.finish()?, server))
    }

    fn run(config: Config, inputs: &[Vec<f32>], stops: &[(ClientId, Phase)]) -> Result<Sum, Error> {
        run_with(config, inputs, stops, &mut |_| {}).map(|r| r.0)
    }

    /// The exact sum of the encoded updates of `survivors`.
    fn expected(config: &Config, inputs: &[Vec<f32>], survivors: &[ClientId]) -> Vec<i32> {
        let mut sum = vec![0i64; config.dim];
        for &c in survivors {
            for (s, v) in sum
                .iter_mut()
                .zip(config.encode(&inputs[usize::from(c)]).unwrap())
            {
                *s += i64::from(v as i32);
            }
        }
        sum.into_iter().map(|s| i32::try_from(s).unwrap()).collect()
    }

    #[test]
    fn ten_clients_without_dropouts_give_the_exact_sum() {
        let config = config(10, 6, 1000);
        let x = inputs(10, 1000, 1);
        let sum = run(config, &x, &[]).unwrap();
        let all: Vec<ClientId> = (0..10).collect();
        assert_eq!(sum.survivors, all);
        assert!(sum.dropped.is_empty());
        assert_eq!(sum.integers, expected(&config, &x, &all));
        // The decoding is the sum of the clipped values, to the fixed-point resolution.
        let resolution = 1.0 / config.scale();
        for (j, v) in sum.values.iter().enumerate() {
            let exact: f64 = x.iter().map(|u| f64::from(u[j].clamp(-1.0, 1.0))).sum();
            assert!(
                (f64::from(*v) - exact).abs() <= 10.0 * resolution + 1e-6,
                "{j}"
            );
        }
    }

    #[test]
    fn extreme_inputs_of_every_client_do_not_wrap() {
        // Through the protocol for small sessions; the largest one's encoding directly (the
        // protocol's cost grows with the square of the clients).
        for n in [2usize, 3, 10] {
            let config = Config {
                clip: 3.5,
                ..config(n, n / 2 + 1, 4)
            };
            let x: Vec<Vec<f32>> = (0..n)
                .map(|_| vec![3.5, -3.5, f32::MAX, f32::MIN])
                .collect();
            let all: Vec<ClientId> = (0..n as u16).map(|c| c as ClientId).collect();
            let sum = run(config, &x, &[]).unwrap();
            let level = config.max_level() as i32 * n as i32;
            assert_eq!(sum.integers, [level, -level, level, -level]);
            assert_eq!(sum.integers, expected(&config, &x, &all));
            let bound = n as f32 * 3.5;
            assert!(
                (sum.values[0] - bound).abs() < 1e-3 * bound,
                "{:?}",
                sum.values
            );
        }
        let config = Config {
            clip: 3.5,
            ..config(MAX_CLIENTS, 128, 2)
        };
        let top = config.encode(&[f32::INFINITY.min(f32::MAX), -3.5]).unwrap();
        let (mut high, mut low) = (0u32, 0u32);
        for _ in 0..MAX_CLIENTS {
            high = high.wrapping_add(top[0]);
            low = low.wrapping_add(top[1]);
        }
        assert_eq!(high as i32, config.max_level() as i32 * MAX_CLIENTS as i32);
        assert!(high as i32 > 0 && (low as i32) < 0 && (low as i32) == -(high as i32));
    }

    #[test]
    fn up_to_n_minus_t_dropouts_are_recovered_exactly() {
        let config = config(10, 6, 300);
        let x = inputs(10, 300, 2);
        for dropouts in 1..=4u8 {
            // Clients 9, 7, 5, 3 drop after sharing their keys.
            let stops: Vec<(ClientId, Phase)> = (0..dropouts)
                .map(|k| (9 - 2 * k, Phase::MaskedInput))
                .collect();
            let survivors: Vec<ClientId> = (0..10)
                .filter(|c| !stops.iter().any(|s| s.0 == *c))
                .collect();
            let sum = run(config, &x, &stops).unwrap();
            assert_eq!(sum.survivors, survivors);
            assert_eq!(sum.dropped.len(), usize::from(dropouts));
            assert_eq!(
                sum.integers,
                expected(&config, &x, &survivors),
                "{dropouts}"
            );
        }
        // Dropouts at every phase together: 0 never advertises, 1 never shares keys, 2 sends
        // no input, 3 sends its input but does not help unmask.
        let stops = [
            (0, Phase::AdvertiseKeys),
            (1, Phase::ShareKeys),
            (2, Phase::MaskedInput),
            (3, Phase::Unmask),
        ];
        let sum = run(config, &x, &stops).unwrap();
        let survivors = [3, 4, 5, 6, 7, 8, 9];
        assert_eq!(sum.survivors, survivors);
        assert_eq!(sum.dropped, [2]);
        assert_eq!(sum.integers, expected(&config, &x, &survivors));
    }

    #[test]
    fn too_many_dropouts_are_a_typed_error() {
        let config = config(10, 6, 50);
        let x = inputs(10, 50, 3);
        let stops: Vec<(ClientId, Phase)> = (0..5).map(|c| (c, Phase::MaskedInput)).collect();
        assert_eq!(
            run(config, &x, &stops).unwrap_err(),
            Error::TooFewClients {
                phase: Phase::MaskedInput,
                have: 5,
                need: 6
            }
        );
        let stops: Vec<(ClientId, Phase)> = (0..5).map(|c| (c, Phase::ShareKeys)).collect();
        assert!(matches!(
            run(config, &x, &stops),
            Err(Error::TooFewClients {
                phase: Phase::ShareKeys,
                ..
            })
        ));
        // Enough inputs, too few unmasking answers.
        let stops: Vec<(ClientId, Phase)> = (0..5).map(|c| (c, Phase::Unmask)).collect();
        assert_eq!(
            run(config, &x, &stops).unwrap_err(),
            Error::TooFewClients {
                phase: Phase::Unmask,
                have: 5,
                need: 6
            }
        );
    }

    fn phase_from(k: u8) -> Option<Phase> {
        match k {
            0 => Some(Phase::AdvertiseKeys),
            1 => Some(Phase::ShareKeys),
            2 => Some(Phase::MaskedInput),
            3 => Some(Phase::Unmask),
            _ => None,
        }
    }

    /// Random session sizes, thresholds and dropout patterns (each client stops at a random
    /// phase with probability 1/4): the result is exactly the sum of the clients whose inputs
    /// arrived, or `TooFewClients` naming the first phase that fell below the threshold. Both
    /// outcomes, and sums with clients dropped after sharing keys, must occur in the sweep.
    #[test]
    fn any_dropout_pattern_gives_the_exact_sum_or_too_few_clients() {
        let mut rng = crate::Rng::new(11);
        let (mut recovered, mut too_few) = (0, 0);
        for scenario in 0..80 {
            let n = 3 + rng.below(10) as usize;
            let t = (n / 2 + 1 + rng.below(3) as usize).min(n);
            let config = config(n, t, 8);
            let x = inputs(n, 8, scenario);
            let stops: Vec<(ClientId, Phase)> = (0..n)
                .filter_map(|c| match rng.below(16) {
                    k @ 0..4 => phase_from(k as u8).map(|p| (c as ClientId, p)),
                    _ => None,
                })
                .collect();
            let reaching = |phase: Phase| -> Vec<ClientId> {
                (0..n as ClientId)
                    .filter(|c| !stops.iter().any(|&(s, p)| s == *c && p <= phase))
                    .collect()
            };
            let short = [
                Phase::AdvertiseKeys,
                Phase::ShareKeys,
                Phase::MaskedInput,
                Phase::Unmask,
            ]
            .into_iter()
            .find(|&p| reaching(p).len() < t);
            match (run(config, &x, &stops), short) {
                (Ok(sum), None) => {
                    let survivors = reaching(Phase::MaskedInput);
                    assert_eq!(
                        sum.integers,
                        expected(&config, &x, &survivors),
                        "{scenario}"
                    );
                    assert_eq!(sum.survivors, survivors);
                    if !sum.dropped.is_empty() {
                        recovered += 1;
                    }
                }
                (Err(Error::TooFewClients { phase, have, need }), Some(p)) => {
                    assert_eq!((phase, have, need), (p, reaching(p).len(), t), "{scenario}");
                    too_few += 1;
                }
                (other, short) => panic!("scenario {scenario}: {other:?} with {short:?} short"),
            }
        }
        assert!(recovered >= 10 && too_few >= 5, "{recovered} {too_few}");
    }

    fn chi_squared(counts: &[u64]) -> f64 {
        let total: u64 = counts.iter().sum();
        let e = total as f64 / counts.len() as f64;
        counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum()
    }

    /// (chi-squared of the byte histogram, chi-squared of the top-4-bit histogram).
    fn uniformity(values: &[u32]) -> (f64, f64) {
        let mut bytes = [0u64; 256];
        let mut top = [0u64; 16];
        for v in values {
            for b in v.to_le_bytes() {
                bytes[usize::from(b)] += 1;
            }
            top[(v >> 28) as usize] += 1;
        }
        (chi_squared(&bytes), chi_squared(&top))
    }

    /// Upper 0.1% points of the chi-squared distribution with 255 and 15 degrees of freedom.
    const CHI2_255: f64 = 330.52;
    const CHI2_15: f64 = 37.70;

    #[test]
    fn a_masked_update_looks_uniform_and_the_unmasked_one_does_not() {
        let dim = 1 << 16;
        let config = config(10, 6, dim);
        let zeros = vec![vec![0.0f32; dim]; 10];
        let mut masked = Vec::new();
        run_with(config, &zeros, &[], &mut |m| {
            if let Message::MaskedInput(m) = m {
                masked.push(m.masked.clone());
            }
        })
        .unwrap();
        assert_eq!(masked.len(), 10);
        let (bytes, top) = uniformity(&masked[0]);
        assert!(bytes < CHI2_255 && top < CHI2_15, "{bytes} {top}");
        // Controls: the same test rejects the encoded update without masks, for the zero
        // update and for a realistic one (Gaussian, 0.1 standard deviation).
        let (bytes, top) = uniformity(&config.encode(&zeros[0]).unwrap());
        assert!(bytes > CHI2_255 && top > CHI2_15, "{bytes} {top}");
        let mut rng = crate::Rng::new(5);
        let gaussian: Vec<f32> = (0..dim).map(|_| 0.1 * rng.normal() as f32).collect();
        let (bytes, top) = uniformity(&config.encode(&gaussian).unwrap());
        assert!(bytes > CHI2_255 && top > CHI2_15, "{bytes} {top}");
        // And a single mask is what makes the difference: the self-mask alone already passes.
        let mut one = config.encode(&gaussian).unwrap();
        apply_mask(&[9; 32], &mut one, false);
        let (bytes, top) = uniformity(&one);
        assert!(bytes < CHI2_255 && top < CHI2_15, "{bytes} {top}");
    }

    /// Three clients through key sharing; returns the server in the masked-input phase, the
    /// clients and their masked inputs (not yet delivered).
    fn three_at_masked_input() -> (Server, Vec<Client>, Vec<Message>) {
        let config = config(3, 2, 4);
        let mut server = Server::new(config).unwrap();
        let mut clients: Vec<Client> = (0..3)
            .map(|i| Client::new(config, i, &seed(i), &[0.5, -0.5, 0.25, 0.0]).unwrap())
            .collect();
        for c in &clients {
            server.handle(&c.advertise().encode()).unwrap();
        }
        let lists = server.close().unwrap();
        for (to, m) in lists {
            let answer = clients[usize::from(to)].handle(&m).unwrap();
            server.handle_message(answer).unwrap();
        }
        let routed = server.close().unwrap();
        let masked = routed
            .iter()
            .map(|(to, m)| clients[usize::from(*to)].handle(m).unwrap())
            .collect();
        (server, clients, masked)
    }

    #[test]
    fn bad_messages_are_refused_with_typed_errors_and_counted() {
        let config = config(3, 2, 4);
        let mut server = Server::new(config).unwrap();
        let clients: Vec<Client> = (0..3)
            .map(|i| Client::new(config, i, &seed(i), &[0.0; 4]).unwrap())
            .collect();
        let advertise = |c: &Client| match c.advertise() {
            Message::AdvertiseKeys(m) => m,
            _ => unreachable!(),
        };
        // Garbage, a truncated message.
        assert!(matches!(server.handle(b"junk"), Err(Error::Wire(_))));
        let bytes = clients[0].advertise().encode();
        assert!(matches!(
            server.handle(&bytes[..bytes.len() - 1]),
            Err(Error::Wire(WireError::Truncated { .. }))
        ));
        // Another round, another model.
        let mut m = advertise(&clients[0]);
        m.header.round = 8;
        assert_eq!(
            server.handle_message(Message::AdvertiseKeys(m)),
            Err(Error::WrongRound {
                expected: 7,
                found: 8
            })
        );
        let mut m = advertise(&clients[0]);
        m.header.model[0] ^= 1;
        assert_eq!(
            server.handle_message(Message::AdvertiseKeys(m)),
            Err(Error::WrongModel)
        );
        // An id outside the session; a low-order key; a message only servers send.
        let mut m = advertise(&clients[0]);
        m.sender = 3;
        assert!(matches!(
            server.handle_message(Message::AdvertiseKeys(m)),
            Err(Error::UnknownSender { sender: 3, .. })
        ));
        let mut m = advertise(&clients[0]);
        m.keys.mask = [0; 32];
        assert_eq!(
            server.handle_message(Message::AdvertiseKeys(m)),
            Err(Error::InvalidKey {
                client: 0,
                which: "mask"
            })
        );
        assert!(matches!(
            server.handle_message(Message::UnmaskRequest(UnmaskRequest {
                header: config.header(),
                survivors: vec![0],
                dropped: vec![],
            })),
            Err(Error::OutOfPhase { .. })
        ));
        // Accepted, then a duplicate; a masked input before its phase.
        server.handle(&bytes).unwrap();
        assert!(matches!(
            server.handle(&bytes),
            Err(Error::Duplicate { sender: 0, .. })
        ));
        assert!(matches!(
            server.handle_message(Message::MaskedInput(MaskedInput {
                header: config.header(),
                sender: 0,
                masked: vec![0; 4],
            })),
            Err(Error::OutOfPhase {
                phase: Phase::AdvertiseKeys,
                ..
            })
        ));
        // Too few to close; then enough.
        assert_eq!(
            server.close().unwrap_err(),
            Error::TooFewClients {
                phase: Phase::AdvertiseKeys,
                have: 1,
                need: 2
            }
        );
        server.handle(&clients[1].advertise().encode()).unwrap();
        server.close().unwrap();
        // Client 2 is now unknown to the session; late keys are out of phase.
        assert!(matches!(
            server.handle(&clients[2].advertise().encode()),
            Err(Error::OutOfPhase { .. })
        ));
        let share = |sender: ClientId, to: &[ClientId]| {
            Message::ShareKeys(ShareKeys {
                header: config.header(),
                sender,
                ciphertexts: to.iter().map(|&t| (t, [0; CIPHERTEXT_LEN])).collect(),
            })
        };
        assert!(matches!(
            server.handle_message(share(2, &[0, 1])),
            Err(Error::UnknownSender { sender: 2, .. })
        ));
        assert!(matches!(
            server.handle_message(share(0, &[1, 2])),
            Err(Error::BadContents { .. })
        ));
        assert!(matches!(
            server.handle_message(share(0, &[])),
            Err(Error::BadContents { .. })
        ));
        server.handle_message(share(0, &[1])).unwrap();
        server.handle_message(share(1, &[0])).unwrap();
        server.close().unwrap();
        // A masked input of the wrong length, encoded and as a message.
        let masked = |sender: ClientId, dim: usize| {
            Message::MaskedInput(MaskedInput {
                header: config.header(),
                sender,
                masked: vec![1; dim],
            })
        };
        assert_eq!(
            server.handle(&masked(0, 5).encode()),
            Err(Error::WrongShape {
                expected: 4,
                found: 5
            })
        );
        assert!(matches!(
            server.handle_message(masked(0, 3)),
            Err(Error::WrongShape { found: 3, .. })
        ));
        assert_eq!(
            server.rejections(),
            Rejections {
                malformed: 2,
                wrong_round: 1,
                wrong_model: 1,
                out_of_phase: 3,
                duplicate: 1,
                unknown_sender: 2,
                wrong_shape: 2,
                bad_contents: 3,
                bad_signature: 0,
            }
        );
        assert_eq!(server.rejections().total(), 15);
        // Not counted: the refusals above left the session able to go on.
        server.handle_message(masked(0, 4)).unwrap();
        assert_eq!(server.rejections().total(), 15);
    }

    #[test]
    fn a_signed_session_sums_exactly_and_refuses_bad_signatures() {
        use mesh_crypto::ed25519::SigningKey;
        let config = config(4, 3, 16);
        let x = inputs(4, 16, 9);
        let keys: Vec<SigningKey> = (0..4u8)
            .map(|i| SigningKey::from_seed(&[i + 40; 32]))
            .collect();
        let verifiers = (0..3u8)
            .map(|i| (i, keys[usize::from(i)].verifying_key()))
            .collect();
        // Client 3 has no registered key.
        let mut server = Server::with_signatures(config, verifiers).unwrap();
        let peer_keys: BTreeMap<ClientId, VerifyingKey> = (0..4u8)
            .map(|i| (i, keys[usize::from(i)].verifying_key()))
            .collect();
        let fresh = |i: u8| {
            Client::new(config, i, &seed(i), &x[usize::from(i)])
                .unwrap()
                .with_peer_keys(peer_keys.clone())
        };
        let mut clients: Vec<Client> = (0..4u8).map(fresh).collect();
        let m = clients[0].advertise();
        // Unsigned bytes (the tail is taken for the signature, the rest does not decode), a
        // signature by another client, a changed byte, a decoded message, an unknown key.
        assert!(matches!(server.handle(&m.encode()), Err(Error::Wire(_))));
        assert!(matches!(
            server.handle(&encode_signed(&m, &keys[1])),
            Err(Error::BadSignature { sender: 0, .. })
        ));
        let mut changed = encode_signed(&m, &keys[0]);
        changed[HEADER_OFFSET_OF_KEYS] ^= 1;
        assert!(matches!(
            server.handle(&changed),
            Err(Error::BadSignature { sender: 0, .. })
        ));
        assert!(matches!(
            server.handle_message(m.clone()),
            Err(Error::BadSignature { sender: 0, .. })
        ));
        assert!(matches!(
            server.handle(&encode_signed(&clients[3].advertise(), &keys[3])),
            Err(Error::UnknownSender { sender: 3, .. })
        ));
        let counted = server.rejections();
        assert_eq!(
            (
                counted.malformed,
                counted.bad_signature,
                counted.unknown_sender
            ),
            (1, 3, 1)
        );
        // The three registered clients run the session, every message signed.
        for c in &clients[..3] {
            server
                .handle(&encode_signed(&c.advertise(), &keys[usize::from(c.id())]))
                .unwrap();
        }
        let lists = server.close().unwrap();
        // A server substituting client 1's channel key (to read the shares sealed to it) is
        // caught by the others: client 1's signature does not cover the new key. So is a list
        // without signatures.
        let Message::KeyList(genuine) = &lists[0].1 else {
            unreachable!()
        };
        let mut forged = genuine.clone();
        forged.clients[1].1.channel = clients[3].public_keys().channel;
        assert_eq!(
            fresh(0).handle(&Message::KeyList(forged)),
            Err(Error::BadSignature {
                kind: "key-list",
                sender: 1
            })
        );
        let unsigned = KeyList {
            signatures: Vec::new(),
            ..genuine.clone()
        };
        assert!(matches!(
            fresh(2).handle(&Message::KeyList(unsigned)),
            Err(Error::BadSignature { .. })
        ));
        let mut outbox = lists;
        for phase in 0..3 {
            for (to, m) in outbox {
                let i = usize::from(to);
                let answer = clients[i].handle_bytes(&m.encode()).unwrap();
                server.handle(&encode_signed(&answer, &keys[i])).unwrap();
            }
            assert_eq!(phase < 2, server.phase() != Phase::Unmask);
            outbox = if phase < 2 {
                server.close().unwrap()
            } else {
                Vec::new()
            };
        }
        let sum = server.finish().unwrap();
        assert_eq!(sum.integers, expected(&config, &x, &[0, 1, 2]));
        assert_eq!(server.rejections(), counted);
    }

    #[test]
    fn unmask_answers_that_do_not_match_are_refused_or_detected() {
        let (mut server, mut clients, masked) = three_at_masked_input();
        // Only clients 0 and 1 send inputs: 2 dropped after sharing keys.
        server.handle_message(masked[0].clone()).unwrap();
        server.handle_message(masked[1].clone()).unwrap();
        let requests = server.close().unwrap();
        assert_eq!(requests.len(), 2);
        let mut answers: Vec<UnmaskShares> = requests
            .iter()
            .map(
                |(to, m)| match clients[usize::from(*to)].handle(m).unwrap() {
                    Message::UnmaskShares(a) => a,
                    _ => unreachable!(),
                },
            )
            .collect();
        // A client that sent nothing cannot answer; shares for the wrong clients are refused.
        let mut stranger = answers[0].clone();
        stranger.sender = 2;
        assert!(matches!(
            server.handle_message(Message::UnmaskShares(stranger)),
            Err(Error::UnknownSender { sender: 2, .. })
        ));
        let mut wrong = answers[0].clone();
        wrong.mask_key_shares.clear();
        assert!(matches!(
            server.handle_message(Message::UnmaskShares(wrong)),
            Err(Error::BadContents { .. })
        ));
        // A share altered in transit: the reconstructed key is not the advertised one.
        answers[1].mask_key_shares[0].1[0] ^= 1;
        server
            .handle_message(Message::UnmaskShares(answers[0].clone()))
            .unwrap();
        server
            .handle_message(Message::UnmaskShares(answers[1].clone()))
            .unwrap();
        assert_eq!(
            server.finish().unwrap_err(),
            Error::Reconstruction {
                client: 2,
                what: "mask key"
            }
        );
        assert_eq!(server.phase(), Phase::Unmask);
    }

    #[test]
    fn a_client_refuses_to_reveal_both_secrets_of_one_client() {
        let (_, mut clients, _) = three_at_masked_input();
        let header = clients[0].config.header();
        let request = |survivors: Vec<ClientId>, dropped: Vec<ClientId>| {
            Message::UnmaskRequest(UnmaskRequest {
                header,
                survivors,
                dropped,
            })
        };
        // One request naming client 2 both a survivor and dropped.
        assert_eq!(
            clients[0].handle(&request(vec![0, 1, 2], vec![2])),
            Err(Error::BothSharesRequested { peer: 2 })
        );
        // A request that leaves a client out, or leaves the receiver out, or is too small.
        assert!(matches!(
            clients[0].handle(&request(vec![0, 1], vec![])),
            Err(Error::BadContents { .. })
        ));
        assert!(matches!(
            clients[0].handle(&request(vec![1, 2], vec![0])),
            Err(Error::BadContents { .. })
        ));
        assert!(matches!(
            clients[0].handle(&request(vec![0], vec![1, 2])),
            Err(Error::TooFewClients { .. })
        ));
        // Answered once with 2 dropped; the same request again gets the same answer, but a
        // second request calling 2 a survivor would reveal its self-mask too.
        let first = clients[0].handle(&request(vec![0, 1], vec![2])).unwrap();
        assert_eq!(
            clients[0].handle(&request(vec![0, 1], vec![2])).unwrap(),
            first
        );
        assert_eq!(
            clients[0].handle(&request(vec![0, 1, 2], vec![])),
            Err(Error::BothSharesRequested { peer: 2 })
        );
        assert_eq!(
            clients[0].handle(&request(vec![0, 2], vec![1])),
            Err(Error::BothSharesRequested { peer: 1 })
        );
    }

    #[test]
    fn clients_refuse_bad_server_messages() {
        let config = config(3, 2, 4);
        let mut clients: Vec<Client> = (0..3)
            .map(|i| Client::new(config, i, &seed(i), &[0.0; 4]).unwrap())
            .collect();
        let keys: Vec<(ClientId, PublicKeys)> =
            clients.iter().map(|c| (c.id(), c.public_keys())).collect();
        let list = |clients: Vec<(ClientId, PublicKeys)>| {
            Message::KeyList(KeyList {
                header: config.header(),
                clients,
                signatures: Vec::new(),
            })
        };
        // Out of order: an unmask request first.
        assert!(matches!(
            clients[0].handle(&Message::UnmaskRequest(UnmaskRequest {
                header: config.header(),
                survivors: vec![0, 1],
                dropped: vec![],
            })),
            Err(Error::OutOfPhase { .. })
        ));
        // Our keys replaced, or missing; too few clients; a low-order peer key.
        let mut swapped = keys.clone();
        swapped[0].1.mask = keys[1].1.mask;
        assert!(matches!(
            clients[0].handle(&list(swapped)),
            Err(Error::BadContents { .. })
        ));
        assert!(matches!(
            clients[0].handle(&list(keys[1..].to_vec())),
            Err(Error::BadContents { .. })
        ));
        assert!(matches!(
            clients[0].handle(&list(keys[..1].to_vec())),
            Err(Error::TooFewClients { .. })
        ));
        let mut low = keys.clone();
        low[2].1.channel = [0; 32];
        assert_eq!(
            clients[0].handle(&list(low)),
            Err(Error::InvalidKey {
                client: 2,
                which: "channel"
            })
        );
        let mut bad_round = list(keys.clone());
        if let Message::KeyList(l) = &mut bad_round {
            l.header.round = 1;
        }
        assert!(matches!(
            clients[0].handle(&bad_round),
            Err(Error::WrongRound { .. })
        ));
        // A good list; then shares that were tampered with, or addressed to someone else.
        let shares: Vec<ShareKeys> = clients
            .iter_mut()
            .map(|c| match c.handle(&list(keys.clone())).unwrap() {
                Message::ShareKeys(s) => s,
                _ => unreachable!(),
            })
            .collect();
        let for_0 = |tamper: bool| {
            let mut ct = shares[1].ciphertexts[0].1;
            if tamper {
                ct[5] ^= 1;
            }
            RoutedShares {
                header: config.header(),
                recipient: 0,
                ciphertexts: vec![(1, ct), (2, shares[2].ciphertexts[0].1)],
            }
        };
        assert_eq!(
            clients[0].handle(&Message::RoutedShares(for_0(true))),
            Err(Error::Decrypt { from: 1 })
        );
        let mut misaddressed = for_0(false);
        misaddressed.recipient = 1;
        assert!(matches!(
            clients[0].handle(&Message::RoutedShares(misaddressed)),
            Err(Error::BadContents { .. })
        ));
        // Ciphertexts swapped between senders do not open either (the ids are authenticated).
        let mut swapped = for_0(false);
        swapped.ciphertexts = vec![(1, swapped.ciphertexts[1].1), (2, swapped.ciphertexts[0].1)];
        assert_eq!(
            clients[0].handle(&Message::RoutedShares(swapped)),
            Err(Error::Decrypt { from: 1 })
        );
        assert!(matches!(
            clients[0].handle(&Message::RoutedShares(for_0(false))),
            Ok(Message::MaskedInput(_))
        ));
    }

    #[test]
    fn settings_and_updates_are_checked() {
        let ok = config(10, 6, 4);
        ok.check().unwrap();
        for bad in [
            config(10, 5, 4),
            config(10, 11, 4),
            config(1, 1, 4),
            config(256, 200, 4),
            config(10, 6, 0),
            Config {
                clip: f32::NAN,
                ..ok
            },
            Config { clip: 0.0, ..ok },
        ] {
            assert!(matches!(bad.check(), Err(Error::Config { .. })), "{bad:?}");
            assert!(Server::new(bad).is_err());
            // Encoding with a NaN clip would panic in f32::clamp: refused first.
            assert!(matches!(bad.encode(&[0.0; 4]), Err(Error::Config { .. })));
        }
        assert_eq!(
            Client::new(ok, 0, &seed(0), &[0.0, f32::NAN, 0.0, 0.0]).unwrap_err(),
            Error::NonFinite { index: 1 }
        );
        assert_eq!(
            Client::new(ok, 0, &seed(0), &[0.0, 0.0, f32::NEG_INFINITY, 0.0]).unwrap_err(),
            Error::NonFinite { index: 2 }
        );
        assert_eq!(
            Client::new(ok, 0, &seed(0), &[0.0; 3]).unwrap_err(),
            Error::WrongShape {
                expected: 4,
                found: 3
            }
        );
        assert!(matches!(
            Client::new(ok, 10, &seed(0), &[0.0; 4]),
            Err(Error::Config { .. })
        ));
    }

    #[test]
    fn sessions_are_deterministic_in_their_seeds_and_differ_across_rounds() {
        let c = config(3, 2, 8);
        let a = Client::new(c, 0, &seed(0), &[0.0; 8]).unwrap();
        let b = Client::new(c, 0, &seed(0), &[0.0; 8]).unwrap();
        assert_eq!(a.public_keys(), b.public_keys());
        let next = Client::new(Config { round: 8, ..c }, 0, &seed(0), &[0.0; 8]).unwrap();
        let other = Client::new(c, 0, &seed(1), &[0.0; 8]).unwrap();
        for k in [next.public_keys(), other.public_keys()] {
            assert_ne!(k.channel, a.public_keys().channel);
            assert_ne!(k.mask, a.public_keys().mask);
            assert_ne!(k.commitment, a.public_keys().commitment);
        }
    }
}
