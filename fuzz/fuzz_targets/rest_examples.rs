//! A REST `:classify` / `:regress` body through the gateway's JSON parser and examples
//! decoder (`tfgate::fuzzing`). No panic; every `tf.Example` it builds decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tfgate::fuzzing::rest_examples(data));
