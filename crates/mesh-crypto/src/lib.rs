//! Cryptographic primitives of agentmesh.
//!
//! This crate owns every primitive the mesh uses, behind small types that validate their
//! input and return typed errors:
//!
//! | module | what | built on |
//! |---|---|---|
//! | [`aead`] | ChaCha20-Poly1305 (RFC 8439) | `ring` |
//! | [`kdf`] | HKDF-SHA256 (RFC 5869), HMAC, SHA-256 | `ring` |
//! | [`x25519`] | X25519 key agreement (RFC 7748), rejecting non-contributory results | `x25519-dalek` |
//! | [`ed25519`] | Ed25519 signatures (RFC 8032), strict verification, batch verification | `ed25519-dalek` |
//! | [`bls`] | BLS12-381 signatures (min-pk, proof of possession), aggregation, signer bitmaps | `bls12_381` |
//! | [`noise`] | Noise XX and IK handshakes and transport | `snow` + the above |
//! | [`ratchet`] | the Signal Double Ratchet, seeded from a Noise IK handshake | the above |
//! | [`sealed`] | passphrase-sealed key files: Argon2id + ChaCha20-Poly1305, versioned | `argon2` + `ring` |
//! | [`slip10`] | SLIP-10 hardened Ed25519 key derivation | `ring` HMAC-SHA512 |
//!
//! Randomness comes from the operating system (`ring`'s `SystemRandom`) in the `generate`
//! constructors; every key type also has a deterministic constructor from bytes, so protocol
//! cores and tests can supply their own seeded material.
//!
//! This crate must never depend on another agentmesh crate except `mesh-types`, never do
//! network IO, and never expose secret bytes except through zeroizing types.

#![forbid(unsafe_code)]

pub mod aead;
pub mod bls;
pub mod ed25519;
mod error;
pub mod kdf;
pub mod noise;
pub mod ratchet;
mod rng;
pub mod sealed;
pub mod slip10;
pub mod x25519;

pub use error::{Error, Result};
pub use rng::random_array;
