//! The in-memory transport: same handle and events, seeded faults, partitions, determinism.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mesh_transport::memory::{Faults, MemoryNetwork};
use mesh_transport::{Config, Error, Event, PeerId, Transport, keypair_from_seed};
use tokio::sync::mpsc;

fn peer(n: u8) -> PeerId {
    keypair_from_seed(&[n; 32]).unwrap().public().to_peer_id()
}

/// Adds a node serving `echo` (refusing `refuse`); other events go to the returned channel.
fn add(net: &MemoryNetwork, n: u8) -> (Transport, mpsc::UnboundedReceiver<Event>) {
    let mut config = Config::default();
    config.protocols = vec!["echo".into()];
    config.request_timeout = Duration::from_secs(2);
    let (t, mut events) = net.add_node(peer(n), config);
    #[allow(clippy::disallowed_methods)] // test plumbing; the transport's own queues are bounded
    let (tx, rx) = mpsc::unbounded_channel();
    let responder = t.clone();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            match e {
                Event::Request(r) => {
                    let answer = if r.data == b"refuse" {
                        Err("no".to_owned())
                    } else {
                        Ok(r.data)
                    };
                    responder.respond(r.token, answer).await.unwrap();
                }
                other => {
                    let _ = tx.send(other);
                }
            }
        }
    });
    (t, rx)
}

async fn connect(a: &Transport, b: &Transport) {
    let addr = b.listen_addrs().await.unwrap()[0].clone();
    a.dial(addr).await.unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn requests_gossip_and_errors_behave_like_the_real_transport() {
    let net = MemoryNetwork::new(1, Faults::default());
    let (a, _ea) = add(&net, 1);
    let (b, mut eb) = add(&net, 2);
    connect(&a, &b).await;
    assert_eq!(
        a.request(peer(2), "echo", b"hi".to_vec()).await.unwrap(),
        b"hi"
    );
    assert!(matches!(
        a.request(peer(2), "nope", vec![]).await,
        Err(Error::UnknownProtocol { .. })
    ));
    match a.request(peer(2), "echo", b"refuse".to_vec()).await {
        Err(Error::Refused {
            detail, protocol, ..
        }) => assert_eq!((detail.as_str(), protocol.as_str()), ("no", "echo")),
        other => panic!("{other:?}"),
    }
    b.subscribe("t").await.unwrap();
    a.publish("t", b"news".to_vec()).await.unwrap();
    loop {
        match eb.recv().await.unwrap() {
            Event::Message {
                topic,
                source,
                data,
            } => {
                assert_eq!(
                    (topic.as_str(), source, data.as_slice()),
                    ("t", Some(peer(1)), &b"news"[..])
                );
                break;
            }
            _ => continue,
        }
    }
    let stranger = peer(9);
    assert!(matches!(
        a.request(stranger, "echo", vec![]).await,
        Err(Error::Request { .. })
    ));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn partitions_cut_traffic_until_healed_and_shutdown_disconnects() {
    let net = MemoryNetwork::new(2, Faults::default());
    let (a, _ea) = add(&net, 1);
    let (b, mut eb) = add(&net, 2);
    connect(&a, &b).await;
    net.partition(&[&[peer(1)], &[peer(2)]]);
    assert!(matches!(
        a.request(peer(2), "echo", b"x".to_vec()).await,
        Err(Error::Request { .. })
    ));
    net.heal();
    assert_eq!(
        a.request(peer(2), "echo", b"x".to_vec()).await.unwrap(),
        b"x"
    );
    a.shutdown().await.unwrap();
    loop {
        if let Event::PeerDisconnected { peer: p } = eb.recv().await.unwrap() {
            assert_eq!(p, peer(1));
            break;
        }
    }
    assert!(matches!(
        b.request(peer(1), "echo", vec![]).await,
        Err(Error::Request { .. })
    ));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn total_loss_drops_everything_and_counts_it() {
    let net = MemoryNetwork::new(
        3,
        Faults {
            loss_ppm: 1_000_000,
            ..Faults::default()
        },
    );
    let (a, _ea) = add(&net, 1);
    let (b, _eb) = add(&net, 2);
    connect(&a, &b).await;
    b.subscribe("t").await.unwrap();
    for _ in 0..10 {
        a.publish("t", vec![1]).await.unwrap();
    }
    assert!(matches!(
        a.request(peer(2), "echo", vec![]).await,
        Err(Error::Request { .. })
    ));
    let text = b.metrics_text().await.unwrap();
    assert!(text.contains("mesh_memory_dropped_total 11"), "{text}");
}

/// Three nodes gossip under delay, loss and duplication; returns what each received, in order.
async fn trace(seed: u64) -> Vec<Vec<Vec<u8>>> {
    let faults = Faults {
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(50),
        loss_ppm: 100_000,
        duplicate_ppm: 200_000,
    };
    let net = MemoryNetwork::new(seed, faults);
    let nodes: Vec<_> = (1..=3).map(|n| add(&net, n)).collect();
    for (t, _) in &nodes {
        t.subscribe("t").await.unwrap();
    }
    for i in 0..60u8 {
        nodes[(i % 3) as usize]
            .0
            .publish("t", vec![i])
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut out = Vec::new();
    for (_, mut events) in nodes {
        let mut got = Vec::new();
        while let Ok(e) = events.try_recv() {
            if let Event::Message { data, .. } = e {
                got.push(data);
            }
        }
        out.push(got);
    }
    out
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let run = |seed| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(trace(seed))
    };
    let first = run(42);
    assert_eq!(first, run(42), "same seed, different trace");
    assert_ne!(first, run(43), "the seed should matter");
    // Faults really happened: some loss, some duplicates, some reordering.
    // Without faults each node would get the 40 messages the other two published, once.
    let distinct_per_node: Vec<usize> = first
        .iter()
        .map(|g| g.iter().collect::<std::collections::HashSet<_>>().len())
        .collect();
    assert!(
        distinct_per_node.iter().sum::<usize>() < 120,
        "expected losses: {distinct_per_node:?}"
    );
    assert!(
        first
            .iter()
            .any(|g| g.len() > g.iter().collect::<std::collections::HashSet<_>>().len()),
        "expected duplicates"
    );
    assert!(
        first.iter().any(|g| g.windows(2).any(|w| w[0] > w[1])),
        "expected reordering"
    );
}
