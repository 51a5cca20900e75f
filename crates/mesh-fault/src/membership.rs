//! SWIM-style membership (Das, Gupta and Motivala, 2002) with Lifeguard's refinements
//! (Dadgar et al., 2018): who is in the mesh, who is suspected, who is gone.
//!
//! # The protocol
//!
//! Every [`Config::probe_interval`] a member probes the next member of a shuffled
//! round-robin list (reshuffled at the end of each pass, newcomers inserted at a random
//! place; so every member is probed by everyone within a bounded time):
//!
//! 1. it sends a [`Body::Ping`]; the target answers with a [`Body::Ack`];
//! 2. no ack within [`Config::probe_timeout`]: it sends a [`Body::PingReq`] to
//!    [`Config::indirect_probes`] other live members, which ping the target and forward
//!    its ack. A target that only one link lost is reached this way and not suspected;
//! 3. no ack, direct or forwarded, by the end of the interval: the target becomes
//!    [`State::Suspect`];
//! 4. a suspect that does not refute within the suspicion timeout becomes
//!    [`State::Dead`]. The timeout is Lifeguard's: it starts at
//!    `suspicion_max_mult * min` and falls towards `min = suspicion_mult * max(1,
//!    log10(n)) * probe_interval` as more members independently suspect the same
//!    incarnation (`indirect_probes` confirmations reach `min`);
//! 5. a member that hears it is suspected (or declared dead) refutes by raising its
//!    incarnation and announcing itself [`State::Alive`] at the new incarnation.
//!
//! Updates are disseminated by piggybacking: every message carries the sender's own claim,
//! the receiver's suspicion or death if the sender holds it (Lifeguard's "buddy system":
//! a suspect learns of its suspicion from the next ping and refutes at once) and up to
//! [`Config::max_piggyback`] recent updates, each sent `retransmit_mult *
//! ceil(log10(n + 1))` times (the fewest-sent first), `n` the live members.
//!
//! Precedence for a member at incarnation `i` (SWIM's): `Alive(j)` wins if `j > i`;
//! `Suspect(j)` wins over `Alive` if `j >= i` and over `Suspect` if `j > i`; `Dead(j)` and
//! `Left(j)` win over `Alive` and `Suspect` if `j >= i`. Anything else is stale and ignored.
//!
//! # Forged claims
//!
//! The wire is not trusted: every [`Claim`] is signed by its `origin` through the
//! driver's [`Signer`] and checked with its [`Verifier`] (in a node, the Ed25519 key whose
//! public half is the [`NodeId`]), over [`Claim::signed_bytes`]. The rules:
//!
//! - `Alive(X, i)` and `Left(X, i)` are valid only with `origin == X` and X's signature:
//!   only X may announce itself or raise its own incarnation, so a refutation cannot be
//!   forged and a peer cannot revive or keep alive somebody else. Claims relayed by
//!   dissemination keep X's signature and are accepted from any messenger.
//! - `Suspect(X, i)` and `Dead(X, i)` may come from any member we hold alive or suspect,
//!   signed by it and naming it as `origin` (the accuser); a self-accusation
//!   (`origin == X`) is refused, and so is an accusation by a stranger or a dead member
//!   (counted in [`Counters::unknown`]), so fresh keys cannot confirm suspicions.
//! - A claim whose signature does not verify, or that breaks the rule above, is refused and
//!   counted in [`Counters::forged`]; the rest of the message is still processed.
//! - A stale claim (lower incarnation, or no news) is ignored, counted in
//!   [`Counters::stale`], and costs no signature check.
//! - A claim about ourselves at an incarnation above ours, signed by ourselves, comes from
//!   our previous life (a restart that lost the incarnation): we continue above it. An
//!   accusation at or above our incarnation is refuted above it.
//!
//! What signatures cannot stop: a replayed old claim (it is stale wherever the newer one
//! arrived, and a member forgotten after [`Config::dead_retention`] could be re-added by a
//! replayed `Alive` and then probed out again), and a member that accuses others (it is
//! named as the accuser in [`Event::Suspected`] and [`Event::Down`], and an accused live
//! member refutes). Acks are accepted only from the target or from a member asked to
//! relay, for the pending probe's sequence number.
//!
//! # Driving it
//!
//! [`Membership`] is sans-IO. A driver (a tokio task in a node, a loop in a simulation):
//!
//! 1. builds it with [`Membership::new`] (a seed for the probe order, its signer and
//!    verifier, `now`) and adds the peers it knows with [`Membership::add_seed`];
//! 2. on every datagram from an authenticated peer, calls [`Membership::handle_bytes`]
//!    (or [`Membership::handle_message`] with a decoded message);
//! 3. when the time from [`Membership::poll_timeout`] is reached, calls
//!    [`Membership::handle_timeout`];
//! 4. after each of the calls above, drains [`Membership::poll_transmit`] (sending each
//!    message, encoded with [`Message::encode`], to its `to`; losing one is fine) and
//!    [`Membership::poll_event`], then re-arms its timer with `poll_timeout`.
//!
//! Nothing has to be persisted, but a driver that stores [`Membership::incarnation`] and
//! passes it back through [`Config::initial_incarnation`] after a restart rejoins without
//! first being mistaken for its previous, dead self.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use mesh_types::{Digest, Instant, NodeId};

use crate::error::{Result, setting};
use crate::rng::{Random, SplitMix64, shuffle};

mod wire;

pub use wire::{
    Body, Claim, MAX_MESSAGE, MAX_PIGGYBACK, MAX_SIGNATURE, Message, State, WIRE_VERSION,
};

/// Most members a view may hold (the configurable bound is at most this).
pub const HARD_MAX_MEMBERS: usize = 65_536;
/// Most ping-reqs relayed for others at once.
pub const MAX_RELAYS: usize = 256;

/// Signs this member's claims. In a node: its Ed25519 identity key.
pub trait Signer {
    /// The signature of `payload` (at most [`MAX_SIGNATURE`] bytes).
    fn sign(&self, payload: &[u8]) -> Vec<u8>;
}

/// Checks other members' claims. In a node: Ed25519 verification with the [`NodeId`] as
/// the public key.
pub trait Verifier {
    /// Whether `signature` is `signer`'s signature over `payload`.
    fn verify(&self, signer: &NodeId, payload: &[u8], signature: &[u8]) -> bool;
}

/// A stand-in signer for tests and simulations: the "signature" is a BLAKE3 digest of the
/// signer's id and the payload. **Not secure**: anybody can compute anybody's signature;
/// it only makes a claim's origin explicit so that misattributed claims are caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestSigner(pub NodeId);

/// Checks [`DigestSigner`] signatures. **Not secure**, see [`DigestSigner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DigestVerifier;

fn digest_signature(signer: &NodeId, payload: &[u8]) -> Digest {
    Digest::of_parts([
        &b"mesh-fault/digest-signature"[..],
        signer.as_bytes(),
        payload,
    ])
}

impl Signer for DigestSigner {
    fn sign(&self, payload: &[u8]) -> Vec<u8> {
        digest_signature(&self.0, payload).0.to_vec()
    }
}

impl Verifier for DigestVerifier {
    fn verify(&self, signer: &NodeId, payload: &[u8], signature: &[u8]) -> bool {
        digest_signature(signer, payload).as_bytes()[..] == *signature
    }
}

/// Settings of a [`Membership`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Time between probes, and the time a probe has to be answered (directly or
    /// indirectly). Default 1 s.
    pub probe_interval: Duration,
    /// Time the direct ping has before indirect probes are sent; below
    /// `probe_interval`. Default 400 ms.
    pub probe_timeout: Duration,
    /// Members asked to probe an unresponsive target (`k`), and the number of independent
    /// suspicions that bring the suspicion timeout to its minimum. 0 disables indirect
    /// probes. Default 3.
    pub indirect_probes: usize,
    /// The suspicion timeout's minimum, in probe intervals, times `max(1, log10(n))`.
    /// Default 4.
    pub suspicion_mult: u32,
    /// The suspicion timeout's maximum (a suspicion nobody confirms), as a multiple of
    /// the minimum. Default 6.
    pub suspicion_max_mult: u32,
    /// `λ`: each update is piggybacked `λ * ceil(log10(n + 1))` times. Default 4.
    pub retransmit_mult: u32,
    /// Most updates piggybacked on one message, besides the sender's own claim and the
    /// receiver's suspicion (so at most `max_piggyback + 2 <= MAX_PIGGYBACK`). Default 8.
    pub max_piggyback: usize,
    /// Most members known (dead ones are evicted first). Default 1,024.
    pub max_members: usize,
    /// How long a dead or departed member is remembered (so that its stale claims stay
    /// refused). Default 10 min.
    pub dead_retention: Duration,
    /// Most messages and events waiting to be polled; beyond it the oldest are dropped and
    /// counted. Default 4,096.
    pub queue_limit: usize,
    /// Our incarnation at start: 0, or the last one persisted plus one.
    pub initial_incarnation: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(400),
            indirect_probes: 3,
            suspicion_mult: 4,
            suspicion_max_mult: 6,
            retransmit_mult: 4,
            max_piggyback: 8,
            max_members: 1_024,
            dead_retention: Duration::from_secs(600),
            queue_limit: 4_096,
            initial_incarnation: 0,
        }
    }
}

impl Config {
    fn check(&self) -> Result<()> {
        if self.probe_interval.is_zero() {
            return Err(setting("probe_interval", "must be above zero"));
        }
        if self.probe_timeout.is_zero() || self.probe_timeout >= self.probe_interval {
            return Err(setting(
                "probe_timeout",
                format!(
                    "{:?} must be above zero and below probe_interval {:?}",
                    self.probe_timeout, self.probe_interval
                ),
            ));
        }
        if self.indirect_probes > 64 {
            return Err(setting("indirect_probes", "at most 64"));
        }
        if self.suspicion_mult == 0 || self.suspicion_max_mult == 0 {
            return Err(setting("suspicion_mult", "multipliers must be above zero"));
        }
        if self.retransmit_mult == 0 {
            return Err(setting("retransmit_mult", "must be above zero"));
        }
        if self.max_piggyback + 2 > MAX_PIGGYBACK {
            return Err(setting(
                "max_piggyback",
                format!("at most {}", MAX_PIGGYBACK - 2),
            ));
        }
        if !(1..=HARD_MAX_MEMBERS).contains(&self.max_members) {
            return Err(setting(
                "max_members",
                format!("1..={HARD_MAX_MEMBERS}, got {}", self.max_members),
            ));
        }
        if self.queue_limit < 16 {
            return Err(setting("queue_limit", "at least 16"));
        }
        Ok(())
    }
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The receiver.
    pub to: NodeId,
    /// The message ([`Message::encode`] gives its bytes).
    pub message: Message,
}

/// What changed in the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A member joined, or came back after being dead or gone.
    Up {
        /// The member.
        member: NodeId,
        /// Its incarnation.
        incarnation: u64,
    },
    /// A member is suspected.
    Suspected {
        /// The member.
        member: NodeId,
        /// The incarnation suspected.
        incarnation: u64,
        /// The first member that suspected it.
        accuser: NodeId,
    },
    /// A suspected member refuted the suspicion.
    Refuted {
        /// The member.
        member: NodeId,
        /// Its new incarnation.
        incarnation: u64,
    },
    /// A member is declared dead.
    Down {
        /// The member.
        member: NodeId,
        /// The incarnation declared dead.
        incarnation: u64,
        /// Who declared it.
        accuser: NodeId,
    },
    /// A member announced its departure.
    Left {
        /// The member.
        member: NodeId,
        /// Its incarnation.
        incarnation: u64,
    },
    /// We were accused (suspected or declared dead) and refuted at a higher incarnation.
    Accused {
        /// The accuser.
        accuser: NodeId,
        /// Our new incarnation.
        incarnation: u64,
    },
}

/// Claims refused and items dropped, since the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Claims with a bad signature or from an origin not allowed to make them.
    pub forged: u64,
    /// Claims that brought nothing new (older incarnation, or already known).
    pub stale: u64,
    /// Claims about members we do not know that could not add them, and accusations by
    /// accusers we do not hold alive or suspect.
    pub unknown: u64,
    /// New members refused because the view is full.
    pub full: u64,
    /// Messages that failed to decode.
    pub malformed: u64,
    /// Ping-reqs refused because [`MAX_RELAYS`] were pending.
    pub relays_refused: u64,
    /// Messages dropped because the transmit queue was full.
    pub transmits_dropped: u64,
    /// Events dropped because the event queue was full.
    pub events_dropped: u64,
}

/// A member as the view holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member.
    pub id: NodeId,
    /// Its state.
    pub state: State,
    /// Its incarnation.
    pub incarnation: u64,
}

#[derive(Debug, Clone)]
struct Suspicion {
    started: Instant,
    /// Distinct accusers, the first one first (at most `indirect_probes + 1` kept).
    accusers: Vec<NodeId>,
    deadline: Instant,
}

#[derive(Debug, Clone)]
struct Member {
    state: State,
    incarnation: u64,
    since: Instant,
    /// The latest claim accepted about it, to relay (none for a seed not yet heard from).
    claim: Option<Claim>,
    suspicion: Option<Suspicion>,
}

#[derive(Debug, Clone)]
struct Probe {
    target: NodeId,
    seq: u64,
    started: Instant,
    /// The members asked to relay (empty until the direct ping timed out).
    relays: Vec<NodeId>,
    indirect_sent: bool,
    acked: bool,
}

#[derive(Debug, Clone, Copy)]
struct Relay {
    requester: NodeId,
    seq: u64,
    target: NodeId,
    deadline: Instant,
}

#[derive(Debug, Clone)]
struct Broadcast {
    claim: Claim,
    sent: u32,
}

/// The membership core of one member; see the [module docs](self) for the protocol and
/// the calls a driver makes.
pub struct Membership {
    me: NodeId,
    config: Config,
    rng: SplitMix64,
    signer: Box<dyn Signer + Send>,
    verifier: Box<dyn Verifier + Send>,
    incarnation: u64,
    own_claim: Claim,
    left: bool,
    members: BTreeMap<NodeId, Member>,
    order: Vec<NodeId>,
    next_index: usize,
    probe: Option<Probe>,
    next_probe_at: Instant,
    seq: u64,
    relays: BTreeMap<u64, Relay>,
    broadcasts: Vec<Broadcast>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: Counters,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("me", &self.me)
            .field("incarnation", &self.incarnation)
            .field("members", &self.members.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// A member `me` alone in its view. `seed` drives the probe order and the choice of
    /// relays; the first probe is at a random point of the first interval after `now`.
    pub fn new(
        me: NodeId,
        config: Config,
        seed: u64,
        signer: Box<dyn Signer + Send>,
        verifier: Box<dyn Verifier + Send>,
        now: Instant,
    ) -> Result<Self> {
        config.check()?;
        let own_claim = signed(&*signer, me, config.initial_incarnation, State::Alive, me);
        if own_claim.signature.len() > MAX_SIGNATURE {
            return Err(setting(
                "signer",
                format!(
                    "signatures of {} bytes exceed {MAX_SIGNATURE}",
                    own_claim.signature.len()
                ),
            ));
        }
        let mut rng = SplitMix64::new(seed);
        let interval = nanos(config.probe_interval);
        let first = now + Duration::from_nanos(rng.below(interval));
        Ok(Self {
            me,
            config,
            rng,
            signer,
            verifier,
            incarnation: config.initial_incarnation,
            own_claim,
            left: false,
            members: BTreeMap::new(),
            order: Vec::new(),
            next_index: 0,
            probe: None,
            next_probe_at: first,
            seq: 0,
            relays: BTreeMap::new(),
            broadcasts: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
        })
    }

    /// Our id.
    pub fn local_id(&self) -> NodeId {
        self.me
    }

    /// Our current incarnation (worth persisting, see the module docs).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Claims refused and items dropped so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The state and incarnation of `member` (`None`: not in the view; ourselves included).
    pub fn member(&self, member: &NodeId) -> Option<MemberInfo> {
        if *member == self.me {
            return Some(MemberInfo {
                id: self.me,
                state: self.own_claim.state,
                incarnation: self.incarnation,
            });
        }
        self.members.get(member).map(|m| MemberInfo {
            id: *member,
            state: m.state,
            incarnation: m.incarnation,
        })
    }

    /// Every member in the view except ourselves, in id order.
    pub fn members(&self) -> impl Iterator<Item = MemberInfo> + '_ {
        self.members.iter().map(|(id, m)| MemberInfo {
            id: *id,
            state: m.state,
            incarnation: m.incarnation,
        })
    }

    /// The members that count as live for placement and quorum decisions: alive or
    /// suspected (not yet dead), ourselves included unless we left; in id order.
    pub fn live_members(&self) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| matches!(m.state, State::Alive | State::Suspect))
            .map(|(id, _)| *id)
            .collect();
        if !self.left {
            out.push(self.me);
            out.sort_unstable();
        }
        out
    }

    /// Adds a peer known from elsewhere (configuration, discovery) as alive at incarnation
    /// 0, so that it gets probed and learns about us. Its own signed claim replaces this
    /// entry as soon as it is heard. Ignored if already known or the view is full.
    pub fn add_seed(&mut self, peer: NodeId, now: Instant) {
        if peer == self.me || self.members.contains_key(&peer) || !self.make_room() {
            return;
        }
        self.insert(peer, State::Alive, 0, None, now);
    }

    /// Announces our departure: a `Left` claim at a new incarnation, sent at once in a ping
    /// to every live member (each message carries the sender's own claim) and disseminated
    /// on the following messages; we stop probing (but still answer). A driver about to stop
    /// sends the transmits this queues before it closes its transport.
    pub fn leave(&mut self) {
        if self.left {
            return;
        }
        self.left = true;
        self.probe = None;
        self.incarnation = self.incarnation.saturating_add(1);
        self.own_claim = signed(
            &*self.signer,
            self.me,
            self.incarnation,
            State::Left,
            self.me,
        );
        let live: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| matches!(m.state, State::Alive | State::Suspect))
            .map(|(id, _)| *id)
            .collect();
        for to in live {
            self.seq = self.seq.wrapping_add(1);
            let seq = self.seq;
            self.send(to, Body::Ping { seq });
        }
    }

    /// Decodes `bytes` from `from` (the peer the transport authenticated) and handles the
    /// message. Malformed input is counted and returned as an error; the state is
    /// unchanged.
    pub fn handle_bytes(&mut self, from: NodeId, bytes: &[u8], now: Instant) -> Result<()> {
        match Message::decode(bytes) {
            Ok(message) => {
                self.handle_message(from, message, now);
                Ok(())
            }
            Err(e) => {
                self.counters.malformed += 1;
                Err(e)
            }
        }
    }

    /// Handles a message from `from`.
    pub fn handle_message(&mut self, from: NodeId, message: Message, now: Instant) {
        if from == self.me {
            return;
        }
        for claim in message.claims.into_iter().take(MAX_PIGGYBACK) {
            self.apply(claim, now, false);
        }
        match message.body {
            Body::Ping { seq } => {
                let about = self.me;
                self.send(from, Body::Ack { seq, about });
            }
            Body::PingReq { seq, target } => {
                if target == self.me {
                    let about = self.me;
                    self.send(from, Body::Ack { seq, about });
                } else if self.relays.len() >= MAX_RELAYS {
                    self.counters.relays_refused += 1;
                } else {
                    let own = self.next_seq();
                    let deadline = now + self.config.probe_timeout;
                    self.relays.insert(
                        own,
                        Relay {
                            requester: from,
                            seq,
                            target,
                            deadline,
                        },
                    );
                    self.send(target, Body::Ping { seq: own });
                }
            }
            Body::Ack { seq, about } => {
                if let Some(p) = &mut self.probe
                    && p.seq == seq
                    && p.target == about
                    && (from == about || p.relays.contains(&from))
                {
                    p.acked = true;
                } else if let Some(r) = self.relays.get(&seq).copied()
                    && r.target == about
                    && from == about
                {
                    self.relays.remove(&seq);
                    self.send(r.requester, Body::Ack { seq: r.seq, about });
                }
            }
        }
    }

    /// When [`Membership::handle_timeout`] should next be called (`None`: nothing
    /// scheduled).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = (!self.left).then_some(self.next_probe_at);
        let mut consider = |t: Instant| {
            next = Some(next.map_or(t, |n| n.min(t)));
        };
        if let Some(p) = &self.probe
            && !p.acked
            && !p.indirect_sent
        {
            consider(p.started + self.config.probe_timeout);
        }
        for m in self.members.values() {
            if let Some(s) = &m.suspicion {
                consider(s.deadline);
            }
        }
        if let Some(d) = self.relays.values().map(|r| r.deadline).min() {
            consider(d);
        }
        next
    }

    /// Advances the protocol to `now`: indirect probes, ends of probe rounds, suspicion
    /// timeouts. Calling it early or often is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.relays.retain(|_, r| r.deadline > now);
        if let Some(p) = &self.probe
            && !p.acked
            && !p.indirect_sent
            && now >= p.started + self.config.probe_timeout
        {
            self.send_indirect();
        }
        if !self.left && now >= self.next_probe_at {
            self.finish_probe(now);
            self.forget_dead(now);
            self.start_probe(now);
            let next = self.next_probe_at + self.config.probe_interval;
            self.next_probe_at = if next > now {
                next
            } else {
                now + self.config.probe_interval
            };
        }
        let expired: Vec<(NodeId, u64)> = self
            .members
            .iter()
            .filter(|(_, m)| m.suspicion.as_ref().is_some_and(|s| s.deadline <= now))
            .map(|(id, m)| (*id, m.incarnation))
            .collect();
        for (id, incarnation) in expired {
            let claim = signed(&*self.signer, id, incarnation, State::Dead, self.me);
            self.apply(claim, now, true);
        }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next change of the view.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // --- probing ---

    fn next_seq(&mut self) -> u64 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn start_probe(&mut self, now: Instant) {
        let Some(target) = self.next_target() else {
            self.probe = None;
            return;
        };
        let seq = self.next_seq();
        self.probe = Some(Probe {
            target,
            seq,
            started: now,
            relays: Vec::new(),
            indirect_sent: false,
            acked: false,
        });
        self.send(target, Body::Ping { seq });
    }

    fn next_target(&mut self) -> Option<NodeId> {
        for _ in 0..=self.order.len() {
            if self.next_index >= self.order.len() {
                self.order = self
                    .members
                    .iter()
                    .filter(|(_, m)| matches!(m.state, State::Alive | State::Suspect))
                    .map(|(id, _)| *id)
                    .collect();
                shuffle(&mut self.order, &mut self.rng);
                self.next_index = 0;
                if self.order.is_empty() {
                    return None;
                }
            }
            let id = self.order[self.next_index];
            self.next_index += 1;
            if self
                .members
                .get(&id)
                .is_some_and(|m| matches!(m.state, State::Alive | State::Suspect))
            {
                return Some(id);
            }
        }
        None
    }

    fn send_indirect(&mut self) {
        let Some(p) = &self.probe else { return };
        let (target, seq) = (p.target, p.seq);
        let mut candidates: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(id, m)| **id != target && m.state == State::Alive)
            .map(|(id, _)| *id)
            .collect();
        shuffle(&mut candidates, &mut self.rng);
        candidates.truncate(self.config.indirect_probes);
        for relay in &candidates {
            self.send(*relay, Body::PingReq { seq, target });
        }
        if let Some(p) = &mut self.probe {
            p.relays = candidates;
            p.indirect_sent = true;
        }
    }

    fn finish_probe(&mut self, now: Instant) {
        let Some(p) = self.probe.take() else { return };
        if p.acked {
            return;
        }
        let Some(m) = self.members.get(&p.target) else {
            return;
        };
        let already = m
            .suspicion
            .as_ref()
            .is_some_and(|s| s.accusers.contains(&self.me));
        if matches!(m.state, State::Alive | State::Suspect) && !already {
            let claim = signed(
                &*self.signer,
                p.target,
                m.incarnation,
                State::Suspect,
                self.me,
            );
            self.apply(claim, now, true);
        }
    }

    // --- claims ---

    /// Applies a claim; `trusted` for the claims we make ourselves.
    fn apply(&mut self, claim: Claim, now: Instant, trusted: bool) {
        if matches!(claim.state, State::Suspect | State::Dead) && !self.may_accuse(&claim.origin) {
            self.counters.unknown += 1;
            return;
        }
        if claim.member == self.me {
            self.apply_about_me(claim);
            return;
        }
        let self_claim = matches!(claim.state, State::Alive | State::Left);
        if self_claim != (claim.origin == claim.member) {
            // Alive/Left by someone else, or a self-accusation.
            self.counters.forged += 1;
            return;
        }
        let Some(m) = self.members.get(&claim.member) else {
            if claim.state != State::Alive {
                self.counters.unknown += 1;
                return;
            }
            if !self.verified(&claim, trusted) {
                return;
            }
            if !self.make_room() {
                self.counters.full += 1;
                return;
            }
            let (member, incarnation) = (claim.member, claim.incarnation);
            self.insert(member, State::Alive, incarnation, Some(claim.clone()), now);
            self.enqueue_broadcast(claim);
            self.event(Event::Up {
                member,
                incarnation,
            });
            return;
        };
        let (i, j) = (m.incarnation, claim.incarnation);
        let news = match (claim.state, m.state) {
            (State::Alive, _) => j > i || (j == i && m.state == State::Alive && m.claim.is_none()),
            (State::Suspect, State::Alive) => j >= i,
            (State::Suspect, State::Suspect) => {
                j > i
                    || (j == i
                        && m.suspicion
                            .as_ref()
                            .is_some_and(|s| !s.accusers.contains(&claim.origin)))
            }
            (State::Dead | State::Left, State::Alive | State::Suspect) => j >= i,
            (State::Left, State::Dead) => j >= i,
            _ => false,
        };
        if !news {
            self.counters.stale += 1;
            return;
        }
        if !self.verified(&claim, trusted) {
            return;
        }
        let n = self.live_count();
        let Some(m) = self.members.get_mut(&claim.member) else {
            return;
        };
        let before = m.state;
        let first_claim = m.claim.is_none();
        let member = claim.member;
        m.incarnation = j;
        match claim.state {
            State::Alive => {
                m.state = State::Alive;
                m.suspicion = None;
                if before != State::Alive {
                    m.since = now;
                }
                m.claim = Some(claim.clone());
                self.enqueue_broadcast(claim);
                match before {
                    State::Suspect => self.event(Event::Refuted {
                        member,
                        incarnation: j,
                    }),
                    State::Dead | State::Left => {
                        self.order_insert(member);
                        self.event(Event::Up {
                            member,
                            incarnation: j,
                        });
                    }
                    State::Alive => {
                        if first_claim {
                            self.event(Event::Up {
                                member,
                                incarnation: j,
                            });
                        }
                    }
                }
            }
            State::Suspect => {
                let confirmation = before == State::Suspect && j == i;
                let k = self.config.indirect_probes;
                let s = m.suspicion.get_or_insert(Suspicion {
                    started: now,
                    accusers: Vec::new(),
                    deadline: now,
                });
                if !confirmation {
                    s.started = now;
                    s.accusers.clear();
                }
                if s.accusers.len() <= k {
                    s.accusers.push(claim.origin);
                }
                s.deadline = s.started
                    + suspicion_timeout(&self.config, n, s.accusers.len().saturating_sub(1));
                m.state = State::Suspect;
                if !confirmation {
                    m.since = now;
                }
                m.claim = Some(claim.clone());
                let accuser = claim.origin;
                self.enqueue_broadcast(claim);
                if !confirmation {
                    self.event(Event::Suspected {
                        member,
                        incarnation: j,
                        accuser,
                    });
                }
            }
            State::Dead | State::Left => {
                let state = claim.state;
                m.state = state;
                m.suspicion = None;
                m.since = now;
                m.claim = Some(claim.clone());
                let accuser = claim.origin;
                self.enqueue_broadcast(claim);
                if matches!(before, State::Alive | State::Suspect) {
                    self.event(if state == State::Dead {
                        Event::Down {
                            member,
                            incarnation: j,
                            accuser,
                        }
                    } else {
                        Event::Left {
                            member,
                            incarnation: j,
                        }
                    });
                }
            }
        }
    }

    fn apply_about_me(&mut self, claim: Claim) {
        let mine = self.incarnation;
        let j = claim.incarnation;
        let news = if claim.origin == self.me {
            // Our own claim echoed back is no news; one above our incarnation is from a
            // previous life.
            j > mine
        } else {
            matches!(claim.state, State::Suspect | State::Dead) && j >= mine
        };
        if !news || self.left {
            self.counters.stale += 1;
            return;
        }
        let self_claim = matches!(claim.state, State::Alive | State::Left);
        if self_claim != (claim.origin == claim.member) {
            self.counters.forged += 1;
            return;
        }
        if !self.verified(&claim, false) {
            return;
        }
        self.incarnation = j.saturating_add(1);
        self.own_claim = signed(
            &*self.signer,
            self.me,
            self.incarnation,
            State::Alive,
            self.me,
        );
        if claim.origin != self.me {
            self.event(Event::Accused {
                accuser: claim.origin,
                incarnation: self.incarnation,
            });
        }
    }

    /// Only ourselves and members we hold alive or suspect may accuse: a stranger (or a
    /// swarm of fresh keys) cannot confirm suspicions.
    fn may_accuse(&self, origin: &NodeId) -> bool {
        *origin == self.me
            || self
                .members
                .get(origin)
                .is_some_and(|m| matches!(m.state, State::Alive | State::Suspect))
    }

    fn verified(&mut self, claim: &Claim, trusted: bool) -> bool {
        if trusted
            || self
                .verifier
                .verify(&claim.origin, &claim.payload(), &claim.signature)
        {
            true
        } else {
            self.counters.forged += 1;
            false
        }
    }

    // --- view bookkeeping ---

    fn live_count(&self) -> usize {
        1 + self
            .members
            .values()
            .filter(|m| matches!(m.state, State::Alive | State::Suspect))
            .count()
    }

    fn insert(
        &mut self,
        id: NodeId,
        state: State,
        incarnation: u64,
        claim: Option<Claim>,
        now: Instant,
    ) {
        self.members.insert(
            id,
            Member {
                state,
                incarnation,
                since: now,
                claim,
                suspicion: None,
            },
        );
        self.order_insert(id);
    }

    /// Inserts a (re)joined member at a random place of the probe order.
    fn order_insert(&mut self, id: NodeId) {
        let at = self.rng.below(self.order.len() as u64 + 1) as usize;
        self.order.insert(at, id);
        if at < self.next_index {
            self.next_index += 1;
        }
    }

    /// Makes room for one more member by evicting the longest-dead one if the view is
    /// full; false if every member is live.
    fn make_room(&mut self) -> bool {
        if self.members.len() < self.config.max_members {
            return true;
        }
        let oldest = self
            .members
            .iter()
            .filter(|(_, m)| matches!(m.state, State::Dead | State::Left))
            .min_by_key(|(_, m)| m.since)
            .map(|(id, _)| *id);
        match oldest {
            Some(id) => {
                self.forget(&id);
                true
            }
            None => false,
        }
    }

    fn forget(&mut self, id: &NodeId) {
        self.members.remove(id);
        self.broadcasts.retain(|b| b.claim.member != *id);
    }

    fn forget_dead(&mut self, now: Instant) {
        let retention = self.config.dead_retention;
        let gone: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| {
                matches!(m.state, State::Dead | State::Left) && m.since + retention <= now
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.forget(&id);
        }
    }

    // --- dissemination ---

    fn enqueue_broadcast(&mut self, claim: Claim) {
        // Our own claim rides on every message anyway.
        if claim.member == self.me {
            return;
        }
        // One pending update per member: the newer claim replaces the older.
        self.broadcasts.retain(|b| b.claim.member != claim.member);
        self.broadcasts.push(Broadcast { claim, sent: 0 });
    }

    fn retransmit_limit(&self) -> u32 {
        let n = self.live_count() as f64;
        let log = (n + 1.0).log10().ceil().max(1.0) as u32;
        self.config.retransmit_mult.saturating_mul(log)
    }

    fn piggyback(&mut self, to: NodeId) -> Vec<Claim> {
        let mut claims = vec![self.own_claim.clone()];
        // Buddy system: tell a suspected (or dead) receiver what we hold against it.
        if let Some(m) = self.members.get(&to)
            && matches!(m.state, State::Suspect | State::Dead)
            && let Some(c) = &m.claim
        {
            claims.push(c.clone());
        }
        let limit = self.retransmit_limit();
        // Fewest-sent first; among equals the newest first.
        let mut order: Vec<usize> = (0..self.broadcasts.len()).collect();
        order.sort_by_key(|&i| (self.broadcasts[i].sent, std::cmp::Reverse(i)));
        for i in order.into_iter().take(self.config.max_piggyback) {
            let b = &mut self.broadcasts[i];
            b.sent += 1;
            if !claims.contains(&b.claim) {
                claims.push(b.claim.clone());
            }
        }
        self.broadcasts.retain(|b| b.sent < limit);
        claims
    }

    fn send(&mut self, to: NodeId, body: Body) {
        let claims = self.piggyback(to);
        if self.transmits.len() >= self.config.queue_limit {
            self.transmits.pop_front();
            self.counters.transmits_dropped += 1;
        }
        self.transmits.push_back(Transmit {
            to,
            message: Message { body, claims },
        });
    }

    fn event(&mut self, event: Event) {
        if self.events.len() >= self.config.queue_limit {
            self.events.pop_front();
            self.counters.events_dropped += 1;
        }
        self.events.push_back(event);
    }
}

fn signed(
    signer: &dyn Signer,
    member: NodeId,
    incarnation: u64,
    state: State,
    origin: NodeId,
) -> Claim {
    let signature = signer.sign(&Claim::signed_bytes(&member, incarnation, state, &origin));
    Claim {
        member,
        incarnation,
        state,
        origin,
        signature,
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Lifeguard's suspicion timeout for a view of `n` live members after `confirmations`
/// independent suspicions beyond the first.
fn suspicion_timeout(config: &Config, n: usize, confirmations: usize) -> Duration {
    let scale = (n.max(1) as f64).log10().max(1.0);
    let min = config.probe_interval.as_secs_f64() * f64::from(config.suspicion_mult) * scale;
    let max = min * f64::from(config.suspicion_max_mult);
    let k = config.indirect_probes.max(1) as f64;
    let fraction = ((confirmations as f64) + 1.0).ln() / (k + 1.0).ln();
    let timeout = (max - (max - min) * fraction).max(min);
    Duration::from_secs_f64(timeout)
}

#[cfg(test)]
mod tests;
