//! Arbitrary bytes through every decoder of `mesh_types::wire`: no input may panic, and any
//! frame decoded must re-encode to the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_types::wire::{self, Decoded, FrameDecoder, Limits, Reader};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::new(1024);
    if let Ok(Decoded::Frame { kind, payload, consumed }) = wire::decode_frame(data, &limits) {
        let mut again = Vec::new();
        wire::encode_frame(kind, payload, &limits, &mut again).unwrap();
        assert_eq!(&again[..], &data[..consumed]);
    }
    let mut dec = FrameDecoder::new(limits);
    let mut rest = data;
    while !rest.is_empty() {
        let took = dec.feed(&rest[..rest.len().min(7)]);
        rest = &rest[took..];
        match dec.next_frame() {
            Ok(Some(_)) => {}
            Ok(None) if took == 0 => break,
            Ok(None) => {}
            Err(_) => break,
        }
        assert!(dec.buffered() <= dec.capacity());
    }
    let mut r = Reader::new(data);
    while let Ok(v) = r.varint() {
        let mut out = Vec::new();
        wire::put_varint(&mut out, v);
    }
    let _ = Reader::new(data).len_prefixed("fuzz", 512);
});
