//! The gateway's response frame decoder on arbitrary bytes (the whole slice is the block
//! a descriptor points to). It must never panic; a frame it accepts must encode again and
//! decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tfgate_frame::{decode_response_bytes, encode_response_bytes};
use tfgate_frame::{ResponseFrame, ResponseRef, TensorRef};

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = decode_response_bytes(data).expect("scratch mapping") else {
        return;
    };
    let bytes = match &frame {
        ResponseFrame::Ok {
            model_version,
            outputs,
            timing,
        } => {
            let refs: Vec<(&str, TensorRef<'_>)> = outputs
                .iter()
                .map(|(n, t)| (n.as_str(), TensorRef::from(t)))
                .collect();
            encode_response_bytes(ResponseRef::Ok {
                model_version: *model_version,
                outputs: &refs,
                timing: *timing,
            })
        }
        ResponseFrame::Err { code, message } => encode_response_bytes(ResponseRef::Err {
            code: *code,
            message,
        }),
    }
    .expect("scratch mapping")
    .expect("a decoded response encodes again");
    let again = decode_response_bytes(&bytes)
        .expect("scratch mapping")
        .expect("a re-encoded response decodes");
    assert_eq!(again, frame);
});
