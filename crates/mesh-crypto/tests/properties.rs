//! Property tests: signatures round-trip and break on any change; ratchet sessions deliver
//! every message exactly once under arbitrary reordering within the skip window.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use mesh_crypto::bls::{self, BlsSecretKey, SignerBitmap};
use mesh_crypto::ed25519::SigningKey;
use mesh_crypto::ratchet::{MAX_SKIP, RatchetSession, SessionSetup};
use mesh_crypto::x25519::X25519Secret;
use mesh_crypto::{Error, sealed};
use proptest::prelude::*;

fn session_pair() -> (RatchetSession, RatchetSession) {
    let alice = X25519Secret::generate().unwrap();
    let bob = X25519Secret::generate().unwrap();
    let (setup, m1) = SessionSetup::initiate(&alice, &bob.public_key()).unwrap();
    let (b, _, m2) = SessionSetup::respond(&bob, &m1).unwrap();
    (setup.finish(&m2).unwrap(), b)
}

/// Decrypts `order`-permuted `messages`; each must decrypt once to its plaintext, and a
/// second delivery must be refused as a replay.
fn deliver(
    to: &mut RatchetSession,
    messages: &[(Vec<u8>, Vec<u8>)],
    order: &[usize],
) -> Result<(), TestCaseError> {
    for &i in order {
        let (plain, msg) = &messages[i];
        prop_assert_eq!(&to.decrypt(msg).unwrap(), plain);
    }
    for &i in order {
        let is_replay = matches!(to.decrypt(&messages[i].1), Err(Error::Replay { .. }));
        prop_assert!(is_replay, "message {} accepted twice", i);
    }
    prop_assert_eq!(to.skipped_keys(), 0, "every skipped key was used");
    Ok(())
}

fn permutation(n: usize) -> impl Strategy<Value = Vec<usize>> {
    Just((0..n).collect::<Vec<_>>()).prop_shuffle()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ed25519_round_trip_and_any_bit_flip_fails(
        seed in any::<[u8; 32]>(),
        msg in proptest::collection::vec(any::<u8>(), 0..256),
        flip in any::<prop::sample::Index>(),
    ) {
        let sk = SigningKey::from_seed(&seed);
        let vk = sk.verifying_key();
        let sig = sk.sign(&msg);
        prop_assert!(vk.verify(&msg, &sig).is_ok());
        let mut bad_sig = sig;
        let bit = flip.index(64 * 8);
        bad_sig.0[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(vk.verify(&msg, &bad_sig).is_err());
        if !msg.is_empty() {
            let mut bad_msg = msg.clone();
            let bit = flip.index(msg.len() * 8);
            bad_msg[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(vk.verify(&bad_msg, &sig).is_err());
        }
    }

    #[test]
    fn ratchet_delivers_a_reordered_burst_exactly_once(
        order in (1usize..=200).prop_flat_map(permutation),
    ) {
        let (mut a, mut b) = session_pair();
        let burst: Vec<(Vec<u8>, Vec<u8>)> = (0..order.len())
            .map(|i| {
                let p = format!("message {i}").into_bytes();
                let m = a.encrypt(&p).unwrap();
                (p, m)
            })
            .collect();
        deliver(&mut b, &burst, &order)?;
    }

    #[test]
    fn ratchet_delivers_interleaved_chains_exactly_once(
        n1 in 1usize..20,
        n2 in 1usize..20,
        seed in any::<u64>(),
    ) {
        // Alice sends a burst on her first chain, Bob replies (Alice ratchets on reading it),
        // Alice sends a burst on her new chain; Bob gets both bursts interleaved at random.
        let (mut a, mut b) = session_pair();
        let mut all: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        // Bob can only reply once he has heard from Alice.
        let hello = a.encrypt(b"hello").unwrap();
        prop_assert_eq!(b.decrypt(&hello).unwrap(), b"hello".to_vec());
        for i in 0..n1 {
            let p = format!("chain 1, {i}").into_bytes();
            all.push((p.clone(), a.encrypt(&p).unwrap()));
        }
        let reply = b.encrypt(b"reply").unwrap();
        prop_assert_eq!(a.decrypt(&reply).unwrap(), b"reply".to_vec());
        for i in 0..n2 {
            let p = format!("chain 2, {i}").into_bytes();
            all.push((p.clone(), a.encrypt(&p).unwrap()));
        }
        // A deterministic shuffle from the seed (xorshift), covering cross-chain orders.
        let mut order: Vec<usize> = (0..all.len()).collect();
        let mut x = seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        deliver(&mut b, &all, &order)?;
    }
}

proptest! {
    // Pairings are costly: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn bls_certificate_verifies_only_for_its_signers(
        signers in proptest::collection::btree_set(0usize..7, 1..7),
        other in 0usize..7,
    ) {
        let keys: Vec<BlsSecretKey> = (0..7u8).map(|i| BlsSecretKey::from_ikm(&[i + 1; 32]).unwrap()).collect();
        let pks: Vec<_> = keys.iter().map(BlsSecretKey::public_key).collect();
        let mut bitmap = SignerBitmap::new(7).unwrap();
        let sigs: Vec<_> = signers.iter().map(|&i| { bitmap.set(i).unwrap(); keys[i].sign(b"block") }).collect();
        let cert = bls::aggregate_signatures(&sigs).unwrap();
        let decoded = SignerBitmap::from_bytes(&bitmap.to_bytes()).unwrap();
        prop_assert!(bls::fast_aggregate_verify(&decoded.select(&pks).unwrap(), b"block", &cert).is_ok());
        let mut wrong = decoded.clone();
        if wrong.set(other).unwrap() {
            prop_assert!(bls::fast_aggregate_verify(&wrong.select(&pks).unwrap(), b"block", &cert).is_err());
        }
    }
}

#[test]
fn sealed_data_opens_only_with_its_passphrase() {
    let params = sealed::SealParams::insecure_for_tests();
    let blob = sealed::seal(&[9u8; 32], b"correct horse", params).unwrap();
    for wrong in [
        &b""[..],
        b"correct hors",
        b"correct horse ",
        b"Correct horse",
    ] {
        assert_eq!(sealed::open(&blob, wrong), Err(Error::WrongPassphrase));
    }
    assert_eq!(
        &sealed::open(&blob, b"correct horse").unwrap()[..],
        &[9u8; 32]
    );
}

#[test]
fn a_gap_up_to_max_skip_is_bridged_and_beyond_it_refused() {
    let (mut a, mut b) = session_pair();
    let msgs: Vec<Vec<u8>> = (0..=MAX_SKIP + 1)
        .map(|i| a.encrypt(&i.to_le_bytes()).unwrap())
        .collect();
    // Message MAX_SKIP needs exactly MAX_SKIP skipped keys: allowed.
    assert_eq!(
        b.decrypt(&msgs[MAX_SKIP as usize]).unwrap(),
        MAX_SKIP.to_le_bytes()
    );
    assert_eq!(b.skipped_keys(), MAX_SKIP as usize);
    for (i, m) in msgs[..MAX_SKIP as usize].iter().enumerate() {
        assert_eq!(b.decrypt(m).unwrap(), (i as u32).to_le_bytes());
    }
    assert_eq!(b.skipped_keys(), 0);
    // A fresh session: the first message arriving MAX_SKIP + 1 ahead is refused, harmlessly.
    let (mut a, mut b) = session_pair();
    let msgs: Vec<Vec<u8>> = (0..=MAX_SKIP + 1)
        .map(|i| a.encrypt(&i.to_le_bytes()).unwrap())
        .collect();
    assert!(matches!(
        b.decrypt(&msgs[MAX_SKIP as usize + 1]),
        Err(Error::Session { .. })
    ));
    assert_eq!(b.skipped_keys(), 0, "a refused message changes nothing");
    assert_eq!(b.decrypt(&msgs[0]).unwrap(), 0u32.to_le_bytes());
}

#[test]
fn stored_skipped_keys_are_bounded_and_the_oldest_go_first() {
    use mesh_crypto::ratchet::MAX_SKIPPED_KEYS;
    let (mut a, mut b) = session_pair();
    let hello = a.encrypt(b"hello").unwrap();
    b.decrypt(&hello).unwrap();
    // Three rounds of: Alice sends MAX_SKIP messages, Bob sees only the last, and replies (so
    // Alice starts a new chain). Bob then holds 3 * (MAX_SKIP - 1) > MAX_SKIPPED_KEYS keys.
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let msgs: Vec<Vec<u8>> = (0..MAX_SKIP)
            .map(|i| a.encrypt(&i.to_le_bytes()).unwrap())
            .collect();
        b.decrypt(msgs.last().unwrap()).unwrap();
        let reply = b.encrypt(b"r").unwrap();
        a.decrypt(&reply).unwrap();
        rounds.push(msgs);
    }
    assert_eq!(b.skipped_keys(), MAX_SKIPPED_KEYS);
    // The oldest round lost its first keys; the newest round is complete.
    assert!(matches!(
        b.decrypt(&rounds[0][0]),
        Err(Error::Replay { .. })
    ));
    for m in &rounds[2][..MAX_SKIP as usize - 1] {
        b.decrypt(m).unwrap();
    }
}
