//! Delivery guarantees over real sockets: exactly-once delivery, a message to a stopped peer
//! delivered after it restarts, and an outbox that survives the sender's own restart.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use mesh_store::{DiskKv, DiskStore, Store};
use mesh_transport::outbox::OutboxConfig;
use mesh_transport::{
    Config, DELIVER_PROTOCOL, Event, Messenger, Multiaddr, PeerId, Transport, keypair_from_seed,
};
use mesh_types::MessageId;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

/// A node with a messenger, on its own runtime. Delivered messages (protocol, payload) are
/// forwarded to `inbox` after being acknowledged.
struct Node {
    transport: Transport,
    messenger: Option<std::sync::Arc<Messenger<DiskKv>>>,
    inbox: mpsc::Receiver<(String, Vec<u8>)>,
    rt: Runtime,
}

fn start(seed: u8, port: u16, dir: &Path) -> Node {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut config = Config::default();
    config.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()];
    config.mdns = false;
    config.protocols = vec![DELIVER_PROTOCOL.into()];
    config.request_timeout = Duration::from_secs(2);
    config.idle_timeout = Duration::from_secs(5);
    let store = DiskStore::open(dir).unwrap();
    let (tx, inbox) = mpsc::channel(1000);
    let (transport, messenger) = {
        let _g = rt.enter();
        let (transport, mut events) =
            Transport::spawn(keypair_from_seed(&[seed; 32]).unwrap(), config).unwrap();
        let mut oc = OutboxConfig::default();
        oc.initial_backoff = Duration::from_millis(100);
        oc.max_backoff = Duration::from_millis(500);
        let messenger = std::sync::Arc::new(
            Messenger::spawn(
                transport.clone(),
                store.kv("outbox").unwrap(),
                store.kv("seen").unwrap(),
                oc,
            )
            .unwrap(),
        );
        let m = messenger.clone();
        rt.spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    Event::Request(req) if req.protocol == DELIVER_PROTOCOL => {
                        if let Some(d) = m.handle_request(req).await.unwrap() {
                            let item = (d.protocol.clone(), d.payload.clone());
                            m.ack(d).await.unwrap();
                            let _ = tx.send(item).await;
                        }
                    }
                    Event::PeerConnected { peer, .. } => m.peer_connected(&peer),
                    _ => {}
                }
            }
        });
        (transport, messenger)
    };
    Node {
        transport,
        messenger: Some(messenger),
        inbox,
        rt,
    }
}

fn stop(mut node: Node) {
    let messenger = node.messenger.take().unwrap();
    node.rt.block_on(async {
        node.transport.shutdown().await.unwrap();
        // The event task holds a clone; wait for it to drop it as the event stream ends.
        let mut m = messenger;
        for _ in 0..100 {
            match std::sync::Arc::try_unwrap(m) {
                Ok(owned) => return owned.shutdown().await,
                Err(back) => m = back,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("messenger still shared");
    });
    node.rt.shutdown_timeout(Duration::from_secs(5));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn addr(port: u16, peer: PeerId) -> Multiaddr {
    format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}")
        .parse()
        .unwrap()
}

fn id(n: u32) -> MessageId {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&n.to_le_bytes());
    MessageId(b)
}

fn receive(node: &mut Node, n: usize, secs: u64) -> Vec<(String, Vec<u8>)> {
    let mut got = Vec::new();
    node.rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while got.len() < n {
            match tokio::time::timeout_at(deadline, node.inbox.recv()).await {
                Ok(Some(m)) => got.push(m),
                _ => break,
            }
        }
        // Nothing more may arrive: exactly once.
        if let Ok(Some(extra)) =
            tokio::time::timeout(Duration::from_millis(500), node.inbox.recv()).await
        {
            panic!("delivered more than once: {extra:?}");
        }
    });
    got
}

#[test]
fn messages_arrive_exactly_once_even_across_restarts_of_both_sides() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (pa, pb) = (free_port(), free_port());
    let b_id = keypair_from_seed(&[2; 32]).unwrap().public().to_peer_id();

    // 1. Both up: 20 messages arrive, each once.
    let a = start(1, pa, dirs.0.path());
    let mut b = start(2, pb, dirs.1.path());
    a.rt.block_on(a.transport.add_peer_address(b_id, addr(pb, b_id)))
        .unwrap();
    for n in 0..20 {
        a.messenger
            .as_ref()
            .unwrap()
            .send(
                id(n),
                b_id,
                "chat",
                format!("m{n}").into_bytes(),
                Duration::from_secs(60),
            )
            .unwrap();
    }
    let mut got = receive(&mut b, 20, 20);
    got.sort();
    let mut want: Vec<(String, Vec<u8>)> = (0..20)
        .map(|n| ("chat".to_owned(), format!("m{n}").into_bytes()))
        .collect();
    want.sort();
    assert_eq!(got, want);

    // 2. B stops. A queues more, then A itself restarts; the outbox is on disk.
    stop(b);
    for n in 20..25 {
        a.messenger
            .as_ref()
            .unwrap()
            .send(
                id(n),
                b_id,
                "chat",
                format!("m{n}").into_bytes(),
                Duration::from_secs(60),
            )
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(800)); // a few failed attempts
    assert_eq!(a.messenger.as_ref().unwrap().pending(), 5);
    stop(a);
    let a = start(1, pa, dirs.0.path());
    assert_eq!(
        a.messenger.as_ref().unwrap().pending(),
        5,
        "the outbox survived the sender's restart"
    );
    a.rt.block_on(a.transport.add_peer_address(b_id, addr(pb, b_id)))
        .unwrap();

    // 3. B comes back on the same address: the waiting messages arrive, each once.
    let mut b = start(2, pb, dirs.1.path());
    let got = receive(&mut b, 5, 30);
    assert_eq!(got.len(), 5, "{got:?}");
    a.rt.block_on(async {
        for _ in 0..100 {
            if a.messenger.as_ref().unwrap().pending() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("acknowledgements did not clear the outbox");
    });
    // 4. A resend of an already delivered id (a lost acknowledgement) is not delivered again.
    a.messenger
        .as_ref()
        .unwrap()
        .send(id(3), b_id, "chat", b"m3".to_vec(), Duration::from_secs(60))
        .unwrap();
    assert!(receive(&mut b, 1, 3).is_empty());
    stop(a);
    stop(b);
}
