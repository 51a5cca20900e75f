//! Embedding `mesh-store`: open a store, append to a log, use a tree and a blob, reopen.
//!
//! `cargo run -p mesh-examples --example store_quickstart [DIR]` (a temporary directory if no
//! DIR is given).

#![allow(clippy::print_stdout)] // an example program reports on stdout

use anyhow::Context as _;
use mesh_store::{Batch, Blobs, DiskStore, Kv, Log, Store};

fn main() -> anyhow::Result<()> {
    let tmp;
    let dir = match std::env::args_os().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };

    let (first, blob_id) = {
        let store = DiskStore::open(&dir).context("opening the store")?;
        let log = store.log("decisions")?;
        let first = log.append(&[b"admit node-5", b"rotate key of node-2", b"model v3"])?;

        let kv = store.kv("peers")?;
        let mut batch = Batch::new();
        batch.put(b"peer/1".to_vec(), b"127.0.0.1:4001".to_vec());
        batch.put(b"peer/2".to_vec(), b"127.0.0.1:4002".to_vec());
        kv.apply(&batch)?;

        let blob_id = store.blobs().put(b"global model, round 3")?;
        (first, blob_id)
        // The store closes here; everything above is already on disk.
    };

    let store = DiskStore::open(&dir).context("reopening the store")?;
    let log = store.log("decisions")?;
    let bounds = log.bounds()?;
    println!(
        "log 'decisions' holds records {}..{}",
        bounds.first, bounds.next
    );
    for (i, record) in log.scan(first, 100, 1 << 20)? {
        println!("  #{i}: {}", String::from_utf8_lossy(&record));
    }
    for (k, v) in store.kv("peers")?.scan_prefix(b"peer/", 10)? {
        println!(
            "  {} -> {}",
            String::from_utf8_lossy(&k),
            String::from_utf8_lossy(&v)
        );
    }
    let blob = store
        .blobs()
        .get(&blob_id)?
        .context("blob missing after reopen")?;
    println!(
        "blob {} = {:?}",
        blob_id.short(),
        String::from_utf8_lossy(&blob)
    );
    anyhow::ensure!(
        bounds.len() == 3,
        "expected 3 records, found {}",
        bounds.len()
    );
    println!("store_quickstart: ok");
    Ok(())
}
