//! The phi-accrual failure detector.
//!
//! Each heartbeat's arrival time is recorded; the intervals between them (the last
//! [`PhiConfig::window`] of them) give a mean and a standard deviation, and
//!
//! ```text
//! phi(now) = -log10(1 - F(now - last heartbeat))
//! ```
//!
//! where `F` is the normal distribution's CDF with that mean (plus
//! [`PhiConfig::acceptable_pause`]) and that deviation (at least
//! [`PhiConfig::min_std_dev`]). `F` is computed with the logistic approximation Akka and
//! Cassandra use, which keeps `phi` finite and monotonic far into the tail. A peer is
//! suspected once `phi` reaches a threshold (8 is a common choice): the detector adapts the
//! timeout to each link's observed regularity instead of one fixed timeout for all.
//!
//! ```
//! use mesh_fault::{PhiAccrual, PhiConfig};
//! use mesh_types::Instant;
//!
//! let ms = Instant::from_millis;
//! let mut d = PhiAccrual::new(PhiConfig::default()).unwrap();
//! for t in 0..20 {
//!     d.heartbeat(ms(t * 1_000));
//! }
//! assert!(d.phi(ms(19_500)) < 1.0); // half an interval after the last: fine
//! assert!(d.phi(ms(30_000)) > 8.0); // ten intervals of silence: suspected
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use mesh_types::Instant;

use crate::Error;

/// Settings of a [`PhiAccrual`] detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhiConfig {
    /// Intervals remembered (the estimate follows the last this many). Default 100; at most
    /// 10,000.
    pub window: usize,
    /// The smallest standard deviation assumed: a perfectly regular link would otherwise
    /// suspect a peer for the slightest delay. Default 100 ms.
    pub min_std_dev: Duration,
    /// Added to the mean interval: pauses this long (a collection, a busy loop) are not held
    /// against a peer. Default 0.
    pub acceptable_pause: Duration,
    /// The interval assumed before the second heartbeat arrives (with a deviation of a
    /// quarter of it). Default 1 s.
    pub first_interval: Duration,
}

impl Default for PhiConfig {
    fn default() -> Self {
        Self {
            window: 100,
            min_std_dev: Duration::from_millis(100),
            acceptable_pause: Duration::ZERO,
            first_interval: Duration::from_secs(1),
        }
    }
}

/// The most intervals a detector keeps.
pub const MAX_WINDOW: usize = 10_000;

/// A phi-accrual failure detector for one peer. Sans-IO: fed heartbeat arrival times, asked
/// at any time.
#[derive(Debug, Clone)]
pub struct PhiAccrual {
    config: PhiConfig,
    /// Intervals in milliseconds, oldest first, at most `config.window`.
    intervals: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
    last: Option<Instant>,
}

impl PhiAccrual {
    /// A detector that has seen no heartbeat yet.
    pub fn new(config: PhiConfig) -> Result<Self, Error> {
        if !(2..=MAX_WINDOW).contains(&config.window) {
            return Err(Error::Setting {
                name: "window",
                detail: format!("{} (2..={MAX_WINDOW})", config.window),
            });
        }
        if config.first_interval.is_zero() {
            return Err(Error::Setting {
                name: "first_interval",
                detail: "must be above zero".into(),
            });
        }
        if config.min_std_dev.is_zero() {
            return Err(Error::Setting {
                name: "min_std_dev",
                detail: "must be above zero".into(),
            });
        }
        Ok(Self {
            config,
            intervals: VecDeque::with_capacity(config.window),
            sum: 0.0,
            sum_sq: 0.0,
            last: None,
        })
    }

    /// Records a heartbeat that arrived at `now`. A heartbeat at or before the previous one
    /// (a reordered or duplicated delivery) is ignored.
    pub fn heartbeat(&mut self, now: Instant) {
        match self.last {
            None => {
                // Seed the estimate so the second heartbeat's wait is judged sensibly.
                let first = ms(self.config.first_interval);
                self.push(first);
                self.last = Some(now);
            }
            Some(last) if now > last => {
                self.push(ms(now.saturating_since(last)));
                self.last = Some(now);
            }
            Some(_) => {}
        }
    }

    fn push(&mut self, interval: f64) {
        if self.intervals.len() == self.config.window
            && let Some(old) = self.intervals.pop_front()
        {
            self.sum -= old;
            self.sum_sq -= old * old;
        }
        self.intervals.push_back(interval);
        self.sum += interval;
        self.sum_sq += interval * interval;
    }

    /// The last heartbeat's arrival, if any.
    pub fn last_heartbeat(&self) -> Option<Instant> {
        self.last
    }

    /// The suspicion level at `now`: 0 before the first heartbeat and right after one,
    /// growing while none arrives.
    pub fn phi(&self, now: Instant) -> f64 {
        let Some(last) = self.last else {
            return 0.0;
        };
        let elapsed = ms(now.saturating_since(last));
        let n = self.intervals.len() as f64;
        let mean = self.sum / n;
        let variance = (self.sum_sq / n - mean * mean).max(0.0);
        let mut std_dev = variance.sqrt().max(ms(self.config.min_std_dev));
        if self.intervals.len() == 1 {
            std_dev = std_dev.max(mean / 4.0);
        }
        phi_of(elapsed, mean + ms(self.config.acceptable_pause), std_dev)
    }

    /// Whether the peer counts as alive at `now` for `threshold` (phi below it).
    pub fn is_available(&self, now: Instant, threshold: f64) -> bool {
        self.phi(now) < threshold
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `-log10(1 - F(elapsed))` for a normal distribution of `mean` and `std_dev`, with the
/// logistic approximation of its CDF (`1 / (1 + e^(-y (1.5976 + 0.070566 y^2)))`).
fn phi_of(elapsed: f64, mean: f64, std_dev: f64) -> f64 {
    let y = (elapsed - mean) / std_dev;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    let p = if elapsed > mean {
        // 1 - F = e / (1 + e): computed this way it keeps precision deep in the tail.
        e / (1.0 + e)
    } else {
        1.0 - 1.0 / (1.0 + e)
    };
    if p <= 0.0 {
        // Beyond f64's range: as suspicious as can be said.
        return f64::MAX.log10();
    }
    -p.log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_at(t: u64) -> Instant {
        Instant::from_millis(t)
    }

    #[test]
    fn phi_grows_with_silence_and_falls_back_after_a_heartbeat() {
        let mut d = PhiAccrual::new(PhiConfig::default()).unwrap();
        assert_eq!(
            d.phi(ms_at(5_000)),
            0.0,
            "no heartbeat yet: nothing to suspect"
        );
        for t in 0..50 {
            d.heartbeat(ms_at(t * 1_000));
        }
        let mut last = 0.0;
        for wait in (0..10_000).step_by(100) {
            let p = d.phi(ms_at(49_000 + wait));
            assert!(p >= last, "phi must not fall while silent: {p} < {last}");
            last = p;
        }
        assert!(d.phi(ms_at(49_500)) < 0.5);
        assert!(d.phi(ms_at(52_000)) > 8.0);
        d.heartbeat(ms_at(52_100));
        assert!(d.phi(ms_at(52_200)) < 0.5);
    }

    #[test]
    fn a_jittery_link_is_given_more_time_than_a_regular_one() {
        let mut regular = PhiAccrual::new(PhiConfig::default()).unwrap();
        let mut jittery = PhiAccrual::new(PhiConfig::default()).unwrap();
        let (mut t1, mut t2) = (0u64, 0u64);
        for i in 0..100u64 {
            t1 += 1_000;
            t2 += if i % 2 == 0 { 500 } else { 1_500 };
            regular.heartbeat(ms_at(t1));
            jittery.heartbeat(ms_at(t2));
        }
        let after = |d: &PhiAccrual, last: u64| d.phi(ms_at(last + 1_800));
        assert!(after(&regular, t1) > 8.0);
        assert!(after(&jittery, t2) < 2.0);
    }

    #[test]
    fn reordered_heartbeats_are_ignored_and_the_window_is_bounded() {
        let mut d = PhiAccrual::new(PhiConfig {
            window: 10,
            ..PhiConfig::default()
        })
        .unwrap();
        for t in 0..1_000 {
            d.heartbeat(ms_at(t * 200));
        }
        d.heartbeat(ms_at(100)); // late and out of order
        assert_eq!(d.last_heartbeat(), Some(ms_at(999 * 200)));
        assert_eq!(d.intervals.len(), 10);
        // The estimate follows the recent 200 ms rhythm, not the 1 s seed.
        assert!(d.phi(ms_at(999 * 200 + 1_000)) > 8.0);
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        for c in [
            PhiConfig {
                window: 1,
                ..PhiConfig::default()
            },
            PhiConfig {
                window: MAX_WINDOW + 1,
                ..PhiConfig::default()
            },
            PhiConfig {
                first_interval: Duration::ZERO,
                ..PhiConfig::default()
            },
            PhiConfig {
                min_std_dev: Duration::ZERO,
                ..PhiConfig::default()
            },
        ] {
            assert!(matches!(PhiAccrual::new(c), Err(Error::Setting { .. })));
        }
    }

    #[test]
    fn phi_stays_finite_far_into_the_tail() {
        let mut d = PhiAccrual::new(PhiConfig::default()).unwrap();
        d.heartbeat(ms_at(0));
        d.heartbeat(ms_at(1_000));
        let p = d.phi(ms_at(u64::MAX / 2_000_000));
        assert!(p.is_finite() && p > 100.0, "{p}");
    }
}
