//! The in-memory store: the same semantics as [`DiskStore`](crate::DiskStore), nothing
//! persisted. For unit tests and simulation only.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use mesh_types::Digest;

use crate::api::{
    Batch, Blobs, Kv, KvOp, Log, LogBounds, MAX_BLOB_LEN, Store, check_key, check_value,
    validate_name,
};
use crate::error::{Error, Result};

#[derive(Debug, Default)]
struct MemLogState {
    bounds: LogBounds,
    records: BTreeMap<u64, Vec<u8>>,
}

type Shared<T> = Arc<Mutex<T>>;
type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps half-updated (every mutation
    // is a single map operation or validated first), so recover from poisoning.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An in-memory [`Store`].
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    logs: Shared<HashMap<String, Shared<MemLogState>>>,
    trees: Shared<HashMap<String, Shared<Tree>>>,
    blobs: MemBlobs,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemStore {
    type Log = MemLog;
    type Kv = MemKv;
    type Blobs = MemBlobs;

    fn log(&self, name: &str) -> Result<MemLog> {
        validate_name(name)?;
        let state = lock(&self.logs).entry(name.to_owned()).or_default().clone();
        Ok(MemLog { state })
    }

    fn kv(&self, name: &str) -> Result<MemKv> {
        validate_name(name)?;
        let tree = lock(&self.trees)
            .entry(name.to_owned())
            .or_default()
            .clone();
        Ok(MemKv { tree })
    }

    fn blobs(&self) -> &MemBlobs {
        &self.blobs
    }
}

/// A log of a [`MemStore`].
#[derive(Debug, Clone)]
pub struct MemLog {
    state: Shared<MemLogState>,
}

impl Log for MemLog {
    fn append(&self, records: &[&[u8]]) -> Result<u64> {
        for r in records {
            check_value("log record", r)?;
        }
        let mut s = lock(&self.state);
        let first = s.bounds.next;
        for r in records {
            let i = s.bounds.next;
            s.records.insert(i, r.to_vec());
            s.bounds.next += 1;
        }
        Ok(first)
    }

    fn get(&self, index: u64) -> Result<Option<Vec<u8>>> {
        Ok(lock(&self.state).records.get(&index).cloned())
    }

    fn scan(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let s = lock(&self.state);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (&i, r) in s.records.range(from..) {
            if out.len() >= max_records || (!out.is_empty() && bytes + r.len() > max_bytes) {
                break;
            }
            bytes += r.len();
            out.push((i, r.clone()));
        }
        Ok(out)
    }

    fn bounds(&self) -> Result<LogBounds> {
        Ok(lock(&self.state).bounds)
    }

    fn truncate_before(&self, index: u64) -> Result<()> {
        let mut s = lock(&self.state);
        let index = index.min(s.bounds.next);
        if index > s.bounds.first {
            s.records = s.records.split_off(&index);
            s.bounds.first = index;
        }
        Ok(())
    }

    fn truncate_from(&self, index: u64) -> Result<()> {
        let mut s = lock(&self.state);
        if index < s.bounds.first {
            return Err(truncate_below_first(index, s.bounds.first));
        }
        if index < s.bounds.next {
            s.records.split_off(&index);
            s.bounds.next = index;
        }
        Ok(())
    }
}

pub(crate) fn truncate_below_first(index: u64, first: u64) -> Error {
    Error::InvalidInput {
        what: "truncation index",
        detail: format!("{index} is below the first held index {first}"),
    }
}

/// A tree of a [`MemStore`].
#[derive(Debug, Clone)]
pub struct MemKv {
    tree: Shared<Tree>,
}

impl Kv for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        Ok(lock(&self.tree).get(key).cloned())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        check_key(key)?;
        check_value("value", value)?;
        lock(&self.tree).insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        check_key(key)?;
        Ok(lock(&self.tree).remove(key).is_some())
    }

    fn apply(&self, batch: &Batch) -> Result<()> {
        batch.validate()?;
        let mut tree = lock(&self.tree);
        for op in batch.ops() {
            match op {
                KvOp::Put(k, v) => {
                    tree.insert(k.clone(), v.clone());
                }
                KvOp::Delete(k) => {
                    tree.remove(k);
                }
            }
        }
        Ok(())
    }

    fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if !range_is_valid(start, end) {
            return Ok(Vec::new());
        }
        let tree = lock(&self.tree);
        Ok(tree
            .range::<[u8], _>((start, end))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// Whether `(start, end)` is a non-empty, well-formed range (`BTreeMap::range` panics on
/// an inverted range; we return nothing instead).
pub(crate) fn range_is_valid(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s <= e,
        (Bound::Included(s), Bound::Excluded(e)) | (Bound::Excluded(s), Bound::Included(e)) => {
            s < e
        }
        (Bound::Excluded(s), Bound::Excluded(e)) => s < e,
        _ => true,
    }
}

/// The blob store of a [`MemStore`].
#[derive(Debug, Clone, Default)]
pub struct MemBlobs {
    blobs: Shared<BTreeMap<Digest, Arc<Vec<u8>>>>,
}

impl Blobs for MemBlobs {
    fn put(&self, data: &[u8]) -> Result<Digest> {
        if data.len() > MAX_BLOB_LEN {
            return Err(Error::too_large("blob", data.len(), MAX_BLOB_LEN));
        }
        let id = Digest::of(data);
        lock(&self.blobs)
            .entry(id)
            .or_insert_with(|| Arc::new(data.to_vec()));
        Ok(id)
    }

    fn get(&self, id: &Digest) -> Result<Option<Vec<u8>>> {
        Ok(lock(&self.blobs).get(id).map(|b| b.as_ref().clone()))
    }

    fn contains(&self, id: &Digest) -> Result<bool> {
        Ok(lock(&self.blobs).contains_key(id))
    }

    fn delete(&self, id: &Digest) -> Result<bool> {
        Ok(lock(&self.blobs).remove(id).is_some())
    }

    fn list(&self) -> Result<Vec<Digest>> {
        Ok(lock(&self.blobs).keys().copied().collect())
    }
}
