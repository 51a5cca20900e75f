//! `cargo bench -p mesh-learning`: compression throughput and ratio per method on 1M and 10M
//! `f32` gradients (Gaussian), decoding, and aggregation time for 100 updates of 1M parameters
//! per aggregator (Multi-Krum for n = 50, d = 1M).
//!
//! Issue #6's targets: top-k 1% of 10M in <= 10 ms; FedAvg of 100 x 1M at >= 2 GB/s of update
//! data; Multi-Krum n = 50, d = 1M in < 1 s.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh_learning::compress::{self, dense_bytes, top_k_indices};
use mesh_learning::{
    Aggregator, Compressor, FedAvg, Median, MultiKrum, Qsgd, RandomK, Rng, SignSgd, TopK,
    TrimmedMean, Update,
};

fn gaussian(d: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..d).map(|_| rng.normal() as f32).collect()
}

fn methods() -> Vec<(&'static str, Box<dyn Compressor>)> {
    vec![
        ("top-k-1%-ef", Box::new(TopK { fraction: 0.01 })),
        (
            "random-k-1%",
            Box::new(RandomK {
                fraction: 0.01,
                error_feedback: false,
            }),
        ),
        ("qsgd-8", Box::new(Qsgd { bits: 8 })),
        ("qsgd-4", Box::new(Qsgd { bits: 4 })),
        ("qsgd-2", Box::new(Qsgd { bits: 2 })),
        ("sign-ef", Box::new(SignSgd)),
    ]
}

fn compression(c: &mut Criterion) {
    for d in [1_000_000usize, 10_000_000] {
        let g = gaussian(d, 1);
        let mut group = c.benchmark_group(format!("compress_{}M", d / 1_000_000));
        group.throughput(Throughput::Bytes(dense_bytes(d) as u64));
        group.sample_size(10);
        for (name, method) in methods() {
            let mut rng = Rng::new(2);
            let mut residual = Vec::new();
            let size = method.compress(&g, &mut residual, &mut rng).unwrap().len();
            println!(
                "{name} d={d}: {size} bytes, ratio {:.1}",
                dense_bytes(d) as f64 / size as f64
            );
            group.bench_function(name, |b| {
                b.iter(|| {
                    // The residual stays as the previous call left it, as in training.
                    black_box(method.compress(&g, &mut residual, &mut rng).unwrap())
                });
            });
        }
        // The selection alone (no error-feedback pass): the sampled threshold and one scan.
        let k = TopK { fraction: 0.01 }.k(d);
        let mut rng = Rng::new(3);
        group.bench_function("top-k-1%-select-only", |b| {
            b.iter(|| black_box(top_k_indices(&g, k, &mut rng)));
        });
        let message = TopK { fraction: 0.01 }
            .compress(&g, &mut Vec::new(), &mut rng)
            .unwrap();
        group.bench_function("top-k-1%-decode", |b| {
            b.iter(|| black_box(compress::decode(&message, d).unwrap()));
        });
        group.finish();
    }
}

fn updates(n: usize, d: usize) -> Vec<Update> {
    let base = gaussian(d, 7);
    let mut rng = Rng::new(8);
    (0..n)
        .map(|i| Update {
            parameters: base
                .iter()
                .map(|&x| x + 0.01 * rng.next_f64() as f32)
                .collect(),
            samples: 10 + i as u64,
        })
        .collect()
}

fn aggregation(c: &mut Criterion) {
    let d = 1_000_000;
    let hundred = updates(100, d);
    let mut group = c.benchmark_group("aggregate_100x1M");
    group.throughput(Throughput::Bytes((100 * dense_bytes(d)) as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let rules: [(&str, &dyn Aggregator); 3] = [
        ("fedavg", &FedAvg),
        ("median", &Median),
        ("trimmed-mean-10", &TrimmedMean { trim: 10 }),
    ];
    for (name, rule) in rules {
        group.bench_function(name, |b| {
            b.iter(|| black_box(rule.aggregate(&hundred).unwrap()))
        });
    }
    group.finish();
    drop(hundred);
    let fifty = updates(50, d);
    let mut group = c.benchmark_group("aggregate_50x1M");
    group.throughput(Throughput::Bytes((50 * dense_bytes(d)) as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let krum = MultiKrum {
        byzantine: 10,
        select: 30,
    };
    group.bench_function("multi-krum-f10-m30", |b| {
        b.iter(|| black_box(krum.aggregate(&fifty).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, compression, aggregation);
criterion_main!(benches);
