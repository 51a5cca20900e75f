//! The consensus driver over the in-memory transport: hostile bytes are counted and survived,
//! remote clients get their outcomes, and four validators commit together.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mesh_consensus::{Keys, Request, ValidatorSet};
use mesh_crypto::bls::BlsSecretKey;
use mesh_crypto::ed25519::SigningKey;
use mesh_driver::Error;
use mesh_driver::consensus::{
    self, Config, Driver, Handle, Join, Outcome, PROTOCOL, RELAY_PROTOCOL, SUBMIT_PROTOCOL,
};
use mesh_transport::memory::{Faults, MemoryNetwork};
use mesh_types::NodeId;

fn keys(i: u8) -> Keys {
    Keys {
        ed25519: SigningKey::from_seed(&[i; 32]),
        bls: BlsSecretKey::from_ikm(&[i; 32]).unwrap(),
    }
}

fn validators(n: u8) -> ValidatorSet {
    let members = (1..=n).map(|i| keys(i).member(1)).collect();
    ValidatorSet::new(0, members).unwrap()
}

fn config(dir: &tempfile::TempDir, set: &ValidatorSet, i: u8) -> Config {
    let mut c = Config::new(dir.path().join(format!("v{i}")), set.clone(), keys(i));
    c.consensus.request_timeout = Duration::from_secs(1);
    c.consensus.retransmit_interval = Duration::from_millis(100);
    c.transport.request_timeout = Duration::from_secs(5);
    c.redial_interval = Duration::from_millis(200);
    c.relay_after = Duration::from_millis(500);
    c
}

fn start_in(net: &MemoryNetwork, config: Config) -> (Handle, Join) {
    let peer = consensus::peer_id(&NodeId(config.keys.ed25519.verifying_key().to_bytes())).unwrap();
    let (transport, events) = net.add_node(peer, config.transport_config());
    Driver::start_with(config, transport, events).unwrap()
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bytes_from_a_peer_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let set = validators(1);
    let net = MemoryNetwork::new(1, Faults::default());
    let (handle, join) = start_in(&net, config(&dir, &set, 1));
    let validator = handle.peer_id();

    // A stranger with an Ed25519 key: not a validator.
    let stranger_key = SigningKey::from_seed(&[77; 32]);
    let stranger_node = NodeId(stranger_key.verifying_key().to_bytes());
    let stranger_peer = consensus::peer_id(&stranger_node).unwrap();
    let mut cfg = mesh_transport::Config::default();
    cfg.request_timeout = Duration::from_secs(10);
    let (stranger, _events) = net.add_node(stranger_peer, cfg);

    // Garbage on the consensus protocol is acknowledged (the ack says nothing) and counted.
    for garbage in [&b"\xff\x00garbage"[..], &[], &[3, 0xff]] {
        let ack = stranger
            .request(validator, PROTOCOL, garbage.to_vec())
            .await
            .unwrap();
        assert!(ack.is_empty());
    }
    // Garbage submissions and relays from a non-validator are refused with a reason.
    let refused = stranger
        .request(validator, SUBMIT_PROTOCOL, b"not a request".to_vec())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("submission"), "{refused}");
    let refused = stranger
        .request(validator, RELAY_PROTOCOL, vec![1, 0])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("validators"), "{refused}");

    let mut status = handle.watch_status();
    let s = within(
        "the refusals to be counted",
        status.wait_for(|s| s.driver.refused_messages == 3 && s.driver.refused_submissions == 2),
    )
    .await
    .unwrap()
    .clone();
    assert_eq!(s.consensus.malformed, 3);
    assert_eq!(s.executed, 0);

    // The driver is unharmed: its own client commits ...
    let mut blocks = handle.committed();
    let c = within("a local commit", handle.submit(b"first".to_vec()))
        .await
        .unwrap();
    assert_eq!((c.seq, c.view, c.client), (1, 0, handle.node_id()));
    let b = within("the committed block", blocks.recv()).await.unwrap();
    assert_eq!(b.block.seq(), 1);
    assert_eq!(&b.block.batch.requests()[0].payload[..], b"first");
    assert_eq!(&*b.executed, &[0]);

    // ... and so does a remote client, ordered under its own peer's node id whatever it
    // claims, exactly once.
    let request = Request::new(NodeId([9; 32]), 5, b"remote".to_vec());
    let outcome = within(
        "a remote commit",
        consensus::submit_to(&stranger, validator, &request),
    )
    .await
    .unwrap();
    let Outcome::Committed(c) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!((c.client, c.id, c.seq), (stranger_node, 5, 2));
    let again = within(
        "a duplicate",
        consensus::submit_to(&stranger, validator, &request),
    )
    .await
    .unwrap();
    assert_eq!(again, Outcome::Duplicate);
    // A signed request in a connection-authenticated mesh is refused, with the reason.
    let signed = Request::signed(&stranger_key, 6, b"signed".to_vec());
    let err = consensus::submit_to(&stranger, validator, &signed)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("opaque"), "{err}");

    handle.shutdown();
    within("the driver to stop", join).await.unwrap();
    assert!(matches!(
        handle.submit(b"late".to_vec()).await,
        Err(Error::Stopped)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_ids_keep_increasing_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let set = validators(1);
    let net = MemoryNetwork::new(2, Faults::default());
    let (handle, join) = start_in(&net, config(&dir, &set, 1));
    let first = within("a commit", handle.submit(b"a".to_vec()))
        .await
        .unwrap();
    handle.shutdown();
    within("the driver to stop", join).await.unwrap();

    // Same data directory: the ledger and the id counter survive; the new id is fresh, so
    // the request executes instead of being taken for a duplicate.
    let net = MemoryNetwork::new(3, Faults::default());
    let (handle, join) = start_in(&net, config(&dir, &set, 1));
    assert_eq!(handle.status().executed, 1);
    let second = within("a commit after the restart", handle.submit(b"b".to_vec()))
        .await
        .unwrap();
    assert!(second.id > first.id, "{second:?} after {first:?}");
    assert_eq!(second.seq, 2);
    drop(handle);
    // Dropping every handle stops the driver too.
    within("the driver to stop", join).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_in_memory_commit_and_survive_a_silent_primary() {
    let dir = tempfile::tempdir().unwrap();
    let set = validators(4);
    let net = MemoryNetwork::new(4, Faults::default());
    let mut nodes: Vec<(Handle, Join)> = (1..=4)
        .map(|i| start_in(&net, config(&dir, &set, i)))
        .collect();
    let submitter = nodes[1].0.clone();
    let tasks: Vec<_> = (0..40u32)
        .map(|k| {
            let h = submitter.clone();
            tokio::spawn(async move { h.submit(k.to_le_bytes().to_vec()).await })
        })
        .collect();
    let mut top = 0;
    for t in tasks {
        let c = within("a commit", t).await.unwrap().unwrap();
        assert_eq!(c.view, 0);
        top = top.max(c.seq);
    }
    for (h, _) in &nodes {
        let mut s = h.watch_status();
        within(
            "every validator to execute",
            s.wait_for(|s| s.executed >= top),
        )
        .await
        .unwrap();
    }

    // The primary of view 0 stops: requests submitted at one validator are relayed, the
    // others suspect the primary too, and the view changes.
    let (primary, join) = nodes.remove(0);
    primary.shutdown();
    within("the primary to stop", join).await.unwrap();
    let c = within(
        "a commit in a later view",
        submitter.submit(b"after".to_vec()),
    )
    .await
    .unwrap();
    assert!(c.view >= 1, "{c:?}");
    assert!(submitter.status().driver.relayed > 0);
    for (h, join) in nodes {
        h.shutdown();
        within("a driver to stop", join).await.unwrap();
    }
}

/// Validators admit a fifth node through committed reconfiguration: it starts as a learner
/// from the genesis set, follows the ledger, and once admitted its vote is needed (with one
/// of the original four stopped, five members need four votes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_admit_a_learner_whose_vote_then_counts() {
    use mesh_consensus::admission::{MIN_MEMORY_KIB, Puzzle};
    use mesh_consensus::reconfig::{Admission, did_key};
    use mesh_consensus::{Change, StoreStorage, verify_storage};

    let dir = tempfile::tempdir().unwrap();
    let set = validators(4);
    let puzzle = Puzzle {
        epoch: 0,
        difficulty: 2,
        memory_kib: MIN_MEMORY_KIB,
        passes: 1,
    };
    let cfg = |i: u8| {
        let mut c = config(&dir, &set, i);
        c.consensus.checkpoint_interval = 4;
        c.consensus.window = 8;
        c.consensus.admission = puzzle;
        c
    };
    let net = MemoryNetwork::new(5, Faults::default());
    let mut nodes: Vec<(Handle, Join)> = (1..=5).map(|i| start_in(&net, cfg(i))).collect();
    let learner = nodes[4].0.clone();
    assert!(!learner.status().voter);
    let c = within("a first commit", nodes[1].0.submit(b"before".to_vec()))
        .await
        .unwrap();
    assert_eq!(c.seq, 1);

    // The candidate mints its proof for epoch 0 and three of four validators propose it.
    let candidate = keys(5);
    let (validator, possession) = candidate.member(1);
    let proof = puzzle
        .mint(&did_key(&validator.id), 0, 10_000, |_| true)
        .unwrap()
        .unwrap();
    let admit = Change::Admit(Box::new(Admission {
        validator,
        possession,
        proof,
    }));
    for (h, _) in &nodes[..3] {
        within("a proposal to be ordered", h.propose(admit.clone()))
            .await
            .unwrap();
    }
    for (h, _) in &nodes {
        let mut s = h.watch_status();
        within(
            "the new set to take effect everywhere",
            s.wait_for(|s| s.epoch == 1),
        )
        .await
        .unwrap();
    }
    let mut s = learner.watch_status();
    within("the learner to vote", s.wait_for(|s| s.voter))
        .await
        .unwrap();

    // Validator 4 stops: 1, 2, 3 and the newcomer are exactly the quorum of five.
    let (stopped, join) = nodes.remove(3);
    stopped.shutdown();
    within("validator 4 to stop", join).await.unwrap();
    let c = within(
        "a commit needing the newcomer's vote",
        nodes[1].0.submit(b"after".to_vec()),
    )
    .await
    .unwrap();
    let mut s = learner.watch_status();
    within(
        "the newcomer to execute it",
        s.wait_for(|s| s.executed >= c.seq),
    )
    .await
    .unwrap();
    for (h, join) in nodes {
        h.shutdown();
        within("a driver to stop", join).await.unwrap();
    }
    // The newcomer's ledger verifies from the genesis it recorded, across the epochs.
    let store = mesh_store::DiskStore::open(dir.path().join("v5")).unwrap();
    let storage = StoreStorage::open(&store, mesh_consensus::Limits::default()).unwrap();
    let verified = verify_storage(&storage, |_| {}).unwrap();
    assert_eq!(verified.genesis.set, set);
    assert!(verified.height >= c.seq, "{} < {}", verified.height, c.seq);
    assert_eq!(verified.validators.epoch(), 1);
    assert_eq!(verified.validators.len(), 5);
}
