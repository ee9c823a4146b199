//! Arbitrary bytes as a stream of frames, decoded in both directions
//! (`Codec::<ToReceiver, ToSender>` and `Codec::<ToSender, ToReceiver>`):
//! never a panic, the same messages however the bytes arrive, and every
//! decoded message re-encodes to a frame that decodes to the same message.

#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::frame_decoder(data));
