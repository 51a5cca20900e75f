//! Sentence embeddings per second with all-MiniLM-L6-v2 (fetched by `cargo xtask models`):
//! one text at a time and batches of 32, on 64 distinct sentences of 10 to 20 words; also the
//! load time and the tokenizer alone. candle computes on `RAYON_NUM_THREADS` threads
//! (default: every core); set it to 1 for a one-thread figure. On Linux each line also gives
//! the process's CPU time per sentence (user + system, from `/proc/self/stat`), which a
//! machine shared with other work disturbs less than the wall-clock rate.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::disallowed_methods // a benchmark reads the clock
)]

use std::time::{Duration, Instant};

use mesh_memory::embed::minilm_dir;
use mesh_memory::{Embedder, HashingEmbedder, MiniLm};

const SUBJECTS: [&str; 8] = [
    "The agent",
    "A validator on the mesh",
    "Our coordinator node",
    "The federated learning client",
    "Each peer in the cluster",
    "The memory service",
    "A small research robot",
    "The consensus replica",
];
const ACTIONS: [&str; 8] = [
    "stores the summary of today's meeting in its long-term memory",
    "recalls which documents mentioned the delayed train to Berlin",
    "sends a signed update to the other nodes before the round closes",
    "ranks the recent notes by their similarity to the user's question",
    "forgets stale observations once the index grows beyond its budget",
    "asks a neighbour for the missing block after a network partition",
    "writes a short report about the failed deployment last night",
    "compares two paraphrased questions and merges their answers",
];

fn sentences() -> Vec<String> {
    SUBJECTS
        .iter()
        .flat_map(|s| ACTIONS.iter().map(move |a| format!("{s} {a}.")))
        .collect()
}

/// The process's CPU time so far (user + system) in seconds, on Linux (100 ticks a second).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; the fields after it are separated by single spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Runs `f` (which embeds `per_call` texts) until `at_least` has passed: texts per second of
/// wall clock, and milliseconds of CPU time per text.
fn rate(per_call: usize, at_least: Duration, mut f: impl FnMut()) -> (f64, Option<f64>) {
    f(); // warm-up
    let cpu = cpu_seconds();
    let start = Instant::now();
    let mut calls = 0;
    while start.elapsed() < at_least {
        f();
        calls += 1;
    }
    let texts = (calls * per_call) as f64;
    let cpu_ms = cpu
        .zip(cpu_seconds())
        .map(|(before, after)| (after - before) * 1e3 / texts);
    (texts / start.elapsed().as_secs_f64(), cpu_ms)
}

fn show(what: &str, (rate, cpu_ms): (f64, Option<f64>)) {
    match cpu_ms {
        Some(ms) => println!("{what}: {rate:.0} sentences/s ({ms:.3} ms of CPU per sentence)"),
        None => println!("{what}: {rate:.0} sentences/s"),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = minilm_dir();
    let start = Instant::now();
    let model = MiniLm::load(&dir)
        .unwrap_or_else(|e| panic!("{e}: run `cargo xtask models` to fetch all-MiniLM-L6-v2"));
    println!(
        "all-MiniLM-L6-v2: loaded in {:.2} s; candle threads: {}",
        start.elapsed().as_secs_f64(),
        candle_core_threads()
    );
    let texts = sentences();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let words: usize = refs.iter().map(|t| t.split_whitespace().count()).sum();
    let tokens: usize = refs
        .iter()
        .map(|t| model.tokenizer().encode(t, MiniLm::MAX_TOKENS).len())
        .sum();
    println!(
        "{} sentences, {:.1} words and {:.1} tokens each on average",
        refs.len(),
        words as f64 / refs.len() as f64,
        tokens as f64 / refs.len() as f64
    );
    let secs = Duration::from_secs(5);
    let mut i = 0;
    let single = rate(1, secs, || {
        std::hint::black_box(model.embed_one(refs[i % refs.len()]).unwrap());
        i += 1;
    });
    show("one at a time", single);
    let mut i = 0;
    let batch = rate(32, secs, || {
        let chunk = &refs[(i % 2) * 32..(i % 2) * 32 + 32];
        std::hint::black_box(model.embed(chunk).unwrap());
        i += 1;
    });
    show("batches of 32", batch);
    let tok = rate(refs.len(), Duration::from_secs(1), || {
        for t in &refs {
            std::hint::black_box(model.tokenizer().encode(t, MiniLm::MAX_TOKENS));
        }
    });
    show("tokenizer alone", tok);
    let hashing = HashingEmbedder::default();
    let h = rate(refs.len(), Duration::from_secs(1), || {
        std::hint::black_box(hashing.embed(&refs).unwrap());
    });
    show("hashing fallback", h);
}

/// The thread count candle's CPU kernels use (`RAYON_NUM_THREADS`, else the core count).
fn candle_core_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism()
            .map(|n| n.get().to_string())
            .unwrap_or_else(|_| "?".into())
    })
}
