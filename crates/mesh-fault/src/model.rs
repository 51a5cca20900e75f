//! A seeded model of a heartbeat link, to measure a detector's trade-off between detection
//! time and false suspicions (the tests and the bench use it).
//!
//! Heartbeats leave every [`Link::interval_ms`], each is delayed uniformly by up to
//! [`Link::jitter_ms`] and lost with probability [`Link::loss`]; the detector is asked every
//! [`Link::check_ms`]. The peer lives for a given time, then falls silent.

use std::time::Duration;

use mesh_types::Instant;

use crate::{PhiAccrual, PhiConfig};

/// The link's behaviour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Time between heartbeats sent.
    pub interval_ms: u64,
    /// Largest extra delay of a heartbeat (uniform from 0).
    pub jitter_ms: u64,
    /// Probability that a heartbeat is lost.
    pub loss: f64,
    /// How often the detector is asked.
    pub check_ms: u64,
}

impl Default for Link {
    /// Heartbeats every 500 ms, 0-100 ms jitter, 1% loss, checked every 10 ms.
    fn default() -> Self {
        Self {
            interval_ms: 500,
            jitter_ms: 100,
            loss: 0.01,
            check_ms: 10,
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Times the live peer became suspected (each episode counted once).
    pub false_suspicions: u32,
    /// From the crash to the first suspicion, in ms (`None`: not within a minute).
    pub detection_ms: Option<u64>,
}

/// Runs one peer that lives `alive` and then crashes, judged by a detector with `config` at
/// `threshold`; the same `seed` gives the same run.
pub fn run(link: Link, config: PhiConfig, threshold: f64, seed: u64, alive: Duration) -> Outcome {
    let alive_ms = u64::try_from(alive.as_millis()).unwrap_or(u64::MAX / 2);
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next_random = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let interval = link.interval_ms.max(1);
    let mut beats: Vec<u64> = (0..alive_ms / interval)
        .filter_map(|i| {
            let jitter = next_random() % (link.jitter_ms + 1);
            let lost = ((next_random() >> 11) as f64 / (1u64 << 53) as f64) < link.loss;
            (!lost).then_some(i * interval + jitter)
        })
        .collect();
    beats.sort_unstable();
    let Ok(mut d) = PhiAccrual::new(config) else {
        return Outcome {
            false_suspicions: 0,
            detection_ms: None,
        };
    };
    let (mut next, mut suspected, mut false_suspicions) = (0, false, 0);
    let step = link.check_ms.max(1);
    let mut now = 0;
    while now < alive_ms.saturating_add(60_000) {
        while next < beats.len() && beats[next] <= now {
            d.heartbeat(Instant::from_millis(beats[next]));
            next += 1;
        }
        let s =
            d.last_heartbeat().is_some() && !d.is_available(Instant::from_millis(now), threshold);
        if now < alive_ms {
            if s && !suspected {
                false_suspicions += 1;
            }
            suspected = s;
        } else if s {
            return Outcome {
                false_suspicions,
                detection_ms: Some(now - alive_ms),
            };
        }
        now += step;
    }
    Outcome {
        false_suspicions,
        detection_ms: None,
    }
}
