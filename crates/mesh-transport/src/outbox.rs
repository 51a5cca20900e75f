//! Delivery guarantees as a sans-IO core: a persistent [`Outbox`] on the sending side and a
//! persistent duplicate filter ([`Seen`]) on the receiving side.
//!
//! Drive the outbox like this (the [`crate::Messenger`] driver does):
//!
//! 1. [`Outbox::enqueue`] a message: it is written to the store before the call returns, so
//!    it survives a crash or restart of the sender.
//! 2. Ask [`Outbox::due`] with the current time for messages to (re)send; each is then in
//!    flight until you report [`Outbox::acked`] (the receiver confirmed) or [`Outbox::failed`]
//!    (it is retried after a jittered exponential backoff).
//! 3. Sleep until [`Outbox::next_wakeup`], or until a peer connects
//!    ([`Outbox::peer_available`] makes its messages due at once).
//!
//! A message is dropped when its ttl expires, reported by [`Outbox::due`] among the expired.
//! The receiver keeps the ids it has delivered, until each message's expiry, in [`Seen`]: a
//! retry of a message whose acknowledgement was lost is acknowledged again but not delivered
//! twice, even across a restart of the receiver.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use mesh_store::{Batch, Kv};
use mesh_types::wire::{self, Reader};
use mesh_types::{Digest, MessageId, Timestamp};

use crate::error::{Error, Result};

const MESSAGE_PREFIX: &[u8] = b"m/";
const SEEN_PREFIX: &[u8] = b"s/";

/// Outbox settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OutboxConfig {
    /// Delay before the first retry.
    pub initial_backoff: Duration,
    /// Longest delay between retries.
    pub max_backoff: Duration,
    /// Most messages waiting at once; enqueueing more fails with [`Error::TooLarge`].
    pub max_pending: usize,
    /// Longest time-to-live accepted.
    pub max_ttl: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            max_pending: 100_000,
            max_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// A message waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its id (end-to-end, for deduplication).
    pub id: MessageId,
    /// The recipient's peer id bytes.
    pub peer: Vec<u8>,
    /// The application protocol it is for.
    pub protocol: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// When it stops being worth delivering.
    pub expires: Timestamp,
}

impl Outgoing {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.payload.len());
        out.extend_from_slice(self.id.as_bytes());
        wire::put_varint(&mut out, self.expires.0);
        wire::put_len_prefixed(&mut out, &self.peer);
        wire::put_len_prefixed(&mut out, self.protocol.as_bytes());
        wire::put_len_prefixed(&mut out, &self.payload);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |e: wire::WireError| Error::Setup {
            detail: format!("damaged outbox record: {e}"),
        };
        let mut r = Reader::new(bytes);
        let id = MessageId(r.array::<16>().map_err(bad)?);
        let expires = Timestamp(r.varint().map_err(bad)?);
        let peer = r.len_prefixed("peer", 128).map_err(bad)?.to_vec();
        let protocol = String::from_utf8(r.len_prefixed("protocol", 64).map_err(bad)?.to_vec())
            .map_err(|_| Error::Setup {
                detail: "damaged outbox record: protocol is not UTF-8".into(),
            })?;
        let payload = r.len_prefixed("payload", usize::MAX).map_err(bad)?.to_vec();
        r.finish().map_err(bad)?;
        Ok(Self {
            id,
            peer,
            protocol,
            payload,
            expires,
        })
    }
}

#[derive(Debug)]
struct Entry {
    message: Outgoing,
    attempts: u32,
    next_attempt: Timestamp,
    in_flight: bool,
}

/// What [`Outbox::due`] found.
#[derive(Debug, Default)]
pub struct Due {
    /// Messages to send now (each is in flight until acked or failed).
    pub send: Vec<Outgoing>,
    /// Messages dropped because their ttl expired.
    pub expired: Vec<MessageId>,
}

/// The sending side's persistent queue.
///
/// Indexed three ways so every operation costs O(log n) per message it touches, however many
/// wait: by id, by next attempt (messages not in flight), by expiry, and by peer.
pub struct Outbox<K: Kv> {
    kv: K,
    config: OutboxConfig,
    entries: BTreeMap<MessageId, Entry>,
    schedule: BTreeSet<(Timestamp, MessageId)>,
    expiries: BTreeSet<(Timestamp, MessageId)>,
    by_peer: HashMap<Vec<u8>, BTreeSet<MessageId>>,
}

impl<K: Kv> std::fmt::Debug for Outbox<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("pending", &self.entries.len())
            .finish()
    }
}

fn key(prefix: &[u8], id: &MessageId) -> Vec<u8> {
    [prefix, id.as_bytes()].concat()
}

fn store_err(e: mesh_store::Error) -> Error {
    Error::Setup {
        detail: format!("outbox store: {e}"),
    }
}

impl<K: Kv> Outbox<K> {
    /// Opens the outbox kept in `kv`, loading every message that was waiting; they are due
    /// at once (`now`).
    pub fn open(kv: K, config: OutboxConfig, now: Timestamp) -> Result<Self> {
        let mut outbox = Self {
            kv,
            config,
            entries: BTreeMap::new(),
            schedule: BTreeSet::new(),
            expiries: BTreeSet::new(),
            by_peer: HashMap::new(),
        };
        for (_, value) in outbox
            .kv
            .scan_prefix(MESSAGE_PREFIX, usize::MAX)
            .map_err(store_err)?
        {
            let message = Outgoing::decode(&value)?;
            outbox.insert(message, now);
        }
        Ok(outbox)
    }

    fn insert(&mut self, message: Outgoing, now: Timestamp) {
        let id = message.id;
        self.schedule.insert((now, id));
        self.expiries.insert((message.expires, id));
        self.by_peer
            .entry(message.peer.clone())
            .or_default()
            .insert(id);
        self.entries.insert(
            id,
            Entry {
                message,
                attempts: 0,
                next_attempt: now,
                in_flight: false,
            },
        );
    }

    fn remove(&mut self, id: &MessageId) -> bool {
        let Some(e) = self.entries.remove(id) else {
            return false;
        };
        self.schedule.remove(&(e.next_attempt, *id));
        self.expiries.remove(&(e.message.expires, *id));
        if let Some(ids) = self.by_peer.get_mut(&e.message.peer) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_peer.remove(&e.message.peer);
            }
        }
        true
    }

    /// Number of messages waiting (in flight included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a message; it is durable when this returns. Enqueueing an id already waiting is a
    /// no-op.
    pub fn enqueue(&mut self, message: Outgoing, now: Timestamp) -> Result<()> {
        if self.entries.contains_key(&message.id) {
            return Ok(());
        }
        if self.entries.len() >= self.config.max_pending {
            return Err(Error::TooLarge {
                what: "outbox",
                len: self.entries.len() + 1,
                max: self.config.max_pending,
            });
        }
        if message.expires > now.saturating_add(self.config.max_ttl) {
            return Err(Error::BadName {
                what: "ttl",
                name: format!("{:?}", message.expires),
                detail: "longer than the maximum ttl",
            });
        }
        self.kv
            .put(&key(MESSAGE_PREFIX, &message.id), &message.encode())
            .map_err(store_err)?;
        self.insert(message, now);
        Ok(())
    }

    /// Messages to send at `now`, and messages dropped because they expired.
    pub fn due(&mut self, now: Timestamp) -> Result<Due> {
        let mut due = Due::default();
        while let Some(&(expires, id)) = self.expiries.first() {
            if expires > now {
                break;
            }
            due.expired.push(id);
            self.remove(&id);
        }
        while let Some(&(at, id)) = self.schedule.first() {
            if at > now {
                break;
            }
            self.schedule.pop_first();
            if let Some(e) = self.entries.get_mut(&id) {
                e.in_flight = true;
                due.send.push(e.message.clone());
            }
        }
        if !due.expired.is_empty() {
            let mut batch = Batch::new();
            for id in &due.expired {
                batch.delete(key(MESSAGE_PREFIX, id));
            }
            self.kv.apply(&batch).map_err(store_err)?;
        }
        Ok(due)
    }

    /// The receiver confirmed `id`: it is removed for good.
    pub fn acked(&mut self, id: &MessageId) -> Result<()> {
        if self.remove(id) {
            self.kv
                .delete(&key(MESSAGE_PREFIX, id))
                .map_err(store_err)?;
        }
        Ok(())
    }

    /// Sending `id` failed at `now`: it is retried after a backoff.
    pub fn failed(&mut self, id: &MessageId, now: Timestamp) {
        let (initial, max) = (self.config.initial_backoff, self.config.max_backoff);
        if let Some(e) = self.entries.get_mut(id) {
            if !e.in_flight {
                return;
            }
            e.in_flight = false;
            e.attempts = e.attempts.saturating_add(1);
            e.next_attempt = now.saturating_add(backoff(initial, max, e.attempts, id));
            self.schedule.insert((e.next_attempt, *id));
        }
    }

    /// `peer` just became reachable: its waiting messages are due at `now`.
    pub fn peer_available(&mut self, peer: &[u8], now: Timestamp) {
        let Some(ids) = self.by_peer.get(peer) else {
            return;
        };
        for id in ids {
            if let Some(e) = self
                .entries
                .get_mut(id)
                .filter(|e| !e.in_flight && e.next_attempt > now)
            {
                self.schedule.remove(&(e.next_attempt, *id));
                e.next_attempt = now;
                self.schedule.insert((now, *id));
            }
        }
    }

    /// When [`Self::due`] next has something to do, if anything is waiting and not in flight.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        let next = self.schedule.first().map(|(t, _)| *t);
        let expiry = self.expiries.first().map(|(t, _)| *t);
        match (next, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// `initial * 2^(attempts-1)`, capped at `max`, with a deterministic jitter of up to 25% taken
/// from the message id (so retries of many messages spread out, reproducibly).
pub fn backoff(initial: Duration, max: Duration, attempts: u32, id: &MessageId) -> Duration {
    let exp = attempts.saturating_sub(1).min(20);
    let base = initial.saturating_mul(1u32 << exp).min(max);
    let h = Digest::of(id.as_bytes());
    let jitter_permille = u32::from(u16::from_le_bytes([h.0[0], h.0[1]]) % 251);
    base.saturating_add(base / 1000 * jitter_permille).min(max)
}

/// The receiving side's persistent record of delivered message ids.
pub struct Seen<K: Kv> {
    kv: K,
    /// Each id with its expiry, and the same pairs ordered by expiry for eviction.
    ids: HashMap<MessageId, Timestamp>,
    by_expiry: BTreeSet<(Timestamp, MessageId)>,
    max: usize,
}

impl<K: Kv> std::fmt::Debug for Seen<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("ids", &self.ids.len())
            .finish()
    }
}

impl<K: Kv> Seen<K> {
    /// Opens the record kept in `kv`, dropping entries expired at `now`. Remembers at most
    /// `max` ids (the ones expiring soonest are dropped first).
    pub fn open(kv: K, max: usize, now: Timestamp) -> Result<Self> {
        let mut ids = HashMap::new();
        let mut by_expiry = BTreeSet::new();
        let mut stale = Batch::new();
        for (k, v) in kv.scan_prefix(SEEN_PREFIX, usize::MAX).map_err(store_err)? {
            let id = k.get(SEEN_PREFIX.len()..).and_then(MessageId::from_slice);
            let expires = <[u8; 8]>::try_from(v.as_slice())
                .ok()
                .map(|b| Timestamp(u64::from_le_bytes(b)));
            match (id, expires) {
                (Some(id), Some(exp)) if exp > now => {
                    ids.insert(id, exp);
                    by_expiry.insert((exp, id));
                }
                _ => {
                    stale.delete(k);
                }
            }
        }
        if !stale.is_empty() {
            kv.apply(&stale).map_err(store_err)?;
        }
        Ok(Self {
            kv,
            ids,
            by_expiry,
            max: max.max(1),
        })
    }

    /// Whether `id` was recorded.
    pub fn contains(&self, id: &MessageId) -> bool {
        self.ids.contains_key(id)
    }

    /// Records `id` (valid until `expires`); returns `true` if it was new, `false` for a
    /// duplicate. Durable when it returns.
    pub fn insert(&mut self, id: MessageId, expires: Timestamp) -> Result<bool> {
        if self.ids.contains_key(&id) {
            return Ok(false);
        }
        if self.ids.len() >= self.max
            && let Some((_, oldest)) = self.by_expiry.pop_first()
        {
            // Forget the entry expiring soonest.
            self.ids.remove(&oldest);
            self.kv
                .delete(&key(SEEN_PREFIX, &oldest))
                .map_err(store_err)?;
        }
        self.kv
            .put(&key(SEEN_PREFIX, &id), &expires.0.to_le_bytes())
            .map_err(store_err)?;
        self.ids.insert(id, expires);
        self.by_expiry.insert((expires, id));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_store::{MemStore, Store};

    fn msg(n: u8, expires: u64) -> Outgoing {
        Outgoing {
            id: MessageId([n; 16]),
            peer: vec![1, 2, 3],
            protocol: "chat".into(),
            payload: vec![n; 10],
            expires: Timestamp(expires),
        }
    }

    #[test]
    fn retries_back_off_expire_and_survive_reopen() {
        let store = MemStore::new();
        let mut ob = Outbox::open(
            store.kv("outbox").unwrap(),
            OutboxConfig::default(),
            Timestamp(0),
        )
        .unwrap();
        ob.enqueue(msg(1, 10_000), Timestamp(0)).unwrap();
        ob.enqueue(msg(2, 500), Timestamp(0)).unwrap();
        ob.enqueue(msg(1, 10_000), Timestamp(0)).unwrap(); // duplicate id: no-op
        assert_eq!(ob.len(), 2);
        let due = ob.due(Timestamp(0)).unwrap();
        assert_eq!(due.send.len(), 2);
        assert!(
            ob.due(Timestamp(1)).unwrap().send.is_empty(),
            "in flight until reported"
        );
        ob.failed(&MessageId([1; 16]), Timestamp(100));
        let wake = ob.next_wakeup().unwrap();
        assert!(wake >= Timestamp(350) && wake <= Timestamp(413), "{wake:?}");
        assert!(ob.due(Timestamp(349)).unwrap().send.is_empty());
        // Message 2 is still in flight; at 500 it expires whatever its state.
        let due = ob.due(Timestamp(600)).unwrap();
        assert_eq!(due.expired, vec![MessageId([2; 16])]);
        assert_eq!(due.send.len(), 1);
        // Reopen: the waiting message is back, due at once.
        let mut again = Outbox::open(
            store.kv("outbox").unwrap(),
            OutboxConfig::default(),
            Timestamp(700),
        )
        .unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(
            again.due(Timestamp(700)).unwrap().send,
            vec![msg(1, 10_000)]
        );
        again.acked(&MessageId([1; 16])).unwrap();
        assert!(
            Outbox::open(
                store.kv("outbox").unwrap(),
                OutboxConfig::default(),
                Timestamp(800)
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn many_waiting_messages_are_indexed_by_peer_time_and_expiry() {
        let store = MemStore::new();
        let config = OutboxConfig {
            max_pending: 20_000,
            ..OutboxConfig::default()
        };
        let mut ob = Outbox::open(store.kv("o").unwrap(), config, Timestamp(0)).unwrap();
        for i in 0..10_000u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            ob.enqueue(
                Outgoing {
                    id: MessageId(id),
                    peer: vec![(i % 100) as u8],
                    protocol: "chat".into(),
                    payload: vec![1],
                    // Every tenth message expires early.
                    expires: Timestamp(if i % 10 == 0 { 50 } else { 1_000_000 }),
                },
                Timestamp(0),
            )
            .unwrap();
        }
        let first = ob.due(Timestamp(0)).unwrap();
        assert_eq!(first.send.len(), 10_000);
        for m in &first.send {
            ob.failed(&m.id, Timestamp(0));
        }
        assert!(
            ob.due(Timestamp(1)).unwrap().send.is_empty(),
            "all backing off"
        );
        assert_eq!(ob.next_wakeup(), Some(Timestamp(50)), "the first expiry");
        let expired = ob.due(Timestamp(50)).unwrap();
        assert_eq!(expired.expired.len(), 1_000);
        assert_eq!(ob.len(), 9_000);
        // Peer 30's messages all expired (30 % 10 == 0): its return changes nothing.
        ob.peer_available(&[30], Timestamp(51));
        assert!(ob.due(Timestamp(51)).unwrap().send.is_empty());
        // Peer 7 returns: exactly its 100 messages are due.
        ob.peer_available(&[7], Timestamp(51));
        let due = ob.due(Timestamp(51)).unwrap();
        assert_eq!(due.send.len(), 100);
        assert!(due.send.iter().all(|m| m.peer == [7]));
        for m in &due.send {
            ob.acked(&m.id).unwrap();
        }
        assert_eq!(ob.len(), 8_900);
    }

    #[test]
    fn backoff_grows_caps_and_a_returning_peer_is_served_at_once() {
        let id = MessageId([9; 16]);
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(2));
        let b: Vec<Duration> = (1..8).map(|a| backoff(i, m, a, &id)).collect();
        assert!(b.windows(2).all(|w| w[0] <= w[1]), "{b:?}");
        assert_eq!(*b.last().unwrap(), m);
        assert!(b[0] >= i && b[0] <= i + i / 4);
        let store = MemStore::new();
        let mut ob = Outbox::open(
            store.kv("o").unwrap(),
            OutboxConfig::default(),
            Timestamp(0),
        )
        .unwrap();
        ob.enqueue(msg(3, 1_000_000), Timestamp(0)).unwrap();
        ob.due(Timestamp(0)).unwrap();
        ob.failed(&MessageId([3; 16]), Timestamp(0));
        assert!(ob.due(Timestamp(5)).unwrap().send.is_empty(), "backing off");
        ob.peer_available(&[9, 9], Timestamp(5));
        assert!(
            ob.due(Timestamp(5)).unwrap().send.is_empty(),
            "another peer changes nothing"
        );
        ob.peer_available(&[1, 2, 3], Timestamp(5));
        assert_eq!(ob.due(Timestamp(5)).unwrap().send.len(), 1);
    }

    #[test]
    fn seen_ids_persist_expire_and_stay_bounded() {
        let store = MemStore::new();
        let mut seen = Seen::open(store.kv("seen").unwrap(), 3, Timestamp(0)).unwrap();
        assert!(seen.insert(MessageId([1; 16]), Timestamp(100)).unwrap());
        assert!(!seen.insert(MessageId([1; 16]), Timestamp(100)).unwrap());
        let mut reopened = Seen::open(store.kv("seen").unwrap(), 3, Timestamp(50)).unwrap();
        assert!(
            !reopened.insert(MessageId([1; 16]), Timestamp(100)).unwrap(),
            "remembered across a restart"
        );
        let mut later = Seen::open(store.kv("seen").unwrap(), 3, Timestamp(100)).unwrap();
        assert!(
            later.insert(MessageId([1; 16]), Timestamp(200)).unwrap(),
            "forgotten after expiry"
        );
        for n in 2..6u8 {
            later
                .insert(MessageId([n; 16]), Timestamp(300 + u64::from(n)))
                .unwrap();
        }
        assert_eq!(
            store
                .kv("seen")
                .unwrap()
                .scan_prefix(b"s/", 100)
                .unwrap()
                .len(),
            3
        );
    }
}
