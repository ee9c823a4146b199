//! A (limit, base, delta) triple through `mover::delta::apply`: never a
//! panic, never more than `limit` bytes written, and the same verdict and
//! output as an independent reading of the delta format.

#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::delta_apply(data));
