//! How agentmesh peers reach each other.
//!
//! This crate owns the network: a [`Transport`] handle over a libp2p swarm (TCP with Noise and yamux, QUIC, relay,
//! identify, ping, mDNS, Kademlia, gossipsub, request/response) driven by one task. The rest of
//! the workspace uses three things:
//!
//! - **requests**: [`Transport::request`] sends bytes to a peer on a named application protocol
//!   and returns its answer; requests arrive as [`Event::Request`] and are answered with
//!   [`Transport::respond`]. Unknown protocols are answered for the application
//!   ([`Error::UnknownProtocol`]). Frames have a hard size limit checked before allocation.
//! - **gossip**: [`Transport::subscribe`] and [`Transport::publish`], signed and validated by
//!   gossipsub; messages arrive as [`Event::Message`].
//! - **peer events**: discovered, connected, disconnected, identified, dial failures, and the
//!   outcome of hole punching ([`Event::HolePunch`]).
//!
//! Channels are bounded both ways. Callers wait when the command queue is full. When the event
//! queue is full (the application is not keeping up), the network task never waits on it for
//! the high-volume events: gossip messages are dropped and counted (`mesh_events_dropped`) and
//! requests are refused as busy; rare events (connections, discoveries) wait for room.
//!
//! - **delivery guarantees**: [`Messenger`] over a transport gives message ids,
//!   acknowledgements, retries with backoff, a persistent duplicate filter and a persistent
//!   outbox (in `mesh-store`), so a message to an offline peer arrives when it returns, until
//!   its ttl expires; the logic is a sans-IO core in [`outbox`].
//!
//! - **limits**: a bound on connections (total and per peer), on in-flight requests, on pending
//!   inbound requests, and a per-peer request rate ([`limits`]): a flooding peer is refused
//!   while others are served.
//!
//! - **metrics**: [`Transport::metrics_text`] renders libp2p's metrics (bandwidth, connections,
//!   identify, Kademlia, gossipsub, ping) and ours (`mesh_requests_out`, `mesh_requests_in`,
//!   `mesh_request_seconds`, `mesh_gossip_*`) in the Prometheus text format.
//!
//! - **in memory**: [`memory::MemoryNetwork`] runs nodes with the same handle and events in one
//!   process, with seeded delay, loss, duplication, reordering and partitions, for simulations
//!   and protocol tests.
//!
//! - **NAT traversal**: circuit relay v2 (client always, server with [`Config::relay_server`]),
//!   DCUtR hole punching and AutoNAT. `tests/netns.rs` proves it across Linux network
//!   namespaces: a peer behind a masquerading NAT is reached through a relay, and DCUtR
//!   upgrades the connection to a direct one where the NAT allows it.
//!
//! This crate must never depend on agentmesh crates above identity and store.

#![forbid(unsafe_code)]

pub mod codec;
mod error;
mod gossip;
pub mod limits;
pub mod memory;
mod messenger;
mod metrics;
mod node;
pub mod outbox;
mod rr;

pub use error::{Error, Result};
pub use libp2p::{Multiaddr, PeerId, multiaddr};
pub use messenger::{DELIVER_PROTOCOL, Delivered, MAX_IN_FLIGHT, Messenger};
pub use node::{
    Config, Discovery, Event, IDENTIFY_PROTOCOL, InboundRequest, KAD_PROTOCOL, MAX_PENDING_INBOUND,
    MAX_TOPIC_LEN, Transport, keypair_from_seed, parse_addr,
};
