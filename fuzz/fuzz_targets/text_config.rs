//! The text-format config files the gateway reads (first byte: model config, batching
//! parameters, monitoring config, SSL config), parsed and checked as at startup
//! (`tfgate::fuzzing`). No panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tfgate::fuzzing::text_config(data));
