//! Working memory: what the agent keeps at hand, in memory, bounded by item count and bytes.
//!
//! Items are keyed strings with a relevance in `[0, 1]` given by the caller (and updatable
//! on access). When an insert would exceed [`Config::max_items`] or [`Config::max_bytes`],
//! the items with the lowest *score* are evicted until both bounds hold again. The item
//! being inserted is never its own victim.
//!
//! # Score
//!
//! ```text
//! recency   = h / (h + age)          age = now - last access, h = Config::half_life
//! score     = w * recency + (1 - w) * relevance      w = Config::recency_weight
//! ```
//!
//! Recency is 1 for an item touched at `now`, 1/2 after one half-life, 1/3 after two: a
//! hyperbolic decay rather than an exponential one, so the score is plain IEEE arithmetic
//! (no `exp`, whose last bit may differ between math libraries) and the same inputs evict the
//! same items on every machine. Among equal scores the item accessed longest ago goes first,
//! then the larger key.
//!
//! Nothing here reads a clock: every call that depends on time takes `now`. An item's last
//! access never moves backwards (a `now` earlier than it counts as no time passing).

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_types::Instant;

use crate::codec::check_text;
use crate::error::{Error, Result};

/// Longest item key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest `max_items` a configuration may set.
pub const MAX_ITEMS: usize = 1_000_000;
/// Largest `max_bytes` a configuration may set (1 GiB).
pub const MAX_BYTES: usize = 1 << 30;

/// Bounds and scoring of a [`Working`] memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Most items held (1 to [`MAX_ITEMS`]).
    pub max_items: usize,
    /// Most bytes held, counting each item's key and content (1 to [`MAX_BYTES`]).
    pub max_bytes: usize,
    /// Age at which an item's recency has fallen to 1/2 (more than zero).
    pub half_life: Duration,
    /// Weight of recency against relevance, in `[0, 1]`.
    pub recency_weight: f64,
}

impl Default for Config {
    /// 256 items, 1 MiB, a five-minute half-life, recency and relevance weighted equally.
    fn default() -> Self {
        Self {
            max_items: 256,
            max_bytes: 1 << 20,
            half_life: Duration::from_secs(300),
            recency_weight: 0.5,
        }
    }
}

/// One item of working memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Its key.
    pub key: String,
    /// Its content.
    pub content: String,
    /// Its relevance, in `[0, 1]`.
    pub relevance: f64,
    /// When it was inserted (or last replaced).
    pub added: Instant,
    /// When it was last inserted, read with [`Working::get`] or touched.
    pub last_access: Instant,
}

impl Item {
    fn bytes(&self) -> usize {
        self.key.len() + self.content.len()
    }
}

/// Bounded working memory. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Working {
    config: Config,
    items: BTreeMap<String, Item>,
    bytes: usize,
}

impl Working {
    /// An empty working memory; fails on a configuration out of range.
    pub fn new(config: Config) -> Result<Self> {
        if config.max_items == 0 || config.max_items > MAX_ITEMS {
            return Err(Error::Invalid(format!(
                "max_items must be 1 to {MAX_ITEMS}, not {}",
                config.max_items
            )));
        }
        if config.max_bytes == 0 || config.max_bytes > MAX_BYTES {
            return Err(Error::Invalid(format!(
                "max_bytes must be 1 to {MAX_BYTES}, not {}",
                config.max_bytes
            )));
        }
        if config.half_life.is_zero() {
            return Err(Error::Invalid("half_life must be more than zero".into()));
        }
        if !(0.0..=1.0).contains(&config.recency_weight) {
            return Err(Error::Invalid(format!(
                "recency_weight must be in [0, 1], not {}",
                config.recency_weight
            )));
        }
        Ok(Self {
            config,
            items: BTreeMap::new(),
            bytes: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of items held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no item is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes held (keys and contents).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Inserts (or replaces) `key` with `content` and `relevance` at `now`, then evicts the
    /// lowest-scoring other items until the bounds hold. Returns the evicted items, lowest
    /// score first.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        content: impl Into<String>,
        relevance: f64,
        now: Instant,
    ) -> Result<Vec<Item>> {
        let key = key.into();
        let content = content.into();
        check_text("working-memory key", &key, MAX_KEY_BYTES, false)?;
        check_relevance(relevance)?;
        let size = key.len() + content.len();
        if size > self.config.max_bytes {
            return Err(Error::TooLong {
                what: "working-memory item",
                len: size,
                max: self.config.max_bytes,
            });
        }
        if let Some(old) = self.items.remove(&key) {
            self.bytes -= old.bytes();
        }
        self.bytes += size;
        self.items.insert(
            key.clone(),
            Item {
                key: key.clone(),
                content,
                relevance,
                added: now,
                last_access: now,
            },
        );
        let mut evicted = Vec::new();
        while self.items.len() > self.config.max_items || self.bytes > self.config.max_bytes {
            let Some(victim) = self.lowest(now, &key) else {
                break;
            };
            if let Some(item) = self.items.remove(&victim) {
                self.bytes -= item.bytes();
                evicted.push(item);
            }
        }
        Ok(evicted)
    }

    /// The item at `key`, marking it accessed at `now`.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<&Item> {
        let item = self.items.get_mut(key)?;
        item.last_access = item.last_access.max(now);
        Some(item)
    }

    /// The item at `key`, without marking it accessed.
    pub fn peek(&self, key: &str) -> Option<&Item> {
        self.items.get(key)
    }

    /// Marks `key` accessed at `now` and, if given, sets its relevance. Returns whether the
    /// item is held.
    pub fn touch(&mut self, key: &str, now: Instant, relevance: Option<f64>) -> Result<bool> {
        if let Some(r) = relevance {
            check_relevance(r)?;
        }
        let Some(item) = self.items.get_mut(key) else {
            return Ok(false);
        };
        item.last_access = item.last_access.max(now);
        if let Some(r) = relevance {
            item.relevance = r;
        }
        Ok(true)
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) -> Option<Item> {
        let item = self.items.remove(key)?;
        self.bytes -= item.bytes();
        Some(item)
    }

    /// The score of `item` at `now` (see the [module docs](self)).
    pub fn score(&self, item: &Item, now: Instant) -> f64 {
        let h = self.config.half_life.as_nanos() as f64;
        let age = now.saturating_since(item.last_access).as_nanos() as f64;
        let recency = h / (h + age);
        let w = self.config.recency_weight;
        w * recency + (1.0 - w) * item.relevance
    }

    /// Up to `limit` items with their scores at `now`, highest score first (ties: the most
    /// recently accessed, then the smaller key).
    pub fn ranked(&self, now: Instant, limit: usize) -> Vec<(&Item, f64)> {
        let mut all: Vec<(&Item, f64)> = self
            .items
            .values()
            .map(|i| (i, self.score(i, now)))
            .collect();
        all.sort_by(|a, b| Self::order(b, a));
        all.truncate(limit);
        all
    }

    /// Orders by score, then by last access, then by key descending, so that the smallest is
    /// the eviction victim.
    fn order(a: &(&Item, f64), b: &(&Item, f64)) -> std::cmp::Ordering {
        a.1.total_cmp(&b.1)
            .then(a.0.last_access.cmp(&b.0.last_access))
            .then(b.0.key.cmp(&a.0.key))
    }

    /// The key of the lowest-scoring item other than `keep`.
    fn lowest(&self, now: Instant, keep: &str) -> Option<String> {
        self.items
            .values()
            .filter(|i| i.key != keep)
            .map(|i| (i, self.score(i, now)))
            .min_by(Self::order)
            .map(|(i, _)| i.key.clone())
    }
}

fn check_relevance(r: f64) -> Result<()> {
    if (0.0..=1.0).contains(&r) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "relevance must be in [0, 1], not {r}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Instant {
        Instant::from_millis(secs * 1000)
    }

    fn config(max_items: usize, max_bytes: usize) -> Config {
        Config {
            max_items,
            max_bytes,
            half_life: Duration::from_secs(10),
            recency_weight: 0.5,
        }
    }

    fn keys(v: &[Item]) -> Vec<&str> {
        v.iter().map(|i| i.key.as_str()).collect()
    }

    #[test]
    fn score_formula() {
        let w = Working::new(config(10, 1000)).unwrap();
        let item = Item {
            key: "k".into(),
            content: String::new(),
            relevance: 0.2,
            added: at(0),
            last_access: at(0),
        };
        assert_eq!(w.score(&item, at(0)), 0.5 * 1.0 + 0.5 * 0.2);
        assert_eq!(w.score(&item, at(10)), 0.5 * 0.5 + 0.5 * 0.2);
        assert_eq!(w.score(&item, at(20)), 0.5 / 3.0 + 0.5 * 0.2);
        // Time running backwards counts as none.
        let later = Item {
            last_access: at(5),
            ..item
        };
        assert!((w.score(&later, at(0)) - 0.6).abs() < 1e-12);
    }

    #[test]
    fn evicts_by_count_lowest_score_first() {
        let mut w = Working::new(config(3, 1000)).unwrap();
        assert!(w.insert("a", "x", 0.9, at(0)).unwrap().is_empty());
        assert!(w.insert("b", "x", 0.1, at(1)).unwrap().is_empty());
        assert!(w.insert("c", "x", 0.5, at(2)).unwrap().is_empty());
        // At 3 s: a 0.5*10/13+0.45, b 0.5*10/12+0.05, c 0.5*10/11+0.25: b goes.
        assert_eq!(keys(&w.insert("d", "x", 0.0, at(3)).unwrap()), ["b"]);
        // Reading c keeps it fresh; d (relevance 0) is now the weakest.
        assert!(w.get("c", at(30)).is_some());
        assert_eq!(keys(&w.insert("e", "x", 0.0, at(30)).unwrap()), ["d"]);
        assert_eq!(w.len(), 3);
        // A relevance update on access changes the order.
        assert!(w.touch("e", at(31), Some(1.0)).unwrap());
        assert!(!w.touch("zz", at(31), None).unwrap());
        assert_eq!(keys(&w.insert("f", "x", 0.0, at(31)).unwrap()), ["a"]);
        let ranked: Vec<&str> = w
            .ranked(at(31), 10)
            .iter()
            .map(|(i, _)| i.key.as_str())
            .collect();
        assert_eq!(ranked, ["e", "c", "f"]);
    }

    #[test]
    fn evicts_by_bytes_and_never_the_new_item() {
        let mut w = Working::new(config(100, 10)).unwrap();
        w.insert("a", "1234", 1.0, at(0)).unwrap(); // 5 bytes
        w.insert("b", "123", 1.0, at(0)).unwrap(); // 4 bytes
        // 5 + 4 + 6 > 10: a and b tie on score and access, so the larger key, b, goes first;
        // then 11 > 10 still, and a goes too.
        let out = w.insert("c", "12345", 0.0, at(0)).unwrap();
        assert_eq!(keys(&out), ["b", "a"]);
        assert_eq!((w.len(), w.bytes()), (1, 6));
        assert!(matches!(
            w.insert("big", "12345678", 0.5, at(0)),
            Err(Error::TooLong { .. })
        ));
        // Replacing an item frees its old bytes.
        assert!(w.insert("c", "1", 0.0, at(1)).unwrap().is_empty());
        assert_eq!(w.bytes(), 2);
        assert_eq!(w.remove("c").map(|i| i.content), Some("1".into()));
        assert_eq!(w.bytes(), 0);
        assert!(w.peek("c").is_none());
    }

    #[test]
    fn deterministic_for_the_same_inputs() {
        let run = || {
            let mut w = Working::new(config(16, 400)).unwrap();
            let mut evicted = Vec::new();
            let mut x: u64 = 7;
            for i in 0..500u64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let key = format!("k{}", x % 40);
                let rel = (x >> 40) as f64 / (1u64 << 24) as f64;
                if x.is_multiple_of(5) {
                    w.get(&key, at(i));
                } else {
                    let content = "c".repeat((x % 30) as usize);
                    for e in w.insert(key, content, rel, at(i)).unwrap() {
                        evicted.push(e.key);
                    }
                }
                assert!(w.len() <= 16 && w.bytes() <= 400);
            }
            evicted
        };
        let a = run();
        assert!(a.len() > 100);
        assert_eq!(a, run());
    }

    #[test]
    fn bad_input() {
        for c in [
            config(0, 10),
            config(MAX_ITEMS + 1, 10),
            config(1, 0),
            Config {
                half_life: Duration::ZERO,
                ..config(1, 1)
            },
            Config {
                recency_weight: f64::NAN,
                ..config(1, 1)
            },
        ] {
            assert!(Working::new(c).is_err(), "{c:?}");
        }
        let mut w = Working::new(config(2, 100)).unwrap();
        assert!(w.insert("k", "", f64::NAN, at(0)).is_err());
        assert!(w.insert("k", "", 1.5, at(0)).is_err());
        assert!(matches!(
            w.insert("", "", 0.5, at(0)),
            Err(Error::Empty { .. })
        ));
        assert!(w.insert("a\nb", "", 0.5, at(0)).is_err());
        w.insert("k", "", 0.5, at(0)).unwrap();
        assert!(w.touch("k", at(0), Some(-0.1)).is_err());
    }
}
