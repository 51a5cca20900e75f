//! Content-addressed blobs as files: `<dir>/<first 2 hex digits>/<other 62 hex digits>`.
//!
//! A blob is written to `<dir>/tmp/`, synced, renamed into place and its directory synced,
//! so a crash leaves either no blob or the whole blob; leftovers in `tmp/` are removed on
//! open. Every read re-hashes the file and reports a mismatch as [`Error::Corrupt`].

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use mesh_types::Digest;

use crate::api::{Blobs, MAX_BLOB_LEN};
use crate::error::{Error, Result};

/// A directory of content-addressed blobs.
#[derive(Debug)]
pub struct FsBlobs {
    dir: PathBuf,
    tmp_dir: PathBuf,
    tmp_counter: AtomicU64,
}

impl FsBlobs {
    /// Opens (creating if needed) the blob directory `dir` and removes temporary files left by
    /// an interrupted write.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let tmp_dir = dir.join("tmp");
        fs::create_dir_all(&tmp_dir).map_err(|e| Error::io(&tmp_dir, "creating", e))?;
        let entries = fs::read_dir(&tmp_dir).map_err(|e| Error::io(&tmp_dir, "listing", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&tmp_dir, "listing", e))?;
            let path = entry.path();
            fs::remove_file(&path)
                .map_err(|e| Error::io(&path, "removing a stale temporary", e))?;
        }
        Ok(Self {
            dir,
            tmp_dir,
            tmp_counter: AtomicU64::new(0),
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
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp_dir.join(format!("{}-{n}", std::process::id()));
        let result = (|| {
            let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, "creating", e))?;
            f.write_all(data)
                .map_err(|e| Error::io(&tmp, "writing", e))?;
            f.sync_all().map_err(|e| Error::io(&tmp, "syncing", e))?;
            drop(f);
            let shard = path.parent().unwrap_or(&self.dir);
            if !shard.exists() {
                fs::create_dir_all(shard).map_err(|e| Error::io(shard, "creating", e))?;
                sync_dir(&self.dir)?;
            }
            fs::rename(&tmp, path).map_err(|e| Error::io(path, "renaming into place", e))?;
            sync_dir(shard)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, "syncing the directory", e))
}

impl Blobs for FsBlobs {
    fn put(&self, data: &[u8]) -> Result<Digest> {
        if data.len() > MAX_BLOB_LEN {
            return Err(Error::too_large("blob", data.len(), MAX_BLOB_LEN));
        }
        let id = Digest::of(data);
        let path = self.path_of(&id);
        match fs::metadata(&path) {
            // Same name and size: the same content, unless damaged, which reads report.
            Ok(m) if m.len() == data.len() as u64 => return Ok(id),
            Ok(_) | Err(_) => self.write_new(&path, data)?,
        }
        Ok(id)
    }

    fn get(&self, id: &Digest) -> Result<Option<Vec<u8>>> {
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
        let shards = fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, "listing", e))?;
        for shard in shards {
            let shard = shard.map_err(|e| Error::io(&self.dir, "listing", e))?;
            let shard_name = shard.file_name();
            let Some(prefix) = shard_name.to_str().filter(|n| n.len() == 2) else {
                continue;
            };
            let shard_path = shard.path();
            let files =
                fs::read_dir(&shard_path).map_err(|e| Error::io(&shard_path, "listing", e))?;
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
