//! The sender's `mover::delta::diff` against an arbitrary signature (as a
//! hostile receiver could send): never a panic or a hang, and any delta it
//! produces is well-formed.

#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::delta_diff(data));
