//! Memory sync between peers: convergence of N replicas over a hostile message stream
//! (reordering, duplication, loss repaired by anti-entropy, partitions that heal, access
//! changes), and typed refusals of bad input. Signatures are real Ed25519 (ed25519-dalek's
//! strict verification standing in for the node's `mesh_crypto` verifier).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;

use ed25519_dalek::{Signer as _, SigningKey};
use mesh_memory::sync::{
    Access, AttributeKey, Config, Fact, MAX_MESSAGE_BYTES, Message, Namespace, Output, Payload,
    SignedDelta, Signer, SyncNode, Verifier, Write,
};
use mesh_memory::{Error, Kind, NewEpisode, Peer};
use mesh_types::{Instant, NodeId, Timestamp};
use proptest::prelude::*;

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

fn key(n: u8) -> Key {
    Key(SigningKey::from_bytes(&[n.wrapping_add(1); 32]))
}

fn id(n: u8) -> NodeId {
    key(n).id()
}

type Node = SyncNode<Key, Ed>;

fn node(n: u8) -> Node {
    SyncNode::new(key(n), Ed, Config::default())
}

fn drain(node: &mut Node) -> Vec<(NodeId, Vec<u8>)> {
    std::iter::from_fn(|| node.poll_output())
        .map(|Output::Send { to, bytes }| (to, bytes))
        .collect()
}

fn episode(i: u64, text: &str) -> NewEpisode {
    NewEpisode::new(
        Timestamp(i),
        Peer::new("did:key:z6MkPeer").unwrap(),
        Kind::Observation,
        text,
    )
}

/// A mesh of nodes, each saving to its own store after every step (the persistence
/// contract: before its outputs leave), and the messages in flight between them.
struct Mesh {
    nodes: Vec<Node>,
    stores: Vec<<mesh_store::MemStore as mesh_store::Store>::Kv>,
    ns: Namespace,
    /// (from, to, bytes)
    flight: Vec<(usize, usize, Vec<u8>)>,
    /// Side of each node while partitioned.
    sides: Option<Vec<bool>>,
    now: u64,
}

impl Mesh {
    /// Node 0 owns the namespace and grants every other node write access; the grants are
    /// delivered before the test starts.
    fn new(n: usize) -> Self {
        let mut nodes: Vec<Node> = (0..n as u8).map(node).collect();
        let ns = nodes[0].create("shared").unwrap();
        for (i, node) in nodes.iter_mut().enumerate().skip(1) {
            node.subscribe(ns.clone()).unwrap();
            let _ = i;
        }
        for i in 1..n {
            let peer = nodes[i].id();
            nodes[0].grant(&ns, peer, Access::Write).unwrap();
        }
        let stores = (0..n)
            .map(|_| mesh_store::Store::kv(&mesh_store::MemStore::new(), "sync").unwrap())
            .collect();
        let mut mesh = Self {
            nodes,
            stores,
            ns,
            flight: Vec::new(),
            sides: None,
            now: 0,
        };
        for i in 0..n {
            mesh.collect(i);
        }
        mesh.settle();
        mesh
    }

    /// Node `i` crashes and restarts from its store (what it had not sent is lost).
    fn restart(&mut self, i: usize) {
        let (node, receipt) =
            SyncNode::load(key(i as u8), Ed, Config::default(), &self.stores[i]).unwrap();
        assert!(receipt.rejected.is_empty(), "{:?}", receipt.rejected);
        assert_eq!(node.replica(&self.ns), self.nodes[i].replica(&self.ns));
        self.nodes[i] = node;
    }

    fn index(&self, id: NodeId) -> usize {
        self.nodes.iter().position(|n| n.id() == id).unwrap()
    }

    fn collect(&mut self, from: usize) {
        self.nodes[from].save(&self.stores[from]).unwrap();
        for (to, bytes) in drain(&mut self.nodes[from]) {
            let to = self.index(to);
            self.flight.push((from, to, bytes));
        }
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        self.sides.as_ref().is_some_and(|s| s[a] != s[b])
    }

    fn deliver(&mut self, k: usize, keep: bool) {
        if self.flight.is_empty() {
            return;
        }
        let k = k % self.flight.len();
        let (from, to, bytes) = if keep {
            self.flight[k].clone()
        } else {
            self.flight.remove(k)
        };
        if self.cut(from, to) {
            return; // lost in the partition
        }
        let sender = self.nodes[from].id();
        let receipt = match self.nodes[to].receive(sender, &bytes, Instant::from_millis(self.now)) {
            Ok(r) => r,
            // A digest from a member whose grant the receiver has not learnt yet: refused
            // until anti-entropy with the owner brings the grant.
            Err(Error::NotShared { .. }) => return,
            Err(e) => panic!("{e}"),
        };
        for e in &receipt.rejected {
            // The only refusals an honest mesh sees: deltas of a writer whose access
            // changed, crossing the grant on the way.
            assert!(matches!(e, Error::Stranger { .. }), "{e}");
        }
        self.collect(to);
    }

    fn deliver_all(&mut self) {
        let mut steps = 0;
        while !self.flight.is_empty() {
            self.deliver(0, false);
            steps += 1;
            assert!(steps < 1_000_000, "no quiescence");
        }
    }

    fn tick(&mut self, i: usize) {
        self.now += 10_000;
        let now = Instant::from_millis(self.now);
        self.nodes[i].tick(now);
        self.collect(i);
    }

    /// Anti-entropy rounds on a healed, reliable network until nothing is in flight.
    fn settle(&mut self) {
        self.sides = None;
        self.deliver_all();
        for _ in 0..2 * self.nodes.len() {
            for i in 0..self.nodes.len() {
                self.tick(i);
            }
            self.deliver_all();
        }
    }

    fn assert_converged(&self) {
        let first = self.nodes[0].replica(&self.ns).unwrap();
        let bytes = first.canonical_bytes();
        let vv = self.nodes[0].version_vector(&self.ns).unwrap();
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            let r = n.replica(&self.ns).unwrap();
            assert_eq!(r, first, "replica {i} differs from replica 0");
            assert_eq!(r.canonical_bytes(), bytes, "replica {i}: canonical bytes");
            assert_eq!(
                n.version_vector(&self.ns).unwrap(),
                vv,
                "replica {i}: deltas"
            );
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    AddFact(usize, u8),
    RemoveFact(usize, u8),
    Episode(usize, u8),
    Attribute(usize, u8, Option<u8>),
    Access(usize, bool),
    Deliver(usize),
    Duplicate(usize),
    Drop(usize),
    Tick(usize),
    Partition(Vec<bool>),
    Heal,
    Restart(usize),
}

fn fact(f: u8) -> Fact {
    if f.is_multiple_of(2) {
        Fact::entity(format!("e{}", f % 4), "thing")
    } else {
        Fact::relation(format!("e{}", f % 3), "knows", format!("e{}", f % 4))
    }
}

fn step(n: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..n, 0..8u8).prop_map(|(i, f)| Step::AddFact(i, f)),
        2 => (0..n, 0..8u8).prop_map(|(i, f)| Step::RemoveFact(i, f)),
        2 => (0..n, any::<u8>()).prop_map(|(i, t)| Step::Episode(i, t)),
        3 => (0..n, 0..4u8, proptest::option::of(0..4u8)).prop_map(|(i, k, v)| Step::Attribute(i, k, v)),
        1 => (1..n, any::<bool>()).prop_map(|(i, w)| Step::Access(i, w)),
        8 => any::<usize>().prop_map(Step::Deliver),
        2 => any::<usize>().prop_map(Step::Duplicate),
        2 => any::<usize>().prop_map(Step::Drop),
        2 => (0..n).prop_map(Step::Tick),
        1 => proptest::collection::vec(any::<bool>(), n).prop_map(Step::Partition),
        1 => Just(Step::Heal),
        1 => (0..n).prop_map(Step::Restart),
    ]
}

fn run(n: usize, steps: &[Step]) {
    let mut mesh = Mesh::new(n);
    let ns = mesh.ns.clone();
    for (t, s) in steps.iter().enumerate() {
        let now = Timestamp(1_000 + t as u64);
        let write = |mesh: &mut Mesh, i: usize, w: Write| {
            match mesh.nodes[i].write(&ns, w, now) {
                Ok(()) | Err(Error::Stranger { .. }) => {} // a peer demoted to reading
                Err(e) => panic!("{e}"),
            }
            mesh.collect(i);
        };
        match s {
            Step::AddFact(i, f) => write(&mut mesh, *i, Write::AddFact(fact(*f))),
            Step::RemoveFact(i, f) => write(&mut mesh, *i, Write::RemoveFact(fact(*f))),
            Step::Episode(i, x) => write(
                &mut mesh,
                *i,
                Write::AppendEpisode(episode(u64::from(*x), &format!("seen {x}"))),
            ),
            Step::Attribute(i, k, v) => write(
                &mut mesh,
                *i,
                Write::SetAttribute {
                    key: AttributeKey::new(format!("e{k}"), "colour"),
                    value: v.map(|v| format!("c{v}")),
                },
            ),
            Step::Access(i, w) => {
                let peer = mesh.nodes[*i].id();
                let access = if *w { Access::Write } else { Access::Read };
                mesh.nodes[0].grant(&ns, peer, access).unwrap();
                mesh.collect(0);
            }
            Step::Deliver(k) => mesh.deliver(*k, false),
            Step::Duplicate(k) => mesh.deliver(*k, true),
            Step::Drop(k) => {
                if !mesh.flight.is_empty() {
                    let k = k % mesh.flight.len();
                    mesh.flight.remove(k);
                }
            }
            Step::Tick(i) => mesh.tick(*i),
            Step::Partition(sides) => mesh.sides = Some(sides.clone()),
            Step::Heal => mesh.sides = None,
            Step::Restart(i) => mesh.restart(*i),
        }
    }
    mesh.settle();
    mesh.assert_converged();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// 3 to 5 replicas writing facts, episodes and attributes, with the owner changing
    /// writers' access and replicas restarting from their stores, over a network that
    /// reorders, duplicates, drops and partitions:
    /// once the partition heals and anti-entropy runs, all replicas hold the same state
    /// (compared by canonical encoding) and the same deltas.
    #[test]
    fn replicas_converge(
        (n, steps) in (3usize..=5).prop_flat_map(|n| (Just(n), proptest::collection::vec(step(n), 1..120)))
    ) {
        run(n, &steps);
    }

    /// Arbitrary bytes never panic the decoder or the node; they are refused with a typed
    /// error.
    #[test]
    fn arbitrary_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(&bytes);
        let _ = SignedDelta::decode(&bytes);
        let mut n = node(0);
        let ns = n.create("shared").unwrap();
        let _ = n.receive(id(1), &bytes, Instant::ZERO);
        let _ = n.import(&ns, &bytes);
    }

    /// Valid messages with one byte changed, or cut short, never panic and never change
    /// the state unless they still verify.
    #[test]
    fn mutated_messages_are_refused(pos in any::<usize>(), xor in 1..=255u8, cut in any::<bool>()) {
        let mut a = node(0);
        let ns = a.create("shared").unwrap();
        a.grant(&ns, id(1), Access::Write).unwrap();
        a.write(&ns, Write::AddFact(Fact::entity("alice", "person")), Timestamp(1)).unwrap();
        a.write(&ns, Write::AppendEpisode(episode(1, "hello")), Timestamp(1)).unwrap();
        a.write(&ns, Write::SetAttribute { key: AttributeKey::new("alice", "age"), value: Some("30".into()) }, Timestamp(1)).unwrap();
        let msgs: Vec<Vec<u8>> = drain(&mut a).into_iter().map(|(_, b)| b).collect();
        let mut b = node(1);
        b.subscribe(ns.clone()).unwrap();
        let mut reference = node(1);
        reference.subscribe(ns.clone()).unwrap();
        for m in &msgs {
            let mut m2 = m.clone();
            let p = pos % m2.len();
            if cut { m2.truncate(p); } else { m2[p] ^= xor; }
            match b.receive(id(0), &m2, Instant::ZERO) {
                Ok(r) => prop_assert_eq!(r.applied, 0, "a changed delta verified"),
                Err(e) => prop_assert!(matches!(e, Error::Malformed { .. } | Error::TooLong { .. }), "{}", e),
            }
        }
        prop_assert_eq!(b.replica(&ns), reference.replica(&ns));
    }
}

/// Some fixed hostile schedules, as regression cases.
#[test]
fn fixed_schedules_converge() {
    use Step::*;
    // Everything lost, then repaired by anti-entropy alone.
    run(
        3,
        &[
            AddFact(0, 0),
            AddFact(1, 0),
            Episode(2, 1),
            Drop(0),
            Drop(0),
            Drop(0),
            Drop(0),
            Drop(0),
            Drop(0),
        ],
    );
    // Concurrent add and remove across a partition: the add wins.
    run(
        4,
        &[
            AddFact(0, 2),
            Deliver(0),
            Deliver(0),
            Deliver(0),
            Partition(vec![true, true, false, false]),
            RemoveFact(0, 2),
            AddFact(2, 2),
            Tick(0),
            Tick(2),
            Deliver(0),
            Deliver(0),
            Heal,
        ],
    );
    // A writer demoted while its deltas are in flight.
    run(
        3,
        &[
            AddFact(1, 1),
            Attribute(1, 0, Some(1)),
            Access(1, false),
            Duplicate(3),
            Deliver(2),
            Access(1, true),
            Episode(1, 2),
        ],
    );
}

#[test]
fn add_wins_across_a_partition() {
    let mut mesh = Mesh::new(3);
    let ns = mesh.ns.clone();
    let f = Fact::entity("acme", "org");
    mesh.nodes[0]
        .write(&ns, Write::AddFact(f.clone()), Timestamp(1))
        .unwrap();
    mesh.collect(0);
    mesh.deliver_all();
    mesh.sides = Some(vec![true, false, false]);
    mesh.nodes[1]
        .write(&ns, Write::RemoveFact(f.clone()), Timestamp(2))
        .unwrap();
    mesh.collect(1);
    mesh.nodes[0]
        .write(&ns, Write::AddFact(f.clone()), Timestamp(3))
        .unwrap();
    mesh.collect(0);
    mesh.deliver_all(); // crosses nothing
    assert!(!mesh.nodes[1].replica(&ns).unwrap().facts().contains(&f));
    mesh.settle();
    mesh.assert_converged();
    assert!(mesh.nodes[2].replica(&ns).unwrap().facts().contains(&f));
}

#[test]
fn lww_attributes_and_episodes_converge() {
    let mut mesh = Mesh::new(3);
    let ns = mesh.ns.clone();
    for (i, t) in [(1usize, 10u64), (2, 10), (0, 5)] {
        mesh.nodes[i]
            .write(
                &ns,
                Write::SetAttribute {
                    key: AttributeKey::new("alice", "city"),
                    value: Some(format!("city{i}")),
                },
                Timestamp(t),
            )
            .unwrap();
        mesh.nodes[i]
            .write(
                &ns,
                Write::AppendEpisode(episode(t, "met alice")),
                Timestamp(t),
            )
            .unwrap();
        mesh.collect(i);
    }
    mesh.flight.reverse();
    mesh.settle();
    mesh.assert_converged();
    let r = mesh.nodes[0].replica(&ns).unwrap();
    // Time 10 twice: the larger writer id wins, on every replica.
    let winner = if id(1) > id(2) { "city1" } else { "city2" };
    assert_eq!(r.attribute("alice", "city"), Some(winner));
    assert_eq!(r.episodes().len(), 3);
}

fn deltas_of(node: &mut Node) -> Vec<Vec<u8>> {
    drain(node).into_iter().map(|(_, b)| b).collect()
}

#[test]
fn strangers_bad_signatures_and_unshared_namespaces_are_refused() {
    let mut owner = node(0);
    let ns = owner.create("shared").unwrap();
    owner.grant(&ns, id(1), Access::Write).unwrap();
    let grant = deltas_of(&mut owner);
    let mut peer = node(1);
    peer.subscribe(ns.clone()).unwrap();
    for m in &grant {
        assert_eq!(peer.receive(id(0), m, Instant::ZERO).unwrap().applied, 1);
    }

    // A stranger's delta, properly signed by the stranger.
    let stranger = key(9);
    let mut scratch = node(9);
    scratch.subscribe(ns.clone()).unwrap();
    let d = SignedDelta::sign(
        &ns,
        1,
        Payload::Facts(
            mesh_memory::sync::OrSet::new().add_delta(stranger.id(), Fact::entity("x", "y")),
        ),
        &stranger,
    )
    .unwrap();
    let msg = Message::Deltas(vec![d.clone()]).encode();
    let r = owner.receive(stranger.id(), &msg, Instant::ZERO).unwrap();
    assert_eq!(r.applied, 0);
    assert!(
        matches!(&r.rejected[..], [Error::Stranger { writer, .. }] if *writer == stranger.id())
    );
    assert_eq!(
        mesh_types::HasKind::kind(&r.rejected[0]),
        mesh_types::ErrorKind::Unauthorized
    );

    // A stranger's delta claiming to be the owner's: the signature does not verify.
    let forged = SignedDelta::sign(
        &ns,
        5,
        Payload::Facts(mesh_memory::sync::OrSet::new().add_delta_at(
            mesh_memory::sync::Dot {
                writer: id(0),
                counter: 5,
            },
            Fact::entity("x", "y"),
        )),
        &Impersonate(key(9), id(0)),
    )
    .unwrap();
    let r = peer
        .receive(
            stranger.id(),
            &Message::Deltas(vec![forged]).encode(),
            Instant::ZERO,
        )
        .unwrap();
    assert!(matches!(
        &r.rejected[..],
        [Error::BadSignature { seq: 5, .. }]
    ));

    // A granted writer may not grant.
    let g = SignedDelta::sign(
        &ns,
        1,
        Payload::Grant(mesh_memory::sync::Grant {
            peer: stranger.id(),
            access: Access::Write,
            writes_until: 0,
        }),
        &key(1),
    )
    .unwrap();
    let r = owner
        .receive(id(1), &Message::Deltas(vec![g]).encode(), Instant::ZERO)
        .unwrap();
    assert!(matches!(&r.rejected[..], [Error::NotOwner { .. }]));

    // A namespace this node does not replicate.
    let other = Namespace::new(id(0), "private").unwrap();
    let d = SignedDelta::sign(
        &other,
        1,
        Payload::Facts(mesh_memory::sync::OrSet::new().add_delta(id(0), Fact::entity("x", "y"))),
        &key(0),
    )
    .unwrap();
    let r = peer
        .receive(id(0), &Message::Deltas(vec![d]).encode(), Instant::ZERO)
        .unwrap();
    assert!(matches!(&r.rejected[..], [Error::NotShared { .. }]));

    // A digest from a peer the owner shares nothing with gets no answer.
    let digest = Message::Digest {
        namespace: ns.clone(),
        reply: false,
        have: mesh_memory::sync::CausalContext::new(),
    }
    .encode();
    assert!(matches!(
        owner.receive(stranger.id(), &digest, Instant::ZERO),
        Err(Error::NotShared { .. })
    ));
    assert!(owner.poll_output().is_none());
    // The granted peer's digest gets the deltas.
    owner.receive(id(1), &digest, Instant::ZERO).unwrap();
    assert!(owner.poll_output().is_some());
}

/// Signs with one key while claiming another's id.
struct Impersonate(Key, NodeId);

impl Signer for Impersonate {
    fn id(&self) -> NodeId {
        self.1
    }
    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message)
    }
}

#[test]
fn malformed_and_oversized_input_is_refused() {
    let mut owner = node(0);
    let ns = owner.create("shared").unwrap();
    owner.grant(&ns, id(1), Access::Read).unwrap();
    owner
        .write(
            &ns,
            Write::AddFact(Fact::entity("alice", "person")),
            Timestamp(1),
        )
        .unwrap();
    let msgs = deltas_of(&mut owner);
    let mut peer = node(1);
    peer.subscribe(ns.clone()).unwrap();

    // Every strict prefix of a valid message is malformed.
    for m in &msgs {
        for len in 0..m.len() {
            let e = peer.receive(id(0), &m[..len], Instant::ZERO).unwrap_err();
            assert!(matches!(e, Error::Malformed { .. }), "{len}: {e}");
        }
        // A trailing byte.
        let mut long = m.clone();
        long.push(0);
        assert!(matches!(
            peer.receive(id(0), &long, Instant::ZERO),
            Err(Error::Malformed { .. })
        ));
    }
    // Unknown version and kind.
    assert!(matches!(
        Message::decode(&[2, 1, 0]),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        Message::decode(&[1, 9]),
        Err(Error::Malformed { .. })
    ));
    // A message over the bound, refused before decoding.
    let huge = vec![1u8; MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        peer.receive(id(0), &huge, Instant::ZERO),
        Err(Error::TooLong { .. })
    ));
    // A count or a length over its bound.
    assert!(matches!(
        Message::decode(&[1, 1, 0xff, 0x0f]),
        Err(Error::TooLong { .. })
    ));
    let mut m = vec![1, 1, 1];
    mesh_types::wire::put_varint(&mut m, 10 * 1024 * 1024);
    assert!(matches!(Message::decode(&m), Err(Error::TooLong { .. })));
    // Oversized local input.
    let e = owner
        .write(
            &ns,
            Write::AppendEpisode(episode(1, &"x".repeat(70_000))),
            Timestamp(1),
        )
        .unwrap_err();
    assert!(matches!(e, Error::TooLong { .. }), "{e}");
    assert!(matches!(
        owner.write(
            &ns,
            Write::AddFact(Fact::entity("a\nb", "person")),
            Timestamp(1)
        ),
        Err(Error::BadName { .. })
    ));
    // A reader may not write.
    for m in &msgs {
        peer.receive(id(0), m, Instant::ZERO).unwrap();
    }
    assert!(matches!(
        peer.write(&ns, Write::AddFact(Fact::entity("b", "c")), Timestamp(1)),
        Err(Error::Stranger { .. })
    ));
    // Nothing bad got in.
    assert_eq!(
        peer.replica(&ns).unwrap().canonical_bytes(),
        owner.replica(&ns).unwrap().canonical_bytes()
    );
}

#[test]
fn replays_are_idempotent_and_equivocation_is_reported() {
    let mut owner = node(0);
    let ns = owner.create("shared").unwrap();
    owner.grant(&ns, id(1), Access::Read).unwrap();
    owner
        .write(&ns, Write::AddFact(Fact::entity("a", "b")), Timestamp(1))
        .unwrap();
    let msgs = deltas_of(&mut owner);
    let mut peer = node(1);
    peer.subscribe(ns.clone()).unwrap();
    let all = Message::Deltas(
        msgs.iter()
            .flat_map(|m| match Message::decode(m).unwrap() {
                Message::Deltas(ds) => ds,
                Message::Digest { .. } => vec![],
            })
            .collect(),
    )
    .encode();
    let r = peer.receive(id(0), &all, Instant::ZERO).unwrap();
    assert_eq!((r.applied, r.duplicates), (2, 0));
    let before = peer.replica(&ns).unwrap().clone();
    for _ in 0..3 {
        let r = peer.receive(id(0), &all, Instant::ZERO).unwrap();
        assert_eq!((r.applied, r.duplicates), (0, 2));
    }
    assert_eq!(peer.replica(&ns).unwrap(), &before);

    // The owner signs a different delta under number 1.
    let other = SignedDelta::sign(
        &ns,
        1,
        Payload::Facts(mesh_memory::sync::OrSet::new().add_delta(id(0), Fact::entity("z", "b"))),
        &key(0),
    )
    .unwrap();
    let r = peer
        .receive(id(0), &Message::Deltas(vec![other]).encode(), Instant::ZERO)
        .unwrap();
    assert!(matches!(
        &r.rejected[..],
        [Error::Equivocation { seq: 1, .. }]
    ));
    assert_eq!(peer.replica(&ns).unwrap(), &before);
}

#[test]
fn revoking_write_access_withdraws_later_deltas_everywhere() {
    let mut mesh = Mesh::new(3);
    let ns = mesh.ns.clone();
    // Writer 1 writes twice; only the first reaches the owner before it revokes.
    mesh.nodes[1]
        .write(&ns, Write::AddFact(Fact::entity("a", "t")), Timestamp(1))
        .unwrap();
    mesh.collect(1);
    mesh.deliver_all();
    mesh.nodes[1]
        .write(&ns, Write::AddFact(Fact::entity("b", "t")), Timestamp(2))
        .unwrap();
    mesh.collect(1);
    // Deliver 1 -> 2 only.
    let to0: Vec<_> = mesh.flight.iter().filter(|m| m.1 == 0).cloned().collect();
    mesh.flight.retain(|m| m.1 != 0);
    mesh.deliver_all();
    assert!(
        mesh.nodes[2]
            .replica(&ns)
            .unwrap()
            .facts()
            .contains(&Fact::entity("b", "t"))
    );
    let peer = mesh.nodes[1].id();
    mesh.nodes[0].grant(&ns, peer, Access::Read).unwrap();
    mesh.collect(0);
    mesh.flight.extend(to0); // the late delta arrives after the revocation
    mesh.settle();
    mesh.assert_converged();
    let r = mesh.nodes[2].replica(&ns).unwrap();
    assert!(r.facts().contains(&Fact::entity("a", "t")));
    assert!(!r.facts().contains(&Fact::entity("b", "t")));
    assert_eq!(r.access(&peer), Access::Read);
    assert!(mesh.nodes[2].stats().withdrawn >= 1);
}

#[test]
fn export_and_import_restore_a_replica() {
    let mut mesh = Mesh::new(3);
    let ns = mesh.ns.clone();
    for i in 0..3 {
        mesh.nodes[i]
            .write(
                &ns,
                Write::AddFact(Fact::relation("a", "knows", format!("p{i}"))),
                Timestamp(1),
            )
            .unwrap();
        mesh.collect(i);
    }
    mesh.settle();
    let bytes = mesh.nodes[1].export(&ns).unwrap();
    let mut restored = node(1);
    restored.subscribe(ns.clone()).unwrap();
    let r = restored.import(&ns, &bytes).unwrap();
    assert!(r.rejected.is_empty());
    assert_eq!(restored.replica(&ns), mesh.nodes[1].replica(&ns));
    // It continues numbering after its own restored deltas.
    restored
        .write(&ns, Write::AddFact(Fact::entity("n", "t")), Timestamp(9))
        .unwrap();
    let vv = restored.version_vector(&ns).unwrap();
    assert_eq!(vv.max(&id(1)), 2);
    // A damaged export: refused, nothing unverified gets in.
    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let mut other = node(2);
    other.subscribe(ns.clone()).unwrap();
    let r = other.import(&ns, &bad).unwrap();
    assert_eq!(r.rejected.len(), 1);
    assert!(matches!(r.rejected[0], Error::BadSignature { .. }));
}

#[test]
fn the_outbox_is_bounded() {
    let mut owner = SyncNode::new(
        key(0),
        Ed,
        Config {
            max_outbox: 4,
            ..Config::default()
        },
    );
    let ns = owner.create("shared").unwrap();
    owner.grant(&ns, id(1), Access::Read).unwrap();
    for i in 0..10 {
        owner
            .write(
                &ns,
                Write::AddFact(Fact::entity(format!("e{i}"), "t")),
                Timestamp(1),
            )
            .unwrap();
    }
    assert_eq!(drain(&mut owner).len(), 4);
    assert_eq!(owner.stats().dropped_sends, 7);
    // Anti-entropy repairs what was dropped.
    let mut peer = node(1);
    peer.subscribe(ns.clone()).unwrap();
    let mut q: VecDeque<(usize, Vec<u8>)> = VecDeque::new();
    peer.tick(Instant::from_millis(1));
    for (_, b) in drain(&mut peer) {
        q.push_back((1, b));
    }
    while let Some((from, b)) = q.pop_front() {
        if from == 1 {
            owner.receive(id(1), &b, Instant::ZERO).unwrap();
            for (_, b) in drain(&mut owner) {
                q.push_back((0, b));
            }
        } else {
            peer.receive(id(0), &b, Instant::ZERO).unwrap();
            for (_, b) in drain(&mut peer) {
                q.push_back((1, b));
            }
        }
    }
    assert_eq!(peer.replica(&ns).unwrap().facts().len(), 10);
}

#[test]
fn namespaces_are_bounded() {
    let small = Config {
        max_deltas_per_namespace: 3,
        max_bytes_per_namespace: 64 * 1024,
        ..Config::default()
    };
    let mut owner = SyncNode::new(key(0), Ed, Config::default());
    let ns = owner.create("shared").unwrap();
    owner.grant(&ns, id(1), Access::Read).unwrap();
    for i in 0..4 {
        owner
            .write(
                &ns,
                Write::AddFact(Fact::entity(format!("e{i}"), "t")),
                Timestamp(1),
            )
            .unwrap();
    }
    let mut peer = SyncNode::new(key(1), Ed, small.clone());
    peer.subscribe(ns.clone()).unwrap();
    let mut rejected = Vec::new();
    for m in deltas_of(&mut owner) {
        rejected.extend(peer.receive(id(0), &m, Instant::ZERO).unwrap().rejected);
    }
    assert_eq!(rejected.len(), 2);
    assert!(
        rejected
            .iter()
            .all(|e| matches!(e, Error::BoundExceeded { .. }))
    );
    // By bytes: an episode of 40 KiB fits once, not twice.
    let mut writer = SyncNode::new(key(0), Ed, small);
    let ns = writer.create("big").unwrap();
    let big = Write::AppendEpisode(episode(1, &"word ".repeat(8_000)));
    writer.write(&ns, big.clone(), Timestamp(1)).unwrap();
    assert!(matches!(
        writer.write(&ns, big, Timestamp(2)),
        Err(Error::BoundExceeded { .. })
    ));
}

/// A writer demoted and promoted again while one replica only hears of the promotion: its
/// new facts and episodes must not reuse the dots and numbers of those the demotion
/// withdrew at home (both are the delta's own `(writer, seq)`, never reused).
#[test]
fn a_regrant_never_reuses_withdrawn_dots() {
    let mut mesh = Mesh::new(3);
    let ns = mesh.ns.clone();
    let add = |mesh: &mut Mesh, i: usize, name: &str| {
        let writes = [
            Write::AddFact(Fact::entity(name, "t")),
            Write::AppendEpisode(episode(1, name)),
        ];
        for w in writes {
            mesh.nodes[i].write(&ns, w, Timestamp(1)).unwrap();
        }
        mesh.collect(i);
    };
    add(&mut mesh, 1, "a");
    mesh.deliver_all();
    add(&mut mesh, 1, "b");
    mesh.flight.retain(|m| m.1 == 2); // "b" reaches replica 2 only
    mesh.deliver_all();
    let writer = mesh.nodes[1].id();
    mesh.nodes[0].grant(&ns, writer, Access::Read).unwrap();
    mesh.collect(0);
    mesh.flight.retain(|m| m.1 == 1); // the demotion reaches the writer only
    mesh.deliver_all();
    assert!(
        !mesh.nodes[1]
            .replica(&ns)
            .unwrap()
            .facts()
            .contains(&Fact::entity("b", "t"))
    );
    mesh.nodes[0].grant(&ns, writer, Access::Write).unwrap();
    mesh.collect(0);
    mesh.deliver_all();
    add(&mut mesh, 1, "c");
    mesh.settle();
    mesh.assert_converged();
    let facts = mesh.nodes[0].replica(&ns).unwrap().facts();
    for name in ["a", "b", "c"] {
        assert!(facts.contains(&Fact::entity(name, "t")), "{name}");
    }
    let episodes = mesh.nodes[0].replica(&ns).unwrap().episodes();
    let texts: Vec<&str> = episodes
        .entries()
        .values()
        .map(|e| e.text.as_str())
        .collect();
    assert_eq!(texts, ["a", "b", "c"]);
}

/// Saved through `mesh_store` after every step, a replica reloads to the same state (the
/// deltas re-verified), keeps numbering its own deltas where it stopped, forgets withdrawn
/// deltas and dropped namespaces, and refuses damaged records.
#[test]
fn replicas_persist_through_mesh_store() {
    use mesh_store::{DiskStore, Kv, Store};

    // On disk: saved, everything dropped, reopened, loaded.
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let disk = DiskStore::open(dir.path()).unwrap();
        let kv = disk.kv("sync").unwrap();
        let mut owner = node(0);
        let ns = owner.create("shared").unwrap();
        owner.grant(&ns, id(1), Access::Write).unwrap();
        owner
            .write(&ns, Write::AddFact(Fact::entity("a", "t")), Timestamp(1))
            .unwrap();
        assert_eq!(owner.save(&kv).unwrap(), 2);
        assert_eq!(owner.save(&kv).unwrap(), 0); // nothing new
        owner.replica(&ns).unwrap().clone()
    };
    let disk = DiskStore::open(dir.path()).unwrap();
    let (owner, receipt) =
        SyncNode::load(key(0), Ed, Config::default(), &disk.kv("sync").unwrap()).unwrap();
    assert_eq!((receipt.applied, receipt.rejected.len()), (2, 0));
    let ns = Namespace::new(id(0), "shared").unwrap();
    assert_eq!(owner.replica(&ns), Some(&expected));

    // In a mesh saving after every step (to in-memory stores).
    let mut mesh = Mesh::new(3);
    let ns = mesh.ns.clone();
    let other = mesh.nodes[1].create("mine").unwrap();
    for i in 0..3 {
        let writes = [
            Write::AddFact(Fact::entity(format!("e{i}"), "t")),
            Write::AppendEpisode(episode(i as u64, "hello")),
            Write::SetAttribute {
                key: AttributeKey::new("e0", "owner"),
                value: Some(format!("n{i}")),
            },
        ];
        for w in writes {
            mesh.nodes[i]
                .write(&ns, w, Timestamp(10 + i as u64))
                .unwrap();
        }
        mesh.collect(i);
    }
    mesh.nodes[1]
        .write(&other, Write::AddFact(Fact::entity("x", "t")), Timestamp(1))
        .unwrap();
    mesh.collect(1);
    mesh.settle();
    let kv = mesh.stores[1].clone();

    let (mut back, receipt) = SyncNode::load(key(1), Ed, Config::default(), &kv).unwrap();
    assert!(receipt.rejected.is_empty());
    assert_eq!(back.replica(&ns), mesh.nodes[1].replica(&ns));
    assert_eq!(back.version_vector(&ns), mesh.nodes[1].version_vector(&ns));
    assert_eq!(back.replica(&other), mesh.nodes[1].replica(&other));
    let before = back.version_vector(&ns).unwrap().max(&id(1));
    back.write(&ns, Write::AddFact(Fact::entity("n", "t")), Timestamp(99))
        .unwrap();
    assert_eq!(back.version_vector(&ns).unwrap().max(&id(1)), before + 1);

    drop(back); // not saved: the store still holds node 1 as it was

    // A revocation withdraws node 1's latest delta (lost on its way to the others): the
    // store forgets it too.
    let late = Fact::entity("late", "t");
    mesh.nodes[1]
        .write(&ns, Write::AddFact(late.clone()), Timestamp(50))
        .unwrap();
    mesh.flight.clear();
    drain(&mut mesh.nodes[1]);
    mesh.nodes[1].save(&kv).unwrap();
    let writer = mesh.nodes[1].id();
    mesh.nodes[0].grant(&ns, writer, Access::Read).unwrap();
    mesh.collect(0);
    mesh.deliver_all();
    assert!(!mesh.nodes[1].replica(&ns).unwrap().facts().contains(&late));
    mesh.nodes[1].save(&kv).unwrap();
    let (again, receipt) = SyncNode::load(key(1), Ed, Config::default(), &kv).unwrap();
    assert!(receipt.rejected.is_empty());
    assert_eq!(again.replica(&ns), mesh.nodes[1].replica(&ns));
    assert_eq!(again.version_vector(&ns), mesh.nodes[1].version_vector(&ns));

    // A dropped namespace goes from the store.
    mesh.nodes[1].unsubscribe(&other);
    mesh.nodes[1].save(&kv).unwrap();
    let (again, _) = SyncNode::load(key(1), Ed, Config::default(), &kv).unwrap();
    assert!(again.replica(&other).is_none());
    assert_eq!(again.replica(&ns), mesh.nodes[1].replica(&ns));

    // Damage at rest: a delta's signature, then a record that does not decode.
    let prefix_d = b"D".to_vec();
    let records = kv.scan_prefix(&prefix_d, 1_000).unwrap();
    let (k, mut v) = records[records.len() - 1].clone();
    let last = v.len() - 1;
    v[last] ^= 1;
    kv.put(&k, &v).unwrap();
    let (_, receipt) = SyncNode::load(key(1), Ed, Config::default(), &kv).unwrap();
    assert!(matches!(
        &receipt.rejected[..],
        [Error::BadSignature { .. }]
    ));
    kv.put(&k, b"\x01garbage").unwrap();
    assert!(matches!(
        SyncNode::load(key(1), Ed, Config::default(), &kv),
        Err(Error::Corrupt { .. })
    ));
}
