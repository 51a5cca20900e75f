//! End-to-end sessions with forward secrecy and post-compromise security: the Double Ratchet
//! of the Signal specification (revision 1, 2016-11-20), seeded from a Noise IK handshake.
//!
//! # Construction
//!
//! The functions are the specification's recommended ones:
//!
//! - `GENERATE_DH` / `DH`: X25519 ([`crate::x25519`]); a non-contributory result is an error.
//! - `KDF_RK(rk, dh_out)`: HKDF-SHA256 with `rk` as salt, `dh_out` as input key material and
//!   the info `agentmesh/ratchet/root/v1`, giving 64 bytes: the new root key and chain key.
//! - `KDF_CK(ck)`: HMAC-SHA256 keyed by `ck`: message key = `HMAC(ck, 0x01)`, next chain key =
//!   `HMAC(ck, 0x02)`.
//! - `ENCRYPT(mk, plaintext, ad)`: ChaCha20-Poly1305 with `mk` as key and a random nonce sent
//!   with the message (one of the options the specification lists). A fixed nonce would also
//!   do while every message key is used once; the random one keeps a key reused after a
//!   state rollback (a crash restoring an older snapshot) from also reusing its nonce.
//! - `HEADER(dh, pn, n)`: the sender's ratchet public key, the previous chain's length and the
//!   message number; `CONCAT(ad, header)` is the format version, the length-prefixed
//!   associated data and the 40-byte header, all authenticated.
//!
//! Wire format: `version (1) | header (40) | nonce (12) | ciphertext | tag (16)`.
//!
//! As the specification requires, a message that fails to decrypt leaves the session exactly
//! as it was; at most [`MAX_SKIP`] message keys are skipped for one message and at most
//! [`MAX_SKIPPED_KEYS`] are stored (the oldest are dropped first).
//!
//! # Starting a session
//!
//! [`SessionSetup`] runs Noise IK: the initiator knows the responder's static X25519 key
//! (for agents, the key-agreement key of the responder's `did:key`). The responder's
//! handshake reply carries a fresh ratchet public key. Both sides then key the ratchet with a
//! secret exported from the finished handshake ([`crate::noise::Handshake::shared_secret`])
//! and use the handshake hash, which binds both static keys, as the associated data of every
//! message. The initiator sends first.
//!
//! # Delivery guarantees checked by the tests
//!
//! Every message decrypts exactly once; messages may arrive in any order as long as no
//! message is more than [`MAX_SKIP`] ahead of its chain and no more than [`MAX_SKIPPED_KEYS`]
//! keys are waiting; a replay fails with [`Error::Replay`]; a tampered message fails with
//! [`Error::Decrypt`] and changes nothing.

use std::collections::VecDeque;

use zeroize::Zeroizing;

use crate::aead::{AeadKey, NONCE_LEN};
use crate::error::{Error, Result};
use crate::kdf::{hkdf_sha256, hmac_sha256};
use crate::noise::{Handshake, Pattern};
use crate::x25519::{X25519Public, X25519Secret};

/// The most message keys one incoming message may make the session skip.
pub const MAX_SKIP: u32 = 1000;
/// The most skipped message keys a session stores; beyond it the oldest are dropped.
pub const MAX_SKIPPED_KEYS: usize = 2000;
/// The most plaintext one message may carry (1 MiB).
pub const MAX_PLAINTEXT_LEN: usize = 1024 * 1024;
/// Bytes a message adds to its plaintext: version, header and tag.
pub const OVERHEAD: usize = 1 + HEADER_LEN + NONCE_LEN + 16;
/// The most bytes an encoded message may take.
pub const MAX_MESSAGE_LEN: usize = MAX_PLAINTEXT_LEN + OVERHEAD;

const VERSION: u8 = 1;
const HEADER_LEN: usize = 32 + 4 + 4;
const ROOT_INFO: &[u8] = b"agentmesh/ratchet/root/v1";
const SETUP_LABEL: &[u8] = b"agentmesh/ratchet/noise-ik/v1";
const PROLOGUE: &[u8] = b"agentmesh/ratchet/v1";
/// Previous receiving ratchet keys remembered to tell replays from garbage.
const OLD_CHAINS: usize = 16;
const STATE_VERSION: u8 = 1;

type Key = Zeroizing<[u8; 32]>;

fn kdf_rk(rk: &[u8; 32], dh_out: &[u8; 32]) -> Result<(Key, Key)> {
    let mut out = Zeroizing::new([0u8; 64]);
    hkdf_sha256(rk, dh_out, &[ROOT_INFO], &mut out[..])?;
    let mut root = Zeroizing::new([0u8; 32]);
    let mut chain = Zeroizing::new([0u8; 32]);
    root.copy_from_slice(&out[..32]);
    chain.copy_from_slice(&out[32..]);
    Ok((root, chain))
}

fn kdf_ck(ck: &[u8; 32]) -> (Key, Key) {
    let mk = Zeroizing::new(hmac_sha256(ck, &[&[0x01]]));
    let next = Zeroizing::new(hmac_sha256(ck, &[&[0x02]]));
    (next, mk)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Header {
    dh: X25519Public,
    pn: u32,
    n: u32,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..32].copy_from_slice(&self.dh.0);
        out[32..36].copy_from_slice(&self.pn.to_le_bytes());
        out[36..].copy_from_slice(&self.n.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8; HEADER_LEN]) -> Self {
        let mut dh = [0u8; 32];
        dh.copy_from_slice(&bytes[..32]);
        let pn = u32::from_le_bytes([bytes[32], bytes[33], bytes[34], bytes[35]]);
        let n = u32::from_le_bytes([bytes[36], bytes[37], bytes[38], bytes[39]]);
        Self {
            dh: X25519Public(dh),
            pn,
            n,
        }
    }
}

/// `CONCAT(ad, header)`: the session's associated data, length-prefixed, then the header.
fn concat(ad: &[u8; 32], header: &[u8; HEADER_LEN]) -> [u8; 2 + 32 + HEADER_LEN] {
    let mut out = [0u8; 2 + 32 + HEADER_LEN];
    out[0] = VERSION;
    out[1] = 32;
    out[2..34].copy_from_slice(ad);
    out[34..].copy_from_slice(header);
    out
}

struct Skipped {
    dh: X25519Public,
    n: u32,
    mk: Key,
}

/// One side of a Double Ratchet session.
pub struct RatchetSession {
    dhs: X25519Secret,
    dhs_pub: X25519Public,
    dhr: Option<X25519Public>,
    rk: Key,
    cks: Option<Key>,
    ckr: Option<Key>,
    ns: u32,
    nr: u32,
    pn: u32,
    skipped: VecDeque<Skipped>,
    old_dhr: VecDeque<X25519Public>,
    ad: [u8; 32],
}

impl std::fmt::Debug for RatchetSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RatchetSession")
            .field("sent", &self.ns)
            .field("received", &self.nr)
            .field("skipped_keys", &self.skipped.len())
            .finish()
    }
}

/// Changes a decryption would make, applied only if the message authenticates.
struct Staged {
    /// A DH ratchet step: new sending key pair, its public key, the new receiving ratchet
    /// key, the new root key and the new sending chain key.
    ratchet: Option<(X25519Secret, X25519Public, X25519Public, Key, Key)>,
    ckr: Key,
    nr: u32,
    new_skipped: Vec<Skipped>,
}

impl RatchetSession {
    /// `RatchetInitAlice`: the side that sends first, knowing the other's ratchet public key.
    pub fn init_sender(sk: &[u8; 32], their_ratchet: &X25519Public, ad: [u8; 32]) -> Result<Self> {
        let dhs = X25519Secret::generate()?;
        let dh_out = dhs.diffie_hellman(their_ratchet)?;
        let (rk, cks) = kdf_rk(sk, &dh_out)?;
        Ok(Self {
            dhs_pub: dhs.public_key(),
            dhs,
            dhr: Some(*their_ratchet),
            rk,
            cks: Some(cks),
            ckr: None,
            ns: 0,
            nr: 0,
            pn: 0,
            skipped: VecDeque::new(),
            old_dhr: VecDeque::new(),
            ad,
        })
    }

    /// `RatchetInitBob`: the side that receives first, holding the ratchet key pair whose
    /// public half the sender used.
    pub fn init_receiver(sk: &[u8; 32], own_ratchet: X25519Secret, ad: [u8; 32]) -> Self {
        Self {
            dhs_pub: own_ratchet.public_key(),
            dhs: own_ratchet,
            dhr: None,
            rk: Zeroizing::new(*sk),
            cks: None,
            ckr: None,
            ns: 0,
            nr: 0,
            pn: 0,
            skipped: VecDeque::new(),
            old_dhr: VecDeque::new(),
            ad,
        }
    }

    /// The associated data every message of this session is bound to (for sessions made by
    /// [`SessionSetup`], the Noise handshake hash; both sides have the same value).
    pub fn associated_data(&self) -> [u8; 32] {
        self.ad
    }

    /// Number of skipped message keys currently stored.
    pub fn skipped_keys(&self) -> usize {
        self.skipped.len()
    }

    /// `RatchetEncrypt`: encrypts one message. A caller that persists the session should save
    /// it ([`Self::to_bytes`]) after this returns and before sending the message.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(Error::TooLarge {
                what: "ratchet plaintext",
                len: plaintext.len() as u64,
                max: MAX_PLAINTEXT_LEN as u64,
            });
        }
        let Some(cks) = &self.cks else {
            return Err(Error::Session {
                detail: "this side cannot send before it has received a message".into(),
            });
        };
        let n = self.ns;
        let next_ns = n.checked_add(1).ok_or_else(|| Error::Session {
            detail: "sending chain exhausted; start a new session".into(),
        })?;
        let (next_ck, mk) = kdf_ck(cks);
        let header = Header {
            dh: self.dhs_pub,
            pn: self.pn,
            n,
        }
        .encode();
        let nonce = crate::random_array::<NONCE_LEN>()?;
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.push(VERSION);
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        AeadKey::new(&mk).seal_in_place(&nonce, &concat(&self.ad, &header), &mut body)?;
        out.extend_from_slice(&body);
        self.cks = Some(next_ck);
        self.ns = next_ns;
        Ok(out)
    }

    /// `RatchetDecrypt`: decrypts one message. On any error the session is unchanged.
    ///
    /// [`Error::Replay`] is decided from the unauthenticated header (and also covers keys
    /// dropped to respect [`MAX_SKIPPED_KEYS`]): anyone can provoke it, so it is no evidence
    /// against the peer.
    pub fn decrypt(&mut self, message: &[u8]) -> Result<Vec<u8>> {
        if message.len() > MAX_MESSAGE_LEN {
            return Err(Error::TooLarge {
                what: "ratchet message",
                len: message.len() as u64,
                max: MAX_MESSAGE_LEN as u64,
            });
        }
        if message.len() < OVERHEAD {
            return Err(Error::Malformed {
                what: "ratchet message",
                detail: format!("{} bytes is shorter than a header and tag", message.len()),
            });
        }
        if message[0] != VERSION {
            return Err(Error::Version {
                what: "ratchet message",
                found: u32::from(message[0]),
            });
        }
        let header_bytes: [u8; HEADER_LEN] =
            message[1..1 + HEADER_LEN]
                .try_into()
                .map_err(|_| Error::Malformed {
                    what: "ratchet message",
                    detail: "header".into(),
                })?;
        let header = Header::decode(&header_bytes);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&message[1 + HEADER_LEN..1 + HEADER_LEN + NONCE_LEN]);
        let body = &message[1 + HEADER_LEN + NONCE_LEN..];
        let ad = concat(&self.ad, &header_bytes);

        // TrySkippedMessageKeys
        if let Some(pos) = self
            .skipped
            .iter()
            .position(|s| s.dh == header.dh && s.n == header.n)
        {
            let plain = open(&self.skipped[pos].mk, &nonce, &ad, body)?;
            self.skipped.remove(pos);
            return Ok(plain);
        }

        let current_chain = self.dhr == Some(header.dh);
        if current_chain && header.n < self.nr || self.old_dhr.contains(&header.dh) {
            return Err(Error::Replay {
                index: u64::from(header.n),
            });
        }

        let staged = self.stage(&header, current_chain)?;
        let plain = open(&staged.mk_for_message, &nonce, &ad, body)?;
        self.commit(staged.inner);
        Ok(plain)
    }

    /// Computes, without changing `self`, what receiving `header` implies.
    fn stage(&self, header: &Header, current_chain: bool) -> Result<StagedWithKey> {
        let mut new_skipped = Vec::new();
        let (mut ckr, mut nr, dhr, ratchet) = if current_chain {
            (self.ckr.clone(), self.nr, self.dhr, None)
        } else {
            // SkipMessageKeys(state, header.pn) on the current receiving chain.
            // The old chain's remaining keys are kept; the chain itself ends here.
            skip(
                self.ckr.clone(),
                self.dhr,
                self.nr,
                header.pn,
                &mut new_skipped,
            )?;
            // DHRatchet(state, header)
            let dh_out = self.dhs.diffie_hellman(&header.dh)?;
            let (rk, ckr) = kdf_rk(&self.rk, &dh_out)?;
            let new_dhs = X25519Secret::generate()?;
            let new_pub = new_dhs.public_key();
            let dh_out = new_dhs.diffie_hellman(&header.dh)?;
            let (rk, cks) = kdf_rk(&rk, &dh_out)?;
            (
                Some(ckr),
                0,
                Some(header.dh),
                Some((new_dhs, new_pub, header.dh, rk, cks)),
            )
        };
        // SkipMessageKeys(state, header.n)
        let (skipped_ckr, skipped_nr) = skip(ckr.take(), dhr, nr, header.n, &mut new_skipped)?;
        ckr = skipped_ckr;
        nr = skipped_nr;
        let Some(ck) = ckr else {
            return Err(Error::Session {
                detail: "no receiving chain for this message".into(),
            });
        };
        let (next_ck, mk) = kdf_ck(&ck);
        let nr = nr.checked_add(1).ok_or_else(|| Error::Session {
            detail: "receiving chain exhausted".into(),
        })?;
        Ok(StagedWithKey {
            mk_for_message: mk,
            inner: Staged {
                ratchet,
                ckr: next_ck,
                nr,
                new_skipped,
            },
        })
    }

    fn commit(&mut self, staged: Staged) {
        if let Some((dhs, dhs_pub, dhr, rk, cks)) = staged.ratchet {
            if let Some(old) = self.dhr.replace(dhr) {
                self.old_dhr.push_back(old);
                while self.old_dhr.len() > OLD_CHAINS {
                    self.old_dhr.pop_front();
                }
            }
            self.pn = self.ns;
            self.ns = 0;
            self.dhs = dhs;
            self.dhs_pub = dhs_pub;
            self.rk = rk;
            self.cks = Some(cks);
        }
        self.ckr = Some(staged.ckr);
        self.nr = staged.nr;
        for s in staged.new_skipped {
            self.skipped.push_back(s);
        }
        while self.skipped.len() > MAX_SKIPPED_KEYS {
            self.skipped.pop_front();
        }
    }

    /// The session state, to persist (it contains secrets: seal it before writing it out).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        // Exact size, so the buffer never reallocates (a reallocation would leave an unwiped
        // copy of the secrets behind).
        let len = 1
            + 32
            + 33
            + 32
            + 33
            + 33
            + 12
            + 32
            + 4
            + self.skipped.len() * 68
            + 4
            + self.old_dhr.len() * 32;
        let mut out = Zeroizing::new(Vec::with_capacity(len));
        out.push(STATE_VERSION);
        out.extend_from_slice(&self.dhs.to_bytes()[..]);
        put_opt(&mut out, self.dhr.as_ref().map(|k| &k.0));
        out.extend_from_slice(&self.rk[..]);
        put_opt(&mut out, self.cks.as_deref());
        put_opt(&mut out, self.ckr.as_deref());
        for v in [self.ns, self.nr, self.pn] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.ad);
        out.extend_from_slice(&(self.skipped.len() as u32).to_le_bytes());
        for s in &self.skipped {
            out.extend_from_slice(&s.dh.0);
            out.extend_from_slice(&s.n.to_le_bytes());
            out.extend_from_slice(&s.mk[..]);
        }
        out.extend_from_slice(&(self.old_dhr.len() as u32).to_le_bytes());
        for k in &self.old_dhr {
            out.extend_from_slice(&k.0);
        }
        debug_assert!(out.len() <= len, "state buffer reallocated");
        out
    }

    /// Restores a session saved by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = StateReader { bytes, pos: 0 };
        let version = r.take::<1>()?[0];
        if version != STATE_VERSION {
            return Err(Error::Version {
                what: "ratchet state",
                found: u32::from(version),
            });
        }
        let dhs = X25519Secret::from_bytes(*r.take::<32>()?);
        let dhr = r.opt()?.map(|k| X25519Public(*k));
        let rk = r.take::<32>()?;
        let cks = r.opt()?;
        let ckr = r.opt()?;
        let ns = r.u32()?;
        let nr = r.u32()?;
        let pn = r.u32()?;
        let ad = *r.take::<32>()?;
        let count = r.count("skipped keys", MAX_SKIPPED_KEYS)?;
        let mut skipped = VecDeque::with_capacity(count);
        for _ in 0..count {
            let dh = X25519Public(*r.take::<32>()?);
            let n = r.u32()?;
            let mk = r.take::<32>()?;
            skipped.push_back(Skipped { dh, n, mk });
        }
        let count = r.count("old chains", OLD_CHAINS)?;
        let mut old_dhr = VecDeque::with_capacity(count);
        for _ in 0..count {
            old_dhr.push_back(X25519Public(*r.take::<32>()?));
        }
        if r.pos != bytes.len() {
            return Err(Error::Malformed {
                what: "ratchet state",
                detail: "trailing bytes".into(),
            });
        }
        Ok(Self {
            dhs_pub: dhs.public_key(),
            dhs,
            dhr,
            rk,
            cks,
            ckr,
            ns,
            nr,
            pn,
            skipped,
            old_dhr,
            ad,
        })
    }
}

struct StagedWithKey {
    mk_for_message: Key,
    inner: Staged,
}

/// `SkipMessageKeys`: advances a receiving chain from `nr` to `until`, collecting the keys.
fn skip(
    ckr: Option<Key>,
    dhr: Option<X25519Public>,
    nr: u32,
    until: u32,
    out: &mut Vec<Skipped>,
) -> Result<(Option<Key>, u32)> {
    if until <= nr {
        return Ok((ckr, nr));
    }
    if until - nr > MAX_SKIP {
        return Err(Error::Session {
            detail: format!(
                "message is {} ahead of its chain, more than {MAX_SKIP}",
                until - nr
            ),
        });
    }
    let (Some(mut ck), Some(dh)) = (ckr, dhr) else {
        // No receiving chain yet: nothing was sent on it, nothing to skip.
        return Ok((None, nr));
    };
    let mut n = nr;
    while n < until {
        let (next, mk) = kdf_ck(&ck);
        out.push(Skipped { dh, n, mk });
        ck = next;
        n += 1;
    }
    Ok((Some(ck), n))
}

fn open(mk: &[u8; 32], nonce: &[u8; NONCE_LEN], ad: &[u8], body: &[u8]) -> Result<Vec<u8>> {
    AeadKey::new(mk)
        .open(nonce, ad, body)
        .map_err(|_| Error::Decrypt {
            what: "ratchet message",
        })
}

fn put_opt(out: &mut Vec<u8>, v: Option<&[u8; 32]>) {
    match v {
        Some(k) => {
            out.push(1);
            out.extend_from_slice(k);
        }
        None => out.push(0),
    }
}

struct StateReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl StateReader<'_> {
    fn take<const N: usize>(&mut self) -> Result<Zeroizing<[u8; N]>> {
        let end = self
            .pos
            .checked_add(N)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| Error::Malformed {
                what: "ratchet state",
                detail: "truncated".into(),
            })?;
        let mut out = Zeroizing::new([0u8; N]);
        out.copy_from_slice(&self.bytes[self.pos..end]);
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(*self.take::<4>()?))
    }

    /// A `u32` element count, refused above `max`.
    fn count(&mut self, what: &'static str, max: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(Error::TooLarge {
                what,
                len: n as u64,
                max: max as u64,
            });
        }
        Ok(n)
    }

    fn opt(&mut self) -> Result<Option<Key>> {
        match self.take::<1>()?[0] {
            0 => Ok(None),
            1 => Ok(Some(self.take::<32>()?)),
            other => Err(Error::Malformed {
                what: "ratchet state",
                detail: format!("option tag {other}"),
            }),
        }
    }
}

/// The initiator's half-finished session setup (Noise IK, message 1 sent).
pub struct SessionSetup {
    handshake: Handshake,
}

impl std::fmt::Debug for SessionSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSetup(..)")
    }
}

impl SessionSetup {
    /// Starts a session to the holder of static key `remote`; returns the setup and the first
    /// handshake message to send them.
    pub fn initiate(local: &X25519Secret, remote: &X25519Public) -> Result<(Self, Vec<u8>)> {
        let mut handshake = Handshake::initiator(Pattern::IK, local, Some(remote), PROLOGUE)?;
        let message = handshake.write_message(&[])?;
        Ok((Self { handshake }, message))
    }

    /// Answers a first handshake message: returns the session, the initiator's static key (to
    /// check against the DID it claims) and the reply to send back.
    ///
    /// The key is tentative: a first message can be replayed, so it proves nothing until the
    /// new session decrypts a message. Keep any existing session with that peer until then.
    pub fn respond(
        local: &X25519Secret,
        first: &[u8],
    ) -> Result<(RatchetSession, X25519Public, Vec<u8>)> {
        let mut handshake = Handshake::responder(Pattern::IK, local, PROLOGUE)?;
        handshake.read_message(first)?;
        let their_static = handshake.remote_static().ok_or_else(|| Error::Noise {
            detail: "no initiator static key".into(),
        })?;
        let ratchet = X25519Secret::generate()?;
        let reply = handshake.write_message(&ratchet.public_key().0)?;
        let sk = handshake.shared_secret(SETUP_LABEL)?;
        let session = RatchetSession::init_receiver(&sk, ratchet, handshake.handshake_hash());
        Ok((session, their_static, reply))
    }

    /// Reads the responder's reply and returns the session (this side sends first).
    pub fn finish(mut self, reply: &[u8]) -> Result<RatchetSession> {
        let payload = self.handshake.read_message(reply)?;
        let their_ratchet = X25519Public::from_slice(&payload).map_err(|_| Error::Malformed {
            what: "session setup reply",
            detail: format!(
                "{}-byte payload, expected a 32-byte ratchet key",
                payload.len()
            ),
        })?;
        let sk = self.handshake.shared_secret(SETUP_LABEL)?;
        RatchetSession::init_sender(&sk, &their_ratchet, self.handshake.handshake_hash())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn pair() -> (RatchetSession, RatchetSession) {
        let alice = X25519Secret::from_bytes([1; 32]);
        let bob = X25519Secret::from_bytes([2; 32]);
        let (setup, m1) = SessionSetup::initiate(&alice, &bob.public_key()).unwrap();
        let (b, alice_static, m2) = SessionSetup::respond(&bob, &m1).unwrap();
        assert_eq!(alice_static, alice.public_key());
        let a = setup.finish(&m2).unwrap();
        assert_eq!(a.associated_data(), b.associated_data());
        (a, b)
    }

    #[test]
    fn conversation_replay_and_tamper() {
        let (mut a, mut b) = pair();
        assert!(
            b.encrypt(b"too early").is_err(),
            "the responder waits for the first message"
        );
        let m = a.encrypt(b"hi bob").unwrap();
        assert_eq!(b.decrypt(&m).unwrap(), b"hi bob");
        assert!(matches!(b.decrypt(&m), Err(Error::Replay { .. })));
        let reply = b.encrypt(b"hi alice").unwrap();
        assert_eq!(a.decrypt(&reply).unwrap(), b"hi alice");
        let m2 = a.encrypt(b"new chain").unwrap();
        for i in 0..m2.len() {
            let mut bad = m2.clone();
            bad[i] ^= 0x20;
            assert!(b.decrypt(&bad).is_err(), "flip at byte {i} accepted");
        }
        // Nothing changed: the genuine message still decrypts.
        assert_eq!(b.decrypt(&m2).unwrap(), b"new chain");
        // A replay from an old chain is recognised as such.
        assert!(matches!(b.decrypt(&m), Err(Error::Replay { .. })));
    }

    #[test]
    fn state_round_trips_through_bytes() {
        let (mut a, mut b) = pair();
        let m1 = a.encrypt(b"one").unwrap();
        let m2 = a.encrypt(b"two").unwrap();
        b.decrypt(&m2).unwrap(); // m1's key is now a skipped key
        let mut restored = RatchetSession::from_bytes(&b.to_bytes()).unwrap();
        assert_eq!(restored.decrypt(&m1).unwrap(), b"one");
        assert!(RatchetSession::from_bytes(&b.to_bytes()[..50]).is_err());
        let mut long = b.to_bytes().to_vec();
        long.push(0);
        assert!(RatchetSession::from_bytes(&long).is_err());
    }

    #[test]
    fn a_rolled_back_state_does_not_reuse_a_nonce() {
        let (mut a, mut b) = pair();
        let snapshot = a.to_bytes();
        let m1 = a.encrypt(b"first version").unwrap();
        let mut rolled_back = RatchetSession::from_bytes(&snapshot).unwrap();
        let m2 = rolled_back.encrypt(b"other text!!!").unwrap();
        // Same key (same chain position), but the nonces differ.
        assert_eq!(m1[..1 + HEADER_LEN], m2[..1 + HEADER_LEN]);
        assert_ne!(
            m1[1 + HEADER_LEN..OVERHEAD - 16],
            m2[1 + HEADER_LEN..OVERHEAD - 16]
        );
        assert_eq!(b.decrypt(&m1).unwrap(), b"first version");
    }

    #[test]
    fn malformed_messages_are_rejected_without_panicking() {
        let (_, mut b) = pair();
        assert!(b.decrypt(&[]).is_err());
        assert!(b.decrypt(&[1; 10]).is_err());
        assert!(matches!(
            b.decrypt(&[9; OVERHEAD]),
            Err(Error::Version { .. })
        ));
        assert!(b.decrypt(&vec![1; MAX_MESSAGE_LEN + 1]).is_err());
        // A header naming a low-order ratchet key cannot start a chain.
        let mut m = vec![VERSION];
        m.extend_from_slice(&[0; HEADER_LEN + 16]);
        assert!(b.decrypt(&m).is_err());
    }
}
