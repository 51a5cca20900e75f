//! Model-based property tests: random operation sequences against `MemStore`, `DiskStore`
//! (with reopens in between) and a plain-collections model must agree at every step.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ops::Bound;

use mesh_store::{Batch, DiskStore, Kv, Log, LogBounds, MemStore, Store};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum LogOp {
    Append(Vec<Vec<u8>>),
    Get(u64),
    Scan {
        from: u64,
        max_records: usize,
        max_bytes: usize,
    },
    TruncateBefore(u64),
    TruncateFrom(u64),
    Reopen,
}

fn log_op() -> impl Strategy<Value = LogOp> {
    let record = proptest::collection::vec(any::<u8>(), 0..24);
    prop_oneof![
        4 => proptest::collection::vec(record, 0..4).prop_map(LogOp::Append),
        2 => (0u64..24).prop_map(LogOp::Get),
        2 => (0u64..24, 0usize..6, 0usize..64)
            .prop_map(|(from, max_records, max_bytes)| LogOp::Scan { from, max_records, max_bytes }),
        1 => (0u64..24).prop_map(LogOp::TruncateBefore),
        1 => (0u64..24).prop_map(LogOp::TruncateFrom),
        1 => Just(LogOp::Reopen),
    ]
}

#[derive(Debug, Default)]
struct LogModel {
    bounds: LogBounds,
    records: BTreeMap<u64, Vec<u8>>,
}

impl LogModel {
    fn scan(&self, from: u64, max_records: usize, max_bytes: usize) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for (&i, r) in self.records.range(from..) {
            if out.len() >= max_records || (!out.is_empty() && bytes + r.len() > max_bytes) {
                break;
            }
            bytes += r.len();
            out.push((i, r.clone()));
        }
        out
    }
}

fn check_log<S: Store>(mut open: impl FnMut() -> S, ops: &[LogOp]) -> Result<(), TestCaseError> {
    let mut store = open();
    let mut log = store.log("model").unwrap();
    let mut model = LogModel::default();
    for op in ops {
        match op {
            LogOp::Append(records) => {
                let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
                let first = log.append(&refs).unwrap();
                prop_assert_eq!(first, model.bounds.next);
                for r in records {
                    model.records.insert(model.bounds.next, r.clone());
                    model.bounds.next += 1;
                }
            }
            LogOp::Get(i) => prop_assert_eq!(log.get(*i).unwrap(), model.records.get(i).cloned()),
            LogOp::Scan {
                from,
                max_records,
                max_bytes,
            } => prop_assert_eq!(
                log.scan(*from, *max_records, *max_bytes).unwrap(),
                model.scan(*from, *max_records, *max_bytes)
            ),
            LogOp::TruncateBefore(i) => {
                log.truncate_before(*i).unwrap();
                let first = (*i).min(model.bounds.next).max(model.bounds.first);
                model.records = model.records.split_off(&first);
                model.bounds.first = first;
            }
            LogOp::TruncateFrom(i) => {
                let got = log.truncate_from(*i);
                if *i < model.bounds.first {
                    prop_assert!(got.is_err());
                } else {
                    got.unwrap();
                    model.records.split_off(i);
                    model.bounds.next = model.bounds.next.min(*i);
                }
            }
            LogOp::Reopen => {
                drop(log);
                drop(store);
                store = open();
                log = store.log("model").unwrap();
            }
        }
        prop_assert_eq!(log.bounds().unwrap(), model.bounds);
    }
    // Everything still readable, in order.
    prop_assert_eq!(
        log.scan(0, usize::MAX, usize::MAX).unwrap(),
        model.scan(0, usize::MAX, usize::MAX)
    );
    Ok(())
}

#[derive(Debug, Clone)]
enum KvOpT {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Get(Vec<u8>),
    Batch(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    Scan(Bound<Vec<u8>>, Bound<Vec<u8>>, usize),
    ScanPrefix(Vec<u8>, usize),
    Reopen,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![Just(0u8), Just(1), Just(b'a'), Just(0xff)],
        0..4,
    )
}

fn bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    prop_oneof![
        key().prop_map(Bound::Included),
        key().prop_map(Bound::Excluded),
        Just(Bound::Unbounded)
    ]
}

fn kv_op() -> impl Strategy<Value = KvOpT> {
    let value = proptest::collection::vec(any::<u8>(), 0..16);
    prop_oneof![
        4 => (key(), value.clone()).prop_map(|(k, v)| KvOpT::Put(k, v)),
        2 => key().prop_map(KvOpT::Delete),
        2 => key().prop_map(KvOpT::Get),
        2 => proptest::collection::vec((key(), proptest::option::of(value)), 0..5).prop_map(KvOpT::Batch),
        2 => (bound(), bound(), 0usize..8).prop_map(|(s, e, l)| KvOpT::Scan(s, e, l)),
        1 => (key(), 0usize..8).prop_map(|(p, l)| KvOpT::ScanPrefix(p, l)),
        1 => Just(KvOpT::Reopen),
    ]
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn model_scan(
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    limit: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    // Filter rather than `range` so inverted bounds simply yield nothing.
    let after_start = |k: &[u8]| match start {
        Bound::Included(s) => k >= s,
        Bound::Excluded(s) => k > s,
        Bound::Unbounded => true,
    };
    let before_end = |k: &[u8]| match end {
        Bound::Included(e) => k <= e,
        Bound::Excluded(e) => k < e,
        Bound::Unbounded => true,
    };
    model
        .iter()
        .filter(|(k, _)| after_start(k) && before_end(k))
        .take(limit)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn check_kv<S: Store>(mut open: impl FnMut() -> S, ops: &[KvOpT]) -> Result<(), TestCaseError> {
    let mut store = open();
    let mut kv = store.kv("model").unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for op in ops {
        match op {
            KvOpT::Put(k, v) => {
                kv.put(k, v).unwrap();
                model.insert(k.clone(), v.clone());
            }
            KvOpT::Delete(k) => prop_assert_eq!(kv.delete(k).unwrap(), model.remove(k).is_some()),
            KvOpT::Get(k) => prop_assert_eq!(kv.get(k).unwrap(), model.get(k).cloned()),
            KvOpT::Batch(writes) => {
                let mut batch = Batch::new();
                for (k, v) in writes {
                    match v {
                        Some(v) => {
                            batch.put(k.clone(), v.clone());
                            model.insert(k.clone(), v.clone());
                        }
                        None => {
                            batch.delete(k.clone());
                            model.remove(k);
                        }
                    }
                }
                kv.apply(&batch).unwrap();
            }
            KvOpT::Scan(s, e, limit) => prop_assert_eq!(
                kv.scan(as_ref(s), as_ref(e), *limit).unwrap(),
                model_scan(&model, as_ref(s), as_ref(e), *limit)
            ),
            KvOpT::ScanPrefix(p, limit) => {
                let expected: Vec<_> = model
                    .iter()
                    .filter(|(k, _)| k.starts_with(p))
                    .take(*limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                prop_assert_eq!(kv.scan_prefix(p, *limit).unwrap(), expected);
            }
            KvOpT::Reopen => {
                drop(kv);
                drop(store);
                store = open();
                kv = store.kv("model").unwrap();
            }
        }
    }
    prop_assert_eq!(
        kv.scan(Bound::Unbounded, Bound::Unbounded, usize::MAX)
            .unwrap(),
        model.into_iter().collect::<Vec<_>>()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mem_log_matches_model(ops in proptest::collection::vec(log_op(), 0..40)) {
        let store = MemStore::new();
        check_log(|| store.clone(), &ops)?;
    }

    #[test]
    fn mem_kv_matches_model(ops in proptest::collection::vec(kv_op(), 0..40)) {
        let store = MemStore::new();
        check_kv(|| store.clone(), &ops)?;
    }
}

proptest! {
    // Every disk write is an fsync: fewer, still varied, cases.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn disk_log_matches_model_across_reopens(ops in proptest::collection::vec(log_op(), 0..30)) {
        let dir = tempfile::tempdir().unwrap();
        check_log(|| DiskStore::open(dir.path()).unwrap(), &ops)?;
    }

    #[test]
    fn disk_kv_matches_model_across_reopens(ops in proptest::collection::vec(kv_op(), 0..30)) {
        let dir = tempfile::tempdir().unwrap();
        check_kv(|| DiskStore::open(dir.path()).unwrap(), &ops)?;
    }
}
