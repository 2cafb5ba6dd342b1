//! The worker's request frame decoder on arbitrary bytes (the whole slice is the block a
//! descriptor points to). It must never panic; a frame it accepts must encode again and
//! decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tfgate_frame::{decode_request_bytes, encode_request_bytes};

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = decode_request_bytes(data).expect("scratch mapping") else {
        return;
    };
    let bytes = encode_request_bytes(&frame)
        .expect("scratch mapping")
        .expect("a decoded request encodes again");
    let again = decode_request_bytes(&bytes)
        .expect("scratch mapping")
        .expect("a re-encoded request decodes");
    assert_eq!(again, frame);
});
