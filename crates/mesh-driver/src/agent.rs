//! An agent process: a light peer with its own identity that joins the mesh through a node,
//! registers itself, and exchanges signed, end-to-end encrypted messages with other agents.
//!
//! What runs ([`start`]):
//!
//! - its own `mesh-transport` peer (the agent's DID key is its peer id), bootstrapped to its
//!   home node (`config.bootstrap`, a multiaddress ending in `/p2p/<node>`);
//! - a [`Mailbox`] (sessions, inbox, outbox) and a [`Messenger`] (persistent outbox with
//!   retries and acknowledgements, persistent duplicate filter) in `<data>/agent/`;
//! - registration: the signed [`AgentRecord`] (name, capabilities, listen addresses) is sent to
//!   the home node, which commits it through consensus; retried until it has committed;
//! - sending ([`AgentHandle::send`], `POST /v1/messages`): the recipient's record is looked up
//!   through the home node (then kept in `<data>/agent/`), a session is opened on
//!   [`SESSION_PROTOCOL`] if there is none, and the sealed envelope goes to the messenger,
//!   which delivers it directly to the recipient's peer until it is acknowledged;
//! - receiving: deliveries are opened by the mailbox (signature, sender = transport peer,
//!   decryption, duplicate check), stored, announced as `message_received` events, and only
//!   then acknowledged, so a crash means a redelivery, never a loss or a double delivery;
//! - the HTTP API on loopback (`GET /v1/status`, `GET /v1/peers`, `POST` and `GET
//!   /v1/messages`, `GET /v1/events`, `/metrics`), its address in `<data>/api.addr`.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_agent_runtime::{AgentRecord, Mailbox, Opened};
use mesh_api::types::{
    Event as ApiEvent, MessageBox, MessageReceipt, MessageView, Messages, NodeStatus, Peer,
    SendMessage,
};
use mesh_api::{ApiError, Backend};
use mesh_identity::{Did, Identity};
use mesh_store::{DiskKv, DiskStore, Kv as _, Store as _};
use mesh_transport::outbox::OutboxConfig;
use mesh_transport::{DELIVER_PROTOCOL, Event, Messenger, Multiaddr, PeerId, Transport};
use mesh_types::Timestamp;
use tokio::sync::{broadcast, watch};

use crate::error::{Error, Result};
use crate::node::agents::{LOOKUP_PROTOCOL, REGISTER_PROTOCOL};
use crate::node::{self, Config};

/// Where session hellos go (request: the hello envelope; answer: the reply envelope).
pub const SESSION_PROTOCOL: &str = "mesh/agent/session";
/// The messenger protocol agent envelopes travel on.
pub const MESSAGE_PROTOCOL: &str = "agent/msg";
/// How long a message is retried before it expires undelivered.
pub const MESSAGE_TTL: Duration = Duration::from_secs(24 * 3600);
/// The agent's files, under its data directory.
pub const AGENT_DIR: &str = "agent";

/// What an agent announces about itself.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Its name (`[A-Za-z0-9._-]`, 1 to 64 characters).
    pub name: String,
    /// What it offers (`[a-z0-9._/-]` each).
    pub capabilities: Vec<String>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            name: "agent".into(),
            capabilities: vec!["chat".into()],
        }
    }
}

#[allow(clippy::disallowed_methods)] // the driver is where the wall clock is read
fn now() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
}

fn agent_err(what: &'static str) -> impl FnOnce(mesh_agent_runtime::Error) -> Error {
    move |source| Error::Agent { what, source }
}

fn transport_err(what: &'static str) -> impl FnOnce(mesh_transport::Error) -> Error {
    move |source| Error::Transport { what, source }
}

fn peer_of(did: &Did) -> Result<PeerId> {
    let key = did.verifying_key().map_err(|source| Error::Agent {
        what: "reading a DID",
        source: source.into(),
    })?;
    PeerId::from_bytes(&mesh_identity::did::peer_id_bytes(&key))
        .map_err(|e| Error::Config(format!("no peer id for {did}: {e}")))
}

/// The state the event loop, the API and [`AgentHandle`] share.
struct Shared {
    me: Arc<Identity>,
    peer: PeerId,
    node: PeerId,
    transport: Transport,
    mailbox: Mutex<Mailbox<DiskKv>>,
    messenger: Messenger<DiskKv>,
    contacts: DiskKv,
    /// One session setup at a time per peer.
    opening: tokio::sync::Mutex<()>,
    known: Mutex<HashMap<Did, AgentRecord>>,
    events: broadcast::Sender<ApiEvent>,
    listen: watch::Receiver<Vec<Multiaddr>>,
    registered: watch::Sender<Option<u64>>,
    started: std::time::Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Knows where `record`'s agent listens, from now on and after restarts.
    async fn learn(&self, record: AgentRecord) -> Result<()> {
        let peer = peer_of(&record.did)?;
        for a in &record.addrs {
            if let Ok(addr) = a.parse::<Multiaddr>() {
                let addr: Multiaddr = addr
                    .into_iter()
                    .filter(|p| !matches!(p, mesh_transport::multiaddr::Protocol::P2p(_)))
                    .collect();
                self.transport
                    .add_peer_address(peer, addr)
                    .await
                    .map_err(transport_err("adding an agent's address"))?;
            }
        }
        self.contacts
            .put(record.did.as_str().as_bytes(), &record.to_bytes())
            .map_err(|source| Error::Store {
                dir: AGENT_DIR.into(),
                source,
            })?;
        lock(&self.known).insert(record.did.clone(), record);
        Ok(())
    }

    async fn lookup(&self, did: &Did) -> Result<()> {
        if lock(&self.known).contains_key(did) {
            return Ok(());
        }
        let bytes = self
            .transport
            .request(self.node, LOOKUP_PROTOCOL, did.as_str().as_bytes().to_vec())
            .await
            .map_err(transport_err("looking an agent up through the home node"))?;
        let record = AgentRecord::from_bytes(&bytes).map_err(agent_err("lookup answer"))?;
        record.verify().map_err(agent_err("lookup answer"))?;
        if &record.did != did {
            return Err(Error::Config(format!(
                "the home node answered a lookup of {did} with a record of {}",
                record.did
            )));
        }
        self.learn(record).await
    }

    async fn ensure_session(&self, did: &Did) -> Result<()> {
        let _one = self.opening.lock().await;
        if lock(&self.mailbox)
            .has_session(did)
            .map_err(agent_err("reading sessions"))?
        {
            return Ok(());
        }
        let peer = peer_of(did)?;
        let (pending, hello) = lock(&self.mailbox)
            .start_session(did, now())
            .map_err(agent_err("starting a session"))?;
        let reply = self
            .transport
            .request(peer, SESSION_PROTOCOL, hello)
            .await
            .map_err(transport_err("opening a session with the recipient"))?;
        lock(&self.mailbox)
            .finish_session(pending, &reply, &peer.to_bytes(), now())
            .map_err(agent_err("finishing a session"))?;
        tracing::info!(%did, "end-to-end session open");
        Ok(())
    }

    async fn send(&self, to: &Did, kind: &str, body: &[u8]) -> Result<MessageReceipt> {
        self.lookup(to).await?;
        self.ensure_session(to).await?;
        let peer = peer_of(to)?;
        let sealed = lock(&self.mailbox)
            .seal(to, kind, body, MESSAGE_TTL, now())
            .map_err(agent_err("sealing a message"))?;
        self.messenger
            .send(
                sealed.id,
                peer,
                MESSAGE_PROTOCOL,
                sealed.envelope,
                MESSAGE_TTL,
            )
            .map_err(transport_err("queueing a message"))?;
        Ok(MessageReceipt {
            id: hex::encode(sealed.id.as_bytes()),
            seq: sealed.seq,
        })
    }

    async fn on_request(&self, request: mesh_transport::InboundRequest) {
        match request.protocol.as_str() {
            SESSION_PROTOCOL => {
                let answer = lock(&self.mailbox)
                    .accept_session(&request.data, &request.peer.to_bytes(), now())
                    .map(|(did, reply)| {
                        tracing::info!(%did, "end-to-end session accepted");
                        reply
                    })
                    .map_err(|e| e.to_string());
                let _ = self.transport.respond(request.token, answer).await;
            }
            DELIVER_PROTOCOL => match self.messenger.handle_request(request).await {
                Ok(Some(delivered)) => {
                    if delivered.protocol != MESSAGE_PROTOCOL {
                        tracing::debug!(protocol = %delivered.protocol, "delivery on an unknown protocol dropped");
                        let _ = self.messenger.ack(delivered).await;
                        return;
                    }
                    let opened = lock(&self.mailbox).receive(
                        &delivered.payload,
                        &delivered.from.to_bytes(),
                        now(),
                    );
                    match opened {
                        Ok(Opened::New(m)) => {
                            tracing::info!(from = %m.peer, seq = m.seq, kind = %m.kind, "message received");
                            let _ = self.events.send(ApiEvent::MessageReceived {
                                id: hex::encode(m.id.as_bytes()),
                                from: m.peer.to_string(),
                                kind: m.kind,
                                seq: m.seq,
                            });
                        }
                        Ok(Opened::Duplicate(_)) => {}
                        Err(mesh_agent_runtime::Error::Store(e)) => {
                            // Not acknowledged: the sender retries once the disk recovers.
                            tracing::warn!(error = %e, "cannot store a received message");
                            return;
                        }
                        Err(e) => {
                            // Acknowledged so the sender stops retrying what can never open.
                            tracing::warn!(from = %delivered.from, error = %e, "message refused");
                        }
                    }
                    if let Err(e) = self.messenger.ack(delivered).await {
                        tracing::debug!(error = %e, "cannot acknowledge a delivery");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "delivery not handled"),
            },
            _ => {
                let _ = self
                    .transport
                    .respond(request.token, Err("unknown protocol".into()))
                    .await;
            }
        }
    }

    /// Registers with the home node until it has committed the record (or `stop`).
    async fn register(&self, options: &AgentOptions, mut stop: watch::Receiver<bool>) {
        let mut listen = self.listen.clone();
        let mut delay = Duration::from_millis(200);
        loop {
            let addrs = listen
                .wait_for(|a| !a.is_empty())
                .await
                .map(|a| {
                    a.iter()
                        .take(8)
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let attempt = async {
                let record = AgentRecord::sign(
                    &self.me,
                    &options.name,
                    options.capabilities.clone(),
                    addrs,
                    &self.node.to_string(),
                    now(),
                )
                .map_err(|e| e.to_string())?;
                let answer = self
                    .transport
                    .request(self.node, REGISTER_PROTOCOL, record.to_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                let height = answer
                    .as_slice()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| "a malformed answer".to_owned())?;
                Ok::<u64, String>(height)
            };
            match attempt.await {
                Ok(height) => {
                    tracing::info!(height, node = %self.node, "registered with the mesh");
                    self.registered.send_replace(Some(height));
                    return;
                }
                Err(e) => {
                    tracing::info!(error = %e, retry_in = ?delay, "registration not done yet")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

/// Controls a running agent. Cheap to clone.
#[derive(Clone)]
pub struct AgentHandle {
    shared: Arc<Shared>,
    stop: Arc<watch::Sender<bool>>,
    api: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle")
            .field("did", self.shared.me.did())
            .finish()
    }
}

impl AgentHandle {
    /// The agent's DID.
    pub fn did(&self) -> &Did {
        self.shared.me.did()
    }

    /// The agent's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer
    }

    /// Where the HTTP API listens, if it runs.
    pub fn api_addr(&self) -> Option<std::net::SocketAddr> {
        self.api
    }

    /// Waits until the home node has committed the agent's registration; returns its height
    /// (0 if it was committed before), `None` if the agent stopped first.
    pub async fn registered(&self) -> Option<u64> {
        let mut rx = self.shared.registered.subscribe();
        rx.wait_for(Option::is_some).await.ok().and_then(|h| *h)
    }

    /// Sends `body` as a message of type `kind` to the agent `to`; returns once it is stored
    /// for delivery.
    pub async fn send(&self, to: &Did, kind: &str, body: &[u8]) -> Result<MessageReceipt> {
        self.shared.send(to, kind, body).await
    }

    /// Received messages from inbox position `from`.
    pub fn inbox(&self, from: u64, limit: usize) -> Result<Vec<mesh_agent_runtime::Message>> {
        lock(&self.shared.mailbox)
            .received(from, limit)
            .map_err(agent_err("reading the inbox"))
    }

    /// The agent's events from now on.
    pub fn events(&self) -> broadcast::Receiver<ApiEvent> {
        self.shared.events.subscribe()
    }

    /// Asks the agent to stop; await its join handle to know when it has.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }
}

/// Resolves when the agent has stopped. Its store is released once the last
/// [`AgentHandle`] is dropped too.
pub type AgentJoin = tokio::task::JoinHandle<Result<()>>;

/// Runs an agent until `shutdown` resolves, then stops it cleanly.
pub async fn run(
    config: Config,
    options: AgentOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let (agent, mut join) = start(config, options)?;
    let joined = |r: std::result::Result<Result<()>, tokio::task::JoinError>| {
        r.map_err(|e| Error::Thread {
            detail: format!("the agent task failed: {e}"),
        })?
    };
    tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down");
            agent.shutdown();
            joined(join.await)
        }
        r = &mut join => joined(r),
    }
}

fn home_node(config: &Config) -> Result<PeerId> {
    config
        .bootstrap
        .iter()
        .find_map(|a| {
            a.iter().find_map(|p| match p {
                mesh_transport::multiaddr::Protocol::P2p(peer) => Some(peer),
                _ => None,
            })
        })
        .ok_or_else(|| {
            Error::Config(
                "an agent joins the mesh through a node: give --bootstrap \
                 /ip4/.../tcp/.../p2p/<node peer id> (a node prints it at start, and \
                 `mesh-node status` shows it)"
                    .into(),
            )
        })
}

fn store_err(dir: &Path) -> impl Fn(mesh_store::Error) -> Error + '_ {
    move |source| Error::Store {
        dir: dir.to_path_buf(),
        source,
    }
}

/// Starts an agent on the current tokio runtime (see the module docs).
pub fn start(config: Config, options: AgentOptions) -> Result<(AgentHandle, AgentJoin)> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::Config("an agent must be started inside a tokio runtime".into()))?;
    let node = home_node(&config)?;
    let me = Arc::new(node::open_identity(&config)?);
    // The name and capabilities are checked now, not at the first registration attempt.
    AgentRecord::sign(
        &me,
        &options.name,
        options.capabilities.clone(),
        Vec::new(),
        &node.to_string(),
        now(),
    )
    .map_err(agent_err("settings"))?;
    let dir = config.data_dir.join(AGENT_DIR);
    let store = DiskStore::open(&dir).map_err(store_err(&dir))?;
    let mailbox = Mailbox::open(store.kv("mailbox").map_err(store_err(&dir))?, me.clone())
        .map_err(agent_err("opening the mailbox"))?;
    let contacts = store.kv("contacts").map_err(store_err(&dir))?;

    let seed = me.signing_key().seed();
    let mut tc = mesh_transport::Config::default();
    tc.listen = config.listen.clone();
    tc.bootstrap = config.bootstrap.clone();
    tc.mdns = config.mdns;
    tc.protocols = vec![SESSION_PROTOCOL.to_owned(), DELIVER_PROTOCOL.to_owned()];
    let (transport, mut events) = node::spawn_transport(&runtime, &seed, tc)?;
    let messenger = {
        let _entered = runtime.enter();
        Messenger::spawn(
            transport.clone(),
            store.kv("outbox").map_err(store_err(&dir))?,
            store.kv("seen").map_err(store_err(&dir))?,
            OutboxConfig::default(),
        )
        .map_err(transport_err("opening the outbox"))?
    };
    let peer = transport.peer_id();
    let (listen_tx, listen) = watch::channel(Vec::new());
    let (stop_tx, stop) = watch::channel(false);
    let (events_tx, _) = broadcast::channel(1024);
    let (registered, _) = watch::channel(None);
    let known_contacts = contacts
        .scan_prefix(b"", 100_000)
        .map_err(store_err(&dir))?;
    let shared = Arc::new(Shared {
        me: me.clone(),
        peer,
        node,
        transport: transport.clone(),
        mailbox: Mutex::new(mailbox),
        messenger,
        contacts,
        opening: tokio::sync::Mutex::new(()),
        known: Mutex::new(HashMap::new()),
        events: events_tx,
        listen,
        registered,
        started: node::start_time(),
    });
    tracing::info!(%peer, did = %me.did(), %node, "agent started");

    let server = match config.api {
        None => None,
        Some(addr) => {
            let backend = Arc::new(AgentBackend(shared.clone()));
            let server = {
                let _entered = runtime.enter();
                node::api::serve(addr, config.api_token.clone(), backend)?
            };
            node::write_api_addr(&config.data_dir, server.local_addr())?;
            tracing::info!("HTTP API on http://{}", server.local_addr());
            Some(server)
        }
    };
    let api = server.as_ref().map(mesh_api::Server::local_addr);
    let data_dir = config.data_dir.clone();
    let handle = AgentHandle {
        shared: shared.clone(),
        stop: Arc::new(stop_tx),
        api,
    };
    let join = runtime.spawn(async move {
        // Where known agents listen, from earlier runs (pending messages need them).
        for (_, bytes) in known_contacts {
            match AgentRecord::from_bytes(&bytes) {
                Ok(r) => {
                    if let Err(e) = shared.learn(r).await {
                        tracing::warn!(error = %e, "cannot restore a contact");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unreadable contact skipped"),
            }
        }
        let register = {
            let shared = shared.clone();
            let stop = stop.clone();
            tokio::spawn(async move { shared.register(&options, stop).await })
        };
        let mut stop = stop;
        let mut failed = None;
        loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
                event = events.recv() => match event {
                    Some(Event::Request(request)) => {
                        let shared = shared.clone();
                        tokio::spawn(async move { shared.on_request(request).await });
                    }
                    Some(Event::Listening { addr }) => {
                        let full = addr.with(mesh_transport::multiaddr::Protocol::P2p(peer));
                        tracing::info!(addr = %full, "listening");
                        listen_tx.send_modify(|l| if l.len() < 64 { l.push(full) });
                    }
                    Some(Event::PeerConnected { peer, .. }) => {
                        shared.messenger.peer_connected(&peer);
                        let _ = shared.events.send(ApiEvent::PeerUp { peer_id: peer.to_string() });
                    }
                    Some(Event::PeerDisconnected { peer }) => {
                        let _ = shared.events.send(ApiEvent::PeerDown { peer_id: peer.to_string() });
                    }
                    Some(_) => {}
                    None => {
                        failed = Some(Error::Transport {
                            what: "while running (its event stream ended)",
                            source: mesh_transport::Error::Closed,
                        });
                        break;
                    }
                },
            }
        }
        register.abort();
        if let Some(s) = server {
            s.shutdown().await;
        }
        shared.messenger.close().await;
        let _ = std::fs::remove_file(data_dir.join(node::API_ADDR_FILE));
        let _ = transport.shutdown().await;
        tracing::info!("agent stopped");
        failed.map_or(Ok(()), Err)
    });
    Ok((handle, join))
}

/// The agent's side of the HTTP API.
struct AgentBackend(Arc<Shared>);

fn api_error(e: Error) -> ApiError {
    use mesh_types::{ErrorKind, HasKind as _};
    match e.kind() {
        ErrorKind::InvalidInput | ErrorKind::Malformed | ErrorKind::TooLarge => {
            ApiError::BadRequest(e.to_string())
        }
        ErrorKind::NotFound => ApiError::NotFound(e.to_string()),
        ErrorKind::Busy => ApiError::Busy(e.to_string()),
        ErrorKind::Timeout | ErrorKind::Closed | ErrorKind::Io => {
            ApiError::Unavailable(e.to_string())
        }
        _ => ApiError::Internal(e.to_string()),
    }
}

impl Backend for AgentBackend {
    async fn status(&self) -> std::result::Result<NodeStatus, ApiError> {
        let s = &self.0;
        let peers = s
            .transport
            .connected_peers()
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        Ok(NodeStatus {
            peer_id: s.peer.to_string(),
            did: s.me.did().to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: s.started.elapsed().as_secs(),
            listen: s.listen.borrow().iter().map(ToString::to_string).collect(),
            peers: peers.len(),
            consensus: None,
        })
    }

    async fn peers(&self) -> std::result::Result<Vec<Peer>, ApiError> {
        node::api::peers(&self.0.transport).await
    }

    async fn submit(
        &self,
        _payload: Vec<u8>,
    ) -> std::result::Result<mesh_api::types::Receipt, ApiError> {
        Err(ApiError::NotAValidator)
    }

    async fn ledger(
        &self,
        _from: u64,
        _limit: usize,
    ) -> std::result::Result<mesh_api::types::Ledger, ApiError> {
        Err(ApiError::NotAValidator)
    }

    fn events(&self) -> broadcast::Receiver<ApiEvent> {
        self.0.events.subscribe()
    }

    async fn metrics(&self) -> std::result::Result<String, ApiError> {
        let s = &self.0;
        let counts = lock(&s.mailbox).counts();
        let mut page = format!(
            "# TYPE mesh_agent_messages_received counter\nmesh_agent_messages_received_total {}\n\
             # TYPE mesh_agent_messages_sent counter\nmesh_agent_messages_sent_total {}\n\
             # TYPE mesh_agent_outbox_pending gauge\nmesh_agent_outbox_pending {}\n",
            counts.received,
            counts.sent,
            s.messenger.pending()
        );
        page.push_str(
            &s.transport
                .metrics_text()
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?,
        );
        Ok(page)
    }

    async fn send_message(
        &self,
        message: SendMessage,
    ) -> std::result::Result<MessageReceipt, ApiError> {
        let to = Did::parse(message.to.trim())
            .map_err(|e| ApiError::BadRequest(format!("`to`: {e}")))?;
        let kind = message.kind.as_deref().unwrap_or("chat");
        self.0
            .send(&to, kind, message.text.as_bytes())
            .await
            .map_err(api_error)
    }

    async fn messages(
        &self,
        which: MessageBox,
        from: u64,
        limit: usize,
    ) -> std::result::Result<Messages, ApiError> {
        let mailbox = lock(&self.0.mailbox);
        let counts = mailbox.counts();
        let (list, total) = match which {
            MessageBox::Inbox => (mailbox.received(from, limit), counts.received),
            MessageBox::Outbox => (mailbox.sent(from, limit), counts.sent),
        };
        let list = list.map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Messages {
            messages: list
                .into_iter()
                .map(|m| MessageView {
                    seq: m.seq,
                    id: hex::encode(m.id.as_bytes()),
                    peer: m.peer.to_string(),
                    kind: m.kind,
                    timestamp_ms: m.timestamp.0,
                    text: String::from_utf8(m.body.clone()).ok(),
                    hex: hex::encode(&m.body),
                })
                .collect(),
            total,
        })
    }
}
