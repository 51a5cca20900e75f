//! The three delta-state CRDTs (Almeida, Shoker and Baquero, "Delta state replicated data
//! types", 2018) and the causal context they share.
//!
//! Each type is its own delta type: a mutator changes the local state and returns the
//! smallest state that carries the change (the *delta*); `join` merges any state or delta
//! into another. `join` is commutative, associative and idempotent, so replicas that have
//! joined the same deltas hold equal states whatever the order, duplication or grouping of
//! delivery (the unit tests and `tests/sync.rs` check it).
//!
//! - [`OrSet`]: an add-wins observed-remove set with dots and a causal context. An add
//!   tags the element with a fresh dot of its writer and covers the element's earlier dots;
//!   a remove covers the dots it observed. A concurrent add survives a remove (its dot was not
//!   observed).
//! - [`AppendLog`]: grow-only logs, one per writer, entries identified by `(writer, seq)`;
//!   entries may arrive in any order and with gaps.
//! - [`LwwMap`]: last-writer-wins registers by key, ordered by [`Stamp`] (wall-clock
//!   time, then writer id), then by value: deterministic even if one writer stamps two
//!   values alike.

use std::collections::{BTreeMap, BTreeSet};

use mesh_types::{NodeId, Timestamp};

/// One event of one writer: its id and a counter (1, 2, 3, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// Who made it.
    pub writer: NodeId,
    /// Its counter, from 1.
    pub counter: u64,
}

/// A set of dots: per writer a contiguous prefix `1..=n` plus the dots seen beyond it.
///
/// The representation is canonical (the prefix is as long as it can be, no empty entries),
/// so equal sets compare and encode equal. It serves as the causal context of an [`OrSet`]
/// and as the version vector of a namespace's deltas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CausalContext {
    compact: BTreeMap<NodeId, u64>,
    cloud: BTreeMap<NodeId, BTreeSet<u64>>,
}

impl CausalContext {
    /// The empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `dot` is in the set.
    pub fn contains(&self, dot: &Dot) -> bool {
        dot.counter != 0
            && (self
                .compact
                .get(&dot.writer)
                .is_some_and(|&n| dot.counter <= n)
                || self
                    .cloud
                    .get(&dot.writer)
                    .is_some_and(|c| c.contains(&dot.counter)))
    }

    /// Adds `dot`; `false` if it was there already. Counter 0 is never a dot.
    pub fn insert(&mut self, dot: Dot) -> bool {
        if dot.counter == 0 || self.contains(&dot) {
            return false;
        }
        let n = self.compact.get(&dot.writer).copied().unwrap_or(0);
        if dot.counter == n + 1 {
            self.compact.insert(dot.writer, dot.counter);
            self.absorb(dot.writer);
        } else {
            self.cloud
                .entry(dot.writer)
                .or_default()
                .insert(dot.counter);
        }
        true
    }

    /// Removes `dot` (used when a revocation withdraws a writer's deltas).
    pub fn remove(&mut self, dot: &Dot) {
        let n = self.compact.get(&dot.writer).copied().unwrap_or(0);
        if dot.counter == 0 {
            return;
        }
        if dot.counter <= n {
            // Split the prefix: 1..counter stays compact, counter+1..=n go to the cloud.
            if dot.counter == 1 {
                self.compact.remove(&dot.writer);
            } else {
                self.compact.insert(dot.writer, dot.counter - 1);
            }
            if dot.counter < n {
                self.cloud
                    .entry(dot.writer)
                    .or_default()
                    .extend(dot.counter + 1..=n);
            }
        } else if let Some(c) = self.cloud.get_mut(&dot.writer) {
            c.remove(&dot.counter);
            if c.is_empty() {
                self.cloud.remove(&dot.writer);
            }
        }
    }

    /// Moves cloud dots that extend `writer`'s prefix into it.
    fn absorb(&mut self, writer: NodeId) {
        let Some(cloud) = self.cloud.get_mut(&writer) else {
            return;
        };
        let mut n = self.compact.get(&writer).copied().unwrap_or(0);
        while cloud.first() == Some(&(n + 1)) {
            cloud.pop_first();
            n += 1;
        }
        if cloud.is_empty() {
            self.cloud.remove(&writer);
        }
        if n > 0 {
            self.compact.insert(writer, n);
        }
    }

    /// The highest counter seen from `writer` (0 if none).
    pub fn max(&self, writer: &NodeId) -> u64 {
        let n = self.compact.get(writer).copied().unwrap_or(0);
        let c = self
            .cloud
            .get(writer)
            .and_then(|c| c.last().copied())
            .unwrap_or(0);
        n.max(c)
    }

    /// The length of `writer`'s contiguous prefix.
    pub fn prefix(&self, writer: &NodeId) -> u64 {
        self.compact.get(writer).copied().unwrap_or(0)
    }

    /// A fresh dot for `writer`: one above the highest seen. Only `writer` should mint its
    /// dots, from a context holding all of them.
    pub fn next(&self, writer: NodeId) -> Dot {
        Dot {
            writer,
            counter: self.max(&writer).saturating_add(1),
        }
    }

    /// Adds every dot of `other`.
    pub fn join(&mut self, other: &Self) {
        for (&w, &n) in &other.compact {
            let mine = self.compact.entry(w).or_insert(0);
            if n > *mine {
                *mine = n;
                if let Some(c) = self.cloud.get_mut(&w) {
                    c.retain(|&x| x > n);
                    if c.is_empty() {
                        self.cloud.remove(&w);
                    }
                }
            }
        }
        for (&w, c) in &other.cloud {
            let n = self.compact.get(&w).copied().unwrap_or(0);
            let mine = self.cloud.entry(w).or_default();
            mine.extend(c.iter().filter(|&&x| x > n));
            if mine.is_empty() {
                self.cloud.remove(&w);
            }
        }
        let writers: Vec<NodeId> = self.cloud.keys().copied().collect();
        for w in writers {
            self.absorb(w);
        }
    }

    /// How many dots the set holds.
    pub fn len(&self) -> u64 {
        self.compact
            .values()
            .fold(0u64, |a, &n| a.saturating_add(n))
            .saturating_add(self.cloud.values().map(|c| c.len() as u64).sum::<u64>())
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.compact.is_empty() && self.cloud.is_empty()
    }

    /// Every dot, by writer then counter.
    pub fn dots(&self) -> impl Iterator<Item = Dot> + '_ {
        let writers: BTreeSet<&NodeId> = self.compact.keys().chain(self.cloud.keys()).collect();
        writers.into_iter().flat_map(move |w| {
            let n = self.compact.get(w).copied().unwrap_or(0);
            let cloud = self.cloud.get(w).into_iter().flatten().copied();
            (1..=n).chain(cloud).map(move |counter| Dot {
                writer: *w,
                counter,
            })
        })
    }

    /// The writers with at least one dot, in order.
    pub fn writers(&self) -> BTreeSet<NodeId> {
        self.compact
            .keys()
            .chain(self.cloud.keys())
            .copied()
            .collect()
    }

    /// `writer`'s prefix length and the dots beyond it (for encoding).
    pub(crate) fn parts(&self, writer: &NodeId) -> (u64, impl Iterator<Item = u64> + '_) {
        (
            self.prefix(writer),
            self.cloud.get(writer).into_iter().flatten().copied(),
        )
    }

    /// Builds a context from canonical parts; `None` if they are not canonical (cloud dots
    /// must lie above `prefix + 1`, strictly increasing; an entry must not be empty).
    pub(crate) fn push_parts(&mut self, writer: NodeId, prefix: u64, cloud: &[u64]) -> bool {
        if self.compact.contains_key(&writer) || self.cloud.contains_key(&writer) {
            return false;
        }
        if prefix == 0 && cloud.is_empty() {
            return false;
        }
        let mut last = prefix.saturating_add(1);
        for &c in cloud {
            if c <= last {
                return false;
            }
            last = c;
        }
        if prefix > 0 {
            self.compact.insert(writer, prefix);
        }
        if !cloud.is_empty() {
            self.cloud.insert(writer, cloud.iter().copied().collect());
        }
        true
    }
}

/// An add-wins observed-remove set (delta-state, with dots and a causal context).
///
/// Every dot in the set's entries is also in its context. A state is also a delta: the
/// mutators return one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrSet<T: Ord> {
    entries: BTreeMap<T, BTreeSet<Dot>>,
    context: CausalContext,
    /// Which element each live dot tags (derived; lets a small delta's join touch only the
    /// dots it covers).
    by_dot: BTreeMap<Dot, T>,
}

impl<T: Ord> Default for OrSet<T> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            context: CausalContext::new(),
            by_dot: BTreeMap::new(),
        }
    }
}

impl<T: Ord + Clone> OrSet<T> {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A delta from parts (decoding); every entry's dots are added to the context.
    pub(crate) fn from_parts(
        entries: BTreeMap<T, BTreeSet<Dot>>,
        mut context: CausalContext,
    ) -> Self {
        let mut by_dot = BTreeMap::new();
        for (e, dots) in &entries {
            for d in dots {
                context.insert(*d);
                by_dot.insert(*d, e.clone());
            }
        }
        Self {
            entries,
            context,
            by_dot,
        }
    }

    /// Adds `element` as `writer`; returns the delta.
    pub fn add(&mut self, writer: NodeId, element: T) -> Self {
        let delta = self.add_delta(writer, element);
        self.join(&delta);
        delta
    }

    /// The delta that [`OrSet::add`] would return, leaving `self` unchanged.
    pub fn add_delta(&self, writer: NodeId, element: T) -> Self {
        let dot = self.context.next(writer);
        let mut context = CausalContext::new();
        context.insert(dot);
        if let Some(old) = self.entries.get(&element) {
            for d in old {
                context.insert(*d);
            }
        }
        let mut entries = BTreeMap::new();
        entries.insert(element, BTreeSet::from([dot]));
        Self::from_parts(entries, context)
    }

    /// The delta adding `element` tagged with `dot`, which must be fresh: never used by
    /// its writer before (sync uses the delta's own `(writer, seq)`).
    pub fn add_delta_at(&self, dot: Dot, element: T) -> Self {
        let mut context = CausalContext::new();
        context.insert(dot);
        if let Some(old) = self.entries.get(&element) {
            for d in old {
                context.insert(*d);
            }
        }
        Self::from_parts(BTreeMap::from([(element, BTreeSet::from([dot]))]), context)
    }

    /// Records `dot` as seen without tagging anything (sync witnesses every delta's
    /// `(writer, seq)`, so the context stays a compact prefix).
    pub fn witness(&mut self, dot: Dot) {
        self.context.insert(dot);
    }

    /// Removes `element` (the dots this replica observed); returns the delta (empty if the
    /// element is absent).
    pub fn remove(&mut self, element: &T) -> Self {
        let delta = self.remove_delta(element);
        self.join(&delta);
        delta
    }

    /// The delta that [`OrSet::remove`] would return, leaving `self` unchanged.
    pub fn remove_delta(&self, element: &T) -> Self {
        let mut context = CausalContext::new();
        if let Some(old) = self.entries.get(element) {
            for d in old {
                context.insert(*d);
            }
        }
        Self::from_parts(BTreeMap::new(), context)
    }

    /// Whether `element` is in the set.
    pub fn contains(&self, element: &T) -> bool {
        self.entries.contains_key(element)
    }

    /// The elements, in order.
    pub fn elements(&self) -> impl Iterator<Item = &T> {
        self.entries.keys()
    }

    /// The elements with their dots.
    pub fn entries(&self) -> &BTreeMap<T, BTreeSet<Dot>> {
        &self.entries
    }

    /// The causal context.
    pub fn context(&self) -> &CausalContext {
        &self.context
    }

    /// How many elements.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Joins `other` (a delta or a whole state) into `self`:
    /// `(s, c) ⊔ (s', c') = ((s ∩ s') ∪ {d ∈ s | d ∉ c'} ∪ {d ∈ s' | d ∉ c}, c ∪ c')`.
    pub fn join(&mut self, other: &Self) {
        // Removals: our dots that `other` has seen but no longer holds.
        let covered: Vec<Dot> = if other.context.len() <= self.by_dot.len() as u64 {
            other
                .context
                .dots()
                .filter(|d| self.by_dot.contains_key(d))
                .collect()
        } else {
            self.by_dot
                .keys()
                .filter(|d| other.context.contains(d))
                .copied()
                .collect()
        };
        for d in covered {
            let Some(e) = self.by_dot.get(&d) else {
                continue;
            };
            if other.entries.get(e).is_some_and(|s| s.contains(&d)) {
                continue;
            }
            if let Some(e) = self.by_dot.remove(&d)
                && let Some(dots) = self.entries.get_mut(&e)
            {
                dots.remove(&d);
                if dots.is_empty() {
                    self.entries.remove(&e);
                }
            }
        }
        // Additions: `other`'s dots we have never seen.
        for (e, dots) in &other.entries {
            for d in dots {
                if !self.context.contains(d) {
                    self.entries.entry(e.clone()).or_default().insert(*d);
                    self.by_dot.insert(*d, e.clone());
                }
            }
        }
        self.context.join(&other.context);
    }
}

/// Grow-only append logs, one per writer; entries identified by `(writer, seq)`, seq from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendLog<E> {
    entries: BTreeMap<(NodeId, u64), E>,
}

impl<E> Default for AppendLog<E> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
        }
    }
}

impl<E: Ord + Clone> AppendLog<E> {
    /// The empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// A delta from entries (decoding).
    pub(crate) fn from_entries(entries: BTreeMap<(NodeId, u64), E>) -> Self {
        Self { entries }
    }

    /// The highest seq of `writer` held (0 if none).
    pub fn last_seq(&self, writer: &NodeId) -> u64 {
        self.entries
            .range((*writer, 0)..=(*writer, u64::MAX))
            .next_back()
            .map_or(0, |((_, s), _)| *s)
    }

    /// Appends `entry` to `writer`'s log; returns the delta.
    pub fn append(&mut self, writer: NodeId, entry: E) -> Self {
        let delta = self.append_delta(writer, entry);
        self.join(&delta);
        delta
    }

    /// The delta appending `entry` as `writer`'s entry number `seq`, which must be fresh
    /// (sync uses the delta's own `(writer, seq)`, so numbers may have gaps).
    pub fn append_delta_at(writer: NodeId, seq: u64, entry: E) -> Self {
        Self {
            entries: BTreeMap::from([((writer, seq), entry)]),
        }
    }

    /// The delta that [`AppendLog::append`] would return, leaving `self` unchanged.
    pub fn append_delta(&self, writer: NodeId, entry: E) -> Self {
        let seq = self.last_seq(&writer).saturating_add(1);
        Self {
            entries: BTreeMap::from([((writer, seq), entry)]),
        }
    }

    /// Joins `other`: the union; should a writer have signed two entries under one id, the
    /// smaller one (by `Ord`) is kept everywhere.
    pub fn join(&mut self, other: &Self) {
        for (k, v) in &other.entries {
            match self.entries.get_mut(k) {
                None => {
                    self.entries.insert(*k, v.clone());
                }
                Some(mine) if v < mine => *mine = v.clone(),
                Some(_) => {}
            }
        }
    }

    /// The entries, by writer then seq.
    pub fn entries(&self) -> &BTreeMap<(NodeId, u64), E> {
        &self.entries
    }

    /// One entry.
    pub fn get(&self, writer: &NodeId, seq: u64) -> Option<&E> {
        self.entries.get(&(*writer, seq))
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The order of last-writer-wins registers: wall-clock time, then the writer's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// When it was written (the writer's clock, kept above what it had seen for the key).
    pub at: Timestamp,
    /// Who wrote it.
    pub writer: NodeId,
}

/// Last-writer-wins registers by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LwwMap<K, V> {
    entries: BTreeMap<K, (Stamp, V)>,
}

impl<K, V> Default for LwwMap<K, V> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone, V: Ord + Clone> LwwMap<K, V> {
    /// The empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// A delta from entries (decoding).
    pub(crate) fn from_entries(entries: BTreeMap<K, (Stamp, V)>) -> Self {
        Self { entries }
    }

    /// Writes `value` under `key` as `writer` at `now`; the stamp is kept above the one
    /// this replica holds for the key, so a local write always wins over what it saw.
    /// Returns the delta.
    pub fn set(&mut self, writer: NodeId, key: K, value: V, now: Timestamp) -> Self {
        let delta = self.set_delta(writer, key, value, now);
        self.join(&delta);
        delta
    }

    /// The delta that [`LwwMap::set`] would return, leaving `self` unchanged.
    pub fn set_delta(&self, writer: NodeId, key: K, value: V, now: Timestamp) -> Self {
        let at = match self.entries.get(&key) {
            Some((s, _)) if s.at >= now => Timestamp(s.at.0.saturating_add(1)),
            _ => now,
        };
        Self {
            entries: BTreeMap::from([(key, (Stamp { at, writer }, value))]),
        }
    }

    /// Joins `other`: per key, the larger `(stamp, value)` wins.
    pub fn join(&mut self, other: &Self) {
        for (k, v) in &other.entries {
            match self.entries.get_mut(k) {
                None => {
                    self.entries.insert(k.clone(), v.clone());
                }
                Some(mine) if *v > *mine => *mine = v.clone(),
                Some(_) => {}
            }
        }
    }

    /// The value under `key` with its stamp.
    pub fn get(&self, key: &K) -> Option<&(Stamp, V)> {
        self.entries.get(key)
    }

    /// Every register.
    pub fn entries(&self) -> &BTreeMap<K, (Stamp, V)> {
        &self.entries
    }

    /// How many registers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn w(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    #[test]
    fn context_is_canonical() {
        let mut a = CausalContext::new();
        for c in [3, 1, 5, 2, 4] {
            a.insert(Dot {
                writer: w(1),
                counter: c,
            });
        }
        let mut b = CausalContext::new();
        for c in 1..=5 {
            b.insert(Dot {
                writer: w(1),
                counter: c,
            });
        }
        assert_eq!(a, b);
        assert_eq!(a.prefix(&w(1)), 5);
        assert!(!a.insert(Dot {
            writer: w(1),
            counter: 0
        }));
        a.remove(&Dot {
            writer: w(1),
            counter: 3,
        });
        assert_eq!(a.prefix(&w(1)), 2);
        assert_eq!(a.max(&w(1)), 5);
        assert_eq!(a.len(), 4);
        a.insert(Dot {
            writer: w(1),
            counter: 3,
        });
        assert_eq!(a, b);
    }

    #[test]
    fn add_wins_over_a_concurrent_remove() {
        let mut a = OrSet::new();
        a.add(w(1), "x");
        let mut b = a.clone();
        let rm = b.remove(&"x");
        let add = a.add(w(1), "x");
        let mut c = OrSet::new();
        c.join(&a);
        c.join(&rm);
        let mut d = b.clone();
        d.join(&add);
        assert!(c.contains(&"x") && d.contains(&"x"));
        assert_eq!(c, d);
        // A remove that observed the add removes it.
        let rm2 = d.remove(&"x");
        c.join(&rm2);
        assert!(!c.contains(&"x"));
        assert_eq!(c.entries(), d.entries());
    }

    #[test]
    fn lww_is_deterministic() {
        let mut a = LwwMap::new();
        let d1 = a.set(w(1), "k", 1, Timestamp(10));
        let mut b = LwwMap::new();
        let d2 = b.set(w(2), "k", 2, Timestamp(10));
        a.join(&d2);
        b.join(&d1);
        assert_eq!(a, b);
        assert_eq!(a.get(&"k").map(|v| v.1), Some(2)); // same time: the larger writer id
        // A later local write wins even with a clock behind.
        let d3 = a.set(w(1), "k", 3, Timestamp(5));
        b.join(&d3);
        assert_eq!(b.get(&"k").map(|v| (v.0.at, v.1)), Some((Timestamp(11), 3)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8, u8),
        Remove(u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3u8, 0..6u8).prop_map(|(r, e)| Op::Add(r, e)),
            (0..3u8, 0..6u8).prop_map(|(r, e)| Op::Remove(r, e)),
        ]
    }

    proptest! {
        /// Join is commutative, associative and idempotent on the deltas three replicas
        /// produce, whatever order and grouping they are joined in.
        #[test]
        fn or_set_deltas_converge(ops in proptest::collection::vec(op(), 1..40), seed in any::<u64>()) {
            let mut replicas: Vec<OrSet<u8>> = vec![OrSet::new(); 3];
            let mut deltas = Vec::new();
            for (i, op) in ops.iter().enumerate() {
                let (r, d) = match *op {
                    Op::Add(r, e) => (r, replicas[r as usize].add(w(r), e)),
                    Op::Remove(r, e) => (r, replicas[r as usize].remove(&e)),
                };
                deltas.push(d);
                // Some deltas reach another replica right away.
                if i % 3 == 0 {
                    let to = (r as usize + 1) % 3;
                    let last = deltas.last().cloned().unwrap_or_default();
                    replicas[to].join(&last);
                }
            }
            // Everything, in two different orders, with duplicates and groups.
            let mut x = replicas[0].clone();
            for d in &deltas { x.join(d); }
            for r in &replicas { x.join(r); }
            let mut y = replicas[2].clone();
            let mut order: Vec<usize> = (0..deltas.len()).collect();
            let mut s = seed;
            for i in (1..order.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut group = OrSet::new();
            for (n, &i) in order.iter().enumerate() {
                group.join(&deltas[i]);
                if n % 4 == 3 { y.join(&group); group = OrSet::new(); }
                y.join(&deltas[i]);
            }
            y.join(&group);
            y.join(&replicas[1]);
            y.join(&replicas[0]);
            prop_assert_eq!(x.entries(), y.entries());
            prop_assert_eq!(x.context(), y.context());
        }
    }
}
