//! The sans-IO sync state machine: [`SyncNode`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use mesh_types::{Instant, NodeId, Timestamp};

use super::crdt::{AppendLog, CausalContext, Dot, LwwMap, OrSet};
use super::delta::{
    self, Access, AttributeKey, Fact, Grant, In, MAX_DELTA_BYTES, MAX_DELTAS_PER_MESSAGE,
    MAX_MESSAGE_BYTES, MAX_WRITERS, Message, Namespace, Payload, SignedDelta, Signer, Verifier,
};
use mesh_store::{Batch, Kv};

use crate::codec::{decode_u64, encode_u64, show_key, store};
use crate::episodic::NewEpisode;
use crate::error::{Error, Result};

/// Settings of a [`SyncNode`].
#[derive(Debug, Clone)]
pub struct Config {
    /// How often [`SyncNode::tick`] starts an anti-entropy round (one digest per namespace,
    /// to the next member in turn).
    pub anti_entropy_interval: Duration,
    /// Most messages waiting in the outbox; beyond it, new sends are dropped and counted
    /// (anti-entropy repairs what a dropped push missed).
    pub max_outbox: usize,
    /// Most deltas kept per namespace; a delta beyond it is refused with
    /// [`Error::BoundExceeded`].
    pub max_deltas_per_namespace: usize,
    /// Most bytes of deltas kept per namespace (their encodings); a delta beyond it is
    /// refused with [`Error::BoundExceeded`].
    pub max_bytes_per_namespace: usize,
    /// Most deltas sent in answer to one digest (the rest follow in later rounds).
    pub max_deltas_per_round: usize,
    /// Most namespaces a node subscribes to.
    pub max_namespaces: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            anti_entropy_interval: Duration::from_secs(5),
            max_outbox: 4_096,
            max_deltas_per_namespace: 1_000_000,
            max_bytes_per_namespace: 256 * 1024 * 1024,
            max_deltas_per_round: 1_024,
            max_namespaces: 1_024,
        }
    }
}

/// A change made by the local node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Assert a graph fact.
    AddFact(Fact),
    /// Retract a graph fact (as this replica observed it; a concurrent add wins).
    RemoveFact(Fact),
    /// Append an episode to this writer's log.
    AppendEpisode(NewEpisode),
    /// Set (`Some`) or clear (`None`) an attribute register.
    SetAttribute {
        /// Which register.
        key: AttributeKey,
        /// Its new value.
        value: Option<String>,
    },
}

/// What the node asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `bytes` (one encoded [`Message`]) to the peer `to`.
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        bytes: Vec<u8>,
    },
}

/// What one received message did.
#[derive(Debug, Default)]
pub struct Receipt {
    /// Deltas verified and joined.
    pub applied: usize,
    /// Deltas already held (nothing done).
    pub duplicates: usize,
    /// Deltas refused, each with its reason (bad signature, stranger, namespace not shared,
    /// bound exceeded, equivocation).
    pub rejected: Vec<Error>,
}

/// Counters since the node started.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Deltas joined (local and received).
    pub applied: u64,
    /// Deltas received again.
    pub duplicates: u64,
    /// Deltas refused.
    pub rejected: u64,
    /// Messages refused whole (malformed, oversized, digest for an unshared namespace).
    pub refused_messages: u64,
    /// Sends dropped because the outbox was full.
    pub dropped_sends: u64,
    /// Deltas withdrawn by a revocation.
    pub withdrawn: u64,
}

/// The replicated state of one namespace: the three CRDTs and the owner's grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replica {
    facts: OrSet<Fact>,
    episodes: AppendLog<NewEpisode>,
    attributes: LwwMap<AttributeKey, Option<String>>,
    /// Per peer: the owner's sequence number of its latest grant, and the grant.
    grants: BTreeMap<NodeId, (u64, Grant)>,
}

impl Replica {
    /// The graph facts (an observed-remove set).
    pub fn facts(&self) -> &OrSet<Fact> {
        &self.facts
    }

    /// The episodes, by writer and the writer's sequence number.
    pub fn episodes(&self) -> &AppendLog<NewEpisode> {
        &self.episodes
    }

    /// The attribute registers (`None`: cleared).
    pub fn attributes(&self) -> &LwwMap<AttributeKey, Option<String>> {
        &self.attributes
    }

    /// An attribute's current value.
    pub fn attribute(&self, subject: &str, name: &str) -> Option<&str> {
        self.attributes
            .get(&AttributeKey::new(subject, name))
            .and_then(|(_, v)| v.as_deref())
    }

    /// What the owner currently grants `peer`.
    pub fn access(&self, peer: &NodeId) -> Access {
        self.grants
            .get(peer)
            .map_or(Access::None, |(_, g)| g.access)
    }

    /// Whether `writer`'s delta number `seq` is valid under the grants known here.
    fn may_write(&self, owner: &NodeId, writer: &NodeId, seq: u64) -> bool {
        writer == owner
            || self
                .grants
                .get(writer)
                .is_some_and(|(_, g)| g.access == Access::Write || seq <= g.writes_until)
    }

    /// The owner and every peer granted access, but `me`.
    fn members(&self, owner: &NodeId, me: &NodeId) -> Vec<NodeId> {
        std::iter::once(*owner)
            .chain(
                self.grants
                    .iter()
                    .filter(|(_, (_, g))| g.access != Access::None)
                    .map(|(p, _)| *p),
            )
            .filter(|p| p != me)
            .collect()
    }

    /// Joins a verified delta of `writer` numbered `seq`. Returns the peer whose access a
    /// grant reduced, with the last of its deltas that stays valid.
    fn apply(&mut self, writer: NodeId, seq: u64, payload: &Payload) -> Option<(NodeId, u64)> {
        let mut reduced = None;
        match payload {
            Payload::Facts(d) => self.facts.join(d),
            Payload::Episodes(d) => self.episodes.join(d),
            Payload::Attributes(d) => self.attributes.join(d),
            Payload::Grant(g) => {
                let newer = self.grants.get(&g.peer).is_none_or(|(s, _)| *s < seq);
                if newer {
                    self.grants.insert(g.peer, (seq, *g));
                    if g.access != Access::Write {
                        reduced = Some((g.peer, g.writes_until));
                    }
                }
            }
        }
        // Every delta's (writer, seq) enters the facts' context (after the join, which must
        // see a fact's dot as new): a fact's dot is its delta's, so the context stays a
        // contiguous prefix and no dot is ever reused.
        self.facts.witness(Dot {
            writer,
            counter: seq,
        });
        reduced
    }

    /// Canonical bytes of the whole state: equal states, equal bytes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        delta::put_state(&mut out, &self.facts, &self.episodes, &self.attributes);
        for (p, (s, g)) in &self.grants {
            out.extend_from_slice(&p.0);
            out.extend_from_slice(&s.to_le_bytes());
            out.push(g.access as u8);
            out.extend_from_slice(&g.writes_until.to_le_bytes());
        }
        out
    }
}

/// One subscribed namespace: the deltas held, their version vector, the state they join to.
#[derive(Debug, Default)]
struct Space {
    replica: Replica,
    log: BTreeMap<(NodeId, u64), SignedDelta>,
    have: CausalContext,
    /// Bytes of the deltas in `log`.
    bytes: usize,
    /// The highest sequence number this node used here (never reused, even after a
    /// revocation withdrew some of its deltas).
    own_seq: u64,
    /// Deltas joined since the last [`SyncNode::save`].
    unsaved: BTreeSet<(NodeId, u64)>,
    /// Deltas withdrawn since the last save.
    gone: BTreeSet<(NodeId, u64)>,
    /// Whether the subscription or `own_seq` changed since the last save.
    meta_dirty: bool,
    next_peer: usize,
}

impl Space {
    /// This node's next sequence number here.
    fn next_seq(&self, me: NodeId) -> u64 {
        self.own_seq.max(self.have.max(&me)).saturating_add(1)
    }

    /// Drops `peer`'s deltas numbered above `until`; rebuilds the state if any went.
    fn withdraw(&mut self, peer: NodeId, until: u64) -> u64 {
        let gone: Vec<(NodeId, u64)> = self
            .log
            .range((peer, until.saturating_add(1))..=(peer, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        if gone.is_empty() {
            return 0;
        }
        for k in &gone {
            if !self.unsaved.remove(k) {
                self.gone.insert(*k);
            }
            if let Some(d) = self.log.remove(k) {
                self.bytes -= d.as_bytes().len();
            }
            self.have.remove(&Dot {
                writer: k.0,
                counter: k.1,
            });
        }
        // Joins commute, so folding what is left in any order gives the same state.
        let mut replica = Replica::default();
        for d in self.log.values() {
            replica.apply(d.writer(), d.seq(), d.payload());
        }
        self.replica = replica;
        gone.len() as u64
    }
}

/// Memory sync between peers, sans IO: delta-state CRDTs in shared namespaces, signed by
/// their writers, pushed to the namespace's members and repaired by anti-entropy.
///
/// # Driving it
///
/// - [`SyncNode::create`] a namespace this node owns, or [`SyncNode::subscribe`] to one a
///   peer owns (learnt out of band; the owner must [`SyncNode::grant`] this node access).
/// - [`SyncNode::write`] local changes: each becomes a delta signed with the node's key,
///   joined locally and pushed to the namespace's members.
/// - Hand every message from a peer to [`SyncNode::receive`] with the peer's authenticated
///   id (the transport's); it verifies and joins deltas and answers digests.
/// - Call [`SyncNode::tick`] when [`SyncNode::poll_timeout`] is due: it starts an
///   anti-entropy round (one digest per namespace, members in turn), which is how a peer
///   that missed pushes (loss, partition, restart) catches up.
/// - After each call, drain [`SyncNode::poll_output`] and send each message to its peer.
///   Delivery may lose, duplicate and reorder messages: the state converges anyway once
///   the network lets anti-entropy rounds through.
///
/// # Persistence
///
/// After each call that changed something, and **before sending that call's outputs**, call
/// [`SyncNode::save`] with a `mesh_store` tree: it writes the new deltas, forgets withdrawn
/// ones and records subscriptions and this node's sequence numbers, in one atomic batch.
/// [`SyncNode::load`] restores a node from it, re-verifying every delta. A node that sent a
/// delta it had not saved could, after a crash, sign a different delta under the same
/// number, which its peers refuse ([`Error::Equivocation`]). [`SyncNode::export`] and
/// [`SyncNode::import`] move one namespace's deltas as a byte string.
///
/// # Example
///
/// Two nodes over a "network" that is a loop in the test. The signer here is a keyed hash
/// to keep the example short; a node signs with its Ed25519 identity.
///
/// ```
/// use mesh_memory::sync::{Access, Config, Fact, Output, Signer, SyncNode, Verifier, Write};
/// use mesh_types::{Digest, Instant, NodeId, Timestamp};
///
/// struct Toy(u8); // NOT a signature scheme: anyone can compute it
/// impl Signer for Toy {
///     fn id(&self) -> NodeId { NodeId([self.0; 32]) }
///     fn sign(&self, m: &[u8]) -> [u8; 64] {
///         let mut s = [0; 64];
///         s[..32].copy_from_slice(&Digest::of_parts([&[self.0][..], m]).0);
///         s
///     }
/// }
/// impl Verifier for Toy {
///     fn verify(&self, key: &NodeId, m: &[u8], sig: &[u8; 64]) -> bool {
///         Toy(key.0[0]).sign(m) == *sig
///     }
/// }
///
/// let mut alice = SyncNode::new(Toy(1), Toy(0), Config::default());
/// let mut bob = SyncNode::new(Toy(2), Toy(0), Config::default());
/// let ns = alice.create("notes")?;
/// bob.subscribe(ns.clone())?;
/// alice.grant(&ns, bob.id(), Access::Write)?;
/// alice.write(&ns, Write::AddFact(Fact::entity("acme", "org")), Timestamp(1_000))?;
///
/// // The driver's loop: drain outputs, deliver, tick when due.
/// let now = Instant::from_millis(0);
/// bob.tick(now);
/// alice.tick(now);
/// for _ in 0..4 {
///     while let Some(Output::Send { to, bytes }) = alice.poll_output() {
///         assert_eq!(to, bob.id());
///         bob.receive(alice.id(), &bytes, now)?;
///     }
///     while let Some(Output::Send { bytes, .. }) = bob.poll_output() {
///         alice.receive(bob.id(), &bytes, now)?;
///     }
/// }
/// let replica = bob.replica(&ns).expect("subscribed");
/// assert!(replica.facts().contains(&Fact::entity("acme", "org")));
/// assert_eq!(replica, alice.replica(&ns).expect("owned"));
/// # Ok::<(), mesh_memory::Error>(())
/// ```
#[derive(Debug)]
pub struct SyncNode<S, V> {
    signer: S,
    verifier: V,
    me: NodeId,
    config: Config,
    spaces: BTreeMap<Namespace, Space>,
    outbox: VecDeque<Output>,
    /// Namespaces unsubscribed since the last save.
    dropped: BTreeSet<Namespace>,
    next_round: Option<Instant>,
    stats: Stats,
}

impl<S: Signer, V: Verifier> SyncNode<S, V> {
    /// A node signing with `signer` and checking peers' deltas with `verifier`.
    pub fn new(signer: S, verifier: V, config: Config) -> Self {
        let me = signer.id();
        Self {
            signer,
            verifier,
            me,
            config,
            spaces: BTreeMap::new(),
            outbox: VecDeque::new(),
            dropped: BTreeSet::new(),
            next_round: None,
            stats: Stats::default(),
        }
    }

    /// This node's id (its signing key).
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Creates (subscribes to) a namespace owned by this node.
    pub fn create(&mut self, name: &str) -> Result<Namespace> {
        let ns = Namespace::new(self.me, name)?;
        self.subscribe(ns.clone())?;
        Ok(ns)
    }

    /// Replicates `namespace` here: deltas for it are accepted from now on, and anti-entropy
    /// asks its owner (and, once the grants are known, its members) for them.
    pub fn subscribe(&mut self, namespace: Namespace) -> Result<()> {
        if !self.spaces.contains_key(&namespace) && self.spaces.len() >= self.config.max_namespaces
        {
            return Err(Error::BoundExceeded {
                what: "namespaces",
                max: self.config.max_namespaces as u64,
            });
        }
        self.dropped.remove(&namespace);
        self.spaces.entry(namespace).or_insert_with(|| Space {
            meta_dirty: true,
            ..Space::default()
        });
        Ok(())
    }

    /// Stops replicating `namespace` and forgets its state.
    pub fn unsubscribe(&mut self, namespace: &Namespace) -> bool {
        let known = self.spaces.remove(namespace).is_some();
        if known {
            self.dropped.insert(namespace.clone());
        }
        known
    }

    /// The namespaces replicated here.
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.spaces.keys()
    }

    /// The state of `namespace`, if subscribed.
    pub fn replica(&self, namespace: &Namespace) -> Option<&Replica> {
        self.spaces.get(namespace).map(|s| &s.replica)
    }

    /// The `(writer, seq)` of every delta held for `namespace`.
    pub fn version_vector(&self, namespace: &Namespace) -> Option<&CausalContext> {
        self.spaces.get(namespace).map(|s| &s.have)
    }

    /// Grants `peer` access to a namespace this node owns (a signed delta like any other:
    /// it reaches every member). Revoking write access keeps the peer's deltas this node
    /// holds and withdraws later ones everywhere.
    pub fn grant(&mut self, namespace: &Namespace, peer: NodeId, access: Access) -> Result<()> {
        if namespace.owner() != self.me {
            return Err(Error::NotOwner {
                namespace: namespace.to_string(),
                writer: self.me,
            });
        }
        let space = self.space(namespace, self.me)?;
        let writes_until = space.have.max(&peer);
        let payload = Payload::Grant(Grant {
            peer,
            access,
            writes_until,
        });
        self.commit(namespace, payload)
    }

    /// Makes a local change at wall-clock time `now` (attribute writes are stamped with
    /// it): signs it, joins it and pushes it to the namespace's members.
    pub fn write(&mut self, namespace: &Namespace, write: Write, now: Timestamp) -> Result<()> {
        let me = self.me;
        let space = self.space(namespace, me)?;
        let next = space.next_seq(me);
        if !space.replica.may_write(&namespace.owner(), &me, next) {
            return Err(Error::Stranger {
                namespace: namespace.to_string(),
                writer: me,
            });
        }
        let r = &space.replica;
        let payload = match write {
            Write::AddFact(f) => {
                f.check()?;
                let dot = Dot {
                    writer: me,
                    counter: next,
                };
                Payload::Facts(r.facts.add_delta_at(dot, f))
            }
            Write::RemoveFact(f) => {
                f.check()?;
                Payload::Facts(r.facts.remove_delta(&f))
            }
            Write::AppendEpisode(e) => {
                e.check()?;
                Payload::Episodes(AppendLog::append_delta_at(me, next, e))
            }
            Write::SetAttribute { key, value } => {
                key.check()?;
                delta::check_value(value.as_deref())?;
                Payload::Attributes(r.attributes.set_delta(me, key, value, now))
            }
        };
        self.commit(namespace, payload)
    }

    /// Signs `payload` as this node's next delta in `namespace`, joins it and pushes it.
    fn commit(&mut self, namespace: &Namespace, payload: Payload) -> Result<()> {
        let me = self.me;
        let space = self.space(namespace, me)?;
        let seq = space.next_seq(me);
        let d = SignedDelta::sign(namespace, seq, payload, &self.signer)?;
        self.check_room(namespace, &d)?;
        let space = self.space_mut(namespace, me)?;
        space.own_seq = seq;
        space.meta_dirty = true;
        let bytes = Message::Deltas(vec![d.clone()]).encode();
        Self::join(space, d);
        let members = space.replica.members(&namespace.owner(), &me);
        self.stats.applied += 1;
        for to in members {
            self.send(to, bytes.clone());
        }
        Ok(())
    }

    /// Joins a delta already checked, and applies what a grant in it withdraws.
    fn join(space: &mut Space, d: SignedDelta) -> u64 {
        let reduced = space.replica.apply(d.writer(), d.seq(), d.payload());
        space.have.insert(d.dot());
        space.bytes += d.as_bytes().len();
        space.unsaved.insert((d.writer(), d.seq()));
        space.log.insert((d.writer(), d.seq()), d);
        match reduced {
            Some((peer, until)) => space.withdraw(peer, until),
            None => 0,
        }
    }

    /// Whether `namespace` has room for `d` within the configured bounds.
    fn check_room(&self, namespace: &Namespace, d: &SignedDelta) -> Result<()> {
        let space = self.space(namespace, self.me)?;
        let full = |what, max: usize| {
            Err(Error::BoundExceeded {
                what,
                max: max as u64,
            })
        };
        if space.log.len() >= self.config.max_deltas_per_namespace {
            return full(
                "deltas in a namespace",
                self.config.max_deltas_per_namespace,
            );
        }
        if space.bytes + d.as_bytes().len() > self.config.max_bytes_per_namespace {
            return full(
                "bytes of deltas in a namespace",
                self.config.max_bytes_per_namespace,
            );
        }
        if space.have.max(&d.writer()) == 0 && space.have.writers().len() >= MAX_WRITERS {
            return full("writers in a namespace", MAX_WRITERS);
        }
        Ok(())
    }

    fn space(&self, namespace: &Namespace, peer: NodeId) -> Result<&Space> {
        self.spaces.get(namespace).ok_or_else(|| Error::NotShared {
            namespace: namespace.to_string(),
            peer,
        })
    }

    fn space_mut(&mut self, namespace: &Namespace, peer: NodeId) -> Result<&mut Space> {
        self.spaces
            .get_mut(namespace)
            .ok_or_else(|| Error::NotShared {
                namespace: namespace.to_string(),
                peer,
            })
    }

    fn send(&mut self, to: NodeId, bytes: Vec<u8>) {
        if self.outbox.len() >= self.config.max_outbox {
            self.stats.dropped_sends += 1;
        } else {
            self.outbox.push_back(Output::Send { to, bytes });
        }
    }

    /// Handles a message from `from` (the peer's authenticated id). A message that cannot
    /// be decoded, or a digest for a namespace not shared with `from`, is refused whole;
    /// otherwise each delta is checked and joined on its own and the [`Receipt`] says what
    /// became of it. `now` is the caller's monotonic time (unused so far; the receive path
    /// has no timers).
    pub fn receive(&mut self, from: NodeId, bytes: &[u8], now: Instant) -> Result<Receipt> {
        let _ = now;
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.stats.refused_messages += 1;
                return Err(e);
            }
        };
        match msg {
            Message::Deltas(ds) => {
                let mut receipt = Receipt::default();
                for d in ds {
                    match self.accept(from, d) {
                        Ok(true) => receipt.applied += 1,
                        Ok(false) => receipt.duplicates += 1,
                        Err(e) => receipt.rejected.push(e),
                    }
                }
                self.stats.applied += receipt.applied as u64;
                self.stats.duplicates += receipt.duplicates as u64;
                self.stats.rejected += receipt.rejected.len() as u64;
                Ok(receipt)
            }
            Message::Digest {
                namespace,
                reply,
                have,
            } => {
                let r = self.answer_digest(from, &namespace, reply, &have);
                if r.is_err() {
                    self.stats.refused_messages += 1;
                }
                r.map(|()| Receipt::default())
            }
        }
    }

    /// Checks and joins one delta: `Ok(true)` if new, `Ok(false)` if held already.
    fn accept(&mut self, from: NodeId, d: SignedDelta) -> Result<bool> {
        let ns = d.namespace().clone();
        let Some(space) = self.spaces.get(&ns) else {
            return Err(Error::NotShared {
                namespace: ns.to_string(),
                peer: from,
            });
        };
        let (writer, seq) = (d.writer(), d.seq());
        if let Some(held) = space.log.get(&(writer, seq)) {
            if held.as_bytes() == d.as_bytes() {
                return Ok(false);
            }
            return Err(if d.verify(&self.verifier) {
                Error::Equivocation {
                    namespace: ns.to_string(),
                    writer,
                    seq,
                }
            } else {
                Error::BadSignature {
                    namespace: ns.to_string(),
                    writer,
                    seq,
                }
            });
        }
        if writer != ns.owner() {
            if matches!(d.payload(), Payload::Grant(_)) {
                return Err(Error::NotOwner {
                    namespace: ns.to_string(),
                    writer,
                });
            }
            if !space.replica.may_write(&ns.owner(), &writer, seq) {
                return Err(Error::Stranger {
                    namespace: ns.to_string(),
                    writer,
                });
            }
        }
        if !d.verify(&self.verifier) {
            return Err(Error::BadSignature {
                namespace: ns.to_string(),
                writer,
                seq,
            });
        }
        self.check_room(&ns, &d)?;
        let withdrawn = Self::join(self.space_mut(&ns, from)?, d);
        self.stats.withdrawn += withdrawn;
        Ok(true)
    }

    /// Sends `from` the deltas its digest lacks and, unless the digest is itself a reply,
    /// our digest if it holds deltas we lack.
    fn answer_digest(
        &mut self,
        from: NodeId,
        namespace: &Namespace,
        reply: bool,
        theirs: &CausalContext,
    ) -> Result<()> {
        let limit = self.config.max_deltas_per_round;
        let not_shared = || Error::NotShared {
            namespace: namespace.to_string(),
            peer: from,
        };
        let space = self.spaces.get(namespace).ok_or_else(not_shared)?;
        if from != namespace.owner() && space.replica.access(&from) == Access::None {
            return Err(not_shared());
        }
        // What they lack: the owner's deltas first (grants decide what the rest may be).
        let writers = owner_first(&space.have, namespace);
        let mut missing: Vec<&SignedDelta> = Vec::new();
        'outer: for w in writers {
            let start = theirs.prefix(&w).saturating_add(1);
            for (_, d) in space.log.range((w, start)..=(w, u64::MAX)) {
                if missing.len() >= limit {
                    break 'outer;
                }
                if !theirs.contains(&d.dot()) {
                    missing.push(d);
                }
            }
        }
        let mut messages = Vec::new();
        for chunk in chunks(&missing) {
            messages.push(Message::Deltas(chunk).encode());
        }
        // What we lack.
        let we_lack = !reply
            && theirs.writers().iter().any(|w| {
                let (prefix, mut cloud) = theirs.parts(w);
                prefix > space.have.prefix(w)
                    || cloud.any(|c| {
                        !space.have.contains(&Dot {
                            writer: *w,
                            counter: c,
                        })
                    })
            });
        if we_lack {
            messages.push(
                Message::Digest {
                    namespace: namespace.clone(),
                    reply: true,
                    have: space.have.clone(),
                }
                .encode(),
            );
        }
        for m in messages {
            self.send(from, m);
        }
        Ok(())
    }

    /// Starts an anti-entropy round if one is due: for each namespace, a digest to the next
    /// member in turn.
    pub fn tick(&mut self, now: Instant) {
        if self.next_round.is_some_and(|t| now < t) {
            return;
        }
        self.next_round = Some(
            now.checked_add(self.config.anti_entropy_interval)
                .unwrap_or(Instant::MAX),
        );
        let me = self.me;
        let mut messages = Vec::new();
        for (ns, space) in &mut self.spaces {
            let members = space.replica.members(&ns.owner(), &me);
            if members.is_empty() {
                continue;
            }
            let to = members[space.next_peer % members.len()];
            space.next_peer = space.next_peer.wrapping_add(1);
            let digest = Message::Digest {
                namespace: ns.clone(),
                reply: false,
                have: space.have.clone(),
            };
            messages.push((to, digest.encode()));
        }
        for (to, bytes) in messages {
            self.send(to, bytes);
        }
    }

    /// When [`SyncNode::tick`] next has work (`None` before the first tick).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_round
    }

    /// The next message to send.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outbox.pop_front()
    }

    /// Writes what changed since the last save (subscriptions, this node's sequence
    /// numbers, new and withdrawn deltas) to `kv` in one atomic batch; returns how many
    /// deltas it wrote. Call it after each call that changed something and before sending
    /// that call's outputs: a delta this node signed must be durable before it leaves.
    /// On error nothing is marked saved, so the next call retries.
    pub fn save<K: Kv>(&mut self, kv: &K) -> Result<usize> {
        let mut batch = Batch::new();
        let mut written = 0;
        for ns in &self.dropped {
            for prefix in [meta_key(ns), delta_prefix(ns)] {
                let keys = kv
                    .scan_prefix(&prefix, self.config.max_deltas_per_namespace + 1)
                    .map_err(store("reading sync state to drop"))?;
                for (k, _) in keys {
                    batch.delete(k);
                }
            }
        }
        for (ns, space) in &self.spaces {
            if space.meta_dirty {
                batch.put(meta_key(ns), encode_u64(space.own_seq));
            }
            for k in &space.unsaved {
                if let Some(d) = space.log.get(k) {
                    batch.put(delta_key(ns, k), d.as_bytes().to_vec());
                    written += 1;
                }
            }
            for k in &space.gone {
                batch.delete(delta_key(ns, k));
            }
        }
        if !batch.is_empty() {
            kv.apply(&batch).map_err(store("saving sync state"))?;
        }
        self.dropped.clear();
        for space in self.spaces.values_mut() {
            space.unsaved.clear();
            space.gone.clear();
            space.meta_dirty = false;
        }
        Ok(written)
    }

    /// A node restored from what [`SyncNode::save`] wrote to `kv`: every subscription and
    /// delta, each delta decoded and checked again like a received one (signature, writer,
    /// bounds; refusals are in the [`Receipt`]). A record that does not decode is
    /// [`Error::Corrupt`].
    pub fn load<K: Kv>(signer: S, verifier: V, config: Config, kv: &K) -> Result<(Self, Receipt)> {
        let mut node = Self::new(signer, verifier, config);
        let me = node.me;
        let metas = kv
            .scan_prefix(&[TAG_META], node.config.max_namespaces)
            .map_err(store("loading sync subscriptions"))?;
        let mut receipt = Receipt::default();
        for (key, value) in metas {
            let corrupt = |detail: String| Error::Corrupt {
                what: "sync subscription",
                key: show_key(&key),
                detail,
            };
            let ns = parse_meta_key(&key).ok_or_else(|| corrupt("bad key".into()))?;
            let own_seq =
                decode_u64(&value).map_err(|e| match e.at("sync subscription", &key) {
                    Error::Corrupt { detail, .. } => corrupt(detail),
                    other => other,
                })?;
            node.subscribe(ns.clone())?;
            if let Some(space) = node.spaces.get_mut(&ns) {
                space.own_seq = own_seq;
            }
            let mut records = kv
                .scan_prefix(&delta_prefix(&ns), node.config.max_deltas_per_namespace)
                .map_err(store("loading sync deltas"))?;
            // The owner's deltas first: the grants decide what the others may be.
            records.sort_by_key(|(k, _)| !is_owners(k, &ns));
            for (k, v) in records {
                let d = SignedDelta::decode(&v).map_err(|e| Error::Corrupt {
                    what: "sync delta",
                    key: show_key(&k),
                    detail: e.to_string(),
                })?;
                if d.namespace() != &ns || delta_key(&ns, &(d.writer(), d.seq())) != k {
                    return Err(Error::Corrupt {
                        what: "sync delta",
                        key: show_key(&k),
                        detail: "stored under another key".into(),
                    });
                }
                match node.accept(me, d) {
                    Ok(true) => receipt.applied += 1,
                    Ok(false) => receipt.duplicates += 1,
                    Err(e) => receipt.rejected.push(e),
                }
            }
        }
        for space in node.spaces.values_mut() {
            space.unsaved.clear();
            space.meta_dirty = false;
        }
        Ok((node, receipt))
    }

    /// Encodes the deltas held for `namespace` (to persist a replica): a version byte, a
    /// count, and each delta as received (with its signature).
    pub fn export(&self, namespace: &Namespace) -> Result<Vec<u8>> {
        let space = self.space(namespace, self.me)?;
        let mut out = vec![EXPORT_VERSION];
        mesh_types::wire::put_varint(&mut out, space.log.len() as u64);
        // The owner's deltas first, so a restore meets the grants before what they allow.
        for w in owner_first(&space.have, namespace) {
            for (_, d) in space.log.range((w, 0)..=(w, u64::MAX)) {
                mesh_types::wire::put_len_prefixed(&mut out, d.as_bytes());
            }
        }
        Ok(out)
    }

    /// Restores deltas [`SyncNode::export`] wrote into the subscribed `namespace`, checking
    /// each like a received one (signature, writer, bounds).
    pub fn import(&mut self, namespace: &Namespace, bytes: &[u8]) -> Result<Receipt> {
        let me = self.me;
        self.space(namespace, me)?;
        let mut r = In::new("sync export", bytes);
        let version = r.u8()?;
        if version != EXPORT_VERSION {
            return Err(r.fail(format!("unknown version {version}")));
        }
        let n = r.count("deltas", self.config.max_deltas_per_namespace)?;
        let mut receipt = Receipt::default();
        for _ in 0..n {
            let d = SignedDelta::decode(r.bytes("sync delta", MAX_DELTA_BYTES)?)?;
            if d.namespace() != namespace {
                return Err(r.fail("a delta of another namespace"));
            }
            if d.writer() == me
                && let Some(s) = self.spaces.get_mut(namespace)
            {
                s.own_seq = s.own_seq.max(d.seq());
                s.meta_dirty = true;
            }
            match self.accept(me, d) {
                Ok(true) => receipt.applied += 1,
                Ok(false) => receipt.duplicates += 1,
                Err(e) => receipt.rejected.push(e),
            }
        }
        r.finish()?;
        Ok(receipt)
    }
}

const EXPORT_VERSION: u8 = 1;

const TAG_META: u8 = b'S';
const TAG_DELTA: u8 = b'D';

/// `S owner name`: a subscription; the value is this node's highest sequence number there.
fn meta_key(ns: &Namespace) -> Vec<u8> {
    let mut k = vec![TAG_META];
    k.extend_from_slice(&ns.owner().0);
    k.extend_from_slice(ns.name().as_bytes());
    k
}

fn parse_meta_key(key: &[u8]) -> Option<Namespace> {
    let rest = key.strip_prefix(&[TAG_META])?;
    let (owner, name) = rest.split_first_chunk::<32>()?;
    let name = std::str::from_utf8(name).ok()?;
    Namespace::new(NodeId(*owner), name).ok()
}

/// `D owner name 0x00`: the namespace's deltas (names never contain NUL).
fn delta_prefix(ns: &Namespace) -> Vec<u8> {
    let mut k = vec![TAG_DELTA];
    k.extend_from_slice(&ns.owner().0);
    k.extend_from_slice(ns.name().as_bytes());
    k.push(0);
    k
}

/// `D owner name 0x00 writer seq` (seq big-endian): one delta.
fn delta_key(ns: &Namespace, (writer, seq): &(NodeId, u64)) -> Vec<u8> {
    let mut k = delta_prefix(ns);
    k.extend_from_slice(&writer.0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Whether a delta key is one of the namespace owner's.
fn is_owners(key: &[u8], ns: &Namespace) -> bool {
    let at = key.len().saturating_sub(40);
    key.get(at..at + 32) == Some(&ns.owner().0[..])
}

/// The writers of `have`, the namespace's owner first.
fn owner_first(have: &CausalContext, namespace: &Namespace) -> Vec<NodeId> {
    let mut writers: Vec<NodeId> = have.writers().into_iter().collect();
    writers.sort_by_key(|w| *w != namespace.owner());
    writers
}

/// Splits deltas into messages within [`MAX_DELTAS_PER_MESSAGE`] and [`MAX_MESSAGE_BYTES`].
fn chunks(deltas: &[&SignedDelta]) -> Vec<Vec<SignedDelta>> {
    let mut out = Vec::new();
    let mut cur: Vec<SignedDelta> = Vec::new();
    let mut size = 16;
    for d in deltas {
        let len = d.as_bytes().len() + 8;
        if !cur.is_empty()
            && (cur.len() >= MAX_DELTAS_PER_MESSAGE || size + len > MAX_MESSAGE_BYTES)
        {
            out.push(std::mem::take(&mut cur));
            size = 16;
        }
        size += len;
        cur.push((*d).clone());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
