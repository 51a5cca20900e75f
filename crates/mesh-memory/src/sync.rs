//! Memory sync between peers: delta-state CRDTs in shared namespaces, signed by their
//! writers, converging under any delivery order. Sans IO: nothing here touches a socket or
//! a clock; the node driver will carry the messages on mesh-transport (not wired yet).
//!
//! # Model
//!
//! A [`Namespace`] is a shared memory named by its owner (an Ed25519 key, the key of the
//! owner's `did:key`) and a name. It replicates three CRDTs ([`crdt`]):
//!
//! - graph facts ([`Fact`]: entity and relation assertions) in an add-wins observed-remove
//!   set ([`OrSet`]);
//! - episodes ([`NewEpisode`](crate::NewEpisode)) in grow-only logs per writer
//!   ([`AppendLog`]), identified by `(writer, seq)`;
//! - attributes ([`AttributeKey`] → value) in last-writer-wins registers ([`LwwMap`]),
//!   ordered by wall-clock time, then writer id, then value.
//!
//! The owner writes; it may [`grant`](SyncNode::grant) peers [`Access::Read`] (they receive
//! the namespace) or [`Access::Write`]. Grants are deltas signed by the owner, replicated
//! like the rest; the owner's latest grant for a peer decides, and a revocation names the
//! last of the peer's deltas that stays valid, so every replica withdraws the same ones
//! whatever order it learnt things in.
//!
//! # Deltas and their checks
//!
//! Each local change is one [`SignedDelta`]: the namespace, the writer, the writer's
//! sequence number in the namespace (1, 2, 3, ...), the CRDT delta its mutator returned,
//! and the writer's Ed25519 signature over a domain-tagged encoding. Deltas are relayed
//! unchanged, so a replica checks the writer's signature whoever delivered it. A replica
//! refuses, with a typed [`Error`](crate::Error):
//!
//! - bytes that do not decode, within bounds: [`Error::Malformed`](crate::Error::Malformed),
//!   [`Error::TooLong`](crate::Error::TooLong);
//! - a namespace it does not subscribe to, or a digest from a peer the owner has not granted
//!   access: [`Error::NotShared`](crate::Error::NotShared);
//! - a writer that is neither the owner nor granted write access (a stranger):
//!   [`Error::Stranger`](crate::Error::Stranger); a grant not signed by the owner:
//!   [`Error::NotOwner`](crate::Error::NotOwner);
//! - a signature that does not verify: [`Error::BadSignature`](crate::Error::BadSignature);
//! - a second, different delta under a `(writer, seq)` it holds:
//!   [`Error::Equivocation`](crate::Error::Equivocation).
//!
//! Receiving a delta it holds again does nothing (replays are idempotent).
//!
//! # Anti-entropy
//!
//! Local writes are pushed to the namespace's members at once. Pushes may be lost, so every
//! [`tick`](SyncNode::tick) interval a replica sends one member (in turn) a digest: the
//! version vector of the deltas it holds (per writer, a contiguous prefix and the numbers
//! beyond it). The receiver answers with the deltas the digest lacks (the owner's first, so
//! grants arrive before the deltas they allow) and, if the digest shows deltas the receiver
//! lacks, its own digest. After a partition heals, rounds repair both sides.
//!
//! A node persists its replicas through `mesh_store` with [`SyncNode::save`] (after each
//! call, before sending) and restores them with [`SyncNode::load`], which re-verifies every
//! delta.
//!
//! Signatures use two small traits, [`Signer`] and [`Verifier`], which the node implements
//! over its `mesh_identity::Identity` and `mesh_crypto`'s Ed25519 verification: this crate
//! does not depend on the crypto stack (see the crate README for why).

pub mod crdt;
mod delta;
mod node;

pub use crdt::{AppendLog, CausalContext, Dot, LwwMap, OrSet, Stamp};
pub use delta::{
    Access, AttributeKey, Fact, Grant, MAX_CLOUD, MAX_CLOUD_TOTAL, MAX_DELTA_BYTES,
    MAX_DELTAS_PER_MESSAGE, MAX_DOTS, MAX_ITEMS, MAX_MESSAGE_BYTES, MAX_SUBJECT_BYTES, MAX_WRITERS,
    Message, Namespace, Payload, SIGNATURE_LEN, SignedDelta, Signer, Verifier,
};
pub use node::{Config, Output, Receipt, Replica, Stats, SyncNode, Write};
