//! Per-peer rate limiting: a token bucket per key, as a sans-IO core fed `now`.
//!
//! Each key may spend `burst` tokens at once and regains `rate` tokens per second. The table
//! of buckets is bounded: when it is full, the bucket idle the longest is forgotten (a
//! forgotten key starts again with a full bucket, which is the permissive choice: the bound
//! protects memory, the rate protects the node).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use mesh_types::Instant;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by peer.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `rate` tokens per second, at most `burst` saved, for at most `max_keys` keys.
    pub fn new(rate: u32, burst: u32, max_keys: usize) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `key` at `now`; `false` means over the limit.
    pub fn allow(&mut self, key: &K, now: Instant) -> bool {
        if !self.buckets.contains_key(key)
            && self.buckets.len() >= self.max_keys
            && let Some(idle) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(k, _)| k.clone())
        {
            self.buckets.remove(&idle);
        }
        let (rate, burst) = (self.rate, self.burst);
        let b = self.buckets.entry(key.clone()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed: Duration = now.saturating_since(b.last);
        b.tokens = (b.tokens + elapsed.as_secs_f64() * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_refill_and_the_table_is_bounded() {
        let mut rl = RateLimiter::new(10, 5, 2);
        let t0 = Instant::from_millis(1000);
        assert_eq!((0..8).filter(|_| rl.allow(&"a", t0)).count(), 5);
        assert!(!rl.allow(&"a", t0 + Duration::from_millis(50)));
        assert!(
            rl.allow(&"a", t0 + Duration::from_millis(200)),
            "two tokens back after 200 ms"
        );
        assert!(rl.allow(&"b", t0));
        assert!(rl.allow(&"c", t0 + Duration::from_secs(1)));
        assert_eq!(rl.len(), 2, "bounded: the longest-idle key was forgotten");
    }
}
