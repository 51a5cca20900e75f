//! Retry delays: capped exponential backoff with jitter (the variants compared in Marc
//! Brooker's "Exponential Backoff And Jitter", AWS Architecture Blog, 2015).
//!
//! With `base` `b`, `cap` `c` and attempt `n` (0 for the first retry), `exp = min(c, b *
//! 2^n)` and the delay is:
//!
//! - with [`Jitter::None`], `exp`;
//! - with [`Jitter::Full`], uniform in `[0, exp]` (spreads retries the most; the default);
//! - with [`Jitter::Equal`], `exp / 2` plus uniform in `[0, exp / 2]`;
//! - with [`Jitter::Decorrelated`], `min(c, uniform in [b, 3 * previous delay])`, starting from
//!   `previous = b`.
//!
//! Sans-IO: the caller passes the randomness ([`Random`]) and adds the delay to its own
//! `now`; nothing sleeps here.
//!
//! ```
//! use std::time::Duration;
//! use mesh_fault::backoff::{Backoff, Config};
//! use mesh_fault::rng::SplitMix64;
//!
//! let mut rng = SplitMix64::new(1);
//! let mut retry = Backoff::new(Config { max_attempts: Some(3), ..Config::default() }).unwrap();
//! let mut total = Duration::ZERO;
//! while let Some(delay) = retry.next_delay(&mut rng) {
//!     total += delay; // a driver would sleep `delay`, then try again
//! }
//! assert_eq!(retry.attempts(), 3);
//! assert!(total <= Duration::from_millis(100 + 200 + 400));
//! ```

use std::time::Duration;

use mesh_types::Instant;

use crate::error::{Result, setting};
use crate::rng::Random;

/// How the delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// No randomness: the plain capped exponential.
    None,
    /// Uniform between zero and the capped exponential.
    #[default]
    Full,
    /// Half the capped exponential plus uniform up to the other half.
    Equal,
    /// Uniform between the base and three times the previous delay, capped.
    Decorrelated,
}

/// Settings of a [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The first delay's scale. Default 100 ms.
    pub base: Duration,
    /// The largest delay. Default 30 s.
    pub cap: Duration,
    /// Retries allowed before giving up (`None`: no limit). Default `Some(8)`.
    pub max_attempts: Option<u32>,
    /// The randomisation. Default [`Jitter::Full`].
    pub jitter: Jitter,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(30),
            max_attempts: Some(8),
            jitter: Jitter::Full,
        }
    }
}

/// The retry schedule of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    config: Config,
    attempts: u32,
    previous: Duration,
}

impl Backoff {
    /// A schedule that has made no retry yet.
    pub fn new(config: Config) -> Result<Self> {
        if config.base.is_zero() {
            return Err(setting("base", "must be above zero"));
        }
        if config.cap < config.base {
            return Err(setting(
                "cap",
                format!("{:?} is below base {:?}", config.cap, config.base),
            ));
        }
        Ok(Self {
            config,
            attempts: 0,
            previous: config.base,
        })
    }

    /// Retries handed out so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The delay before the next retry, or `None` once `max_attempts` retries were made.
    pub fn next_delay(&mut self, rng: &mut impl Random) -> Option<Duration> {
        if self.config.max_attempts.is_some_and(|m| self.attempts >= m) {
            return None;
        }
        let (base, cap) = (nanos(self.config.base), nanos(self.config.cap));
        let exp = base
            .checked_shl(self.attempts.min(63))
            .filter(|e| e >> self.attempts.min(63) == base)
            .map_or(cap, |e| e.min(cap));
        let delay = match self.config.jitter {
            Jitter::None => exp,
            Jitter::Full => uniform(rng, 0, exp),
            Jitter::Equal => exp / 2 + uniform(rng, 0, exp - exp / 2),
            Jitter::Decorrelated => {
                let high = nanos(self.previous).saturating_mul(3).max(base);
                uniform(rng, base, high).min(cap)
            }
        };
        self.attempts = self.attempts.saturating_add(1);
        self.previous = Duration::from_nanos(delay);
        Some(self.previous)
    }

    /// When to retry, `now` plus [`Backoff::next_delay`].
    pub fn next_retry(&mut self, now: Instant, rng: &mut impl Random) -> Option<Instant> {
        self.next_delay(rng).map(|d| now + d)
    }

    /// Starts over (after a success).
    pub fn reset(&mut self) {
        self.attempts = 0;
        self.previous = self.config.base;
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Uniform in `[low, high]` (both inclusive; `low` if `high <= low`).
fn uniform(rng: &mut impl Random, low: u64, high: u64) -> u64 {
    if high <= low {
        return low;
    }
    low + rng.below((high - low).saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    fn schedule(jitter: Jitter, attempts: u32, seed: u64) -> Vec<Duration> {
        let mut b = Backoff::new(Config {
            base: ms(100),
            cap: ms(10_000),
            max_attempts: Some(attempts),
            jitter,
        })
        .unwrap();
        let mut rng = SplitMix64::new(seed);
        std::iter::from_fn(|| b.next_delay(&mut rng)).collect()
    }

    #[test]
    fn without_jitter_the_delay_doubles_up_to_the_cap() {
        let d = schedule(Jitter::None, 10, 1);
        let expected: Vec<Duration> = [
            100, 200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000, 10_000,
        ]
        .into_iter()
        .map(ms)
        .collect();
        assert_eq!(d, expected);
    }

    #[test]
    fn jittered_delays_stay_within_their_ranges() {
        for seed in 0..20 {
            for (n, d) in schedule(Jitter::Full, 12, seed).into_iter().enumerate() {
                let exp = ms((100u64 << n).min(10_000));
                assert!(d <= exp, "full, attempt {n}: {d:?} > {exp:?}");
            }
            for (n, d) in schedule(Jitter::Equal, 12, seed).into_iter().enumerate() {
                let exp = ms((100u64 << n).min(10_000));
                assert!(d >= exp / 2 && d <= exp, "equal, attempt {n}: {d:?}");
            }
            let dec = schedule(Jitter::Decorrelated, 30, seed);
            for w in dec.windows(2) {
                assert!(w[1] >= ms(100) && w[1] <= ms(10_000));
                assert!(w[1] <= (w[0] * 3).max(ms(100)));
            }
        }
    }

    #[test]
    fn full_jitter_spreads_retries_over_the_whole_range() {
        // Many clients retrying their 6th attempt (exp = 3.2 s) spread uniformly: the mean
        // is near 1.6 s and both ends of the range are used.
        let mut rng = SplitMix64::new(3);
        let mut sum = Duration::ZERO;
        let (mut low, mut high) = (0, 0);
        for _ in 0..4_000 {
            let mut b = Backoff::new(Config {
                max_attempts: None,
                ..Config::default()
            })
            .unwrap();
            let d = (0..6)
                .filter_map(|_| b.next_delay(&mut rng))
                .last()
                .unwrap();
            sum += d;
            low += usize::from(d < ms(320));
            high += usize::from(d > ms(2_880));
        }
        let mean = sum / 4_000;
        assert!(mean > ms(1_500) && mean < ms(1_700), "{mean:?}");
        assert!(low > 300 && high > 300, "{low} {high}");
    }

    #[test]
    fn attempts_are_limited_reset_and_reproducible() {
        assert_eq!(schedule(Jitter::Full, 5, 9).len(), 5);
        assert_eq!(schedule(Jitter::Full, 5, 9), schedule(Jitter::Full, 5, 9));
        assert_ne!(schedule(Jitter::Full, 5, 9), schedule(Jitter::Full, 5, 10));
        let mut b = Backoff::new(Config {
            max_attempts: Some(2),
            jitter: Jitter::None,
            ..Config::default()
        })
        .unwrap();
        let mut rng = SplitMix64::new(1);
        let now = Instant::from_millis(1_000);
        assert_eq!(
            b.next_retry(now, &mut rng),
            Some(Instant::from_millis(1_100))
        );
        assert_eq!(b.next_delay(&mut rng), Some(ms(200)));
        assert_eq!(b.next_delay(&mut rng), None);
        b.reset();
        assert_eq!(b.next_delay(&mut rng), Some(ms(100)));
        // Unlimited attempts never overflow past the cap.
        let mut forever = Backoff::new(Config {
            max_attempts: None,
            jitter: Jitter::None,
            ..Config::default()
        })
        .unwrap();
        let last = (0..200).filter_map(|_| forever.next_delay(&mut rng)).last();
        assert_eq!(last, Some(Duration::from_secs(30)));
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        assert!(
            Backoff::new(Config {
                base: Duration::ZERO,
                ..Config::default()
            })
            .is_err()
        );
        assert!(
            Backoff::new(Config {
                cap: ms(10),
                ..Config::default()
            })
            .is_err()
        );
    }
}
