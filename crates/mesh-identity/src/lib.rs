//! Identities of agentmesh.
//!
//! This crate owns who a peer is and what it may do:
//!
//! - [`Did`]: `did:key` for Ed25519 keys, its DID document, and the libp2p PeerId of the same
//!   key ([`did::peer_id_string`]);
//! - [`Identity`]: the Ed25519 and BLS keys of a node or agent, persisted as an encrypted
//!   `identity.json` ([`Protection`]);
//! - [`Envelope`]: the signed agent message envelope, with canonical signing bytes and ttl;
//! - [`KeyRotation`]: key rotation records signed by the old and the new key;
//! - [`rbac`]: roles and signed capability grants, checked by a [`rbac::Policy`];
//! - [`trust`]: trust scores with bounded, deterministic updates;
//! - end-to-end sessions bound to DIDs: [`Identity::key_agreement_secret`] is the X25519 key of
//!   the DID document's `keyAgreement` entry, so a Noise IK handshake to a DID
//!   (`mesh_crypto::ratchet::SessionSetup`) authenticates that DID and nobody else.
//!
//! Every signed statement is encoded canonically with a domain tag, so a signature can never
//! be moved between kinds of statement. Decoders enforce hard limits and return typed errors.
//!
//! This crate must never depend on agentmesh crates other than `mesh-types` and
//! `mesh-crypto`, and never do network IO.

#![forbid(unsafe_code)]

mod canon;
pub mod did;
pub mod envelope;
mod error;
pub mod identity;
pub mod rbac;
pub mod rotation;
pub mod trust;

pub use did::Did;
pub use envelope::{Envelope, Metadata, Priority};
pub use error::{Error, Result};
pub use identity::{Identity, PASSPHRASE_ENV, Protection};
pub use rotation::KeyRotation;
