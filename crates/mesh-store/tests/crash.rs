//! Crash safety: a writer process is killed with SIGKILL in the middle of a stream of
//! appends, puts and blob writes, again and again; after each kill the store must hold every
//! write the writer acknowledged, intact, and must never return a torn record.
//!
//! The writer is this same test binary re-run with `--exact crash_child_writer` and the
//! store directory in `MESH_STORE_CRASH_DIR`; it prints `ack <kind> <n>` after each write
//! returns. Run without that variable, `crash_child_writer` checks a short stream in-process.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use mesh_store::{Blobs, DiskStore, Kv, Log, Store};

const DIR_VAR: &str = "MESH_STORE_CRASH_DIR";

/// Deterministic record content for index `i`: its index, then 0..4000 bytes of filler, so
/// records straddle page boundaries.
fn record(i: u64) -> Vec<u8> {
    let mut r = i.to_le_bytes().to_vec();
    r.resize(8 + (i.wrapping_mul(2654435761) % 4000) as usize, i as u8);
    r
}

fn blob(i: u64) -> Vec<u8> {
    let mut b = format!("blob {i}").into_bytes();
    b.resize(1000 + (i % 7) as usize * 10_000, (i % 251) as u8);
    b
}

/// Writes forever (bounded), acknowledging each durable write on `out`.
fn write_stream(dir: &Path, max_writes: u64, out: &mut impl Write) {
    let store = DiskStore::open(dir).unwrap();
    let log = store.log("stream").unwrap();
    let kv = store.kv("stream").unwrap();
    let mut i = log.bounds().unwrap().next;
    let end = i + max_writes;
    while i < end {
        if i % 16 == 5 {
            // A batch of three records in one commit.
            let batch = [record(i), record(i + 1), record(i + 2)];
            let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            assert_eq!(log.append(&refs).unwrap(), i);
            writeln!(out, "ack log {}", i + 2).unwrap();
            i += 3;
        } else {
            assert_eq!(log.append_one(&record(i)).unwrap(), i);
            writeln!(out, "ack log {i}").unwrap();
            i += 1;
        }
        if i.is_multiple_of(10) {
            kv.put(format!("k{i}").as_bytes(), &record(i)).unwrap();
            writeln!(out, "ack kv {i}").unwrap();
        }
        if i.is_multiple_of(50) {
            store.blobs().put(&blob(i)).unwrap();
            writeln!(out, "ack blob {i}").unwrap();
        }
        out.flush().unwrap();
    }
}

/// Checks that every acknowledged write is present and intact, and that nothing else is torn.
fn verify(dir: &Path, acked_log: u64, acked_kv: &[u64], acked_blobs: &[u64]) {
    let store = DiskStore::open(dir).unwrap();
    let log = store.log("stream").unwrap();
    let bounds = log.bounds().unwrap();
    assert!(
        bounds.next > acked_log,
        "log ends at {} but index {acked_log} was acknowledged",
        bounds.next
    );
    // Every record present, acknowledged or not, must be exactly what was written.
    let mut from = 0;
    loop {
        let page = log.scan(from, 512, usize::MAX).unwrap();
        let Some(&(last, _)) = page.last() else { break };
        for (i, r) in page {
            assert_eq!(r, record(i), "record {i} is torn or wrong");
        }
        from = last + 1;
    }
    assert_eq!(
        from, bounds.next,
        "records missing below the end of the log"
    );
    let kv = store.kv("stream").unwrap();
    for &k in acked_kv {
        assert_eq!(
            kv.get(format!("k{k}").as_bytes()).unwrap(),
            Some(record(k)),
            "kv k{k} lost"
        );
    }
    for (key, value) in kv.scan_prefix(b"k", usize::MAX).unwrap() {
        let n: u64 = std::str::from_utf8(&key[1..]).unwrap().parse().unwrap();
        assert_eq!(value, record(n), "kv k{n} torn");
    }
    for &b in acked_blobs {
        let id = mesh_types::Digest::of(&blob(b));
        assert_eq!(
            store.blobs().get(&id).unwrap(),
            Some(blob(b)),
            "blob {b} lost"
        );
    }
    for id in store.blobs().list().unwrap() {
        // Any blob present verifies against its name (get re-hashes).
        assert!(store.blobs().get(&id).unwrap().is_some());
    }
}

#[test]
fn crash_child_writer() {
    match std::env::var_os(DIR_VAR) {
        Some(dir) => write_stream(Path::new(&dir), 1_000_000, &mut std::io::stdout().lock()),
        None => {
            let dir = tempfile::tempdir().unwrap();
            let mut acks = Vec::new();
            write_stream(dir.path(), 120, &mut acks);
            let (log, kv, blobs) = parse_acks(std::str::from_utf8(&acks).unwrap().lines());
            verify(dir.path(), log.unwrap(), &kv, &blobs);
        }
    }
}

fn parse_acks<'a>(lines: impl Iterator<Item = &'a str>) -> (Option<u64>, Vec<u64>, Vec<u64>) {
    let (mut log, mut kv, mut blobs) = (None, Vec::new(), Vec::new());
    for line in lines {
        let mut parts = line.split_whitespace();
        if parts.next() != Some("ack") {
            continue;
        }
        let (Some(kind), Some(Ok(n))) = (parts.next(), parts.next().map(str::parse::<u64>)) else {
            continue;
        };
        match kind {
            "log" => log = Some(n),
            "kv" => kv.push(n),
            "blob" => blobs.push(n),
            _ => {}
        }
    }
    (log, kv, blobs)
}

#[test]
fn sigkill_mid_stream_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut all_kv = Vec::new();
    let mut all_blobs = Vec::new();
    let mut acked_log = 0;
    // Kill points vary from round to round, including right at start-up.
    for (round, kill_after) in [1usize, 200, 37, 500, 3, 120, 900, 64]
        .into_iter()
        .enumerate()
    {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(DIR_VAR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut lines = Vec::new();
        let mut line = String::new();
        let mut acks = 0;
        while acks < kill_after {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                panic!("writer exited early in round {round}: {lines:?}");
            }
            if line.starts_with("ack") {
                acks += 1;
            }
            lines.push(line.clone());
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Acks written before the kill are still in the pipe.
        for rest in reader.lines() {
            lines.push(rest.unwrap());
        }
        let (log, kv, blobs) = parse_acks(lines.iter().map(String::as_str));
        acked_log = acked_log.max(log.unwrap_or(0));
        all_kv.extend(kv);
        all_blobs.extend(blobs);
        verify(dir.path(), acked_log, &all_kv, &all_blobs);
    }
    assert!(
        acked_log > 1000,
        "the writer made too little progress to test anything: {acked_log}"
    );
}
