//! Embedding `mesh-identity` and `mesh-crypto`: two agents with persisted, passphrase-sealed
//! identities open an end-to-end session to each other's DID and exchange signed envelopes.
//!
//! `cargo run -p mesh-examples --example secure_messaging [DIR]` (identities are written under
//! DIR, or a temporary directory).

#![allow(clippy::print_stdout, clippy::disallowed_methods)] // an example program: stdout, wall clock

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, ensure};
use mesh_crypto::ratchet::SessionSetup;
use mesh_identity::rbac::{Grant, Policy, Role};
use mesh_identity::{Envelope, Identity, Metadata, Priority, Protection};
use mesh_types::{MessageId, Timestamp};

fn main() -> anyhow::Result<()> {
    let now = Timestamp::from_system_time(SystemTime::now());
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let dir = dir.as_path();
    let pass = Protection::passphrase("correct horse battery staple");

    // Each agent creates its identity once and reloads it on every start.
    for name in ["alice", "bob"] {
        Identity::generate(now)?.save(&dir.join(name).join("identity.json"), &pass)?;
    }
    let alice = Identity::load(&dir.join("alice/identity.json"), &pass).context("alice")?;
    let bob = Identity::load(&dir.join("bob/identity.json"), &pass).context("bob")?;
    println!("alice: {} (PeerId {})", alice.did(), alice.peer_id());
    println!("bob:   {} (PeerId {})", bob.did(), bob.peer_id());

    // Alice reaches Bob knowing only his DID: Noise IK to its key-agreement key.
    let (setup, hello) = SessionSetup::initiate(
        &alice.key_agreement_secret(),
        &bob.did().key_agreement_key()?,
    )?;
    let (mut bob_session, initiator, reply) =
        SessionSetup::respond(&bob.key_agreement_secret(), &hello)?;
    let mut alice_session = setup.finish(&reply)?;
    ensure!(
        initiator == alice.did().key_agreement_key()?,
        "session initiator is not Alice"
    );

    let metadata = Metadata {
        priority: Priority::Normal,
        ttl: Duration::from_secs(300),
    };
    for (i, text) in [
        "hello Bob",
        "shall we train on the digits?",
        "round 1 starts at block 10",
    ]
    .iter()
    .enumerate()
    {
        let ciphertext = alice_session.encrypt(text.as_bytes())?;
        let envelope = Envelope::sign(
            &alice,
            MessageId([i as u8; 16]),
            "chat",
            bob.did().clone(),
            now,
            ciphertext,
            metadata,
        )?;
        let wire = envelope.to_bytes();

        // Bob's side: decode, check signature and ttl, check the session peer, decrypt.
        let got = Envelope::from_bytes(&wire)?;
        got.verify(now)?;
        ensure!(
            got.sender.key_agreement_key()? == initiator,
            "envelope signer is not the session peer"
        );
        let plain = bob_session.decrypt(&got.content)?;
        println!(
            "bob got #{i} ({} bytes on the wire): {}",
            wire.len(),
            String::from_utf8_lossy(&plain)
        );
    }

    // Permissions: an admin grants Bob the trainer role; a policy trusting the admin checks it.
    let admin = Identity::generate(now)?;
    let grant = Grant::issue(
        &admin,
        bob.did().clone(),
        [Role::Trainer].into(),
        Default::default(),
        now,
        now.saturating_add(Duration::from_secs(3600)),
    )?;
    let policy = Policy::new([admin.did().clone()]);
    policy.check(
        std::slice::from_ref(&grant),
        bob.did(),
        "learning.train",
        "models/digits",
        now,
    )?;
    let denied = policy.check(&[grant], bob.did(), "consensus.vote", "ledger", now);
    println!(
        "bob may train: yes; bob may vote: {}",
        if denied.is_ok() { "yes" } else { "no" }
    );
    ensure!(denied.is_err(), "a trainer must not vote");
    println!("secure_messaging: ok");
    Ok(())
}
