//! A REST `:predict` body through the gateway's JSON parser and predict decoder, against
//! signatures of one input of each dtype and of several inputs (`tfgate::fuzzing`). No
//! panic; decoded tensors are consistent; the encoder's JSON for them parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tfgate::fuzzing::rest_predict(data));
