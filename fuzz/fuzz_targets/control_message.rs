//! Control-socket message bodies (after the length prefix) decoded as both directions'
//! messages. Decoding must never panic; a message that decodes must frame again and be
//! read back through the length-prefixed reader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use shm_protocol::control;
use tfgate_proto::tfgate::control::{GatewayMessage, WorkerMessage};

fn check<M: Message + Default>(data: &[u8]) {
    let Ok(msg) = control::decode::<M>(data) else {
        return;
    };
    // Never larger than the input (unknown fields are dropped), so never over the limit.
    let framed = control::encode(&msg).expect("a decoded message frames again");
    let again: M = control::read_message(&mut framed.as_slice()).expect("and reads back");
    // Not `==`: float fields may hold NaN, and map fields encode in hash order.
    assert_eq!(again.encoded_len(), msg.encoded_len());
}

fuzz_target!(|data: &[u8]| {
    check::<GatewayMessage>(data);
    check::<WorkerMessage>(data);
});
