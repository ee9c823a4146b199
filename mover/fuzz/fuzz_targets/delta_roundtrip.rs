//! A base and an edited copy built from the input, through our own
//! `signature`, `diff` and `apply`: the edited copy comes back exactly.

#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::delta_roundtrip(data));
