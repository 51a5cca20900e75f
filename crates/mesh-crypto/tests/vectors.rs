//! Official test vectors, transcribed into `tests/vectors/*.json`; every file names its source
//! (RFC section or repository path and commit) in its `source` field.
//!
//! | file | source |
//! |---|---|
//! | rfc8439_aead.json | RFC 8439 §2.8.2 and Appendix A.5 |
//! | rfc8032_ed25519.json | RFC 8032 §7.1 (TEST 1, 2, 3, 1024, SHA(abc)) |
//! | rfc7748_x25519.json | RFC 7748 §5.2 and §6.1 |
//! | rfc5869_hkdf.json | RFC 5869 Appendix A.1-A.3 |
//! | eth_bls.json | ethereum/consensus-spec-tests, tests/general/phase0/bls |
//! | slip10_ed25519.json | SLIP-0010, test vectors 1 and 2 for ed25519 |

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh_crypto::aead::AeadKey;
use mesh_crypto::bls::{self, BlsPublicKey, BlsSecretKey, BlsSignature};
use mesh_crypto::ed25519::{SigningKey, VerifyingKey};
use mesh_crypto::kdf::hkdf_sha256;
use mesh_crypto::slip10::ExtendedKey;
use mesh_crypto::x25519::{X25519Public, X25519Secret};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["source"].as_str().is_some_and(|s| !s.is_empty()),
        "{name} names no source"
    );
    v
}

fn hex(v: &Value) -> Vec<u8> {
    hex::decode(
        v.as_str()
            .unwrap_or_else(|| panic!("not a hex string: {v}")),
    )
    .unwrap()
}

fn arr<const N: usize>(v: &Value) -> [u8; N] {
    hex(v).try_into().unwrap()
}

/// A length given as a JSON number or a decimal string.
fn num(v: &Value) -> usize {
    v.as_u64()
        .map(|n| n as usize)
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a length: {v}"))
}

fn vectors(v: &Value) -> &Vec<Value> {
    v["vectors"].as_array().unwrap()
}

#[test]
fn rfc8439_chacha20_poly1305() {
    let file = load("rfc8439_aead.json");
    assert_eq!(vectors(&file).len(), 2);
    for v in vectors(&file) {
        let key = AeadKey::new(&arr(&v["key"]));
        let nonce = arr(&v["nonce"]);
        let mut expected = hex(&v["ciphertext"]);
        expected.extend(hex(&v["tag"]));
        let sealed = key
            .seal(&nonce, &hex(&v["aad"]), &hex(&v["plaintext"]))
            .unwrap();
        assert_eq!(sealed, expected, "{}", v["name"]);
        assert_eq!(
            key.open(&nonce, &hex(&v["aad"]), &expected).unwrap(),
            hex(&v["plaintext"])
        );
    }
}

#[test]
fn rfc8032_ed25519() {
    let file = load("rfc8032_ed25519.json");
    assert_eq!(vectors(&file).len(), 5);
    for v in vectors(&file) {
        let sk = SigningKey::from_seed(&arr(&v["secret_key"]));
        let pk = VerifyingKey::from_bytes(&arr(&v["public_key"])).unwrap();
        assert_eq!(sk.verifying_key(), pk, "{}", v["name"]);
        let msg = hex(&v["message"]);
        let sig = sk.sign(&msg);
        assert_eq!(
            sig.to_bytes().to_vec(),
            hex(&v["signature"]),
            "{}",
            v["name"]
        );
        pk.verify(&msg, &sig).unwrap();
        let mut other = msg.clone();
        other.push(0);
        assert!(pk.verify(&other, &sig).is_err());
    }
}

#[test]
fn rfc7748_x25519() {
    let file = load("rfc7748_x25519.json");
    let vs = vectors(&file);
    for v in &vs[..2] {
        let out = X25519Secret::from_bytes(arr(&v["scalar"]))
            .diffie_hellman(&X25519Public(arr(&v["u_coordinate"])))
            .unwrap();
        assert_eq!(out.to_vec(), hex(&v["output"]), "{}", v["name"]);
    }
    let dh = &vs[2];
    let alice = X25519Secret::from_bytes(arr(&dh["alice_private"]));
    let bob = X25519Secret::from_bytes(arr(&dh["bob_private"]));
    assert_eq!(alice.public_key().0.to_vec(), hex(&dh["alice_public"]));
    assert_eq!(bob.public_key().0.to_vec(), hex(&dh["bob_public"]));
    assert_eq!(
        alice.diffie_hellman(&bob.public_key()).unwrap().to_vec(),
        hex(&dh["shared"])
    );
    assert_eq!(
        bob.diffie_hellman(&alice.public_key()).unwrap().to_vec(),
        hex(&dh["shared"])
    );

    // The iterated test: 1 and 1,000 iterations (1,000,000 is left to a long run).
    let it = &file["iterated"];
    let (mut k, mut u) = (arr::<32>(&it["start"]), arr::<32>(&it["start"]));
    for i in 1..=1000 {
        let next = *X25519Secret::from_bytes(k)
            .diffie_hellman(&X25519Public(u))
            .unwrap();
        u = k;
        k = next;
        if i == 1 {
            assert_eq!(k.to_vec(), hex(&it["after_1"]));
        }
    }
    assert_eq!(k.to_vec(), hex(&it["after_1000"]));
}

#[test]
fn rfc5869_hkdf_sha256() {
    let file = load("rfc5869_hkdf.json");
    assert_eq!(vectors(&file).len(), 3);
    for v in vectors(&file) {
        let len = num(&v["L"]);
        let mut okm = vec![0u8; len];
        hkdf_sha256(
            &hex(&v["salt"]),
            &hex(&v["ikm"]),
            &[&hex(&v["info"])],
            &mut okm,
        )
        .unwrap();
        assert_eq!(okm, hex(&v["okm"]), "{}", v["name"]);
        // PRK = HMAC(salt, IKM); an empty salt is HashLen zero bytes (RFC 5869 §2.2).
        let salt = hex(&v["salt"]);
        let salt = if salt.is_empty() { vec![0u8; 32] } else { salt };
        let prk = mesh_crypto::kdf::hmac_sha256(&salt, &[&hex(&v["ikm"])]);
        assert_eq!(prk.to_vec(), hex(&v["prk"]), "{}", v["name"]);
    }
}

fn bls_pk(v: &Value) -> Option<BlsPublicKey> {
    BlsPublicKey::from_slice(&hex(v)).ok()
}

fn bls_sig(v: &Value) -> Option<BlsSignature> {
    BlsSignature::from_slice(&hex(v)).ok()
}

#[test]
fn ethereum_consensus_bls_vectors() {
    let file = load("eth_bls.json");
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for v in vectors(&file) {
        let handler = v["handler"].as_str().unwrap();
        let case = v["case"].as_str().unwrap();
        let input = &v["input"];
        let output = &v["output"];
        *seen.entry(handler.to_owned()).or_default() += 1;
        match handler {
            "sign" => {
                let sk = BlsSecretKey::from_bytes(&arr(&input["privkey"]));
                match output {
                    Value::Null => assert!(sk.is_err(), "{case}"),
                    out => assert_eq!(
                        sk.unwrap()
                            .sign(&hex(&input["message"]))
                            .to_bytes()
                            .to_vec(),
                        hex(out),
                        "{case}"
                    ),
                }
            }
            "verify" => {
                let ok = match (bls_pk(&input["pubkey"]), bls_sig(&input["signature"])) {
                    (Some(pk), Some(sig)) => pk.verify(&hex(&input["message"]), &sig).is_ok(),
                    _ => false,
                };
                assert_eq!(ok, output.as_bool().unwrap(), "{case}");
            }
            "aggregate" => {
                let sigs: Option<Vec<BlsSignature>> =
                    input.as_array().unwrap().iter().map(bls_sig).collect();
                let agg = sigs.and_then(|s| bls::aggregate_signatures(&s).ok());
                match output {
                    Value::Null => assert!(agg.is_none(), "{case}"),
                    out => assert_eq!(agg.unwrap().to_bytes().to_vec(), hex(out), "{case}"),
                }
            }
            "fast_aggregate_verify" => {
                let pks: Option<Vec<BlsPublicKey>> = input["pubkeys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(bls_pk)
                    .collect();
                let ok = match (pks, bls_sig(&input["signature"])) {
                    (Some(pks), Some(sig)) => {
                        bls::fast_aggregate_verify(&pks, &hex(&input["message"]), &sig).is_ok()
                    }
                    _ => false,
                };
                assert_eq!(ok, output.as_bool().unwrap(), "{case}");
            }
            "aggregate_verify" => {
                let pks: Option<Vec<BlsPublicKey>> = input["pubkeys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(bls_pk)
                    .collect();
                let msgs: Vec<Vec<u8>> = input["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(hex)
                    .collect();
                let ok = match (pks, bls_sig(&input["signature"])) {
                    (Some(pks), Some(sig)) => {
                        let pairs: Vec<(BlsPublicKey, &[u8])> = pks
                            .into_iter()
                            .zip(msgs.iter().map(Vec::as_slice))
                            .collect();
                        bls::aggregate_verify(&pairs, &sig).is_ok()
                    }
                    _ => false,
                };
                assert_eq!(ok, output.as_bool().unwrap(), "{case}");
            }
            other => panic!("unknown handler {other}"),
        }
    }
    let counts: Vec<(String, usize)> = seen.into_iter().collect();
    assert_eq!(
        counts,
        [
            ("aggregate", 2),
            ("aggregate_verify", 3),
            ("fast_aggregate_verify", 5),
            ("sign", 3),
            ("verify", 4)
        ]
        .map(|(h, n)| (h.to_owned(), n))
    );
}

#[test]
fn slip10_ed25519() {
    let file = load("slip10_ed25519.json");
    let mut checked = 0;
    for v in vectors(&file) {
        let seed = hex(&v["seed"]);
        for chain in v["chains"].as_array().unwrap() {
            let path = chain["path"].as_str().unwrap();
            let key = ExtendedKey::derive(&seed, path).unwrap();
            assert_eq!(
                key.chain_code().to_vec(),
                hex(&chain["chain_code"]),
                "{path}"
            );
            assert_eq!(key.private_key().to_vec(), hex(&chain["private"]), "{path}");
            let public = hex(&chain["public"]);
            assert_eq!(public[0], 0);
            assert_eq!(
                key.signing_key().verifying_key().to_bytes().to_vec(),
                public[1..],
                "{path}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 12);
}
