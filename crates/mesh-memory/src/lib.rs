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
//! - [`episodic`]: the append-only record of interactions ([`Episodic`] over a
//!   [`mesh_store::Store`]): queries by time range, peer, kind and full text (its own
//!   inverted index), combined, newest first. Each append writes the episode and all its
//!   index entries in one atomic batch and returns once they are durable.
//! - [`working`]: bounded in-memory working memory ([`Working`]) evicting by a documented
//!   score of recency and relevance; time is passed in, so it is deterministic.
//! - [`semantic`]: semantic memory ([`Semantic`]): texts chunked, embedded by any
//!   [`Embedder`] and stored with metadata in one atomic batch per text; searched by meaning
//!   through the HNSW index, with metadata filters (falling back to an exact search of the
//!   matching chunks when the filter is selective). The index is rebuilt on open.
//! - [`graph`]: the knowledge graph ([`Graph`]): typed entities and typed directed relations
//!   with adjacency in both directions; neighbours, k-hop neighbourhoods, bounded shortest
//!   paths and entities by type. Every change, including deleting an entity with its
//!   relations, is one atomic batch.
//! - [`sync`]: memory sync between peers, sans IO ([`SyncNode`]): delta-state CRDTs (an
//!   observed-remove set of graph facts, per-writer episode logs, last-writer-wins
//!   attribute registers) in namespaces their owner shares, every delta signed by its
//!   writer and checked by every replica, pushed to members and repaired by anti-entropy
//!   digests; replicas converge under any loss, duplication, reordering or partition once
//!   rounds get through. Not carried over mesh-transport yet: the node driver will.
//!
//! The persistent stores run on `DiskStore` (crash-safe: a call that returned `Ok` survives
//! a crash) and, in tests, on `MemStore`. Their records are a small versioned binary format
//! written with `mesh_types::wire`; decoding re-checks every bound and refuses anything
//! malformed with [`Error::Corrupt`]. Everything from outside is bounded (text, names,
//! metadata, limits, hops, degrees) and refused with a typed [`Error`].
//!
//! Input is checked (dimension, finite values, non-zero vectors; empty, blank or over-long
//! texts; missing or malformed model files, by path) and refused with an [`Error`], never a
//! panic.

#![forbid(unsafe_code)]

pub mod ann;
mod codec;
pub mod embed;
pub mod episodic;
pub mod error;
pub mod graph;
pub mod semantic;
pub mod sync;
pub mod working;

pub use ann::{Hit, Hnsw, Params, Scratch};
pub use codec::{Attributes, MAX_NAME_BYTES, MAX_PAIRS, MAX_VALUE_BYTES};
pub use embed::{Embedder, HashingEmbedder, MiniLm};
pub use episodic::{Episode, Episodic, Kind, NewEpisode, Peer, Query};
pub use error::{Error, Result};
pub use graph::{Direction, Edge, Entity, Follow, Graph, Relation};
pub use semantic::{Chunk, ChunkParams, Semantic, SemanticHit};
pub use sync::SyncNode;
pub use working::Working;
