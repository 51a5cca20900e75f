//! Byzantine-fault-tolerant consensus for agentmesh: PBFT with BLS quorum certificates.
//!
//! This crate owns the protocol, not its IO. A [`Replica`] is a state machine fed messages,
//! client requests and time, returning messages to send and blocks committed; it never reads
//! a clock, opens a socket or draws randomness (see [`Replica`] for how to drive it). What it
//! must remember across crashes goes through the narrow [`Storage`] trait, implemented over
//! any `mesh-store` [`Store`](mesh_store::Store) by [`StoreStorage`].
//!
//! - [`message`]: requests, batches, votes, certificates, view changes and their canonical
//!   bounded encoding;
//! - [`ValidatorSet`]: members, weights (quorum = more than two thirds of the weight) and the
//!   primary of each view;
//! - [`Replica`]: batching, pipelining within watermarks, pre-prepare / prepare / commit with
//!   quorum certificates (commit certificates one BLS aggregate, prepare certificates a list
//!   of Ed25519 signatures; both checked optimistically at quorum, one by one only to find a
//!   bad signer), checkpoints with log truncation, view changes with new-view proofs, state
//!   transfer, client deduplication;
//! - [`reconfig`]: validator-set changes (admission, removal, weights, the admission
//!   puzzle) adopted by a weighted quorum of proposals in committed blocks and applied at a
//!   checkpoint boundary, in a new epoch;
//! - [`admission`]: proof of computation (memory-hard, bound to a DID and an epoch) that a
//!   candidate validator presents;
//! - [`ledger`]: the hash-chained blocks and a light client that verifies a chain from the
//!   genesis validator set.
//!
//! It must never do IO itself, depend on an async runtime, or let a peer's input panic it:
//! every decoder is bounded and every refusal is an error counted in [`Stats`].

#![forbid(unsafe_code)]

pub mod admission;
mod clients;
pub mod config;
pub mod error;
pub mod ledger;
pub mod message;
pub mod reconfig;
pub mod replica;
pub mod scheme;
pub mod storage;
pub mod validators;

pub use config::{Config, RequestAuth};

/// Hash maps and sets keyed by client ids, digests and request keys, on every request's path:
/// foldhash (randomly seeded per process) instead of SipHash, which profiles showed among the
/// top costs of a simulated mesh.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
pub use error::{Error, Result};
pub use ledger::{LightClient, VerifiedLedger, verify_chain, verify_storage};
pub use message::{
    Batch, Certificate, CheckpointCert, CommittedBlock, Limits, Message, Request, RequestKind,
    Signatures,
};
pub use reconfig::{Change, Genesis, Governance};
pub use replica::{Keys, Output, Replica, Stats, Submitted};
pub use scheme::{BlsScheme, Scheme, VoteSig};
pub use storage::{Storage, StoreStorage};
#[cfg(test)]
pub(crate) use validators::test_member;
pub use validators::{MAX_WEIGHT, Validator, ValidatorSet};
