//! `cargo bench -p mesh-transport`: two nodes on loopback (each on its own runtime).
//!
//! - request/response of 1 KiB: messages per second with 256 requests in flight, and latency
//!   percentiles (p50/p99) at about half that rate;
//! - gossip of 1 KiB to 3 subscribers (4 nodes): messages per second delivered to all, and
//!   delivery latency percentiles (p50/p99 over every subscriber) at half the target rate;
//! - one stream: 256 MiB written through one libp2p stream (TCP, Noise, yamux), in bytes/s.
//!
//! Percentiles are printed (criterion reports means); rates come from criterion's throughput.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::disallowed_methods // a benchmark measures wall-clock latency
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh_transport::{Config, Event, Multiaddr, PeerId, Transport, keypair_from_seed};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

struct Node {
    transport: Transport,
    addr: Multiaddr,
    /// Gossip payloads with the time the node's event loop saw them.
    gossip: mpsc::Receiver<(Instant, Vec<u8>)>,
    _rt: Runtime,
}

fn node(seed: u8) -> Node {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut config = Config::default();
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.mdns = false;
    config.protocols = vec!["echo".into()];
    // The bench measures throughput, not the per-peer limit (which defaults to 50k/s).
    config.requests_per_peer_per_sec = 10_000_000;
    config.request_burst_per_peer = 10_000_000;
    let (transport, mut events) = {
        let _g = rt.enter();
        Transport::spawn(keypair_from_seed(&[seed; 32]).unwrap(), config).unwrap()
    };
    let (addr_tx, mut addr_rx) = mpsc::channel(1);
    let (gossip_tx, gossip) = mpsc::channel(1 << 16);
    let t = transport.clone();
    rt.spawn(async move {
        while let Some(e) = events.recv().await {
            match e {
                Event::Listening { addr } => {
                    let _ = addr_tx.try_send(addr);
                }
                Event::Request(r) => t.respond(r.token, Ok(r.data)).await.unwrap(),
                Event::Message { data, .. } => {
                    let _ = gossip_tx.try_send((Instant::now(), data));
                }
                _ => {}
            }
        }
    });
    let addr = rt.block_on(addr_rx.recv()).unwrap();
    let peer = transport.peer_id();
    Node {
        transport,
        addr: addr.with(mesh_transport::multiaddr::Protocol::P2p(peer)),
        gossip,
        _rt: rt,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn request_response(c: &mut Criterion) {
    let server = node(1);
    let client = node(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let peer: PeerId = server.transport.peer_id();
    rt.block_on(async {
        client.transport.dial(server.addr.clone()).await.unwrap();
        for _ in 0..100 {
            if client
                .transport
                .request(peer, "echo", vec![0; 8])
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let payload = Arc::new(vec![7u8; 1024]);
    let mut g = c.benchmark_group("request_response_1KiB");
    g.sample_size(10);
    let batch = 2048u64;
    g.throughput(Throughput::Elements(batch));
    g.bench_function("256_in_flight", |b| {
        b.to_async(&rt).iter(|| {
            let t = client.transport.clone();
            let payload = payload.clone();
            async move {
                // 256 requests in flight from one task (no task spawn per request).
                use futures::stream::{FuturesUnordered, StreamExt};
                let mut in_flight = FuturesUnordered::new();
                let mut sent = 0u64;
                let mut done = 0u64;
                while done < batch {
                    while sent < batch && in_flight.len() < 256 {
                        in_flight.push(t.request(peer, "echo", payload.to_vec()));
                        sent += 1;
                    }
                    if let Some(r) = in_flight.next().await {
                        r.unwrap();
                        done += 1;
                    }
                }
            }
        })
    });
    g.finish();

    // The sustained maximum (20,000 requests, 256 in flight), then latency at half of it,
    // offered open loop for 2 s: the figures `cargo xtask bench` reports.
    let max_rate = rt.block_on(async {
        use futures::stream::{FuturesUnordered, StreamExt};
        let total = 20_000u64;
        let start = Instant::now();
        let mut in_flight = FuturesUnordered::new();
        let (mut sent, mut done) = (0u64, 0u64);
        while done < total {
            while sent < total && in_flight.len() < 256 {
                in_flight.push(client.transport.request(peer, "echo", payload.to_vec()));
                sent += 1;
            }
            if let Some(r) = in_flight.next().await {
                r.unwrap();
                done += 1;
            }
        }
        total as f64 / start.elapsed().as_secs_f64()
    });
    println!("request_response_1KiB sustained maximum: {max_rate:.0} requests/s");
    println!("XTASK-BENCH rr_msgs_per_s={max_rate:.0}");
    rt.block_on(async {
        let rate = (max_rate / 2.0).max(1.0) as u32;
        let total = rate * 2;
        let interval = Duration::from_secs(1) / rate;
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(total as usize);
        for i in 0..total {
            let due = start + interval * i;
            tokio::time::sleep_until(due.into()).await;
            let t = client.transport.clone();
            let p = payload.to_vec();
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                t.request(peer, "echo", p).await.map(|_| sent.elapsed())
            }));
        }
        let mut lat = Vec::with_capacity(tasks.len());
        for t in tasks {
            if let Ok(d) = t.await.unwrap() {
                lat.push(d);
            }
        }
        lat.sort();
        println!(
            "request_response_1KiB at {rate}/s offered (half the maximum): {} ok of {total}, p50 {:?}, p99 {:?}, max {:?}",
            lat.len(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or_default()
        );
        println!(
            "XTASK-BENCH rr_p99_ms={:.2}",
            percentile(&lat, 0.99).as_secs_f64() * 1e3
        );
    });
}

/// Publishes `n` 1 KiB messages numbered after `seq` and waits until every subscriber has
/// received `n` messages.
async fn publish_and_deliver(publisher: &Node, subscribers: &mut [Node], seq: &mut u64, n: u64) {
    for _ in 0..n {
        *seq += 1;
        let mut data = seq.to_le_bytes().to_vec();
        data.resize(1024, 0);
        publisher.transport.publish("bench", data).await.unwrap();
    }
    for s in subscribers.iter_mut() {
        let mut got = 0;
        while got < n {
            match tokio::time::timeout(Duration::from_secs(10), s.gossip.recv()).await {
                Ok(Some(_)) => got += 1,
                _ => panic!("gossip lost: {got} of {n}"),
            }
        }
    }
}

fn gossip(c: &mut Criterion) {
    let mut nodes: Vec<Node> = (10..14).map(node).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for n in &nodes {
            n.transport.subscribe("bench").await.unwrap();
        }
        for n in &nodes[1..] {
            n.transport.dial(nodes[0].addr.clone()).await.unwrap();
        }
        for i in 2..4 {
            nodes[i]
                .transport
                .dial(nodes[1].addr.clone())
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(3)).await; // mesh formation
    });
    let (publisher, subscribers) = nodes.split_at_mut(1);
    let publisher = &publisher[0];
    let n = 1000u64;
    let mut g = c.benchmark_group("gossip_1KiB_to_3");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n));
    let mut seq = 0u64;
    g.bench_function("publish_and_deliver_to_all", |b| {
        b.iter(|| rt.block_on(publish_and_deliver(publisher, subscribers, &mut seq, n)))
    });
    g.finish();

    // The sustained maximum (5 bursts of 1,000, each delivered to all three subscribers),
    // then latency at half of it, offered open loop for 2 s: the figures `cargo xtask bench`
    // reports.
    let max_rate = rt.block_on(async {
        // In bursts of `n` (the criterion group's size): gossip is lossy by design when a
        // burst overflows its bounded queues, so an unbounded burst measures the drops.
        let start = Instant::now();
        for _ in 0..5 {
            publish_and_deliver(publisher, subscribers, &mut seq, n).await;
        }
        (5 * n) as f64 / start.elapsed().as_secs_f64()
    });
    println!("gossip_1KiB_to_3 sustained maximum: {max_rate:.0} messages/s");
    println!("XTASK-BENCH gossip_msgs_per_s={max_rate:.0}");
    rt.block_on(async {
        let rate = (max_rate / 2.0).max(1.0) as u64;
        let total = rate * 2;
        let interval = Duration::from_secs(1) / rate as u32;
        let first = seq + 1;
        let start = Instant::now();
        let mut sent_at = Vec::with_capacity(total as usize);
        for i in 0..total {
            tokio::time::sleep_until((start + interval * i as u32).into()).await;
            seq += 1;
            let mut data = seq.to_le_bytes().to_vec();
            data.resize(1024, 0);
            sent_at.push(Instant::now());
            publisher.transport.publish("bench", data).await.unwrap();
        }
        let mut lat = Vec::with_capacity(3 * total as usize);
        for s in subscribers.iter_mut() {
            let mut got = 0;
            while got < total {
                match tokio::time::timeout(Duration::from_secs(10), s.gossip.recv()).await {
                    Ok(Some((at, data))) => {
                        let n = u64::from_le_bytes(data[..8].try_into().unwrap());
                        if n >= first {
                            lat.push(at - sent_at[(n - first) as usize]);
                            got += 1;
                        }
                    }
                    _ => panic!("gossip lost: {got} of {total}"),
                }
            }
        }
        lat.sort();
        println!(
            "gossip_1KiB_to_3 at {rate}/s offered (half the maximum): {} deliveries, p50 {:?}, p99 {:?}, max {:?}",
            lat.len(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or_default()
        );
        println!(
            "XTASK-BENCH gossip_p99_ms={:.2}",
            percentile(&lat, 0.99).as_secs_f64() * 1e3
        );
    });
}

fn stream(c: &mut Criterion) {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
    let server = node(20);
    let client = node(21);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let peer = server.transport.peer_id();
    let mut incoming = server.transport.accept_streams("bulk").unwrap();
    // The server drains each stream and reports how many bytes it read.
    let (done_tx, mut done_rx) = mpsc::channel::<u64>(4);
    server._rt.spawn(async move {
        while let Some((_, mut s)) = incoming.next().await {
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                let _ = done_tx.send(total).await;
            });
        }
    });
    rt.block_on(async {
        client.transport.dial(server.addr.clone()).await.unwrap();
    });
    let chunk = vec![0x5au8; 256 * 1024];
    let total: u64 = 256 * 1024 * 1024;
    let mut g = c.benchmark_group("stream");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(total));
    g.bench_function("one_stream_256MiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut s = client.transport.open_stream(peer, "bulk").await.unwrap();
                let mut sent = 0u64;
                while sent < total {
                    s.write_all(&chunk).await.unwrap();
                    sent += chunk.len() as u64;
                }
                s.close().await.unwrap();
                assert_eq!(done_rx.recv().await.unwrap(), total);
            })
        })
    });
    g.finish();
}

criterion_group!(benches, request_response, gossip, stream);
criterion_main!(benches);
