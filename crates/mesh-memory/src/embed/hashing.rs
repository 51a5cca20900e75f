//! A model-free fallback embedder: feature hashing of words.

use super::{Embedder, check_texts};
use crate::{Error, Result};

/// Feature hashing ("the hashing trick"): each lowercased alphanumeric word, and each pair of
/// adjacent words, adds +1 or -1 (by a hash bit) to one of [`dimension`](Embedder::dimension)
/// coordinates (by the hash), and the sum is normalised to unit length.
///
/// Texts sharing words get close vectors; paraphrases with other words do not, and word
/// order matters only through the pairs. It is a fallback for running without model files
/// (simulations, tests of the memory's plumbing), **never chosen implicitly**: real semantic
/// memory uses [`MiniLm`](super::MiniLm). Hashing is FNV-1a 64, fixed, so vectors are the
/// same on every machine and release. A text without any alphanumeric character is
/// [`Error::EmptyText`]; one whose contributions cancel out exactly is
/// [`Error::ZeroVector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingEmbedder {
    dimension: usize,
}

impl Default for HashingEmbedder {
    /// 384 dimensions, as [`MiniLm`](super::MiniLm).
    fn default() -> Self {
        Self { dimension: 384 }
    }
}

impl HashingEmbedder {
    /// An embedder of `dimension` coordinates (at least 1).
    pub fn new(dimension: usize) -> Result<Self> {
        if dimension == 0 {
            return Err(Error::Invalid("hashing embedder of dimension 0".into()));
        }
        Ok(Self { dimension })
    }

    fn add(&self, v: &mut [f32], feature: &[&str]) {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (i, word) in feature.iter().enumerate() {
            if i > 0 {
                h = (h ^ 0x1f).wrapping_mul(0x0100_0000_01b3);
            }
            for b in word.bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        // The top bit picks the sign, the rest the coordinate.
        let slot = ((h & (u64::MAX >> 1)) % self.dimension as u64) as usize;
        let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
        if let Some(x) = v.get_mut(slot) {
            *x += sign;
        }
    }
}

impl Embedder for HashingEmbedder {
    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        check_texts(texts)?;
        texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let lower = text.to_lowercase();
                let words: Vec<&str> = lower
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .collect();
                if words.is_empty() {
                    return Err(Error::EmptyText { index });
                }
                let mut v = vec![0.0f32; self.dimension];
                for w in &words {
                    self.add(&mut v, &[w]);
                }
                for pair in words.windows(2) {
                    self.add(&mut v, pair);
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm == 0.0 {
                    return Err(Error::ZeroVector);
                }
                v.iter_mut().for_each(|x| *x /= norm);
                Ok(v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_vectors_shared_words_closer() {
        let e = HashingEmbedder::default();
        let v = e
            .embed(&[
                "the cat sat on the mat",
                "The cat sat on a mat!",
                "stock prices fell",
            ])
            .unwrap();
        for x in &v {
            let n: f32 = x.iter().map(|a| a * a).sum();
            assert!((n - 1.0).abs() < 1e-5);
        }
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert!(dot(&v[0], &v[1]) > 0.5);
        assert!(dot(&v[0], &v[2]).abs() < 0.3);
        assert_eq!(e.embed_one("the cat sat on the mat").unwrap(), v[0]);
        assert!(matches!(
            e.embed(&["?!"]),
            Err(Error::EmptyText { index: 0 })
        ));
        assert!(HashingEmbedder::new(0).is_err());
    }
}
