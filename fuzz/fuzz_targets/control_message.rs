//! Control-socket message bodies (after the length prefix) decoded as both directions'
//! messages. Decoding must never panic; a message that decodes must frame again and be
//! read back through the length-prefixed reader, to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tfgate_frame::control;
use tfgate_proto::control::{GatewayMessage, WorkerMessage};

fn check<M: Message + Default>(data: &[u8]) {
    let Ok(msg) = control::decode::<M>(data) else {
        return;
    };
    // Never larger than the input (unknown fields are dropped), so never over the limit.
    let framed = control::encode(&msg).expect("a decoded message frames again");
    let again: M = control::read_message(&mut framed.as_slice()).expect("and reads back");
    // Byte for byte: maps are BTreeMaps (encoded in key order), and comparing encodings
    // holds a NaN in a float field to its own bits where `==` could not.
    assert_eq!(again.encode_to_vec(), msg.encode_to_vec());
}

fuzz_target!(|data: &[u8]| {
    check::<GatewayMessage>(data);
    check::<WorkerMessage>(data);
});
