//! `cargo bench -p mesh-crypto`: AEAD throughput, Ed25519 sign / verify / batch verify, BLS
//! fast-aggregate-verify of 100 signers, ratchet encrypt+decrypt at 1 KiB, Noise handshakes.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mesh_crypto::aead::{AeadKey, nonce_from_counter};
use mesh_crypto::bls::{self, BlsSecretKey};
use mesh_crypto::ed25519::{self, BatchItem, SigningKey};
use mesh_crypto::noise::{Handshake, Pattern};
use mesh_crypto::ratchet::SessionSetup;
use mesh_crypto::x25519::X25519Secret;

fn aead(c: &mut Criterion) {
    let key = AeadKey::new(&[7; 32]);
    let mut g = c.benchmark_group("aead_chacha20poly1305_seal");
    for size in [1024usize, 64 * 1024] {
        let data = vec![1u8; size];
        let mut buf = Vec::with_capacity(size + 16);
        g.throughput(Throughput::Bytes(size as u64));
        let mut n = 0u64;
        g.bench_function(format!("{size}"), |b| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(&data);
                n += 1;
                key.seal_in_place(&nonce_from_counter(n), b"", &mut buf)
                    .unwrap();
                black_box(&buf);
            })
        });
    }
    g.finish();
}

fn ed25519(c: &mut Criterion) {
    let sk = SigningKey::from_seed(&[3; 32]);
    let vk = sk.verifying_key();
    let msg = [0x42u8; 512];
    let sig = sk.sign(&msg);
    let mut g = c.benchmark_group("ed25519");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign", |b| b.iter(|| sk.sign(black_box(&msg))));
    g.bench_function("verify", |b| {
        b.iter(|| vk.verify(black_box(&msg), &sig).unwrap())
    });
    let keys: Vec<SigningKey> = (0..64u8).map(|i| SigningKey::from_seed(&[i; 32])).collect();
    let vks: Vec<_> = keys.iter().map(SigningKey::verifying_key).collect();
    let msgs: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 512]).collect();
    let sigs: Vec<_> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
    let items: Vec<BatchItem<'_>> = (0..64)
        .map(|i| BatchItem {
            key: &vks[i],
            message: &msgs[i],
            signature: &sigs[i],
        })
        .collect();
    g.throughput(Throughput::Elements(64));
    g.bench_function("batch_verify_64", |b| {
        b.iter(|| ed25519::verify_batch(black_box(&items)).unwrap())
    });
    g.finish();
}

fn bls(c: &mut Criterion) {
    let keys: Vec<BlsSecretKey> = (0..100u8)
        .map(|i| BlsSecretKey::from_ikm(&[i; 32]).unwrap())
        .collect();
    let pks: Vec<_> = keys.iter().map(BlsSecretKey::public_key).collect();
    let sigs: Vec<_> = keys.iter().map(|k| k.sign(b"block 1")).collect();
    let agg = bls::aggregate_signatures(&sigs).unwrap();
    let sig_bytes: Vec<[u8; 96]> = sigs.iter().map(|s| s.to_bytes()).collect();
    let mut g = c.benchmark_group("bls");
    g.sample_size(20);
    g.bench_function("sign", |b| b.iter(|| keys[0].sign(black_box(b"block 1"))));
    g.bench_function("verify", |b| {
        b.iter(|| pks[0].verify(b"block 1", &sigs[0]).unwrap())
    });
    g.bench_function("fast_aggregate_verify_100", |b| {
        b.iter(|| bls::fast_aggregate_verify(black_box(&pks), b"block 1", &agg).unwrap())
    });
    g.bench_function("aggregate_100_parsed", |b| {
        b.iter(|| bls::aggregate_signatures(black_box(&sigs)).unwrap())
    });
    g.bench_function("aggregate_100_from_bytes", |b| {
        b.iter(|| {
            let parsed: Vec<_> = sig_bytes
                .iter()
                .map(|s| bls::BlsSignature::from_bytes(s).unwrap())
                .collect();
            bls::aggregate_signatures(&parsed).unwrap()
        })
    });
    g.finish();
}

fn ratchet(c: &mut Criterion) {
    let alice = X25519Secret::from_bytes([1; 32]);
    let bob = X25519Secret::from_bytes([2; 32]);
    let (setup, m1) = SessionSetup::initiate(&alice, &bob.public_key()).unwrap();
    let (mut b_session, _, m2) = SessionSetup::respond(&bob, &m1).unwrap();
    let mut a = setup.finish(&m2).unwrap();
    let payload = vec![0x55u8; 1024];
    let mut g = c.benchmark_group("ratchet");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encrypt_decrypt_1KiB", |b| {
        b.iter(|| {
            let m = a.encrypt(black_box(&payload)).unwrap();
            b_session.decrypt(&m).unwrap()
        })
    });
    // A conversation: every message answers the previous one, so every message takes a DH
    // ratchet step (the worst case).
    g.bench_function("ping_pong_1KiB_dh_step_each", |b| {
        b.iter(|| {
            let m = a.encrypt(black_box(&payload)).unwrap();
            b_session.decrypt(&m).unwrap();
            let r = b_session.encrypt(black_box(&payload)).unwrap();
            a.decrypt(&r).unwrap()
        })
    });
    g.finish();
}

fn noise(c: &mut Criterion) {
    let a = X25519Secret::from_bytes([1; 32]);
    let b = X25519Secret::from_bytes([2; 32]);
    let mut g = c.benchmark_group("noise");
    g.bench_function("xx_handshake_both_sides", |bench| {
        bench.iter_batched(
            || (),
            |()| {
                let mut i = Handshake::initiator(Pattern::XX, &a, None, b"").unwrap();
                let mut r = Handshake::responder(Pattern::XX, &b, b"").unwrap();
                let m1 = i.write_message(b"").unwrap();
                r.read_message(&m1).unwrap();
                let m2 = r.write_message(b"").unwrap();
                i.read_message(&m2).unwrap();
                let m3 = i.write_message(b"").unwrap();
                r.read_message(&m3).unwrap();
                (i.into_transport().unwrap(), r.into_transport().unwrap())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, aead, ed25519, bls, ratchet, noise);
criterion_main!(benches);
