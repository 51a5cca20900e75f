//! The embedded, crash-safe store: logs and trees in one redb file, blobs in a directory.
//!
//! Layout of a store directory:
//!
//! ```text
//! <dir>/store.redb     logs ("log/<name>" tables), trees ("kv/<name>"), log bounds ("meta/logs")
//! <dir>/blobs/         content-addressed blob files (see FsBlobs)
//! ```
//!
//! Every write is one redb transaction committed with `Durability::Immediate` (fsync before
//! `commit` returns). Values carry a CRC-32 of their own; a mismatch, an engine checksum
//! failure or a structurally damaged file is reported as [`Error::Corrupt`] with the path.

use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};

use crate::api::{Batch, Kv, KvOp, Log, LogBounds, Store, check_key, check_value, validate_name};
use crate::error::{Error, Result};
use crate::fsblobs::FsBlobs;
use crate::mem::{range_is_valid, truncate_below_first};
use crate::record;

const DB_FILE: &str = "store.redb";
const BLOB_DIR: &str = "blobs";
/// Log bounds: name -> sealed (first u64 LE, next u64 LE).
const LOG_META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta/logs");

type LogTable<'a> = TableDefinition<'a, u64, &'static [u8]>;
type KvTable<'a> = TableDefinition<'a, &'static [u8], &'static [u8]>;

/// Options for [`DiskStore::open_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DiskOptions {
    /// Verify every page checksum of the database when opening it (reads the whole file).
    /// On by default: a damaged file is then refused at open with [`Error::Corrupt`] rather
    /// than discovered later. redb always verifies after an unclean shutdown.
    pub verify_on_open: bool,
    /// Memory the engine may use to cache pages, in bytes.
    pub cache_bytes: usize,
}

impl Default for DiskOptions {
    fn default() -> Self {
        Self {
            verify_on_open: true,
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug)]
struct Inner {
    db: redb::Database,
    path: PathBuf,
    dir: PathBuf,
    blobs: FsBlobs,
}

/// The on-disk [`Store`]. Cheap to clone; the files close when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct DiskStore {
    inner: Arc<Inner>,
}

impl DiskStore {
    /// Opens the store in `dir`, creating the directory and files if needed.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, DiskOptions::default())
    }

    /// Opens the store in `dir` with `options`.
    pub fn open_with(dir: impl AsRef<Path>, options: DiskOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(&dir, "creating the store directory", e))?;
        let path = dir.join(DB_FILE);
        let mut builder = redb::Builder::new();
        builder.set_cache_size(options.cache_bytes);
        builder.set_check_integrity_on_open(options.verify_on_open);
        // The engine reports damage as errors; the guard turns any panic it might still hit on
        // a file it did not write into the same clear error.
        let opened = catch_unwind(AssertUnwindSafe(|| builder.create(&path))).map_err(|_| {
            Error::corrupt(
                &path,
                "the database structure is damaged (the engine gave up reading it)",
            )
        })?;
        let db = opened.map_err(|e| map_err(&path, "opening", e.into()))?;
        // The engine syncs the file, not the directory entries that name it.
        crate::fsblobs::sync_dir(&dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::fsblobs::sync_dir(parent)?;
        }
        let blobs = FsBlobs::open(dir.join(BLOB_DIR))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path,
                dir,
                blobs,
            }),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.inner.path
    }

    /// Names of the logs and trees that exist in the database.
    pub fn names(&self) -> Result<(Vec<String>, Vec<String>)> {
        let inner = &self.inner;
        let txn = inner.db.begin_read().map_err(|e| inner.err("reading", e))?;
        let mut logs = Vec::new();
        let mut trees = Vec::new();
        for table in txn
            .list_tables()
            .map_err(|e| inner.err("listing tables", e))?
        {
            let name = redb::TableHandle::name(&table).to_owned();
            if let Some(n) = name.strip_prefix("log/") {
                logs.push(n.to_owned());
            } else if let Some(n) = name.strip_prefix("kv/") {
                trees.push(n.to_owned());
            }
        }
        Ok((logs, trees))
    }
}

impl Inner {
    fn err(&self, op: &'static str, e: impl Into<redb::Error>) -> Error {
        map_err(&self.path, op, e.into())
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| self.err("starting a write", e))?;
        // Stated, not assumed from the engine's default: Ok from a write means on disk.
        txn.set_durability(redb::Durability::Immediate)
            .map_err(|e| self.err("setting durability", e))?;
        Ok(txn)
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction> {
        self.db
            .begin_read()
            .map_err(|e| self.err("starting a read", e))
    }

    fn commit(&self, txn: redb::WriteTransaction) -> Result<()> {
        txn.commit().map_err(|e| self.err("committing", e))
    }

    fn unseal<'a>(&self, what: impl FnOnce() -> String, sealed: &'a [u8]) -> Result<&'a [u8]> {
        record::open(sealed)
            .map_err(|detail| Error::corrupt(&self.path, format!("{}: {detail}", what())))
    }
}

fn map_err(path: &Path, op: &'static str, e: redb::Error) -> Error {
    match e {
        redb::Error::Corrupted(detail) => Error::corrupt(path, detail),
        redb::Error::Io(source) if source.kind() == std::io::ErrorKind::InvalidData => {
            Error::corrupt(path, source.to_string())
        }
        redb::Error::Io(source) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::corrupt(path, format!("the file is truncated ({source})"))
        }
        redb::Error::Io(source) => Error::io(path, op, source),
        redb::Error::DatabaseAlreadyOpen => Error::Locked {
            path: path.to_path_buf(),
        },
        other => Error::Database {
            path: path.to_path_buf(),
            op,
            detail: other.to_string(),
        },
    }
}

impl Store for DiskStore {
    type Log = DiskLog;
    type Kv = DiskKv;
    type Blobs = FsBlobs;

    fn log(&self, name: &str) -> Result<DiskLog> {
        validate_name(name)?;
        Ok(DiskLog {
            inner: self.inner.clone(),
            name: name.to_owned(),
            table: format!("log/{name}"),
        })
    }

    fn kv(&self, name: &str) -> Result<DiskKv> {
        validate_name(name)?;
        Ok(DiskKv {
            inner: self.inner.clone(),
            name: name.to_owned(),
            table: format!("kv/{name}"),
        })
    }

    fn blobs(&self) -> &FsBlobs {
        &self.inner.blobs
    }
}

/// A log of a [`DiskStore`].
#[derive(Debug, Clone)]
pub struct DiskLog {
    inner: Arc<Inner>,
    name: String,
    table: String,
}

impl DiskLog {
    fn def(&self) -> LogTable<'_> {
        TableDefinition::new(&self.table)
    }

    fn read_bounds(
        &self,
        meta: &impl ReadableTable<&'static str, &'static [u8]>,
    ) -> Result<LogBounds> {
        let got = meta
            .get(self.name.as_str())
            .map_err(|e| self.inner.err("reading log bounds", e))?;
        let Some(got) = got else {
            return Ok(LogBounds::default());
        };
        let what = || format!("bounds of log {:?}", self.name);
        let raw = self.inner.unseal(what, got.value())?;
        let bounds = <[u8; 16]>::try_from(raw).ok().map(|b| {
            let (first, next) = b.split_at(8);
            LogBounds {
                first: u64::from_le_bytes(first.try_into().unwrap_or_default()),
                next: u64::from_le_bytes(next.try_into().unwrap_or_default()),
            }
        });
        match bounds {
            Some(b) if b.first <= b.next => Ok(b),
            _ => Err(Error::corrupt(
                &self.inner.path,
                format!("{} are invalid", what()),
            )),
        }
    }

    fn write_bounds(
        &self,
        txn: &redb::WriteTransaction,
        f: impl FnOnce(LogBounds) -> Result<Option<LogBounds>>,
    ) -> Result<LogBounds> {
        let mut meta = txn
            .open_table(LOG_META)
            .map_err(|e| self.inner.err("opening log bounds", e))?;
        let old = self.read_bounds(&meta)?;
        if let Some(new) = f(old)? {
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&new.first.to_le_bytes());
            raw[8..].copy_from_slice(&new.next.to_le_bytes());
            meta.insert(self.name.as_str(), record::seal(&raw).as_slice())
                .map_err(|e| self.inner.err("writing log bounds", e))?;
        }
        Ok(old)
    }

    fn remove_range(&self, txn: &redb::WriteTransaction, start: u64, end: u64) -> Result<()> {
        if start >= end {
            return Ok(());
        }
        let mut table = txn
            .open_table(self.def())
            .map_err(|e| self.inner.err("opening a log", e))?;
        table
            .retain_in(start..end, |_, _| false)
            .map_err(|e| self.inner.err("truncating a log", e))
    }
}

impl Log for DiskLog {
    fn append(&self, records: &[&[u8]]) -> Result<u64> {
        for r in records {
            check_value("log record", r)?;
        }
        let inner = &self.inner;
        let txn = inner.begin_write()?;
        let n = records.len() as u64;
        let old = self.write_bounds(&txn, |b| {
            let next = b.next.checked_add(n).ok_or(Error::InvalidInput {
                what: "append",
                detail: "log index space exhausted".into(),
            })?;
            Ok((n > 0).then_some(LogBounds {
                first: b.first,
                next,
            }))
        })?;
        if n == 0 {
            return Ok(old.next);
        }
        {
            let mut table = txn
                .open_table(self.def())
                .map_err(|e| inner.err("opening a log", e))?;
            for (i, r) in records.iter().enumerate() {
                table
                    .insert(old.next + i as u64, record::seal(r).as_slice())
                    .map_err(|e| inner.err("appending", e))?;
            }
        }
        inner.commit(txn)?;
        Ok(old.next)
    }

    fn get(&self, index: u64) -> Result<Option<Vec<u8>>> {
        let inner = &self.inner;
        let txn = inner.begin_read()?;
        let table = match txn.open_table(self.def()) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(inner.err("opening a log", e)),
        };
        let Some(got) = table
            .get(index)
            .map_err(|e| inner.err("reading a log", e))?
        else {
            return Ok(None);
        };
        let payload = inner.unseal(
            || format!("log {:?} record {index}", self.name),
            got.value(),
        )?;
        Ok(Some(payload.to_vec()))
    }

    fn scan(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let inner = &self.inner;
        let txn = inner.begin_read()?;
        let table = match txn.open_table(self.def()) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(inner.err("opening a log", e)),
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for entry in table
            .range(from..)
            .map_err(|e| inner.err("scanning a log", e))?
        {
            if out.len() >= max_records {
                break;
            }
            let (k, v) = entry.map_err(|e| inner.err("scanning a log", e))?;
            let index = k.value();
            let payload =
                inner.unseal(|| format!("log {:?} record {index}", self.name), v.value())?;
            if !out.is_empty() && bytes + payload.len() > max_bytes {
                break;
            }
            bytes += payload.len();
            out.push((index, payload.to_vec()));
        }
        Ok(out)
    }

    fn bounds(&self) -> Result<LogBounds> {
        let inner = &self.inner;
        let txn = inner.begin_read()?;
        match txn.open_table(LOG_META) {
            Ok(meta) => self.read_bounds(&meta),
            Err(TableError::TableDoesNotExist(_)) => Ok(LogBounds::default()),
            Err(e) => Err(inner.err("opening log bounds", e)),
        }
    }

    fn truncate_before(&self, index: u64) -> Result<()> {
        let txn = self.inner.begin_write()?;
        let old = self.write_bounds(&txn, |b| {
            let first = index.min(b.next);
            Ok((first > b.first).then_some(LogBounds {
                first,
                next: b.next,
            }))
        })?;
        let new_first = index.min(old.next);
        if new_first <= old.first {
            return Ok(());
        }
        self.remove_range(&txn, old.first, new_first)?;
        self.inner.commit(txn)
    }

    fn truncate_from(&self, index: u64) -> Result<()> {
        let txn = self.inner.begin_write()?;
        let old = self.write_bounds(&txn, |b| {
            if index < b.first {
                return Err(truncate_below_first(index, b.first));
            }
            Ok((index < b.next).then_some(LogBounds {
                first: b.first,
                next: index,
            }))
        })?;
        if index >= old.next {
            return Ok(());
        }
        self.remove_range(&txn, index, old.next)?;
        self.inner.commit(txn)
    }
}

/// A key-value tree of a [`DiskStore`].
#[derive(Debug, Clone)]
pub struct DiskKv {
    inner: Arc<Inner>,
    name: String,
    table: String,
}

impl DiskKv {
    fn def(&self) -> KvTable<'_> {
        TableDefinition::new(&self.table)
    }

    fn unseal_entry(&self, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        let payload = self.inner.unseal(
            || format!("tree {:?} key {}", self.name, show_key(key)),
            sealed,
        )?;
        Ok(payload.to_vec())
    }

    fn write(
        &self,
        f: impl FnOnce(&mut redb::Table<'_, &'static [u8], &'static [u8]>) -> Result<bool>,
    ) -> Result<bool> {
        let inner = &self.inner;
        let txn = inner.begin_write()?;
        let changed = {
            let mut table = txn
                .open_table(self.def())
                .map_err(|e| inner.err("opening a tree", e))?;
            f(&mut table)?
        };
        inner.commit(txn)?;
        Ok(changed)
    }
}

/// A key for error messages: printable ASCII as is, else hex; long keys shortened.
fn show_key(key: &[u8]) -> String {
    let shown = &key[..key.len().min(32)];
    let more = if key.len() > 32 { "…" } else { "" };
    if shown.iter().all(|b| b.is_ascii_graphic()) {
        format!("{:?}{more}", String::from_utf8_lossy(shown))
    } else {
        let hex: String = shown.iter().map(|b| format!("{b:02x}")).collect();
        format!("0x{hex}{more}")
    }
}

impl Kv for DiskKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        let inner = &self.inner;
        let txn = inner.begin_read()?;
        let table = match txn.open_table(self.def()) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(inner.err("opening a tree", e)),
        };
        let got = table.get(key).map_err(|e| inner.err("reading a tree", e))?;
        got.map(|g| self.unseal_entry(key, g.value())).transpose()
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        check_key(key)?;
        check_value("value", value)?;
        let inner = &self.inner;
        self.write(|t| {
            t.insert(key, record::seal(value).as_slice())
                .map_err(|e| inner.err("writing a tree", e))?;
            Ok(true)
        })
        .map(drop)
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        check_key(key)?;
        let inner = &self.inner;
        self.write(|t| {
            let removed = t
                .remove(key)
                .map_err(|e| inner.err("deleting from a tree", e))?;
            Ok(removed.is_some())
        })
    }

    fn apply(&self, batch: &Batch) -> Result<()> {
        batch.validate()?;
        if batch.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        self.write(|t| {
            for op in batch.ops() {
                match op {
                    KvOp::Put(k, v) => {
                        t.insert(k.as_slice(), record::seal(v).as_slice())
                            .map_err(|e| inner.err("writing a tree", e))?;
                    }
                    KvOp::Delete(k) => {
                        t.remove(k.as_slice())
                            .map_err(|e| inner.err("deleting from a tree", e))?;
                    }
                }
            }
            Ok(true)
        })
        .map(drop)
    }

    fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if limit == 0 || !range_is_valid(start, end) {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let txn = inner.begin_read()?;
        let table = match txn.open_table(self.def()) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(inner.err("opening a tree", e)),
        };
        let mut out = Vec::new();
        for entry in table
            .range::<&[u8]>((start, end))
            .map_err(|e| inner.err("scanning a tree", e))?
        {
            let (k, v) = entry.map_err(|e| inner.err("scanning a tree", e))?;
            let key = k.value().to_vec();
            let value = self.unseal_entry(&key, v.value())?;
            out.push((key, value));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_shown_readably() {
        assert_eq!(show_key(b"abc"), "\"abc\"");
        assert_eq!(show_key(&[0, 255]), "0x00ff");
        assert!(show_key(&[b'a'; 40]).ends_with('…'));
    }
}
