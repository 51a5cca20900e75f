//! Agent memory for agentmesh.
//!
//! This crate will own every kind of memory an agent keeps: working memory, the episodic
//! record, semantic memory (embeddings in an approximate-nearest-neighbour index) and the
//! knowledge graph, and their synchronisation between peers. What exists so far:
//!
//! - [`ann`]: an HNSW index over unit vectors by cosine similarity ([`Hnsw`]), the exact
//!   search it is measured against, recall, and the clustered synthetic sets its benchmark
//!   uses (`cargo bench -p mesh-memory`).
//!
//! Input is checked (dimension, finite values, non-zero vectors) and refused with an
//! [`Error`], never a panic.

#![forbid(unsafe_code)]

pub mod ann;
pub mod embed;
pub mod error;

pub use ann::{Hit, Hnsw, Params, Scratch};
pub use embed::{Embedder, HashingEmbedder, MiniLm};
pub use error::{Error, Result};
