//! `cargo bench -p mesh-learning`: compression throughput and ratio per method on 1M and 10M
//! `f32` gradients (Gaussian), decoding, and aggregation time for 100 updates of 1M parameters
//! per aggregator (Multi-Krum for n = 50, d = 1M).
//!
//! Secure aggregation (`secagg`): one client's masking step (its input plus its self-mask
//! and nine pairwise masks) and the server's unmasking (reconstruction and mask removal) for
//! 10 clients and 1M parameters, with no dropout and with 3 clients dropped after sharing keys.
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

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mesh_learning::compress::{self, dense_bytes, top_k_indices};
use mesh_learning::secagg::{self, ClientId, Message};
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

fn secagg_seed(i: ClientId) -> [u8; 32] {
    [i.wrapping_add(1); 32]
}

/// A session of `n` clients run up to the masked inputs: the key list, each client's routed
/// shares, the server after the key-sharing phase and the clients' updates.
struct Session {
    config: secagg::Config,
    updates: Vec<Vec<f32>>,
    list: Message,
    routed: Vec<Message>,
    server: secagg::Server,
}

fn secagg_session(n: usize, d: usize) -> Session {
    let config = secagg::Config {
        round: 1,
        model: [7; 32],
        clients: n,
        threshold: n / 2 + 1,
        dim: d,
        clip: 1.0,
    };
    let updates: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            gaussian(d, 100 + i as u64)
                .iter()
                .map(|x| 0.1 * x)
                .collect()
        })
        .collect();
    let mut server = secagg::Server::new(config).unwrap();
    let mut clients: Vec<secagg::Client> = (0..n)
        .map(|i| {
            let id = i as ClientId;
            secagg::Client::new(config, id, &secagg_seed(id), &updates[i]).unwrap()
        })
        .collect();
    for c in &clients {
        server.handle_message(c.advertise()).unwrap();
    }
    let lists = server.close().unwrap();
    let list = lists[0].1.clone();
    for (to, m) in &lists {
        let answer = clients[usize::from(*to)].handle(m).unwrap();
        server.handle_message(answer).unwrap();
    }
    let routed = server.close().unwrap().into_iter().map(|e| e.1).collect();
    Session {
        config,
        updates,
        list,
        routed,
        server,
    }
}

/// A fresh client `i` of the session, with the key list handled (as the session's was).
fn client_after_key_list(s: &Session, i: usize) -> secagg::Client {
    let id = i as ClientId;
    let mut c = secagg::Client::new(s.config, id, &secagg_seed(id), &s.updates[i]).unwrap();
    c.handle(&s.list).unwrap();
    c
}

/// The server of the session once the unmasking answers are in, `dropped` clients (the
/// highest ids) having sent no input.
fn server_ready_to_unmask(s: &Session, dropped: usize) -> secagg::Server {
    let n = s.updates.len();
    let mut server = s.server.clone();
    let mut clients: Vec<secagg::Client> = (0..n).map(|i| client_after_key_list(s, i)).collect();
    for (i, c) in clients.iter_mut().enumerate().take(n - dropped) {
        let masked = c.handle(&s.routed[i]).unwrap();
        server.handle_message(masked).unwrap();
    }
    for (to, request) in server.close().unwrap() {
        let answer = clients[usize::from(to)].handle(&request).unwrap();
        server.handle_message(answer).unwrap();
    }
    server
}

fn secure_aggregation(c: &mut Criterion) {
    let (n, d) = (10, 1_000_000);
    let session = secagg_session(n, d);
    let mut group = c.benchmark_group("secagg_10x1M");
    group.throughput(Throughput::Bytes(dense_bytes(d) as u64));
    group.sample_size(10);
    group.bench_function("client-mask", |b| {
        b.iter_batched(
            || client_after_key_list(&session, 0),
            |mut client| black_box(client.handle(&session.routed[0]).unwrap()),
            BatchSize::LargeInput,
        )
    });
    for dropped in [0, 3] {
        let ready = server_ready_to_unmask(&session, dropped);
        let check = ready.clone().finish().unwrap();
        assert_eq!(check.dropped.len(), dropped);
        group.bench_function(format!("server-unmask-{dropped}-dropped"), |b| {
            b.iter_batched(
                || ready.clone(),
                |mut server| black_box(server.finish().unwrap()),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, compression, aggregation, secure_aggregation);
criterion_main!(benches);
