//! Memory sync: signed deltas applied per second by a replica (decoding, Ed25519
//! verification, authorization and the CRDT join included), for each kind of delta, as
//! single-delta pushes and as anti-entropy batches of 256; and replays (deltas already
//! held, which skip verification).
//!
//! The writer makes 2,000 changes in one namespace (facts over 500 entities and relations,
//! episodes of about 20 words, attributes over 200 registers); a fresh replica receives
//! them. Signatures: ed25519-dalek (strict verification), standing in for the node's
//! `mesh_crypto` verifier, which costs about the same (one double-scalar multiplication).

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer as _, SigningKey};
use mesh_memory::sync::{
    Access, AttributeKey, Config, Fact, Message, Namespace, Output, Signer, SyncNode, Verifier,
    Write,
};
use mesh_memory::{Kind, NewEpisode, Peer};
use mesh_types::{Instant, NodeId, Timestamp};

struct Key(SigningKey);

impl Signer for Key {
    fn id(&self) -> NodeId {
        NodeId(self.0.verifying_key().to_bytes())
    }
    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

struct Ed;

impl Verifier for Ed {
    fn verify(&self, key: &NodeId, message: &[u8], signature: &[u8; 64]) -> bool {
        ed25519_dalek::VerifyingKey::from_bytes(&key.0).is_ok_and(|k| {
            k.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
                .is_ok()
        })
    }
}

const N: usize = 2_000;

fn key(n: u8) -> Key {
    Key(SigningKey::from_bytes(&[n; 32]))
}

fn write(kind: &str, i: usize) -> Write {
    match kind {
        "facts" => {
            if i.is_multiple_of(2) {
                Write::AddFact(Fact::entity(format!("entity-{}", i % 500), "thing"))
            } else {
                Write::AddFact(Fact::relation(
                    format!("entity-{}", i % 500),
                    "knows",
                    format!("entity-{}", (i * 7) % 500),
                ))
            }
        }
        "episodes" => Write::AppendEpisode(NewEpisode::new(
            Timestamp(i as u64),
            Peer::new("did:key:z6MkPeer").unwrap(),
            Kind::Observation,
            format!(
                "observation {i}: the deployment of service {} finished after {} retries and the health checks passed on every replica",
                i % 13,
                i % 5
            ),
        )),
        _ => Write::SetAttribute {
            key: AttributeKey::new(format!("entity-{}", i % 200), "status"),
            value: Some(format!("state {i}")),
        },
    }
}

/// The grant and `N` pushes of one kind, as the writer sent them.
fn pushes(kind: &str) -> (Namespace, Vec<Vec<u8>>) {
    let mut owner = SyncNode::new(key(1), Ed, Config::default());
    let ns = owner.create("bench").unwrap();
    owner.grant(&ns, key(2).id(), Access::Read).unwrap();
    let mut out = Vec::new();
    for i in 0..N {
        owner
            .write(&ns, write(kind, i), Timestamp(i as u64))
            .unwrap();
        while let Some(Output::Send { bytes, .. }) = owner.poll_output() {
            out.push(bytes);
        }
    }
    (ns, out)
}

/// The same deltas in messages of up to 256.
fn batches(msgs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut deltas = Vec::new();
    for m in msgs {
        if let Message::Deltas(ds) = Message::decode(m).unwrap() {
            deltas.extend(ds);
        }
    }
    deltas
        .chunks(256)
        .map(|c| Message::Deltas(c.to_vec()).encode())
        .collect()
}

fn replica(ns: &Namespace) -> SyncNode<Key, Ed> {
    let mut n = SyncNode::new(key(2), Ed, Config::default());
    n.subscribe(ns.clone()).unwrap();
    n
}

fn apply(node: &mut SyncNode<Key, Ed>, from: NodeId, msgs: &[Vec<u8>]) -> usize {
    let mut applied = 0;
    for m in msgs {
        let r = node.receive(from, m, Instant::ZERO).unwrap();
        assert!(r.rejected.is_empty());
        applied += r.applied + r.duplicates;
    }
    applied
}

fn bench(c: &mut Criterion) {
    let from = key(1).id();
    let mut g = c.benchmark_group("sync");
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(4));
    g.warm_up_time(std::time::Duration::from_secs(1));
    for kind in ["facts", "episodes", "attributes"] {
        let (ns, msgs) = pushes(kind);
        let grouped = batches(&msgs);
        g.throughput(Throughput::Elements(msgs.len() as u64));
        g.bench_function(format!("{kind}/push"), |b| {
            b.iter_batched(
                || replica(&ns),
                |mut n| assert_eq!(apply(&mut n, from, &msgs), msgs.len()),
                BatchSize::LargeInput,
            )
        });
        g.bench_function(format!("{kind}/batch-256"), |b| {
            b.iter_batched(
                || replica(&ns),
                |mut n| assert_eq!(apply(&mut n, from, &grouped), msgs.len()),
                BatchSize::LargeInput,
            )
        });
        let mut full = replica(&ns);
        apply(&mut full, from, &grouped);
        g.bench_function(format!("{kind}/replay"), |b| {
            b.iter(|| apply(&mut full, from, &grouped))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
