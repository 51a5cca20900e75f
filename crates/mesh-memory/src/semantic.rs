//! Semantic memory: texts cut into chunks, embedded, kept with their metadata in a
//! [`mesh_store::Kv`] tree, and searched by meaning through an [`Hnsw`] index, with
//! metadata filters.
//!
//! [`Semantic::add`] chunks a text ([`chunk`]: runs of at most [`ChunkParams::words`] words,
//! overlapping by [`ChunkParams::overlap`]), embeds the chunks in one batch and writes every
//! chunk (its source, text, metadata and vector) in **one atomic batch**: a crash leaves the
//! whole text or none of it, and a call that returned `Ok` survives. [`Semantic::open`]
//! reads the chunks back and rebuilds the index (the graph itself is not persisted yet:
//! opening costs an insert per chunk, about a millisecond each at 384 dimensions).
//!
//! [`Semantic::search`] embeds the query and asks the index for more neighbours than wanted
//! (`4 k`, at least 32); with a filter (metadata pairs that must all match), the hits that
//! pass are kept, and if fewer than `k` do, the chunks that match the filter are searched
//! exactly instead, so a selective filter never loses results to the approximation.

use std::ops::Bound;

use mesh_store::{Batch, Kv, Store};
use mesh_types::wire::{Reader, put_varint};

use crate::ann::{Hnsw, Params};
use crate::codec::{
    self, Attributes, DecodeError, Decoded, check_name, check_pairs, check_text, put_pairs,
    put_str, read_pairs, read_str, read_version, store,
};
use crate::embed::{Embedder, MAX_TEXT_BYTES};
use crate::error::{Error, Result};

/// Key tag of a chunk record (`C` + id, big-endian).
const TAG_CHUNK: u8 = b'C';
/// The most chunks one text may make.
pub const MAX_CHUNKS_PER_TEXT: usize = 1_024;
/// The most hits one search returns.
pub const MAX_K: usize = 1_000;
/// Chunks read per scan when opening.
const OPEN_PAGE: usize = 1_024;

/// How texts are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkParams {
    /// Words per chunk (at most). Default 128: all-MiniLM-L6-v2 reads 256 tokens, and
    /// English runs about 1.3 tokens per word.
    pub words: usize,
    /// Words repeated from the end of one chunk at the start of the next. Default 16.
    pub overlap: usize,
}

impl Default for ChunkParams {
    fn default() -> Self {
        Self {
            words: 128,
            overlap: 16,
        }
    }
}

/// Cuts `text` into runs of at most `params.words` whitespace-separated words, each
/// overlapping the one before by `params.overlap` words. Whitespace inside a chunk becomes
/// one space. An empty or blank text gives no chunk.
pub fn chunk(text: &str, params: ChunkParams) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let size = params.words.max(1);
    let step = size.saturating_sub(params.overlap).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < words.len() {
        let end = (start + size).min(words.len());
        out.push(words[start..end].join(" "));
        if end == words.len() {
            break;
        }
        start += step;
    }
    out
}

/// A stored chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Its id (assigned in order of addition).
    pub id: u64,
    /// The name of the text it came from.
    pub source: String,
    /// Its text.
    pub text: String,
    /// The metadata given with its text.
    pub metadata: Attributes,
}

/// A search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticHit {
    /// The chunk.
    pub chunk: Chunk,
    /// Cosine similarity to the query.
    pub similarity: f32,
}

/// Semantic memory over a key-value tree and an embedder.
pub struct Semantic<K: Kv, E: Embedder> {
    kv: K,
    embedder: E,
    chunking: ChunkParams,
    index: Hnsw,
    /// Per index id: the chunk (index ids and chunk ids coincide; kept in memory).
    chunks: Vec<Chunk>,
}

impl<K: Kv, E: Embedder> std::fmt::Debug for Semantic<K, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semantic")
            .field("chunks", &self.chunks.len())
            .field("dimension", &self.index.dim())
            .finish_non_exhaustive()
    }
}

fn chunk_key(id: u64) -> Vec<u8> {
    let mut k = vec![TAG_CHUNK];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn encode_chunk(c: &Chunk, vector: &[f32]) -> Vec<u8> {
    let mut out = vec![codec::RECORD_VERSION];
    put_str(&mut out, &c.source);
    put_str(&mut out, &c.text);
    put_pairs(&mut out, &c.metadata);
    put_varint(&mut out, vector.len() as u64);
    for v in vector {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn decode_chunk(id: u64, bytes: &[u8], dim: usize) -> Decoded<(Chunk, Vec<f32>)> {
    let mut r = Reader::new(bytes);
    read_version(&mut r)?;
    let source = read_str(&mut r, "chunk source", crate::MAX_NAME_BYTES)?.to_owned();
    let text = read_str(&mut r, "chunk text", MAX_TEXT_BYTES)?.to_owned();
    let metadata = read_pairs(&mut r, "chunk metadata")?;
    let n = r.varint()?;
    if n != dim as u64 {
        return Err(DecodeError::Invalid(format!(
            "vector of {n} dimensions, the embedder gives {dim}"
        )));
    }
    let mut vector = Vec::with_capacity(dim);
    for _ in 0..dim {
        vector.push(f32::from_le_bytes(r.array::<4>()?));
    }
    r.finish()?;
    check_name("chunk source", &source)?;
    check_text("chunk text", &text, MAX_TEXT_BYTES, true)?;
    check_pairs("chunk metadata", &metadata)?;
    Ok((
        Chunk {
            id,
            source,
            text,
            metadata,
        },
        vector,
    ))
}

impl<K: Kv, E: Embedder> Semantic<K, E> {
    /// Opens the semantic memory in tree `tree` of `store`, embedding with `embedder` (which
    /// must be the one the chunks were stored with: a stored vector of another dimension is
    /// [`Error::Corrupt`]).
    pub fn open<S: Store<Kv = K>>(store: &S, tree: &str, embedder: E) -> Result<Self> {
        let kv = store
            .kv(tree)
            .map_err(codec::store("opening the semantic tree"))?;
        Self::from_kv(kv, embedder, ChunkParams::default(), Params::default())
    }

    /// Opens the semantic memory kept in `kv`, with the given chunking and index settings.
    pub fn from_kv(kv: K, embedder: E, chunking: ChunkParams, params: Params) -> Result<Self> {
        let dim = embedder.dimension();
        let mut index = Hnsw::new(dim, params)?;
        let mut chunks = Vec::new();
        let mut from = chunk_key(0);
        loop {
            let page = kv
                .scan(
                    Bound::Included(from.as_slice()),
                    Bound::Excluded(&[TAG_CHUNK + 1][..]),
                    OPEN_PAGE,
                )
                .map_err(store("reading the chunks"))?;
            let Some((last, _)) = page.last() else { break };
            from = last.clone();
            from.push(0);
            for (key, value) in &page {
                let id = <[u8; 8]>::try_from(&key[1..])
                    .map(u64::from_be_bytes)
                    .map_err(|_| Error::Corrupt {
                        what: "chunk",
                        key: codec::show_key(key),
                        detail: "a key that is not a chunk id".into(),
                    })?;
                if id != chunks.len() as u64 {
                    return Err(Error::Corrupt {
                        what: "chunk",
                        key: codec::show_key(key),
                        detail: format!("chunk {id} where {} was expected", chunks.len()),
                    });
                }
                let (chunk, vector) =
                    decode_chunk(id, value, dim).map_err(|e| e.at("chunk", key))?;
                index.insert(&vector)?;
                chunks.push(chunk);
            }
            if page.len() < OPEN_PAGE {
                break;
            }
        }
        Ok(Self {
            kv,
            embedder,
            chunking,
            index,
            chunks,
        })
    }

    /// How many chunks are stored.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The chunk with id `id`.
    pub fn get(&self, id: u64) -> Option<&Chunk> {
        usize::try_from(id).ok().and_then(|i| self.chunks.get(i))
    }

    /// Chunks `text` (from source `source`, a name), embeds the chunks and stores them with
    /// `metadata` in one atomic write; returns their ids once durable.
    pub fn add(&mut self, source: &str, text: &str, metadata: &Attributes) -> Result<Vec<u64>> {
        check_name("chunk source", source)?;
        check_text("text", text, MAX_TEXT_BYTES, true)?;
        check_pairs("chunk metadata", metadata)?;
        let pieces = chunk(text, self.chunking);
        if pieces.is_empty() {
            return Err(Error::Empty { what: "text" });
        }
        if pieces.len() > MAX_CHUNKS_PER_TEXT {
            return Err(Error::TooMany {
                what: "chunks of one text",
                count: pieces.len(),
                max: MAX_CHUNKS_PER_TEXT,
            });
        }
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let vectors = self.embedder.embed(&refs)?;
        let first = self.chunks.len() as u64;
        let mut batch = Batch::new();
        let mut new = Vec::with_capacity(pieces.len());
        for (i, (text, vector)) in pieces.into_iter().zip(&vectors).enumerate() {
            let c = Chunk {
                id: first + i as u64,
                source: source.to_owned(),
                text,
                metadata: metadata.clone(),
            };
            batch.put(chunk_key(c.id), encode_chunk(&c, vector));
            new.push(c);
        }
        self.kv.apply(&batch).map_err(store("storing chunks"))?;
        let mut ids = Vec::with_capacity(new.len());
        for (c, v) in new.into_iter().zip(&vectors) {
            self.index.insert(v)?;
            ids.push(c.id);
            self.chunks.push(c);
        }
        Ok(ids)
    }

    /// The `k` chunks closest in meaning to `query` whose metadata holds every pair of
    /// `filter` (an empty filter: all chunks), most similar first.
    pub fn search(
        &mut self,
        query: &str,
        k: usize,
        filter: &Attributes,
    ) -> Result<Vec<SemanticHit>> {
        if k == 0 || k > MAX_K {
            return Err(Error::Invalid(format!("k {k} (1..={MAX_K})")));
        }
        check_pairs("filter", filter)?;
        let q = self.embedder.embed_one(query)?;
        if self.chunks.is_empty() {
            return Ok(Vec::new());
        }
        let matches = |c: &Chunk| filter.iter().all(|(k, v)| c.metadata.get(k) == Some(v));
        let wide = (4 * k).max(32).min(self.chunks.len());
        let hits = self.index.search(&q, wide, wide.max(64))?;
        let mut out: Vec<SemanticHit> = hits
            .into_iter()
            .filter_map(|h| {
                let c = &self.chunks[h.id as usize];
                matches(c).then(|| SemanticHit {
                    chunk: c.clone(),
                    similarity: h.similarity,
                })
            })
            .take(k)
            .collect();
        if out.len() < k && !filter.is_empty() {
            // A selective filter: search the matching chunks exactly.
            let mut exact: Vec<SemanticHit> = self
                .chunks
                .iter()
                .filter(|c| matches(c))
                .filter_map(|c| {
                    let v = self.index.vector(c.id as u32)?;
                    let similarity = v.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>();
                    Some(SemanticHit {
                        chunk: c.clone(),
                        similarity,
                    })
                })
                .collect();
            exact.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
            exact.truncate(k);
            out = exact;
        }
        Ok(out)
    }
}
