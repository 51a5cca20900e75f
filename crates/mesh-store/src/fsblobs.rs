//! Content-addressed blobs as files: `<dir>/<first 2 hex digits>/<other 62 hex digits>`.
//!
//! A blob is written to a fresh file in `<dir>/tmp/`, synced, renamed into place and its
//! directory synced, so a crash leaves either no blob or the whole blob; leftovers in `tmp/`
//! are removed on open. All 256 shard directories are created (and synced) at open, so a
//! write never depends on a directory entry that is not yet durable. Every read re-hashes the
//! file and reports a mismatch as [`Error::Corrupt`]; a `put` of content whose file is
//! damaged rewrites it. One `FsBlobs` at a time may use a directory (`<dir>/LOCK`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use mesh_types::Digest;

use crate::api::{Blobs, MAX_BLOB_LEN};
use crate::error::{Error, Result};

/// Distinguishes temporary files of all `FsBlobs` in this process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A directory of content-addressed blobs.
#[derive(Debug)]
pub struct FsBlobs {
    dir: PathBuf,
    tmp_dir: PathBuf,
    /// Held for the lifetime of the store: the advisory lock on `<dir>/LOCK`.
    _lock: File,
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, "syncing the directory", e))
}

fn hex_shard(i: u8) -> String {
    format!("{i:02x}")
}

impl FsBlobs {
    /// Opens (creating if needed) the blob directory `dir`, takes its lock, and removes
    /// temporary files left by an interrupted write.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let tmp_dir = dir.join("tmp");
        fs::create_dir_all(&tmp_dir).map_err(|e| Error::io(&tmp_dir, "creating", e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, "opening the lock file", e))?;
        lock.try_lock()
            .map_err(|_| Error::Locked { path: dir.clone() })?;

        let entries = fs::read_dir(&tmp_dir).map_err(|e| Error::io(&tmp_dir, "listing", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&tmp_dir, "listing", e))?;
            let path = entry.path();
            fs::remove_file(&path)
                .map_err(|e| Error::io(&path, "removing a stale temporary", e))?;
        }
        for i in 0..=255u8 {
            let shard = dir.join(hex_shard(i));
            if !shard.is_dir() {
                fs::create_dir(&shard).map_err(|e| Error::io(&shard, "creating", e))?;
            }
        }
        sync_dir(&dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(Self {
            dir,
            tmp_dir,
            _lock: lock,
        })
    }

    /// The directory holding the blobs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a blob named `id` lives in.
    pub fn path_of(&self, id: &Digest) -> PathBuf {
        let hex = id.to_string();
        self.dir.join(&hex[..2]).join(&hex[2..])
    }

    fn write_new(&self, path: &Path, data: &[u8]) -> Result<()> {
        let (tmp, mut f) = loop {
            let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let tmp = self.tmp_dir.join(format!("{}-{n}", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&tmp, "creating", e)),
            }
        };
        let result = (|| {
            f.write_all(data)
                .map_err(|e| Error::io(&tmp, "writing", e))?;
            f.sync_all().map_err(|e| Error::io(&tmp, "syncing", e))?;
            drop(f);
            fs::rename(&tmp, path).map_err(|e| Error::io(path, "renaming into place", e))?;
            sync_dir(path.parent().unwrap_or(&self.dir))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Reads and verifies the file of `id`; `Ok(None)` if absent.
    fn read_verified(&self, id: &Digest) -> Result<Option<Vec<u8>>> {
        let path = self.path_of(id);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, "opening", e)),
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io(&path, "reading metadata", e))?
            .len();
        if len > MAX_BLOB_LEN as u64 {
            return Err(Error::corrupt(
                &path,
                format!("blob file is {len} bytes, above the {MAX_BLOB_LEN}-byte limit"),
            ));
        }
        let mut data = Vec::with_capacity(len as usize);
        file.read_to_end(&mut data)
            .map_err(|e| Error::io(&path, "reading", e))?;
        let actual = Digest::of(&data);
        if actual != *id {
            return Err(Error::corrupt(
                &path,
                format!("content hash mismatch: named {id}, content hashes to {actual}"),
            ));
        }
        Ok(Some(data))
    }
}

impl Blobs for FsBlobs {
    fn put(&self, data: &[u8]) -> Result<Digest> {
        if data.len() > MAX_BLOB_LEN {
            return Err(Error::too_large("blob", data.len(), MAX_BLOB_LEN));
        }
        let id = Digest::of(data);
        let path = self.path_of(&id);
        match self.read_verified(&id) {
            // Already held and intact: make sure it is durable (another writer may have
            // renamed it into place and not yet synced), then acknowledge.
            Ok(Some(_)) => {
                File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| Error::io(&path, "syncing", e))?;
                sync_dir(path.parent().unwrap_or(&self.dir))?;
            }
            // Absent, or damaged: write it (replacing the damaged file).
            Ok(None) | Err(Error::Corrupt { .. }) => self.write_new(&path, data)?,
            Err(e) => return Err(e),
        }
        Ok(id)
    }

    fn get(&self, id: &Digest) -> Result<Option<Vec<u8>>> {
        self.read_verified(id)
    }

    fn contains(&self, id: &Digest) -> Result<bool> {
        let path = self.path_of(id);
        match fs::metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(&path, "reading metadata", e)),
        }
    }

    fn delete(&self, id: &Digest) -> Result<bool> {
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(path.parent().unwrap_or(&self.dir))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(&path, "removing", e)),
        }
    }

    fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for i in 0..=255u8 {
            let prefix = hex_shard(i);
            let shard_path = self.dir.join(&prefix);
            let files = match fs::read_dir(&shard_path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&shard_path, "listing", e)),
            };
            for file in files {
                let file = file.map_err(|e| Error::io(&shard_path, "listing", e))?;
                let name = file.file_name();
                if let Some(rest) = name.to_str()
                    && let Ok(id) = format!("{prefix}{rest}").parse::<Digest>()
                {
                    out.push(id);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}
