//! Agents over real sockets: two `mesh_driver::agent` peers join through a validator node,
//! register through consensus, open end-to-end sessions and exchange messages that arrive
//! exactly once, also across a restart of the recipient; the node's registry and the agents'
//! HTTP APIs answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use mesh_api::types::{Event, MessageBox};
use mesh_driver::agent::{self, AgentOptions};
use mesh_driver::node::genesis::{self, PublicInfo, Settings};
use mesh_driver::node::{self, Config, Multiaddr};

mod common;
use common::free_port;

const WAIT: Duration = Duration::from_secs(60);

fn config(dir: &Path, port: u16) -> Config {
    common::loopback_config(dir, port)
}

/// Waits for `n` `message_received` events.
async fn received(events: &mut tokio::sync::broadcast::Receiver<Event>, n: usize) {
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Ok(Event::MessageReceived { .. })) => got += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("event stream: {e}"),
            Err(_) => panic!("only {got} of {n} messages arrived in time"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_register_through_consensus_and_talk_end_to_end_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // One validator is a whole mesh (f = 0).
    let mut node_config = config(&dir.path().join("node"), free_port());
    node::init(&node_config).unwrap();
    let genesis_path = dir.path().join("genesis.json");
    genesis::build(
        &[PublicInfo::load(&node_config.data_dir).unwrap()],
        Settings::default(),
    )
    .unwrap()
    .save(&genesis_path)
    .unwrap();
    node_config.genesis = Some(genesis_path);
    let (node, node_join) = node::start(node_config).unwrap();
    let node_addr: Multiaddr = tokio::time::timeout(WAIT, node.listening())
        .await
        .unwrap()
        .unwrap()
        .remove(0);

    let agent_config = |name: &str| {
        let mut c = config(&dir.path().join(name), free_port());
        c.bootstrap = vec![node_addr.clone()];
        node::init(&c).unwrap();
        c
    };
    let (alice_config, bob_config) = (agent_config("alice"), agent_config("bob"));
    let options = |name: &str| AgentOptions {
        name: name.into(),
        capabilities: vec!["chat".into(), "tool/echo".into()],
    };
    let (alice, alice_join) = agent::start(alice_config, options("alice")).unwrap();
    let (bob, bob_join) = agent::start(bob_config.clone(), options("bob")).unwrap();
    for a in [&alice, &bob] {
        let height = tokio::time::timeout(WAIT, a.registered()).await.unwrap();
        assert!(height.is_some_and(|h| h >= 1), "{height:?}");
    }

    // The node's registry, from its ledger.
    let node_api = mesh_api::client::Client::new(node.api_addr().unwrap().to_string());
    let (alice_did, bob_did) = (alice.did().to_string(), bob.did().to_string());
    let listed = {
        let node_api = node_api.clone();
        tokio::task::spawn_blocking(move || {
            for _ in 0..600 {
                let agents = node_api.agents().unwrap();
                if agents.len() == 2 {
                    return agents;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("the registry never listed both agents")
        })
        .await
        .unwrap()
    };
    let bob_entry = listed.iter().find(|a| a.did == bob_did).unwrap();
    assert_eq!(bob_entry.name, "bob");
    assert_eq!(bob_entry.capabilities, ["chat", "tool/echo"]);
    assert_eq!(bob_entry.node, node.peer_id().to_string());
    assert!(!bob_entry.addrs.is_empty());

    // Alice → Bob, ten messages; Bob → Alice, one.
    let mut bob_events = bob.events();
    for i in 0..10 {
        alice
            .send(bob.did(), "chat", format!("hello {i}").as_bytes())
            .await
            .unwrap();
    }
    received(&mut bob_events, 10).await;
    let mut alice_events = alice.events();
    bob.send(alice.did(), "chat", b"hi Alice").await.unwrap();
    received(&mut alice_events, 1).await;
    let inbox = bob.inbox(0, 100).unwrap();
    let mut texts: Vec<String> = inbox
        .iter()
        .map(|m| String::from_utf8(m.body.clone()).unwrap())
        .collect();
    texts.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("hello {i}")).collect();
    want.sort();
    assert_eq!(texts, want, "each message exactly once");
    assert!(inbox.iter().all(|m| m.peer.to_string() == alice_did));
    assert_eq!(alice.inbox(0, 10).unwrap()[0].body, b"hi Alice");

    // Bob stops; Alice's next messages wait in her outbox and arrive once Bob is back.
    bob.shutdown();
    tokio::time::timeout(WAIT, bob_join)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let bob_id = bob.did().clone();
    drop(bob);
    for i in 10..13 {
        alice
            .send(&bob_id, "chat", format!("hello {i}").as_bytes())
            .await
            .unwrap();
    }
    // Bob comes back on another port: Alice's messages find him there (the transport looks
    // the peer up through the node it shares with him).
    let mut bob_config = bob_config;
    bob_config.listen = vec![
        format!("/ip4/127.0.0.1/tcp/{}", free_port())
            .parse()
            .unwrap(),
    ];
    let (bob, bob_join) = agent::start(bob_config, options("bob")).unwrap();
    let mut bob_events = bob.events();
    received(&mut bob_events, 3).await;
    let inbox = bob.inbox(0, 100).unwrap();
    assert_eq!(inbox.len(), 13, "nothing lost, nothing twice");
    assert_eq!(inbox[12].seq, 12);

    // Through the agents' APIs.
    let alice_api = mesh_api::client::Client::new(alice.api_addr().unwrap().to_string());
    let bob_api = mesh_api::client::Client::new(bob.api_addr().unwrap().to_string());
    let mut bob_events = bob.events();
    let sent = {
        let bob_did = bob_did.clone();
        tokio::task::spawn_blocking(move || {
            alice_api.send_message(&bob_did, "through the API").unwrap()
        })
        .await
        .unwrap()
    };
    assert_eq!(sent.seq, 13);
    received(&mut bob_events, 1).await;
    let page = tokio::task::spawn_blocking(move || {
        let page = bob_api.messages(MessageBox::Inbox, 13, 10).unwrap();
        // A node is not an agent; an agent is not a validator; a bad DID is a 400.
        let e = bob_api.send_message("did:key:nonsense", "x").unwrap_err();
        assert!(e.to_string().contains("400"), "{e}");
        page
    })
    .await
    .unwrap();
    assert_eq!(page.total, 14);
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].text.as_deref(), Some("through the API"));
    assert_eq!(page.messages[0].peer, alice_did);

    for (a, j) in [(alice, alice_join), (bob, bob_join)] {
        a.shutdown();
        tokio::time::timeout(WAIT, j)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    node.shutdown();
    tokio::time::timeout(WAIT, node_join)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_registers_through_a_coordinator_that_follows_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let mut validator = config(&dir.path().join("validator"), free_port());
    let mut coordinator = config(&dir.path().join("coordinator"), free_port());
    coordinator.coordinator = true;
    node::init(&validator).unwrap();
    node::init(&coordinator).unwrap();
    let genesis_path = dir.path().join("genesis.json");
    let file = genesis::build_with(
        &[PublicInfo::load(&validator.data_dir).unwrap()],
        &[PublicInfo::load(&coordinator.data_dir).unwrap()],
        Settings::default(),
    )
    .unwrap();
    assert_eq!(file.validators[1].weight, 0, "the coordinator observes");
    file.save(&genesis_path).unwrap();
    validator.genesis = Some(genesis_path.clone());
    coordinator.genesis = Some(genesis_path);
    let (v, v_join) = node::start(validator).unwrap();
    let (c, c_join) = node::start(coordinator).unwrap();
    assert!(!c.consensus().unwrap().status().voter);
    let c_addr = tokio::time::timeout(WAIT, c.listening())
        .await
        .unwrap()
        .unwrap()
        .remove(0);

    let mut agent_config = config(&dir.path().join("carol"), free_port());
    agent_config.bootstrap = vec![c_addr];
    node::init(&agent_config).unwrap();
    let (carol, carol_join) = agent::start(
        agent_config,
        AgentOptions {
            name: "carol".into(),
            capabilities: vec!["chat".into()],
        },
    )
    .unwrap();
    let height = tokio::time::timeout(WAIT, carol.registered())
        .await
        .unwrap();
    assert!(height.is_some_and(|h| h >= 1), "{height:?}");
    // The coordinator learns the block as a learner and lists carol.
    let api = mesh_api::client::Client::new(c.api_addr().unwrap().to_string());
    let did = carol.did().to_string();
    tokio::task::spawn_blocking(move || {
        for _ in 0..1200 {
            if api
                .agents()
                .unwrap()
                .iter()
                .any(|a| a.did == did && a.name == "carol")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the coordinator never listed carol");
    })
    .await
    .unwrap();

    carol.shutdown();
    tokio::time::timeout(WAIT, carol_join)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    for (n, j) in [(c, c_join), (v, v_join)] {
        n.shutdown();
        tokio::time::timeout(WAIT, j)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
