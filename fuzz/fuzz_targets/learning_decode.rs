//! Arbitrary bytes through the learning crate's decoders (what an aggregator and its clients
//! do with their peers' bytes): the secure-aggregation message decoder, secure-aggregation
//! servers (unsigned and checking signatures) handling them, and the compressed-update
//! decoder. No input may panic; a
//! secure-aggregation message that decodes must re-encode to exactly its bytes (the encoding
//! is canonical); a decoded compressed update has the expected dimension and finite values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_crypto::ed25519::SigningKey;
use mesh_learning::{compress, secagg};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = secagg::Message::decode(data, 1 << 12) {
        assert_eq!(m.encode(), data);
    }
    let config = secagg::Config {
        round: 1,
        model: [0; 32],
        clients: 3,
        threshold: 2,
        dim: 16,
        clip: 1.0,
    };
    if let Ok(mut server) = secagg::Server::new(config) {
        let accepted = server.handle(data).is_ok();
        assert_eq!(server.rejections().total(), u64::from(!accepted));
    }
    let key = SigningKey::from_seed(&[7; 32]);
    let verifiers = [(0, key.verifying_key())].into_iter().collect();
    if let Ok(mut server) = secagg::Server::with_signatures(config, verifiers) {
        let accepted = server.handle(data).is_ok();
        assert_eq!(server.rejections().total(), u64::from(!accepted));
    }
    // The first two bytes pick the dimension the decoder expects.
    if let [a, b, rest @ ..] = data {
        let dim = usize::from(u16::from_le_bytes([*a, *b]));
        if let Ok(values) = compress::decode(rest, dim) {
            assert_eq!(values.len(), dim);
            assert!(values.iter().all(|v| v.is_finite()));
        }
    }
});
