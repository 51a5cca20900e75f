//! A circuit breaker: stop calling a peer or a component that keeps failing, let a few
//! trial calls through after a pause, and resume when they succeed.
//!
//! ```text
//!            trip rule met                      open_for elapsed
//!   Closed ------------------> Open ------------------------------> HalfOpen
//!     ^                         ^                                     |  |
//!     |                         +------------ a trial fails ----------+  |
//!     +------------------- close_after trials succeed -------------------+
//! ```
//!
//! The trip rule is either a run of consecutive failures or a failure rate over the last
//! calls (with a minimum number of calls). In half-open at most
//! [`Config::half_open_probes`] trial calls are in flight at once.
//!
//! Sans-IO and fed `now`. Call order for each operation: [`Breaker::try_acquire`] (refused:
//! do not call, retry after the returned instant; admitted: a [`Permit`]), then, once the
//! call is over, exactly one of [`Breaker::on_success`] or [`Breaker::on_failure`] with that
//! permit. A permit from before the last state change is stale and its outcome ignored (a
//! slow call admitted while closed does not count as a half-open trial). State changes are
//! returned by those calls and also queued for [`Breaker::poll_transition`] (bounded).
//!
//! ```
//! use std::time::Duration;
//! use mesh_fault::breaker::{Breaker, Config, Trip};
//! use mesh_types::Instant;
//!
//! let t = Instant::from_millis;
//! let mut b = Breaker::new(Config { trip: Trip::Consecutive(2), ..Config::default() }).unwrap();
//! for now in [t(0), t(1)] {
//!     let permit = b.try_acquire(now).unwrap();
//!     b.on_failure(permit, now);
//! }
//! assert!(b.try_acquire(t(2)).is_err()); // open: fail fast
//! assert!(b.try_acquire(t(1 + 30_000)).is_ok()); // half-open: one trial goes through
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use mesh_types::Instant;

use crate::error::{Result, setting};

/// When the breaker opens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trip {
    /// After this many failures in a row.
    Consecutive(u32),
    /// When at least `ratio` of the last `window` calls failed, counted once `min_calls`
    /// calls were recorded.
    Rate {
        /// Failure fraction that trips, in `(0, 1]`.
        ratio: f64,
        /// Calls remembered (at most 10,000).
        window: u32,
        /// Calls needed before the rate counts.
        min_calls: u32,
    },
}

/// Settings of a [`Breaker`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// When to open. Default: 5 consecutive failures.
    pub trip: Trip,
    /// How long it stays open before trial calls. Default 30 s.
    pub open_for: Duration,
    /// Trial calls in flight at once in half-open. Default 1.
    pub half_open_probes: u32,
    /// Successful trials needed to close. Default 1.
    pub close_after: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            trip: Trip::Consecutive(5),
            open_for: Duration::from_secs(30),
            half_open_probes: 1,
            close_after: 1,
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through.
    Closed,
    /// Calls are refused until `until`.
    Open {
        /// When trial calls may start.
        until: Instant,
    },
    /// A few trial calls go through.
    HalfOpen,
}

/// A change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// When.
    pub at: Instant,
}

/// Admission of one call; hand it back with its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "report the call's outcome with on_success or on_failure"]
pub struct Permit {
    epoch: u64,
}

/// A call refused by an open (or busy half-open) breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open: retry at {retry_at:?}")]
pub struct Rejected {
    /// When a call may be admitted again (at the earliest).
    pub retry_at: Instant,
}

const MAX_WINDOW: u32 = 10_000;
const MAX_TRANSITIONS: usize = 64;

/// One circuit breaker (per peer, per endpoint, per component).
#[derive(Debug, Clone)]
pub struct Breaker {
    config: Config,
    state: State,
    /// Recent outcomes in closed state, `true` for a failure (rate rule only).
    outcomes: VecDeque<bool>,
    failures_in_window: u32,
    consecutive: u32,
    in_flight: u32,
    trial_successes: u32,
    /// Bumped at every state change; permits of older epochs are stale.
    epoch: u64,
    transitions: VecDeque<Transition>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: Config) -> Result<Self> {
        match config.trip {
            Trip::Consecutive(0) => return Err(setting("trip", "at least one failure")),
            Trip::Rate {
                ratio,
                window,
                min_calls,
            } => {
                if !(ratio > 0.0 && ratio <= 1.0) {
                    return Err(setting("trip", format!("ratio {ratio} outside (0, 1]")));
                }
                if !(1..=MAX_WINDOW).contains(&window) || min_calls == 0 || min_calls > window {
                    return Err(setting(
                        "trip",
                        format!(
                            "window {window} (1..={MAX_WINDOW}) and min_calls {min_calls} (1..=window)"
                        ),
                    ));
                }
            }
            Trip::Consecutive(_) => {}
        }
        if config.half_open_probes == 0 || config.close_after == 0 {
            return Err(setting(
                "half_open_probes",
                "half_open_probes and close_after must be above zero",
            ));
        }
        Ok(Self {
            config,
            state: State::Closed,
            outcomes: VecDeque::new(),
            failures_in_window: 0,
            consecutive: 0,
            in_flight: 0,
            trial_successes: 0,
            epoch: 0,
            transitions: VecDeque::new(),
        })
    }

    /// The state at `now` (an open breaker whose time is up reports half-open).
    pub fn state(&self, now: Instant) -> State {
        match self.state {
            State::Open { until } if now >= until => State::HalfOpen,
            s => s,
        }
    }

    /// Asks to make a call at `now`.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, Rejected> {
        if let State::Open { until } = self.state {
            if now < until {
                return Err(Rejected { retry_at: until });
            }
            self.go(State::HalfOpen, now);
        }
        match self.state {
            State::HalfOpen if self.in_flight >= self.config.half_open_probes => {
                // Busy with trials: a caller should come back after one ends.
                Err(Rejected { retry_at: now })
            }
            _ => {
                self.in_flight = self.in_flight.saturating_add(1);
                Ok(Permit { epoch: self.epoch })
            }
        }
    }

    /// Reports that an admitted call succeeded.
    pub fn on_success(&mut self, permit: Permit, now: Instant) -> Option<Transition> {
        if permit.epoch != self.epoch {
            return None;
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        match self.state {
            State::Closed => {
                self.consecutive = 0;
                self.record(false);
                None
            }
            State::HalfOpen => {
                self.trial_successes += 1;
                (self.trial_successes >= self.config.close_after)
                    .then(|| self.go(State::Closed, now))
            }
            // Unreachable with a current permit: opening starts a new epoch.
            State::Open { .. } => None,
        }
    }

    /// Reports that an admitted call failed.
    pub fn on_failure(&mut self, permit: Permit, now: Instant) -> Option<Transition> {
        if permit.epoch != self.epoch {
            return None;
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        match self.state {
            State::Closed => {
                self.consecutive = self.consecutive.saturating_add(1);
                self.record(true);
                self.tripped().then(|| self.open(now))
            }
            State::HalfOpen => Some(self.open(now)),
            State::Open { .. } => None,
        }
    }

    /// The next state change not yet polled (the last 64 are kept).
    pub fn poll_transition(&mut self) -> Option<Transition> {
        self.transitions.pop_front()
    }

    fn record(&mut self, failed: bool) {
        let Trip::Rate { window, .. } = self.config.trip else {
            return;
        };
        if self.outcomes.len() >= window as usize
            && let Some(old) = self.outcomes.pop_front()
        {
            self.failures_in_window = self.failures_in_window.saturating_sub(u32::from(old));
        }
        self.outcomes.push_back(failed);
        self.failures_in_window += u32::from(failed);
    }

    fn tripped(&self) -> bool {
        match self.config.trip {
            Trip::Consecutive(n) => self.consecutive >= n,
            Trip::Rate {
                ratio, min_calls, ..
            } => {
                let calls = self.outcomes.len() as u32;
                calls >= min_calls && f64::from(self.failures_in_window) >= ratio * f64::from(calls)
            }
        }
    }

    fn open(&mut self, now: Instant) -> Transition {
        self.go(
            State::Open {
                until: now + self.config.open_for,
            },
            now,
        )
    }

    fn go(&mut self, to: State, now: Instant) -> Transition {
        let t = Transition {
            from: self.state,
            to,
            at: now,
        };
        self.state = to;
        self.trial_successes = 0;
        self.epoch = self.epoch.wrapping_add(1);
        self.in_flight = 0;
        if to == State::Closed || matches!(to, State::Open { .. }) {
            // A fresh start: the window and the run of failures begin again.
            self.outcomes.clear();
            self.failures_in_window = 0;
            self.consecutive = 0;
        }
        if self.transitions.len() >= MAX_TRANSITIONS {
            self.transitions.pop_front();
        }
        self.transitions.push_back(t);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn call(b: &mut Breaker, now: Instant, ok: bool) -> Option<Transition> {
        let p = b.try_acquire(now).ok()?;
        if ok {
            b.on_success(p, now)
        } else {
            b.on_failure(p, now)
        }
    }

    #[test]
    fn consecutive_failures_open_then_a_trial_closes() {
        let mut b = Breaker::new(Config {
            trip: Trip::Consecutive(3),
            open_for: Duration::from_secs(10),
            ..Config::default()
        })
        .unwrap();
        // Interleaved successes reset the run.
        for (i, ok) in [false, false, true, false, false].into_iter().enumerate() {
            assert_eq!(call(&mut b, t(i as u64), ok), None);
        }
        let opened = call(&mut b, t(5), false).unwrap();
        assert_eq!(opened.to, State::Open { until: t(10_005) });
        assert_eq!(
            b.try_acquire(t(6)),
            Err(Rejected {
                retry_at: t(10_005)
            })
        );
        assert_eq!(b.state(t(10_005)), State::HalfOpen);
        // Half-open: one trial at a time.
        let trial = b.try_acquire(t(10_005)).unwrap();
        assert!(b.try_acquire(t(10_006)).is_err());
        let closed = b.on_success(trial, t(10_007)).unwrap();
        assert_eq!((closed.from, closed.to), (State::HalfOpen, State::Closed));
        let seen: Vec<State> = std::iter::from_fn(|| b.poll_transition())
            .map(|x| x.to)
            .collect();
        assert_eq!(
            seen,
            vec![
                State::Open { until: t(10_005) },
                State::HalfOpen,
                State::Closed
            ]
        );
    }

    #[test]
    fn a_failed_trial_opens_again() {
        let mut b = Breaker::new(Config {
            trip: Trip::Consecutive(1),
            open_for: Duration::from_secs(1),
            half_open_probes: 2,
            close_after: 2,
        })
        .unwrap();
        let slow = b.try_acquire(t(0)).unwrap();
        call(&mut b, t(0), false);
        let first = b.try_acquire(t(1_000)).unwrap();
        // The slow call admitted while closed reports now: stale, not a trial.
        assert_eq!(b.on_success(slow, t(1_000)), None);
        let second = b.try_acquire(t(1_000)).unwrap();
        assert!(b.try_acquire(t(1_000)).is_err(), "two trials at most");
        assert_eq!(
            b.on_success(first, t(1_001)),
            None,
            "one success of the two needed"
        );
        let reopened = b.on_failure(second, t(1_002)).unwrap();
        assert_eq!(reopened.to, State::Open { until: t(2_002) });
        assert!(b.try_acquire(t(1_500)).is_err());
    }

    #[test]
    fn the_rate_rule_waits_for_enough_calls_and_forgets_old_ones() {
        let mut b = Breaker::new(Config {
            trip: Trip::Rate {
                ratio: 0.5,
                window: 10,
                min_calls: 6,
            },
            ..Config::default()
        })
        .unwrap();
        // 4 failures of 5 calls: below min_calls.
        for ok in [false, false, true, false, false] {
            assert_eq!(call(&mut b, t(0), ok), None);
        }
        // Many successes push the failures out of the window.
        for _ in 0..10 {
            assert_eq!(call(&mut b, t(1), true), None);
        }
        for _ in 0..4 {
            assert_eq!(call(&mut b, t(2), false), None);
        }
        // 5 failures in the last 10 calls: 50%.
        assert!(call(&mut b, t(3), false).is_some());
        assert!(matches!(b.state(t(3)), State::Open { .. }));
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        for trip in [
            Trip::Consecutive(0),
            Trip::Rate {
                ratio: 0.0,
                window: 10,
                min_calls: 1,
            },
            Trip::Rate {
                ratio: f64::NAN,
                window: 10,
                min_calls: 1,
            },
            Trip::Rate {
                ratio: 0.5,
                window: 10,
                min_calls: 11,
            },
        ] {
            assert!(
                Breaker::new(Config {
                    trip,
                    ..Config::default()
                })
                .is_err()
            );
        }
        assert!(
            Breaker::new(Config {
                half_open_probes: 0,
                ..Config::default()
            })
            .is_err()
        );
    }
}
