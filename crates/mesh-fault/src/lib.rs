//! Fault tolerance for agentmesh, as sans-IO cores: state machines fed observations and
//! time, never reading a clock, drawing their own randomness or touching a socket
//! (issue #9).
//!
//! - [`phi`]: the phi-accrual failure detector (Hayashibara et al., 2004).
//! - [`model`]: a seeded heartbeat link to measure a detector.
//! - [`rng`]: the randomness the caller hands in ([`rng::Random`], [`rng::SplitMix64`]).
//!
//! The crate must never do IO, read a clock or keep global state; it depends only on
//! `mesh-types`.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod breaker;
pub mod error;
pub mod health;
pub mod membership;
pub mod model;
pub mod phi;
pub mod placement;
pub mod rng;

pub use error::{Error, Result};
pub use phi::{PhiAccrual, PhiConfig};
