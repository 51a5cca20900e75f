//! Membership over real sockets: three nodes that only know one bootstrap node learn of each
//! other through SWIM's dissemination, see each other alive in `GET /v1/members`, and see a
//! node that stops leave; a restarted node comes back at a higher incarnation. A rogue peer's
//! forged claims about a member, sent over the real protocol, change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use mesh_api::types::Member;
use mesh_driver::node::{self, Config};

mod common;

const WAIT: Duration = Duration::from_secs(60);

fn config(dir: &Path) -> Config {
    common::loopback_config(dir, common::free_port())
}

/// Waits until `check` holds for the members `api` lists.
async fn until(
    api: &mesh_api::client::Client,
    what: &str,
    check: impl Fn(&[Member]) -> bool + Send + 'static,
) {
    let api = api.clone();
    let what = what.to_owned();
    tokio::task::spawn_blocking(move || {
        let step = Duration::from_millis(50);
        for _ in 0..WAIT.as_millis() / step.as_millis() {
            if check(&api.members().unwrap()) {
                return;
            }
            std::thread::sleep(step);
        }
        panic!("{what}: {:?}", api.members().unwrap());
    })
    .await
    .unwrap();
}

fn state_of(members: &[Member], peer: &str) -> Option<(String, u64)> {
    members
        .iter()
        .find(|m| m.peer_id == peer)
        .map(|m| (m.state.clone(), m.incarnation))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_learn_each_other_see_a_leave_and_a_return() {
    let dir = tempfile::tempdir().unwrap();
    let a_config = config(&dir.path().join("a"));
    node::init(&a_config).unwrap();
    let (a, a_join, a_addr) = common::start_listening(a_config).await;
    let joined = |name: &str| {
        let mut c = config(&dir.path().join(name));
        c.bootstrap = vec![a_addr.clone()];
        node::init(&c).unwrap();
        c
    };
    let (b_config, c_config) = (joined("b"), joined("c"));
    let (b, b_join) = node::start(b_config).unwrap();
    let (c, c_join) = node::start(c_config.clone()).unwrap();
    let client =
        |n: &node::NodeHandle| mesh_api::client::Client::new(n.api_addr().unwrap().to_string());
    let (a_api, b_api) = (client(&a), client(&b));
    let (a_id, b_id, c_id) = (
        a.peer_id().to_string(),
        b.peer_id().to_string(),
        c.peer_id().to_string(),
    );

    // B knows only A; it hears of C from the dissemination.
    let want = c_id.clone();
    until(&b_api, "B sees C alive", move |m| {
        state_of(m, &want).is_some_and(|(s, _)| s == "alive")
    })
    .await;
    let (wb, wc) = (b_id.clone(), c_id.clone());
    until(&a_api, "A sees B and C alive", move |m| {
        state_of(m, &wb).is_some_and(|(s, _)| s == "alive")
            && state_of(m, &wc).is_some_and(|(s, _)| s == "alive")
    })
    .await;
    assert!(state_of(&b_api.members().unwrap(), &a_id).is_some());

    // C stops: it says so, and the others record it as left.
    c.shutdown();
    tokio::time::timeout(WAIT, c_join)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let want = c_id.clone();
    until(&a_api, "A sees C leave", move |m| {
        state_of(m, &want).is_some_and(|(s, _)| s == "left")
    })
    .await;
    let first_incarnation = state_of(&a_api.members().unwrap(), &c_id).unwrap().1;

    // C returns at a higher incarnation and is alive again.
    let (c, c_join) = node::start(c_config).unwrap();
    let want = c_id.clone();
    until(&a_api, "A sees C back", move |m| {
        state_of(m, &want).is_some_and(|(s, i)| s == "alive" && i > first_incarnation)
    })
    .await;

    common::stop_all(vec![(c, c_join), (b, b_join), (a, a_join)]).await;
}

/// A peer that is not a member sends a node forged claims about another member over
/// `mesh/swim`: that member alive at a made-up incarnation (only it may say so), dead and
/// left "according to" the node itself (signed with the rogue's key), suspected by the rogue
/// (a stranger may not accuse). The node refuses every one: the member stays alive at its
/// incarnation, and the rogue is not listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_membership_claims_from_a_rogue_peer_change_nothing() {
    use mesh_crypto::ed25519::SigningKey;
    use mesh_driver::consensus;
    use mesh_fault::membership::{Body, Claim, Message, State};

    let dir = tempfile::tempdir().unwrap();
    let a_config = config(&dir.path().join("a"));
    node::init(&a_config).unwrap();
    let (a, a_join, a_addr) = common::start_listening(a_config).await;
    let mut b_config = config(&dir.path().join("b"));
    b_config.bootstrap = vec![a_addr.clone()];
    node::init(&b_config).unwrap();
    let (b, b_join) = node::start(b_config).unwrap();
    let a_api = mesh_api::client::Client::new(a.api_addr().unwrap().to_string());
    let b_id = b.peer_id().to_string();
    let want = b_id.clone();
    until(&a_api, "A sees B alive", move |m| {
        state_of(m, &want).is_some_and(|(s, _)| s == "alive")
    })
    .await;
    let b_incarnation = state_of(&a_api.members().unwrap(), &b_id).unwrap().1;

    // The rogue: its own key and peer, connected to A.
    let seed = [77u8; 32];
    let rogue_key = SigningKey::from_seed(&seed);
    let rogue = mesh_types::NodeId(rogue_key.verifying_key().to_bytes());
    let mut t = mesh_transport::Config::default();
    t.listen = vec![
        format!("/ip4/127.0.0.1/tcp/{}", common::free_port())
            .parse()
            .unwrap(),
    ];
    t.mdns = false;
    t.bootstrap = vec![a_addr];
    let (transport, _events) =
        mesh_transport::Transport::spawn(mesh_transport::keypair_from_seed(&seed).unwrap(), t)
            .unwrap();
    let b_node = consensus::node_id(&b.peer_id()).unwrap();
    let a_node = consensus::node_id(&a.peer_id()).unwrap();
    let forge = |member, incarnation, state, origin| {
        let payload = Claim::signed_bytes(&member, incarnation, state, &origin);
        Claim {
            member,
            incarnation,
            state,
            origin,
            signature: rogue_key.sign(&payload).0.to_vec(),
        }
    };
    let claims = vec![
        forge(b_node, b_incarnation + 1000, State::Alive, b_node),
        forge(b_node, b_incarnation + 1000, State::Alive, rogue),
        forge(b_node, b_incarnation, State::Dead, a_node),
        forge(b_node, b_incarnation, State::Left, b_node),
        forge(b_node, b_incarnation, State::Suspect, rogue),
    ];
    let message = Message {
        body: Body::Ping { seq: 1 },
        claims,
    };
    let mut delivered = false;
    for _ in 0..50 {
        if transport
            .request(a.peer_id(), node::membership::PROTOCOL, message.encode())
            .await
            .is_ok()
        {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delivered, "A never took the rogue's message");
    // Nothing changes over several probe intervals.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let members = a_api.members().unwrap();
    assert_eq!(
        state_of(&members, &b_id),
        Some(("alive".to_owned(), b_incarnation)),
        "{members:?}"
    );
    let rogue_peer = consensus::peer_id(&rogue).unwrap().to_string();
    assert!(state_of(&members, &rogue_peer).is_none(), "{members:?}");

    let _ = transport.shutdown().await;
    common::stop_all(vec![(b, b_join), (a, a_join)]).await;
}
