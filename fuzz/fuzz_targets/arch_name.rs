//! Fuzz target `arch_name`: see `arch_name` in tests/common/fuzz_harness.rs, shared with the
//! test that replays the stored corpus.
#![no_main]

#[allow(dead_code)] // each target uses one of the harness functions
#[path = "../../tests/common/fuzz_harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::arch_name(data));
