//! Several nodes on loopback, each on its own tokio runtime: request/response, gossip,
//! Kademlia discovery, bad input and unreachable peers.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mesh_transport::{
    Config, Discovery, Error, Event, Multiaddr, PeerId, Transport, keypair_from_seed,
};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

struct Node {
    transport: Transport,
    events: mpsc::Receiver<Event>,
    addr: Multiaddr,
    _rt: Runtime,
}

/// Starts a node on its own runtime. It answers `echo` requests (refusing the payload
/// `refuse`, ignoring `ignore`) and forwards every other event to `events`.
fn node(seed: u8, tweak: impl FnOnce(&mut Config)) -> Node {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut config = Config::default();
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.mdns = false;
    config.protocols = vec!["echo".into()];
    config.request_timeout = Duration::from_secs(5);
    tweak(&mut config);
    let listens = !config.listen.is_empty();
    let (transport, mut raw) = {
        let _guard = rt.enter();
        Transport::spawn(keypair_from_seed(&[seed; 32]).unwrap(), config).unwrap()
    };
    let (tx, mut events) = mpsc::channel(10_000);
    let responder = transport.clone();
    rt.spawn(async move {
        while let Some(event) = raw.recv().await {
            match event {
                // A request the application never answers: the caller must time out.
                Event::Request(req) if req.protocol == "echo" && req.data == b"ignore" => {}
                Event::Request(req) if req.protocol == "echo" => {
                    let answer = if req.data == b"refuse" {
                        Err("refused on purpose".to_owned())
                    } else {
                        Ok(req.data)
                    };
                    responder.respond(req.token, answer).await.unwrap();
                }
                other => {
                    let _ = tx.try_send(other);
                }
            }
        }
    });
    let addr = rt.block_on(async {
        if !listens {
            return Multiaddr::empty();
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Some(Event::Listening { addr })) => break addr,
                Ok(Some(_)) => continue,
                other => panic!("node {seed} did not start listening: {other:?}"),
            }
        }
    });
    let peer = transport.peer_id();
    Node {
        transport,
        events,
        addr: addr.with(libp2p_p2p(peer)),
        _rt: rt,
    }
}

fn libp2p_p2p(peer: PeerId) -> mesh_transport::multiaddr::Protocol<'static> {
    mesh_transport::multiaddr::Protocol::P2p(peer)
}

fn test_rt() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Waits for an event matching `pred`, up to `secs` seconds.
async fn wait_for(node: &mut Node, secs: u64, mut pred: impl FnMut(&Event) -> bool) -> Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, node.events.recv()).await {
            Ok(Some(e)) if pred(&e) => return e,
            Ok(Some(_)) => continue,
            other => panic!("event not seen within {secs}s: {other:?}"),
        }
    }
}

/// Dials `to` from `from` and waits until connected.
async fn connect(from: &mut Node, to: &Node) {
    from.transport.dial(to.addr.clone()).await.unwrap();
    wait_for(from, 10, |e| matches!(e, Event::PeerConnected { .. })).await;
}

#[test]
fn request_response_round_trips_and_reports_errors_clearly() {
    let a = node(1, |_| {});
    let mut b = node(2, |c| c.bootstrap = Vec::new());
    test_rt().block_on(async {
        connect(&mut b, &a).await;
        let peer = a.transport.peer_id();
        assert_eq!(
            b.transport
                .request(peer, "echo", b"ping".to_vec())
                .await
                .unwrap(),
            b"ping"
        );
        // Many in a row on the same connection.
        for i in 0..100u32 {
            let data = i.to_le_bytes().to_vec();
            assert_eq!(
                b.transport
                    .request(peer, "echo", data.clone())
                    .await
                    .unwrap(),
                data
            );
        }
        assert!(matches!(
            b.transport.request(peer, "nope", vec![]).await,
            Err(Error::UnknownProtocol { .. })
        ));
        match b.transport.request(peer, "echo", b"refuse".to_vec()).await {
            Err(Error::Refused { detail, .. }) => assert_eq!(detail, "refused on purpose"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            b.transport.request(peer, "Bad Name", vec![]).await,
            Err(Error::BadName { .. })
        ));
        let big = vec![0u8; 4 * 1024 * 1024 + 1];
        assert!(matches!(
            b.transport.request(peer, "echo", big).await,
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            mesh_transport::parse_addr("/ip4/1.2.3/tcp"),
            Err(Error::BadAddress { .. })
        ));
        // A peer nobody knows how to reach: a clear failure, not a hang.
        let stranger = keypair_from_seed(&[99; 32]).unwrap().public().to_peer_id();
        assert!(matches!(
            b.transport.request(stranger, "echo", vec![]).await,
            Err(Error::Request { .. })
        ));
    });
}

#[test]
fn oversized_frames_are_rejected_and_honest_requests_continue() {
    // `a` accepts at most 64 KiB; `b` is willing to send 1 MiB.
    let a = node(3, |c| c.max_message_len = 64 * 1024);
    let mut b = node(4, |c| c.max_message_len = 1024 * 1024);
    test_rt().block_on(async {
        connect(&mut b, &a).await;
        let peer = a.transport.peer_id();
        let err = b
            .transport
            .request(peer, "echo", vec![1u8; 512 * 1024])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Request { .. }), "{err}");
        // The receiver is unharmed and still answers.
        assert_eq!(
            b.transport
                .request(peer, "echo", b"still here".to_vec())
                .await
                .unwrap(),
            b"still here"
        );
    });
}

#[test]
fn gossip_reaches_every_subscriber() {
    let mut nodes = vec![node(10, |_| {})];
    let boot = nodes[0].addr.clone();
    for seed in 11..14 {
        nodes.push(node(seed, |c| c.bootstrap = vec![boot.clone()]));
    }
    test_rt().block_on(async {
        for n in &nodes {
            n.transport.subscribe("decisions").await.unwrap();
        }
        // Publish until the mesh has formed and every other node has the message.
        let mut got = [false; 4];
        got[1] = true; // the publisher
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut round = 0u32;
        while got.iter().any(|g| !g) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "gossip did not reach everyone: {got:?}"
            );
            let payload = format!("decision {round}").into_bytes();
            let _ = nodes[1].transport.publish("decisions", payload).await;
            round += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            for (i, n) in nodes.iter_mut().enumerate() {
                while let Ok(e) = n.events.try_recv() {
                    if let Event::Message { topic, source, .. } = e {
                        assert_eq!(topic, "decisions");
                        assert_eq!(
                            source,
                            Some(PeerId::from(keypair_from_seed(&[11; 32]).unwrap().public()))
                        );
                        got[i] = true;
                    }
                }
            }
        }
        // A burst leaves in batches (one signed envelope per linger) and arrives as separate
        // messages, every one of them, at every subscriber.
        let burst = 600u32;
        for i in 0..burst {
            let payload = format!("burst {i}").into_bytes();
            nodes[1]
                .transport
                .publish("decisions", payload)
                .await
                .unwrap();
        }
        for (i, n) in nodes.iter_mut().enumerate() {
            if i == 1 {
                continue;
            }
            let mut seen = std::collections::BTreeSet::new();
            while seen.len() < burst as usize {
                match wait_for(n, 10, |e| matches!(e, Event::Message { .. })).await {
                    Event::Message { data, .. } => {
                        let text = String::from_utf8(data).unwrap();
                        if let Some(k) = text.strip_prefix("burst ") {
                            assert!(seen.insert(k.parse::<u32>().unwrap()), "duplicate {text}");
                        }
                    }
                    _ => unreachable!(),
                }
            }
        }
        let metrics = nodes[1].transport.metrics_text().await.unwrap();
        assert!(metrics.contains("mesh_gossip_unsent_total 0"), "{metrics}");

        assert!(matches!(
            nodes[0].transport.publish("Bad Topic", vec![]).await,
            Err(Error::BadName { .. })
        ));
    });
}

#[test]
fn kademlia_bootstrap_finds_peers_beyond_the_bootstrap_node() {
    let a = node(20, |_| {});
    let boot = a.addr.clone();
    let mut b = node(21, |c| c.bootstrap = vec![boot.clone()]);
    let c = node(22, |c| c.bootstrap = vec![boot.clone()]);
    let c_id = c.transport.peer_id();
    test_rt().block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let _ = b.transport.bootstrap().await;
            let found = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    match b.events.recv().await {
                        Some(Event::PeerDiscovered {
                            peer,
                            via: Discovery::Kademlia,
                            ..
                        }) if peer == c_id => break true,
                        Some(Event::PeerConnected { peer, .. }) if peer == c_id => break true,
                        Some(_) => continue,
                        None => break false,
                    }
                }
            })
            .await
            .unwrap_or(false);
            if found {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "b never discovered c through a"
            );
        }
        // And b can talk to c directly, knowing it only through the DHT.
        assert_eq!(
            b.transport
                .request(c_id, "echo", b"hi c".to_vec())
                .await
                .unwrap(),
            b"hi c"
        );
    });
}

#[test]
fn unreachable_bootstrap_peers_are_reported_and_the_node_keeps_running() {
    let ghost = keypair_from_seed(&[77; 32]).unwrap().public().to_peer_id();
    let dead: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{ghost}").parse().unwrap();
    let mut a = node(30, |c| c.bootstrap = vec![dead]);
    let b = node(31, |_| {});
    test_rt().block_on(async {
        wait_for(&mut a, 10, |e| matches!(e, Event::DialFailed { .. })).await;
        connect(&mut a, &b).await;
        let peer = b.transport.peer_id();
        assert_eq!(
            a.transport
                .request(peer, "echo", b"ok".to_vec())
                .await
                .unwrap(),
            b"ok"
        );
        a.transport.shutdown().await.unwrap();
        assert!(matches!(
            a.transport.request(peer, "echo", vec![]).await,
            Err(Error::Closed)
        ));
    });
}

#[test]
fn a_flooding_peer_is_throttled_while_an_honest_peer_is_served() {
    let a = node(40, |c| {
        c.requests_per_peer_per_sec = 20;
        c.request_burst_per_peer = 20;
    });
    let mut flooder = node(41, |_| {});
    let mut honest = node(42, |_| {});
    let target = a.transport.peer_id();
    test_rt().block_on(async {
        for n in [&mut flooder, &mut honest] {
            connect(n, &a).await;
        }
        let mut tasks = Vec::new();
        for i in 0..400u32 {
            let t = flooder.transport.clone();
            tasks.push(tokio::spawn(async move {
                t.request(target, "echo", i.to_le_bytes().to_vec()).await
            }));
        }
        let mut refused = 0;
        let mut served = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => served += 1,
                Err(Error::Refused { detail, .. }) if detail == "rate limited" => refused += 1,
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert!(refused >= 300, "flooder served {served}, refused {refused}");
        // The honest peer, within its own budget, gets every answer.
        for i in 0..15u32 {
            let data = i.to_le_bytes().to_vec();
            assert_eq!(
                honest
                    .transport
                    .request(target, "echo", data.clone())
                    .await
                    .unwrap(),
                data
            );
        }
    });
}

#[test]
fn quic_carries_requests() {
    let quic = |c: &mut Config| c.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()];
    let a = node(50, quic);
    let mut b = node(51, quic);
    assert!(a.addr.to_string().contains("/quic-v1/"), "{}", a.addr);
    test_rt().block_on(async {
        b.transport.dial(a.addr.clone()).await.unwrap();
        match wait_for(&mut b, 10, |e| matches!(e, Event::PeerConnected { .. })).await {
            Event::PeerConnected { addr, .. } => {
                assert!(addr.to_string().contains("quic-v1"), "{addr}")
            }
            _ => unreachable!(),
        }
        let peer = a.transport.peer_id();
        assert_eq!(
            b.transport
                .request(peer, "echo", b"over quic".to_vec())
                .await
                .unwrap(),
            b"over quic"
        );
    });
}

#[test]
fn a_slow_application_keeps_queues_bounded_and_the_node_responsive() {
    let a = node(60, |_| {});
    // `b` has a tiny event queue and nobody reads it.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut config = Config::default();
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.mdns = false;
    config.protocols = vec!["echo".into()];
    config.event_capacity = 8;
    let (b, b_events) = {
        let _g = rt.enter();
        Transport::spawn(keypair_from_seed(&[61; 32]).unwrap(), config).unwrap()
    };
    test_rt().block_on(async {
        b.subscribe("firehose").await.unwrap();
        a.transport.subscribe("firehose").await.unwrap();
        b.dial(a.addr.clone()).await.unwrap();
        let b_id = b.peer_id();
        let mut sent = 0;
        for i in 0..3000u32 {
            if a.transport
                .publish("firehose", i.to_le_bytes().repeat(64))
                .await
                .is_ok()
            {
                sent += 1;
            }
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        assert!(sent > 0, "nothing was published");
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The queue never grows past its bound ...
        assert!(b_events.len() <= 8, "event queue holds {}", b_events.len());
        // ... the node still answers commands and reports what it dropped ...
        let text = b.metrics_text().await.unwrap();
        let dropped: u64 = text
            .lines()
            .find(|l| l.starts_with("mesh_events_dropped_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(dropped > 0, "{text}");
        // ... and refuses requests instead of queueing them without bound.
        match a.transport.request(b_id, "echo", b"x".to_vec()).await {
            Err(Error::Refused { detail, .. }) => assert!(detail.starts_with("busy"), "{detail}"),
            other => panic!("expected a busy refusal, got {other:?}"),
        }
    });
    drop(b_events);
}

#[test]
fn a_peer_without_a_listener_is_reached_through_a_relay() {
    use mesh_transport::multiaddr::Protocol;
    let relay = node(70, |c| {
        c.relay_server = true;
        c.listen_addrs_are_external = true;
    });
    // b has no listener of its own, like a peer behind a NAT: only the relay can reach it.
    let b = node(71, |c| c.listen = Vec::new());
    let mut c = node(72, |_| {});
    let b_id = b.transport.peer_id();
    test_rt().block_on(async {
        // b reserves a slot on the relay and is then addressable through it.
        let circuit = relay.addr.clone().with(Protocol::P2pCircuit);
        b.transport.listen(circuit.clone()).await.unwrap();
        let via_relay = circuit.with(Protocol::P2p(b_id));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let addr = loop {
            // The reservation takes a moment: retry the dial until the circuit opens.
            let _ = c.transport.dial(via_relay.clone()).await;
            let seen = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    match c.events.recv().await {
                        Some(Event::PeerConnected { peer, addr }) if peer == b_id => {
                            break Some(addr);
                        }
                        Some(_) => continue,
                        None => break None,
                    }
                }
            })
            .await;
            if let Ok(Some(addr)) = seen {
                break addr;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no circuit to b through the relay"
            );
        };
        // b listens nowhere but on the relay, so c could only find it through the circuit; the
        // first reported connection is either the circuit or, on loopback where DCUtR's hole
        // punch always succeeds, the direct connection it upgraded to.
        let via_circuit = addr.iter().any(|p| matches!(p, Protocol::P2pCircuit));
        let direct = addr.iter().any(|p| matches!(p, Protocol::Tcp(_)));
        assert!(via_circuit || direct, "{addr}");
        assert!(
            b.transport
                .listen_addrs()
                .await
                .unwrap()
                .iter()
                .all(|a| a.iter().any(|p| matches!(p, Protocol::P2pCircuit)))
        );
        assert_eq!(
            c.transport
                .request(b_id, "echo", b"via relay".to_vec())
                .await
                .unwrap(),
            b"via relay"
        );
    });
}

#[test]
fn garbage_on_the_wire_is_rejected_and_honest_peers_keep_working() {
    use mesh_transport::multiaddr::Protocol;
    use std::io::Write as _;
    let a = node(80, |_| {});
    let mut b = node(81, |_| {});
    let port = a
        .addr
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();
    // Raw garbage, a truncated multistream header, and a burst of zeros, each on its own socket.
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"\x13/multistream/1.0",
        &[0u8; 65536],
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(junk);
    }
    test_rt().block_on(async {
        connect(&mut b, &a).await;
        let peer = a.transport.peer_id();
        assert_eq!(
            b.transport
                .request(peer, "echo", b"fine".to_vec())
                .await
                .unwrap(),
            b"fine"
        );
    });
}

/// A peer that completed the Noise handshake (so it is authenticated) and then sends
/// malformed or oversized frames on the request stream loses that stream, and nothing more:
/// its next, valid request on a new stream is answered, and other peers are unaffected.
#[test]
fn malformed_frames_inside_an_authenticated_stream_close_only_that_stream() {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
    use libp2p::StreamProtocol;

    let a = node(82, |_| {});
    let mut b = node(83, |_| {});
    let a_id = a.transport.peer_id();
    test_rt().block_on(async {
        let mut swarm =
            libp2p::SwarmBuilder::with_existing_identity(keypair_from_seed(&[84; 32]).unwrap())
                .with_tokio()
                .with_tcp(
                    libp2p::tcp::Config::default(),
                    libp2p::noise::Config::new,
                    libp2p::yamux::Config::default,
                )
                .unwrap()
                .with_behaviour(|_| libp2p_stream::Behaviour::new())
                .unwrap()
                .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
                .build();
        let mut control = swarm.behaviour().new_control();
        swarm.dial(a.addr.clone()).unwrap();
        tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        let proto = StreamProtocol::new("/agentmesh/rr/2");
        let frame = |name: &[u8], len: u32, body: &[u8]| {
            let mut f = vec![1u8];
            f.extend_from_slice(&7u64.to_le_bytes());
            f.push(name.len() as u8);
            f.extend_from_slice(name);
            f.extend_from_slice(&len.to_le_bytes());
            f.extend_from_slice(body);
            f
        };
        let junk = [
            vec![9u8; 32],                 // not a frame kind
            frame(b"echo", u32::MAX, b""), // claims a 4 GiB payload
            frame(b"ECHO!", 2, b"ok"),     // invalid protocol name
            vec![1, 0, 0],                 // truncated, then the stream ends
        ];
        for bytes in junk {
            let mut s = control.open_stream(a_id, proto.clone()).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            s.flush().await.unwrap();
            if bytes.len() == 3 {
                s.close().await.unwrap();
            }
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("the server must close a stream carrying a malformed frame");
            assert!(matches!(read, Ok(0) | Err(_)), "got {read:?}");
        }
        // The same authenticated peer, on a new stream, with a valid frame: answered.
        let mut s = control.open_stream(a_id, proto).await.unwrap();
        s.write_all(&frame(b"echo", 2, b"ok")).await.unwrap();
        s.flush().await.unwrap();
        let mut answer = [0u8; 16];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer[0], 2, "a response frame");
        assert_eq!(u64::from_le_bytes(answer[1..9].try_into().unwrap()), 7);
        assert_eq!(answer[9], 0, "status ok");
        assert_eq!(&answer[14..], b"ok");
        // And an honest peer was never affected.
        connect(&mut b, &a).await;
        assert_eq!(
            b.transport
                .request(a_id, "echo", b"fine".to_vec())
                .await
                .unwrap(),
            b"fine"
        );
    });
}

/// A request the peer never answers times out with a clear error, and the next request (on a
/// fresh stream: a timed-out stream is not trusted again) is answered.
#[test]
fn an_unanswered_request_times_out_and_the_next_one_is_served() {
    let mut a = node(86, |c| c.request_timeout = Duration::from_millis(500));
    let b = node(87, |_| {});
    test_rt().block_on(async {
        connect(&mut a, &b).await;
        let peer = b.transport.peer_id();
        match a.transport.request(peer, "echo", b"ignore".to_vec()).await {
            Err(Error::Request { detail, .. }) => assert!(detail.contains("no answer"), "{detail}"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(
            a.transport
                .request(peer, "echo", b"next".to_vec())
                .await
                .unwrap(),
            b"next"
        );
    });
}

/// Reads a counter from a node's Prometheus text.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A peer that sends badly signed gossip has it rejected and counted, and is then ignored:
/// peer scoring puts it below gossipsub's graylist threshold after one forgery. Honest gossip
/// keeps flowing. The attacker is a bare libp2p swarm speaking gossipsub.
#[test]
fn a_peer_sending_forged_gossip_is_graylisted() {
    use futures::StreamExt as _;
    use libp2p::{Swarm, gossipsub, noise, tcp, yamux};

    async fn drive(swarm: &mut Swarm<gossipsub::Behaviour>, for_: Duration) {
        let _ = tokio::time::timeout(for_, async {
            loop {
                swarm.select_next_some().await;
            }
        })
        .await;
    }

    let mut a = node(90, |_| {});
    let honest = node(91, |_| {});
    test_rt().block_on(async {
        a.transport.subscribe("decisions").await.unwrap();
        honest.transport.subscribe("decisions").await.unwrap();
        honest.transport.dial(a.addr.clone()).await.unwrap();

        let keypair = keypair_from_seed(&[92; 32]).unwrap();
        let key = keypair.public().try_into_ed25519().unwrap().to_bytes();
        let config = gossipsub::ConfigBuilder::default()
            .validation_mode(gossipsub::ValidationMode::Anonymous)
            .message_id_fn(|m: &gossipsub::Message| gossipsub::MessageId::from(m.data.clone()))
            .build()
            .unwrap();
        let mut attacker = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| {
                gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, config)
                    .unwrap()
            })
            .unwrap()
            .build();
        let topic = gossipsub::IdentTopic::new("decisions");
        attacker.behaviour_mut().subscribe(&topic).unwrap();
        attacker.dial(a.addr.clone()).unwrap();
        // Well-formed envelopes (version 2, a valid author key, one message) with a signature
        // that does not verify.
        let forged = |i: u8| {
            let mut e = vec![2u8];
            e.extend_from_slice(&key);
            e.extend_from_slice(&[i; 8]);
            e.extend_from_slice(&[7; 64]);
            e.extend_from_slice(&[1, i]);
            e
        };

        // The first forgery, once the attacker knows `a` subscribes, is rejected and counted.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a never saw the forgery"
            );
            drive(&mut attacker, Duration::from_millis(100)).await;
            let _ = attacker.behaviour_mut().publish(topic.clone(), forged(0));
            let text = a.transport.metrics_text().await.unwrap();
            if counter(&text, "mesh_gossip_rejected_total") >= 1 {
                break;
            }
        }
        // Later forgeries are not even looked at.
        for i in 1..=30 {
            attacker
                .behaviour_mut()
                .publish(topic.clone(), forged(i))
                .unwrap();
            drive(&mut attacker, Duration::from_millis(20)).await;
        }
        drive(&mut attacker, Duration::from_millis(500)).await;
        let text = a.transport.metrics_text().await.unwrap();
        let rejected = counter(&text, "mesh_gossip_rejected_total");
        assert!(
            rejected < 5,
            "{rejected} forgeries were examined: the attacker was not graylisted"
        );
        // Honest gossip still arrives.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut got = false;
        while !got {
            assert!(
                tokio::time::Instant::now() < deadline,
                "honest gossip stopped"
            );
            let _ = honest
                .transport
                .publish("decisions", b"still fine".to_vec())
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            while let Ok(e) = a.events.try_recv() {
                got |= matches!(e, Event::Message { data, .. } if data == b"still fine");
            }
        }
    });
}
