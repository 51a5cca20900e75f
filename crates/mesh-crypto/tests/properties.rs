//! Property tests: signatures round-trip and break on any change; ratchet sessions deliver
//! every message exactly once under arbitrary reordering within the skip window.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use mesh_crypto::bls::{self, BlsSecretKey, SignerBitmap};
use mesh_crypto::ed25519::SigningKey;
use mesh_crypto::ratchet::{MAX_SKIPPED_KEYS, RatchetAccount, RatchetMessage, RatchetSession};
use mesh_crypto::{Error, sealed};
use proptest::prelude::*;

fn session_pair() -> (RatchetSession, RatchetSession, RatchetMessage) {
    let alice = RatchetAccount::new();
    let mut bob = RatchetAccount::new();
    let prekey = bob.generate_prekeys(1)[0];
    let mut a = alice.open_session(&bob.identity_key(), &prekey).unwrap();
    let first = a.encrypt(b"first").unwrap();
    let (b, pt) = bob.accept_session(&alice.identity_key(), &first).unwrap();
    assert_eq!(pt, b"first");
    (a, b, first)
}

/// Decrypts `order`-permuted `messages`; each must decrypt once to its plaintext, and a
/// second delivery must be refused as a replay.
fn deliver(
    to: &mut RatchetSession,
    messages: &[(Vec<u8>, RatchetMessage)],
    order: &[usize],
) -> Result<(), TestCaseError> {
    for &i in order {
        let (plain, msg) = &messages[i];
        // Through the wire encoding, as a peer would receive it.
        let msg = RatchetMessage::from_bytes(&msg.to_bytes()).unwrap();
        prop_assert_eq!(&to.decrypt(&msg).unwrap(), plain);
    }
    for &i in order {
        let is_replay = matches!(to.decrypt(&messages[i].1), Err(Error::Replay { .. }));
        prop_assert!(is_replay, "message {} accepted twice", i);
    }
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
        order in (1usize..=MAX_SKIPPED_KEYS).prop_flat_map(permutation),
    ) {
        let (mut a, mut b, _) = session_pair();
        let burst: Vec<(Vec<u8>, RatchetMessage)> = (0..order.len())
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
        let (mut a, mut b, _) = session_pair();
        let mut all: Vec<(Vec<u8>, RatchetMessage)> = Vec::new();
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
fn skipped_key_limit_discards_the_oldest_keys() {
    let (mut a, mut b, _) = session_pair();
    let n = MAX_SKIPPED_KEYS + 10;
    let msgs: Vec<RatchetMessage> = (0..n).map(|i| a.encrypt(&[i as u8]).unwrap()).collect();
    // The newest first: every earlier key is skipped, but only MAX_SKIPPED_KEYS are kept.
    assert_eq!(b.decrypt(&msgs[n - 1]).unwrap(), vec![(n - 1) as u8]);
    let mut refused = 0;
    for (i, m) in msgs[..n - 1].iter().enumerate() {
        match b.decrypt(m) {
            Ok(p) => assert_eq!(p, vec![i as u8]),
            Err(Error::Replay { .. }) => refused += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(
        refused,
        n - 1 - MAX_SKIPPED_KEYS,
        "exactly the keys beyond the limit are gone"
    );
}

#[test]
fn a_gap_beyond_the_window_is_refused() {
    let (mut a, mut b, _) = session_pair();
    let mut last = None;
    for _ in 0..=mesh_crypto::ratchet::MAX_MESSAGE_GAP + 1 {
        last = Some(a.encrypt(b"x").unwrap());
    }
    assert!(b.decrypt(&last.unwrap()).is_err());
}
