//! Gradient (update) compression: what a client sends instead of its dense `f32` update.
//!
//! Every method sits behind [`Compressor`]: [`Compressor::compress`] turns a flat update into
//! an encoded message, and [`decode`] (or [`Compressor::decompress`], which also checks the
//! method) turns a message back into a dense vector of an expected dimension. The encoded
//! length is the traffic ([`dense_bytes`] is the uncompressed size to compare with).
//!
//! Methods:
//! - [`TopK`]: the largest-magnitude fraction of coordinates, with error feedback (Deep
//!   Gradient Compression, Lin et al. 2018); the threshold is estimated from a random sample of
//!   the magnitudes rather than found by a full sort or select;
//! - [`RandomK`]: a seeded uniformly random fraction of coordinates, either scaled by `d / k`
//!   (unbiased) or with error feedback;
//! - [`Qsgd`]: stochastic quantization (Alistarh et al. 2017) to 8, 4 or 2 bits per coordinate
//!   (one sign-and-level code), scaled by the largest magnitude; unbiased;
//! - [`SignSgd`]: one bit per coordinate and one scale (the mean magnitude), with error
//!   feedback (Karimireddy et al. 2019, EF-SignSGD).
//!
//! Error feedback: the caller keeps one residual per client (a `Vec<f32>`, empty at first);
//! a method using it adds the residual to the update before compressing and stores back what
//! the message failed to carry. Methods without error feedback leave it untouched.
//!
//! Encodings (all little-endian; `varint` is unsigned LEB128, minimal):
//! - sparse (top-k, random-k): tag, `varint dim`, `varint count`, the first index as a
//!   varint and every further one as its (positive) gap from the previous, then `count` `f32`
//!   values;
//! - QSGD: tag, `varint dim`, `u8 bits`, `f32 scale`, then `dim` codes of `bits` bits packed
//!   low bits first (code `level + s` where `s = 2^(bits-1) - 1`; the code `2^bits - 1` is
//!   invalid);
//! - sign: tag, `varint dim`, `f32 scale`, then `dim` bits (1 = non-negative), low bit first.
//!
//! Decoders never trust a message: the dimension must be the expected one, counts must fit in
//! the bytes present, indices must increase strictly and stay below the dimension, values and
//! scales must be finite, padding must be zero and nothing may follow the payload; anything
//! else is a [`DecodeError`], never a panic.

use std::fmt::Debug;

use mesh_types::wire::put_varint;

use crate::error::{Error, Result};
use crate::rng::Rng;

const TAG_TOP_K: u8 = 1;
const TAG_RANDOM_K: u8 = 2;
const TAG_QSGD: u8 = 3;
const TAG_SIGN: u8 = 4;

/// Why a compressed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message ended before its payload did.
    #[error("truncated message: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Where reading stopped.
        offset: usize,
        /// How many bytes were missing.
        needed: usize,
    },
    /// The first byte names no known method.
    #[error("unknown compression method tag {0}")]
    UnknownMethod(u8),
    /// The message is of another method than the decoder expected.
    #[error("expected a {expected} message, got a {found} one")]
    WrongMethod {
        /// The decoder's method.
        expected: &'static str,
        /// The message's method.
        found: &'static str,
    },
    /// The message's dimension is not the model's.
    #[error("dimension {found}, expected {expected}")]
    Dimension {
        /// The model's dimension.
        expected: usize,
        /// The message's.
        found: u64,
    },
    /// A varint is longer than 10 bytes, overflows or is not minimally encoded.
    #[error("invalid varint at offset {offset}")]
    Varint {
        /// Where it started.
        offset: usize,
    },
    /// A sparse message claims more entries than coordinates.
    #[error("{count} entries for dimension {dim}")]
    TooManyEntries {
        /// The claimed count.
        count: u64,
        /// The dimension.
        dim: usize,
    },
    /// A sparse index is at or past the dimension.
    #[error("index {index} out of range for dimension {dim}")]
    IndexOutOfRange {
        /// The index.
        index: u64,
        /// The dimension.
        dim: usize,
    },
    /// A sparse index does not exceed the one before it.
    #[error("index number {position} does not increase")]
    NotIncreasing {
        /// Which entry (from 0).
        position: usize,
    },
    /// A value or scale is NaN or infinite (or a scale is negative).
    #[error("non-finite or negative {what}")]
    BadValue {
        /// Which field.
        what: &'static str,
    },
    /// A QSGD message with a bit width other than 2, 4 or 8.
    #[error("unsupported bit width {0}")]
    Bits(u8),
    /// A QSGD code outside the levels.
    #[error("invalid level code {code} at coordinate {position}")]
    Level {
        /// The coordinate.
        position: usize,
        /// The code found.
        code: u8,
    },
    /// Padding bits after the last code are not zero.
    #[error("non-zero padding bits")]
    Padding,
    /// Bytes follow the payload.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// One compression method.
pub trait Compressor: Debug + Sync {
    /// A short name for reports.
    fn name(&self) -> &'static str;

    /// Whether [`compress`](Self::compress) uses and updates the caller's residual.
    fn error_feedback(&self) -> bool;

    /// Compresses `update` into an encoded message. With error feedback, `residual` (empty
    /// or of `update`'s length; the caller keeps one per client) is added first and then
    /// replaced by what the message does not carry. `rng` drives sampling and stochastic
    /// rounding. Refuses non-finite input.
    fn compress(&self, update: &[f32], residual: &mut Vec<f32>, rng: &mut Rng) -> Result<Vec<u8>>;

    /// Decodes a message of this method into a dense vector of dimension `dim`.
    fn decompress(&self, bytes: &[u8], dim: usize) -> Result<Vec<f32>, DecodeError> {
        let found = method_name(*bytes.first().ok_or(DecodeError::Truncated {
            offset: 0,
            needed: 1,
        })?)?;
        if found != self.name() {
            return Err(DecodeError::WrongMethod {
                expected: self.name(),
                found,
            });
        }
        decode(bytes, dim)
    }
}

/// The size of `dim` uncompressed `f32` values: what compression is measured against.
pub fn dense_bytes(dim: usize) -> usize {
    dim * 4
}

fn method_name(tag: u8) -> Result<&'static str, DecodeError> {
    match tag {
        TAG_TOP_K => Ok("top-k"),
        TAG_RANDOM_K => Ok("random-k"),
        TAG_QSGD => Ok("qsgd"),
        TAG_SIGN => Ok("sign"),
        t => Err(DecodeError::UnknownMethod(t)),
    }
}

/// Decodes a message of any method into a dense vector, which must have dimension `dim`.
pub fn decode(bytes: &[u8], dim: usize) -> Result<Vec<f32>, DecodeError> {
    let mut r = Reader::new(bytes);
    let tag = r.u8()?;
    method_name(tag)?;
    let found = r.varint()?;
    if found != dim as u64 {
        return Err(DecodeError::Dimension {
            expected: dim,
            found,
        });
    }
    let out = match tag {
        TAG_TOP_K | TAG_RANDOM_K => decode_sparse(&mut r, dim)?,
        TAG_QSGD => decode_qsgd(&mut r, dim)?,
        _ => decode_sign(&mut r, dim)?,
    };
    if r.remaining() != 0 {
        return Err(DecodeError::Trailing(r.remaining()));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Top-k

/// Top-k sparsification with error feedback: keeps the `fraction` of coordinates (at least
/// one) with the largest magnitude after adding the residual.
///
/// The k-th largest magnitude is estimated from a random sample of about 1% of the coordinates
/// (at least [`TopK::MIN_SAMPLE`]); one pass collects the coordinates above a threshold set a
/// little below that estimate, and if they are more than `k` the exact top `k` among those
/// few is taken. If the estimate was too high (fewer than `k` collected) the threshold is
/// lowered and the pass repeated; a full select over all magnitudes is the last resort.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopK {
    /// The fraction of coordinates sent, in (0, 1].
    pub fraction: f64,
}

impl TopK {
    /// The smallest sample the threshold is estimated from.
    pub const MIN_SAMPLE: usize = 1024;

    /// The number of coordinates kept out of `dim`.
    pub fn k(&self, dim: usize) -> usize {
        keep_count(self.fraction, dim)
    }
}

fn keep_count(fraction: f64, dim: usize) -> usize {
    if dim == 0 {
        return 0;
    }
    ((fraction * dim as f64).ceil() as usize).clamp(1, dim)
}

/// Checks a sparse method's fraction and that indices of `dim` fit the `u32` they are kept in.
fn check_sparse(fraction: f64, dim: usize) -> Result<()> {
    if u32::try_from(dim).is_err() {
        return Err(Error::invalid(
            "compression",
            format!("{dim} coordinates: sparse methods take at most 2^32 - 1"),
        ));
    }
    if fraction > 0.0 && fraction <= 1.0 {
        Ok(())
    } else {
        Err(Error::invalid(
            "compression",
            format!("fraction {fraction} outside (0, 1]"),
        ))
    }
}

/// Magnitude as ordered integer bits (finite inputs only: integer order is float order).
#[inline]
fn mag(x: f32) -> u32 {
    x.to_bits() & 0x7fff_ffff
}

/// Adds the residual into `acc` (a copy of the update) or starts it, refusing non-finite values.
fn accumulate(update: &[f32], residual: &mut Vec<f32>) -> Result<()> {
    if residual.is_empty() {
        residual.resize(update.len(), 0.0);
    } else if residual.len() != update.len() {
        return Err(Error::invalid(
            "compression",
            format!(
                "residual of {} values for an update of {}",
                residual.len(),
                update.len()
            ),
        ));
    }
    let mut finite = true;
    for (r, &u) in residual.iter_mut().zip(update) {
        *r += u;
        finite &= r.is_finite();
    }
    if !finite {
        residual.iter_mut().for_each(|r| *r = 0.0);
        return Err(Error::invalid("compression", "non-finite value in update"));
    }
    Ok(())
}

fn check_finite(update: &[f32]) -> Result<()> {
    if update.iter().fold(true, |ok, x| ok & x.is_finite()) {
        Ok(())
    } else {
        Err(Error::invalid("compression", "non-finite value in update"))
    }
}

/// Indices (increasing) of the `k` largest magnitudes of `x`, with a sampled threshold.
pub fn top_k_indices(x: &[f32], k: usize, rng: &mut Rng) -> Vec<u32> {
    let d = x.len();
    if k == 0 || d == 0 {
        return Vec::new();
    }
    if k >= d {
        return (0..d as u32).collect();
    }
    let sample = sample_magnitudes(d, k, rng, |i| x[i]);
    finish_top_k(x, k, sample, None)
}

/// Magnitudes of a sample of `d` coordinates, for a threshold at about the `k`-th largest:
/// 1% of them, or fewer when that is more than enough (the sample's `k`-th largest rank,
/// scaled, is then at least [`SAMPLE_RANK`], about 5% relative error), and at least
/// [`TopK::MIN_SAMPLE`]. Runs of 16 consecutive coordinates (one cache line of `f32`) at
/// uniformly drawn aligned positions, so that sampling costs one memory access per 16 values
/// rather than one per value; `value(i)` gives coordinate `i`.
fn sample_magnitudes(d: usize, k: usize, rng: &mut Rng, value: impl Fn(usize) -> f32) -> Vec<u32> {
    const RUN: usize = 16;
    let enough = SAMPLE_RANK.saturating_mul(d) / k.max(1);
    let m = (d / 100).min(enough).max(TopK::MIN_SAMPLE).min(d);
    let lines = d.div_ceil(RUN) as u64;
    let mut sample = Vec::with_capacity(m + RUN);
    while sample.len() < m {
        let start = rng.below(lines) as usize * RUN;
        for i in start..(start + RUN).min(d) {
            sample.push(mag(value(i)));
        }
    }
    sample.truncate(m);
    sample
}

/// The rank (from the top) that the `k`-th largest coordinate has, scaled, in a sample big
/// enough: its relative error is about `1 / sqrt(SAMPLE_RANK)`, well inside the 10% margin of
/// [`initial_want`] (a second pass is needed in about 2% of calls).
const SAMPLE_RANK: usize = 400;

/// The rank within the sample of the first threshold tried: the k-th largest scaled to the
/// sample, aimed 10% generous so that one pass usually collects a little more than `k`.
fn initial_want(k: usize, m: usize, d: usize) -> usize {
    ((k as f64 * 1.1 * m as f64 / d as f64).ceil() as usize).max(1)
}

/// The `want`-th largest of the sample (0 when it asks for the whole sample or more).
fn rank_threshold(sample: &mut [u32], want: usize) -> u32 {
    let m = sample.len();
    if want >= m {
        return 0;
    }
    let (_, t, _) = sample.select_nth_unstable(m - want);
    *t
}

/// Coordinates collected by a pass: their indices (increasing) and, alongside, their
/// magnitudes, taken while the block was in cache so that trimming to `k` reads no
/// coordinate again.
#[derive(Debug, Default)]
struct Candidates {
    idx: Vec<u32>,
    mags: Vec<u32>,
}

impl Candidates {
    fn with_capacity(n: usize) -> Self {
        Self {
            idx: Vec::with_capacity(n),
            mags: Vec::with_capacity(n),
        }
    }

    fn len(&self) -> usize {
        self.idx.len()
    }

    fn clear(&mut self) {
        self.idx.clear();
        self.mags.clear();
    }

    fn append(&mut self, other: &Self) {
        self.idx.extend_from_slice(&other.idx);
        self.mags.extend_from_slice(&other.mags);
    }
}

/// Finishes a top-k selection from a sample of magnitudes: `first` is a pass already made
/// (its threshold and what it collected). Lowers the threshold while too few are collected,
/// trims the candidates to exactly `k`, and falls back to an exact select.
fn finish_top_k(
    x: &[f32],
    k: usize,
    mut sample: Vec<u32>,
    first: Option<(u32, Candidates)>,
) -> Vec<u32> {
    let d = x.len();
    let m = sample.len();
    let mut want = initial_want(k, m, d);
    let mut out = Candidates::with_capacity(k + k / 2 + 64);
    let mut attempts = 0;
    if let Some((threshold, collected)) = first {
        out = collected;
        if out.len() >= k {
            return trim_to_k(out, k);
        }
        attempts = if threshold == 0 { 4 } else { 1 };
        want = (want * 4).min(m);
    }
    while attempts < 4 {
        attempts += 1;
        let threshold = rank_threshold(&mut sample, want);
        out.clear();
        collect_at_least(x, threshold, &mut out);
        if out.len() >= k {
            return trim_to_k(out, k);
        }
        if threshold == 0 {
            break;
        }
        want = (want * 4).min(m);
    }
    // Last resort (adversarial distributions): an exact select.
    let mut all: Vec<u32> = x.iter().map(|&v| mag(v)).collect();
    let (_, t, _) = all.select_nth_unstable(d - k);
    let threshold = *t;
    out.clear();
    collect_at_least(x, threshold, &mut out);
    trim_to_k(out, k)
}

/// Blocks of this many coordinates are checked for a candidate first (a loop the compiler
/// vectorizes); only blocks holding one are looked into.
const SCAN_BLOCK: usize = 16;
/// Independent lanes of the block checks: lane-wise accumulators are what lets the compiler
/// vectorize (a single running maximum is a serial chain of dependent instructions, about
/// four cycles per coordinate, since a float reduction may not be reordered).
const LANES: usize = 8;
/// Magnitude bits at or above this are infinite or NaN.
const NON_FINITE: u32 = 0x7f80_0000;

/// Whether a magnitude reaches `threshold`, as a lane flag. Magnitudes and thresholds are
/// below 2^31, so a signed comparison (the one baseline x86-64 vectorizes) is exact.
#[inline]
fn reaches(v: f32, threshold: i32) -> u32 {
    u32::from(mag(v) as i32 >= threshold)
}

/// Whether any coordinate of `block` has a magnitude at or above `threshold`.
#[inline]
fn block_reaches(block: &[f32], threshold: i32) -> bool {
    let mut hit = [0u32; LANES];
    let mut chunks = block.chunks_exact(LANES);
    for c in &mut chunks {
        for (h, &v) in hit.iter_mut().zip(c) {
            *h |= reaches(v, threshold);
        }
    }
    for &v in chunks.remainder() {
        hit[0] |= reaches(v, threshold);
    }
    hit.iter().fold(0, |a, &h| a | h) != 0
}

/// Pushes the indices of `x` whose magnitude is at least `threshold`, in order.
fn collect_at_least(x: &[f32], threshold: u32, out: &mut Candidates) {
    let t = threshold.min(i32::MAX as u32) as i32;
    for (b, block) in x.chunks(SCAN_BLOCK).enumerate() {
        if block_reaches(block, t) {
            push_block(block, b * SCAN_BLOCK, threshold, out);
        }
    }
}

/// Vectors at least this long have their fused pass split over two threads: one core does
/// not reach the memory bandwidth of this pass (two reads and a write per coordinate).
const SPLIT_MIN: usize = 1 << 22;

/// [`accumulate_and_collect`], over two threads for long vectors when the machine has two
/// cores or more: each half (split at a block boundary) is added and scanned on its own, and
/// the second half's candidates follow the first's, so the result is the same as one pass.
fn accumulate_and_collect_split(
    update: &[f32],
    residual: &mut [f32],
    threshold: u32,
    out: &mut Candidates,
) -> bool {
    let d = residual.len();
    static PARALLEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let parallel =
        *PARALLEL.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2));
    if d < SPLIT_MIN || !parallel {
        return accumulate_and_collect(update, residual, threshold, out, 0);
    }
    let mid = (d / 2).next_multiple_of(SCAN_BLOCK);
    let (r0, r1) = residual.split_at_mut(mid);
    let (u0, u1) = update.split_at(mid);
    let mut second = Candidates::with_capacity(out.idx.capacity() / 2 + 64);
    let (ok0, ok1) = std::thread::scope(|s| {
        let other = s.spawn(|| accumulate_and_collect(u1, r1, threshold, &mut second, mid));
        let ok0 = accumulate_and_collect(u0, r0, threshold, out, 0);
        // The spawned pass cannot panic (no indexing out of bounds, no allocation failure
        // that would not abort): a panic there is a bug, reported as a failed pass.
        (ok0, other.join().unwrap_or(false))
    });
    out.append(&second);
    ok0 && ok1
}

/// Adds `update` into `residual` and collects the indices at or above `threshold` in the same
/// pass (the fused error-feedback pass of [`TopK`]); false if a sum is not finite.
/// Indices are offset by `base`.
fn accumulate_and_collect(
    update: &[f32],
    residual: &mut [f32],
    threshold: u32,
    out: &mut Candidates,
    base: usize,
) -> bool {
    // A non-finite sum has a magnitude at or above NON_FINITE, so against a threshold clamped
    // there it always counts as a hit: only the blocks looked into can hold one, and the hot
    // loop needs no finiteness check of its own. (Clamping changes no finite hit: finite
    // magnitudes are all below NON_FINITE.)
    let t = threshold.min(NON_FINITE) as i32;
    let mut finite = true;
    for (b, (r, u)) in residual
        .chunks_mut(SCAN_BLOCK)
        .zip(update.chunks(SCAN_BLOCK))
        .enumerate()
    {
        // One pass: add, then check each sum lane-wise for a candidate.
        let mut hit = [0u32; LANES];
        let mut rc = r.chunks_exact_mut(LANES);
        let mut uc = u.chunks_exact(LANES);
        for (rs, us) in (&mut rc).zip(&mut uc) {
            for ((rv, &uv), h) in rs.iter_mut().zip(us).zip(hit.iter_mut()) {
                *rv += uv;
                *h |= reaches(*rv, t);
            }
        }
        for (rv, &uv) in rc.into_remainder().iter_mut().zip(uc.remainder()) {
            *rv += uv;
            hit[0] |= reaches(*rv, t);
        }
        if hit.iter().fold(0, |a, &h| a | h) != 0 {
            finite &= r.iter().all(|&v| mag(v) < NON_FINITE);
            push_block(r, base + b * SCAN_BLOCK, threshold, out);
        }
    }
    finite
}

/// Appends the indices (offset by `base`) of `block`'s magnitudes at or above `threshold`
/// (a block that got here usually holds one or two). Branch-free: every index is written and
/// the end advances only past the ones that qualify, since which ones do is unpredictable.
fn push_block(block: &[f32], base: usize, threshold: u32, out: &mut Candidates) {
    let start = out.len();
    out.idx.resize(start + block.len(), 0);
    out.mags.resize(start + block.len(), 0);
    let mut end = start;
    for (i, &v) in block.iter().enumerate() {
        let m = mag(v);
        out.idx[end] = (base + i) as u32;
        out.mags[end] = m;
        end += usize::from(m >= threshold);
    }
    out.idx.truncate(end);
    out.mags.truncate(end);
}

/// The indices of the `k` largest magnitudes among the candidates (increasing; ties broken
/// towards lower indices).
fn trim_to_k(c: Candidates, k: usize) -> Vec<u32> {
    let Candidates { mut idx, mags } = c;
    let n = idx.len();
    if n <= k {
        return idx;
    }
    // The select works on a copy, so the magnitudes stay in `idx`'s order for the filter.
    let mut order = mags.clone();
    let (_, t, _) = order.select_nth_unstable(n - k);
    let kth = *t;
    let above = order[n - k..].iter().filter(|&&m| m > kth).count();
    let mut ties = k - above;
    let mut kept = 0;
    for j in 0..n {
        let m = mags[j];
        let keep = m > kth || (m == kth && ties > 0);
        if m == kth && keep {
            ties -= 1;
        }
        idx[kept] = idx[j];
        kept += usize::from(keep);
    }
    idx.truncate(kept);
    idx
}

impl Compressor for TopK {
    fn name(&self) -> &'static str {
        "top-k"
    }

    fn error_feedback(&self) -> bool {
        true
    }

    fn compress(&self, update: &[f32], residual: &mut Vec<f32>, rng: &mut Rng) -> Result<Vec<u8>> {
        check_sparse(self.fraction, update.len())?;
        let (d, k) = (update.len(), self.k(update.len()));
        let idx = if k >= d || residual.len() != d {
            // Also the first call (empty residual) and the error of a residual of another length.
            accumulate(update, residual)?;
            top_k_indices(residual, k, rng)
        } else {
            // The sample is drawn from update + residual before the fused pass computes it.
            let mut sample = sample_magnitudes(d, k, rng, |i| residual[i] + update[i]);
            let want = initial_want(k, sample.len(), d);
            let threshold = rank_threshold(&mut sample, want);
            let mut collected = Candidates::with_capacity(k + k / 2 + 64);
            if !accumulate_and_collect_split(update, residual, threshold, &mut collected) {
                residual.iter_mut().for_each(|r| *r = 0.0);
                return Err(Error::invalid("compression", "non-finite value in update"));
            }
            finish_top_k(residual, k, sample, Some((threshold, collected)))
        };
        // Each sent coordinate leaves the residual as it is encoded: one pass over the
        // scattered coordinates instead of two.
        Ok(encode_sparse(
            TAG_TOP_K,
            d,
            &idx,
            |i| std::mem::take(&mut residual[i]),
            1.0,
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Random-k

/// Random-k sparsification: a uniformly random `fraction` of the coordinates (at least one),
/// drawn from the caller's [`Rng`]. Without error feedback the values are scaled by `d / k`,
/// which makes the message an unbiased estimate of the update; with it they are sent as they
/// are and the rest goes to the residual.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomK {
    /// The fraction of coordinates sent, in (0, 1].
    pub fraction: f64,
    /// Error feedback (no scaling) instead of unbiased scaling.
    pub error_feedback: bool,
}

/// `k` distinct indices below `d`, increasing, uniformly (Floyd's algorithm on a bitmap).
pub fn random_k_indices(d: usize, k: usize, rng: &mut Rng) -> Vec<u32> {
    let k = k.min(d);
    let mut bits = vec![0u64; d.div_ceil(64)];
    for j in d - k..d {
        let t = rng.below(j as u64 + 1) as usize;
        let pick = if bits[t / 64] >> (t % 64) & 1 == 1 {
            j
        } else {
            t
        };
        bits[pick / 64] |= 1 << (pick % 64);
    }
    let mut out = Vec::with_capacity(k);
    for (w, &word) in bits.iter().enumerate() {
        let mut word = word;
        while word != 0 {
            out.push((w * 64) as u32 + word.trailing_zeros());
            word &= word - 1;
        }
    }
    out
}

impl Compressor for RandomK {
    fn name(&self) -> &'static str {
        "random-k"
    }

    fn error_feedback(&self) -> bool {
        self.error_feedback
    }

    fn compress(&self, update: &[f32], residual: &mut Vec<f32>, rng: &mut Rng) -> Result<Vec<u8>> {
        check_sparse(self.fraction, update.len())?;
        let d = update.len();
        let k = keep_count(self.fraction, d);
        let idx = random_k_indices(d, k, rng);
        if self.error_feedback {
            accumulate(update, residual)?;
            Ok(encode_sparse(
                TAG_RANDOM_K,
                d,
                &idx,
                |i| std::mem::take(&mut residual[i]),
                1.0,
            ))
        } else {
            check_finite(update)?;
            let scale = if k == 0 { 1.0 } else { d as f32 / k as f32 };
            Ok(encode_sparse(TAG_RANDOM_K, d, &idx, |i| update[i], scale))
        }
    }
}

fn encode_sparse(
    tag: u8,
    dim: usize,
    idx: &[u32],
    mut value: impl FnMut(usize) -> f32,
    scale: f32,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + idx.len() * 6);
    out.push(tag);
    put_varint(&mut out, dim as u64);
    put_varint(&mut out, idx.len() as u64);
    let mut prev = 0u32;
    for (n, &i) in idx.iter().enumerate() {
        put_varint(&mut out, u64::from(if n == 0 { i } else { i - prev }));
        prev = i;
    }
    for &i in idx {
        out.extend_from_slice(&(value(i as usize) * scale).to_le_bytes());
    }
    out
}

fn decode_sparse(r: &mut Reader<'_>, dim: usize) -> Result<Vec<f32>, DecodeError> {
    let count = r.varint()?;
    // Each entry takes at least one index byte and four value bytes.
    if count > dim as u64 {
        return Err(DecodeError::TooManyEntries { count, dim });
    }
    let count = count as usize;
    let least = count.saturating_mul(5);
    if r.remaining() < least {
        return Err(DecodeError::Truncated {
            offset: r.pos(),
            needed: least - r.remaining(),
        });
    }
    let mut idx = Vec::with_capacity(count);
    let mut prev = 0u64;
    for n in 0..count {
        let v = r.varint()?;
        let i = if n == 0 {
            v
        } else {
            if v == 0 {
                return Err(DecodeError::NotIncreasing { position: n });
            }
            prev.checked_add(v).ok_or(DecodeError::IndexOutOfRange {
                index: u64::MAX,
                dim,
            })?
        };
        if i >= dim as u64 {
            return Err(DecodeError::IndexOutOfRange { index: i, dim });
        }
        idx.push(i as usize);
        prev = i;
    }
    let values = r.bytes(count * 4)?;
    let mut out = vec![0.0f32; dim];
    for (&i, v) in idx.iter().zip(values.chunks_exact(4)) {
        let v = f32::from_le_bytes([v[0], v[1], v[2], v[3]]);
        if !v.is_finite() {
            return Err(DecodeError::BadValue { what: "value" });
        }
        out[i] = v;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// QSGD

/// QSGD-style stochastic quantization: each coordinate becomes `scale * sign * l / s` with
/// `s = 2^(bits-1) - 1` levels (127, 7 or 1) and `l` drawn so that its expectation is
/// `s * |x| / scale` (unbiased stochastic rounding). The scale sent is the largest magnitude
/// (the max-norm variant, lower variance than the L2 norm at few bits). No error feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qsgd {
    /// Bits per coordinate: 2, 4 or 8.
    pub bits: u8,
}

impl Compressor for Qsgd {
    fn name(&self) -> &'static str {
        "qsgd"
    }

    fn error_feedback(&self) -> bool {
        false
    }

    fn compress(&self, update: &[f32], _residual: &mut Vec<f32>, rng: &mut Rng) -> Result<Vec<u8>> {
        let bits = self.bits;
        if !matches!(bits, 2 | 4 | 8) {
            return Err(Error::invalid(
                "compression",
                format!("QSGD with {bits} bits (2, 4 or 8)"),
            ));
        }
        check_finite(update)?;
        let d = update.len();
        let s = (1u32 << (bits - 1)) - 1;
        let scale = update.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
        let mut out = Vec::with_capacity(12 + (d * bits as usize).div_ceil(8));
        out.push(TAG_QSGD);
        put_varint(&mut out, d as u64);
        out.push(bits);
        out.extend_from_slice(&scale.to_le_bytes());
        let per_byte = 8 / bits as usize;
        let factor = if scale > 0.0 { s as f32 / scale } else { 0.0 };
        let mut uniforms = Uniforms::default();
        for chunk in update.chunks(per_byte) {
            let mut byte = 0u8;
            for (j, &x) in chunk.iter().enumerate() {
                let r = (x.abs() * factor).min(s as f32);
                let low = r.floor();
                let level = low as u32 + u32::from(uniforms.next(rng) < r - low);
                let level = level.min(s);
                let code = if x < 0.0 { s - level } else { s + level };
                byte |= (code as u8) << (j * bits as usize);
            }
            out.push(byte);
        }
        Ok(out)
    }
}

/// Uniform `f32`s in [0, 1) from 24-bit halves of `u64` draws.
#[derive(Default)]
struct Uniforms {
    spare: Option<u32>,
}

impl Uniforms {
    #[inline]
    fn next(&mut self, rng: &mut Rng) -> f32 {
        let bits = match self.spare.take() {
            Some(b) => b,
            None => {
                let v = rng.next_u64();
                self.spare = Some((v >> 40) as u32);
                (v >> 8) as u32 & 0x00ff_ffff
            }
        };
        bits as f32 * (1.0 / (1u32 << 24) as f32)
    }
}

fn decode_qsgd(r: &mut Reader<'_>, dim: usize) -> Result<Vec<f32>, DecodeError> {
    let bits = r.u8()?;
    if !matches!(bits, 2 | 4 | 8) {
        return Err(DecodeError::Bits(bits));
    }
    let scale = r.f32()?;
    if !(scale.is_finite() && scale >= 0.0) {
        return Err(DecodeError::BadValue { what: "scale" });
    }
    let per_byte = 8 / bits as usize;
    let packed = r.bytes(dim.div_ceil(per_byte))?;
    let s = (1u32 << (bits - 1)) - 1;
    let mask = ((1u32 << bits) - 1) as u8;
    let unit = if s > 0 { scale / s as f32 } else { 0.0 };
    let mut out = Vec::with_capacity(dim);
    for (b, &byte) in packed.iter().enumerate() {
        for j in 0..per_byte {
            let code = (byte >> (j * bits as usize)) & mask;
            let position = b * per_byte + j;
            if position >= dim {
                if code != 0 {
                    return Err(DecodeError::Padding);
                }
                continue;
            }
            if u32::from(code) > 2 * s {
                return Err(DecodeError::Level { position, code });
            }
            out.push((i64::from(code) - i64::from(s)) as f32 * unit);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Sign

/// One-bit sign compression with a scale and error feedback (EF-SignSGD): with `p` the update
/// plus residual, the message is `mean(|p|) * sign(p)` (zero counts as positive), and the
/// residual becomes `p` minus that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignSgd;

impl Compressor for SignSgd {
    fn name(&self) -> &'static str {
        "sign"
    }

    fn error_feedback(&self) -> bool {
        true
    }

    fn compress(&self, update: &[f32], residual: &mut Vec<f32>, _rng: &mut Rng) -> Result<Vec<u8>> {
        accumulate(update, residual)?;
        let d = update.len();
        let scale = if d == 0 {
            0.0
        } else {
            // Summed in f64 per block: long vectors do not lose the small values.
            let sum: f64 = residual
                .chunks(1024)
                .map(|c| f64::from(c.iter().map(|x| x.abs()).sum::<f32>()))
                .sum();
            (sum / d as f64) as f32
        };
        let mut out = Vec::with_capacity(12 + d.div_ceil(8));
        out.push(TAG_SIGN);
        put_varint(&mut out, d as u64);
        out.extend_from_slice(&scale.to_le_bytes());
        for chunk in residual.chunks_mut(8) {
            let mut byte = 0u8;
            for (j, p) in chunk.iter_mut().enumerate() {
                let positive = *p >= 0.0;
                byte |= u8::from(positive) << j;
                *p -= if positive { scale } else { -scale };
            }
            out.push(byte);
        }
        Ok(out)
    }
}

fn decode_sign(r: &mut Reader<'_>, dim: usize) -> Result<Vec<f32>, DecodeError> {
    let scale = r.f32()?;
    if !(scale.is_finite() && scale >= 0.0) {
        return Err(DecodeError::BadValue { what: "scale" });
    }
    let packed = r.bytes(dim.div_ceil(8))?;
    if !dim.is_multiple_of(8) && packed.last().is_some_and(|&b| b >> (dim % 8) != 0) {
        return Err(DecodeError::Padding);
    }
    let mut out = Vec::with_capacity(dim);
    for &byte in packed {
        for j in 0..8 {
            if out.len() < dim {
                out.push(if byte >> j & 1 == 1 { scale } else { -scale });
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Bytes

/// `mesh_types::wire::Reader` with this module's errors (and its own varint, whose
/// truncation error names the missing byte).
struct Reader<'a> {
    inner: mesh_types::wire::Reader<'a>,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self {
            inner: mesh_types::wire::Reader::new(buf),
        }
    }

    fn pos(&self) -> usize {
        self.inner.position()
    }

    fn remaining(&self) -> usize {
        self.inner.remaining()
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (offset, remaining) = (self.pos(), self.remaining());
        self.inner.bytes(n).map_err(|_| DecodeError::Truncated {
            offset,
            needed: n.saturating_sub(remaining),
        })
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    fn f32(&mut self) -> Result<f32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos();
        let mut v = 0u64;
        for n in 0..10 {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            if n == 9 && part > 1 {
                return Err(DecodeError::Varint { offset: start });
            }
            v |= part << (7 * n);
            if b & 0x80 == 0 {
                // Minimal: no trailing zero group (except the single byte 0).
                if n > 0 && b == 0 {
                    return Err(DecodeError::Varint { offset: start });
                }
                return Ok(v);
            }
        }
        Err(DecodeError::Varint { offset: start })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_fused_pass_equals_one_pass() {
        for d in [SPLIT_MIN, SPLIT_MIN + 37] {
            let update = gaussian(d, 3);
            let start = gaussian(d, 4);
            let threshold = mag(2.5);
            let (mut one, mut two) = (start.clone(), start);
            let (mut a, mut b) = (Candidates::default(), Candidates::default());
            assert!(accumulate_and_collect(
                &update, &mut one, threshold, &mut a, 0
            ));
            assert!(accumulate_and_collect_split(
                &update, &mut two, threshold, &mut b
            ));
            assert_eq!(one, two);
            assert_eq!((&a.idx, &a.mags), (&b.idx, &b.mags));
            assert!(a.len() > 1000);
            assert!(
                a.idx
                    .iter()
                    .zip(&a.mags)
                    .all(|(&i, &m)| m == mag(one[i as usize]))
            );
            // A non-finite sum anywhere is found, whatever the threshold (even one that is
            // itself not finite).
            for (at, v) in [
                (d - 1, f32::INFINITY),
                (5, f32::NAN),
                (d / 2 + 3, f32::NEG_INFINITY),
            ] {
                for t in [threshold, mag(f32::INFINITY), u32::MAX >> 1] {
                    let mut bad = update.clone();
                    bad[at] = v;
                    assert!(!accumulate_and_collect_split(
                        &bad,
                        &mut two.clone(),
                        t,
                        &mut b
                    ));
                    assert!(!accumulate_and_collect(
                        &bad,
                        &mut one.clone(),
                        t,
                        &mut a,
                        0
                    ));
                }
            }
            // Through the compressor: the error, and a residual that stays usable.
            let mut residual = vec![0.0; d];
            let mut bad = update.clone();
            bad[d - 7] = f32::NAN;
            let mut rng = Rng::new(1);
            assert!(
                TopK { fraction: 0.01 }
                    .compress(&update, &mut residual, &mut rng)
                    .is_ok()
            );
            assert!(
                TopK { fraction: 0.01 }
                    .compress(&bad, &mut residual, &mut rng)
                    .is_err()
            );
            assert!(residual.iter().all(|v| v.is_finite()));
        }
    }

    fn gaussian(d: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..d).map(|_| rng.normal() as f32).collect()
    }

    fn all() -> Vec<Box<dyn Compressor>> {
        vec![
            Box::new(TopK { fraction: 0.01 }),
            Box::new(TopK { fraction: 0.3 }),
            Box::new(RandomK {
                fraction: 0.05,
                error_feedback: false,
            }),
            Box::new(RandomK {
                fraction: 0.05,
                error_feedback: true,
            }),
            Box::new(Qsgd { bits: 8 }),
            Box::new(Qsgd { bits: 4 }),
            Box::new(Qsgd { bits: 2 }),
            Box::new(SignSgd),
        ]
    }

    #[test]
    fn every_method_round_trips_to_the_right_shape() {
        let mut rng = Rng::new(1);
        for d in [0usize, 1, 7, 8, 9, 100, 5000] {
            let g = gaussian(d, d as u64);
            for c in all() {
                let mut residual = Vec::new();
                let bytes = c.compress(&g, &mut residual, &mut rng).unwrap();
                let back = c.decompress(&bytes, d).unwrap();
                assert_eq!(back.len(), d, "{}", c.name());
                assert!(back.iter().all(|x| x.is_finite()), "{}", c.name());
                if c.error_feedback() {
                    // What was sent plus what is kept back is exactly the update.
                    for ((b, r), x) in back.iter().zip(&residual).zip(&g) {
                        assert!((b + r - x).abs() <= 1e-5 * (1.0 + x.abs()), "{}", c.name());
                    }
                } else {
                    assert!(residual.is_empty(), "{}", c.name());
                }
                // Another dimension or method is refused.
                assert!(matches!(
                    decode(&bytes, d + 1),
                    Err(DecodeError::Dimension { .. })
                ));
            }
        }
        let bytes = SignSgd.compress(&[1.0], &mut Vec::new(), &mut rng).unwrap();
        assert!(matches!(
            Qsgd { bits: 2 }.decompress(&bytes, 1),
            Err(DecodeError::WrongMethod { .. })
        ));
    }

    #[test]
    fn compressed_sizes_are_compact() {
        let d = 100_000;
        let g = gaussian(d, 3);
        let mut rng = Rng::new(2);
        let size =
            |c: &dyn Compressor, rng: &mut Rng| c.compress(&g, &mut Vec::new(), rng).unwrap().len();
        // 1,000 entries: 4 bytes of value and 1-2 bytes of index gap each.
        let top = size(&TopK { fraction: 0.01 }, &mut rng);
        assert!(top < 1000 * 6 + 16, "{top}");
        assert_eq!(size(&Qsgd { bits: 8 }, &mut rng), 1 + 3 + 1 + 4 + d);
        assert_eq!(size(&Qsgd { bits: 4 }, &mut rng), 1 + 3 + 1 + 4 + d / 2);
        assert_eq!(size(&Qsgd { bits: 2 }, &mut rng), 1 + 3 + 1 + 4 + d / 4);
        assert_eq!(size(&SignSgd, &mut rng), 1 + 3 + 4 + d / 8);
    }

    #[test]
    fn top_k_picks_the_largest_magnitudes() {
        for (d, fraction, seed) in [
            (100_000, 0.01, 1),
            (100_000, 0.001, 2),
            (20_000, 0.2, 3),
            (3_000, 0.01, 4),
        ] {
            let g = gaussian(d, seed);
            let k = TopK { fraction }.k(d);
            let idx = top_k_indices(&g, k, &mut Rng::new(seed));
            assert_eq!(idx.len(), k);
            assert!(idx.windows(2).all(|w| w[0] < w[1]));
            let mut sorted: Vec<f32> = g.iter().map(|x| x.abs()).collect();
            sorted.sort_unstable_by(|a, b| b.total_cmp(a));
            let kth = sorted[k - 1];
            // Exact: every picked value is at least the k-th largest magnitude.
            assert!(
                idx.iter().all(|&i| g[i as usize].abs() >= kth),
                "{d} {fraction}"
            );
        }
        // Heavy ties and adversarial shapes: zeros everywhere but a few spikes; all equal.
        let mut spiky = vec![0.0f32; 50_000];
        for i in (0..50_000).step_by(997) {
            spiky[i] = i as f32;
        }
        let idx = top_k_indices(&spiky, 10, &mut Rng::new(5));
        assert_eq!(idx.len(), 10);
        assert!(idx.iter().all(|&i| i >= 997 * 40), "{idx:?}");
        let flat = vec![1.5f32; 10_000];
        assert_eq!(top_k_indices(&flat, 100, &mut Rng::new(6)).len(), 100);
    }

    #[test]
    fn top_k_error_feedback_eventually_sends_everything() {
        // A constant update: with error feedback every coordinate's total reaches the
        // receiver, up to what is still in the residual.
        let d = 1000;
        let g = gaussian(d, 9);
        let c = TopK { fraction: 0.05 };
        let mut residual = Vec::new();
        let mut received = vec![0.0f32; d];
        let mut rng = Rng::new(1);
        for round in 0..50 {
            let acc: Vec<f32> = if round == 0 {
                g.clone()
            } else {
                g.iter().zip(&residual).map(|(x, r)| x + r).collect()
            };
            let bytes = c.compress(&g, &mut residual, &mut rng).unwrap();
            let sent = c.decompress(&bytes, d).unwrap();
            // The fused pass sends exactly the top k of update + residual.
            let mut mags: Vec<f32> = acc.iter().map(|x| x.abs()).collect();
            mags.sort_unstable_by(|a, b| b.total_cmp(a));
            let kth = mags[c.k(d) - 1];
            let picked: Vec<usize> = (0..d).filter(|&i| sent[i] != 0.0).collect();
            assert_eq!(picked.len(), c.k(d));
            assert!(
                picked
                    .iter()
                    .all(|&i| acc[i].abs() >= kth && sent[i] == acc[i])
            );
            for (r, x) in received.iter_mut().zip(sent) {
                *r += x;
            }
        }
        for ((got, res), x) in received.iter().zip(&residual).zip(&g) {
            assert!((got + res - 50.0 * x).abs() < 1e-3, "{got} {res} {x}");
        }
        // The residual stays bounded (about d / k rounds of a coordinate) instead of growing
        // with the rounds: most of the total has been sent.
        let kept: f32 = residual.iter().map(|r| r.abs()).sum();
        let total: f32 = g.iter().map(|x| 50.0 * x.abs()).sum();
        assert!(
            kept < 0.4 * total,
            "{kept} of {total} still in the residual"
        );
    }

    #[test]
    fn random_k_is_uniform_and_unbiased() {
        let d = 200;
        let g = gaussian(d, 4);
        let c = RandomK {
            fraction: 0.1,
            error_feedback: false,
        };
        let mut rng = Rng::new(3);
        let mut mean = vec![0.0f64; d];
        let trials = 4000;
        for _ in 0..trials {
            let bytes = c.compress(&g, &mut Vec::new(), &mut rng).unwrap();
            for (m, x) in mean.iter_mut().zip(decode(&bytes, d).unwrap()) {
                *m += f64::from(x) / f64::from(trials);
            }
        }
        // Each coordinate is kept with probability 0.1 and scaled by 10: the sd of the mean
        // is |x| * sqrt(9 / 4000) ~ 0.047 |x|.
        for (m, &x) in mean.iter().zip(&g) {
            assert!(
                (m - f64::from(x)).abs() < 0.25 * f64::from(x.abs()) + 1e-6,
                "{m} {x}"
            );
        }
        let idx = random_k_indices(1000, 1000, &mut rng);
        assert_eq!(idx, (0..1000).collect::<Vec<u32>>());
        let idx = random_k_indices(1000, 10, &mut Rng::new(8));
        assert_eq!(idx.len(), 10);
        assert_ne!(idx, random_k_indices(1000, 10, &mut Rng::new(9)));
        assert_eq!(idx, random_k_indices(1000, 10, &mut Rng::new(8)));
    }

    #[test]
    fn qsgd_is_unbiased_in_expectation_over_seeds() {
        let d = 64;
        let g = gaussian(d, 5);
        let gmax = g.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        for bits in [8u8, 4, 2] {
            let c = Qsgd { bits };
            let trials = 3000;
            let mut mean = vec![0.0f64; d];
            for seed in 0..trials {
                let bytes = c
                    .compress(&g, &mut Vec::new(), &mut Rng::new(seed))
                    .unwrap();
                let back = decode(&bytes, d).unwrap();
                let s = ((1u32 << (bits - 1)) - 1) as f32;
                for (x, y) in g.iter().zip(&back) {
                    // Each value is one of the two levels around it.
                    assert!((x - y).abs() <= gmax / s + 1e-5, "{bits}: {x} -> {y}");
                }
                for (m, y) in mean.iter_mut().zip(back) {
                    *m += f64::from(y) / trials as f64;
                }
            }
            // The rounding error per draw is at most scale / s; its mean over 3000 seeds has
            // sd below scale / (2 s sqrt(3000)).
            let s = ((1u32 << (bits - 1)) - 1) as f64;
            let tol = 5.0 * f64::from(gmax) / (2.0 * s * (trials as f64).sqrt());
            for (m, &x) in mean.iter().zip(&g) {
                assert!(
                    (m - f64::from(x)).abs() < tol,
                    "{bits} bits: {m} vs {x} (tol {tol})"
                );
            }
        }
        assert!(
            Qsgd { bits: 3 }
                .compress(&g, &mut Vec::new(), &mut Rng::new(1))
                .is_err()
        );
        // The zero vector quantizes to zero.
        let bytes = Qsgd { bits: 2 }
            .compress(&[0.0; 9], &mut Vec::new(), &mut Rng::new(1))
            .unwrap();
        assert_eq!(decode(&bytes, 9).unwrap(), [0.0; 9]);
    }

    #[test]
    fn sign_sends_the_mean_magnitude() {
        let g = [1.0f32, -3.0, 0.5, -0.5, 0.0];
        let mut residual = Vec::new();
        let bytes = SignSgd
            .compress(&g, &mut residual, &mut Rng::new(1))
            .unwrap();
        assert_eq!(decode(&bytes, 5).unwrap(), [1.0, -1.0, 1.0, -1.0, 1.0]);
        assert_eq!(residual, [0.0, -2.0, -0.5, 0.5, -1.0]);
    }

    #[test]
    fn bad_input_to_the_compressors_is_refused() {
        let mut rng = Rng::new(1);
        for c in all() {
            let mut residual = Vec::new();
            assert!(
                c.compress(&[1.0, f32::NAN], &mut residual, &mut rng)
                    .is_err(),
                "{}",
                c.name()
            );
            let mut residual = vec![0.0; 3];
            if c.error_feedback() {
                assert!(
                    c.compress(&[1.0, 2.0], &mut residual, &mut rng).is_err(),
                    "{}",
                    c.name()
                );
            }
        }
        for fraction in [0.0, -1.0, 1.5, f64::NAN] {
            assert!(
                TopK { fraction }
                    .compress(&[1.0], &mut Vec::new(), &mut rng)
                    .is_err()
            );
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        let sparse = |dim: u64, entries: &[(u64, f32)]| {
            let mut b = vec![TAG_TOP_K];
            put_varint(&mut b, dim);
            put_varint(&mut b, entries.len() as u64);
            let mut prev = 0;
            for (n, &(i, _)) in entries.iter().enumerate() {
                put_varint(&mut b, if n == 0 { i } else { i.wrapping_sub(prev) });
                prev = i;
            }
            for &(_, v) in entries {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b
        };
        assert_eq!(
            decode(&sparse(10, &[(2, 1.0), (7, -2.0)]), 10).unwrap()[7],
            -2.0
        );
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (
                vec![],
                DecodeError::Truncated {
                    offset: 0,
                    needed: 1,
                },
            ),
            (vec![9, 1], DecodeError::UnknownMethod(9)),
            (
                sparse(11, &[(2, 1.0)]),
                DecodeError::Dimension {
                    expected: 10,
                    found: 11,
                },
            ),
            (
                sparse(10, &[(10, 1.0)]),
                DecodeError::IndexOutOfRange { index: 10, dim: 10 },
            ),
            (
                sparse(10, &[(3, 1.0), (3, 1.0)]),
                DecodeError::NotIncreasing { position: 1 },
            ),
            (
                sparse(10, &[(2, f32::NAN)]),
                DecodeError::BadValue { what: "value" },
            ),
            (
                {
                    let mut b = sparse(10, &[(2, 1.0)]);
                    b.push(0);
                    b
                },
                DecodeError::Trailing(1),
            ),
            (
                {
                    let mut b = sparse(10, &[(2, 1.0)]);
                    b.pop();
                    b
                },
                DecodeError::Truncated {
                    offset: 3,
                    needed: 1,
                },
            ),
            (
                vec![TAG_TOP_K, 10, 11],
                DecodeError::TooManyEntries { count: 11, dim: 10 },
            ),
            (
                vec![TAG_TOP_K, 0x8a, 0x00],
                DecodeError::Varint { offset: 1 },
            ),
            (vec![TAG_QSGD, 3, 3, 0, 0, 0, 0, 0], DecodeError::Bits(3)),
            // Code 3 with 2 bits is past the levels {0, 1, 2}.
            (
                vec![TAG_QSGD, 3, 2, 0, 0, 128, 63, 0b0000_0011],
                DecodeError::Level {
                    position: 0,
                    code: 3,
                },
            ),
            (
                vec![TAG_QSGD, 3, 2, 0, 0, 128, 63, 0b0100_0000],
                DecodeError::Padding,
            ),
            (
                vec![TAG_QSGD, 3, 2, 0, 0, 128, 255, 0],
                DecodeError::BadValue { what: "scale" },
            ),
            (
                vec![TAG_SIGN, 3, 0, 0, 128, 63, 0b0000_1000],
                DecodeError::Padding,
            ),
            (
                vec![TAG_SIGN, 3, 0, 0, 128, 191, 0],
                DecodeError::BadValue { what: "scale" },
            ),
        ];
        for (bytes, want) in cases {
            // The QSGD and sign cases are of dimension 3, the others of 10.
            let dim = if matches!(bytes.first(), Some(&TAG_QSGD | &TAG_SIGN)) {
                3
            } else {
                10
            };
            assert_eq!(decode(&bytes, dim), Err(want), "{bytes:?}");
        }
        // A huge claimed count in a short message is refused before any allocation.
        let mut b = vec![TAG_TOP_K];
        put_varint(&mut b, 1 << 40);
        put_varint(&mut b, 1 << 39);
        assert!(decode(&b, 1 << 40).is_err());
        // Even when the expected dimension is absurd (no overflow in the size arithmetic).
        let mut b = vec![TAG_TOP_K];
        put_varint(&mut b, usize::MAX as u64);
        put_varint(&mut b, usize::MAX as u64 - 1);
        assert!(matches!(
            decode(&b, usize::MAX),
            Err(DecodeError::Truncated { .. })
        ));
        for tag in [TAG_QSGD, TAG_SIGN] {
            let mut b = vec![tag];
            put_varint(&mut b, usize::MAX as u64);
            b.extend_from_slice(&[2, 0, 0, 0, 0, 0]);
            assert!(decode(&b, usize::MAX).is_err());
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoders(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            dim in 0usize..40,
        ) {
            if let Ok(v) = decode(&bytes, dim) {
                proptest::prop_assert_eq!(v.len(), dim);
                proptest::prop_assert!(v.iter().all(|x| x.is_finite()));
            }
        }

        #[test]
        fn mutated_messages_never_panic_the_decoders(
            seed in 0u64..1000,
            flips in proptest::collection::vec((0usize..200, proptest::prelude::any::<u8>()), 1..4),
        ) {
            let g = gaussian(37, seed);
            for c in all() {
                let mut bytes = c.compress(&g, &mut Vec::new(), &mut Rng::new(seed)).unwrap();
                for &(at, x) in &flips {
                    let n = bytes.len();
                    bytes[at % n] ^= x;
                }
                let _ = decode(&bytes, 37);
            }
        }
    }
}
