//! Store throughput: durable appends (one record per commit, and batched), kv puts, reads.
//!
//! Run with `cargo bench -p mesh-store`. Every append here is a durable commit (fsync), so
//! the unbatched figure is bounded by the disk's sync latency; batching amortises it.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mesh_store::{DiskStore, Kv, Log, MemStore, Store};

const RECORD: usize = 256;

fn appends(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let log = store.log("bench").unwrap();
    let record = vec![0x5au8; RECORD];

    let mut g = c.benchmark_group("log_append_durable");
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1));
    g.bench_function("1_record_per_commit", |b| {
        b.iter(|| log.append_one(black_box(&record)).unwrap())
    });
    for batch in [16usize, 256] {
        let records: Vec<&[u8]> = (0..batch).map(|_| record.as_slice()).collect();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("{batch}_records_per_commit"), |b| {
            b.iter(|| log.append(black_box(&records)).unwrap())
        });
    }
    g.finish();

    let mem = MemStore::new().log("bench").unwrap();
    let mut g = c.benchmark_group("log_append_memory");
    g.throughput(Throughput::Elements(1));
    g.bench_function("1_record", |b| {
        b.iter(|| mem.append_one(black_box(&record)).unwrap())
    });
    g.finish();
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let log = store.log("bench").unwrap();
    let record = vec![0x5au8; RECORD];
    let n = 10_000u64;
    let records: Vec<&[u8]> = (0..1000).map(|_| record.as_slice()).collect();
    for _ in 0..n / 1000 {
        log.append(&records).unwrap();
    }
    let kv = store.kv("bench").unwrap();
    let mut batch = mesh_store::Batch::new();
    for i in 0..n {
        batch.put(i.to_be_bytes().to_vec(), record.clone());
    }
    kv.apply(&batch).unwrap();

    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("log_get", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            log.get(black_box(i)).unwrap().unwrap()
        })
    });
    g.bench_function("kv_get", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            kv.get(black_box(&i.to_be_bytes())).unwrap().unwrap()
        })
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("log_scan_1000", |b| {
        b.iter(|| log.scan(black_box(1000), 1000, usize::MAX).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("kv_put_durable");
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1));
    g.bench_function("1_put_per_commit", |b| {
        b.iter_batched(
            || {
                i += 1;
                i
            },
            |k| kv.put(&k.to_be_bytes(), &record).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, appends, reads);
criterion_main!(benches);
