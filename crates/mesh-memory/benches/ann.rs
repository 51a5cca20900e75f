//! The ANN index against exact search on the reference set: 100,000 unit vectors of
//! 384 dimensions around 1,000 random centres (noise 0.35), 1,000 queries drawn the same way,
//! M = 16, ef_construction = 200, one thread. hnswlib 0.8 on the same kind of machine: build
//! 62 s; at ef = 16, recall@10 0.967 at about 12,000 queries/s.
//!
//! Prints build time and, for each `ef`, recall@10 and queries/s (a custom harness: the
//! build alone takes about a minute). `MESH_ANN_N` sets the number of vectors.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::disallowed_methods // a benchmark reads the clock
)]

use std::time::Instant;

use mesh_memory::ann::{Hnsw, Params, Scratch, clustered, recall};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("MESH_ANN_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dim = 384;
    let data = clustered(n, dim, 1_000, 0.35, 1, 1);
    let queries = clustered(1_000, dim, 1_000, 0.35, 1, 2);
    let start = Instant::now();
    let mut index = Hnsw::new(dim, Params::default()).unwrap();
    for (i, v) in data.iter().enumerate() {
        index.insert(v).unwrap();
        if (i + 1) % 20_000 == 0 {
            println!(
                "  {} inserted, {:.1} s",
                i + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    let build = start.elapsed();
    println!(
        "HNSW, {n} x {dim}, M=16, ef_construction=200: build {:.1} s ({:.0} inserts/s)",
        build.as_secs_f64(),
        n as f64 / build.as_secs_f64()
    );
    let truth: Vec<_> = queries
        .iter()
        .map(|q| index.exact(q, 10).unwrap())
        .collect();
    let t = Instant::now();
    for q in &queries {
        std::hint::black_box(index.exact(q, 10).unwrap());
    }
    println!(
        "exact search: {:.0} queries/s",
        queries.len() as f64 / t.elapsed().as_secs_f64()
    );
    let mut scratch = Scratch::default();
    for ef in [10, 16, 24, 32, 64, 128] {
        let t = Instant::now();
        let found: Vec<_> = queries
            .iter()
            .map(|q| index.search_with(q, 10, ef, &mut scratch).unwrap())
            .collect();
        let qps = queries.len() as f64 / t.elapsed().as_secs_f64();
        let r = found
            .iter()
            .zip(&truth)
            .map(|(f, t)| recall(f, t))
            .sum::<f64>()
            / queries.len() as f64;
        println!("ef={ef:>3}: recall@10 {r:.3} at {qps:.0} queries/s");
    }
}
