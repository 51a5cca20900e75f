//! Episodic memory: the append-only record of what an agent did and saw.
//!
//! An [`Episode`] is one interaction: when it happened ([`Timestamp`], wall clock, given by
//! the caller), with whom ([`Peer`], a DID), what kind of event it was ([`Kind`]), its text
//! and bounded metadata. [`Episodic::append`] gives each episode the next index (0, 1, 2, ...)
//! and returns only once the episode and all its index entries are durable.
//!
//! # Queries
//!
//! [`Episodic::query`] combines any of: a time range, a peer, a kind and full-text words
//! (AND semantics), and returns at most `limit` episodes, newest first: by `at` descending,
//! then by index descending (the later append first among equal times).
//!
//! Full text uses this module's own inverted index. [`tokens`] splits text at every
//! character that is not alphanumeric, lowercases the words and cuts each to
//! [`MAX_TOKEN_BYTES`]; a query matches an episode whose text contains every one of the
//! query's words.
//!
//! # Layout and crash consistency
//!
//! Everything lives in one [`Kv`] tree. Index entries are keys with empty values whose last
//! 16 bytes are the episode's *order key*: `u64::MAX - at` then `u64::MAX - index`, both
//! big-endian, so a forward scan yields newest first:
//!
//! | key | value |
//! |---|---|
//! | `E` index (8 bytes, big-endian) | the episode record |
//! | `A` order | — (every episode, by time) |
//! | `P` peer `0x00` order | — |
//! | `K` kind `0x00` order | — |
//! | `T` word `0x00` order | — (the posting lists) |
//! | `Mnext` | the next index |
//!
//! An append writes the record, all its index entries and the new `Mnext` in **one atomic
//! [`Kv::apply`] batch**, so a crash leaves either all of them or none: the index can never
//! disagree with the record, and nothing has to be rebuilt or caught up on open. (A [`Log`]
//! plus a tree would need two commits per append and a catch-up pass; one batch costs one
//! commit.) A query intersects the lists it needs with a leapfrog join: each list is seeked
//! to the current candidate, so the work grows with the shortest list, not the longest.
//!
//! One value of [`Episodic`] must be the only writer of its tree.
//!
//! ```
//! use mesh_memory::episodic::{Episodic, Kind, NewEpisode, Peer, Query};
//! use mesh_types::Timestamp;
//!
//! let store = mesh_store::MemStore::new(); // `DiskStore::open(dir)?` in a node
//! let mut memory = Episodic::open(&store, "episodes")?;
//! let bob = Peer::new("did:key:z6MkBob")?;
//! memory.append(&NewEpisode::new(Timestamp(1_000), bob.clone(), Kind::MessageReceived, "Deploy v2 tonight?"))?;
//! memory.append(&NewEpisode::new(Timestamp(2_000), bob.clone(), Kind::MessageSent, "Yes, deploy at 22:00").with("thread", "ops"))?;
//! let hits = memory.query(&Query::newest(10).peer(bob).text("DEPLOY tonight"))?;
//! assert_eq!(hits.len(), 1);
//! assert_eq!(hits[0].id, 0);
//! # Ok::<(), mesh_memory::Error>(())
//! ```
//!
//! [`Log`]: mesh_store::Log

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Bound;

use mesh_store::{Batch, Kv, Store};
use mesh_types::Timestamp;
use mesh_types::wire::{Reader, put_varint};

use crate::codec::{
    self, Attributes, DecodeError, Decoded, check_name, check_pairs, check_text, put_pairs,
    put_str, read_pairs, read_str, read_version, store,
};
use crate::error::{Error, Result};

/// Longest episode text, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Longest peer DID, in bytes.
pub const MAX_PEER_BYTES: usize = 256;
/// Longest indexed word, in bytes: longer words are cut (at a character boundary).
pub const MAX_TOKEN_BYTES: usize = 64;
/// Most distinct words in a full-text query.
pub const MAX_QUERY_WORDS: usize = 16;
/// Largest `limit` of a query or a range read.
pub const MAX_LIMIT: usize = 10_000;
/// Most episodes in one [`Episodic::append_all`].
pub const MAX_BATCH: usize = 1_024;

const TAG_EPISODE: u8 = b'E';
const TAG_ALL: u8 = b'A';
const TAG_PEER: u8 = b'P';
const TAG_KIND: u8 = b'K';
const TAG_WORD: u8 = b'T';
const KEY_NEXT: &[u8] = b"Mnext";

/// The peer an episode is about: a DID (`did:<method>:<id>`), at most [`MAX_PEER_BYTES`].
///
/// Only the DID syntax is checked (lowercase method, id characters `[A-Za-z0-9._:%-]`), not
/// that the DID resolves: episodes may name peers this agent cannot verify.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Peer(String);

impl Peer {
    /// Checks `did` and wraps it.
    pub fn new(did: impl Into<String>) -> Result<Self> {
        let did = did.into();
        check_did(&did)?;
        Ok(Self(did))
    }

    /// The DID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Peer({})", self.0)
    }
}

impl std::str::FromStr for Peer {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

fn check_did(did: &str) -> Result<()> {
    const WHAT: &str = "peer DID";
    if did.is_empty() {
        return Err(Error::Empty { what: WHAT });
    }
    if did.len() > MAX_PEER_BYTES {
        return Err(Error::TooLong {
            what: WHAT,
            len: did.len(),
            max: MAX_PEER_BYTES,
        });
    }
    let bad = |detail: &str| Error::BadName {
        what: WHAT,
        detail: detail.to_owned(),
    };
    let rest = did
        .strip_prefix("did:")
        .ok_or_else(|| bad("must start with did:"))?;
    let (method, id) = rest
        .split_once(':')
        .ok_or_else(|| bad("must be did:<method>:<id>"))?;
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(bad("the method must be [a-z0-9]+"));
    }
    if id.is_empty()
        || id.ends_with(':')
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'%'))
    {
        return Err(bad("the id must be [A-Za-z0-9._:%-]+ and not end with ':'"));
    }
    Ok(())
}

/// What kind of event an episode records.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// This agent sent a message to the peer.
    MessageSent,
    /// This agent received a message from the peer.
    MessageReceived,
    /// This agent called a tool (the peer is the tool's provider).
    ToolCall,
    /// A tool's result came back.
    ToolResult,
    /// Something the agent observed.
    Observation,
    /// The agent's own reasoning or decision.
    Thought,
    /// Anything else, named by the caller: 1 to 64 characters from `[A-Za-z0-9_.:-]`.
    Custom(String),
}

impl Kind {
    fn tag(&self) -> u8 {
        match self {
            Self::Custom(_) => 0,
            Self::MessageSent => 1,
            Self::MessageReceived => 2,
            Self::ToolCall => 3,
            Self::ToolResult => 4,
            Self::Observation => 5,
            Self::Thought => 6,
        }
    }

    fn check(&self) -> Result<()> {
        match self {
            Self::Custom(name) => check_name("episode kind", name),
            _ => Ok(()),
        }
    }

    /// The kind's bytes in index keys and records: the tag, then the name of a custom kind.
    fn key_part(&self) -> Vec<u8> {
        let mut out = vec![self.tag()];
        if let Self::Custom(name) = self {
            out.extend_from_slice(name.as_bytes());
        }
        out
    }
}

/// An episode to append.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NewEpisode {
    /// When it happened (the caller's wall clock).
    pub at: Timestamp,
    /// With whom.
    pub peer: Peer,
    /// What kind of event.
    pub kind: Kind,
    /// Its text: 1 to [`MAX_TEXT_BYTES`] bytes, no control characters but tab and newlines.
    pub text: String,
    /// At most 32 pairs; keys are names (`[A-Za-z0-9_.:-]`, 1 to 64 bytes), values at most
    /// 4 KiB of text.
    pub metadata: Attributes,
}

impl NewEpisode {
    /// An episode without metadata.
    pub fn new(at: Timestamp, peer: Peer, kind: Kind, text: impl Into<String>) -> Self {
        Self {
            at,
            peer,
            kind,
            text: text.into(),
            metadata: Attributes::new(),
        }
    }

    /// Adds a metadata pair.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Checks the kind, the text and the metadata against their bounds.
    pub fn check(&self) -> Result<()> {
        self.kind.check()?;
        check_text("episode text", &self.text, MAX_TEXT_BYTES, true)?;
        check_pairs("episode metadata", &self.metadata)
    }
}

/// An episode as stored: its index and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    /// Its index in the record (0 for the first appended).
    pub id: u64,
    /// When it happened.
    pub at: Timestamp,
    /// With whom.
    pub peer: Peer,
    /// What kind of event.
    pub kind: Kind,
    /// Its text.
    pub text: String,
    /// Its metadata.
    pub metadata: Attributes,
}

/// The words of `text` as the full-text index sees them: maximal runs of alphanumeric
/// characters, lowercased, each cut to [`MAX_TOKEN_BYTES`]; distinct, in byte order.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    let mut full = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            for l in c.to_lowercase() {
                if !full && word.len() + l.len_utf8() <= MAX_TOKEN_BYTES {
                    word.push(l);
                } else {
                    full = true;
                }
            }
        } else if !word.is_empty() {
            out.insert(std::mem::take(&mut word));
            full = false;
        }
    }
    if !word.is_empty() {
        out.insert(word);
    }
    out.into_iter().collect()
}

/// A query: every filter set must hold. Build with [`Query::newest`] and the setters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only episodes at or after this time.
    pub since: Option<Timestamp>,
    /// Only episodes at or before this time.
    pub until: Option<Timestamp>,
    /// Only episodes with this peer.
    pub peer: Option<Peer>,
    /// Only episodes of this kind.
    pub kind: Option<Kind>,
    /// Only episodes whose text contains every word of this text (see [`tokens`]).
    pub text: Option<String>,
    /// At most this many episodes (at most [`MAX_LIMIT`]).
    pub limit: usize,
}

impl Query {
    /// The `limit` newest episodes, before any filter is added.
    pub fn newest(limit: usize) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// Only episodes at or after `since`.
    #[must_use]
    pub fn since(mut self, since: Timestamp) -> Self {
        self.since = Some(since);
        self
    }

    /// Only episodes at or before `until`.
    #[must_use]
    pub fn until(mut self, until: Timestamp) -> Self {
        self.until = Some(until);
        self
    }

    /// Only episodes with `peer`.
    #[must_use]
    pub fn peer(mut self, peer: Peer) -> Self {
        self.peer = Some(peer);
        self
    }

    /// Only episodes of `kind`.
    #[must_use]
    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Only episodes containing every word of `text`.
    #[must_use]
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }
}

/// Episodic memory over one tree of a [`Store`]. See the [module docs](self).
#[derive(Debug)]
pub struct Episodic<K> {
    kv: K,
    next: u64,
}

impl<K: Kv> Episodic<K> {
    /// Opens (creating if needed) the episodic memory kept in `store`'s tree `tree`.
    pub fn open<S: Store<Kv = K>>(store: &S, tree: &str) -> Result<Self> {
        let kv = store
            .kv(tree)
            .map_err(codec::store("opening the episodic tree"))?;
        Self::from_kv(kv)
    }

    /// Opens the episodic memory kept in `kv`.
    pub fn from_kv(kv: K) -> Result<Self> {
        let next = match kv
            .get(KEY_NEXT)
            .map_err(store("reading the episode count"))?
        {
            Some(v) => codec::decode_u64(&v).map_err(|e| e.at("episode count", KEY_NEXT))?,
            None => 0,
        };
        // Nothing may be stored at or after `next`.
        let from = episode_key(next);
        let after = kv
            .scan(
                Bound::Included(from.as_slice()),
                Bound::Excluded(&[TAG_EPISODE + 1][..]),
                1,
            )
            .map_err(store("checking the episode count"))?;
        if let Some((key, _)) = after.first() {
            return Err(Error::Corrupt {
                what: "episode",
                key: codec::show_key(key),
                detail: format!("stored beyond the episode count {next}"),
            });
        }
        Ok(Self { kv, next })
    }

    /// Number of episodes appended.
    pub fn len(&self) -> u64 {
        self.next
    }

    /// Whether no episode was appended.
    pub fn is_empty(&self) -> bool {
        self.next == 0
    }

    /// Appends `episode`; returns its index once it and its index entries are durable.
    pub fn append(&mut self, episode: &NewEpisode) -> Result<u64> {
        self.append_all(std::slice::from_ref(episode))
    }

    /// Appends `episodes` (at most [`MAX_BATCH`]) in one atomic commit: all or none. Returns
    /// the index of the first (the current count when `episodes` is empty) once all are
    /// durable. One commit for many episodes is much faster than one each on disk.
    pub fn append_all(&mut self, episodes: &[NewEpisode]) -> Result<u64> {
        if episodes.len() > MAX_BATCH {
            return Err(Error::TooMany {
                what: "episodes in one append",
                count: episodes.len(),
                max: MAX_BATCH,
            });
        }
        for e in episodes {
            e.check()?;
        }
        let first = self.next;
        let next = first
            .checked_add(episodes.len() as u64)
            .ok_or(Error::BoundExceeded {
                what: "episode count",
                max: u64::MAX,
            })?;
        if episodes.is_empty() {
            return Ok(first);
        }
        let mut batch = Batch::new();
        for (id, episode) in (first..).zip(episodes) {
            let order = order_key(episode.at, id);
            batch.put(episode_key(id), encode_episode(episode));
            batch.put(list_key(&[TAG_ALL], &order), Vec::new());
            let peer = list_prefix(TAG_PEER, episode.peer.as_str().as_bytes());
            batch.put(list_key(&peer, &order), Vec::new());
            let kind = list_prefix(TAG_KIND, &episode.kind.key_part());
            batch.put(list_key(&kind, &order), Vec::new());
            for word in tokens(&episode.text) {
                let word = list_prefix(TAG_WORD, word.as_bytes());
                batch.put(list_key(&word, &order), Vec::new());
            }
        }
        batch.put(KEY_NEXT.to_vec(), codec::encode_u64(next));
        if let Err(e) = self.kv.apply(&batch) {
            // The batch is atomic, but whether it landed is unknown: take the count from
            // the store if it can still be read.
            if let Ok(Some(v)) = self.kv.get(KEY_NEXT)
                && let Ok(n) = codec::decode_u64(&v)
            {
                self.next = n;
            }
            return Err(Error::Store {
                op: "appending episodes",
                source: e,
            });
        }
        self.next = next;
        Ok(first)
    }

    /// The episode at `id`, if appended.
    pub fn get(&self, id: u64) -> Result<Option<Episode>> {
        let key = episode_key(id);
        match self.kv.get(&key).map_err(store("reading an episode"))? {
            Some(v) => decode_episode(id, &v)
                .map(Some)
                .map_err(|e| e.at("episode", &key)),
            None => Ok(None),
        }
    }

    /// Up to `limit` episodes from index `from` on, in append order.
    pub fn range(&self, from: u64, limit: usize) -> Result<Vec<Episode>> {
        check_limit(limit)?;
        let start = episode_key(from);
        let rows = self
            .kv
            .scan(
                Bound::Included(start.as_slice()),
                Bound::Excluded(&[TAG_EPISODE + 1][..]),
                limit,
            )
            .map_err(store("reading episodes"))?;
        rows.into_iter()
            .map(|(key, value)| {
                let id = key
                    .get(1..)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| Error::Corrupt {
                        what: "episode",
                        key: codec::show_key(&key),
                        detail: "malformed key".into(),
                    })?;
                decode_episode(id, &value).map_err(|e| e.at("episode", &key))
            })
            .collect()
    }

    /// The episodes matching `query`, newest first (see the [module docs](self)).
    pub fn query(&self, query: &Query) -> Result<Vec<Episode>> {
        check_limit(query.limit)?;
        let mut lists = Vec::new();
        if let Some(peer) = &query.peer {
            lists.push(list_prefix(TAG_PEER, peer.as_str().as_bytes()));
        }
        if let Some(kind) = &query.kind {
            kind.check()?;
            lists.push(list_prefix(TAG_KIND, &kind.key_part()));
        }
        if let Some(text) = &query.text {
            check_text("query text", text, MAX_TEXT_BYTES, true)?;
            let words = tokens(text);
            if words.is_empty() {
                return Err(Error::Empty {
                    what: "query words",
                });
            }
            if words.len() > MAX_QUERY_WORDS {
                return Err(Error::TooMany {
                    what: "query words",
                    count: words.len(),
                    max: MAX_QUERY_WORDS,
                });
            }
            lists.extend(words.iter().map(|w| list_prefix(TAG_WORD, w.as_bytes())));
        }
        if lists.is_empty() {
            lists.push(vec![TAG_ALL]);
        }
        let since = query.since.unwrap_or(Timestamp(0));
        let until = query.until.unwrap_or(Timestamp(u64::MAX));
        if query.limit == 0 || since > until {
            return Ok(Vec::new());
        }
        let lo = order_key(until, u64::MAX);
        let hi = order_key(since, 0);
        let hits = if let [only] = lists.as_slice() {
            self.scan_list(only, &lo, &hi, query.limit)?
        } else {
            self.leapfrog(&lists, lo, &hi, query.limit)?
        };
        hits.into_iter().map(|order| self.resolve(&order)).collect()
    }

    /// Up to `limit` order keys of one list within `lo..=hi`.
    fn scan_list(
        &self,
        prefix: &[u8],
        lo: &[u8; 16],
        hi: &[u8; 16],
        limit: usize,
    ) -> Result<Vec<[u8; 16]>> {
        let start = list_key(prefix, lo);
        let end = list_key(prefix, hi);
        let rows = self
            .kv
            .scan(
                Bound::Included(start.as_slice()),
                Bound::Included(end.as_slice()),
                limit,
            )
            .map_err(store("scanning an episode index"))?;
        rows.iter().map(|(k, _)| order_of(prefix, k)).collect()
    }

    /// The order keys present in every list, within `lo..=hi`, at most `limit`.
    fn leapfrog(
        &self,
        lists: &[Vec<u8>],
        lo: [u8; 16],
        hi: &[u8; 16],
        limit: usize,
    ) -> Result<Vec<[u8; 16]>> {
        let mut out = Vec::new();
        let mut cursor = lo;
        let mut agree = 0;
        let mut i = 0;
        while let Some(found) = self.scan_list(&lists[i], &cursor, hi, 1)?.pop() {
            if found == cursor {
                agree += 1;
            } else {
                cursor = found;
                agree = 1;
            }
            if agree == lists.len() {
                out.push(cursor);
                if out.len() >= limit {
                    break;
                }
                match successor(cursor) {
                    Some(c) => cursor = c,
                    None => break,
                }
                agree = 0;
            }
            i = (i + 1) % lists.len();
        }
        Ok(out)
    }

    /// The episode an index entry points to; it must exist and agree with the entry.
    fn resolve(&self, order: &[u8; 16]) -> Result<Episode> {
        let (at, id) = split_order(order);
        let bad = |detail: &str| Error::Corrupt {
            what: "episode index entry",
            key: codec::show_key(order),
            detail: detail.to_owned(),
        };
        let episode = self
            .get(id)?
            .ok_or_else(|| bad("names a missing episode"))?;
        if episode.at != at {
            return Err(bad("disagrees with the episode's time"));
        }
        Ok(episode)
    }
}

fn check_limit(limit: usize) -> Result<()> {
    if limit > MAX_LIMIT {
        return Err(Error::BoundExceeded {
            what: "limit",
            max: MAX_LIMIT as u64,
        });
    }
    Ok(())
}

fn episode_key(id: u64) -> Vec<u8> {
    let mut k = vec![TAG_EPISODE];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn list_prefix(tag: u8, part: &[u8]) -> Vec<u8> {
    let mut k = codec::key(tag, &[part]);
    k.push(0);
    k
}

fn list_key(prefix: &[u8], order: &[u8; 16]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(order);
    k
}

fn order_key(at: Timestamp, id: u64) -> [u8; 16] {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&(u64::MAX - at.0).to_be_bytes());
    k[8..].copy_from_slice(&(u64::MAX - id).to_be_bytes());
    k
}

fn split_order(order: &[u8; 16]) -> (Timestamp, u64) {
    let mut a = [0; 8];
    let mut b = [0; 8];
    a.copy_from_slice(&order[..8]);
    b.copy_from_slice(&order[8..]);
    (
        Timestamp(u64::MAX - u64::from_be_bytes(a)),
        u64::MAX - u64::from_be_bytes(b),
    )
}

fn order_of(prefix: &[u8], key: &[u8]) -> Result<[u8; 16]> {
    key.strip_prefix(prefix)
        .and_then(|rest| <[u8; 16]>::try_from(rest).ok())
        .ok_or_else(|| Error::Corrupt {
            what: "episode index entry",
            key: codec::show_key(key),
            detail: "malformed key".into(),
        })
}

/// The next 16-byte big-endian number, or `None` after the largest.
fn successor(mut k: [u8; 16]) -> Option<[u8; 16]> {
    for b in k.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return Some(k);
        }
    }
    None
}

pub(crate) fn encode_episode(e: &NewEpisode) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + e.text.len() + e.peer.as_str().len());
    out.push(codec::RECORD_VERSION);
    put_varint(&mut out, e.at.0);
    put_str(&mut out, e.peer.as_str());
    out.push(e.kind.tag());
    if let Kind::Custom(name) = &e.kind {
        put_str(&mut out, name);
    }
    put_str(&mut out, &e.text);
    put_pairs(&mut out, &e.metadata);
    out
}

pub(crate) fn decode_episode(id: u64, bytes: &[u8]) -> Result<Episode, DecodeError> {
    let mut r = Reader::new(bytes);
    read_version(&mut r)?;
    let at = Timestamp(r.varint()?);
    let peer = Peer::new(read_str(&mut r, "peer", MAX_PEER_BYTES)?)?;
    let kind = decode_kind(&mut r)?;
    let text = read_str(&mut r, "episode text", MAX_TEXT_BYTES)?.to_owned();
    let metadata = read_pairs(&mut r, "episode metadata")?;
    r.finish()?;
    let episode = NewEpisode {
        at,
        peer,
        kind,
        text,
        metadata,
    };
    episode.check()?;
    let NewEpisode {
        at,
        peer,
        kind,
        text,
        metadata,
    } = episode;
    Ok(Episode {
        id,
        at,
        peer,
        kind,
        text,
        metadata,
    })
}

fn decode_kind(r: &mut Reader<'_>) -> Decoded<Kind> {
    Ok(match r.u8()? {
        0 => Kind::Custom(read_str(r, "episode kind", codec::MAX_NAME_BYTES)?.to_owned()),
        1 => Kind::MessageSent,
        2 => Kind::MessageReceived,
        3 => Kind::ToolCall,
        4 => Kind::ToolResult,
        5 => Kind::Observation,
        6 => Kind::Thought,
        t => return Err(DecodeError::Invalid(format!("unknown episode kind {t}"))),
    })
}

#[cfg(test)]
mod tests {
    use mesh_store::MemStore;

    use super::*;

    fn peer(n: u32) -> Peer {
        Peer::new(format!("did:key:z6Mk{n}")).unwrap()
    }

    fn ep(at: u64, p: u32, kind: Kind, text: &str) -> NewEpisode {
        NewEpisode::new(Timestamp(at), peer(p), kind, text)
    }

    fn ids(v: &[Episode]) -> Vec<u64> {
        v.iter().map(|e| e.id).collect()
    }

    #[test]
    fn tokenizer() {
        assert_eq!(
            tokens("Hello, hello WORLD! Straße 42x_y"),
            ["42x", "hello", "straße", "world", "y"]
        );
        assert!(tokens(" ,.;").is_empty());
        let long = "a".repeat(100);
        assert_eq!(tokens(&long), ["a".repeat(MAX_TOKEN_BYTES)]);
        // Cut at a character boundary.
        let wide = "é".repeat(40);
        assert_eq!(tokens(&wide)[0].len(), 64);
        // A capital that lowercases to two characters.
        assert_eq!(tokens("İ"), ["i\u{307}"]);
    }

    #[test]
    fn peers() {
        Peer::new("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK").unwrap();
        Peer::new("did:web:example.com:user%20a").unwrap();
        for bad in [
            "",
            "key:z6",
            "did:key",
            "did::x",
            "did:Key:x",
            "did:key:",
            "did:key:a:",
            "did:key:a b",
        ] {
            assert!(Peer::new(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            Peer::new(format!("did:key:{}", "z".repeat(300))),
            Err(Error::TooLong { .. })
        ));
    }

    #[test]
    fn append_get_and_query() {
        let store = MemStore::new();
        let mut m = Episodic::open(&store, "episodes").unwrap();
        assert!(m.is_empty());
        let e0 =
            ep(100, 1, Kind::MessageSent, "Deploy the model to node three").with("channel", "chat");
        assert_eq!(m.append(&e0).unwrap(), 0);
        assert_eq!(
            m.append(&ep(200, 2, Kind::MessageReceived, "model deployed"))
                .unwrap(),
            1
        );
        assert_eq!(
            m.append(&ep(150, 1, Kind::ToolCall, "deploy(model)"))
                .unwrap(),
            2
        );
        assert_eq!(
            m.append(&ep(
                150,
                2,
                Kind::Custom("alarm".into()),
                "disk full on node three"
            ))
            .unwrap(),
            3
        );
        assert_eq!(m.len(), 4);
        let got = m.get(0).unwrap().unwrap();
        assert_eq!(got.text, e0.text);
        assert_eq!(
            got.metadata.get("channel").map(String::as_str),
            Some("chat")
        );
        assert_eq!(m.get(4).unwrap(), None);

        // Newest first: by time, then later append first.
        assert_eq!(ids(&m.query(&Query::newest(10)).unwrap()), [1, 3, 2, 0]);
        assert_eq!(ids(&m.query(&Query::newest(2)).unwrap()), [1, 3]);
        assert_eq!(
            ids(&m.query(&Query::newest(10).peer(peer(1))).unwrap()),
            [2, 0]
        );
        assert_eq!(
            ids(&m
                .query(&Query::newest(10).kind(Kind::Custom("alarm".into())))
                .unwrap()),
            [3]
        );
        assert_eq!(
            ids(&m.query(&Query::newest(10).text("MODEL")).unwrap()),
            [1, 2, 0]
        );
        assert_eq!(
            ids(&m.query(&Query::newest(10).text("deploy model")).unwrap()),
            [2, 0]
        );
        assert_eq!(
            ids(&m.query(&Query::newest(10).text("node three")).unwrap()),
            [3, 0]
        );
        assert_eq!(
            ids(&m.query(&Query::newest(10).text("absent model")).unwrap()),
            [] as [u64; 0]
        );
        assert_eq!(
            ids(&m
                .query(
                    &Query::newest(10)
                        .since(Timestamp(150))
                        .until(Timestamp(150))
                )
                .unwrap()),
            [3, 2]
        );
        assert_eq!(
            ids(&m
                .query(
                    &Query::newest(10)
                        .text("three")
                        .peer(peer(2))
                        .since(Timestamp(120))
                )
                .unwrap()),
            [3]
        );
        assert_eq!(
            ids(&m
                .query(
                    &Query::newest(1)
                        .text("model")
                        .kind(Kind::ToolCall)
                        .peer(peer(1))
                )
                .unwrap()),
            [2]
        );
        assert!(
            m.query(&Query::newest(10).since(Timestamp(300)).until(Timestamp(1)))
                .unwrap()
                .is_empty()
        );
        assert_eq!(ids(&m.range(1, 2).unwrap()), [1, 2]);

        // Reopen: everything is still there and the count continues.
        drop(m);
        let mut m = Episodic::open(&store, "episodes").unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(
            ids(&m.query(&Query::newest(10).text("deploy model")).unwrap()),
            [2, 0]
        );
        assert_eq!(m.append(&ep(1, 3, Kind::Thought, "later")).unwrap(), 4);
    }

    #[test]
    fn append_all_is_one_batch() {
        let store = MemStore::new();
        let mut m = Episodic::open(&store, "e").unwrap();
        assert_eq!(m.append_all(&[]).unwrap(), 0);
        let batch: Vec<NewEpisode> = (0..5)
            .map(|i| ep(i, 1, Kind::Observation, &format!("batch item{i}")))
            .collect();
        assert_eq!(m.append_all(&batch).unwrap(), 0);
        assert_eq!(m.append(&ep(9, 2, Kind::Thought, "single")).unwrap(), 5);
        assert_eq!(
            ids(&m.query(&Query::newest(10).text("batch")).unwrap()),
            [4, 3, 2, 1, 0]
        );
        // One bad episode refuses the whole batch.
        let mut bad = batch.clone();
        bad[3].text.clear();
        assert!(matches!(m.append_all(&bad), Err(Error::Empty { .. })));
        let too_many = vec![batch[0].clone(); MAX_BATCH + 1];
        assert!(matches!(
            m.append_all(&too_many),
            Err(Error::TooMany { .. })
        ));
        assert_eq!(m.len(), 6);
    }

    #[test]
    fn extreme_times() {
        let store = MemStore::new();
        let mut m = Episodic::open(&store, "e").unwrap();
        m.append(&ep(u64::MAX, 1, Kind::Observation, "max"))
            .unwrap();
        m.append(&ep(0, 1, Kind::Observation, "min")).unwrap();
        assert_eq!(ids(&m.query(&Query::newest(5)).unwrap()), [0, 1]);
        assert_eq!(
            ids(&m
                .query(&Query::newest(5).text("min max").peer(peer(1)))
                .unwrap()),
            [] as [u64; 0]
        );
        assert_eq!(
            ids(&m.query(&Query::newest(5).until(Timestamp(0))).unwrap()),
            [1]
        );
    }

    #[test]
    fn bad_input_is_refused() {
        let store = MemStore::new();
        let mut m = Episodic::open(&store, "e").unwrap();
        assert!(matches!(
            m.append(&ep(1, 1, Kind::Observation, "")),
            Err(Error::Empty { .. })
        ));
        assert!(matches!(
            m.append(&ep(
                1,
                1,
                Kind::Observation,
                &"x".repeat(MAX_TEXT_BYTES + 1)
            )),
            Err(Error::TooLong { .. })
        ));
        let mut many = ep(1, 1, Kind::Observation, "x");
        for i in 0..33 {
            many = many.with(format!("k{i}"), "v");
        }
        assert!(matches!(
            m.append(&many),
            Err(Error::TooMany { count: 33, .. })
        ));
        assert!(matches!(
            m.append(&ep(1, 1, Kind::Custom("a b".into()), "x")),
            Err(Error::BadName { .. })
        ));
        assert!(m.is_empty());
        assert!(matches!(
            m.query(&Query::newest(10).text("!!")),
            Err(Error::Empty { .. })
        ));
        let words: Vec<String> = (0..17).map(|i| format!("w{i}")).collect();
        assert!(matches!(
            m.query(&Query::newest(10).text(words.join(" "))),
            Err(Error::TooMany { .. })
        ));
        assert!(matches!(
            m.query(&Query::newest(MAX_LIMIT + 1)),
            Err(Error::BoundExceeded { .. })
        ));
    }

    #[test]
    fn corrupt_records_are_typed_errors() {
        let store = MemStore::new();
        let mut m = Episodic::open(&store, "e").unwrap();
        m.append(&ep(5, 1, Kind::Observation, "hello")).unwrap();
        let kv = store.kv("e").unwrap();
        let good = kv.get(&episode_key(0)).unwrap().unwrap();
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            vec![9],
            good[..good.len() - 1].to_vec(),
            [good.as_slice(), &[0]].concat(),
        ];
        let mut bad_kind = good.clone();
        let kind_at = 1 + 1 + 1 + peer(1).as_str().len();
        bad_kind[kind_at] = 99;
        cases.push(bad_kind);
        let mut bad_text = good.clone();
        let last_text = good.len() - 2;
        bad_text[last_text] = 0xff; // not UTF-8
        cases.push(bad_text);
        for bad in cases {
            kv.put(&episode_key(0), &bad).unwrap();
            assert!(
                matches!(
                    m.get(0),
                    Err(Error::Corrupt {
                        what: "episode",
                        ..
                    })
                ),
                "{bad:?}"
            );
            assert!(matches!(
                m.query(&Query::newest(1)),
                Err(Error::Corrupt { .. })
            ));
        }
        // An index entry without its episode.
        kv.delete(&episode_key(0)).unwrap();
        assert!(matches!(
            m.query(&Query::newest(1).text("hello")),
            Err(Error::Corrupt {
                what: "episode index entry",
                ..
            })
        ));
        // A damaged count, and an episode beyond the count.
        kv.put(KEY_NEXT, &[1, 0x80]).unwrap();
        assert!(matches!(
            Episodic::open(&store, "e"),
            Err(Error::Corrupt { .. })
        ));
        kv.put(KEY_NEXT, &codec::encode_u64(0)).unwrap();
        kv.put(&episode_key(3), &good).unwrap();
        assert!(matches!(
            Episodic::open(&store, "e"),
            Err(Error::Corrupt { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = decode_episode(0, &bytes);
        }

        #[test]
        fn records_round_trip(at in 0..u64::MAX, text in "[a-z ]{1,40}", k in 0..7u8, meta in proptest::collection::btree_map("[a-z]{1,8}", "[ -~]{0,20}", 0..4)) {
            let kind = match k {
                0 => Kind::Custom("custom".into()),
                1 => Kind::MessageSent,
                2 => Kind::MessageReceived,
                3 => Kind::ToolCall,
                4 => Kind::ToolResult,
                5 => Kind::Observation,
                _ => Kind::Thought,
            };
            let e = NewEpisode { at: Timestamp(at), peer: peer(3), kind, text, metadata: meta };
            proptest::prop_assume!(e.check().is_ok());
            let bytes = encode_episode(&e);
            let d = decode_episode(9, &bytes).unwrap();
            proptest::prop_assert_eq!((d.id, d.at, d.peer, d.kind, d.text, d.metadata), (9, e.at, e.peer, e.kind, e.text, e.metadata));
            // Every strict prefix is refused.
            for cut in 0..bytes.len() {
                proptest::prop_assert!(decode_episode(9, &bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn successor_carries() {
        let mut k = [0; 16];
        k[15] = 0xff;
        let s = successor(k).unwrap();
        assert_eq!((s[14], s[15]), (1, 0));
        assert_eq!(successor([0xff; 16]), None);
    }
}
