//! Consensus throughput and latency in simulation (one process, virtual network, real BLS
//! and, in signed mode, real Ed25519 client signatures), and certificate costs.
//!
//! Run with `cargo bench -p mesh-consensus`. Each `simulated` iteration orders a burst of
//! 40,000 512-byte requests (all submitted within 0.1 ms of virtual time, so blocks fill up to
//! their 4 MiB bound as they would under saturation) through 4, 7 or 16 replicas sharing one
//! thread: requests/s is the whole mesh's wall-clock throughput with every signature
//! computed (BLS commit votes and certificates, Ed25519 prepare votes). The commit latency of the first run is printed alongside, in virtual time
//! (protocol round trips only: virtual time does not charge for computation) and in wall
//! time (from the simulator handing a request to a replica until f + 1 replicas executed it,
//! every replica's computation in between included, as on one core).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh_consensus::message::{Phase, vote_bytes};
use mesh_consensus::{BlsScheme, Config, RequestAuth, Scheme, Validator, ValidatorSet};
use mesh_crypto::bls::BlsSecretKey;
use mesh_crypto::ed25519::SigningKey;
use mesh_sim::{Sim, SimConfig};
use mesh_types::{Digest, NodeId};

fn burst(replicas: usize, requests: usize, auth: RequestAuth) -> SimConfig {
    let mut cfg = SimConfig::new(42, replicas);
    cfg.real_crypto = true;
    cfg.wall_clock = true;
    cfg.requests = requests;
    cfg.clients = 64;
    cfg.payload = 512;
    cfg.submit_over = Duration::from_micros(100);
    cfg.faults_until = Duration::ZERO;
    cfg.net.min_delay = Duration::from_micros(200);
    cfg.net.max_delay = Duration::from_micros(400);
    cfg.client_timeout = Duration::from_secs(30);
    cfg.consensus = Config {
        request_auth: auth,
        request_timeout: Duration::from_secs(10),
        view_change_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    cfg
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn simulated(c: &mut Criterion) {
    let mut g = c.benchmark_group("simulated");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    for (replicas, requests, auth, name) in [
        (4, 40_000, RequestAuth::Connection, "opaque"),
        (7, 40_000, RequestAuth::Connection, "opaque"),
        (16, 40_000, RequestAuth::Connection, "opaque"),
        (4, 40_000, RequestAuth::Signed, "signed"),
    ] {
        let cfg = burst(replicas, requests, auth);
        g.throughput(Throughput::Elements(requests as u64));
        // Criterion calls this closure (several times) only for benchmarks its filter selects.
        let mut printed = false;
        g.bench_function(format!("{name}/{replicas}_replicas"), |b| {
            if std::mem::replace(&mut printed, true) {
                return b.iter(|| black_box(Sim::new(cfg.clone()).run()));
            }
            let first = Sim::new(cfg.clone()).run();
            assert!(first.violations.is_empty(), "{:?}", first.violations);
            let mut lat = first.latencies.clone();
            lat.sort();
            let mut wall = first.wall_latencies.clone();
            wall.sort();
            println!(
                "{replicas} replicas, {name}: {} blocks; commit latency (of {} requests) virtual p50 {:?} p99 {:?}, wall p50 {:?} p99 {:?}",
                first.height,
                lat.len(),
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                percentile(&wall, 0.5),
                percentile(&wall, 0.99),
            );
            b.iter(|| black_box(Sim::new(cfg.clone()).run()))
        });
    }
    g.finish();
}

fn certificates(c: &mut Criterion) {
    let mut g = c.benchmark_group("certificate");
    for n in [4usize, 16, 100] {
        let keys: Vec<BlsSecretKey> = (0..n)
            .map(|i| BlsSecretKey::from_ikm(&[i as u8 + 1; 32]).unwrap())
            .collect();
        let members = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Validator {
                id: NodeId(
                    SigningKey::from_seed(&[i as u8 + 1; 32])
                        .verifying_key()
                        .to_bytes(),
                ),
                bls: k.public_key(),
                weight: 1,
            })
            .collect();
        let set = ValidatorSet::from_verified(0, members).unwrap();
        let msg = vote_bytes(0, Phase::Commit, 3, 1_000, &Digest([7; 32]));
        let quorum = 2 * n / 3 + 1;
        let schemes: Vec<BlsScheme> = keys
            .iter()
            .enumerate()
            .take(quorum)
            .map(|(i, k)| BlsScheme::new(k.clone(), SigningKey::from_seed(&[i as u8 + 1; 32])))
            .collect();
        let sigs: Vec<_> = schemes.iter().map(|s| s.sign(&msg)).collect();
        let signers: Vec<usize> = (0..quorum).collect();
        let verifier = BlsScheme::verifier();
        g.bench_function(format!("aggregate_and_verify/{n}_validators"), |b| {
            b.iter(|| {
                let agg = verifier.aggregate(black_box(&sigs)).unwrap();
                assert!(verifier.verify(&set, &signers, &msg, &agg));
            })
        });
        // Prepare certificates: each signer's Ed25519 signature, checked in one batch.
        let prepare_msg = vote_bytes(0, Phase::Prepare, 3, 1_000, &Digest([7; 32]));
        let prepares: Vec<_> = schemes
            .iter()
            .map(|s| s.sign_prepare(&prepare_msg))
            .collect();
        g.bench_function(format!("verify_prepares/{n}_validators"), |b| {
            b.iter(|| {
                assert!(verifier.verify_prepares(
                    &set,
                    &signers,
                    black_box(&prepare_msg),
                    &prepares
                ))
            })
        });
        if n == 4 {
            g.bench_function("sign_vote", |b| b.iter(|| schemes[0].sign(black_box(&msg))));
            g.bench_function("sign_prepare", |b| {
                b.iter(|| schemes[0].sign_prepare(black_box(&prepare_msg)))
            });
        }
    }
    g.finish();
}

fn admission(c: &mut Criterion) {
    use mesh_consensus::admission::{Proof, Puzzle};
    let mut g = c.benchmark_group("admission");
    g.sample_size(10);
    for memory_kib in [8 * 1024, 64 * 1024] {
        let p = Puzzle {
            epoch: 1,
            difficulty: 0,
            memory_kib,
            passes: 1,
        };
        // One evaluation: the cost of verifying a proof, and of each minting attempt.
        g.bench_function(format!("evaluate_{}MiB", memory_kib / 1024), |b| {
            b.iter(|| {
                p.verify(black_box("did:key:zbench"), &Proof { nonce: 7 })
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, certificates, admission, simulated);
criterion_main!(benches);
