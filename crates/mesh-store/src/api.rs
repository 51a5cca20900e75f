//! The storage traits and their shared rules.

use std::ops::Bound;

use mesh_types::Digest;

use crate::error::{Error, Result};

/// Longest log or tree name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest key in a [`Kv`] tree (4 KiB).
pub const MAX_KEY_LEN: usize = 4 * 1024;
/// Longest log record or [`Kv`] value (64 MiB).
pub const MAX_VALUE_LEN: usize = 64 * 1024 * 1024;
/// Largest blob (1 GiB): blobs are read whole into memory.
pub const MAX_BLOB_LEN: usize = 1024 * 1024 * 1024;

/// Checks a log or tree name: 1 to [`MAX_NAME_LEN`] characters from `[a-z0-9_.-]`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            what: "name",
            detail: format!("{name:?}: use 1 to {MAX_NAME_LEN} characters from [a-z0-9_.-]"),
        })
    }
}

pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(Error::too_large("key", key.len(), MAX_KEY_LEN));
    }
    Ok(())
}

pub(crate) fn check_value(what: &'static str, value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::too_large(what, value.len(), MAX_VALUE_LEN));
    }
    Ok(())
}

/// The index range a [`Log`] currently holds: records `first..next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogBounds {
    /// Index of the oldest record still held (equal to `next` when empty).
    pub first: u64,
    /// Index the next appended record will get.
    pub next: u64,
}

impl LogBounds {
    /// Number of records held.
    pub fn len(&self) -> u64 {
        self.next.saturating_sub(self.first)
    }

    /// Whether the log holds no records.
    pub fn is_empty(&self) -> bool {
        self.first == self.next
    }
}

/// An append-only log of records with consecutive indices starting at 0.
///
/// Indices are never reused: truncating the prefix keeps `next`, and truncating the suffix
/// lets the truncated indices be appended again (the rollback of uncommitted entries).
/// When a mutating call returns `Ok`, the change is durable.
pub trait Log: Send + Sync {
    /// Appends `records` in order, atomically; returns the index of the first one (or the
    /// current `next` when `records` is empty).
    fn append(&self, records: &[&[u8]]) -> Result<u64>;

    /// The record at `index`, if held.
    fn get(&self, index: u64) -> Result<Option<Vec<u8>>>;

    /// Records from `from` onwards (clamped to `first`), at most `max_records` of them and
    /// stopping before `max_bytes` is exceeded. When `max_records` is at least 1, at least one
    /// record is returned if any exists at or after `from`, however large, so a caller paging
    /// through the log always makes progress.
    fn scan(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<(u64, Vec<u8>)>>;

    /// The indices currently held.
    fn bounds(&self) -> Result<LogBounds>;

    /// Drops every record below `index` (a no-op for records already dropped; clamped to `next`).
    fn truncate_before(&self, index: u64) -> Result<()>;

    /// Drops every record at or above `index`, so the next append gets `index`. Fails if
    /// `index` is below `first` (those records were compacted away).
    fn truncate_from(&self, index: u64) -> Result<()>;

    /// Appends one record; returns its index.
    fn append_one(&self, record: &[u8]) -> Result<u64> {
        self.append(&[record])
    }
}

/// One write in a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Remove `key`.
    Delete(Vec<u8>),
}

/// Writes applied atomically and in order by [`Kv::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<KvOp>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(KvOp::Put(key.into(), value.into()));
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(KvOp::Delete(key.into()));
        self
    }

    /// The writes, in order.
    pub fn ops(&self) -> &[KvOp] {
        &self.ops
    }

    /// Whether the batch has no writes.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for op in &self.ops {
            match op {
                KvOp::Put(k, v) => {
                    check_key(k)?;
                    check_value("value", v)?;
                }
                KvOp::Delete(k) => check_key(k)?,
            }
        }
        Ok(())
    }
}

/// An ordered key-value tree. Keys compare as byte strings. When a mutating call returns
/// `Ok`, the change is durable.
pub trait Kv: Send + Sync {
    /// The value of `key`, if set.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Sets `key` to `value`.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()>;

    /// Removes `key`; returns whether it was set.
    fn delete(&self, key: &[u8]) -> Result<bool>;

    /// Applies every write of `batch` atomically, in order.
    fn apply(&self, batch: &Batch) -> Result<()>;

    /// Entries with keys in `(start, end)`, in key order, at most `limit` of them.
    fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Entries whose key starts with `prefix`, in key order, at most `limit` of them.
    fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = prefix_successor(prefix);
        let end = match &end {
            Some(e) => Bound::Excluded(e.as_slice()),
            None => Bound::Unbounded,
        };
        self.scan(Bound::Included(prefix), end, limit)
    }
}

/// The smallest key greater than every key starting with `prefix`, or `None` if there is none
/// (the prefix is empty or all `0xff`).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Content-addressed blobs, named by the BLAKE3 digest of their bytes.
pub trait Blobs: Send + Sync {
    /// Stores `data` (idempotent); returns its digest. Durable when it returns `Ok`.
    fn put(&self, data: &[u8]) -> Result<Digest>;

    /// The blob named `id`, verified against its digest.
    fn get(&self, id: &Digest) -> Result<Option<Vec<u8>>>;

    /// Whether a blob named `id` is held (without reading or verifying it).
    fn contains(&self, id: &Digest) -> Result<bool>;

    /// Removes a blob; returns whether it was held.
    fn delete(&self, id: &Digest) -> Result<bool>;

    /// The digests of all blobs held, in ascending order.
    fn list(&self) -> Result<Vec<Digest>>;
}

/// A store: named logs and trees, and one blob store.
///
/// Handles are cheap to clone and share the store's state; a log or tree opened twice by name
/// is the same log or tree.
pub trait Store: Send + Sync {
    /// The log handle type.
    type Log: Log + Clone + 'static;
    /// The tree handle type.
    type Kv: Kv + Clone + 'static;
    /// The blob store type.
    type Blobs: Blobs + 'static;

    /// Opens (creating if needed) the log called `name`.
    fn log(&self, name: &str) -> Result<Self::Log>;

    /// Opens (creating if needed) the tree called `name`.
    fn kv(&self, name: &str) -> Result<Self::Kv>;

    /// The blob store.
    fn blobs(&self) -> &Self::Blobs;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "consensus.log", "outbox-2", "x_y", &"a".repeat(64)] {
            validate_name(good).unwrap();
        }
        for bad in ["", "A", "a/b", "a b", "é", &"a".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefix_successors() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        assert_eq!(prefix_successor(b""), None);
    }

    #[test]
    fn batch_limits() {
        let mut b = Batch::new();
        b.put(vec![0; MAX_KEY_LEN + 1], b"v".to_vec());
        assert!(matches!(
            b.validate(),
            Err(Error::TooLarge { what: "key", .. })
        ));
        let mut b = Batch::new();
        b.put(b"k".to_vec(), b"v".to_vec()).delete(b"k".to_vec());
        assert_eq!(b.ops().len(), 2);
        b.validate().unwrap();
    }
}
