//! The event loop: transport events, handle commands, the replica's timer, housekeeping and
//! shutdown in; messages, answers to clients and committed blocks out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mesh_consensus::{
    Limits, Output, Replica, Request, RequestAuth, Storage as _, StoreStorage, Submitted,
    ValidatorSet,
};
use mesh_crypto::ed25519::SigningKey;
use mesh_store::{DiskStore, Kv as _, Store as _};
use mesh_transport::{Event, InboundRequest, Multiaddr, PeerId, Transport};
use mesh_types::{Instant, NodeId};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot, watch};

use super::wire::{self, Committed, Outcome};
use super::{
    Block, Command, Config, Counters, PROTOCOL, RELAY_PROTOCOL, SUBMIT_PROTOCOL, Setup, Status,
    node_id, peer_id, peer_of,
};
use crate::error::{Error, Result};

/// The tree holding the driver's own durable state.
const STATE_TREE: &str = "driver.consensus";
/// Its key for the highest local request id reserved so far (u64 little-endian).
const RESERVED_IDS: &[u8] = b"local-ids";
/// Local request ids are reserved this many at a time (one store write each).
const ID_CHUNK: u64 = 1 << 16;
/// A dial still unanswered after this long is tried again.
const DIAL_PATIENCE: Duration = Duration::from_secs(10);
/// Most bytes of requests in one relay message.
const RELAY_BYTES: usize = 1 << 20;
/// The most bytes of blocks one ledger read through a [`Handle`](super::Handle) returns.
const LEDGER_READ_BYTES: usize = 4 * 1024 * 1024;

type Storage = StoreStorage<DiskStore>;

/// The driver's one clock: monotonic time since the driver started, as the replica sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: tokio::time::Instant,
}

impl Clock {
    /// The only place the driver reads the clock.
    // The driver is where time enters the system: the replica gets `now` from here.
    #[allow(clippy::disallowed_methods)]
    fn read() -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    pub(crate) fn start() -> Self {
        Self {
            origin: Self::read(),
        }
    }

    pub(crate) fn now(&self) -> Instant {
        let elapsed = Self::read().saturating_duration_since(self.origin);
        Instant::from_nanos(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The tokio instant of `at` (far in the future if it does not fit).
    pub(crate) fn deadline(&self, at: Instant) -> tokio::time::Instant {
        let far = Duration::from_secs(365 * 24 * 3600);
        self.origin
            .checked_add(Duration::from_nanos(at.as_nanos()))
            .or_else(|| Self::read().checked_add(far))
            .unwrap_or(self.origin)
    }
}

/// Someone waiting for a request's outcome.
#[derive(Debug)]
enum Answer {
    Local(oneshot::Sender<Result<Outcome>>),
    Remote { token: u64, expires: Instant },
}

/// A request submitted here that has not executed yet.
#[derive(Debug)]
struct Waiting {
    request: Request,
    /// When it was submitted (or last relayed).
    since: Instant,
    relayed: bool,
    answers: Vec<Answer>,
}

/// The loop's state. Lives on the driver's thread.
pub(crate) struct Loop {
    replica: Replica<Storage>,
    store: DiskStore,
    data_dir: std::path::PathBuf,
    transport: Transport,
    events: mpsc::Receiver<Event>,
    commands: mpsc::Receiver<Command>,
    stop: watch::Receiver<bool>,
    status: watch::Sender<Status>,
    blocks: broadcast::Sender<Block>,
    runtime: tokio::runtime::Handle,
    clock: Clock,

    me: NodeId,
    signer: SigningKey,
    auth: RequestAuth,
    limits: Limits,
    request_timeout: Duration,
    answer_timeout: Duration,
    relay_after: Duration,
    /// When a block last executed (or the driver started).
    last_progress: Instant,
    redial_interval: Duration,
    max_waiting: usize,

    /// The other validators.
    peers: HashMap<NodeId, PeerId>,
    validators_by_peer: HashMap<PeerId, NodeId>,
    dial: Vec<(PeerId, Multiaddr)>,
    connected: HashSet<PeerId>,
    dialing: HashMap<PeerId, Instant>,

    waiting: HashMap<(NodeId, u64), Waiting>,
    answers: usize,
    next_id: u64,
    reserved_id: u64,

    send_slots: Arc<Semaphore>,
    send_bytes: Arc<Semaphore>,
    dropped_sends: Arc<AtomicU64>,
    failed_sends: Arc<AtomicU64>,
    counters: Counters,
}

/// Splits a core error into a fatal one (storage failed: the driver stops) and the rest (a
/// refused input, already counted by the core).
fn fatal<T>(step: &'static str, r: mesh_consensus::Result<T>) -> Result<mesh_consensus::Result<T>> {
    match r {
        Err(source @ mesh_consensus::Error::Storage(_)) => Err(Error::Storage { step, source }),
        other => Ok(other),
    }
}

fn peers_of(set: &ValidatorSet, me: &NodeId) -> Result<HashMap<NodeId, PeerId>> {
    set.members()
        .iter()
        .filter(|v| v.id != *me)
        .map(|v| Ok((v.id, peer_id(&v.id)?)))
        .collect()
}

impl Loop {
    pub(crate) fn new(
        cfg: Config,
        transport: Transport,
        events: mpsc::Receiver<Event>,
        setup: Setup,
    ) -> Result<Self> {
        let store_err = |source| Error::Store {
            dir: cfg.data_dir.clone(),
            source,
        };
        let me = NodeId(cfg.keys.ed25519.verifying_key().to_bytes());
        let signer = SigningKey::from_seed(&cfg.keys.ed25519.seed());
        // Every validator of the genesis set needs a peer id (checked before anything opens).
        peers_of(&cfg.validators, &me)?;
        let mut dial = Vec::new();
        for addr in &cfg.peers {
            let peer = peer_of(addr).ok_or_else(|| {
                Error::Config(format!(
                    "peer address {addr} does not end in /p2p/<peer id>"
                ))
            })?;
            dial.push((peer, addr.clone()));
        }

        let store = DiskStore::open(&cfg.data_dir).map_err(store_err)?;
        let reserved_id = match store
            .kv(STATE_TREE)
            .and_then(|kv| kv.get(RESERVED_IDS))
            .map_err(store_err)?
        {
            None => 0,
            Some(v) => {
                u64::from_le_bytes(v.as_slice().try_into().map_err(|_| Error::Unexpected {
                    what: "local request id counter in the store",
                    detail: format!("{} bytes, not 8", v.len()),
                })?)
            }
        };
        let storage = StoreStorage::open(&store, cfg.consensus.limits).map_err(|source| {
            Error::Consensus {
                step: "opening its storage",
                source,
            }
        })?;
        let clock = Clock::start();
        let auth = cfg.consensus.request_auth;
        let limits = cfg.consensus.limits;
        let request_timeout = cfg.consensus.request_timeout;
        let replica = Replica::new(
            cfg.consensus,
            cfg.validators,
            cfg.keys,
            storage,
            clock.now(),
        )
        .map_err(|source| match source {
            mesh_consensus::Error::Storage(_) => Error::Storage {
                step: "restarting the replica",
                source,
            },
            source => Error::Consensus {
                step: "starting the replica",
                source,
            },
        })?;
        // A restarted replica may be epochs past genesis: talk to the set in force, and
        // accept peer addresses of its validators (admitted ones included).
        let peers = peers_of(replica.validators(), &me)?;
        let validators_by_peer: HashMap<PeerId, NodeId> =
            peers.iter().map(|(n, p)| (*p, *n)).collect();
        if let Some((_, addr)) = dial
            .iter()
            .find(|(peer, _)| !validators_by_peer.contains_key(peer))
        {
            return Err(Error::Config(format!(
                "peer address {addr} is not another validator's (of the set in force, epoch {})",
                replica.validators().epoch()
            )));
        }
        if !replica.is_voter() {
            tracing::warn!(
                node = %me.short(),
                "not a voting validator of the set in force: following the ledger as a learner"
            );
        }

        let mut l = Self {
            store,
            data_dir: cfg.data_dir,
            transport,
            events,
            commands: setup.commands,
            stop: setup.stop,
            status: watch::channel(Status {
                node: me,
                view: 0,
                changing_view: false,
                primary: me,
                executed: 0,
                head: mesh_types::Digest::default(),
                low_watermark: 0,
                epoch: 0,
                voter: false,
                connected: 0,
                waiting: 0,
                consensus: mesh_consensus::Stats::default(),
                driver: Counters::default(),
            })
            .0,
            blocks: setup.blocks,
            runtime: setup.runtime,
            clock,
            me,
            signer,
            auth,
            limits,
            request_timeout,
            answer_timeout: cfg.transport.request_timeout,
            relay_after: cfg.relay_after,
            last_progress: clock.now(),
            redial_interval: cfg.redial_interval,
            max_waiting: cfg.max_waiting,
            peers,
            validators_by_peer,
            dial,
            connected: HashSet::new(),
            dialing: HashMap::new(),
            waiting: HashMap::new(),
            answers: 0,
            next_id: reserved_id.saturating_add(1),
            reserved_id,
            send_slots: Arc::new(Semaphore::new(cfg.max_sends.min(Semaphore::MAX_PERMITS))),
            send_bytes: Arc::new(Semaphore::new(
                cfg.max_send_bytes.min(Semaphore::MAX_PERMITS),
            )),
            dropped_sends: Arc::new(AtomicU64::new(0)),
            failed_sends: Arc::new(AtomicU64::new(0)),
            counters: Counters::default(),
            replica,
        };
        l.publish_status();
        Ok(l)
    }

    pub(crate) fn status_receiver(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Runs until shutdown, until every handle is gone, or until a fatal error.
    pub(crate) async fn run(mut self) -> Result<()> {
        tracing::info!(
            node = %self.me.short(),
            peer = %self.transport.peer_id(),
            executed = self.replica.executed(),
            view = self.replica.view(),
            "consensus driver started"
        );
        let mut housekeeping = tokio::time::interval(self.redial_interval);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A replica restarted in the middle of a view change has messages to send at once.
        let mut result = self.drain().await;
        while result.is_ok() {
            let deadline = self
                .replica
                .poll_timeout()
                .map(|at| self.clock.deadline(at));
            let input = tokio::select! {
                changed = self.stop.changed() => {
                    // A dropped sender means every handle is gone: stop as well.
                    if changed.is_err() || *self.stop.borrow() {
                        break;
                    }
                    continue;
                }
                event = self.events.recv() => match event {
                    Some(event) => Input::Event(event),
                    None => {
                        result = Err(Error::Transport {
                            what: "while running (its event stream ended)",
                            source: mesh_transport::Error::Closed,
                        });
                        break;
                    }
                },
                command = self.commands.recv() => match command {
                    Some(command) => Input::Command(command),
                    None => break,
                },
                () = sleep_until(deadline) => Input::Timeout,
                _ = housekeeping.tick() => Input::Housekeeping,
            };
            result = match input {
                Input::Event(event) => self.on_event(event).await,
                Input::Command(command) => self.on_command(command).await,
                Input::Timeout => {
                    let now = self.clock.now();
                    fatal("handling a timeout", self.replica.handle_timeout(now)).map(|r| {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "timeout step refused");
                        }
                    })
                }
                Input::Housekeeping => self.housekeeping().await,
            };
            if result.is_ok() {
                result = self.drain().await;
            }
            self.publish_status();
        }
        self.finish().await;
        result
    }

    async fn finish(&mut self) {
        for (_, w) in self.waiting.drain() {
            for a in w.answers {
                match a {
                    Answer::Local(tx) => {
                        let _ = tx.send(Err(Error::Stopped));
                    }
                    Answer::Remote { token, .. } => {
                        let _ = self
                            .transport
                            .respond(token, Err("the validator is stopping".into()))
                            .await;
                    }
                }
            }
        }
        self.answers = 0;
        let _ = self.transport.shutdown().await;
        self.publish_status();
        tracing::info!(node = %self.me.short(), "consensus driver stopped");
    }

    fn publish_status(&mut self) {
        let mut driver = self.counters.clone();
        driver.dropped_sends = self.dropped_sends.load(Ordering::Relaxed);
        driver.failed_sends = self.failed_sends.load(Ordering::Relaxed);
        let r = &self.replica;
        let status = Status {
            node: self.me,
            view: r.view(),
            changing_view: r.is_changing_view(),
            primary: r.primary(),
            executed: r.executed(),
            head: r.head(),
            low_watermark: r.low_watermark(),
            epoch: r.validators().epoch(),
            voter: r.is_voter(),
            connected: self
                .connected
                .iter()
                .filter(|p| self.validators_by_peer.contains_key(p))
                .count(),
            waiting: self.answers,
            consensus: r.stats().clone(),
            driver,
        };
        self.status.send_if_modified(|s| {
            if *s == status {
                false
            } else {
                *s = status;
                true
            }
        });
    }

    // ----- inputs ----------------------------------------------------------------------------

    async fn on_event(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Request(req) => match req.protocol.as_str() {
                PROTOCOL => self.on_message(req).await,
                SUBMIT_PROTOCOL => self.on_submission(req).await,
                RELAY_PROTOCOL => self.on_relay(req).await,
                _ => {
                    // A protocol the caller added to the transport config; not ours to serve.
                    self.refuse(req.token, "protocol not served by the consensus driver")
                        .await;
                    Ok(())
                }
            },
            Event::PeerConnected { peer, .. } => {
                self.connected.insert(peer);
                self.dialing.remove(&peer);
                Ok(())
            }
            Event::PeerDisconnected { peer } => {
                self.connected.remove(&peer);
                Ok(())
            }
            Event::DialFailed { peer, error } => {
                if let Some(peer) = peer {
                    self.dialing.remove(&peer);
                }
                tracing::debug!(?peer, %error, "dial failed");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A consensus message: acknowledged at once, then handed to the replica.
    async fn on_message(&mut self, req: InboundRequest) -> Result<()> {
        self.ack(req.token).await;
        let from = match self.validators_by_peer.get(&req.peer) {
            Some(n) => *n,
            None => match node_id(&req.peer) {
                Some(n) => n,
                None => {
                    self.counters.unknown_peers += 1;
                    tracing::debug!(peer = %req.peer, "consensus message from a non-Ed25519 peer");
                    return Ok(());
                }
            },
        };
        let now = self.clock.now();
        let r = fatal(
            "handling a message",
            self.replica.handle_message(now, from, &req.data),
        )?;
        if let Err(e) = r {
            self.counters.refused_messages += 1;
            tracing::debug!(peer = %req.peer, error = %e, "refused a consensus message");
        }
        Ok(())
    }

    /// A client's request: answered with its outcome once it executes.
    async fn on_submission(&mut self, req: InboundRequest) -> Result<()> {
        let mut request = match wire::decode_submission(&req.data, &self.limits) {
            Ok(r) => r,
            Err(e) => {
                self.counters.refused_submissions += 1;
                self.refuse(req.token, &e.to_string()).await;
                return Ok(());
            }
        };
        if self.auth == RequestAuth::Connection {
            // The connection authenticated the peer: that is the client.
            match node_id(&req.peer) {
                Some(client) => request.client = client,
                None => {
                    self.counters.refused_submissions += 1;
                    self.refuse(
                        req.token,
                        "this mesh names clients by their peer id: connect with an Ed25519 key",
                    )
                    .await;
                    return Ok(());
                }
            }
        }
        let expires = self.clock.now() + self.answer_timeout;
        self.accept(
            request,
            Answer::Remote {
                token: req.token,
                expires,
            },
        )
        .await
    }

    /// Requests another validator relays: acknowledged, then submitted here without an answer.
    async fn on_relay(&mut self, req: InboundRequest) -> Result<()> {
        if !self.validators_by_peer.contains_key(&req.peer) {
            self.counters.refused_submissions += 1;
            self.refuse(req.token, "only validators relay requests")
                .await;
            return Ok(());
        }
        self.ack(req.token).await;
        let requests = match wire::decode_relay(&req.data, &self.limits) {
            Ok(r) => r,
            Err(e) => {
                self.counters.refused_submissions += 1;
                tracing::debug!(peer = %req.peer, error = %e, "refused a relay");
                return Ok(());
            }
        };
        let now = self.clock.now();
        for r in requests {
            let outcome = fatal(
                "accepting a relayed request",
                self.replica.handle_request(now, r),
            )?;
            if let Err(e) = outcome {
                self.counters.refused_submissions += 1;
                tracing::debug!(peer = %req.peer, error = %e, "refused a relayed request");
            }
        }
        Ok(())
    }

    async fn on_command(&mut self, command: Command) -> Result<()> {
        match command {
            Command::Submit { payload, reply } => {
                let id = self.next_local_id()?;
                let request = match self.auth {
                    RequestAuth::Connection => Request::new(self.me, id, payload),
                    RequestAuth::Signed => Request::signed(&self.signer, id, payload),
                };
                self.accept(request, Answer::Local(reply)).await
            }
            Command::SubmitRequest { request, reply } => {
                self.accept(request, Answer::Local(reply)).await
            }
            Command::Propose { change, reply } => {
                let id = self.next_local_id()?;
                let epoch = self.replica.validators().epoch();
                let request = Request::change(self.me, id, epoch, &change).sign(&self.signer);
                self.accept(request, Answer::Local(reply)).await
            }
            Command::Suspect { node } => {
                let now = self.clock.now();
                let r = fatal(
                    "handling a suspicion",
                    self.replica.handle_suspicion(now, node),
                )?;
                if let Ok(true) = r {
                    tracing::info!(primary = %node.short(), "membership suspects the primary: asking for a view change");
                }
                Ok(())
            }
            Command::Blocks { from, max, reply } => {
                let blocks = self
                    .replica
                    .storage()
                    .blocks(from, max, LEDGER_READ_BYTES)
                    .map_err(|source| Error::Consensus {
                        step: "reading the ledger",
                        source,
                    });
                let _ = reply.send(blocks);
                Ok(())
            }
        }
    }

    /// The next id for a request of this validator's own, reserving more in the store when
    /// the reserved ones run out (so ids keep increasing across restarts).
    fn next_local_id(&mut self) -> Result<u64> {
        if self.next_id > self.reserved_id {
            let reserved = self.reserved_id.saturating_add(ID_CHUNK);
            self.store
                .kv(STATE_TREE)
                .and_then(|kv| kv.put(RESERVED_IDS, &reserved.to_le_bytes()))
                .map_err(|source| Error::Store {
                    dir: self.data_dir.clone(),
                    source,
                })?;
            self.reserved_id = reserved;
        }
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        Ok(id)
    }

    /// Submits `request` to the replica and records who waits for its outcome.
    async fn accept(&mut self, request: Request, answer: Answer) -> Result<()> {
        if self.answers >= self.max_waiting {
            self.counters.refused_submissions += 1;
            let busy = Error::Busy {
                what: "clients waiting for an outcome",
                capacity: self.max_waiting,
            };
            self.answer(answer, Err(busy)).await;
            return Ok(());
        }
        let now = self.clock.now();
        let key = request.key();
        let submitted = fatal(
            "accepting a request",
            self.replica.handle_request(now, request.clone()),
        )?;
        match submitted {
            Ok(Submitted::Queued | Submitted::AlreadyPending) => {
                self.counters.submissions += 1;
                self.answers += 1;
                self.waiting
                    .entry(key)
                    .or_insert_with(|| Waiting {
                        request,
                        since: now,
                        relayed: false,
                        answers: Vec::new(),
                    })
                    .answers
                    .push(answer);
            }
            Ok(Submitted::AlreadyExecuted) => self.answer(answer, Ok(Outcome::Duplicate)).await,
            Err(source) => {
                self.counters.refused_submissions += 1;
                let e = match source {
                    mesh_consensus::Error::Busy { what, capacity } => {
                        Error::Busy { what, capacity }
                    }
                    source => Error::Consensus {
                        step: "the request",
                        source,
                    },
                };
                self.answer(answer, Err(e)).await;
            }
        }
        Ok(())
    }

    async fn answer(&mut self, answer: Answer, outcome: Result<Outcome>) {
        match answer {
            Answer::Local(tx) => {
                let _ = tx.send(outcome);
            }
            Answer::Remote { token, .. } => match outcome {
                Ok(o) => {
                    let _ = self
                        .transport
                        .respond(token, Ok(wire::encode_outcome(&o)))
                        .await;
                }
                Err(e) => self.refuse(token, &e.to_string()).await,
            },
        }
    }

    async fn ack(&self, token: u64) {
        // Fails only when the transport has stopped, which the event stream reports.
        let _ = self.transport.respond(token, Ok(Vec::new())).await;
    }

    async fn refuse(&self, token: u64, reason: &str) {
        let _ = self.transport.respond(token, Err(reason.to_owned())).await;
    }

    // ----- housekeeping ----------------------------------------------------------------------

    async fn housekeeping(&mut self) -> Result<()> {
        let now = self.clock.now();
        // Redial validators that are not connected (a restarted one comes back this way; the
        // transport forgets addresses whose dials failed, so they are added again too).
        for i in 0..self.dial.len() {
            let Some((peer, addr)) = self.dial.get(i).cloned() else {
                break;
            };
            let patient = self
                .dialing
                .get(&peer)
                .is_some_and(|at| now < *at + DIAL_PATIENCE);
            if self.connected.contains(&peer) || patient {
                continue;
            }
            self.dialing.insert(peer, now);
            let _ = self.transport.add_peer_address(peer, addr.clone()).await;
            if let Err(e) = self.transport.dial(addr).await {
                tracing::debug!(%peer, error = %e, "cannot dial a validator");
                self.dialing.remove(&peer);
            }
        }
        // Forget clients that stopped waiting.
        let mut gone = 0;
        self.waiting.retain(|_, w| {
            let before = w.answers.len();
            w.answers.retain(|a| match a {
                Answer::Local(tx) => !tx.is_closed(),
                Answer::Remote { expires, .. } => now < *expires,
            });
            gone += before - w.answers.len();
            !w.answers.is_empty()
        });
        self.answers -= gone;
        self.relay(now);
        Ok(())
    }

    /// Relays requests that waited too long while nothing executed to the other validators
    /// (see the module docs).
    fn relay(&mut self, now: Instant) {
        if now < self.last_progress + self.relay_after {
            return;
        }
        let mut due: Vec<&mut Waiting> = self
            .waiting
            .values_mut()
            .filter(|w| {
                let wait = if w.relayed {
                    self.request_timeout
                } else {
                    self.relay_after
                };
                now >= w.since + wait
            })
            .collect();
        if due.is_empty() {
            return;
        }
        due.sort_by_key(|w| w.request.key());
        let mut batches: Vec<Vec<Request>> = Vec::new();
        let mut bytes = 0;
        for w in due {
            w.since = now;
            w.relayed = true;
            let len = w.request.payload.len() + 112;
            match batches.last_mut() {
                Some(b) if b.len() < self.limits.max_forward && bytes + len <= RELAY_BYTES => {
                    bytes += len;
                    b.push(w.request.clone());
                }
                _ => {
                    bytes = len;
                    batches.push(vec![w.request.clone()]);
                }
            }
        }
        let peers: Vec<PeerId> = self.peers.values().copied().collect();
        for batch in batches {
            let message = wire::encode_relay(&batch);
            tracing::debug!(requests = batch.len(), "relaying waiting requests");
            for &peer in &peers {
                self.counters.relayed += batch.len() as u64;
                self.send(peer, RELAY_PROTOCOL, message.clone());
            }
        }
    }

    // ----- outputs ---------------------------------------------------------------------------

    /// Acts on everything the replica asked for, in order.
    async fn drain(&mut self) -> Result<()> {
        while let Some(output) = self.replica.poll_output() {
            match output {
                Output::Send { to, message } => match self.peers.get(&to) {
                    Some(&peer) => self.send(peer, PROTOCOL, unwrap_arc(message)),
                    None => tracing::debug!(to = %to.short(), "a message for a non-validator"),
                },
                Output::Broadcast { message } => {
                    let peers: Vec<PeerId> = self.peers.values().copied().collect();
                    if let Some((last, rest)) = peers.split_last() {
                        for &peer in rest {
                            self.send(peer, PROTOCOL, message.to_vec());
                        }
                        self.send(*last, PROTOCOL, unwrap_arc(message));
                    }
                }
                Output::Committed { block, executed } => self.on_committed(block, executed).await,
                Output::ViewChangeStarted { view } => {
                    tracing::info!(view, "suspecting the primary: asking for a view change");
                }
                Output::ViewChanged { view, primary } => {
                    tracing::info!(view, primary = %primary.short(), "entered a new view");
                }
                Output::Reconfigured { boundary, set } => {
                    tracing::info!(
                        boundary,
                        epoch = set.epoch(),
                        validators = set.len(),
                        weight = set.total_weight(),
                        voter = self.replica.is_voter(),
                        "the validator set changed"
                    );
                    match peers_of(&set, &self.me) {
                        Ok(peers) => {
                            self.validators_by_peer = peers.iter().map(|(n, p)| (*p, *n)).collect();
                            self.peers = peers;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "a validator in the new set has no peer id")
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends on the caller's runtime, at most `max_sends` messages and `max_send_bytes` bytes
    /// at once; beyond that the message is dropped and counted (PBFT re-sends what a stalled
    /// replica misses).
    fn send(&self, peer: PeerId, protocol: &'static str, data: Vec<u8>) {
        let bytes = u32::try_from(data.len().max(1)).unwrap_or(u32::MAX);
        let permits = self
            .send_slots
            .clone()
            .try_acquire_owned()
            .and_then(|slot| {
                let bytes = self.send_bytes.clone().try_acquire_many_owned(bytes)?;
                Ok((slot, bytes))
            });
        let Ok(permits) = permits else {
            self.dropped_sends.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let transport = self.transport.clone();
        let failed = self.failed_sends.clone();
        self.runtime.spawn(async move {
            if let Err(e) = transport.request(peer, protocol, data).await {
                failed.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(%peer, error = %e, "send failed");
            }
            drop(permits);
        });
    }

    async fn on_committed(
        &mut self,
        block: Arc<mesh_consensus::CommittedBlock>,
        executed: Vec<u32>,
    ) {
        let seq = block.seq();
        let view = block.cert.view;
        self.last_progress = self.clock.now();
        if !self.waiting.is_empty() {
            for (i, r) in block.batch.requests().iter().enumerate() {
                let Some(w) = self.waiting.remove(&r.key()) else {
                    continue;
                };
                let ran = u32::try_from(i).is_ok_and(|i| executed.binary_search(&i).is_ok());
                let outcome = if ran {
                    Outcome::Committed(Committed {
                        client: r.client,
                        id: r.id,
                        seq,
                        view,
                    })
                } else {
                    Outcome::Duplicate
                };
                self.answers -= w.answers.len();
                for a in w.answers {
                    self.answer(a, Ok(outcome)).await;
                }
            }
        }
        // No receiver is fine: the ledger keeps every block.
        let _ = self.blocks.send(Block {
            block,
            executed: executed.into(),
        });
    }
}

enum Input {
    Event(Event),
    Command(Command),
    Timeout,
    Housekeeping,
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn unwrap_arc(message: Arc<Vec<u8>>) -> Vec<u8> {
    Arc::try_unwrap(message).unwrap_or_else(|m| m.to_vec())
}
