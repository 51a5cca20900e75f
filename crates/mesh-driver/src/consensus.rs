//! The consensus driver: one PBFT [`Replica`] bound to the transport, a data directory and the
//! clock.
//!
//! [`Driver::start`] opens the validator's [`DiskStore`] in `data_dir`, restarts the replica
//! from it (or starts it fresh), starts a libp2p [`Transport`] whose node key is the
//! validator's Ed25519 key, and runs the event loop. It returns a [`Handle`] (submit requests,
//! read the status, receive committed blocks, shut down) and a [`Join`] that resolves when the
//! driver stops, with the reason.
//!
//! ```no_run
//! use mesh_driver::consensus::{Config, Driver};
//! # async fn run(
//! #     validators: mesh_consensus::ValidatorSet,
//! #     keys: mesh_consensus::Keys,
//! #     others: Vec<mesh_transport::Multiaddr>,
//! # ) -> mesh_driver::Result<()> {
//! let mut config = Config::new("/var/lib/agentmesh/consensus", validators, keys);
//! config.transport.listen = vec!["/ip4/0.0.0.0/tcp/7000".parse().expect("a multiaddr")];
//! config.peers = others; // `/ip4/../tcp/../p2p/<peer id>` of every other validator
//! let (handle, join) = Driver::start(config)?;
//! let receipt = handle.submit(b"hello".to_vec()).await?;
//! println!("executed at height {} in view {}", receipt.seq, receipt.view);
//! handle.shutdown();
//! join.await
//! # }
//! ```
//!
//! # What travels where
//!
//! | protocol | from | carries | answered with |
//! |---|---|---|---|
//! | [`PROTOCOL`] | validators | consensus messages | an empty ack, at once |
//! | [`SUBMIT_PROTOCOL`] | clients | a request ([`encode_submission`]) | its [`Outcome`] |
//! | [`RELAY_PROTOCOL`] | validators | requests waiting at the sender | an empty ack, at once |
//!
//! Validators are named by [`NodeId`] (their Ed25519 key) in consensus and by the [`PeerId`] of
//! the same key in the transport ([`peer_id`], [`node_id`]); Noise authenticates the key, so
//! the connection proves who sent a message. In [`RequestAuth::Connection`] mode a remote
//! client's request is ordered under the submitting peer's node id, whatever `client` it
//! names; requests submitted through a [`Handle`] are ordered under this validator's node id,
//! numbered from a counter kept in the store (so they stay increasing across restarts).
//!
//! # Liveness: relaying waiting requests
//!
//! PBFT replicas suspect the primary only for requests they know of, and the others join a
//! view change only once more than a third of the weight asks for it. A client that talks to a
//! single replica therefore cannot, on its own, get a crashed primary replaced. As PBFT's
//! clients broadcast a request that waited too long, the driver relays the requests its
//! clients are still waiting for to the other validators on [`RELAY_PROTOCOL`] once they have
//! waited [`Config::relay_after`] *and* no block has executed for that long (while blocks
//! flow, the primary is alive, and relaying would only add load), and again every
//! `request_timeout` while that lasts. Relayed requests keep their `client`: like forwarded
//! requests, they are vouched for by a validator.
//!
//! # Threads and backpressure
//!
//! Each replica step writes to the store with fsync before it returns (the persistence
//! contract of [`Replica`]), so the event loop runs on a thread of its own (with a
//! current-thread runtime) where blocking delays nothing else; the transport and the sends it
//! spawns run on the caller's runtime. Every queue is bounded:
//!
//! - handle commands: [`Config::command_capacity`]; callers wait for room;
//! - sends: at most [`Config::max_sends`] messages and [`Config::max_send_bytes`] bytes queued
//!   or in flight (the transport itself runs `max_concurrent_requests` at once, the rest wait
//!   their turn); beyond that a message is dropped and counted ([`Counters::dropped_sends`]):
//!   PBFT re-sends what a stalled replica misses. The bound is generous so that bursts (a
//!   forward per submitted request) are queued, not lost;
//! - clients waiting for an answer: [`Config::max_waiting`]; beyond it submissions are refused
//!   as busy; remote clients' entries expire after the transport's request timeout;
//! - committed blocks: a broadcast channel of [`Config::committed_capacity`] blocks; a receiver
//!   that falls further behind loses the oldest (it sees `RecvError::Lagged(n)`) and can read
//!   them from the ledger in the data directory. Consensus never waits for the application.
//!
//! # Failures
//!
//! A peer's input never stops the driver: refused messages are counted (in
//! [`Status::consensus`] by the core, in [`Counters`] by the driver) and logged at debug level.
//! A failing store stops it ([`Error::Storage`], fail-stop, as the replica's contract demands);
//! restart it over the same data directory.
//!
//! [`Replica`]: mesh_consensus::Replica
//! [`DiskStore`]: mesh_store::DiskStore
//! [`RequestAuth::Connection`]: mesh_consensus::RequestAuth::Connection

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use mesh_consensus::{Keys, Request, ValidatorSet};
use mesh_transport::{Event, Multiaddr, PeerId, Transport, multiaddr};
use mesh_types::{Digest, NodeId};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot, watch};

use crate::error::{Error, Result};

mod driver;
pub(crate) use driver::Clock;
mod peers;
mod wire;

pub use mesh_consensus::CommittedBlock;
pub use peers::{node_id, peer_id};
pub use wire::{Committed, Outcome, decode_submission, encode_submission};

/// The application protocol of replica-to-replica messages.
pub const PROTOCOL: &str = "mesh/consensus/1";
/// The application protocol clients submit requests on.
pub const SUBMIT_PROTOCOL: &str = "mesh/consensus-submit/1";
/// The application protocol validators relay waiting requests on.
pub const RELAY_PROTOCOL: &str = "mesh/consensus-relay/1";

/// The most bytes of blocks a replica puts in one state-transfer reply (at least one block is
/// always sent); `mesh-consensus` uses 8 MiB.
const TRANSFER_BYTES: usize = 8 * 1024 * 1024;

/// Settings of a consensus driver. [`Config::new`] fills in the defaults; set `listen`, the
/// timeouts and [`Config::peers`] on top.
#[derive(Debug)]
pub struct Config {
    /// Where the replica's store lives (created if missing). One driver per directory: the
    /// store takes a file lock.
    pub data_dir: PathBuf,
    /// The validator set; this validator must be in it.
    pub validators: ValidatorSet,
    /// This validator's keys. The Ed25519 key is also the transport's node key.
    pub keys: Keys,
    /// The replica's settings (the same on every validator of the set).
    pub consensus: mesh_consensus::Config,
    /// The transport's settings. The driver adds its protocols to `protocols` and raises
    /// `max_message_len` to what consensus messages need (see [`Config::transport_config`]);
    /// requests on other protocols listed there are refused.
    pub transport: mesh_transport::Config,
    /// The other validators' addresses, each ending in `/p2p/<peer id>`. The driver dials
    /// those it is not connected to every [`Config::redial_interval`], so a validator that
    /// restarts is reached again.
    pub peers: Vec<Multiaddr>,
    /// How often to redial validators that are not connected, expire clients' waits and relay
    /// waiting requests.
    pub redial_interval: Duration,
    /// How long a request submitted here waits, with no block executing meanwhile, before it
    /// is relayed to the other validators. Keep it below `consensus.request_timeout`.
    pub relay_after: Duration,
    /// Most messages queued or being sent at once.
    pub max_sends: usize,
    /// Most bytes of messages queued or being sent at once (at least the transport's
    /// `max_message_len`).
    pub max_send_bytes: usize,
    /// Most clients (local and remote) waiting for the outcome of a request.
    pub max_waiting: usize,
    /// Capacity of the handle's command queue.
    pub command_capacity: usize,
    /// Committed blocks buffered for each [`Handle::committed`] receiver.
    pub committed_capacity: usize,
}

impl Config {
    /// A configuration with the default consensus and transport settings.
    pub fn new(data_dir: impl Into<PathBuf>, validators: ValidatorSet, keys: Keys) -> Self {
        Self {
            data_dir: data_dir.into(),
            validators,
            keys,
            consensus: mesh_consensus::Config::default(),
            transport: mesh_transport::Config::default(),
            peers: Vec::new(),
            redial_interval: Duration::from_secs(1),
            relay_after: Duration::from_secs(1),
            max_sends: 4_096,
            max_send_bytes: 128 * 1024 * 1024,
            max_waiting: 16_384,
            command_capacity: 1_024,
            committed_capacity: 1_024,
        }
    }

    /// The transport settings the driver runs with: [`Config::transport`] plus the driver's
    /// protocols, with `max_message_len` raised to fit the largest consensus message (a
    /// state-transfer reply) and `command_capacity` above [`Config::max_sends`] (so the event
    /// loop's own transport commands always find room, whatever its sends do). Use it to
    /// build an in-memory transport for [`Driver::start_with`].
    pub fn transport_config(&self) -> mesh_transport::Config {
        let mut t = self.transport.clone();
        for p in [PROTOCOL, SUBMIT_PROTOCOL, RELAY_PROTOCOL] {
            if !t.protocols.iter().any(|q| q == p) {
                t.protocols.push(p.to_owned());
            }
        }
        let needed = TRANSFER_BYTES.max(self.consensus.limits.max_batch_bytes) + (1 << 20);
        t.max_message_len = t.max_message_len.max(needed);
        t.command_capacity = t.command_capacity.max(self.max_sends.saturating_add(64));
        t
    }

    fn validate(&self) -> Result<()> {
        self.consensus
            .validate()
            .map_err(|source| Error::Consensus {
                step: "the configuration",
                source,
            })?;
        let positive = [
            ("redial_interval", !self.redial_interval.is_zero()),
            ("relay_after", !self.relay_after.is_zero()),
            ("max_sends", self.max_sends > 0),
            ("max_send_bytes", self.max_send_bytes > 0),
            ("max_waiting", self.max_waiting > 0),
            ("command_capacity", self.command_capacity > 0),
            ("committed_capacity", self.committed_capacity > 0),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, ok)| !ok) {
            return Err(Error::Config(format!("{name} must be positive")));
        }
        let max_message = self.transport_config().max_message_len;
        if self.max_send_bytes < max_message {
            return Err(Error::Config(format!(
                "max_send_bytes ({}) must hold the largest message ({max_message} bytes)",
                self.max_send_bytes
            )));
        }
        Ok(())
    }
}

/// Counters of what the driver refused or dropped (the core counts its own refusals in
/// [`mesh_consensus::Stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Consensus messages the replica refused (malformed, unknown sender, stale, invalid ...).
    pub refused_messages: u64,
    /// Messages from peers whose peer id names no Ed25519 key.
    pub unknown_peers: u64,
    /// Submissions and relays refused (malformed, not a validator, busy, invalid request).
    pub refused_submissions: u64,
    /// Requests accepted from clients (local and remote).
    pub submissions: u64,
    /// Requests relayed to the other validators (each relay to each validator counts once per
    /// request).
    pub relayed: u64,
    /// Sends dropped because [`Config::max_sends`] messages or [`Config::max_send_bytes`]
    /// bytes were queued or in flight.
    pub dropped_sends: u64,
    /// Sends the transport could not deliver (peer down, timeout, refused).
    pub failed_sends: u64,
}

/// A snapshot of the driver, updated after every step of the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This validator.
    pub node: NodeId,
    /// The replica's view (or the view it is changing to).
    pub view: u64,
    /// Whether a view change is under way.
    pub changing_view: bool,
    /// The primary of `view`.
    pub primary: NodeId,
    /// The height of the last executed block.
    pub executed: u64,
    /// The chain hash after it.
    pub head: Digest,
    /// The last stable checkpoint.
    pub low_watermark: u64,
    /// The epoch of the validator set in force (0 until a reconfiguration takes effect).
    pub epoch: u64,
    /// Whether this node votes in the set in force (false for a learner or a removed
    /// member).
    pub voter: bool,
    /// Validators this node is connected to (not counting itself).
    pub connected: usize,
    /// Clients waiting for an outcome.
    pub waiting: usize,
    /// The core's counters.
    pub consensus: mesh_consensus::Stats,
    /// The driver's counters.
    pub driver: Counters,
}

/// A committed block, as delivered to the application.
#[derive(Debug, Clone)]
pub struct Block {
    /// The block (its batch, commit certificate and predecessor).
    pub block: Arc<CommittedBlock>,
    /// Indices of the requests that executed (the others repeated earlier requests).
    pub executed: Arc<[u32]>,
}

pub(crate) enum Command {
    Submit {
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<Outcome>>,
    },
    SubmitRequest {
        request: Request,
        reply: oneshot::Sender<Result<Outcome>>,
    },
    Propose {
        change: mesh_consensus::Change,
        reply: oneshot::Sender<Result<Outcome>>,
    },
    Blocks {
        from: u64,
        max: usize,
        reply: oneshot::Sender<Result<Vec<CommittedBlock>>>,
    },
    Suspect {
        node: NodeId,
    },
}

/// Controls a running driver. Cheap to clone; the driver stops when [`Handle::shutdown`] is
/// called or every handle is dropped.
#[derive(Debug, Clone)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
    blocks: broadcast::Sender<Block>,
    stop: Arc<watch::Sender<bool>>,
    /// This validator's own requests in flight, at most `consensus.client_window` (more could
    /// push an unexecuted id below the replicas' deduplication window).
    local_slots: Arc<Semaphore>,
    node: NodeId,
    peer: PeerId,
}

impl Handle {
    /// This validator's node id.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// This validator's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// Orders `payload` as a request of this validator (signed with its key in
    /// [`RequestAuth::Signed`](mesh_consensus::RequestAuth::Signed) mode) and waits until it
    /// executes. Waits while `consensus.client_window` of this validator's own requests are in
    /// flight and while the command queue is full; refused as [`Error::Busy`] when too many
    /// clients wait already. Dropping the future stops the wait, not the request.
    pub async fn submit(&self, payload: Vec<u8>) -> Result<Committed> {
        let _slot = self
            .local_slots
            .acquire()
            .await
            .map_err(|_| Error::Stopped)?;
        let (reply, rx) = oneshot::channel();
        self.command(Command::Submit { payload, reply }).await?;
        match rx.await.map_err(|_| Error::Stopped)?? {
            Outcome::Committed(c) => Ok(c),
            // Ids of local requests are fresh, so this means the store's id counter was reset.
            Outcome::Duplicate => Err(Error::Unexpected {
                what: "outcome of a local request",
                detail: "its id executed before (was the data directory replaced?)".into(),
            }),
        }
    }

    /// Orders a request built by the caller (a client's signed request, say) and waits for its
    /// outcome. The caller is trusted with its `client` field, as a validator is.
    pub async fn submit_request(&self, request: Request) -> Result<Outcome> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::SubmitRequest { request, reply })
            .await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Proposes a reconfiguration of the validator set (see `mesh_consensus::reconfig`) for
    /// the epoch in force, signed with this validator's key, and waits until the proposal is
    /// ordered. It takes effect once validators holding more than two thirds of the weight
    /// proposed the same change, at the boundary that follows; watch
    /// [`Status::epoch`] or the committed blocks.
    pub async fn propose(&self, change: mesh_consensus::Change) -> Result<Committed> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Propose { change, reply }).await?;
        match rx.await.map_err(|_| Error::Stopped)?? {
            Outcome::Committed(c) => Ok(c),
            Outcome::Duplicate => Err(Error::Unexpected {
                what: "outcome of a proposal",
                detail: "its id executed before (was the data directory replaced?)".into(),
            }),
        }
    }

    /// Reads at most `max` committed blocks from height `from` on out of the ledger (and at
    /// most 4 MiB of them; at least one block when there is one). Fewer blocks than `max`
    /// means the ledger ends there, or the byte budget did.
    pub async fn blocks(&self, from: u64, max: usize) -> Result<Vec<CommittedBlock>> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Blocks { from, max, reply }).await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Tells the replica that a failure detector outside consensus suspects `node`: a
    /// suspected primary this replica is waiting for is replaced at once (see
    /// `mesh_consensus::Replica::handle_suspicion`). Dropped if the driver is busy.
    pub fn suspect(&self, node: NodeId) {
        let _ = self.commands.try_send(Command::Suspect { node });
    }

    async fn command(&self, c: Command) -> Result<()> {
        self.commands.send(c).await.map_err(|_| Error::Stopped)
    }

    /// Blocks committed from now on, in height order (see the module docs for what happens
    /// to a receiver that falls behind).
    pub fn committed(&self) -> broadcast::Receiver<Block> {
        self.blocks.subscribe()
    }

    /// The driver's latest status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver of status changes.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Asks the driver to stop; await its [`Join`] to know when it has.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }
}

/// Resolves when the driver has stopped: `Ok` after a shutdown, the error that stopped it
/// otherwise.
#[derive(Debug)]
pub struct Join {
    done: oneshot::Receiver<Result<()>>,
}

impl Future for Join {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.done).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(Error::Thread {
                    detail: "the driver thread ended without a result (it panicked)".into(),
                })
            })
        })
    }
}

/// The consensus driver: owns the replica, the store and the transport handle, and runs the
/// event loop on a thread of its own. See the [module docs](self).
pub struct Driver {
    inner: driver::Loop,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Driver(..)")
    }
}

impl Driver {
    /// Starts a validator: opens its store, starts a libp2p transport (with
    /// [`Config::transport_config`], keyed by the validator's Ed25519 key) on the current tokio
    /// runtime, dials [`Config::peers`] and runs the loop. Must be called inside a tokio
    /// runtime, which keeps serving the transport and the sends.
    pub fn start(config: Config) -> Result<(Handle, Join)> {
        let runtime = current_runtime()?;
        let keypair = {
            let seed = config.keys.ed25519.seed();
            mesh_transport::keypair_from_seed(&seed).map_err(|source| Error::Transport {
                what: "deriving the node key",
                source,
            })?
        };
        config.validate()?;
        let (transport, events) = {
            let _entered = runtime.enter();
            Transport::spawn(keypair, config.transport_config()).map_err(|source| {
                Error::Transport {
                    what: "starting",
                    source,
                }
            })?
        };
        Self::launch(config, transport, events, runtime)
    }

    /// Like [`Driver::start`], over a transport the caller built (an in-memory one, for
    /// tests and simulations). It must serve the protocols of [`Config::transport_config`]
    /// and be keyed by the validator's Ed25519 key. The driver shuts it down when it stops.
    pub fn start_with(
        config: Config,
        transport: Transport,
        events: mpsc::Receiver<Event>,
    ) -> Result<(Handle, Join)> {
        let runtime = current_runtime()?;
        config.validate()?;
        Self::launch(config, transport, events, runtime)
    }

    fn launch(
        config: Config,
        transport: Transport,
        events: mpsc::Receiver<Event>,
        runtime: tokio::runtime::Handle,
    ) -> Result<(Handle, Join)> {
        let node = NodeId(config.keys.ed25519.verifying_key().to_bytes());
        if transport.peer_id() != peer_id(&node)? {
            stop_transport(&runtime, transport);
            return Err(Error::Config(
                "the transport's node key is not the validator's Ed25519 key".into(),
            ));
        }
        let (commands_tx, commands) = mpsc::channel(config.command_capacity);
        let (blocks, _) = broadcast::channel(config.committed_capacity);
        let (stop_tx, stop) = watch::channel(false);
        let local_slots = Arc::new(Semaphore::new(
            config.consensus.client_window.min(Semaphore::MAX_PERMITS),
        ));
        let setup = Setup {
            commands,
            stop,
            blocks: blocks.clone(),
            runtime: runtime.clone(),
        };
        let inner = match driver::Loop::new(config, transport.clone(), events, setup) {
            Ok(l) => l,
            Err(e) => {
                stop_transport(&runtime, transport);
                return Err(e);
            }
        };
        let status = inner.status_receiver();
        let peer = transport.peer_id();
        let driver = Self { inner };
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("mesh-consensus".into())
            .spawn(move || {
                let result = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt.block_on(driver.inner.run()),
                    Err(e) => Err(Error::Thread {
                        detail: format!("cannot build the driver's runtime: {e}"),
                    }),
                };
                if let Err(e) = &result {
                    tracing::error!(error = %e, "consensus driver stopped");
                }
                let _ = done_tx.send(result);
            })
            .map_err(|e| Error::Thread {
                detail: format!("cannot spawn the driver thread: {e}"),
            })?;
        Ok((
            Handle {
                commands: commands_tx,
                status,
                blocks,
                stop: Arc::new(stop_tx),
                local_slots,
                node,
                peer,
            },
            Join { done },
        ))
    }
}

/// What [`Driver`] hands its loop besides the configuration.
pub(crate) struct Setup {
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) blocks: broadcast::Sender<Block>,
    pub(crate) runtime: tokio::runtime::Handle,
}

/// Shuts down a transport the driver will not run after all.
fn stop_transport(runtime: &tokio::runtime::Handle, transport: Transport) {
    runtime.spawn(async move {
        let _ = transport.shutdown().await;
    });
}

fn current_runtime() -> Result<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current()
        .map_err(|_| Error::Config("the driver must be started inside a tokio runtime".into()))
}

/// The peer id at the end of `addr` (`/p2p/<peer id>`).
pub(crate) fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

/// Submits `request` to the validator `to` on [`SUBMIT_PROTOCOL`] and waits for its outcome
/// (up to the transport's request timeout: on a timeout, submit the same request again, to
/// this validator or another; its `(client, id)` executes once). In
/// [`RequestAuth::Connection`](mesh_consensus::RequestAuth::Connection) mode the validator
/// orders it under this transport's node id, whatever `request.client` says.
pub async fn submit_to(transport: &Transport, to: PeerId, request: &Request) -> Result<Outcome> {
    let mut request = request.clone();
    if request.signature.is_none()
        && let Some(me) = node_id(&transport.peer_id())
    {
        request.client = me;
    }
    let answer = transport
        .request(to, SUBMIT_PROTOCOL, encode_submission(&request))
        .await
        .map_err(|source| Error::Transport {
            what: "submitting a request",
            source,
        })?;
    wire::decode_outcome(&answer, &request)
}
