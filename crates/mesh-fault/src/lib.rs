//! Fault tolerance for agentmesh, as sans-IO cores: state machines fed observations and
//! time, never reading a clock or touching a socket (issue #9).
//!
//! What exists so far:
//!
//! - [`phi`]: the phi-accrual failure detector (Hayashibara et al., 2004): from the recent
//!   inter-arrival times of a peer's heartbeats it gives a suspicion level `phi` that grows
//!   continuously while heartbeats are missing, instead of a yes/no timeout. `phi = 1` means
//!   a 10% chance the peer is still alive and merely late, `phi = 8` one in 10^8.
//! - [`model`]: a seeded heartbeat link (interval, jitter, loss) to measure a detector's
//!   detection time and false suspicions; `cargo bench -p mesh-fault` sweeps thresholds with
//!   it and writes the curve to `target/fault-detection.csv` and `.png`.
//!
//! Planned here: SWIM-style membership with indirect probes and incarnation numbers, replica
//! placement by rendezvous hashing with repair, retries with jittered backoff and circuit
//! breakers, and component health with alert rules.

#![forbid(unsafe_code)]

pub mod model;
pub mod phi;

pub use phi::{PhiAccrual, PhiConfig};

/// What this crate refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A setting out of its range.
    #[error("invalid setting {name}: {detail}")]
    Setting {
        /// The setting.
        name: &'static str,
        /// Why.
        detail: String,
    },
}
