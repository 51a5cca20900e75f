//! all-MiniLM-L6-v2 (sentence-transformers): our tokenizer, the BERT encoder, mean pooling and
//! L2 normalisation.

use std::path::{Path, PathBuf};

use super::bert::{Bert, Config};
use super::tokenizer::Tokenizer;
use super::{Embedder, check_texts};
use crate::{Error, Result};

/// all-MiniLM-L6-v2: 384-dimensional sentence embeddings from a 6-layer BERT
/// (22.7M parameters), mean-pooled over the tokens and normalised to unit length, as
/// sentence-transformers computes them.
///
/// Load it from the directory `cargo xtask models` fills ([`MiniLm::DIR`] under
/// [`models_dir`](super::models_dir)): `config.json`, `tokenizer.json`, `model.safetensors`
/// and, if present, `pooling_config.json` (which must ask for mean pooling).
///
/// A text is cut to [`MiniLm::MAX_TOKENS`] tokens, `[CLS]` and `[SEP]` included (the model's
/// `max_seq_length`): words past about 200 do not change its vector. Batches are sorted by
/// length and run in chunks of [`MiniLm::CHUNK`] texts padded to the longest of the chunk;
/// padding is masked out and does not change a vector (checked within 1e-5).
/// Computation runs on the CPU, on candle's thread pool.
#[derive(Debug)]
pub struct MiniLm {
    tokenizer: Tokenizer,
    bert: Bert,
}

impl MiniLm {
    /// The model's directory name under the models directory.
    pub const DIR: &'static str = "all-minilm-l6-v2";
    /// The vector dimension.
    pub const DIMENSION: usize = 384;
    /// Tokens per text, `[CLS]` and `[SEP]` included (sentence-transformers' `max_seq_length`).
    pub const MAX_TOKENS: usize = 256;
    /// Texts per forward pass.
    pub const CHUNK: usize = 32;

    /// Loads the model from `dir`; every missing or malformed file is an
    /// [`Error::Model`] naming it.
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| -> Result<(PathBuf, Vec<u8>)> {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| Error::Model {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            Ok((path, bytes))
        };
        let malformed = |path: &Path| {
            let path = path.to_path_buf();
            move |reason: String| Error::Model { path, reason }
        };
        let (path, bytes) = read("config.json")?;
        let config = Config::from_json(&bytes).map_err(malformed(&path))?;
        if config.hidden != Self::DIMENSION || config.max_positions < Self::MAX_TOKENS {
            return Err(Error::Model {
                path,
                reason: format!(
                    "hidden size {} and {} positions; all-MiniLM-L6-v2 has {} and at least {}",
                    config.hidden,
                    config.max_positions,
                    Self::DIMENSION,
                    Self::MAX_TOKENS
                ),
            });
        }
        let pooling = dir.join("pooling_config.json");
        if let Ok(bytes) = std::fs::read(&pooling) {
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| malformed(&pooling)(format!("not JSON: {e}")))?;
            if v.get("pooling_mode_mean_tokens") != Some(&serde_json::Value::Bool(true)) {
                return Err(malformed(&pooling)(
                    "the model does not pool by mean".into(),
                ));
            }
        }
        let (path, bytes) = read("tokenizer.json")?;
        let tokenizer = Tokenizer::from_json(&bytes).map_err(malformed(&path))?;
        if tokenizer.vocab_size() > config.vocab {
            return Err(malformed(&path)(format!(
                "{} vocabulary entries for {} word embeddings",
                tokenizer.vocab_size(),
                config.vocab
            )));
        }
        let (path, bytes) = read("model.safetensors")?;
        let bert = Bert::from_safetensors(config, &bytes).map_err(malformed(&path))?;
        Ok(Self { tokenizer, bert })
    }

    /// The tokenizer (its ids are what the model sees).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// One chunk: pad, run, pool.
    fn run(&self, encoded: &[&Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let len = encoded.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(encoded.len() * len);
        let mut mask = Vec::with_capacity(encoded.len() * len);
        for e in encoded {
            ids.extend_from_slice(e);
            ids.resize(ids.len() + len - e.len(), self.tokenizer.pad_id());
            mask.extend(std::iter::repeat_n(1.0f32, e.len()));
            mask.resize(mask.len() + len - e.len(), 0.0);
        }
        self.bert
            .embed(&ids, &mask, encoded.len(), len)
            .map_err(|e| Error::Inference(e.to_string()))
    }
}

impl Embedder for MiniLm {
    fn dimension(&self) -> usize {
        self.bert.config().hidden
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        check_texts(texts)?;
        let encoded: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.tokenizer.encode(t, Self::MAX_TOKENS))
            .collect();
        if let Some(index) = encoded.iter().position(|e| e.len() <= 2) {
            // Nothing but characters the normaliser drops (controls, format characters).
            return Err(Error::EmptyText { index });
        }
        // Similar lengths together: less padding per chunk.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encoded[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(Self::CHUNK) {
            let batch: Vec<&Vec<u32>> = chunk.iter().map(|&i| &encoded[i]).collect();
            for (&i, v) in chunk.iter().zip(self.run(&batch)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}
