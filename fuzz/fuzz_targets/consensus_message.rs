//! Arbitrary bytes through the consensus message decoder (what every validator feeds its
//! peers' bytes to): no input may panic, and a message that decodes must re-encode to exactly
//! the bytes it came from (the encoding is canonical). The same holds for reconfiguration
//! changes and genesis records (what replicas and light clients decode from blocks and
//! stores).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_consensus::{Change, Genesis, Limits, Message};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_request_bytes: 1024,
        max_batch_requests: 64,
        max_batch_bytes: 64 * 1024,
        max_forward: 64,
        max_blocks: 4,
        max_prepared: 64,
        max_validators: 64,
    };
    if let Ok(m) = Message::decode(data, &limits) {
        assert_eq!(m.encode(), data);
    }
    if let Ok(c) = Change::decode(data) {
        assert_eq!(c.encode(), data);
    }
    if let Ok(g) = Genesis::decode(data) {
        assert_eq!(g.encode(), data);
    }
});
