//! Frames: a 4-byte big-endian length, a tag byte, then either one
//! postcard-encoded message or raw file data.
//!
//! File data is the bulk of every transfer, so it bypasses serialization:
//! the writer sends the caller's buffer straight into TLS, and the reader
//! hands it out as a [`Bytes`] split off its read buffer, with no copy on
//! either side.
//!
//! The length is checked against [`MAX_FRAME`] before anything is allocated,
//! so a peer announcing a 4 GiB frame costs us four bytes of reading, and
//! postcard refuses any inner length larger than the bytes actually present.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use tokio_util::codec::{Decoder, Encoder};

/// Largest frame either side sends or accepts. Data chunks are smaller
/// ([`DATA_CHUNK`]); the headroom is for a delta of one segment plus framing.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;

/// Size of the file-data chunks a sender puts in one frame: large enough
/// that per-message costs (wakeups, framing) vanish next to the bytes.
pub const DATA_CHUNK: usize = 1024 * 1024;

/// Messages queued between two stages of one side. With data chunks of
/// [`DATA_CHUNK`] this bounds each queue to 16 MiB, which is what keeps a
/// side's memory flat however large the volume.
pub const QUEUED_FRAMES: usize = 16;

const TAG_MESSAGE: u8 = 0;
const TAG_DATA: u8 = 1;

/// A message type that may carry raw file data outside serde.
pub trait Message: Serialize + DeserializeOwned + Sized {
    /// Bytes this message holds beyond its fixed size (data, paths, lists):
    /// what bounds a batch of messages in memory, whatever their kind.
    fn payload_len(&self) -> usize;
    /// The protocol version a frame body announces if it is this type's
    /// opening message from a peer of another version; checked before the
    /// body is decoded, whose shape that version may not share.
    fn foreign_version(_body: &[u8]) -> Option<u32> {
        None
    }
    /// The raw data this message carries, if it is a data message.
    fn data(&self) -> Option<&Bytes> {
        None
    }
    /// The data message for `data`; `None` if this type has none.
    fn from_data(_data: Bytes) -> Option<Self> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte maximum")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("refused {0}")]
    BadPath(String),
    #[error("unknown frame tag {0}")]
    BadTag(u8),
    #[error("empty frame")]
    Empty,
    #[error("the peer speaks mover protocol {0}, this end speaks {ours}", ours = super::PROTOCOL_VERSION)]
    Version(u32),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Appends the frame for `msg` to `dst`. For a data message only the
/// header goes into `dst`, and the data is returned to be written after it.
pub fn encode<'a, M: Message>(
    msg: &'a M,
    dst: &mut BytesMut,
) -> Result<Option<&'a Bytes>, FrameError> {
    if let Some(data) = msg.data() {
        let len = data.len() + 1;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        dst.put_u32(len as u32);
        dst.put_u8(TAG_DATA);
        return Ok(Some(data));
    }
    let start = dst.len();
    dst.put_u32(0);
    dst.put_u8(TAG_MESSAGE);
    let mut writer = dst.writer();
    postcard::to_io(msg, &mut writer)?;
    let dst = writer.into_inner();
    let len = dst.len() - start - 4;
    if len > MAX_FRAME {
        dst.truncate(start);
        return Err(FrameError::TooLarge(len));
    }
    dst[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(None)
}

/// Decodes `In` messages (and encodes `Out` ones, for tools and tests that
/// want a plain `Sink`).
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

impl<In: Message, Out> Decoder for Codec<In, Out> {
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
        let mut body = src.split_to(len);
        if body.is_empty() {
            return Err(FrameError::Empty);
        }
        let tag = body[0];
        body.advance(1);
        match tag {
            TAG_MESSAGE => {
                if let Some(theirs) = In::foreign_version(&body) {
                    return Err(FrameError::Version(theirs));
                }
                crate::entry::take_refused_path();
                postcard::from_bytes(&body).map(Some).map_err(|e| {
                    match (&e, crate::entry::take_refused_path()) {
                        (postcard::Error::SerdeDeCustom, Some(path)) => FrameError::BadPath(path),
                        _ => FrameError::Malformed(e),
                    }
                })
            }
            TAG_DATA => In::from_data(body.freeze())
                .map(Some)
                .ok_or(FrameError::BadTag(tag)),
            other => Err(FrameError::BadTag(other)),
        }
    }
}

impl<In, Out: Message> Encoder<Out> for Codec<In, Out> {
    type Error = FrameError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), FrameError> {
        if let Some(data) = encode(&item, dst)? {
            dst.extend_from_slice(data);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Msg {
        Small(Vec<u8>),
        #[serde(skip)]
        Data(Bytes),
    }

    impl Message for Msg {
        fn payload_len(&self) -> usize {
            match self {
                Msg::Small(v) => v.len(),
                Msg::Data(d) => d.len(),
            }
        }
        fn data(&self) -> Option<&Bytes> {
            match self {
                Msg::Data(d) => Some(d),
                _ => None,
            }
        }
        fn from_data(data: Bytes) -> Option<Self> {
            Some(Msg::Data(data))
        }
    }

    impl Message for Vec<u8> {
        fn payload_len(&self) -> usize {
            self.len()
        }
    }

    #[test]
    fn round_trip_and_partial_input() {
        let mut codec = Codec::<Msg, Msg>::default();
        let mut buf = BytesMut::new();
        codec.encode(Msg::Small(vec![1, 2, 3]), &mut buf).unwrap();
        codec
            .encode(Msg::Data(Bytes::from_static(b"file data")), &mut buf)
            .unwrap();
        let mut partial = buf.split_to(3);
        assert!(codec.decode(&mut partial).unwrap().is_none());
        partial.unsplit(buf);
        assert_eq!(
            codec.decode(&mut partial).unwrap(),
            Some(Msg::Small(vec![1, 2, 3]))
        );
        assert_eq!(
            codec.decode(&mut partial).unwrap(),
            Some(Msg::Data(Bytes::from_static(b"file data")))
        );
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
        let body = [TAG_MESSAGE, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20];
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32);
        buf.put_slice(&body);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn refuses_unknown_tags_and_data_where_none_is_expected() {
        let mut codec = Codec::<Vec<u8>, Vec<u8>>::default();
        for body in [&[7u8, 1][..], &[TAG_DATA, 1, 2][..], &[][..]] {
            let mut buf = BytesMut::new();
            buf.put_u32(body.len() as u32);
            buf.put_slice(body);
            assert!(codec.decode(&mut buf).is_err(), "accepted {body:?}");
        }
    }
}
