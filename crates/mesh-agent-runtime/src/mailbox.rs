//! [`Mailbox`]: an agent's end-to-end sessions, its received and sent messages, in one
//! key-value tree, crash-safe and exactly-once.
//!
//! # Sessions
//!
//! A session to a peer DID is a Double Ratchet started by a Noise IK handshake to the peer's
//! DID key-agreement key ([`mesh_crypto::ratchet::SessionSetup`]): only the holder of that DID
//! can answer it. The hello and the reply travel as signed envelopes (`session.hello`,
//! `session.reply`). A peer may hold several sessions with us at once (both sides may start
//! one at the same moment, or one side may have lost its state): each is stored under its
//! handshake hash, every message names the session it belongs to, and the one used to send is
//! the newest session that is *confirmed*: one we started (the reply proves the peer), or one
//! the peer started that has decrypted a message (a replayed hello proves nothing until
//! then).
//!
//! # Crash safety and exactly-once
//!
//! Sending ([`Mailbox::seal`]) stores the advanced ratchet before it returns the envelope,
//! so a crash can skip a message key (the receiver tolerates gaps) but never reuse one.
//! Receiving ([`Mailbox::receive`]) decrypts with a copy of the stored ratchet and then writes,
//! in one batch, the message, its id in the duplicate index and the advanced ratchet: a crash
//! before the batch leaves the old ratchet, so a redelivery decrypts again; after it, the
//! redelivery is recognised by its id ([`Opened::Duplicate`]) and can be acknowledged.
//!
//! # Call order
//!
//! To send to a peer without a session: [`Mailbox::start_session`] → carry the hello to the
//! peer, which calls [`Mailbox::accept_session`] and answers with its reply →
//! [`Mailbox::finish_session`]. Then [`Mailbox::seal`] for every message, and the receiver
//! calls [`Mailbox::receive`] on each delivery. Every call takes the current time; nothing here
//! reads a clock or touches a socket.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use mesh_crypto::ratchet::{RatchetSession, SessionSetup};
use mesh_identity::envelope::{Metadata, Priority};
use mesh_identity::{Did, Envelope, Identity};
use mesh_store::{Batch, Kv};
use mesh_types::wire::{self, Reader};
use mesh_types::{MessageId, Timestamp};

use crate::error::{Error, Result, malformed, wire as wire_err};

/// The envelope type of a session hello.
pub const HELLO_KIND: &str = "session.hello";
/// The envelope type of a session reply.
pub const REPLY_KIND: &str = "session.reply";
/// Largest message body, in bytes.
pub const MAX_BODY_LEN: usize = 256 * 1024;
/// Most sessions kept per peer (the oldest is dropped beyond it).
pub const MAX_SESSIONS_PER_PEER: usize = 4;
/// Most messages one listing returns.
pub const MAX_LIST: usize = 1_000;
/// How long a session hello or reply stays valid.
pub const HANDSHAKE_TTL: Duration = Duration::from_secs(120);

const SESSION_ID_LEN: usize = 32;

/// A message this agent received, decrypted and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Position in the inbox or outbox (from 0).
    pub seq: u64,
    /// The envelope id.
    pub id: MessageId,
    /// The other agent (the sender of a received message, the recipient of a sent one).
    pub peer: Did,
    /// The message type, such as `chat`.
    pub kind: String,
    /// When the sender signed it.
    pub timestamp: Timestamp,
    /// The plaintext.
    pub body: Vec<u8>,
}

/// What [`Mailbox::receive`] made of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// A new message, now stored in the inbox.
    New(Message),
    /// A message received before (acknowledge it again, deliver nothing).
    Duplicate(MessageId),
}

/// A session this agent started, waiting for the peer's reply.
#[derive(Debug)]
pub struct PendingSession {
    peer: Did,
    setup: SessionSetup,
}

impl PendingSession {
    /// The peer the session is for.
    pub fn peer(&self) -> &Did {
        &self.peer
    }
}

/// The sealed form of an outgoing message.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The envelope id.
    pub id: MessageId,
    /// Its position in the outbox.
    pub seq: u64,
    /// The signed envelope's bytes, to deliver to the peer.
    pub envelope: Vec<u8>,
    /// When the envelope expires.
    pub expires: Timestamp,
}

/// Counts of what the mailbox holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages received.
    pub received: u64,
    /// Messages sent.
    pub sent: u64,
}

/// An agent's sessions and messages over one key-value tree.
pub struct Mailbox<K: Kv> {
    kv: K,
    me: Arc<Identity>,
    counts: Counts,
}

impl<K: Kv> std::fmt::Debug for Mailbox<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("did", self.me.did())
            .field("counts", &self.counts)
            .finish()
    }
}

// Keys of the tree.
const INBOX: &[u8] = b"i/";
const OUTBOX: &[u8] = b"o/";
const SEEN: &[u8] = b"m/";
const SESSION: &[u8] = b"s/";
const CURRENT: &[u8] = b"c/";
const NEXT_IN: &[u8] = b"n/i";
const NEXT_OUT: &[u8] = b"n/o";

fn key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

fn seq_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    key(prefix, &[&seq.to_be_bytes()])
}

fn session_key(peer: &Did, session: &[u8; SESSION_ID_LEN]) -> Vec<u8> {
    key(SESSION, &[peer.as_str().as_bytes(), session])
}

/// A stored session: when it was made, whether it is confirmed, and the ratchet.
struct Stored {
    created: u64,
    confirmed: bool,
    ratchet: Vec<u8>,
}

impl Stored {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.ratchet.len() + 12);
        wire::put_varint(&mut out, self.created);
        out.push(u8::from(self.confirmed));
        out.extend_from_slice(&self.ratchet);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let e = wire_err("stored session");
        let mut r = Reader::new(bytes);
        let created = r.varint().map_err(&e)?;
        let confirmed = r.u8().map_err(&e)? != 0;
        let ratchet = r.bytes(r.remaining()).map_err(&e)?.to_vec();
        Ok(Self {
            created,
            confirmed,
            ratchet,
        })
    }
}

fn encode_message(m: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.body.len() + 128);
    out.extend_from_slice(m.id.as_bytes());
    wire::put_len_prefixed(&mut out, m.peer.as_str().as_bytes());
    wire::put_len_prefixed(&mut out, m.kind.as_bytes());
    wire::put_varint(&mut out, m.timestamp.0);
    out.extend_from_slice(&m.body);
    out
}

fn decode_message(seq: u64, bytes: &[u8]) -> Result<Message> {
    let e = wire_err("stored message");
    let mut r = Reader::new(bytes);
    let id = MessageId(r.array::<16>().map_err(&e)?);
    let peer = std::str::from_utf8(r.len_prefixed("peer", 128).map_err(&e)?)
        .map_err(|_| malformed("stored message", "peer is not UTF-8"))?;
    let peer = Did::parse(peer)?;
    let kind = std::str::from_utf8(r.len_prefixed("kind", 64).map_err(&e)?)
        .map_err(|_| malformed("stored message", "kind is not UTF-8"))?
        .to_owned();
    let timestamp = Timestamp(r.varint().map_err(&e)?);
    let body = r.bytes(r.remaining()).map_err(&e)?.to_vec();
    Ok(Message {
        seq,
        id,
        peer,
        kind,
        timestamp,
        body,
    })
}

fn same_peer(did: &Did, transport_peer: &[u8]) -> Result<bool> {
    Ok(mesh_identity::did::peer_id_bytes(&did.verifying_key()?) == transport_peer)
}

impl<K: Kv> Mailbox<K> {
    /// Opens the mailbox of `me` in `kv` (empty for a new agent).
    pub fn open(kv: K, me: Arc<Identity>) -> Result<Self> {
        let count = |k: &[u8]| -> Result<u64> {
            match kv.get(k)? {
                None => Ok(0),
                Some(v) => v
                    .as_slice()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| malformed("mailbox counter", "not 8 bytes")),
            }
        };
        let counts = Counts {
            received: count(NEXT_IN)?,
            sent: count(NEXT_OUT)?,
        };
        Ok(Self { kv, me, counts })
    }

    /// This agent's DID.
    pub fn did(&self) -> &Did {
        self.me.did()
    }

    /// How many messages were received and sent.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    fn envelope(
        &self,
        id: MessageId,
        kind: &str,
        to: &Did,
        content: Vec<u8>,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Envelope> {
        let metadata = Metadata {
            priority: Priority::Normal,
            ttl,
        };
        Ok(Envelope::sign(
            &self.me,
            id,
            kind,
            to.clone(),
            now,
            content,
            metadata,
        )?)
    }

    /// Parses and checks an envelope from the transport peer `from` (its libp2p peer id
    /// bytes): signature, ttl, addressed to us, and signed by the DID of that very peer.
    fn checked(&self, bytes: &[u8], from: &[u8], now: Timestamp) -> Result<Envelope> {
        let env = Envelope::from_bytes(bytes)?;
        env.verify(now)?;
        if &env.recipient != self.me.did() {
            return Err(Error::Refused {
                what: "envelope",
                detail: format!("addressed to {}, not to this agent", env.recipient),
            });
        }
        if !same_peer(&env.sender, from)? {
            return Err(Error::Refused {
                what: "envelope",
                detail: format!("signed by {} but sent by another peer", env.sender),
            });
        }
        Ok(env)
    }

    /// Whether a confirmed session to `peer` exists (messages can be sealed for it).
    pub fn has_session(&self, peer: &Did) -> Result<bool> {
        Ok(self.current(peer)?.is_some())
    }

    fn current(&self, peer: &Did) -> Result<Option<[u8; SESSION_ID_LEN]>> {
        let Some(v) = self.kv.get(&key(CURRENT, &[peer.as_str().as_bytes()]))? else {
            return Ok(None);
        };
        let id: [u8; SESSION_ID_LEN] = v
            .as_slice()
            .try_into()
            .map_err(|_| malformed("stored session pointer", "not 32 bytes"))?;
        Ok(Some(id))
    }

    /// Starts a session to `peer`: returns the pending setup and the signed hello envelope
    /// to carry to the peer.
    pub fn start_session(&self, peer: &Did, now: Timestamp) -> Result<(PendingSession, Vec<u8>)> {
        if peer == self.me.did() {
            return Err(Error::Refused {
                what: "session",
                detail: "an agent cannot open a session to itself".into(),
            });
        }
        let (setup, hello) =
            SessionSetup::initiate(&self.me.key_agreement_secret(), &peer.key_agreement_key()?)?;
        let id = MessageId(mesh_crypto::random_array::<16>()?);
        let env = self.envelope(id, HELLO_KIND, peer, hello, HANDSHAKE_TTL, now)?;
        Ok((
            PendingSession {
                peer: peer.clone(),
                setup,
            },
            env.to_bytes(),
        ))
    }

    /// Answers a session hello from transport peer `from`: stores the new (unconfirmed)
    /// session and returns the signed reply envelope. Returns the peer's DID too.
    pub fn accept_session(
        &mut self,
        hello: &[u8],
        from: &[u8],
        now: Timestamp,
    ) -> Result<(Did, Vec<u8>)> {
        let env = self.checked(hello, from, now)?;
        if env.kind != HELLO_KIND {
            return Err(malformed(
                "session hello",
                format!("envelope of type {:?}", env.kind),
            ));
        }
        let (session, initiator, reply) =
            SessionSetup::respond(&self.me.key_agreement_secret(), &env.content)?;
        if initiator != env.sender.key_agreement_key()? {
            return Err(Error::Refused {
                what: "session hello",
                detail: format!("its handshake key is not the key of {}", env.sender),
            });
        }
        self.store_session(&env.sender, &session, false, now, None)?;
        let id = MessageId(mesh_crypto::random_array::<16>()?);
        let reply = self.envelope(id, REPLY_KIND, &env.sender, reply, HANDSHAKE_TTL, now)?;
        Ok((env.sender, reply.to_bytes()))
    }

    /// Completes a session this agent started, with the peer's reply envelope from transport
    /// peer `from`. The session becomes the one messages to the peer are sealed with.
    pub fn finish_session(
        &mut self,
        pending: PendingSession,
        reply: &[u8],
        from: &[u8],
        now: Timestamp,
    ) -> Result<()> {
        let env = self.checked(reply, from, now)?;
        if env.kind != REPLY_KIND || env.sender != pending.peer {
            return Err(Error::Refused {
                what: "session reply",
                detail: format!(
                    "a {:?} from {}, expected {REPLY_KIND:?} from {}",
                    env.kind, env.sender, pending.peer
                ),
            });
        }
        let session = pending.setup.finish(&env.content)?;
        self.store_session(&pending.peer, &session, true, now, Some(&pending.peer))?;
        Ok(())
    }

    /// Stores a session; with `make_current`, also makes it the one to send with. Drops the
    /// oldest sessions beyond [`MAX_SESSIONS_PER_PEER`].
    fn store_session(
        &mut self,
        peer: &Did,
        session: &RatchetSession,
        confirmed: bool,
        now: Timestamp,
        make_current: Option<&Did>,
    ) -> Result<()> {
        let id = session.associated_data();
        let stored = Stored {
            created: now.0,
            confirmed,
            ratchet: session.to_bytes().to_vec(),
        };
        let mut batch = Batch::new();
        batch.put(session_key(peer, &id), stored.encode());
        if make_current.is_some() {
            batch.put(key(CURRENT, &[peer.as_str().as_bytes()]), id.to_vec());
        }
        let prefix = key(SESSION, &[peer.as_str().as_bytes(), b""]);
        let mut existing = self
            .kv
            .scan_prefix(&prefix, MAX_SESSIONS_PER_PEER * 4)?
            .into_iter()
            .filter(|(k, _)| k.as_slice() != session_key(peer, &id).as_slice())
            .map(|(k, v)| Ok((Stored::decode(&v)?.created, k)))
            .collect::<Result<Vec<_>>>()?;
        if existing.len() >= MAX_SESSIONS_PER_PEER {
            existing.sort();
            let current = self.current(peer)?.map(|c| session_key(peer, &c));
            let drop = existing.len() + 1 - MAX_SESSIONS_PER_PEER;
            for (_, k) in existing
                .iter()
                .filter(|(_, k)| make_current.is_some() || Some(k) != current.as_ref())
                .take(drop)
            {
                batch.delete(k.clone());
            }
        }
        self.kv.apply(&batch)?;
        Ok(())
    }

    fn session(&self, peer: &Did, id: &[u8; SESSION_ID_LEN]) -> Result<Stored> {
        let raw = self
            .kv
            .get(&session_key(peer, id))?
            .ok_or_else(|| Error::NoSession {
                peer: peer.to_string(),
                detail: format!("with id {}", hex_short(id)),
            })?;
        Stored::decode(&raw)
    }

    /// Encrypts `body` for `to` in the current session, signs the envelope, records the
    /// message in the outbox, and stores the advanced ratchet before returning.
    pub fn seal(
        &mut self,
        to: &Did,
        kind: &str,
        body: &[u8],
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Sealed> {
        if kind.starts_with("session.") {
            return Err(malformed(
                "message type",
                format!("{kind:?}: the session.* types are reserved"),
            ));
        }
        if body.len() > MAX_BODY_LEN {
            return Err(Error::TooLarge {
                what: "message body",
                len: body.len() as u64,
                max: MAX_BODY_LEN as u64,
            });
        }
        let sid = self.current(to)?.ok_or_else(|| Error::NoSession {
            peer: to.to_string(),
            detail: "(start one first)".into(),
        })?;
        let stored = self.session(to, &sid)?;
        let mut ratchet = RatchetSession::from_bytes(&stored.ratchet)?;
        let ciphertext = ratchet.encrypt(body)?;
        let mut content = Vec::with_capacity(SESSION_ID_LEN + ciphertext.len());
        content.extend_from_slice(&sid);
        content.extend_from_slice(&ciphertext);
        let id = MessageId(mesh_crypto::random_array::<16>()?);
        let env = self.envelope(id, kind, to, content, ttl, now)?;
        let seq = self.counts.sent;
        let record = Message {
            seq,
            id,
            peer: to.clone(),
            kind: kind.to_owned(),
            timestamp: now,
            body: body.to_vec(),
        };
        let mut batch = Batch::new();
        batch.put(
            session_key(to, &sid),
            Stored {
                ratchet: ratchet.to_bytes().to_vec(),
                ..stored
            }
            .encode(),
        );
        batch.put(seq_key(OUTBOX, seq), encode_message(&record));
        batch.put(NEXT_OUT, (seq + 1).to_be_bytes().to_vec());
        self.kv.apply(&batch)?;
        self.counts.sent += 1;
        Ok(Sealed {
            id,
            seq,
            expires: env.expires_at(),
            envelope: env.to_bytes(),
        })
    }

    /// Opens a delivered envelope from transport peer `from`: checks it, recognises a
    /// duplicate, decrypts it in the session it names, and stores the message and the
    /// advanced ratchet in one batch.
    pub fn receive(&mut self, bytes: &[u8], from: &[u8], now: Timestamp) -> Result<Opened> {
        let env = self.checked(bytes, from, now)?;
        if env.kind.starts_with("session.") {
            return Err(malformed(
                "message",
                format!("a {:?} envelope where a message was expected", env.kind),
            ));
        }
        let seen_key = key(SEEN, &[env.id.as_bytes()]);
        if self.kv.get(&seen_key)?.is_some() {
            return Ok(Opened::Duplicate(env.id));
        }
        let (sid, ciphertext) = env
            .content
            .split_first_chunk::<SESSION_ID_LEN>()
            .ok_or_else(|| malformed("message", "shorter than a session id"))?;
        let stored = self.session(&env.sender, sid)?;
        let mut ratchet = RatchetSession::from_bytes(&stored.ratchet)?;
        let body = ratchet.decrypt(ciphertext)?;
        let seq = self.counts.received;
        let message = Message {
            seq,
            id: env.id,
            peer: env.sender.clone(),
            kind: env.kind.clone(),
            timestamp: env.timestamp,
            body,
        };
        let mut batch = Batch::new();
        batch.put(seq_key(INBOX, seq), encode_message(&message));
        batch.put(seen_key, seq.to_be_bytes().to_vec());
        batch.put(NEXT_IN, (seq + 1).to_be_bytes().to_vec());
        let promote = if stored.confirmed {
            false
        } else {
            // The first message in a session the peer started confirms it; it becomes the one
            // to answer in unless a newer confirmed session exists.
            match self.current(&env.sender)? {
                None => true,
                Some(c) => self
                    .session(&env.sender, &c)
                    .map_or(true, |cur| cur.created <= stored.created),
            }
        };
        if promote {
            batch.put(
                key(CURRENT, &[env.sender.as_str().as_bytes()]),
                sid.to_vec(),
            );
        }
        batch.put(
            session_key(&env.sender, sid),
            Stored {
                ratchet: ratchet.to_bytes().to_vec(),
                confirmed: true,
                created: stored.created,
            }
            .encode(),
        );
        self.kv.apply(&batch)?;
        self.counts.received += 1;
        Ok(Opened::New(message))
    }

    fn list(&self, prefix: &[u8], from: u64, limit: usize) -> Result<Vec<Message>> {
        let start = seq_key(prefix, from);
        let end = mesh_store::prefix_successor(prefix);
        let end = match &end {
            Some(e) => Bound::Excluded(e.as_slice()),
            None => Bound::Unbounded,
        };
        self.kv
            .scan(Bound::Included(&start), end, limit.min(MAX_LIST))?
            .into_iter()
            .map(|(k, v)| {
                let seq: [u8; 8] = k
                    .get(prefix.len()..)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| malformed("mailbox key", "bad sequence number"))?;
                decode_message(u64::from_be_bytes(seq), &v)
            })
            .collect()
    }

    /// Received messages from inbox position `from`, at most `limit` (and [`MAX_LIST`]).
    pub fn received(&self, from: u64, limit: usize) -> Result<Vec<Message>> {
        self.list(INBOX, from, limit)
    }

    /// Sent messages from outbox position `from`, at most `limit` (and [`MAX_LIST`]).
    pub fn sent(&self, from: u64, limit: usize) -> Result<Vec<Message>> {
        self.list(OUTBOX, from, limit)
    }
}

fn hex_short(id: &[u8]) -> String {
    id.iter().take(6).map(|b| format!("{b:02x}")).collect()
}
