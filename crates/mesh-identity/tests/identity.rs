//! Identity tests: did:key against the W3C vectors, PeerId against libp2p, the identity file,
//! envelopes, rotations, grants and prekey-bound ratchet sessions.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use mesh_crypto::bls::BlsSecretKey;
use mesh_crypto::ed25519::{SigningKey, VerifyingKey};
use mesh_crypto::ratchet::SessionSetup;
use mesh_crypto::sealed::SealParams;
use mesh_identity::rbac::{Capability, Grant, Policy, Role};
use mesh_identity::{Did, Envelope, Error, Identity, Metadata, Priority, Protection, did};
use mesh_types::{MessageId, Timestamp};
use proptest::prelude::*;
use serde_json::Value;

fn identity(n: u8) -> Identity {
    Identity::from_keys(
        SigningKey::from_seed(&[n; 32]),
        BlsSecretKey::from_ikm(&[n; 32]).unwrap(),
        Timestamp(1_700_000_000_000),
    )
}

const NOW: Timestamp = Timestamp(1_700_000_100_000);

#[test]
fn did_key_matches_the_w3c_vectors() {
    // Source: w3c-ccg/did-method-key, test-vectors/ed25519-x25519.json and the spec example
    // (see the file's "source" field).
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/didkey_ed25519.json"
    );
    let file: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(file["source"].as_str().unwrap().contains("did-method-key"));
    let mut checked = 0;
    for v in file["vectors"].as_array().unwrap() {
        let public: [u8; 32] = hex::decode(v["ed25519_public_key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let key = VerifyingKey::from_bytes(&public).unwrap();
        if let Some(seed) = v["ed25519_seed"].as_str() {
            let seed: [u8; 32] = hex::decode(seed).unwrap().try_into().unwrap();
            let sk = SigningKey::from_seed(&seed);
            assert_eq!(sk.verifying_key(), key);
            // The key-agreement secret is the vector's (SHA-512 of the seed, clamped).
            let x_secret = hex::decode(v["x25519_private_key"].as_str().unwrap()).unwrap();
            assert_eq!(sk.to_x25519_secret().to_bytes().to_vec(), x_secret);
            assert_eq!(sk.to_x25519_secret().public_key(), key.to_x25519());
        }
        let did = Did::from_key(&key);
        assert_eq!(did.as_str(), v["did"].as_str().unwrap());
        let parsed = Did::parse(v["did"].as_str().unwrap()).unwrap();
        assert_eq!(parsed.verifying_key().unwrap(), key);
        assert_eq!(
            parsed.key_agreement_key().unwrap().0.to_vec(),
            hex::decode(v["x25519_public_key"].as_str().unwrap()).unwrap()
        );
        assert_eq!(
            parsed.key_agreement_fingerprint().unwrap(),
            v["x25519_key_agreement_id"].as_str().unwrap()
        );
        let doc = parsed.document().unwrap();
        assert_eq!(doc["id"], v["did"]);
        assert_eq!(
            doc["verificationMethod"][0]["publicKeyMultibase"]
                .as_str()
                .unwrap(),
            parsed.fingerprint()
        );
        assert_eq!(
            doc["keyAgreement"][0]["publicKeyMultibase"],
            v["x25519_key_agreement_id"]
        );
        checked += 1;
    }
    assert_eq!(checked, 6);
}

#[test]
fn peer_id_matches_libp2p() {
    for n in 0..8u8 {
        let key = SigningKey::from_seed(&[n; 32]).verifying_key();
        let lp = libp2p_identity::ed25519::PublicKey::try_from_bytes(key.as_bytes()).unwrap();
        let peer = libp2p_identity::PeerId::from_public_key(&libp2p_identity::PublicKey::from(lp));
        assert_eq!(did::peer_id_bytes(&key), peer.to_bytes());
        assert_eq!(did::peer_id_string(&key), peer.to_base58());
    }
}

#[test]
fn identity_file_round_trip_permissions_and_wrong_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node").join("identity.json");
    let mut id = identity(1);
    id.rotate_to(SigningKey::from_seed(&[2; 32]), NOW).unwrap();
    let pass = Protection::passphrase("hunter2 but longer");
    id.save_with(&path, &pass, SealParams::insecure_for_tests())
        .unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains(&hex::encode(*SigningKey::from_seed(&[2; 32]).seed())),
        "secret in the clear"
    );

    let loaded = Identity::load(&path, &pass).unwrap();
    assert_eq!(loaded.did(), id.did());
    assert_eq!(loaded.origin(), identity(1).did());
    assert_eq!(loaded.rotations(), id.rotations());
    assert_eq!(loaded.bls_public(), id.bls_public());
    assert!(matches!(
        Identity::load(&path, &Protection::passphrase("nope")),
        Err(Error::WrongPassphrase { .. })
    ));
    assert!(matches!(
        Identity::load(&path, &Protection::Unencrypted),
        Err(Error::File { .. })
    ));

    // Unencrypted only on request, and refused when others can read it.
    let plain = dir.path().join("plain.json");
    id.save(&plain, &Protection::Unencrypted).unwrap();
    Identity::load(&plain, &Protection::Unencrypted).unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Identity::load(&plain, &Protection::Unencrypted).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn damaged_or_edited_identity_files_are_refused_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.json");
    let id = identity(3);
    id.save(&path, &Protection::Unencrypted).unwrap();
    let good = std::fs::read_to_string(&path).unwrap();
    let other = identity(4);
    let cases = [
        good.replace(id.did().as_str(), other.did().as_str()),
        good.replace("\"version\": 1", "\"version\": 9"),
        good[..good.len() / 2].to_owned(),
        "{}".to_owned(),
        "not json".to_owned(),
        good.replace(&id.peer_id(), &other.peer_id()),
    ];
    for (i, text) in cases.iter().enumerate() {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = Identity::load(&path, &Protection::Unencrypted).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "case {i}: {err}"
        );
    }
    let missing =
        Identity::load(&dir.path().join("missing.json"), &Protection::Unencrypted).unwrap_err();
    assert!(matches!(missing, Error::Io { .. }));
}

fn envelope(from: &Identity, to: &Identity, content: &[u8]) -> Envelope {
    Envelope::sign(
        from,
        MessageId([7; 16]),
        "chat",
        to.did().clone(),
        NOW,
        content.to_vec(),
        Metadata {
            priority: Priority::High,
            ttl: Duration::from_secs(60),
        },
    )
    .unwrap()
}

#[test]
fn envelopes_verify_expire_and_reject_the_future() {
    let (a, b) = (identity(5), identity(6));
    let env = envelope(&a, &b, b"hello");
    env.verify(NOW).unwrap();
    let decoded = Envelope::from_bytes(&env.to_bytes()).unwrap();
    assert_eq!(decoded, env);
    decoded.verify(NOW).unwrap();
    assert!(matches!(
        env.verify(Timestamp(NOW.0 + 60_000)),
        Err(Error::Expired { .. })
    ));
    assert!(matches!(
        env.verify(Timestamp(NOW.0 - 301_000)),
        Err(Error::NotYetValid { .. })
    ));
    let mut forged = env.clone();
    forged.sender = b.did().clone();
    assert!(matches!(
        forged.verify(NOW),
        Err(Error::BadSignature { .. })
    ));
    let bad_kind = Envelope::sign(
        &a,
        MessageId([0; 16]),
        "Bad Kind",
        b.did().clone(),
        NOW,
        vec![],
        Metadata::default(),
    );
    assert!(bad_kind.is_err());
    let big = Envelope::sign(
        &a,
        MessageId([0; 16]),
        "chat",
        b.did().clone(),
        NOW,
        vec![0; 1024 * 1024 + 1],
        Metadata::default(),
    );
    assert!(matches!(big, Err(Error::TooLarge { .. })));
}

#[test]
fn grants_and_policy() {
    let (admin, node, stranger) = (identity(7), identity(8), identity(9));
    let grant = Grant::issue(
        &admin,
        node.did().clone(),
        BTreeSet::from([Role::Trainer]),
        BTreeSet::from([Capability::new("tool.invoke", "tools/search")]),
        Timestamp(NOW.0 - 1000),
        Timestamp(NOW.0 + 1000),
    )
    .unwrap();
    grant.verify(NOW).unwrap();
    assert_eq!(Grant::from_bytes(&grant.to_bytes()).unwrap(), grant);
    let policy = Policy::new([admin.did().clone()]);
    let grants = [grant.clone()];
    policy
        .check(&grants, node.did(), "learning.train", "models/digits", NOW)
        .unwrap();
    policy
        .check(&grants, node.did(), "tool.invoke", "tools/search", NOW)
        .unwrap();
    assert!(
        policy
            .check(&grants, node.did(), "tool.invoke", "tools/shell", NOW)
            .is_err()
    );
    assert!(
        policy
            .check(&grants, node.did(), "consensus.vote", "x", NOW)
            .is_err()
    );
    assert!(
        policy
            .check(&grants, stranger.did(), "learning.train", "x", NOW)
            .is_err()
    );
    let err = policy
        .check(
            &grants,
            node.did(),
            "learning.train",
            "x",
            Timestamp(NOW.0 + 1000),
        )
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    // A grant from an issuer the policy does not trust counts for nothing.
    let self_granted = Grant::issue(
        &node,
        node.did().clone(),
        BTreeSet::from([Role::Admin]),
        BTreeSet::new(),
        Timestamp(0),
        Timestamp(u64::MAX),
    )
    .unwrap();
    assert!(
        policy
            .check(&[self_granted], node.did(), "consensus.vote", "x", NOW)
            .is_err()
    );
    // Tampering with any decoded field breaks the signature.
    let mut tampered = grant;
    tampered.roles.insert(Role::Admin);
    assert!(matches!(
        tampered.verify(NOW),
        Err(Error::BadSignature { .. })
    ));
}

#[test]
fn sessions_to_a_did_carry_signed_envelopes_end_to_end() {
    let (alice, bob, mallory) = (identity(10), identity(11), identity(12));
    // Alice knows only Bob's DID: its key-agreement key is the Noise static key to reach.
    let bob_static = bob.did().key_agreement_key().unwrap();
    let (setup, m1) = SessionSetup::initiate(&alice.key_agreement_secret(), &bob_static).unwrap();
    // Only Bob can answer: Mallory's static key does not open Alice's first message.
    assert!(SessionSetup::respond(&mallory.key_agreement_secret(), &m1).is_err());
    let (mut bob_session, initiator, m2) =
        SessionSetup::respond(&bob.key_agreement_secret(), &m1).unwrap();
    let mut alice_session = setup.finish(&m2).unwrap();

    let ciphertext = alice_session.encrypt(b"meet at block 42").unwrap();
    let env = envelope(&alice, &bob, &ciphertext);
    let got = Envelope::from_bytes(&env.to_bytes()).unwrap();
    got.verify(NOW).unwrap();
    assert_eq!(&got.recipient, bob.did());
    // Bob checks that the session's initiator is the envelope's signer.
    assert_eq!(got.sender.key_agreement_key().unwrap(), initiator);
    assert_eq!(
        bob_session.decrypt(&got.content).unwrap(),
        b"meet at block 42"
    );
    assert!(bob_session.decrypt(&got.content).is_err(), "delivered once");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_bit_flip_in_a_signed_envelope_fails(
        content in proptest::collection::vec(any::<u8>(), 0..64),
        bit in any::<prop::sample::Index>(),
    ) {
        let (a, b) = (identity(12), identity(13));
        let wire = envelope(&a, &b, &content).to_bytes();
        let mut bad = wire.clone();
        let i = bit.index(bad.len() * 8);
        bad[i / 8] ^= 1 << (i % 8);
        let accepted = Envelope::from_bytes(&bad).map(|e| e.verify(NOW).is_ok()).unwrap_or(false);
        prop_assert!(!accepted, "flip of bit {} accepted", i);
    }

    #[test]
    fn decoders_never_panic_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Envelope::from_bytes(&bytes);
        let _ = Grant::from_bytes(&bytes);
        let _ = mesh_identity::KeyRotation::from_bytes(&bytes);
        let _ = Did::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn did_round_trip(seed in any::<[u8; 32]>()) {
        let key = SigningKey::from_seed(&seed).verifying_key();
        let did = Did::from_key(&key);
        prop_assert_eq!(Did::parse(did.as_str()).unwrap().verifying_key().unwrap(), key);
    }
}

#[test]
fn review_hardening_cases() {
    let dir = tempfile::tempdir().unwrap();
    // An unencrypted file does not load when a passphrase was given.
    let path = dir.path().join("identity.json");
    identity(20).save(&path, &Protection::Unencrypted).unwrap();
    let err = Identity::load(&path, &Protection::passphrase("x")).unwrap_err();
    assert!(err.to_string().contains("not encrypted"), "{err}");

    // rotate_and_save persists before returning the record.
    let mut id = identity(21);
    let record = id
        .rotate_and_save(NOW, &path, &Protection::Unencrypted)
        .unwrap();
    let loaded = Identity::load(&path, &Protection::Unencrypted).unwrap();
    assert_eq!(loaded.did(), &record.new);

    // A chain that rotates back to an earlier key is refused.
    let (k0, k1) = (
        SigningKey::from_seed(&[30; 32]),
        SigningKey::from_seed(&[31; 32]),
    );
    let chain = [
        mesh_identity::KeyRotation::sign(&k0, &k1, 1, NOW),
        mesh_identity::KeyRotation::sign(&k1, &k0, 2, NOW),
    ];
    let origin = Did::from_key(&k0.verifying_key());
    assert!(mesh_identity::rotation::verify_chain(&origin, &chain).is_err());

    // Resource patterns cannot be escaped with dot segments.
    let (admin, node) = (identity(22), identity(23));
    let grant = Grant::issue(
        &admin,
        node.did().clone(),
        BTreeSet::new(),
        BTreeSet::from([Capability::new("tool.invoke", "models/*")]),
        Timestamp(0),
        Timestamp(u64::MAX),
    )
    .unwrap();
    let policy = Policy::new([admin.did().clone()]);
    let grants = [grant.clone()];
    policy
        .check(&grants, node.did(), "tool.invoke", "models/digits", NOW)
        .unwrap();
    for bad in ["models/../secrets", "models//x", "models/./x", "models/*"] {
        assert!(
            policy
                .check(&grants, node.did(), "tool.invoke", bad, NOW)
                .is_err(),
            "{bad}"
        );
    }

    // A grant has exactly one accepted encoding: a duplicated role entry is refused.
    let mut two_roles = Grant::issue(
        &admin,
        node.did().clone(),
        BTreeSet::from([Role::Trainer]),
        BTreeSet::new(),
        Timestamp(0),
        Timestamp(u64::MAX),
    )
    .unwrap()
    .to_bytes();
    // After the two DIDs come the role count (varint 1) and the role code: make it
    // "2 roles, both Trainer".
    let canonical = Grant::from_bytes(&two_roles).unwrap();
    assert_eq!(canonical.to_bytes(), two_roles);
    let role_code = Role::Trainer as u8;
    let pos = two_roles
        .windows(2)
        .position(|w| w == [1, role_code])
        .unwrap();
    two_roles.splice(pos..pos + 2, [2, role_code, role_code]);
    assert!(Grant::from_bytes(&two_roles).is_err());

    // A ttl with a sub-millisecond part is refused (it could not be signed exactly).
    let meta = Metadata {
        priority: Priority::Low,
        ttl: Duration::from_micros(1500),
    };
    assert!(
        Envelope::sign(
            &admin,
            MessageId([0; 16]),
            "chat",
            node.did().clone(),
            NOW,
            vec![],
            meta
        )
        .is_err()
    );
}
