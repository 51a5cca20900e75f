//! The mailbox end to end: sessions, exactly-once delivery in any order, refusals, restarts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use mesh_agent_runtime::{Error, Mailbox, Opened};
use mesh_identity::Identity;
use mesh_store::{DiskStore, Kv, MemStore, Store as _};
use mesh_types::Timestamp;

const NOW: Timestamp = Timestamp(1_800_000_000_000);
const TTL: Duration = Duration::from_secs(60);

fn peer(id: &Identity) -> Vec<u8> {
    mesh_identity::did::peer_id_bytes(&id.verifying_key())
}

struct Agent<K: Kv> {
    id: Arc<Identity>,
    mailbox: Mailbox<K>,
}

impl<K: Kv> Agent<K> {
    fn peer(&self) -> Vec<u8> {
        peer(&self.id)
    }
}

fn agent(kv: impl FnOnce() -> MemStore) -> Agent<mesh_store::MemKv> {
    let id = Arc::new(Identity::generate(NOW).unwrap());
    let store = kv();
    Agent {
        mailbox: Mailbox::open(store.kv("agent").unwrap(), id.clone()).unwrap(),
        id,
    }
}

/// `a` opens a session to `b`.
fn connect<K: Kv, L: Kv>(a: &mut Agent<K>, b: &mut Agent<L>) {
    let (pending, hello) = a.mailbox.start_session(b.id.did(), NOW).unwrap();
    let (who, reply) = b.mailbox.accept_session(&hello, &a.peer(), NOW).unwrap();
    assert_eq!(&who, a.id.did());
    a.mailbox
        .finish_session(pending, &reply, &b.peer(), NOW)
        .unwrap();
}

fn body(opened: Opened) -> Vec<u8> {
    match opened {
        Opened::New(m) => m.body,
        Opened::Duplicate(id) => panic!("unexpected duplicate {id:?}"),
    }
}

#[test]
fn messages_arrive_once_in_any_order_and_both_sides_can_talk() {
    let mut alice = agent(MemStore::new);
    let mut bob = agent(MemStore::new);
    assert!(!alice.mailbox.has_session(bob.id.did()).unwrap());
    connect(&mut alice, &mut bob);
    assert!(alice.mailbox.has_session(bob.id.did()).unwrap());
    // Bob cannot answer in a session he has not heard a message in yet.
    assert!(!bob.mailbox.has_session(alice.id.did()).unwrap());

    let sealed: Vec<_> = (0..5)
        .map(|i| {
            alice
                .mailbox
                .seal(
                    bob.id.did(),
                    "chat",
                    format!("message {i}").as_bytes(),
                    TTL,
                    NOW,
                )
                .unwrap()
        })
        .collect();
    // Delivered backwards, each twice.
    for s in sealed.iter().rev() {
        let first = bob
            .mailbox
            .receive(&s.envelope, &alice.peer(), NOW)
            .unwrap();
        assert!(matches!(first, Opened::New(_)));
        let again = bob
            .mailbox
            .receive(&s.envelope, &alice.peer(), NOW)
            .unwrap();
        assert_eq!(again, Opened::Duplicate(s.id));
    }
    let inbox = bob.mailbox.received(0, 100).unwrap();
    assert_eq!(inbox.len(), 5);
    let mut texts: Vec<_> = inbox
        .iter()
        .map(|m| String::from_utf8(m.body.clone()).unwrap())
        .collect();
    texts.sort();
    assert_eq!(
        texts,
        (0..5).map(|i| format!("message {i}")).collect::<Vec<_>>()
    );
    assert!(
        inbox
            .iter()
            .all(|m| &m.peer == alice.id.did() && m.kind == "chat")
    );
    assert_eq!(bob.mailbox.counts().received, 5);
    assert_eq!(alice.mailbox.sent(0, 100).unwrap().len(), 5);

    // Now Bob answers in Alice's session.
    assert!(bob.mailbox.has_session(alice.id.did()).unwrap());
    let reply = bob
        .mailbox
        .seal(alice.id.did(), "chat", b"hello Alice", TTL, NOW)
        .unwrap();
    let got = alice
        .mailbox
        .receive(&reply.envelope, &bob.peer(), NOW)
        .unwrap();
    assert_eq!(body(got), b"hello Alice");
}

#[test]
fn a_lost_message_does_not_block_the_next() {
    let mut alice = agent(MemStore::new);
    let mut bob = agent(MemStore::new);
    connect(&mut alice, &mut bob);
    let _lost = alice
        .mailbox
        .seal(bob.id.did(), "chat", b"lost", TTL, NOW)
        .unwrap();
    let next = alice
        .mailbox
        .seal(bob.id.did(), "chat", b"next", TTL, NOW)
        .unwrap();
    let got = bob
        .mailbox
        .receive(&next.envelope, &alice.peer(), NOW)
        .unwrap();
    assert_eq!(body(got), b"next");
}

#[test]
fn both_sides_starting_at_once_end_with_working_sessions() {
    let mut alice = agent(MemStore::new);
    let mut bob = agent(MemStore::new);
    let (pa, hello_a) = alice.mailbox.start_session(bob.id.did(), NOW).unwrap();
    let (pb, hello_b) = bob.mailbox.start_session(alice.id.did(), NOW).unwrap();
    let (_, reply_b) = bob
        .mailbox
        .accept_session(&hello_a, &alice.peer(), NOW)
        .unwrap();
    let (_, reply_a) = alice
        .mailbox
        .accept_session(&hello_b, &bob.peer(), NOW)
        .unwrap();
    alice
        .mailbox
        .finish_session(pa, &reply_b, &bob.peer(), NOW)
        .unwrap();
    bob.mailbox
        .finish_session(pb, &reply_a, &alice.peer(), NOW)
        .unwrap();
    for round in 0..3 {
        let a = alice
            .mailbox
            .seal(bob.id.did(), "chat", b"from alice", TTL, NOW)
            .unwrap();
        let b = bob
            .mailbox
            .seal(alice.id.did(), "chat", b"from bob", TTL, NOW)
            .unwrap();
        let at_bob = bob
            .mailbox
            .receive(&a.envelope, &alice.peer(), NOW)
            .unwrap();
        let at_alice = alice
            .mailbox
            .receive(&b.envelope, &bob.peer(), NOW)
            .unwrap();
        assert_eq!(body(at_bob), b"from alice", "round {round}");
        assert_eq!(body(at_alice), b"from bob", "round {round}");
    }
}

#[test]
fn bad_deliveries_are_refused_with_typed_errors() {
    let mut alice = agent(MemStore::new);
    let mut bob = agent(MemStore::new);
    let mut eve = agent(MemStore::new);
    connect(&mut alice, &mut bob);
    let sealed = alice
        .mailbox
        .seal(bob.id.did(), "chat", b"secret", TTL, NOW)
        .unwrap();

    // Relayed by someone else than its signer.
    let r = bob.mailbox.receive(&sealed.envelope, &eve.peer(), NOW);
    assert!(matches!(r, Err(Error::Refused { .. })), "{r:?}");
    // Delivered to someone it is not addressed to.
    let r = eve.mailbox.receive(&sealed.envelope, &alice.peer(), NOW);
    assert!(matches!(r, Err(Error::Refused { .. })), "{r:?}");
    // A flipped bit anywhere.
    for i in [20, sealed.envelope.len() / 2, sealed.envelope.len() - 70] {
        let mut bad = sealed.envelope.clone();
        bad[i] ^= 1;
        assert!(
            bob.mailbox.receive(&bad, &alice.peer(), NOW).is_err(),
            "bit at {i}"
        );
    }
    // Garbage, empty and oversized input.
    assert!(bob.mailbox.receive(b"", &alice.peer(), NOW).is_err());
    assert!(bob.mailbox.receive(&[7; 300], &alice.peer(), NOW).is_err());
    assert!(
        bob.mailbox
            .receive(&vec![0; 2 << 20], &alice.peer(), NOW)
            .is_err()
    );
    // Expired.
    let late = Timestamp(NOW.0 + 61_000);
    assert!(
        bob.mailbox
            .receive(&sealed.envelope, &alice.peer(), late)
            .is_err()
    );
    // A session Bob does not have (Eve's own session with Bob, replayed as Alice's, fails
    // the sender check first; a message in a session he never saw fails as NoSession).
    connect(&mut eve, &mut alice);
    let to_alice = eve
        .mailbox
        .seal(alice.id.did(), "chat", b"hi", TTL, NOW)
        .unwrap();
    let r = alice.mailbox.receive(&to_alice.envelope, &eve.peer(), NOW);
    assert!(r.is_ok());
    // None of that reached Bob's inbox; the real message still opens.
    assert_eq!(bob.mailbox.counts().received, 0);
    let got = bob
        .mailbox
        .receive(&sealed.envelope, &alice.peer(), NOW)
        .unwrap();
    assert_eq!(body(got), b"secret");

    // Reserved types, oversized bodies, no session.
    assert!(
        alice
            .mailbox
            .seal(bob.id.did(), "session.hello", b"x", TTL, NOW)
            .is_err()
    );
    assert!(matches!(
        alice
            .mailbox
            .seal(bob.id.did(), "chat", &vec![0; 300_000], TTL, NOW),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        bob.mailbox.seal(eve.id.did(), "chat", b"x", TTL, NOW),
        Err(Error::NoSession { .. })
    ));
    // A hello relayed by a third party, and a session to oneself.
    let (_, hello) = alice.mailbox.start_session(bob.id.did(), NOW).unwrap();
    assert!(
        bob.mailbox
            .accept_session(&hello, &eve.peer(), NOW)
            .is_err()
    );
    assert!(alice.mailbox.start_session(alice.id.did(), NOW).is_err());
}

#[test]
fn a_replayed_hello_does_not_take_over_the_session() {
    let mut alice = agent(MemStore::new);
    let mut bob = agent(MemStore::new);
    let (pending, hello) = alice.mailbox.start_session(bob.id.did(), NOW).unwrap();
    let (_, reply) = bob
        .mailbox
        .accept_session(&hello, &alice.peer(), NOW)
        .unwrap();
    alice
        .mailbox
        .finish_session(pending, &reply, &bob.peer(), NOW)
        .unwrap();
    let m = alice
        .mailbox
        .seal(bob.id.did(), "chat", b"one", TTL, NOW)
        .unwrap();
    bob.mailbox
        .receive(&m.envelope, &alice.peer(), NOW)
        .unwrap();
    // The same hello again (a replay): Bob answers, but keeps sending in the confirmed one.
    let later = Timestamp(NOW.0 + 1_000);
    bob.mailbox
        .accept_session(&hello, &alice.peer(), later)
        .unwrap();
    let answer = bob
        .mailbox
        .seal(alice.id.did(), "chat", b"still here", TTL, later)
        .unwrap();
    let got = alice
        .mailbox
        .receive(&answer.envelope, &bob.peer(), later)
        .unwrap();
    assert_eq!(body(got), b"still here");
}

#[test]
fn the_conversation_survives_restarts_of_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let alice_id = Arc::new(Identity::generate(NOW).unwrap());
    let bob_id = Arc::new(Identity::generate(NOW).unwrap());
    let open = |name: &str, id: &Arc<Identity>| {
        let store = DiskStore::open(dir.path().join(name)).unwrap();
        Agent {
            mailbox: Mailbox::open(store.kv("agent").unwrap(), id.clone()).unwrap(),
            id: id.clone(),
        }
    };
    let first;
    {
        let mut alice = open("alice", &alice_id);
        let mut bob = open("bob", &bob_id);
        connect(&mut alice, &mut bob);
        first = alice
            .mailbox
            .seal(bob.id.did(), "chat", b"before", TTL, NOW)
            .unwrap();
        bob.mailbox
            .receive(&first.envelope, &alice.peer(), NOW)
            .unwrap();
    }
    let mut alice = open("alice", &alice_id);
    let mut bob = open("bob", &bob_id);
    // A redelivery after the restart is recognised.
    assert_eq!(
        bob.mailbox
            .receive(&first.envelope, &alice.peer(), NOW)
            .unwrap(),
        Opened::Duplicate(first.id)
    );
    let second = alice
        .mailbox
        .seal(bob.id.did(), "chat", b"after", TTL, NOW)
        .unwrap();
    assert_eq!(
        body(
            bob.mailbox
                .receive(&second.envelope, &alice.peer(), NOW)
                .unwrap()
        ),
        b"after"
    );
    assert_eq!(bob.mailbox.counts().received, 2);
    assert_eq!(alice.mailbox.counts().sent, 2);
    let back = bob
        .mailbox
        .seal(alice.id.did(), "chat", b"reply", TTL, NOW)
        .unwrap();
    assert_eq!(
        body(
            alice
                .mailbox
                .receive(&back.envelope, &bob.peer(), NOW)
                .unwrap()
        ),
        b"reply"
    );
    let inbox = bob.mailbox.received(0, 10).unwrap();
    assert_eq!(inbox.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(inbox[0].body, b"before");
}
