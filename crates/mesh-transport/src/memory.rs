//! An in-memory transport with the same [`Transport`] handle and [`Event`]s as the libp2p one,
//! for simulations and protocol tests: nodes live in one process and talk through a
//! [`MemoryNetwork`] that can delay, lose, duplicate and reorder messages and partition nodes.
//!
//! Deterministic under a seed: every random choice comes from the network's seeded generator,
//! in the order commands arrive. Run it on a current-thread tokio runtime with paused time
//! (`tokio::time::pause`, or `#[tokio::test(start_paused = true)]`) and the same seed gives the
//! same trace.
//!
//! Not for production: nothing leaves the process, and there is no encryption.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::node::{Command, Config, Event, InboundRequest, Transport};
use crate::{Multiaddr, PeerId};

/// Faults the network injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Faults {
    /// Shortest one-way delay.
    pub min_delay: Duration,
    /// Longest one-way delay (delays are uniform in between, so messages reorder).
    pub max_delay: Duration,
    /// Chance, in parts per million, that a message is lost.
    pub loss_ppm: u32,
    /// Chance, in parts per million, that a gossip message is delivered twice.
    pub duplicate_ppm: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            loss_ppm: 0,
            duplicate_ppm: 0,
        }
    }
}

/// SplitMix64: small, fast, and good enough for fault injection.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && (self.next() % 1_000_000) < u64::from(ppm)
    }

    fn delay(&mut self, min: Duration, max: Duration) -> Duration {
        let span = max.saturating_sub(min).as_nanos() as u64;
        min + Duration::from_nanos(if span == 0 {
            0
        } else {
            self.next() % (span + 1)
        })
    }
}

/// Where a response goes back to.
type Reply = oneshot::Sender<Result<Vec<u8>>>;

struct NodeState {
    index: u64,
    events: mpsc::Sender<Event>,
    served: HashSet<String>,
    topics: HashSet<String>,
    connected: HashSet<PeerId>,
    pending_in: HashMap<u64, (PeerId, Reply)>,
    alive: bool,
    delivered: u64,
    dropped: u64,
}

struct Hub {
    rng: Rng,
    faults: Faults,
    nodes: HashMap<PeerId, NodeState>,
    groups: Option<HashMap<PeerId, usize>>,
    next_index: u64,
    next_token: u64,
}

impl Hub {
    fn reachable(&self, a: &PeerId, b: &PeerId) -> bool {
        let alive = |p: &PeerId| self.nodes.get(p).is_some_and(|n| n.alive);
        let same_side = match &self.groups {
            None => true,
            Some(g) => g.get(a).is_some() && g.get(a) == g.get(b),
        };
        alive(a) && alive(b) && same_side
    }
}

/// The shared medium of in-memory nodes.
#[derive(Clone)]
pub struct MemoryNetwork {
    hub: Arc<Mutex<Hub>>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryNetwork(..)")
    }
}

fn lock(hub: &Mutex<Hub>) -> MutexGuard<'_, Hub> {
    hub.lock().unwrap_or_else(|p| p.into_inner())
}

fn memory_addr(index: u64) -> Multiaddr {
    Multiaddr::empty().with(Protocol::Memory(index))
}

async fn deliver(events: mpsc::Sender<Event>, delay: Duration, event: Event) {
    tokio::time::sleep(delay).await;
    let _ = events.send(event).await;
}

impl MemoryNetwork {
    /// A network whose random choices all derive from `seed`.
    pub fn new(seed: u64, faults: Faults) -> Self {
        Self {
            hub: Arc::new(Mutex::new(Hub {
                rng: Rng(seed),
                faults,
                nodes: HashMap::new(),
                groups: None,
                next_index: 1,
                next_token: 0,
            })),
        }
    }

    /// Changes the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.hub).faults = faults;
    }

    /// Splits the network: nodes talk only within their group; nodes in no group are cut off.
    pub fn partition(&self, groups: &[&[PeerId]]) {
        let mut map = HashMap::new();
        for (i, g) in groups.iter().enumerate() {
            for p in *g {
                map.insert(*p, i);
            }
        }
        lock(&self.hub).groups = Some(map);
    }

    /// Ends any partition.
    pub fn heal(&self) {
        lock(&self.hub).groups = None;
    }

    /// Adds a node with `peer_id` and `config` (its listen addresses are ignored: the node
    /// gets the address `/memory/<n>`; its bootstrap addresses are dialled). Must be called
    /// inside a tokio runtime.
    pub fn add_node(&self, peer_id: PeerId, config: Config) -> (Transport, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(config.command_capacity.max(1));
        let (events_tx, events) = mpsc::channel(config.event_capacity.max(1));
        let index = {
            let mut hub = lock(&self.hub);
            let index = hub.next_index;
            hub.next_index += 1;
            hub.nodes.insert(
                peer_id,
                NodeState {
                    index,
                    events: events_tx.clone(),
                    served: config.protocols.iter().cloned().collect(),
                    topics: HashSet::new(),
                    connected: HashSet::new(),
                    pending_in: HashMap::new(),
                    alive: true,
                    delivered: 0,
                    dropped: 0,
                },
            );
            index
        };
        let transport = Transport::from_channel(
            tx,
            peer_id,
            config.max_message_len,
            config.max_concurrent_requests,
        );
        let driver = MemoryDriver {
            hub: self.hub.clone(),
            me: peer_id,
            index,
            timeout: config.request_timeout,
            commands: rx,
        };
        let bootstrap = config.bootstrap.clone();
        let events_for_start = events_tx;
        tokio::spawn(async move {
            let _ = events_for_start
                .send(Event::Listening {
                    addr: memory_addr(index),
                })
                .await;
            driver.run(bootstrap).await;
        });
        (transport, events)
    }
}

struct MemoryDriver {
    hub: Arc<Mutex<Hub>>,
    me: PeerId,
    index: u64,
    timeout: Duration,
    commands: mpsc::Receiver<Command>,
}

impl MemoryDriver {
    async fn run(mut self, bootstrap: Vec<Multiaddr>) {
        for addr in bootstrap {
            let _ = self.dial(&addr);
        }
        while let Some(cmd) = self.commands.recv().await {
            match cmd {
                Command::Shutdown(reply) => {
                    self.shutdown();
                    let _ = reply.send(());
                    return;
                }
                cmd => self.command(cmd),
            }
        }
        self.shutdown();
    }

    fn shutdown(&self) {
        let mut hub = lock(&self.hub);
        let peers: Vec<PeerId> = match hub.nodes.get_mut(&self.me) {
            Some(n) => {
                n.alive = false;
                n.pending_in.clear();
                n.connected.drain().collect()
            }
            None => Vec::new(),
        };
        for p in peers {
            if let Some(n) = hub.nodes.get_mut(&p) {
                n.connected.remove(&self.me);
                let _ = n.events.try_send(Event::PeerDisconnected { peer: self.me });
            }
        }
    }

    fn dial(&self, addr: &Multiaddr) -> Result<()> {
        let target = addr.iter().find_map(|p| match p {
            Protocol::Memory(i) => Some(i),
            _ => None,
        });
        let mut hub = lock(&self.hub);
        let peer = target.and_then(|i| {
            hub.nodes
                .iter()
                .find(|(_, n)| n.index == i)
                .map(|(p, _)| *p)
        });
        let Some(peer) = peer.filter(|p| *p != self.me && hub.reachable(&self.me, p)) else {
            let error = format!("no reachable in-memory node at {addr}");
            if let Some(n) = hub.nodes.get(&self.me) {
                let _ = n.events.try_send(Event::DialFailed {
                    peer: None,
                    error: error.clone(),
                });
            }
            return Err(Error::Dial {
                target: addr.to_string(),
                detail: error,
            });
        };
        let their_index = hub.nodes.get(&peer).map(|n| n.index).unwrap_or_default();
        for (a, b, idx) in [(self.me, peer, their_index), (peer, self.me, self.index)] {
            if let Some(n) = hub.nodes.get_mut(&a)
                && n.connected.insert(b)
            {
                let _ = n.events.try_send(Event::PeerConnected {
                    peer: b,
                    addr: memory_addr(idx),
                });
            }
        }
        Ok(())
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Listen(_, reply) => {
                let _ = reply.send(Ok(()));
            }
            Command::Dial(addr, reply) => {
                let _ = reply.send(self.dial(&addr));
            }
            Command::Request {
                id,
                peer,
                protocol,
                data,
                reply,
            } => self.request(id, peer, protocol, data, reply),
            Command::Respond { token, result } => {
                let mut hub = lock(&self.hub);
                let entry = hub
                    .nodes
                    .get_mut(&self.me)
                    .and_then(|n| n.pending_in.remove(&token));
                if let Some((from, back)) = entry {
                    let (min, max) = (hub.faults.min_delay, hub.faults.max_delay);
                    let lost = !hub.reachable(&self.me, &from) || {
                        let ppm = hub.faults.loss_ppm;
                        hub.rng.chance(ppm)
                    };
                    let delay = hub.rng.delay(min, max);
                    drop(hub);
                    if !lost {
                        let me = self.me.to_string();
                        let answer = result.map_err(|detail| Error::Refused {
                            peer: me,
                            protocol: String::new(),
                            detail,
                        });
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = back.send(answer);
                        });
                    }
                }
            }
            Command::Subscribe(topic, reply) => {
                if let Some(n) = lock(&self.hub).nodes.get_mut(&self.me) {
                    n.topics.insert(topic);
                }
                let _ = reply.send(Ok(()));
            }
            Command::Publish { topic, data, reply } => {
                let mut hub = lock(&self.hub);
                let subscribers: Vec<PeerId> = {
                    let mut s: Vec<PeerId> = hub
                        .nodes
                        .iter()
                        .filter(|(p, n)| **p != self.me && n.topics.contains(&topic))
                        .map(|(p, _)| *p)
                        .collect();
                    s.sort(); // deterministic order, whatever the map's
                    s
                };
                if subscribers.iter().all(|p| !hub.reachable(&self.me, p)) {
                    drop(hub);
                    let _ = reply.send(Err(Error::Publish {
                        topic,
                        detail: "no reachable subscribers".into(),
                    }));
                    return;
                }
                for p in subscribers {
                    let faults = hub.faults.clone();
                    let reachable = hub.reachable(&self.me, &p);
                    let copies = if hub.rng.chance(faults.duplicate_ppm) {
                        2
                    } else {
                        1
                    };
                    for _ in 0..copies {
                        let lost = !reachable || hub.rng.chance(faults.loss_ppm);
                        let delay = hub.rng.delay(faults.min_delay, faults.max_delay);
                        let Some(n) = hub.nodes.get_mut(&p) else {
                            continue;
                        };
                        if lost {
                            n.dropped += 1;
                            continue;
                        }
                        n.delivered += 1;
                        let event = Event::Message {
                            topic: topic.clone(),
                            source: Some(self.me),
                            data: data.clone(),
                        };
                        tokio::spawn(deliver(n.events.clone(), delay, event));
                    }
                }
                drop(hub);
                let _ = reply.send(Ok(()));
            }
            Command::Bootstrap(reply) => {
                let _ = reply.send(Ok(()));
            }
            Command::AddAddress(..) => {}
            Command::ListenAddrs(reply) => {
                let _ = reply.send(vec![memory_addr(self.index)]);
            }
            Command::ConnectedPeers(reply) => {
                let peers = lock(&self.hub)
                    .nodes
                    .get(&self.me)
                    .map(|n| n.connected.iter().copied().collect())
                    .unwrap_or_default();
                let _ = reply.send(peers);
            }
            Command::Metrics(reply) => {
                let hub = lock(&self.hub);
                let (delivered, dropped) = hub
                    .nodes
                    .get(&self.me)
                    .map(|n| (n.delivered, n.dropped))
                    .unwrap_or_default();
                let _ = reply.send(format!(
                    "# TYPE mesh_memory_received counter\nmesh_memory_received_total {delivered}\n\
                     # TYPE mesh_memory_dropped counter\nmesh_memory_dropped_total {dropped}\n# EOF\n"
                ));
            }
            Command::Shutdown(_) => {}
        }
    }

    fn request(
        &mut self,
        id: u64,
        peer: PeerId,
        protocol: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>>>,
    ) {
        let timeout = self.timeout;
        let fail = |detail: &str| Error::Request {
            id,
            protocol: protocol.clone(),
            peer: peer.to_string(),
            detail: detail.to_owned(),
        };
        let mut hub = lock(&self.hub);
        let served = hub.nodes.get(&peer).map(|n| n.served.contains(&protocol));
        if !hub.reachable(&self.me, &peer) || served.is_none() {
            // Unreachable: the caller learns after its timeout, as on a real network.
            let err = fail("timeout: peer unreachable");
            drop(hub);
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                let _ = reply.send(Err(err));
            });
            return;
        }
        if served == Some(false) {
            let _ = reply.send(Err(Error::UnknownProtocol {
                peer: peer.to_string(),
                protocol,
            }));
            return;
        }
        let faults = hub.faults.clone();
        let lost = hub.rng.chance(faults.loss_ppm);
        let delay = hub.rng.delay(faults.min_delay, faults.max_delay);
        let token = hub.next_token;
        hub.next_token += 1;
        let (back, answer) = oneshot::channel();
        let Some(target) = hub.nodes.get_mut(&peer) else {
            return;
        };
        let events = target.events.clone();
        if lost {
            target.dropped += 1;
        } else {
            target.delivered += 1;
            target.pending_in.insert(token, (self.me, back));
            let event = Event::Request(InboundRequest {
                peer: self.me,
                protocol: protocol.clone(),
                data,
                token,
            });
            tokio::spawn(deliver(events, delay, event));
        }
        drop(hub);
        let timeout_err = fail("timeout: no response");
        tokio::spawn(async move {
            let r = match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(Err(Error::Refused { peer, detail, .. }))) => Err(Error::Refused {
                    peer,
                    protocol,
                    detail,
                }),
                Ok(Ok(r)) => r,
                Ok(Err(_)) | Err(_) => Err(timeout_err),
            };
            let _ = reply.send(r);
        });
    }
}
