//! Approximate nearest neighbours: a hierarchical navigable small-world graph (HNSW, Malkov and
//! Yashunin 2018) over unit vectors, by cosine similarity, and the exact search it is measured
//! against.
//!
//! Vectors are normalised on insertion (a zero or non-finite vector is refused) and stored
//! contiguously; a vector's id is its insertion number. Each node has up to `2 * m` links on
//! the bottom layer and `m` on the layers above, chosen with the paper's neighbour-selection
//! heuristic (a candidate is kept only if it is closer to the new node than to every
//! neighbour kept so far), which keeps links spread across clusters. Levels are drawn from a
//! seeded generator, so the same insertions build the same graph.
//!
//! Searching needs scratch space the size of the index (a visited mark per node, reset by
//! bumping a generation number, not by clearing): [`Hnsw::search_with`] takes a caller-held
//! [`Scratch`] so that a searching thread allocates it once; [`Hnsw::search`] makes one per
//! call.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::error::{Error, Result};

/// Construction settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Links per node on the upper layers (twice this on the bottom layer). 16 is the usual
    /// choice for a few hundred dimensions.
    pub m: usize,
    /// Candidates examined when linking a new node (higher: better graph, slower build).
    pub ef_construction: usize,
    /// Seed of the level generator.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 200,
            seed: 0x5eed,
        }
    }
}

/// Most vectors one index holds (ids are `u32`).
pub const MAX_VECTORS: usize = u32::MAX as usize;
/// Largest dimension accepted.
pub const MAX_DIM: usize = 65_536;
/// Most layers (a level is drawn with probability `m^-level`; this is never reached in
/// practice and only bounds a pathological generator).
const MAX_LEVEL: usize = 32;

/// A distance (1 - cosine similarity) ordered totally.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Dist(f32);

impl Eq for Dist {}

impl PartialOrd for Dist {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Dist {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The dot product in four independent groups of four lanes (four vector registers, which
/// the compiler vectorizes at full width; one running sum would be a serial chain).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut s = [[0.0f32; 4]; 4];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for (g, sg) in s.iter_mut().enumerate() {
            let (Ok(xg), Ok(yg)) = (
                <[f32; 4]>::try_from(&x[g * 4..g * 4 + 4]),
                <[f32; 4]>::try_from(&y[g * 4..g * 4 + 4]),
            ) else {
                continue;
            };
            for j in 0..4 {
                sg[j] += xg[j] * yg[j];
            }
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    let mut lanes = [0.0f32; 4];
    for sg in &s {
        for j in 0..4 {
            lanes[j] += sg[j];
        }
    }
    (lanes[0] + lanes[2]) + (lanes[1] + lanes[3]) + tail
}

/// Checks `v` against `dim` and returns it scaled to unit length.
fn normalized(v: &[f32], dim: usize) -> Result<Vec<f32>> {
    if v.len() != dim {
        return Err(Error::Dimension {
            expected: dim,
            found: v.len(),
        });
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::NonFinite);
    }
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return Err(Error::ZeroVector);
    }
    Ok(v.iter().map(|x| (f64::from(*x) / norm) as f32).collect())
}

/// A hit: a vector's id and its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The id ([`Hnsw::insert`]'s return value).
    pub id: u32,
    /// Cosine similarity, in [-1, 1].
    pub similarity: f32,
}

/// Per-search scratch space: visited marks for every node.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    marks: Vec<u32>,
    generation: u32,
    /// The unvisited neighbours of the node being expanded.
    fresh: Vec<u32>,
}

impl Scratch {
    /// Starts a search over `n` nodes: every node unvisited.
    fn begin(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.generation = 1;
        }
    }

    /// Marks `i`; false if it was already visited in this search.
    #[inline]
    fn visit(&mut self, i: u32) -> bool {
        let slot = &mut self.marks[i as usize];
        if *slot == self.generation {
            false
        } else {
            *slot = self.generation;
            true
        }
    }
}

/// An HNSW index. See the module docs.
#[derive(Debug, Clone)]
pub struct Hnsw {
    dim: usize,
    params: Params,
    /// Unit vectors, `dim` values each, in id order.
    vectors: Vec<f32>,
    /// Bottom-layer links: `2 * m` slots per node.
    base: Vec<u32>,
    /// How many of each node's bottom slots are used.
    base_len: Vec<u16>,
    /// Links on layers 1..=level of each node (empty for nodes on the bottom layer only).
    upper: Vec<Vec<Vec<u32>>>,
    entry: Option<u32>,
    top: usize,
    rng: u64,
    scratch: Scratch,
}

impl Hnsw {
    /// An empty index of `dim`-dimensional vectors.
    pub fn new(dim: usize, params: Params) -> Result<Self> {
        if dim == 0 || dim > MAX_DIM {
            return Err(Error::Invalid(format!("dimension {dim} (1..={MAX_DIM})")));
        }
        if !(2..=1024).contains(&params.m) || params.ef_construction == 0 {
            return Err(Error::Invalid(format!(
                "m {} (2..=1024) and ef_construction {} (at least 1)",
                params.m, params.ef_construction
            )));
        }
        Ok(Self {
            dim,
            params,
            vectors: Vec::new(),
            base: Vec::new(),
            base_len: Vec::new(),
            upper: Vec::new(),
            entry: None,
            top: 0,
            rng: params.seed,
            scratch: Scratch::default(),
        })
    }

    /// The dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// How many vectors it holds.
    pub fn len(&self) -> usize {
        self.base_len.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.base_len.is_empty()
    }

    /// The stored (unit) vector `id`.
    pub fn vector(&self, id: u32) -> Option<&[f32]> {
        let i = id as usize;
        self.vectors.get(i * self.dim..(i + 1) * self.dim)
    }

    fn m0(&self) -> usize {
        self.params.m * 2
    }

    #[inline]
    fn vec_of(&self, i: u32) -> &[f32] {
        let i = i as usize;
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }

    #[inline]
    fn dist(&self, q: &[f32], i: u32) -> Dist {
        Dist(1.0 - dot(q, self.vec_of(i)))
    }

    fn links(&self, i: u32, level: usize) -> &[u32] {
        if level == 0 {
            let start = i as usize * self.m0();
            &self.base[start..start + usize::from(self.base_len[i as usize])]
        } else {
            self.upper[i as usize]
                .get(level - 1)
                .map_or(&[][..], Vec::as_slice)
        }
    }

    fn set_links(&mut self, i: u32, level: usize, links: &[u32]) {
        if level == 0 {
            let m0 = self.m0();
            let start = i as usize * m0;
            let n = links.len().min(m0);
            self.base[start..start + n].copy_from_slice(&links[..n]);
            self.base_len[i as usize] = n as u16;
        } else if let Some(l) = self.upper[i as usize].get_mut(level - 1) {
            l.clear();
            l.extend_from_slice(links);
        }
    }

    /// A level drawn with probability `m^-level` (SplitMix64).
    fn draw_level(&mut self) -> usize {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let u = ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let ml = 1.0 / (self.params.m as f64).ln();
        ((-u.ln() * ml) as usize).min(MAX_LEVEL)
    }

    /// Adds `vector` (normalised here) and returns its id.
    pub fn insert(&mut self, vector: &[f32]) -> Result<u32> {
        let q = normalized(vector, self.dim)?;
        let n = self.len();
        if n >= MAX_VECTORS {
            return Err(Error::Full);
        }
        let id = n as u32;
        let level = self.draw_level();
        self.vectors.extend_from_slice(&q);
        self.base.resize(self.base.len() + self.m0(), 0);
        self.base_len.push(0);
        self.upper.push(vec![Vec::new(); level]);
        let Some(entry) = self.entry else {
            self.entry = Some(id);
            self.top = level;
            return Ok(id);
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut ep = vec![(self.dist(&q, entry), entry)];
        for l in (level + 1..=self.top).rev() {
            ep = self.greedy(&q, ep, l);
        }
        for l in (0..=level.min(self.top)).rev() {
            let found = self.search_layer(&q, &ep, self.params.ef_construction, l, &mut scratch);
            let chosen = self.select(&found, self.params.m);
            self.set_links(id, l, &chosen);
            let cap = if l == 0 { self.m0() } else { self.params.m };
            for &nb in &chosen {
                self.link_back(nb, id, l, cap);
            }
            ep = found;
        }
        self.scratch = scratch;
        if level > self.top {
            self.top = level;
            self.entry = Some(id);
        }
        Ok(id)
    }

    /// Adds `id` to `nb`'s links on `level`, re-selecting them if that overflows `cap`.
    fn link_back(&mut self, nb: u32, id: u32, level: usize, cap: usize) {
        let current = self.links(nb, level);
        if current.len() < cap {
            let mut l = current.to_vec();
            l.push(id);
            self.set_links(nb, level, &l);
            return;
        }
        let v = self.vec_of(nb).to_vec();
        let mut cands: Vec<(Dist, u32)> = current
            .iter()
            .chain(std::iter::once(&id))
            .map(|&c| (self.dist(&v, c), c))
            .collect();
        cands.sort_unstable();
        let chosen = self.select(&cands, cap);
        self.set_links(nb, level, &chosen);
    }

    /// The neighbour-selection heuristic over candidates sorted by distance: keep a candidate
    /// only if it is closer to the node than to every one kept; then, if fewer than `m` were
    /// kept, fill up with the nearest of the rest.
    fn select(&self, sorted: &[(Dist, u32)], m: usize) -> Vec<u32> {
        let mut kept: Vec<(Dist, u32)> = Vec::with_capacity(m);
        let mut skipped = Vec::new();
        for &(d, c) in sorted {
            if kept.len() >= m {
                break;
            }
            let cv = self.vec_of(c);
            if kept.iter().all(|&(_, k)| self.dist(cv, k) > d) {
                kept.push((d, c));
            } else {
                skipped.push(c);
            }
        }
        let mut out: Vec<u32> = kept.into_iter().map(|(_, c)| c).collect();
        for c in skipped {
            if out.len() >= m {
                break;
            }
            out.push(c);
        }
        out
    }

    /// Walks `level` greedily towards `q` from the nearest of `ep`.
    fn greedy(&self, q: &[f32], ep: Vec<(Dist, u32)>, level: usize) -> Vec<(Dist, u32)> {
        let Some(&(mut best_d, mut best)) = ep.iter().min() else {
            return ep;
        };
        loop {
            let mut moved = false;
            for &c in self.links(best, level) {
                let d = self.dist(q, c);
                if d < best_d {
                    best_d = d;
                    best = c;
                    moved = true;
                }
            }
            if !moved {
                return vec![(best_d, best)];
            }
        }
    }

    /// The best-first search of one layer: up to `ef` nearest found, sorted by distance.
    fn search_layer(
        &self,
        q: &[f32],
        ep: &[(Dist, u32)],
        ef: usize,
        level: usize,
        scratch: &mut Scratch,
    ) -> Vec<(Dist, u32)> {
        scratch.begin(self.len());
        let mut candidates: BinaryHeap<Reverse<(Dist, u32)>> = BinaryHeap::new();
        let mut found: BinaryHeap<(Dist, u32)> = BinaryHeap::new();
        for &(d, e) in ep {
            if scratch.visit(e) {
                candidates.push(Reverse((d, e)));
                found.push((d, e));
            }
        }
        while found.len() > ef {
            found.pop();
        }
        while let Some(Reverse((d, c))) = candidates.pop() {
            if found.len() >= ef && found.peek().is_some_and(|&(worst, _)| d > worst) {
                break;
            }
            // The unvisited neighbours first, and a read of a few cache lines of each: the
            // reads are independent, so the processor fetches all the vectors at once instead
            // of waiting on memory for one vector after another (safe code has no prefetch
            // instruction; an early load does the same work).
            let mut fresh = std::mem::take(&mut scratch.fresh);
            fresh.clear();
            fresh.extend(
                self.links(c, level)
                    .iter()
                    .copied()
                    .filter(|&nb| scratch.visit(nb)),
            );
            let mut warm = 0.0f32;
            for &nb in &fresh {
                let v = self.vec_of(nb);
                for line in v.iter().step_by(16).take(8) {
                    warm += line;
                }
            }
            std::hint::black_box(warm);
            for &nb in &fresh {
                let dn = self.dist(q, nb);
                if found.len() < ef || found.peek().is_some_and(|&(worst, _)| dn < worst) {
                    candidates.push(Reverse((dn, nb)));
                    found.push((dn, nb));
                    if found.len() > ef {
                        found.pop();
                    }
                }
            }
            scratch.fresh = fresh;
        }
        found.into_sorted_vec()
    }

    /// The `k` most similar vectors to `query` (best first), examining `ef` candidates
    /// (at least `k`): higher `ef`, better recall, slower.
    pub fn search_with(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        scratch: &mut Scratch,
    ) -> Result<Vec<Hit>> {
        let q = normalized(query, self.dim)?;
        let Some(entry) = self.entry else {
            return Ok(Vec::new());
        };
        if k == 0 {
            return Ok(Vec::new());
        }
        let mut ep = vec![(self.dist(&q, entry), entry)];
        for l in (1..=self.top).rev() {
            ep = self.greedy(&q, ep, l);
        }
        let found = self.search_layer(&q, &ep, ef.max(k), 0, scratch);
        Ok(found
            .into_iter()
            .take(k)
            .map(|(d, id)| Hit {
                id,
                similarity: 1.0 - d.0,
            })
            .collect())
    }

    /// [`Hnsw::search_with`] with fresh scratch space (an allocation the size of the index).
    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Result<Vec<Hit>> {
        self.search_with(query, k, ef, &mut Scratch::default())
    }

    /// The exact `k` most similar vectors (best first): every vector compared.
    pub fn exact(&self, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        let q = normalized(query, self.dim)?;
        let mut all: Vec<(Dist, u32)> = (0..self.len() as u32)
            .map(|i| (self.dist(&q, i), i))
            .collect();
        let k = k.min(all.len());
        if k == 0 {
            return Ok(Vec::new());
        }
        if k < all.len() {
            all.select_nth_unstable(k - 1);
            all.truncate(k);
        }
        all.sort_unstable();
        Ok(all
            .into_iter()
            .map(|(d, id)| Hit {
                id,
                similarity: 1.0 - d.0,
            })
            .collect())
    }
}

/// Recall@k of `found` against `truth`: the share of the true ids found.
pub fn recall(found: &[Hit], truth: &[Hit]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    let hits = truth
        .iter()
        .filter(|t| found.iter().any(|f| f.id == t.id))
        .count();
    hits as f64 / truth.len() as f64
}

/// A clustered synthetic set of unit vectors, the kind the benchmarks use: `n` vectors around
/// `centres` random unit centres (drawn from `centre_seed`), each a centre plus Gaussian noise
/// of standard deviation `noise / sqrt(dim)` per coordinate (drawn from `seed`), normalised.
/// Data and queries share `centre_seed` and differ in `seed`.
pub fn clustered(
    n: usize,
    dim: usize,
    centres: usize,
    noise: f32,
    centre_seed: u64,
    seed: u64,
) -> Vec<Vec<f32>> {
    let centre_set = clustered_centres(dim, centres, centre_seed);
    let mut gauss = gaussian(seed);
    let scale = noise / (dim as f32).sqrt();
    (0..n)
        .map(|i| {
            let c = &centre_set[i % centre_set.len()];
            unit(c.iter().map(|x| x + scale * gauss()).collect())
        })
        .collect()
}

fn unit(v: Vec<f32>) -> Vec<f32> {
    let n = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.into_iter().map(|x| x / n).collect()
}

fn clustered_centres(dim: usize, centres: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut gauss = gaussian(seed);
    (0..centres.max(1))
        .map(|_| unit((0..dim).map(|_| gauss()).collect()))
        .collect()
}

/// A seeded standard normal generator (SplitMix64 and Box-Muller).
fn gaussian(seed: u64) -> impl FnMut() -> f32 {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    move || {
        let (u, v) = (next(), next());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_exact_search_finds() {
        let data = clustered(3_000, 48, 30, 0.35, 1, 1);
        let mut index = Hnsw::new(48, Params::default()).unwrap();
        for v in &data {
            index.insert(v).unwrap();
        }
        let queries = clustered(100, 48, 30, 0.35, 1, 2);
        let mut scratch = Scratch::default();
        let mut total = 0.0;
        for q in &queries {
            let found = index.search_with(q, 10, 64, &mut scratch).unwrap();
            let truth = index.exact(q, 10).unwrap();
            assert_eq!(found.len(), 10);
            assert!(found.windows(2).all(|w| w[0].similarity >= w[1].similarity));
            total += recall(&found, &truth);
        }
        let r = total / queries.len() as f64;
        assert!(r >= 0.95, "recall@10 {r}");
    }

    #[test]
    fn a_vector_finds_itself_and_the_build_is_deterministic() {
        let data = clustered(500, 16, 5, 0.5, 3, 3);
        let build = || {
            let mut index = Hnsw::new(16, Params::default()).unwrap();
            for v in &data {
                index.insert(v).unwrap();
            }
            index
        };
        let (a, b) = (build(), build());
        assert_eq!(a.base, b.base);
        for (i, v) in data.iter().enumerate().step_by(25) {
            let hit = a.search(v, 1, 32).unwrap()[0];
            assert_eq!(hit.id, i as u32);
            assert!((hit.similarity - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(Hnsw::new(0, Params::default()).is_err());
        assert!(
            Hnsw::new(
                4,
                Params {
                    m: 1,
                    ..Params::default()
                }
            )
            .is_err()
        );
        let mut index = Hnsw::new(4, Params::default()).unwrap();
        assert!(matches!(
            index.insert(&[1.0, 2.0, 3.0]),
            Err(Error::Dimension {
                expected: 4,
                found: 3
            })
        ));
        assert!(matches!(
            index.insert(&[1.0, f32::NAN, 0.0, 0.0]),
            Err(Error::NonFinite)
        ));
        assert!(matches!(index.insert(&[0.0; 4]), Err(Error::ZeroVector)));
        assert!(index.is_empty());
        assert!(
            index
                .search(&[1.0, 0.0, 0.0, 0.0], 3, 10)
                .unwrap()
                .is_empty()
        );
        index.insert(&[1.0, 0.0, 0.0, 0.0]).unwrap();
        assert!(index.search(&[1.0; 5], 3, 10).is_err());
        // More asked for than held: what is held.
        assert_eq!(index.search(&[0.0, 1.0, 0.0, 0.0], 3, 10).unwrap().len(), 1);
        assert_eq!(index.exact(&[0.0, 1.0, 0.0, 0.0], 3).unwrap().len(), 1);
    }

    #[test]
    fn dot_matches_a_plain_sum() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.05).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-3);
    }
}
