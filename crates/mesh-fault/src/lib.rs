//! Fault tolerance for agentmesh, as sans-IO cores: state machines fed observations, time
//! and randomness by their caller, never reading a clock, drawing randomness of their own
//! or touching a socket (issue #9).
//!
//! | module | what it owns | driven by |
//! |---|---|---|
//! | [`phi`] | the phi-accrual failure detector (Hayashibara et al., 2004) | heartbeat arrivals, `phi(now)` |
//! | [`membership`] | SWIM membership (Das et al., 2002) with Lifeguard's refinements: probes, indirect probes, suspicion, incarnations, signed claims, piggybacked dissemination | `handle_bytes`/`handle_timeout` in, `poll_transmit`/`poll_event`/`poll_timeout` out |
//! | [`placement`] | rendezvous hashing of content onto `k` live holders, repair plans | pure functions of the live set |
//! | [`backoff`] | capped exponential retry delays with full, equal or decorrelated jitter | `next_delay(rng)` |
//! | [`breaker`] | circuit breakers (consecutive or rate trip, open, half-open trials) | `try_acquire(now)`, `on_success`/`on_failure` |
//! | [`health`] | component health and alert rules with `for` durations and hysteresis | `observe`/`handle_timeout` in, `poll_event` out |
//! | [`model`] | a seeded heartbeat link to measure a detector | tests and the bench |
//! | [`rng`] | the randomness handed in ([`rng::Random`], [`rng::SplitMix64`]) | |
//!
//! # Driving the cores from a node
//!
//! The cores keep no timers and do no IO; one task per core (or one task for all) does:
//!
//! ```text
//! loop {
//!     select! {
//!         datagram from peer   => membership.handle_bytes(peer, &bytes, now),
//!         sleep_until(deadline) => { membership.handle_timeout(now); alerts.handle_timeout(now) }
//!     }
//!     while let Some(t) = membership.poll_transmit() { send(t.to, t.message.encode()) }
//!     while let Some(e) = membership.poll_event()    { feed consensus, learning, placement, alerts }
//!     deadline = min(membership.poll_timeout(), alerts.poll_timeout())
//! }
//! ```
//!
//! Membership events give the live set ([`membership::Membership::live_members`]); on each
//! change the driver recomputes [`placement::plan_repair`] for the contents it holds, starts
//! the fetches, and retries failed ones with [`backoff::Backoff`] behind a per-peer
//! [`breaker::Breaker`]. Gauges such as "suspected peers" or "commit rate" go to
//! [`health::Alerts`]. The membership module documents its own call order and its rules
//! against forged claims.
//!
//! The crate must never do IO, read a clock, keep global state or depend on another
//! agentmesh crate than `mesh-types`.

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
