//! Noise handshakes (XX and IK) and transport encryption, on `snow`.
//!
//! The suite is `25519_ChaChaPoly_SHA256`: ChaCha20-Poly1305 and SHA-256 from `ring`, X25519
//! from `x25519-dalek` (one curve implementation for the whole workspace).
//!
//! - **XX**: neither side knows the other's static key in advance; three messages.
//! - **IK**: the initiator knows the responder's static key; two messages, and the first
//!   already carries an encrypted payload.
//!
//! Drive a [`Handshake`] by alternating [`Handshake::write_message`] and
//! [`Handshake::read_message`] until [`Handshake::is_finished`], then turn it into a
//! [`Transport`].

use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, RingResolver};
use snow::types::{Cipher, Dh, Hash, Random};

use crate::error::{Error, Result};
use crate::x25519::{X25519Public, X25519Secret};

/// The largest Noise message (the protocol's own limit).
pub const MAX_MESSAGE_LEN: usize = 65_535;
/// Authentication tag overhead per transport message.
pub const TAG_LEN: usize = 16;
/// The largest plaintext one transport message carries.
pub const MAX_PLAINTEXT_LEN: usize = MAX_MESSAGE_LEN - TAG_LEN;

/// Which handshake pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Mutual authentication, no prior knowledge.
    XX,
    /// The initiator knows the responder's static key.
    IK,
}

impl Pattern {
    fn params(self) -> &'static str {
        match self {
            Self::XX => "Noise_XX_25519_ChaChaPoly_SHA256",
            Self::IK => "Noise_IK_25519_ChaChaPoly_SHA256",
        }
    }
}

fn noise_err(step: &'static str) -> impl FnOnce(snow::Error) -> Error {
    move |e| Error::Noise {
        detail: format!("{step}: {e}"),
    }
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(Error::TooLarge {
            what,
            len: len as u64,
            max: max as u64,
        });
    }
    Ok(())
}

/// Runs a snow operation writing into a buffer of `capacity` bytes; returns what it wrote.
fn into_vec(
    capacity: usize,
    step: &'static str,
    op: impl FnOnce(&mut [u8]) -> std::result::Result<usize, snow::Error>,
) -> Result<Vec<u8>> {
    let mut out = vec![0u8; capacity];
    let n = op(&mut out).map_err(noise_err(step))?;
    out.truncate(n);
    Ok(out)
}

/// X25519 for snow, from x25519-dalek.
#[derive(Default)]
struct Dalek25519 {
    secret: [u8; 32],
    public: [u8; 32],
}

impl Drop for Dalek25519 {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

impl Dh for Dalek25519 {
    fn name(&self) -> &'static str {
        "25519"
    }
    fn pub_len(&self) -> usize {
        32
    }
    fn priv_len(&self) -> usize {
        32
    }
    fn set(&mut self, privkey: &[u8]) {
        // snow checks the length against priv_len before calling set.
        let mut secret = [0u8; 32];
        let n = privkey.len().min(32);
        secret[..n].copy_from_slice(&privkey[..n]);
        self.public = X25519Secret::from_bytes(secret).public_key().0;
        self.secret = secret;
        zeroize::Zeroize::zeroize(&mut secret);
    }
    fn generate(&mut self, rng: &mut dyn Random) -> std::result::Result<(), snow::Error> {
        let mut secret = [0u8; 32];
        rng.try_fill_bytes(&mut secret)?;
        self.set(&secret);
        zeroize::Zeroize::zeroize(&mut secret);
        Ok(())
    }
    fn pubkey(&self) -> &[u8] {
        &self.public
    }
    fn privkey(&self) -> &[u8] {
        &self.secret
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> std::result::Result<(), snow::Error> {
        // snow hands over its fixed-size key buffer; the key is its first 32 bytes.
        let their = pubkey
            .get(..32)
            .ok_or(snow::Error::Dh)
            .and_then(|k| X25519Public::from_slice(k).map_err(|_| snow::Error::Dh))?;
        let shared = X25519Secret::from_bytes(self.secret)
            .diffie_hellman(&their)
            .map_err(|_| snow::Error::Dh)?;
        let n = out.len().min(32);
        out[..n].copy_from_slice(&shared[..n]);
        Ok(())
    }
}

/// ring for ciphers, hashes and randomness; x25519-dalek for the curve.
struct Resolver;

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        RingResolver.resolve_rng()
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        matches!(choice, DHChoice::Curve25519).then(|| Box::<Dalek25519>::default() as Box<dyn Dh>)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        RingResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        RingResolver.resolve_cipher(choice)
    }
}

/// A handshake in progress.
pub struct Handshake {
    state: snow::HandshakeState,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("initiator", &self.state.is_initiator())
            .field("finished", &self.state.is_handshake_finished())
            .finish()
    }
}

impl Handshake {
    fn builder(pattern: Pattern) -> Result<snow::Builder<'static>> {
        let params = pattern
            .params()
            .parse()
            .map_err(noise_err("parsing parameters"))?;
        Ok(snow::Builder::with_resolver(params, Box::new(Resolver)))
    }

    /// Starts as initiator with static key `local`. IK needs the responder's static key.
    pub fn initiator(
        pattern: Pattern,
        local: &X25519Secret,
        remote: Option<&X25519Public>,
        prologue: &[u8],
    ) -> Result<Self> {
        let local = local.to_bytes();
        let mut b = Self::builder(pattern)?
            .local_private_key(&local[..])
            .map_err(noise_err("setting the local key"))?
            .prologue(prologue)
            .map_err(noise_err("setting the prologue"))?;
        match (pattern, remote) {
            (Pattern::IK, Some(r)) => {
                b = b
                    .remote_public_key(&r.0)
                    .map_err(noise_err("setting the remote key"))?;
            }
            (Pattern::IK, None) => {
                return Err(Error::Noise {
                    detail: "IK needs the responder's static key".into(),
                });
            }
            (Pattern::XX, _) => {}
        }
        let state = b
            .build_initiator()
            .map_err(noise_err("starting the initiator"))?;
        Ok(Self { state })
    }

    /// Starts as responder with static key `local`.
    pub fn responder(pattern: Pattern, local: &X25519Secret, prologue: &[u8]) -> Result<Self> {
        let local = local.to_bytes();
        let state = Self::builder(pattern)?
            .local_private_key(&local[..])
            .map_err(noise_err("setting the local key"))?
            .prologue(prologue)
            .map_err(noise_err("setting the prologue"))?
            .build_responder()
            .map_err(noise_err("starting the responder"))?;
        Ok(Self { state })
    }

    /// Writes the next handshake message carrying `payload`.
    pub fn write_message(&mut self, payload: &[u8]) -> Result<Vec<u8>> {
        let state = &mut self.state;
        into_vec(MAX_MESSAGE_LEN, "writing a handshake message", |out| {
            state.write_message(payload, out)
        })
    }

    /// Reads the peer's next handshake message; returns its payload.
    pub fn read_message(&mut self, message: &[u8]) -> Result<Vec<u8>> {
        check_len("Noise message", message.len(), MAX_MESSAGE_LEN)?;
        let state = &mut self.state;
        into_vec(message.len(), "reading a handshake message", |out| {
            state.read_message(message, out)
        })
    }

    /// Whether the handshake is complete.
    pub fn is_finished(&self) -> bool {
        self.state.is_handshake_finished()
    }

    /// The peer's static key, once received.
    pub fn remote_static(&self) -> Option<X25519Public> {
        self.state
            .get_remote_static()
            .and_then(|k| X25519Public::from_slice(k).ok())
    }

    /// The handshake hash: a value both sides share, for channel binding.
    pub fn handshake_hash(&self) -> [u8; 32] {
        let mut h = [0u8; 32];
        let hash = self.state.get_handshake_hash();
        let n = hash.len().min(32);
        h[..n].copy_from_slice(&hash[..n]);
        h
    }

    /// A 32-byte secret both sides of a finished handshake share, for keying another protocol
    /// (the Double Ratchet): HKDF over both Noise split keys, salted with the handshake hash and
    /// labelled with `label`.
    pub fn shared_secret(&mut self, label: &[u8]) -> Result<zeroize::Zeroizing<[u8; 32]>> {
        if !self.state.is_handshake_finished() {
            return Err(Error::Noise {
                detail: "the handshake is not finished".into(),
            });
        }
        let (k1, k2) = self.state.dangerously_get_raw_split();
        let (k1, k2) = (zeroize::Zeroizing::new(k1), zeroize::Zeroizing::new(k2));
        let mut ikm = zeroize::Zeroizing::new([0u8; 64]);
        ikm[..32].copy_from_slice(&k1[..]);
        ikm[32..].copy_from_slice(&k2[..]);
        let mut out = zeroize::Zeroizing::new([0u8; 32]);
        crate::kdf::hkdf_sha256(&self.handshake_hash(), &ikm[..], &[label], &mut out[..])?;
        Ok(out)
    }

    /// Turns a finished handshake into a transport.
    pub fn into_transport(self) -> Result<Transport> {
        let remote = self.remote_static();
        let hash = self.handshake_hash();
        let state = self
            .state
            .into_transport_mode()
            .map_err(noise_err("finishing the handshake"))?;
        Ok(Transport {
            state,
            remote,
            hash,
        })
    }
}

/// An established Noise session.
pub struct Transport {
    state: snow::TransportState,
    remote: Option<X25519Public>,
    hash: [u8; 32],
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("remote", &self.remote)
            .finish()
    }
}

impl Transport {
    /// Encrypts one message (at most [`MAX_PLAINTEXT_LEN`] bytes).
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>> {
        check_len("Noise plaintext", plaintext.len(), MAX_PLAINTEXT_LEN)?;
        let state = &mut self.state;
        into_vec(plaintext.len() + TAG_LEN, "encrypting", |out| {
            state.write_message(plaintext, out)
        })
    }

    /// Decrypts one message. Messages must arrive in order: Noise transport uses implicit
    /// counters, so a dropped, reordered or replayed message fails.
    pub fn decrypt(&mut self, message: &[u8]) -> Result<Vec<u8>> {
        check_len("Noise message", message.len(), MAX_MESSAGE_LEN)?;
        let state = &mut self.state;
        into_vec(message.len(), "decrypting", |out| {
            state.read_message(message, out)
        })
    }

    /// The peer's static key.
    pub fn remote_static(&self) -> Option<X25519Public> {
        self.remote
    }

    /// The handshake hash, for channel binding.
    pub fn handshake_hash(&self) -> [u8; 32] {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pattern: Pattern) {
        let a = X25519Secret::from_bytes([1; 32]);
        let b = X25519Secret::from_bytes([2; 32]);
        let mut i = Handshake::initiator(pattern, &a, Some(&b.public_key()), b"agentmesh").unwrap();
        let mut r = Handshake::responder(pattern, &b, b"agentmesh").unwrap();
        let m1 = i.write_message(b"hello").unwrap();
        assert_eq!(r.read_message(&m1).unwrap(), b"hello");
        let m2 = r.write_message(b"welcome").unwrap();
        assert_eq!(i.read_message(&m2).unwrap(), b"welcome");
        if pattern == Pattern::XX {
            let m3 = i.write_message(b"").unwrap();
            r.read_message(&m3).unwrap();
        }
        assert!(i.is_finished() && r.is_finished());
        assert_eq!(i.remote_static(), Some(b.public_key()));
        assert_eq!(r.remote_static(), Some(a.public_key()));
        assert_eq!(i.handshake_hash(), r.handshake_hash());
        let mut ti = i.into_transport().unwrap();
        let mut tr = r.into_transport().unwrap();
        let c = ti.encrypt(b"data").unwrap();
        assert_eq!(tr.decrypt(&c).unwrap(), b"data");
        assert!(tr.decrypt(&c).is_err(), "a replay fails");
    }

    #[test]
    fn xx_and_ik_complete_and_bind_keys() {
        run(Pattern::XX);
        run(Pattern::IK);
    }

    #[test]
    fn mismatched_prologue_or_tampering_fails() {
        let a = X25519Secret::from_bytes([1; 32]);
        let b = X25519Secret::from_bytes([2; 32]);
        let mut i = Handshake::initiator(Pattern::IK, &a, Some(&b.public_key()), b"v1").unwrap();
        let mut r = Handshake::responder(Pattern::IK, &b, b"v2").unwrap();
        let m1 = i.write_message(b"x").unwrap();
        assert!(r.read_message(&m1).is_err());
        assert!(Handshake::initiator(Pattern::IK, &a, None, b"").is_err());
        let mut r = Handshake::responder(Pattern::XX, &b, b"").unwrap();
        assert!(r.read_message(&[0u8; 3]).is_err());
        assert!(r.read_message(&vec![0u8; MAX_MESSAGE_LEN + 1]).is_err());
    }
}
