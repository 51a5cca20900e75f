//! A whole node: configuration, identity, the transport and, for a validator, consensus.
//!
//! This is what the `mesh-node` binary runs. [`init`] prepares a data directory; [`start`]
//! (or [`run`], which waits for a shutdown signal) opens the identity, starts the libp2p
//! transport (listening, mDNS, bootstrap peers) and, when the configured genesis lists this
//! node, a [consensus driver](crate::consensus) over the same transport, dialling the other
//! validators at the genesis's addresses. It logs (with `tracing`) its listening addresses,
//! peers connecting and leaving, and committed blocks.
//!
//! # The data directory
//!
//! | file | written by | holds |
//! |---|---|---|
//! | [`IDENTITY_FILE`] | [`init`] | the identity: Ed25519 and BLS keys, sealed with a passphrase |
//! | [`KEY_FILE`] | [`init`], when no passphrase is given | the generated passphrase, mode 0600 |
//! | [`PUBLIC_FILE`] | [`init`] | public information for genesis files ([`genesis::PublicInfo`]) |
//! | [`config::CONFIG_FILE`] | [`init`] | the settings, commented ([`Config`]) |
//! | [`CONSENSUS_DIR`] | a validator | the replica's store and ledger (`mesh-ledger verify` reads it) |
//! | [`API_ADDR_FILE`] | a running node | its HTTP API's address, removed when it stops |
//! | `learning/` | a participant of federated runs | each adopted global model, `<hash>.f32` |
//!
//! # The HTTP API
//!
//! Unless [`Config::api`] is `None`, the node serves the [`mesh_api`] routes (status, peers,
//! consensus submissions, the ledger, a WebSocket of events, `/metrics`, the OpenAPI
//! document) on loopback, on a free port by default; the address is logged and written to
//! [`API_ADDR_FILE`]. The events are the transport's peers coming and going and the blocks
//! consensus commits.
//!
//! # Shutdown
//!
//! [`NodeHandle::shutdown`] (or the future given to [`run`] resolving) stops the consensus
//! driver first (its store is written before every step's messages leave, so nothing is lost
//! at any point; stopping only ends the loop cleanly and releases the store's lock), then the
//! transport. [`NodeJoin`] resolves once both have stopped.
//!
//! ```no_run
//! # async fn example(stop: tokio::sync::oneshot::Receiver<()>) -> mesh_driver::Result<()> {
//! let config = mesh_driver::NodeConfig::from_process(&Default::default())?;
//! mesh_driver::node::run(config, async {
//!     let _ = stop.await; // the binary waits for Ctrl-C here
//! })
//! .await
//! # }
//! ```

use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_consensus::Keys;
use mesh_crypto::ed25519::SigningKey;
use mesh_identity::{Identity, Protection};
use mesh_transport::{Event, PeerId, Transport, multiaddr::Protocol};
use mesh_types::{NodeId, Timestamp};
use tokio::sync::{broadcast, mpsc, watch};
use zeroize::Zeroizing;

use crate::consensus;
use crate::error::{Error, Result};

pub mod agents;
pub(crate) mod api;
pub mod config;
pub mod genesis;
#[cfg(feature = "learning")]
pub mod learning;
pub mod membership;

pub use config::{Config, Overrides};
pub use mesh_transport::Multiaddr;

/// The identity file in the data directory.
pub const IDENTITY_FILE: &str = "identity.json";
/// The key file holding a generated passphrase.
pub const KEY_FILE: &str = "passphrase";
/// The node's public information.
pub const PUBLIC_FILE: &str = "node.json";
/// The validator's store, under the data directory.
pub const CONSENSUS_DIR: &str = "consensus";
/// Where a running node writes its HTTP API's address (`ip:port`), removed when it stops.
pub const API_ADDR_FILE: &str = "api.addr";
/// Most listening addresses remembered for [`NodeHandle::listen_addrs`].
const MAX_LISTEN_ADDRS: usize = 64;

/// What [`init`] created.
#[derive(Debug, Clone)]
pub struct Initialized {
    /// The new node's public information (also in [`PUBLIC_FILE`]).
    pub public: genesis::PublicInfo,
    /// Whether the passphrase was generated into [`KEY_FILE`].
    pub key_file: bool,
}

/// Prepares a data directory: creates it, a new identity in [`IDENTITY_FILE`], the public
/// information in [`PUBLIC_FILE`] (reachable at the dialable ones of `config.listen`), and a
/// commented [`config::CONFIG_FILE`] with `config`'s settings (an existing one is kept).
/// Refuses with [`Error::IdentityExists`] if an identity is there already, and then changes
/// nothing.
///
/// # The passphrase
///
/// The identity's secrets are always sealed (Argon2id + ChaCha20-Poly1305). With
/// `config.protection` set (from `MESH_PASSPHRASE`), by that passphrase, which every later
/// start must be given again. Without it, `init` draws a random 256-bit passphrase and writes
/// it to [`KEY_FILE`] beside the identity, mode 0600, and later starts read it from there.
///
/// Why not refuse instead: a node must start unattended (`cargo run --bin mesh-node`, a
/// testnet, a service), and a passphrase in the environment is visible to the processes of
/// the same user and ends up in unit files and shell histories. The key file gives the same
/// protection as an unencrypted 0600 identity against other users, and keeps the identity
/// file itself sealed, so copies of it (backups, files shared to build a genesis by mistake)
/// leak nothing without the key file. Operators who want the key off the disk set
/// `MESH_PASSPHRASE` at init and at every start; no key file is written then.
pub fn init(config: &Config) -> Result<Initialized> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| Error::DataDir {
        path: dir.clone(),
        op: "create it",
        detail: e.to_string(),
    })?;
    let identity_path = config.identity_path();
    if identity_path.exists() {
        return Err(Error::IdentityExists {
            path: identity_path,
        });
    }
    let (protection, key_file) = match &config.protection {
        Some(p) => (p.clone(), false),
        None => {
            let secret = mesh_crypto::random_array::<32>().map_err(|e| Error::Identity {
                path: identity_path.clone(),
                source: e.into(),
            })?;
            let passphrase = Zeroizing::new(hex::encode(secret));
            write_new(&config.key_file_path(), passphrase.as_bytes(), 0o600)?;
            (Protection::passphrase(passphrase.as_str()), true)
        }
    };
    let result = (|| {
        let identity = Identity::generate(wall_clock()).map_err(|source| Error::Identity {
            path: identity_path.clone(),
            source,
        })?;
        let public = genesis::PublicInfo::of(&identity, &config.listen);
        let json = serde_json::to_vec_pretty(&public).map_err(|e| Error::DataDir {
            path: config.public_path(),
            op: "encode the public information",
            detail: e.to_string(),
        })?;
        // The public files first: a failure leaves no identity, so init can be run again.
        write_replacing(&config.public_path(), &json)?;
        let toml_path = dir.join(config::CONFIG_FILE);
        if !toml_path.exists() {
            write_new(&toml_path, config.to_toml().as_bytes(), 0o644)?;
        }
        identity
            .save(&identity_path, &protection)
            .map_err(|source| Error::Identity {
                path: identity_path.clone(),
                source,
            })?;
        Ok(public)
    })();
    match result {
        Ok(public) => Ok(Initialized { public, key_file }),
        Err(e) => {
            if key_file {
                let _ = std::fs::remove_file(config.key_file_path());
            }
            Err(e)
        }
    }
}

/// Whether `config.data_dir` is fresh: missing, or an empty directory. `mesh-node run`
/// initializes a fresh directory by itself (a node starts on defaults alone); a directory
/// holding anything else but no identity is an error instead, since it is more likely a
/// mistake (a wrong path, a half-deleted node) than a wish for a new identity.
pub fn is_fresh(config: &Config) -> bool {
    match std::fs::read_dir(&config.data_dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Opens the identity of `config.data_dir` (see [`init`] for where the passphrase comes
/// from).
pub fn open_identity(config: &Config) -> Result<Identity> {
    let dir = &config.data_dir;
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::DataDir {
                path: dir.clone(),
                op: "use it",
                detail: "not a directory".into(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NoIdentity {
                path: config.identity_path(),
            });
        }
        Err(e) => {
            return Err(Error::DataDir {
                path: dir.clone(),
                op: "read it",
                detail: e.to_string(),
            });
        }
    }
    let path = config.identity_path();
    if !path.exists() {
        return Err(Error::NoIdentity { path });
    }
    let protection = match &config.protection {
        Some(p) => p.clone(),
        None => read_key_file(config)?,
    };
    Identity::load(&path, &protection).map_err(|source| match source {
        mesh_identity::Error::WrongPassphrase { path } => Error::WrongPassphrase { path },
        source => Error::Identity {
            path: path.clone(),
            source,
        },
    })
}

fn read_key_file(config: &Config) -> Result<Protection> {
    let key_file = config.key_file_path();
    let meta = match std::fs::metadata(&key_file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NoPassphrase {
                path: config.identity_path(),
                var: config::env::PASSPHRASE,
                key_file,
            });
        }
        Err(e) => {
            return Err(Error::DataDir {
                path: key_file,
                op: "read the key file",
                detail: e.to_string(),
            });
        }
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::DataDir {
            path: key_file,
            op: "use the key file",
            detail: format!(
                "readable by other users (mode {:o}); run chmod 600",
                meta.permissions().mode() & 0o777
            ),
        });
    }
    if meta.len() > 1024 {
        return Err(Error::DataDir {
            path: key_file,
            op: "use the key file",
            detail: format!("{} bytes: not a key file", meta.len()),
        });
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(&key_file).map_err(|e| Error::DataDir {
            path: key_file.clone(),
            op: "read the key file",
            detail: e.to_string(),
        })?,
    );
    Ok(Protection::passphrase(text.trim()))
}

/// Controls a running node. Cheap to clone; the node stops when [`NodeHandle::shutdown`] is
/// called or every handle is dropped.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    peer: PeerId,
    did: String,
    transport: Transport,
    consensus: Option<consensus::Handle>,
    listen: watch::Receiver<Vec<Multiaddr>>,
    stop: std::sync::Arc<watch::Sender<bool>>,
    api: Option<std::net::SocketAddr>,
    events: broadcast::Sender<mesh_api::types::Event>,
}

impl NodeHandle {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// This node's DID.
    pub fn did(&self) -> &str {
        &self.did
    }

    /// The transport (to send requests, publish, read metrics).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The consensus driver, if this node is a validator of its genesis.
    pub fn consensus(&self) -> Option<&consensus::Handle> {
        self.consensus.as_ref()
    }

    /// The addresses the node listens on so far (each ending in `/p2p/<peer id>`).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen.borrow().clone()
    }

    /// Waits until the node listens on at least one address, and returns them; `None` if
    /// the node stopped first.
    pub async fn listening(&self) -> Option<Vec<Multiaddr>> {
        let mut rx = self.listen.clone();
        rx.wait_for(|a| !a.is_empty()).await.ok().map(|a| a.clone())
    }

    /// Where the HTTP API listens, if it runs.
    pub fn api_addr(&self) -> Option<std::net::SocketAddr> {
        self.api
    }

    /// The node's events from now on (what the API's WebSocket streams).
    pub fn events(&self) -> broadcast::Receiver<mesh_api::types::Event> {
        self.events.subscribe()
    }

    /// Asks the node to stop; await its [`NodeJoin`] to know when it has.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }
}

/// Resolves when the node has stopped: `Ok` after a shutdown, the error that stopped it
/// otherwise.
pub type NodeJoin = tokio::task::JoinHandle<Result<()>>;

/// Runs a node until `shutdown` resolves, then stops it cleanly (see [`start`]).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    let (node, mut join) = start(config)?;
    tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down");
            node.shutdown();
            joined(join.await)
        }
        r = &mut join => joined(r),
    }
}

fn joined(r: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    r.map_err(|e| Error::Thread {
        detail: format!("the node task failed: {e}"),
    })?
}

/// Starts a node on the current tokio runtime: opens its identity, reads the genesis if one
/// is configured, starts the transport and, if the genesis lists this node, the consensus
/// driver. Errors: [`Error::NoIdentity`], [`Error::NoPassphrase`], [`Error::WrongPassphrase`],
/// [`Error::DataDir`], [`Error::Genesis`], [`Error::GenesisMismatch`],
/// [`Error::AddressInUse`], and the transport's and driver's own.
pub fn start(config: Config) -> Result<(NodeHandle, NodeJoin)> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::Config("a node must be started inside a tokio runtime".into()))?;
    let identity = open_identity(&config)?;
    let did = identity.did().to_string();
    let genesis = match &config.genesis {
        None => None,
        Some(path) => {
            let g = genesis::Genesis::load(path)?;
            g.position(&identity, path)?.map(|i| (g, i))
        }
    };
    check_ports(&config.listen)?;

    let seed = identity.signing_key().seed();
    let mut transport_config = mesh_transport::Config::default();
    transport_config.listen = config.listen.clone();
    transport_config.bootstrap = config.bootstrap.clone();
    transport_config.mdns = config.mdns;
    transport_config.relay_server = config.coordinator;
    transport_config.listen_addrs_are_external = config.coordinator;
    transport_config.protocols = vec![
        agents::REGISTER_PROTOCOL.to_owned(),
        agents::LOOKUP_PROTOCOL.to_owned(),
        membership::PROTOCOL.to_owned(),
    ];
    #[cfg(feature = "learning")]
    transport_config
        .protocols
        .push(learning::ROUND_PROTOCOL.to_owned());
    // The members to probe: the genesis's (all of them, observers included) and the bootstrap
    // peers.
    let mut seeds: Vec<NodeId> = config
        .bootstrap
        .iter()
        .filter_map(|a| {
            a.iter().find_map(|p| match p {
                Protocol::P2p(peer) => consensus::node_id(&peer),
                _ => None,
            })
        })
        .collect();
    if let Some((g, _)) = &genesis {
        seeds.extend(g.validators.members().iter().map(|m| m.id));
    }
    // The participants of federated runs: the genesis's voting validators.
    #[cfg(feature = "learning")]
    let participants: Vec<NodeId> = genesis
        .as_ref()
        .map(|(g, _)| {
            g.validators
                .members()
                .iter()
                .filter(|m| m.weight > 0)
                .map(|m| m.id)
                .collect()
        })
        .unwrap_or_default();
    let incarnation = membership::next_incarnation(&config.data_dir)?;
    let validator = match genesis {
        Some((g, index)) => {
            if let Some(own) = g.addresses.get(index)
                && !listens_at(&config.listen, own)
            {
                tracing::warn!(
                    genesis_address = %own,
                    listen = ?config.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "the genesis says the other validators reach this node at an address it \
                     does not listen on (set --listen to match)"
                );
            }
            let keys = Keys {
                ed25519: SigningKey::from_seed(&seed),
                bls: identity.bls_secret().clone(),
            };
            let mut c = consensus::Config::new(config.consensus_dir(), g.validators, keys);
            c.consensus = g.consensus;
            c.peers = g
                .addresses
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != index)
                .map(|(_, a)| a.clone())
                .collect();
            c.transport = transport_config;
            transport_config = c.transport_config();
            Some(c)
        }
        None => None,
    };
    let (transport, mut events) = spawn_transport(&runtime, &seed, transport_config)?;
    let peer = transport.peer_id();
    tracing::info!(%peer, %did, "node started");

    let (forward, consensus) = match validator {
        Some(c) => {
            let (tx, rx) = mpsc::channel(c.transport.event_capacity.max(1));
            tracing::info!(
                validators = c.validators.len(),
                dir = %c.data_dir.display(),
                "this node is a validator of the genesis: starting consensus"
            );
            let (handle, join) = match consensus::Driver::start_with(c, transport.clone(), rx) {
                Ok(r) => r,
                Err(e) => {
                    let t = transport.clone();
                    runtime.spawn(async move {
                        let _ = t.shutdown().await;
                    });
                    return Err(e);
                }
            };
            (Some(tx), Some((handle, join)))
        }
        None => {
            if config.genesis.is_some() {
                tracing::info!("not listed in the genesis: running without consensus");
            }
            (None, None)
        }
    };

    let (listen_tx, listen) = watch::channel(Vec::new());
    let (stop_tx, mut stop) = watch::channel(false);
    let (events_tx, _) = broadcast::channel(api::EVENT_CAPACITY);
    let registry = std::sync::Arc::new(agents::Registry::default());
    let members = std::sync::Arc::new(membership::Shared::default());
    let (swim_tx, swim_rx) = mpsc::channel(membership::QUEUE);
    let membership_task = runtime.spawn(membership::run(
        config.data_dir.clone(),
        transport.clone(),
        SigningKey::from_seed(&seed),
        incarnation,
        seeds,
        swim_rx,
        members.clone(),
        events_tx.clone(),
        consensus.as_ref().map(|(h, _)| h.clone()),
        config.alert_webhook.clone(),
        stop.clone(),
    ));
    if let Some((h, _)) = &consensus {
        runtime.spawn(agents::follow(registry.clone(), h.clone(), stop.clone()));
    }
    #[cfg(feature = "learning")]
    let learning = consensus.as_ref().map(|(h, _)| {
        let shared = std::sync::Arc::new(learning::Shared::new(
            NodeId(SigningKey::from_seed(&seed).verifying_key().to_bytes()),
            participants,
            config.datasets_dir(),
        ));
        let (tx, rx) = mpsc::channel(learning::QUEUE);
        runtime.spawn(learning::run(
            learning::Context {
                shared: shared.clone(),
                transport: transport.clone(),
                consensus: h.clone(),
                key: SigningKey::from_seed(&seed),
                data_dir: config.data_dir.clone(),
                events: events_tx.clone(),
            },
            rx,
            stop.clone(),
        ));
        (shared, tx)
    });
    let server = match config.api {
        None => None,
        Some(addr) => {
            let backend = std::sync::Arc::new(api::NodeBackend {
                peer: peer.to_string(),
                did: did.clone(),
                transport: transport.clone(),
                consensus: consensus.as_ref().map(|(h, _)| h.clone()),
                listen: listen.clone(),
                events: events_tx.clone(),
                started: start_time(),
                registry: registry.clone(),
                membership: members.clone(),
                #[cfg(feature = "learning")]
                learning: learning.as_ref().map(|(s, _)| s.clone()),
            });
            let served = {
                let _entered = runtime.enter();
                api::serve(addr, config.api_token.clone(), backend)
            }
            .and_then(|server| {
                write_api_addr(&config.data_dir, server.local_addr()).map(|()| server)
            });
            match served {
                Ok(server) => {
                    tracing::info!("HTTP API on http://{}", server.local_addr());
                    Some(server)
                }
                Err(e) => {
                    let t = transport.clone();
                    let c = consensus.map(|(h, j)| {
                        h.shutdown();
                        j
                    });
                    runtime.spawn(async move {
                        if let Some(j) = c {
                            let _ = j.await;
                        }
                        let _ = t.shutdown().await;
                    });
                    return Err(e);
                }
            }
        }
    };
    let api_file = server.as_ref().map(|_| config.data_dir.join(API_ADDR_FILE));
    let handle = NodeHandle {
        peer,
        did,
        transport: transport.clone(),
        consensus: consensus.as_ref().map(|(h, _)| h.clone()),
        listen,
        stop: std::sync::Arc::new(stop_tx),
        api: server.as_ref().map(mesh_api::Server::local_addr),
        events: events_tx.clone(),
    };
    let join = runtime.spawn(async move {
        let (consensus_handle, mut consensus_join) = match consensus {
            Some((h, j)) => (Some(h), Some(j)),
            None => (None, None),
        };
        let mut blocks = consensus_handle.as_ref().map(consensus::Handle::committed);
        let mut failed = None;
        loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
                event = events.recv() => match event {
                    Some(Event::Request(request)) if request.protocol == membership::PROTOCOL => {
                        // SWIM tolerates loss: a full queue drops the message.
                        if let Err(mpsc::error::TrySendError::Full(r)) = swim_tx.try_send(request) {
                            let _ = transport.respond(r.token, Err("busy".into())).await;
                        }
                    }
                    #[cfg(feature = "learning")]
                    Some(Event::Request(request)) if request.protocol == learning::ROUND_PROTOCOL => {
                        match &learning {
                            Some((_, tx)) => {
                                if let Err(mpsc::error::TrySendError::Full(r)) = tx.try_send(request) {
                                    let _ = transport.respond(r.token, Err("busy".into())).await;
                                }
                            }
                            None => {
                                let _ = transport
                                    .respond(request.token, Err("this node runs no federated learning".into()))
                                    .await;
                            }
                        }
                    }
                    Some(Event::Request(request))
                        if request.protocol == agents::REGISTER_PROTOCOL
                            || request.protocol == agents::LOOKUP_PROTOCOL =>
                    {
                        tokio::spawn(agents::handle(
                            request,
                            transport.clone(),
                            registry.clone(),
                            consensus_handle.clone(),
                        ));
                    }
                    Some(event) => {
                        log_event(&event, peer, &listen_tx);
                        publish_event(&event, &events_tx);
                        if let Some(tx) = &forward {
                            // Waits while the driver is behind: the transport then drops gossip
                            // and refuses requests as busy, as it would without this hop.
                            let _ = tx.send(event).await;
                        }
                    }
                    None => {
                        failed = Some(Error::Transport {
                            what: "while running (its event stream ended)",
                            source: mesh_transport::Error::Closed,
                        });
                        break;
                    }
                },
                block = recv_block(&mut blocks) => log_block(block, &mut blocks, &events_tx),
                r = wait_join(&mut consensus_join) => {
                    // The driver stopped by itself: shut down through its handle, or failed
                    // (only a failing store does that). The node stops with it.
                    stop_api(server, api_file.as_deref()).await;
                    let _ = transport.shutdown().await;
                    tracing::info!("node stopped");
                    return r;
                }
            }
        }
        // Membership says goodbye while the transport is still up.
        let _ = tokio::time::timeout(Duration::from_secs(2), membership_task).await;
        // The API first: no new submissions while consensus stops.
        stop_api(server, api_file.as_deref()).await;
        let result = match (consensus_handle, consensus_join) {
            (Some(h), Some(j)) => {
                h.shutdown();
                // The driver shuts the transport down as it stops; `forward` stays open
                // until then so it does not mistake the end for a failure.
                let r = tokio::time::timeout(Duration::from_secs(30), j)
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::Thread {
                            detail: "the consensus driver did not stop within 30 s".into(),
                        })
                    });
                drop(forward);
                r
            }
            _ => {
                let _ = transport.shutdown().await;
                Ok(())
            }
        };
        tracing::info!("node stopped");
        match failed {
            Some(e) => Err(e),
            None => result,
        }
    });
    Ok((handle, join))
}

async fn recv_block(
    blocks: &mut Option<broadcast::Receiver<consensus::Block>>,
) -> std::result::Result<consensus::Block, broadcast::error::RecvError> {
    match blocks {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn stop_api(server: Option<mesh_api::Server>, file: Option<&Path>) {
    if let Some(s) = server {
        s.shutdown().await;
    }
    if let Some(f) = file {
        let _ = std::fs::remove_file(f);
    }
}

fn log_block(
    block: std::result::Result<consensus::Block, broadcast::error::RecvError>,
    blocks: &mut Option<broadcast::Receiver<consensus::Block>>,
    events: &broadcast::Sender<mesh_api::types::Event>,
) {
    match block {
        Ok(b) => {
            tracing::info!(
                height = b.block.cert.seq,
                view = b.block.cert.view,
                signers = b.block.cert.signers.count(),
                requests = b.executed.len(),
                "block committed"
            );
            let _ = events.send(mesh_api::types::Event::BlockCommitted {
                height: b.block.cert.seq,
                view: b.block.cert.view,
                requests: b.block.batch.requests().len(),
                executed: b.executed.len(),
            });
        }
        Err(broadcast::error::RecvError::Lagged(n)) => {
            tracing::info!(skipped = n, "blocks committed faster than they are logged");
        }
        Err(broadcast::error::RecvError::Closed) => *blocks = None,
    }
}

async fn wait_join(join: &mut Option<consensus::Join>) -> Result<()> {
    match join {
        Some(j) => {
            let r = j.await;
            *join = None;
            r
        }
        None => std::future::pending().await,
    }
}

/// Passes the events API subscribers see (nobody listening is fine).
fn publish_event(event: &Event, events: &broadcast::Sender<mesh_api::types::Event>) {
    let e = match event {
        Event::PeerConnected { peer, .. } => mesh_api::types::Event::PeerUp {
            peer_id: peer.to_string(),
        },
        Event::PeerDisconnected { peer } => mesh_api::types::Event::PeerDown {
            peer_id: peer.to_string(),
        },
        _ => return,
    };
    let _ = events.send(e);
}

fn log_event(event: &Event, me: PeerId, listen: &watch::Sender<Vec<Multiaddr>>) {
    match event {
        Event::Listening { addr } => {
            let full = addr.clone().with(Protocol::P2p(me));
            tracing::info!("listening on {full}");
            listen.send_modify(|v| {
                if v.len() < MAX_LISTEN_ADDRS && !v.contains(&full) {
                    v.push(full);
                }
            });
        }
        Event::PeerConnected { peer, addr } => {
            tracing::info!(%peer, %addr, "peer connected");
        }
        Event::PeerDisconnected { peer } => tracing::info!(%peer, "peer disconnected"),
        Event::PeerDiscovered { peer, via, .. } => {
            tracing::debug!(%peer, ?via, "peer discovered");
        }
        Event::DialFailed { peer, error } => tracing::debug!(?peer, %error, "dial failed"),
        _ => {}
    }
}

/// Whether listening on `listen` serves `target` (the same transport and port, on the same IP
/// or on every interface).
fn listens_at(listen: &[Multiaddr], target: &Multiaddr) -> bool {
    let parts = |a: &Multiaddr| {
        let mut ip = None;
        let mut port = None;
        for p in a.iter() {
            match p {
                Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
                Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
                Protocol::Tcp(p) => port = Some(("tcp", p)),
                Protocol::Udp(p) => port = Some(("udp", p)),
                _ => {}
            }
        }
        (ip, port)
    };
    let (target_ip, target_port) = parts(target);
    listen.iter().any(|l| {
        let (ip, port) = parts(l);
        // A DNS name in the genesis cannot be compared: trust it.
        port == target_port
            && (target_ip.is_none() || ip.is_some_and(|ip| ip.is_unspecified()) || ip == target_ip)
    })
}

/// Refuses a TCP listen address whose port another socket holds, with a clear error (libp2p
/// reports it as an opaque listen failure).
fn check_ports(listen: &[Multiaddr]) -> Result<()> {
    for addr in listen {
        let mut ip = None;
        let mut port = None;
        for p in addr.iter() {
            match p {
                Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
                Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
                Protocol::Tcp(p) => port = Some(p),
                _ => {}
            }
        }
        if let (Some(ip), Some(port)) = (ip, port)
            && port != 0
            && let Err(e) = std::net::TcpListener::bind((ip, port))
            && e.kind() == std::io::ErrorKind::AddrInUse
        {
            return Err(Error::AddressInUse {
                addr: addr.to_string(),
            });
        }
    }
    Ok(())
}

/// When the node started, for its uptime.
// The node's one monotonic reading outside the drivers' clocks: uptime is for people only.
#[allow(clippy::disallowed_methods)]
pub(crate) fn start_time() -> std::time::Instant {
    std::time::Instant::now()
}

/// The wall clock, for the identity's creation time.
// A node reads the wall clock once, to stamp its new identity.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
}

/// Writes a new file with `mode`, refusing to replace one; synced.
pub(crate) fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let err = |op: &'static str| {
        move |e: std::io::Error| Error::DataDir {
            path: path.to_owned(),
            op,
            detail: e.to_string(),
        }
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err("create the file"))?;
    f.write_all(data).map_err(err("write the file"))?;
    f.sync_all().map_err(err("sync the file"))
}

/// Writes a public file, replacing any earlier one.
/// Starts the transport on `runtime` with the peer key of Ed25519 `seed`, telling a listen
/// port in use apart.
pub(crate) fn spawn_transport(
    runtime: &tokio::runtime::Handle,
    seed: &[u8; 32],
    config: mesh_transport::Config,
) -> Result<(Transport, mpsc::Receiver<Event>)> {
    let keypair = mesh_transport::keypair_from_seed(seed).map_err(|source| Error::Transport {
        what: "deriving the peer key",
        source,
    })?;
    let _entered = runtime.enter();
    Transport::spawn(keypair, config).map_err(|source| match source {
        mesh_transport::Error::Listen { addr, detail } if detail.contains("in use") => {
            Error::AddressInUse { addr }
        }
        source => Error::Transport {
            what: "starting",
            source,
        },
    })
}

/// A client of the HTTP API of the node or agent running in `data_dir` (its
/// [`API_ADDR_FILE`] names the address), or at `api_url` (`host:port`) if given; with the
/// bearer token from `MESH_API_TOKEN` if set.
pub fn api_client(
    data_dir: Option<PathBuf>,
    api_url: Option<String>,
    default_dir: &str,
) -> Result<mesh_api::client::Client> {
    let addr = match api_url {
        Some(a) => a,
        None => {
            let dir = data_dir
                .or_else(|| std::env::var_os(config::env::DATA_DIR).map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(default_dir));
            let file = dir.join(API_ADDR_FILE);
            std::fs::read_to_string(&file)
                .map_err(|e| Error::DataDir {
                    path: file.clone(),
                    op: "read the API address (is it running, with its API on?)",
                    detail: e.to_string(),
                })?
                .trim()
                .to_owned()
        }
    };
    let client = mesh_api::client::Client::new(addr);
    Ok(match std::env::var(config::env::API_TOKEN) {
        Ok(t) if !t.is_empty() => client.with_token(t),
        _ => client,
    })
}

/// Writes the HTTP API's address to [`API_ADDR_FILE`] in `data_dir`.
pub(crate) fn write_api_addr(data_dir: &Path, addr: std::net::SocketAddr) -> Result<()> {
    write_replacing(&data_dir.join(API_ADDR_FILE), addr.to_string().as_bytes())
}

fn write_replacing(path: &Path, data: &[u8]) -> Result<()> {
    let mut data = data.to_vec();
    data.push(b'\n');
    std::fs::write(path, data).map_err(|e| Error::DataDir {
        path: path.to_owned(),
        op: "write the file",
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<Multiaddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn a_listen_address_serves_a_genesis_address_on_its_port_and_ip() {
        let target: Multiaddr =
            "/ip4/10.0.0.1/tcp/7000/p2p/12D3KooWHz8nZDqdQfkTwnNxNyKUimuYMGFNgBQ1GY61SJsq23uK"
                .parse()
                .unwrap();
        assert!(listens_at(&addrs(&["/ip4/0.0.0.0/tcp/7000"]), &target));
        assert!(listens_at(
            &addrs(&["/ip4/127.0.0.1/tcp/1", "/ip4/10.0.0.1/tcp/7000"]),
            &target
        ));
        assert!(!listens_at(&addrs(&["/ip4/0.0.0.0/tcp/0"]), &target));
        assert!(!listens_at(&addrs(&["/ip4/127.0.0.1/tcp/7000"]), &target));
        assert!(!listens_at(
            &addrs(&["/ip4/0.0.0.0/udp/7000/quic-v1"]),
            &target
        ));
        let dns: Multiaddr = "/dns4/node.example/tcp/7000".parse().unwrap();
        assert!(listens_at(&addrs(&["/ip4/0.0.0.0/tcp/7000"]), &dns));
    }
}
