//! Storage for agentmesh.
//!
//! This crate owns how bytes rest: three storage abstractions every other crate persists
//! through, and their implementations.
//!
//! - [`Log`]: an append-only log of records with consecutive `u64` indices, prefix truncation
//!   (after a checkpoint) and suffix truncation (rollback of uncommitted entries).
//! - [`Kv`]: an ordered key-value tree with atomic batches and bounded range scans.
//! - [`Blobs`]: content-addressed blobs named by their BLAKE3 [`Digest`](mesh_types::Digest),
//!   verified on every read.
//!
//! A [`Store`] hands out named logs and key-value trees and one blob store. Two stores ship:
//!
//! - [`DiskStore`]: the real one. Logs and trees live in one [redb] file (copy-on-write B-trees,
//!   checksummed pages, fsync on every commit); blobs are files written to a temporary name,
//!   synced and renamed into place. When a call returns `Ok`, its data survives a crash or a
//!   power cut. Every record also carries its own CRC-32, so damage anywhere is reported as
//!   [`Error::Corrupt`] naming the file, never returned as data.
//! - [`MemStore`]: the same semantics in memory, for unit tests and simulation only.
//!
//! The traits are synchronous, like raft-rs's `Storage`: protocol cores stay free of async, and
//! drivers call them from a blocking-capable context.
//!
//! This crate must never depend on another agentmesh crate except `mesh-types`, never spawn
//! threads and never return unverified bytes read from disk.
//!
//! ```
//! use mesh_store::{Blobs, DiskStore, Kv, Log, Store};
//!
//! let dir = tempfile::tempdir().expect("a temporary directory");
//! let store = DiskStore::open(dir.path())?;
//! let log = store.log("events")?;
//! let first = log.append(&[b"hello", b"world"])?;
//! assert_eq!(log.get(first + 1)?.as_deref(), Some(&b"world"[..]));
//!
//! let kv = store.kv("settings")?;
//! kv.put(b"name", b"node-1")?;
//! assert_eq!(kv.get(b"name")?.as_deref(), Some(&b"node-1"[..]));
//!
//! let id = store.blobs().put(b"model weights")?;
//! assert_eq!(store.blobs().get(&id)?.as_deref(), Some(&b"model weights"[..]));
//! # Ok::<(), mesh_store::Error>(())
//! ```

#![forbid(unsafe_code)]

mod api;
mod disk;
mod error;
mod fsblobs;
mod mem;
mod record;

pub use api::{
    Batch, Blobs, Kv, KvOp, Log, LogBounds, MAX_BLOB_LEN, MAX_KEY_LEN, MAX_NAME_LEN, MAX_VALUE_LEN,
    Store, prefix_successor, validate_name,
};
pub use disk::{DiskKv, DiskLog, DiskOptions, DiskStore};
pub use error::{Error, Result};
pub use fsblobs::FsBlobs;
pub use mem::{MemBlobs, MemKv, MemLog, MemStore};
