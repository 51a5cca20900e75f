//! Arbitrary bytes as a store's database file: opening and reading it must give data or a
//! typed error, never a panic that escapes the store.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_store::{DiskStore, Kv, Log, Store};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("store.redb"), data).unwrap();
    if let Ok(store) = DiskStore::open(dir.path()) {
        if let Ok(log) = store.log("data") {
            let _ = log.scan(0, 64, 1 << 20);
        }
        if let Ok(kv) = store.kv("data") {
            let _ = kv.scan_prefix(b"", 64);
        }
    }
});
