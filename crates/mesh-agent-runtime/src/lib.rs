//! Agent messaging for agentmesh: what an agent needs to talk to other agents end to end,
//! without trusting the nodes in between.
//!
//! - [`AgentRecord`]: an agent's signed registration (DID, name, capabilities, addresses,
//!   home node). Nodes commit it through consensus ([`record::LEDGER_TAG`] marks it in the
//!   ledger) and answer lookups from the committed records.
//! - [`Mailbox`]: the agent's Double Ratchet sessions (started by a Noise IK handshake to the
//!   peer's DID), its inbox and outbox, in one key-value tree of `mesh-store`. Messages are
//!   signed envelopes (`mesh_identity::Envelope`) whose content is the ratchet ciphertext;
//!   receiving is exactly-once and crash-safe (see the [`mailbox`] module for the call order
//!   and the argument).
//!
//! The crate does no IO of its own: the node library (`mesh-driver`'s `agent` module) carries
//! hellos, replies and envelopes over `mesh-transport` (with its persistent outbox and
//! acknowledgements) and serves the agent's HTTP API.

#![forbid(unsafe_code)]

mod error;
pub mod mailbox;
pub mod record;

pub use error::{Error, Result};
pub use mailbox::{Counts, Mailbox, Message, Opened, PendingSession, Sealed};
pub use record::AgentRecord;
