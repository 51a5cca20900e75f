//! The agentmesh node library: the event loops that bind protocol cores to the runtime, the
//! transport and the store.
//!
//! Protocol cores (`mesh-consensus`, `mesh-learning`'s round protocol, `mesh-fault`) are state machines
//! without IO. This crate owns the other half: it reads the clock, opens the data directory,
//! runs the tasks, talks to peers through `mesh-transport` and hands results to the
//! application. Binaries (`mesh-node`) parse configuration and call it.
//!
//! - [`consensus`]: one PBFT replica over the transport and a `DiskStore` data directory:
//!   replica-to-replica messages, client submissions (in process and from remote peers),
//!   timers, committed blocks for the application, and redialling the other validators.
//! - [`node`]: a whole node as the `mesh-node` binary runs it: its [`NodeConfig`] (defaults,
//!   `mesh.toml`, environment, flags), its data directory and identity ([`node::init`]), the
//!   genesis file ([`node::genesis`]), and [`node::run`]`(config, shutdown)`: the transport
//!   plus, for a validator of the genesis, the consensus driver, SWIM membership
//!   ([`node::membership`]), the agent registry ([`node::agents`]) and, with the default
//!   feature `learning`, federated runs agreed through consensus (`node::learning`).
//!
//! - [`agent`]: an agent process as the `mesh-agent` binary runs it: its own peer joined
//!   through a node, registration committed through consensus, end-to-end encrypted messages
//!   with other agents (`mesh-agent-runtime`), and its HTTP API.
//!
//! It must never implement protocol logic itself (that belongs in a core, where the simulator
//! can check it), never let a peer's bytes panic it or stop it (only a failing store stops a
//! driver), and never hold an unbounded queue.

#![forbid(unsafe_code)]

pub mod agent;
#[cfg(feature = "cli")]
pub mod cli;
pub mod consensus;
mod error;
pub mod node;

pub use error::{Error, Result};
pub use node::{Config as NodeConfig, NodeHandle, run};
