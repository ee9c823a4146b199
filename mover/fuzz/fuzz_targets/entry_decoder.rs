//! Arbitrary bytes as a postcard `Entry` (and as a raw `RelPath`): never
//! a panic, every decoded path confined to the volume, and every entry
//! `validate` accepts within the limits it promises.

#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::entry_decoder(data));
