//! Length-prefixed frames: a 4-byte big-endian length, then one
//! postcard-encoded message.
//!
//! The length is checked against [`MAX_FRAME`] before anything is allocated,
//! so a peer announcing a 4 GiB frame costs us four bytes of reading, and
//! postcard refuses any inner length larger than the bytes actually present.

use bytes::{Buf, BufMut, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use tokio_util::codec::{Decoder, Encoder};

/// Largest frame either side sends or accepts. Data chunks are far smaller
/// ([`DATA_CHUNK`]); the headroom is for a delta of one segment plus framing.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;

/// Size of the file-data chunks a sender puts in one frame: large enough
/// that per-message costs (wakeups, framing) vanish next to the bytes.
pub const DATA_CHUNK: usize = 1024 * 1024;

/// Messages queued between two stages of one side. With data chunks of
/// [`DATA_CHUNK`] this bounds each queue to 16 MiB, which is what keeps a
/// side's memory flat however large the volume.
pub const QUEUED_FRAMES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte maximum")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Encodes `Out` messages and decodes `In` messages.
pub struct Codec<In, Out> {
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> Default for Codec<In, Out> {
    fn default() -> Self {
        Codec {
            _types: PhantomData,
        }
    }
}

impl<In: DeserializeOwned, Out> Decoder for Codec<In, Out> {
    type Item = In;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let body = src.split_to(len);
        Ok(Some(postcard::from_bytes(&body)?))
    }
}

impl<In, Out: Serialize> Encoder<Out> for Codec<In, Out> {
    type Error = FrameError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), FrameError> {
        let start = dst.len();
        dst.put_u32(0);
        let mut writer = dst.writer();
        postcard::to_io(&item, &mut writer)?;
        let dst = writer.into_inner();
        let len = dst.len() - start - 4;
        if len > MAX_FRAME {
            dst.truncate(start);
            return Err(FrameError::TooLarge(len));
        }
        dst[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_partial_input() {
        let mut codec = Codec::<Vec<u8>, Vec<u8>>::default();
        let mut buf = BytesMut::new();
        codec.encode(vec![1, 2, 3], &mut buf).unwrap();
        codec.encode(vec![4], &mut buf).unwrap();
        let mut partial = buf.split_to(3);
        assert!(codec.decode(&mut partial).unwrap().is_none());
        partial.unsplit(buf);
        assert_eq!(codec.decode(&mut partial).unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(codec.decode(&mut partial).unwrap(), Some(vec![4]));
        assert!(codec.decode(&mut partial).unwrap().is_none());
    }

    #[test]
    fn refuses_huge_length_before_reading_it() {
        let mut codec = Codec::<Vec<u8>, Vec<u8>>::default();
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge(0xffff_ffff))
        ));
    }

    #[test]
    fn refuses_lying_inner_length() {
        // A frame whose body claims a 2^40-element vector but holds 2 bytes.
        let mut codec = Codec::<Vec<u8>, Vec<u8>>::default();
        let body = [0x80, 0x80, 0x80, 0x80, 0x80, 0x20];
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32);
        buf.put_slice(&body);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::Malformed(_))
        ));
    }
}
