//! Sentence embeddings: texts to unit vectors whose cosine similarity measures closeness of
//! meaning, for the semantic memory's [`Hnsw`](crate::Hnsw) index.
//!
//! - [`Embedder`]: the trait, a batch of texts in, one unit vector per text out.
//! - [`MiniLm`]: all-MiniLM-L6-v2 (the sentence-transformers model) on candle-core: our
//!   WordPiece [`Tokenizer`], a BERT forward pass, mean pooling, L2 normalisation. Its files
//!   come from `cargo xtask models`; [`minilm_dir`] finds them.
//! - [`HashingEmbedder`]: a fallback without a model (feature hashing of words). It captures
//!   shared words only, not meaning; nothing uses it unless chosen explicitly.
//!
//! Every text must be non-empty, not only whitespace, and at most [`MAX_TEXT_BYTES`] bytes;
//! otherwise the whole batch is refused with [`Error::EmptyText`] or [`Error::TextTooLong`]
//! naming the first offending text.

mod bert;
mod hashing;
mod minilm;
mod tokenizer;

use std::path::PathBuf;

pub use hashing::HashingEmbedder;
pub use minilm::MiniLm;
pub use tokenizer::Tokenizer;

use crate::{Error, Result};

/// The longest text accepted, in bytes of UTF-8 (64 KiB). A model reads only its first few
/// hundred tokens anyway ([`MiniLm::MAX_TOKENS`]); the bound keeps tokenising cheap.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Turns texts into unit vectors (Euclidean norm 1, so a dot product is the cosine).
pub trait Embedder {
    /// The length of every vector.
    fn dimension(&self) -> usize;

    /// One vector of [`dimension`](Self::dimension) `f32`s per text, in the order of
    /// `texts`. An empty batch gives an empty result. The batch is refused as a whole if
    /// any text is empty, whitespace only or longer than [`MAX_TEXT_BYTES`].
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;

    /// The vector of one text.
    fn embed_one(&self, text: &str) -> Result<Vec<f32>> {
        self.embed(&[text])?
            .pop()
            .ok_or_else(|| Error::Inference("no vector returned".into()))
    }
}

/// A shared embedder embeds too (one loaded model can serve several stores).
impl<T: Embedder + ?Sized> Embedder for &T {
    fn dimension(&self) -> usize {
        (**self).dimension()
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        (**self).embed(texts)
    }
}

/// Checks the inputs every embedder refuses.
fn check_texts(texts: &[&str]) -> Result<()> {
    for (index, text) in texts.iter().enumerate() {
        if text.len() > MAX_TEXT_BYTES {
            return Err(Error::TextTooLong {
                index,
                bytes: text.len(),
                limit: MAX_TEXT_BYTES,
            });
        }
        if text.trim().is_empty() {
            return Err(Error::EmptyText { index });
        }
    }
    Ok(())
}

/// Where `cargo xtask models` stores models: `$MESH_MODELS_DIR`, else
/// `$CARGO_TARGET_DIR/models`, else this source tree's `target/models`.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MESH_MODELS_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("models");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/models")
}

/// all-MiniLM-L6-v2's directory under [`models_dir`].
pub fn minilm_dir() -> PathBuf {
    models_dir().join(MiniLm::DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_empty_blank_and_long_texts() {
        assert!(matches!(
            check_texts(&["ok", ""]),
            Err(Error::EmptyText { index: 1 })
        ));
        assert!(matches!(
            check_texts(&[" \t\n\u{3000}"]),
            Err(Error::EmptyText { index: 0 })
        ));
        let long = "a".repeat(MAX_TEXT_BYTES + 1);
        assert!(matches!(
            check_texts(&[&long]),
            Err(Error::TextTooLong { index: 0, bytes, limit: MAX_TEXT_BYTES }) if bytes == MAX_TEXT_BYTES + 1
        ));
        assert!(check_texts(&["a".repeat(MAX_TEXT_BYTES).as_str()]).is_ok());
        assert!(check_texts(&[]).is_ok());
    }
}
