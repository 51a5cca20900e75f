//! Episodic memory on `DiskStore` (a temporary directory; every commit is fsynced) and on
//! `MemStore` (the same code without the disk): a baseline of one-key commits per second,
//! episodes appended per second one per commit (the first half) and 64 per commit
//! (`append_all`, the second half), then full-text queries per second (one word, two words, two words with a peer
//! filter; limit 10).
//!
//! Episodes are 12 to 40 words drawn from a 5,000-word vocabulary with a Zipf-like skew,
//! 50 peers, 4 kinds. `MESH_MEMORY_N` sets the number of episodes (default 5,000).
//! A custom harness: it prints figures.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::disallowed_methods // a benchmark reads the clock
)]

use std::time::Instant;

use mesh_memory::episodic::{Episodic, Kind, NewEpisode, Peer, Query};
use mesh_store::{DiskStore, Kv, MemStore, Store};
use mesh_types::Timestamp;

struct Lcg(u64);

type MakeQuery = fn(&mut Lcg) -> Query;

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// Zipf-like: the square of a uniform draw favours small word numbers.
    fn word(&mut self) -> u64 {
        let u = (self.next() % 10_000) as f64 / 10_000.0;
        (u * u * 5_000.0) as u64
    }
}

fn episode(rng: &mut Lcg, i: u64) -> NewEpisode {
    let words = 12 + rng.next() % 29;
    let text: Vec<String> = (0..words).map(|_| format!("w{}", rng.word())).collect();
    let kind = match rng.next() % 4 {
        0 => Kind::MessageSent,
        1 => Kind::MessageReceived,
        2 => Kind::ToolCall,
        _ => Kind::Observation,
    };
    let peer = Peer::new(format!("did:key:z6MkPeer{}", rng.next() % 50)).unwrap();
    NewEpisode::new(
        Timestamp(1_700_000_000_000 + i * 1000),
        peer,
        kind,
        text.join(" "),
    )
    .with("seq", i.to_string())
}

fn run<S: Store>(name: &str, store: &S, n: u64) {
    let mut memory = Episodic::open(store, "episodes").unwrap();
    let mut rng = Lcg(42);
    let episodes: Vec<NewEpisode> = (0..n).map(|i| episode(&mut rng, i)).collect();
    // Baseline: one small put per durable commit in another tree.
    let kv = store.kv("baseline").unwrap();
    let start = Instant::now();
    for i in 0..500u64 {
        kv.put(&i.to_be_bytes(), b"value").unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{name}: baseline: {:.0} one-key commits/s", 500.0 / secs);
    let (single, batched) = episodes.split_at(episodes.len() / 2);
    let start = Instant::now();
    for e in single {
        memory.append(e).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name}: {} appends, one per commit, in {secs:.2} s: {:.0} episodes/s",
        single.len(),
        single.len() as f64 / secs
    );
    let start = Instant::now();
    for chunk in batched.chunks(64) {
        memory.append_all(chunk).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name}: {} appends, 64 per commit, in {secs:.2} s: {:.0} episodes/s",
        batched.len(),
        batched.len() as f64 / secs
    );
    let queries: [(&str, MakeQuery); 3] = [
        ("1 word", |r| {
            Query::newest(10).text(format!("w{}", r.word()))
        }),
        ("2 words", |r| {
            Query::newest(10).text(format!("w{} w{}", r.word(), r.word()))
        }),
        ("2 words + peer", |r| {
            Query::newest(10)
                .text(format!("w{} w{}", r.word(), r.word()))
                .peer(Peer::new(format!("did:key:z6MkPeer{}", r.next() % 50)).unwrap())
        }),
    ];
    for (label, make) in queries {
        let mut rng = Lcg(7);
        let qs: Vec<Query> = (0..2_000).map(|_| make(&mut rng)).collect();
        let start = Instant::now();
        let mut hits = 0;
        for q in &qs {
            hits += memory.query(q).unwrap().len();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{name}: {label}: {:.0} queries/s ({:.1} hits per query)",
            qs.len() as f64 / secs,
            hits as f64 / qs.len() as f64
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: u64 = std::env::var("MESH_MEMORY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let dir = tempfile::tempdir().unwrap();
    run("DiskStore", &DiskStore::open(dir.path()).unwrap(), n);
    run("MemStore", &MemStore::new(), n);
}
