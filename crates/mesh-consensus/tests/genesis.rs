//! A ledger remembers the validator set it started from.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh_consensus::{Config, Keys, Replica, StoreStorage, ValidatorSet, verify_storage};
use mesh_crypto::bls::BlsSecretKey;
use mesh_crypto::ed25519::SigningKey;
use mesh_store::MemStore;
use mesh_types::Instant;

fn keys(i: u8) -> Keys {
    Keys {
        ed25519: SigningKey::from_seed(&[i; 32]),
        bls: BlsSecretKey::from_ikm(&[i + 100; 32]).unwrap(),
    }
}

fn set(epoch: u64) -> ValidatorSet {
    ValidatorSet::new(epoch, (1..=4).map(|i| keys(i).member(1)).collect()).unwrap()
}

#[test]
fn a_data_directory_never_changes_mesh() {
    let store = MemStore::new();
    let open = |s: ValidatorSet| {
        let storage = StoreStorage::open(&store, Default::default()).unwrap();
        Replica::new(Config::default(), s, keys(1), storage, Instant::ZERO)
    };
    open(set(0)).unwrap();
    // Restarting with the same set is fine; with another one it is refused with a reason.
    open(set(0)).unwrap();
    let err = open(set(1)).unwrap_err().to_string();
    assert!(err.contains("refusing to mix meshes"), "{err}");
    // The recorded genesis is what a verifier starts from (an empty ledger verifies).
    let storage = StoreStorage::open(&store, Default::default()).unwrap();
    let verified = verify_storage(&storage, |_| {}).unwrap();
    assert_eq!((verified.genesis.set, verified.height), (set(0), 0));
    // A store without a genesis is reported, not guessed at.
    let empty = StoreStorage::open(&MemStore::new(), Default::default()).unwrap();
    assert!(verify_storage(&empty, |_| {}).is_err());
}
