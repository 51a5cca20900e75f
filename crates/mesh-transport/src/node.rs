//! The libp2p implementation: one swarm driven by one task, controlled through a
//! [`Transport`] handle and reporting [`Event`]s on a bounded channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, autonat, connection_limits, dcutr, gossipsub,
    identify, identity, kad, mdns, noise, ping, relay, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};

use crate::codec;
use crate::error::{Error, Result};

/// The Kademlia protocol of agentmesh (kept apart from the public IPFS DHT).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/agentmesh/kad/1");
/// The identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/agentmesh/id/1";
/// Inbound requests from one peer's request stream awaiting a response from the
/// application, at most (all streams together: 16 times this); beyond it requests are
/// refused as busy.
pub const MAX_PENDING_INBOUND: usize = 4096;
/// Longest topic name.
pub const MAX_TOPIC_LEN: usize = 64;

/// How often a failed dial to one peer is logged as a warning.
const DIAL_WARN_EVERY: Duration = Duration::from_secs(60);
/// Peers whose last warning time is remembered (beyond it the memory starts over).
const DIAL_WARN_PEERS: usize = 1024;

/// Transport settings. The defaults suit a node; tests shrink the timeouts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Addresses to listen on (by default every interface, a free port, over TCP and QUIC:
    /// `/ip4/0.0.0.0/tcp/0` and `/ip4/0.0.0.0/udp/0/quic-v1`).
    pub listen: Vec<Multiaddr>,
    /// Peers to join through, as multiaddresses ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the local network by mDNS.
    pub mdns: bool,
    /// Serve as a relay for peers behind NATs (circuit relay v2). Off by default; the
    /// coordinator and well-reachable nodes turn it on.
    pub relay_server: bool,
    /// Treat every listen address as a confirmed external address (announced to peers, and
    /// required by the relay server before it accepts reservations). For nodes on a LAN or on
    /// loopback; on the internet AutoNAT confirms addresses instead.
    pub listen_addrs_are_external: bool,
    /// Application protocols this node answers requests on.
    pub protocols: Vec<String>,
    /// Largest request, response or gossip message, in bytes.
    pub max_message_len: usize,
    /// How long a request may wait for its response.
    pub request_timeout: Duration,
    /// Most established connections in total.
    pub max_connections: u32,
    /// Most established connections to one peer.
    pub max_connections_per_peer: u32,
    /// How long a connection with no traffic is kept.
    pub idle_timeout: Duration,
    /// Inbound requests one peer may make per second (beyond its burst); excess requests are
    /// refused with "rate limited" and never reach the application.
    pub requests_per_peer_per_sec: u32,
    /// Inbound requests one peer may make at once before the rate applies.
    pub request_burst_per_peer: u32,
    /// Most requests in flight at once (outbound callers wait for a slot; inbound streams
    /// beyond it are refused by libp2p).
    pub max_concurrent_requests: usize,
    /// Capacity of the command channel (callers wait when it is full).
    pub command_capacity: usize,
    /// Capacity of the event channel (the network waits when it is full).
    pub event_capacity: usize,
    /// The agent version announced by identify.
    pub agent_version: String,
    /// How long messages published on one topic may wait to leave together in one signed
    /// envelope. The first message after a quiet spell leaves at once; while publishing
    /// continues, batches leave at most this often. Zero sends every message by itself.
    pub gossip_linger: Duration,
    /// Most bytes of messages in one gossip batch (capped by `max_message_len`).
    pub gossip_batch_len: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec![
                Multiaddr::from(std::net::Ipv4Addr::UNSPECIFIED)
                    .with(libp2p::multiaddr::Protocol::Tcp(0)),
                Multiaddr::from(std::net::Ipv4Addr::UNSPECIFIED)
                    .with(libp2p::multiaddr::Protocol::Udp(0))
                    .with(libp2p::multiaddr::Protocol::QuicV1),
            ],
            bootstrap: Vec::new(),
            mdns: true,
            relay_server: false,
            listen_addrs_are_external: false,
            protocols: Vec::new(),
            max_message_len: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_connections_per_peer: 2,
            idle_timeout: Duration::from_secs(60),
            max_concurrent_requests: 256,
            requests_per_peer_per_sec: 50_000,
            request_burst_per_peer: 100_000,
            command_capacity: 256,
            event_capacity: 1024,
            agent_version: format!("agentmesh/{}", env!("CARGO_PKG_VERSION")),
            gossip_linger: Duration::from_millis(1),
            gossip_batch_len: 64 * 1024,
        }
    }
}

/// Parses a multiaddress with a clear error.
pub fn parse_addr(text: &str) -> Result<Multiaddr> {
    text.parse()
        .map_err(|e: libp2p::multiaddr::Error| Error::BadAddress {
            addr: text.to_owned(),
            detail: e.to_string(),
        })
}

/// The libp2p key pair of an Ed25519 seed (the same key as the node's DID).
pub fn keypair_from_seed(seed: &[u8; 32]) -> Result<identity::Keypair> {
    let mut bytes = *seed;
    identity::Keypair::ed25519_from_bytes(&mut bytes).map_err(|e| Error::Setup {
        detail: e.to_string(),
    })
}

/// How a peer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// mDNS on the local network.
    Mdns,
    /// The Kademlia DHT.
    Kademlia,
}

/// A request from a peer, waiting for [`Transport::respond`].
#[derive(Debug)]
pub struct InboundRequest {
    /// Who asked.
    pub peer: PeerId,
    /// The application protocol.
    pub protocol: String,
    /// The payload.
    pub data: Vec<u8>,
    /// Identifies the request when responding.
    pub token: u64,
}

/// Something that happened on the network.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// Now listening on `addr`.
    Listening {
        /// The address.
        addr: Multiaddr,
    },
    /// A connection to `peer` was established.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// The remote address.
        addr: Multiaddr,
    },
    /// The last connection to `peer` closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A peer was found.
    PeerDiscovered {
        /// The peer.
        peer: PeerId,
        /// Its addresses.
        addrs: Vec<Multiaddr>,
        /// How.
        via: Discovery,
    },
    /// A peer told us about itself.
    Identified {
        /// The peer.
        peer: PeerId,
        /// Its agent version.
        agent_version: String,
        /// Its listen addresses.
        listen_addrs: Vec<Multiaddr>,
    },
    /// DCUtR (hole punching) tried to replace a relayed connection to `peer` with a direct one.
    /// Only the libp2p transport reports this. It comes from the node whose own dial decided
    /// the outcome: on success from a node whose direct dial connected (the other side may see
    /// only an inbound connection, and then reports nothing), on failure from the node that
    /// gave up. The relayed connection stays open either way, until it idles out or its relay
    /// closes it.
    HolePunch {
        /// The peer.
        peer: PeerId,
        /// The remote address of the direct connection, or why none was made.
        result: std::result::Result<Multiaddr, String>,
    },
    /// A dial failed (the node keeps running).
    DialFailed {
        /// The peer, if known.
        peer: Option<PeerId>,
        /// Why.
        error: String,
    },
    /// A request arrived on a served protocol.
    Request(InboundRequest),
    /// A gossip message arrived on a subscribed topic.
    Message {
        /// The topic.
        topic: String,
        /// The original author (messages are signed).
        source: Option<PeerId>,
        /// The payload.
        data: Vec<u8>,
    },
}

pub(crate) enum Command {
    Listen(Multiaddr, oneshot::Sender<Result<()>>),
    Dial(Multiaddr, oneshot::Sender<Result<()>>),
    Request {
        id: u64,
        peer: PeerId,
        protocol: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>>>,
    },
    Respond {
        token: u64,
        result: std::result::Result<Vec<u8>, String>,
    },
    Subscribe(String, oneshot::Sender<Result<()>>),
    Publish {
        topic: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<()>>,
    },
    Bootstrap(oneshot::Sender<Result<()>>),
    AddAddress(PeerId, Multiaddr),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    Metrics(oneshot::Sender<String>),
    Shutdown(oneshot::Sender<()>),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    streams: libp2p_stream::Behaviour,
    gossip: gossipsub::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    mdns: Toggle<mdns::tokio::Behaviour>,
    relay_server: Toggle<relay::Behaviour>,
    relay_client: relay::client::Behaviour,
    dcutr: dcutr::Behaviour,
    autonat: autonat::Behaviour,
}

/// A handle to a running transport. Cheap to clone; the transport stops when
/// [`Transport::shutdown`] is called or every handle is dropped.
#[derive(Clone)]
pub struct Transport {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    next_id: Arc<AtomicU64>,
    max_message_len: usize,
    request_slots: Arc<tokio::sync::Semaphore>,
    /// The stream-based request/response of the libp2p driver (`None` in memory).
    rr: Option<Arc<crate::rr::StreamRr>>,
    /// Opens and accepts raw streams (`None` in memory).
    streams: Option<libp2p_stream::Control>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("peer_id", &self.peer_id)
            .field("max_message_len", &self.max_message_len)
            .finish_non_exhaustive()
    }
}

/// The libp2p protocol of a raw stream named `name`.
fn stream_protocol(name: &str) -> Result<StreamProtocol> {
    if !codec::valid_protocol_name(name) {
        return Err(Error::BadName {
            what: "stream protocol",
            name: name.chars().take(80).collect(),
            detail: "use 1 to 64 of [a-z0-9/._-]",
        });
    }
    StreamProtocol::try_from_owned(format!("/agentmesh/stream/1/{name}")).map_err(|_| {
        Error::BadName {
            what: "stream protocol",
            name: name.to_owned(),
            detail: "not a valid libp2p protocol",
        }
    })
}

fn valid_topic(topic: &str) -> Result<()> {
    let ok = !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'/' | b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadName {
            what: "topic",
            name: topic.chars().take(80).collect(),
            detail: "use 1 to 64 of [a-z0-9/._-]",
        })
    }
}

impl Transport {
    /// Builds the swarm, starts listening and bootstrapping, and spawns the driving task on
    /// the current tokio runtime. Returns the handle and the event stream.
    pub fn spawn(
        keypair: identity::Keypair,
        config: Config,
    ) -> Result<(Self, mpsc::Receiver<Event>)> {
        for p in &config.protocols {
            if !codec::valid_protocol_name(p) {
                return Err(Error::BadName {
                    what: "protocol",
                    name: p.clone(),
                    detail: "use 1 to 64 of [a-z0-9/._-]",
                });
            }
        }
        let peer_id = keypair.public().to_peer_id();
        let setup = |e: &dyn std::fmt::Display| Error::Setup {
            detail: e.to_string(),
        };
        let max_len = config.max_message_len;
        let cfg = config.clone();
        let mut registry = prometheus_client::registry::Registry::default();
        // Gossip envelopes are Ed25519-signed; another key type cannot publish (said per call).
        let signing_key = keypair.clone().try_into_ed25519().ok();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| setup(&e))?
            .with_quic()
            .with_dns()
            .map_err(|e| setup(&e))?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| setup(&e))?
            .with_bandwidth_metrics(&mut registry)
            .with_behaviour(|key, relay_client| {
                // Anonymous at the gossipsub level, content-addressed ids, and our own signed
                // envelope verified once per message (see `gossip.rs`).
                let gossip_config = gossipsub::ConfigBuilder::default()
                    .max_transmit_size(max_len + 256)
                    .validation_mode(gossipsub::ValidationMode::Anonymous)
                    .validate_messages()
                    .message_id_fn(|m: &gossipsub::Message| {
                        let d = mesh_types::Digest::of_parts([
                            m.topic.as_str().as_bytes(),
                            &[0xff],
                            &m.data,
                        ]);
                        gossipsub::MessageId::from(&d.as_bytes()[..20])
                    })
                    .heartbeat_interval(Duration::from_millis(500))
                    .build()?;
                let mut gossip = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Anonymous,
                    gossip_config,
                )?;
                gossip
                    .with_peer_score(
                        gossip_score_params(),
                        gossipsub::PeerScoreThresholds::default(),
                    )
                    .map_err(std::io::Error::other)?;
                let mut kad = kad::Behaviour::with_config(
                    peer_id,
                    kad::store::MemoryStore::new(peer_id),
                    kad::Config::new(KAD_PROTOCOL),
                );
                kad.set_mode(Some(kad::Mode::Server));
                let mdns = if cfg.mdns {
                    Some(mdns::tokio::Behaviour::new(
                        mdns::Config::default(),
                        peer_id,
                    )?)
                } else {
                    None
                };
                Ok(Behaviour {
                    limits: connection_limits::Behaviour::new(
                        connection_limits::ConnectionLimits::default()
                            .with_max_established(Some(cfg.max_connections))
                            .with_max_established_per_peer(Some(cfg.max_connections_per_peer)),
                    ),
                    identify: identify::Behaviour::new(
                        identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                            .with_agent_version(cfg.agent_version.clone()),
                    ),
                    ping: ping::Behaviour::new(ping::Config::new()),
                    streams: libp2p_stream::Behaviour::new(),
                    gossip,
                    kad,
                    mdns: Toggle::from(mdns),
                    relay_server: Toggle::from(
                        cfg.relay_server
                            .then(|| relay::Behaviour::new(peer_id, relay::Config::default())),
                    ),
                    relay_client,
                    dcutr: dcutr::Behaviour::new(peer_id),
                    autonat: autonat::Behaviour::new(peer_id, autonat::Config::default()),
                })
            })
            .map_err(|e| setup(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
            .build();

        for addr in &config.listen {
            swarm.listen_on(addr.clone()).map_err(|e| Error::Listen {
                addr: addr.to_string(),
                detail: e.to_string(),
            })?;
        }
        let (tx, rx) = mpsc::channel(config.command_capacity.max(1));
        let (events_tx, events_rx) = mpsc::channel(config.event_capacity.max(1));
        let metrics = crate::metrics::Metrics::new(&mut registry);
        let control = swarm.behaviour().streams.new_control();
        let rr = crate::rr::StreamRr::new(
            control.clone(),
            config.max_message_len,
            config.request_timeout,
            crate::rr::RrMetrics {
                out: metrics.requests_out.clone(),
                inbound: metrics.requests_in.clone(),
                seconds: metrics.request_seconds.clone(),
            },
        );
        rr.serve(crate::rr::Inbound {
            events: events_tx.downgrade(),
            served: config.protocols.iter().cloned().collect(),
            limiter: Arc::new(std::sync::Mutex::new(crate::limits::RateLimiter::new(
                config.requests_per_peer_per_sec,
                config.request_burst_per_peer,
                4 * config.max_connections as usize,
            ))),
            started: tokio::time::Instant::now(),
        })?;
        #[allow(clippy::disallowed_methods)] // a start for gossip sequence numbers, not a clock
        let gossip_seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut driver = Driver {
            signing_key,
            gossip_seq,
            outgoing: HashMap::new(),
            gossip_linger: config.gossip_linger,
            gossip_batch_len: config.gossip_batch_len.min(config.max_message_len).max(1),
            last_flush: tokio::time::Instant::now(),
            flush_timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            flush_armed: false,
            to_validate: Vec::new(),
            author_keys: crate::gossip::KeyCache::default(),
            rr: rr.clone(),
            swarm,
            commands: rx,
            events: events_tx,
            metrics,
            registry,
            listen_addrs_are_external: config.listen_addrs_are_external,
            connection_addrs: HashMap::new(),
            dial_warned: HashMap::new(),
        };
        for addr in &config.bootstrap {
            driver.add_bootstrap(addr);
        }
        if !config.bootstrap.is_empty() {
            let _ = driver.swarm.behaviour_mut().kad.bootstrap();
        }
        tokio::spawn(driver.run());
        Ok((
            Self {
                tx,
                peer_id,
                next_id: Arc::new(AtomicU64::new(1)),
                max_message_len: config.max_message_len,
                request_slots: Arc::new(tokio::sync::Semaphore::new(
                    config.max_concurrent_requests.max(1),
                )),
                rr: Some(rr),
                streams: Some(control),
            },
            events_rx,
        ))
    }

    /// A handle whose commands go to `tx` (used by the in-memory driver).
    pub(crate) fn from_channel(
        tx: mpsc::Sender<Command>,
        peer_id: PeerId,
        max_message_len: usize,
        max_concurrent_requests: usize,
    ) -> Self {
        Self {
            tx,
            peer_id,
            next_id: Arc::new(AtomicU64::new(1)),
            max_message_len,
            request_slots: Arc::new(tokio::sync::Semaphore::new(max_concurrent_requests.max(1))),
            rr: None,
            streams: None,
        }
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Starts listening on `addr`.
    pub async fn listen(&self, addr: Multiaddr) -> Result<()> {
        self.call(|r| Command::Listen(addr, r)).await?
    }

    /// Dials `addr` (completion is reported by [`Event::PeerConnected`] or
    /// [`Event::DialFailed`]).
    pub async fn dial(&self, addr: Multiaddr) -> Result<()> {
        self.call(|r| Command::Dial(addr, r)).await?
    }

    /// Sends `data` to `peer` on application protocol `protocol` and waits for the answer.
    pub async fn request(&self, peer: PeerId, protocol: &str, data: Vec<u8>) -> Result<Vec<u8>> {
        if !codec::valid_protocol_name(protocol) {
            return Err(Error::BadName {
                what: "protocol",
                name: protocol.chars().take(80).collect(),
                detail: "use 1 to 64 of [a-z0-9/._-]",
            });
        }
        let len = data.len() + protocol.len() + 1;
        if len > self.max_message_len {
            return Err(Error::TooLarge {
                what: "request",
                len,
                max: self.max_message_len,
            });
        }
        let _slot = self
            .request_slots
            .acquire()
            .await
            .map_err(|_| Error::Closed)?;
        if let Some(rr) = &self.rr {
            if self.tx.is_closed() {
                return Err(Error::Closed);
            }
            return rr.request(peer, protocol, data).await;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let protocol = protocol.to_owned();
        self.call(|reply| Command::Request {
            id,
            peer,
            protocol,
            data,
            reply,
        })
        .await?
    }

    /// Answers an inbound request (`Err` carries a reason the requester sees as
    /// [`Error::Refused`]).
    pub async fn respond(
        &self,
        token: u64,
        result: std::result::Result<Vec<u8>, String>,
    ) -> Result<()> {
        if let Some(rr) = &self.rr {
            rr.respond(token, result).await;
            return Ok(());
        }
        self.tx
            .send(Command::Respond { token, result })
            .await
            .map_err(|_| Error::Closed)
    }

    /// Opens a raw, ordered, flow-controlled byte stream to `peer` for the application
    /// protocol `name` (dialling the peer if needed), for bulk transfers such as models and
    /// snapshots. The peer must be accepting `name` ([`Transport::accept_streams`]). Only the
    /// libp2p transport has streams.
    pub async fn open_stream(&self, peer: PeerId, name: &str) -> Result<libp2p::Stream> {
        let protocol = stream_protocol(name)?;
        let mut control = self.streams.clone().ok_or(Error::Unsupported {
            what: "streams on the in-memory transport",
        })?;
        control
            .open_stream(peer, protocol)
            .await
            .map_err(|e| Error::Request {
                id: 0,
                protocol: name.to_owned(),
                peer: peer.to_string(),
                detail: format!("could not open a stream: {e}"),
            })
    }

    /// Accepts inbound streams for the application protocol `name`, until the returned
    /// stream of `(peer, stream)` is dropped. Streams arriving while the receiver is not
    /// polled are dropped by libp2p after a small buffer fills.
    pub fn accept_streams(&self, name: &str) -> Result<libp2p_stream::IncomingStreams> {
        let protocol = stream_protocol(name)?;
        let mut control = self.streams.clone().ok_or(Error::Unsupported {
            what: "streams on the in-memory transport",
        })?;
        control.accept(protocol).map_err(|_| Error::BadName {
            what: "stream protocol",
            name: name.to_owned(),
            detail: "already being accepted",
        })
    }

    /// Subscribes to gossip on `topic`.
    pub async fn subscribe(&self, topic: &str) -> Result<()> {
        valid_topic(topic)?;
        let topic = topic.to_owned();
        self.call(|r| Command::Subscribe(topic, r)).await?
    }

    /// Publishes `data` on `topic` to every subscriber in the mesh.
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<()> {
        valid_topic(topic)?;
        if data.len() > self.max_message_len {
            return Err(Error::TooLarge {
                what: "gossip message",
                len: data.len(),
                max: self.max_message_len,
            });
        }
        let topic = topic.to_owned();
        self.call(|reply| Command::Publish { topic, data, reply })
            .await?
    }

    /// Runs a Kademlia bootstrap (a random walk refreshing the routing table).
    pub async fn bootstrap(&self) -> Result<()> {
        self.call(Command::Bootstrap).await?
    }

    /// Remembers `addr` as an address of `peer` (used when dialling it later).
    pub async fn add_peer_address(&self, peer: PeerId, addr: Multiaddr) -> Result<()> {
        self.tx
            .send(Command::AddAddress(peer, addr))
            .await
            .map_err(|_| Error::Closed)
    }

    /// The addresses this node listens on.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>> {
        self.call(Command::ListenAddrs).await
    }

    /// The transport's metrics in the Prometheus text format.
    pub async fn metrics_text(&self) -> Result<String> {
        self.call(Command::Metrics).await
    }

    /// The peers currently connected.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>> {
        self.call(Command::ConnectedPeers).await
    }

    /// Stops the transport: closes listeners and connections, and ends the event stream.
    pub async fn shutdown(&self) -> Result<()> {
        self.call(Command::Shutdown).await
    }
}

async fn emit(events: &mpsc::Sender<Event>, event: Event) {
    // A dropped receiver means nobody listens; keep serving commands regardless.
    let _ = events.send(event).await;
}

/// Peer scoring: what gossipsub uses to pick, prune and ignore peers. libp2p's defaults,
/// except that peers sharing an IP address are not penalised when the address is loopback
/// (test meshes and local testnets); Sybil resistance is the validators' job (proof of
/// computation), not the gossip layer's.
fn gossip_score_params() -> gossipsub::PeerScoreParams {
    gossipsub::PeerScoreParams {
        ip_colocation_factor_whitelist: [
            std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ]
        .into_iter()
        .collect(),
        ..gossipsub::PeerScoreParams::default()
    }
}

/// Per-topic scoring. An honest peer never forwards a message that fails validation (every
/// node validates before forwarding), so one invalid message puts its sender below the
/// graylist threshold (its traffic is then ignored) for about 20 s, and more invalid messages
/// weigh quadratically. Peers earn a little for time in the mesh and for first deliveries.
/// Mesh-delivery quotas (P3) are off: topics here may be quiet for long stretches, and a quota
/// would punish honest peers for having nothing to say.
fn gossip_topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 600.0,
        first_message_deliveries_weight: 0.1,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 100.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.99,
        ..gossipsub::TopicScoreParams::default()
    }
}

/// A gossip message waiting for its signature check.
struct ToValidate {
    id: gossipsub::MessageId,
    from: PeerId,
    topic: String,
    opened: crate::gossip::Opened,
}

/// Gossip messages checked together at most.
const VALIDATION_BATCH: usize = 256;

struct Driver {
    /// Signs our gossip envelopes.
    signing_key: Option<identity::ed25519::Keypair>,
    gossip_seq: u64,
    /// Messages published per topic, waiting for the next flush.
    outgoing: HashMap<String, crate::gossip::Batch>,
    gossip_linger: Duration,
    gossip_batch_len: usize,
    last_flush: tokio::time::Instant,
    /// Fires when the waiting batches are due (armed only while some wait).
    flush_timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    flush_armed: bool,
    to_validate: Vec<ToValidate>,
    author_keys: crate::gossip::KeyCache,
    rr: Arc<crate::rr::StreamRr>,
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    metrics: crate::metrics::Metrics,
    registry: prometheus_client::registry::Registry,
    listen_addrs_are_external: bool,
    /// The remote address of every established connection (at most `max_connections`), to
    /// name the direct connection DCUtR reports by id.
    connection_addrs: HashMap<libp2p::swarm::ConnectionId, Multiaddr>,
    /// When a failed dial to a peer was last logged as a warning (at most [`DIAL_WARN_PEERS`]
    /// peers): a peer that stays down is redialled by several tasks, and one warning a minute
    /// says as much as a page of them.
    dial_warned: HashMap<Option<PeerId>, tokio::time::Instant>,
}

impl Driver {
    fn add_bootstrap(&mut self, addr: &Multiaddr) {
        let peer = addr.iter().find_map(|p| match p {
            libp2p::multiaddr::Protocol::P2p(id) => Some(id),
            _ => None,
        });
        match peer {
            Some(peer) => {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
            None => {
                tracing::warn!(%addr, "bootstrap address has no /p2p/<peer id>; dialling it anyway")
            }
        }
        if let Err(e) = self.swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
        }
    }

    async fn run(mut self) {
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    None => break,
                    Some(Command::Shutdown(reply)) => {
                        // Close the request streams first, so nothing is served once the
                        // caller hears that the transport stopped.
                        self.rr.close();
                        self.flush_gossip();
                        let _ = reply.send(());
                        break;
                    }
                    Some(cmd) => {
                        self.command(cmd);
                        self.schedule_flush();
                    }
                },
                () = &mut self.flush_timer, if self.flush_armed => {
                    self.flush_armed = false;
                    self.flush_gossip();
                }
                event = self.swarm.select_next_some() => {
                    self.swarm_event(event).await;
                    // Take whatever else is ready, so gossip signatures are checked in batches.
                    while self.to_validate.len() < VALIDATION_BATCH {
                        match futures::FutureExt::now_or_never(self.swarm.next()) {
                            Some(Some(event)) => self.swarm_event(event).await,
                            _ => break,
                        }
                    }
                    self.validate_gossip();
                }
            }
        }
        self.rr.close();
        for peer in self.swarm.connected_peers().copied().collect::<Vec<_>>() {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Checks the signatures of the gossip gathered so far, tells gossipsub which to forward
    /// and which to reject (penalising the peer that sent them), and hands the good ones to
    /// the application.
    fn validate_gossip(&mut self) {
        if self.to_validate.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.to_validate);
        let refs: Vec<&crate::gossip::Opened> = batch.iter().map(|v| &v.opened).collect();
        let ok = crate::gossip::verify_all(&refs);
        for (v, good) in batch.into_iter().zip(ok) {
            let author = v.opened.author();
            let acceptance = match (good, author) {
                (true, Some(_)) => gossipsub::MessageAcceptance::Accept,
                _ => gossipsub::MessageAcceptance::Reject,
            };
            let accepted = acceptance == gossipsub::MessageAcceptance::Accept;
            let _ = self
                .swarm
                .behaviour_mut()
                .gossip
                .report_message_validation_result(&v.id, &v.from, acceptance);
            if !accepted {
                self.metrics.gossip_rejected.inc();
                continue;
            }
            for data in v.opened.into_messages() {
                self.metrics.gossip_received.inc();
                // Never wait on a slow application for gossip: drop and count instead.
                let event = Event::Message {
                    topic: v.topic.clone(),
                    source: author,
                    data,
                };
                if self.events.try_send(event).is_err() {
                    self.metrics.events_dropped.inc();
                }
            }
        }
    }

    /// Queues `data` for the next batch on `topic`. Refuses what gossipsub would refuse at
    /// publishing time (no subscribed peer, a key that cannot sign), so callers still hear it.
    fn queue_gossip(&mut self, topic: String, data: &[u8]) -> Result<()> {
        if self.signing_key.is_none() {
            return Err(Error::Publish {
                topic,
                detail: "this node's key cannot sign gossip (not Ed25519)".into(),
            });
        }
        let hash = gossipsub::IdentTopic::new(&topic).hash();
        let gossip = &self.swarm.behaviour().gossip;
        if !gossip
            .all_peers()
            .any(|(_, topics)| topics.contains(&&hash))
        {
            return Err(Error::Publish {
                topic,
                detail: "no peer is subscribed to this topic (NoPeersSubscribedToTopic)".into(),
            });
        }
        let full = self
            .outgoing
            .get(&topic)
            .is_some_and(|b| !b.fits(data.len(), self.gossip_batch_len));
        if full && let Some(batch) = self.outgoing.remove(&topic) {
            self.send_batch(&topic, &batch);
        }
        self.outgoing.entry(topic).or_default().push(data);
        Ok(())
    }

    /// Sends the waiting batches now if none left within the linger, else arms the timer.
    fn schedule_flush(&mut self) {
        if self.outgoing.is_empty() || self.flush_armed {
            return;
        }
        let due = self.last_flush + self.gossip_linger;
        if tokio::time::Instant::now() >= due {
            self.flush_gossip();
        } else {
            self.flush_timer.as_mut().reset(due);
            self.flush_armed = true;
        }
    }

    /// Seals and publishes every waiting batch.
    fn flush_gossip(&mut self) {
        self.last_flush = tokio::time::Instant::now();
        for (topic, batch) in std::mem::take(&mut self.outgoing) {
            self.send_batch(&topic, &batch);
        }
    }

    fn send_batch(&mut self, topic: &str, batch: &crate::gossip::Batch) {
        if batch.is_empty() {
            return;
        }
        self.gossip_seq = self.gossip_seq.wrapping_add(1);
        let sealed = self
            .signing_key
            .as_ref()
            .map(|key| crate::gossip::seal(key, topic, self.gossip_seq, batch.body()));
        let result = match sealed {
            Some(data) => self
                .swarm
                .behaviour_mut()
                .gossip
                .publish(gossipsub::IdentTopic::new(topic), data)
                .map(drop)
                .map_err(|e| e.to_string()),
            None => Err("cannot sign".to_owned()),
        };
        let n = batch.len() as u64;
        match result {
            Ok(()) => {
                self.metrics.gossip_published.inc_by(n);
            }
            Err(error) => {
                // The callers were told "queued"; count and log what could not leave.
                self.metrics.gossip_unsent.inc_by(n);
                tracing::warn!(topic, messages = n, %error, "gossip batch not published");
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Listen(addr, reply) => {
                let r = self
                    .swarm
                    .listen_on(addr.clone())
                    .map(drop)
                    .map_err(|e| Error::Listen {
                        addr: addr.to_string(),
                        detail: e.to_string(),
                    });
                let _ = reply.send(r);
            }
            Command::Dial(addr, reply) => {
                let r = self.swarm.dial(addr.clone()).map_err(|e| Error::Dial {
                    target: addr.to_string(),
                    detail: e.to_string(),
                });
                let _ = reply.send(r);
            }
            // The handle serves requests on its streams itself (see `rr.rs`); these commands
            // only reach the in-memory driver.
            Command::Request { reply, .. } => {
                let _ = reply.send(Err(Error::Closed));
            }
            Command::Respond { .. } => {}
            Command::Subscribe(topic, reply) => {
                let gossip = &mut self.swarm.behaviour_mut().gossip;
                let ident = gossipsub::IdentTopic::new(&topic);
                // Scoring was switched on at construction, so this cannot fail.
                let _ = gossip.set_topic_params(ident.clone(), gossip_topic_score_params());
                let r = gossip
                    .subscribe(&ident)
                    .map(drop)
                    .map_err(|e| Error::Publish {
                        topic,
                        detail: e.to_string(),
                    });
                let _ = reply.send(r);
            }
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.queue_gossip(topic, &data));
            }
            Command::Bootstrap(reply) => {
                let r = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .bootstrap()
                    .map(drop)
                    .map_err(|e| Error::Dial {
                        target: "the DHT".into(),
                        detail: e.to_string(),
                    });
                let _ = reply.send(r);
            }
            Command::AddAddress(peer, addr) => {
                self.swarm.behaviour_mut().kad.add_address(&peer, addr);
            }
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Metrics(reply) => {
                let _ = reply.send(crate::metrics::encode(&self.registry));
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Shutdown(_) => {}
        }
    }

    async fn swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        libp2p::metrics::Recorder::record(&self.metrics.libp2p, &event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                if self.listen_addrs_are_external {
                    self.swarm.add_external_address(address.clone());
                }
                emit(&self.events, Event::Listening { addr: address }).await
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                self.connection_addrs.insert(connection_id, addr.clone());
                if num_established.get() == 1 {
                    emit(
                        &self.events,
                        Event::PeerConnected {
                            peer: peer_id,
                            addr,
                        },
                    )
                    .await;
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.connection_addrs.remove(&connection_id);
                if num_established == 0 {
                    emit(&self.events, Event::PeerDisconnected { peer: peer_id }).await;
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                let now = tokio::time::Instant::now();
                let recent = self
                    .dial_warned
                    .get(&peer_id)
                    .is_some_and(|at| now.duration_since(*at) < DIAL_WARN_EVERY);
                if recent {
                    tracing::debug!(peer = ?peer_id, %error, "dial failed (again)");
                } else {
                    tracing::warn!(peer = ?peer_id, %error, "dial failed (repeats within a minute are logged at debug)");
                    if self.dial_warned.len() >= DIAL_WARN_PEERS {
                        self.dial_warned.clear();
                    }
                    self.dial_warned.insert(peer_id, now);
                }
                emit(
                    &self.events,
                    Event::DialFailed {
                        peer: peer_id,
                        error: error.to_string(),
                    },
                )
                .await;
            }
            SwarmEvent::Behaviour(event) => self.behaviour_event(event).await,
            _ => {}
        }
    }

    async fn behaviour_event(&mut self, event: BehaviourEvent) {
        {
            use libp2p::metrics::Recorder as _;
            let m = &self.metrics.libp2p;
            match &event {
                BehaviourEvent::Identify(e) => m.record(e),
                BehaviourEvent::Kad(e) => m.record(e),
                BehaviourEvent::Gossip(e) => m.record(e),
                BehaviourEvent::Ping(e) => m.record(e),
                _ => {}
            }
        }
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                for addr in &info.listen_addrs {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                }
                emit(
                    &self.events,
                    Event::Identified {
                        peer: peer_id,
                        agent_version: info.agent_version,
                        listen_addrs: info.listen_addrs,
                    },
                )
                .await;
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (peer, addr) in found {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    by_peer.entry(peer).or_default().push(addr);
                }
                for (peer, addrs) in by_peer {
                    if !self.swarm.is_connected(&peer)
                        && let Some(addr) = addrs.first()
                        && let Err(e) = self.swarm.dial(addr.clone())
                    {
                        tracing::debug!(%peer, error = %e, "cannot dial a peer found by mDNS");
                    }
                    emit(
                        &self.events,
                        Event::PeerDiscovered {
                            peer,
                            addrs,
                            via: Discovery::Mdns,
                        },
                    )
                    .await;
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer,
                addresses,
                is_new_peer: true,
                ..
            }) => {
                emit(
                    &self.events,
                    Event::PeerDiscovered {
                        peer,
                        addrs: addresses.into_vec(),
                        via: Discovery::Kademlia,
                    },
                )
                .await;
            }
            BehaviourEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let topic = message.topic.into_string();
                match crate::gossip::Opened::parse(&topic, &message.data, &mut self.author_keys) {
                    Some(opened) => self.to_validate.push(ToValidate {
                        id: message_id,
                        from: propagation_source,
                        topic,
                        opened,
                    }),
                    None => {
                        self.metrics.gossip_rejected.inc();
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .gossip
                            .report_message_validation_result(
                                &message_id,
                                &propagation_source,
                                gossipsub::MessageAcceptance::Reject,
                            );
                    }
                }
            }
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => {
                let result = match result {
                    Ok(id) => self
                        .connection_addrs
                        .get(&id)
                        .cloned()
                        .ok_or_else(|| "the direct connection closed at once".to_owned()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(error) = &result {
                    tracing::debug!(peer = %remote_peer_id, %error, "hole punch failed");
                }
                emit(
                    &self.events,
                    Event::HolePunch {
                        peer: remote_peer_id,
                        result,
                    },
                )
                .await;
            }
            _ => {}
        }
    }
}
