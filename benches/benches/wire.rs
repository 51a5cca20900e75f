//! Wire framing throughput: encoding and stream-decoding frames of 1 KiB and 64 KiB.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh_types::wire::{FrameDecoder, Limits, encode_frame};

fn framing(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("wire");
    for size in [1024usize, 64 * 1024] {
        let payload = vec![7u8; size];
        let frames = 64;
        let mut stream = Vec::new();
        for _ in 0..frames {
            encode_frame(1, &payload, &limits, &mut stream).unwrap();
        }
        g.throughput(Throughput::Bytes((size * frames) as u64));
        g.bench_function(format!("encode_{size}"), |b| {
            let mut out = Vec::with_capacity(stream.len());
            b.iter(|| {
                out.clear();
                for _ in 0..frames {
                    encode_frame(1, black_box(&payload), &limits, &mut out).unwrap();
                }
            })
        });
        g.bench_function(format!("stream_decode_{size}"), |b| {
            b.iter(|| {
                let mut dec = FrameDecoder::new(limits);
                let mut rest = black_box(&stream[..]);
                let mut n = 0;
                while !rest.is_empty() {
                    let took = dec.feed(&rest[..rest.len().min(16 * 1024)]);
                    rest = &rest[took..];
                    while let Some(f) = dec.next_frame().unwrap() {
                        n += f.1.len();
                    }
                }
                assert_eq!(n, size * frames);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
