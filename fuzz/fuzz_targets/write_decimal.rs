//! A float's and a double's bits through TF Serving's `WriteDecimal` as the gateway prints
//! REST outputs (`rest/json/float.rs`, integer arithmetic first): the same text as the
//! literal algorithm (`%g`, read back, else full precision).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tfgate::fuzzing::write_decimal(data));
