//! A KServe V2 REST infer body with its `Inference-Header-Content-Length` through the
//! gateway's decoder (`tfgate::fuzzing::v2_infer`): JSON header, binary split, raw binary
//! requests. No panic; every byte accounted for; decoded inputs make consistent tensors.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tfgate::fuzzing::v2_infer(data));
