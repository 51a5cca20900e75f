//! The shared vocabulary of agentmesh.
//!
//! This crate owns the small types every other crate speaks in:
//!
//! - [`id`]: node ids, content digests, request and message ids;
//! - [`time`]: [`Instant`] (monotonic, supplied by the caller) and [`Timestamp`] (wall clock);
//! - [`ErrorKind`]: the coarse classification every crate's error maps onto;
//! - [`wire`]: the versioned frame every peer-to-peer message travels in, with hard size
//!   limits, plus bounded readers and varints for decoders.
//!
//! It must never do IO, read a clock, draw randomness or depend on another agentmesh crate:
//! it is the bottom layer, usable from protocol cores and embedders alike.

#![forbid(unsafe_code)]

pub mod error;
pub mod id;
pub mod time;
pub mod wire;

pub use error::{ErrorKind, HasKind};
pub use id::{Digest, MessageId, NodeId, ParseIdError, RequestId};
pub use time::{Instant, Timestamp};
