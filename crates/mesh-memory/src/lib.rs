//! Agent memory for agentmesh.
//!
//! This crate will own every kind of memory an agent keeps: working memory, the episodic
//! record, semantic memory (embeddings in an approximate-nearest-neighbour index) and the
//! knowledge graph, and their synchronisation between peers. What exists so far:
//!
//! - [`embed`]: sentence embeddings. The [`Embedder`] trait (texts in, unit vectors out);
//!   [`MiniLm`], all-MiniLM-L6-v2 run on candle-core with our own WordPiece tokenizer and
//!   BERT forward pass (384 dimensions, texts cut to 256 tokens), its vectors equal to a
//!   NumPy reference within 2e-7; [`HashingEmbedder`], a model-free fallback by feature
//!   hashing, used only when chosen. The model files come from `cargo xtask models`
//!   ([`embed::minilm_dir`] finds them); this crate never downloads anything.
//! - [`ann`]: an HNSW index over unit vectors by cosine similarity ([`Hnsw`]), the exact
//!   search it is measured against, recall, and the clustered synthetic sets its benchmark
//!   uses (`cargo bench -p mesh-memory`).
//!
//! Input is checked (dimension, finite values, non-zero vectors; empty, blank or over-long
//! texts; missing or malformed model files, by path) and refused with an [`Error`], never a
//! panic.

#![forbid(unsafe_code)]

pub mod ann;
pub mod embed;
pub mod error;

pub use ann::{Hit, Hnsw, Params, Scratch};
pub use embed::{Embedder, HashingEmbedder, MiniLm};
pub use error::{Error, Result};
