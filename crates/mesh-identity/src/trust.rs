//! Trust scores with bounded updates.
//!
//! A score is an integer in parts per million (0 to 1,000,000), so every peer computes the
//! same value from the same observations: it can feed consensus weights. Each observation
//! moves the score a bounded step; time pulls it back toward neutral.

use std::time::Duration;

/// The most a score can be.
pub const MAX: u32 = 1_000_000;
/// The starting score of an unknown peer.
pub const NEUTRAL: u32 = 500_000;

/// What was observed about a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It behaved correctly (a valid vote, a useful update, a timely reply).
    Good,
    /// It failed without proof of malice (a timeout, a late message).
    Poor,
    /// It provably misbehaved (an equivocation, a forged signature, a poisoned update).
    Byzantine,
}

/// round(2^32 * 2^(-1/2^k)) for k = 1..=16.
const HALF_POWERS_Q32: [u64; 16] = [
    3037000500, 3611622603, 3938502376, 4112874773, 4202935003, 4248701965, 4271771996, 4283353945,
    4289156690, 4292061010, 4293513907, 4294240540, 4294603903, 4294785595, 4294876445, 4294921870,
];

/// How observations move a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustConfig {
    /// Fraction (ppm) of the distance to [`MAX`] gained on a good outcome.
    pub gain_ppm: u32,
    /// Fraction (ppm) of the score lost on a poor outcome.
    pub loss_ppm: u32,
    /// Fraction (ppm) of the score lost on a Byzantine outcome.
    pub penalty_ppm: u32,
    /// The largest change one observation may make (ppm of [`MAX`]).
    pub max_step: u32,
    /// Time for half of the distance to [`NEUTRAL`] to decay.
    pub half_life: Duration,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            gain_ppm: 20_000,
            loss_ppm: 50_000,
            penalty_ppm: 500_000,
            max_step: 250_000,
            half_life: Duration::from_secs(24 * 3600),
        }
    }
}

/// A trust score in parts per million.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustScore(u32);

impl Default for TrustScore {
    fn default() -> Self {
        Self(NEUTRAL)
    }
}

fn ppm_of(value: u32, ppm: u32) -> u32 {
    ((u64::from(value) * u64::from(ppm.min(MAX))) / u64::from(MAX)) as u32
}

impl TrustScore {
    /// A score, clamped to `0..=MAX`.
    pub fn new(ppm: u32) -> Self {
        Self(ppm.min(MAX))
    }

    /// The score in ppm.
    pub fn ppm(self) -> u32 {
        self.0
    }

    /// The score as a fraction in `[0, 1]`.
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / f64::from(MAX)
    }

    /// The score after `outcome`; the change is at most `config.max_step`.
    #[must_use]
    pub fn observe(self, outcome: Outcome, config: &TrustConfig) -> Self {
        let step = match outcome {
            Outcome::Good => ppm_of(MAX - self.0, config.gain_ppm),
            Outcome::Poor => ppm_of(self.0, config.loss_ppm),
            Outcome::Byzantine => ppm_of(self.0, config.penalty_ppm),
        }
        .min(config.max_step);
        match outcome {
            Outcome::Good => Self((self.0 + step).min(MAX)),
            Outcome::Poor | Outcome::Byzantine => Self(self.0.saturating_sub(step)),
        }
    }

    /// The score after `elapsed` of decay toward [`NEUTRAL`]: the distance to neutral halves
    /// every `half_life`. Integer arithmetic only, so every peer computes the same value.
    #[must_use]
    pub fn decay(self, elapsed: Duration, config: &TrustConfig) -> Self {
        let half_life = config.half_life.as_millis();
        if half_life == 0 {
            return Self(NEUTRAL);
        }
        // Half-lives elapsed, in Q16 fixed point.
        let q = (elapsed.as_millis().min(u128::from(u64::MAX)) << 16) / half_life;
        let whole = q >> 16;
        if whole >= 32 {
            return Self(NEUTRAL);
        }
        let frac = (q & 0xffff) as u32;
        // keep = 2^-(frac / 2^16), as a product of 2^-(2^-k) for each set bit, in Q32.
        let mut keep: u64 = 1 << 32;
        for (k, c) in HALF_POWERS_Q32.iter().enumerate() {
            if frac & (1 << (15 - k)) != 0 {
                keep = (keep * c) >> 32;
            }
        }
        let dist = u64::from(self.0.abs_diff(NEUTRAL));
        let kept = (((dist * keep) >> 32) >> whole) as u32;
        if self.0 >= NEUTRAL {
            Self(NEUTRAL + kept)
        } else {
            Self(NEUTRAL - kept)
        }
    }

    /// A consensus weight in `1..=max_weight`, proportional to the score (a peer at zero
    /// trust still counts once: weights are bounded, never removed, by trust).
    pub fn weight(self, max_weight: u32) -> u32 {
        let max_weight = max_weight.max(1);
        (ppm_of(max_weight, self.0)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_bounded_and_monotone() {
        let cfg = TrustConfig::default();
        let mut s = TrustScore::default();
        for _ in 0..1000 {
            let next = s.observe(Outcome::Good, &cfg);
            assert!(next >= s && next.ppm() - s.ppm() <= cfg.max_step);
            s = next;
        }
        assert!(s.ppm() > 990_000 && s.ppm() <= MAX);
        let hit = s.observe(Outcome::Byzantine, &cfg);
        assert_eq!(
            s.ppm() - hit.ppm(),
            cfg.max_step,
            "a penalty is capped at max_step"
        );
        assert!(TrustScore::new(0).observe(Outcome::Poor, &cfg).ppm() == 0);
        assert_eq!(TrustScore::new(u32::MAX).ppm(), MAX);
    }

    #[test]
    fn decay_and_weights() {
        let cfg = TrustConfig::default();
        let high = TrustScore::new(900_000);
        assert_eq!(high.decay(cfg.half_life, &cfg).ppm(), 700_000);
        assert_eq!(high.decay(Duration::ZERO, &cfg), high);
        assert_eq!(
            TrustScore::new(100_000).decay(cfg.half_life, &cfg).ppm(),
            300_000
        );
        // Half a half-life keeps 1/sqrt(2) of the distance: 400,000 -> 282,842.
        assert_eq!(high.decay(cfg.half_life / 2, &cfg).ppm(), 500_000 + 282_842);
        assert_eq!(high.decay(cfg.half_life * 40, &cfg).ppm(), NEUTRAL);
        assert_eq!(high.decay(Duration::MAX, &cfg).ppm(), NEUTRAL);
        assert_eq!(TrustScore::new(MAX).weight(10), 10);
        assert_eq!(TrustScore::new(0).weight(10), 1);
        assert_eq!(TrustScore::new(NEUTRAL).weight(10), 5);
    }
}
