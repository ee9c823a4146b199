//! SPDY/3.1 framing, the server's half, sans I/O: as much of it as
//! kubectl's port-forward needs (moby/spdystream is its client). kubectl
//! 1.32 tunnels this through a WebSocket (`SPDY/3.1+portforward.k8s.io`,
//! binary messages as one byte stream). The client opens streams
//! (SYN_STREAM, with a zlib-deflated header block), the server accepts each
//! (SYN_REPLY), both send DATA and half-close with the FIN flag, RST_STREAM
//! aborts a stream and PINGs are echoed. Flow control (WINDOW_UPDATE) and
//! SETTINGS are ignored, as spdystream ignores them.
//!
//! Control frame: `1 | version(15) | type(16) | flags(8) | length(24) |
//! data`; data frame: `0 | stream(31) | flags(8) | length(24) | data`.
//! Header blocks: a count, then length-prefixed names and values (all
//! 32-bit big endian), deflated as one zlib stream per direction and
//! connection, with the dictionary of the SPDY/3 specification.

use std::sync::OnceLock;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;
/// The largest header block accepted, inflated (spdystream's limit too).
const MAX_HEADERS: usize = 1 << 20;

/// A frame from the client, as far as the server acts on it.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    RstStream {
        stream: u32,
    },
    Ping(u32),
    GoAway,
    /// SETTINGS, WINDOW_UPDATE, HEADERS and frames a server never gets.
    Ignored,
}

/// What makes a client's bytes unreadable as SPDY/3.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY control frame of version {0}, not 3")]
    Version(u16),
    #[error("SPDY {kind} frame too short ({length} bytes)")]
    Short { kind: &'static str, length: usize },
    #[error("SPDY header block: {0}")]
    Headers(String),
}

/// Reads frames out of the client's byte stream.
pub struct Reader {
    buffer: BytesMut,
    inflate: Decompress,
}

impl Default for Reader {
    fn default() -> Self {
        Self {
            buffer: BytesMut::new(),
            inflate: Decompress::new(true),
        }
    }
}

impl Reader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived.
    pub fn next(&mut self) -> Result<Option<Frame>, SpdyError> {
        if self.buffer.len() < 8 {
            return Ok(None);
        }
        let length = usize::from(self.buffer[5]) << 16
            | usize::from(self.buffer[6]) << 8
            | usize::from(self.buffer[7]);
        if self.buffer.len() < 8 + length {
            return Ok(None);
        }
        let mut frame = self.buffer.split_to(8 + length).freeze();
        let first = frame.get_u32();
        let flags = frame.get_u8();
        frame.advance(3);
        let fin = flags & FLAG_FIN != 0;
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream: first,
                fin,
                data: frame,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let short = |kind, need| {
            if length < need {
                Err(SpdyError::Short { kind, length })
            } else {
                Ok(())
            }
        };
        Ok(Some(match (first & 0xffff) as u16 {
            SYN_STREAM => {
                short("SYN_STREAM", 10)?;
                let stream = frame.get_u32() & 0x7fff_ffff;
                frame.advance(6); // associated stream, priority, slot
                let headers = self.headers(&frame)?;
                Frame::SynStream {
                    stream,
                    fin,
                    headers,
                }
            }
            RST_STREAM => {
                short("RST_STREAM", 8)?;
                Frame::RstStream {
                    stream: frame.get_u32() & 0x7fff_ffff,
                }
            }
            PING => {
                short("PING", 4)?;
                Frame::Ping(frame.get_u32())
            }
            GOAWAY => Frame::GoAway,
            _ => Frame::Ignored,
        }))
    }

    /// Inflates and parses one header block (the zlib stream goes on
    /// across blocks; the first asks for the dictionary).
    fn headers(&mut self, mut block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let mut plain = Vec::with_capacity(block.len() * 4);
        while !block.is_empty() {
            if plain.len() == plain.capacity() {
                if plain.len() >= MAX_HEADERS {
                    return Err(SpdyError::Headers("larger than 1 MiB".into()));
                }
                plain.reserve(plain.len().max(256));
            }
            let before = self.inflate.total_in();
            match self
                .inflate
                .decompress_vec(block, &mut plain, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(error) if error.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| SpdyError::Headers(e.to_string()))?;
                }
                Err(error) => return Err(SpdyError::Headers(error.to_string())),
            }
            let used = (self.inflate.total_in() - before) as usize;
            if used == 0 && plain.len() < plain.capacity() {
                return Err(SpdyError::Headers("the deflate stream stalled".into()));
            }
            block = &block[used..];
        }
        parse_headers(&plain)
    }
}

fn parse_headers(mut plain: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    fn text(plain: &mut &[u8]) -> Result<String, SpdyError> {
        if plain.len() < 4 {
            return Err(SpdyError::Headers("truncated".into()));
        }
        let length = plain.get_u32() as usize;
        if plain.len() < length {
            return Err(SpdyError::Headers("truncated".into()));
        }
        let value = String::from_utf8_lossy(&plain[..length]).into_owned();
        plain.advance(length);
        Ok(value)
    }
    if plain.len() < 4 {
        return Err(SpdyError::Headers("no header count".into()));
    }
    let count = plain.get_u32();
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = text(&mut plain)?;
        let value = text(&mut plain)?;
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

/// Writes the server's frames. Only SYN_REPLY carries a header block (the
/// deflate state is the connection's); the others are plain.
pub struct Writer {
    deflate: Compress,
}

impl Default for Writer {
    fn default() -> Self {
        Self {
            deflate: Compress::new(Compression::default(), true),
        }
    }
}

impl Writer {
    /// Accepts `stream`, with no headers.
    pub fn syn_reply(&mut self, stream: u32) -> Bytes {
        // An empty header block: a count of zero, flushed so the client
        // can inflate it now.
        let mut block = Vec::with_capacity(64);
        let _ = self
            .deflate
            .compress_vec(&0u32.to_be_bytes(), &mut block, FlushCompress::Sync);
        let mut body = BytesMut::with_capacity(4 + block.len());
        body.put_u32(stream & 0x7fff_ffff);
        body.put_slice(&block);
        control(SYN_REPLY, 0, &body)
    }
}

pub fn data(stream: u32, data: &[u8], fin: bool) -> Bytes {
    let mut frame = BytesMut::with_capacity(8 + data.len());
    frame.put_u32(stream & 0x7fff_ffff);
    frame.put_u8(if fin { FLAG_FIN } else { 0 });
    frame.put_uint(data.len() as u64, 3);
    frame.put_slice(data);
    frame.freeze()
}

pub fn ping(id: u32) -> Bytes {
    control(PING, 0, &id.to_be_bytes())
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(8 + body.len());
    frame.put_u16(0x8000 | VERSION);
    frame.put_u16(kind);
    frame.put_u8(flags);
    frame.put_uint(body.len() as u64, 3);
    frame.put_slice(body);
    frame.freeze()
}

/// The header compression dictionary of SPDY/3 (draft-mbelshe-httpbis-spdy
/// section 2.6.10.1): length-prefixed header names and values, then a run
/// of common value fragments. 1423 bytes.
pub fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414",
            "415416417502504505203 Non-Authoritative Information204 No Content",
            "301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden",
            "404 Not Found500 Internal Server Error501 Not Implemented",
            "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
            " 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,",
            "image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
            "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
            "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut dictionary = Vec::with_capacity(1423);
        for word in WORDS {
            dictionary.extend_from_slice(&(word.len() as u32).to_be_bytes());
            dictionary.extend_from_slice(word.as_bytes());
        }
        dictionary.extend_from_slice(TAIL.as_bytes());
        dictionary
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's SYN_STREAM, deflated with the dictionary as spdystream
    /// does.
    fn syn_stream(deflate: &mut Compress, stream: u32, headers: &[(&str, &str)]) -> Bytes {
        let mut plain = Vec::new();
        plain.put_u32(headers.len() as u32);
        for (name, value) in headers {
            plain.put_u32(name.len() as u32);
            plain.put_slice(name.as_bytes());
            plain.put_u32(value.len() as u32);
            plain.put_slice(value.as_bytes());
        }
        let mut block = Vec::with_capacity(plain.len() + 64);
        deflate
            .compress_vec(&plain, &mut block, FlushCompress::Sync)
            .unwrap();
        let mut body = BytesMut::new();
        body.put_u32(stream);
        body.put_u32(0);
        body.put_u16(0);
        body.put_slice(&block);
        control(SYN_STREAM, 0, &body)
    }

    #[test]
    fn the_dictionary_is_the_specifications() {
        assert_eq!(dictionary().len(), 1423);
        assert_eq!(&dictionary()[..11], b"\0\0\0\x07options");
        assert!(dictionary().ends_with(b"enq=0."));
    }

    #[test]
    fn streams_are_read_across_header_blocks_and_split_writes() {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate.set_dictionary(dictionary()).unwrap();
        let first = syn_stream(&mut deflate, 1, &[("streamType", "error"), ("port", "80")]);
        let second = syn_stream(&mut deflate, 3, &[("streamType", "data"), ("port", "80")]);
        let mut reader = Reader::default();
        // One byte at a time: frames are whole only when all has come.
        for byte in first.iter().chain(second.iter()) {
            reader.push(&[*byte]);
        }
        reader.push(&data(3, b"GET /", true));
        reader.push(&ping(7));
        let frames: Vec<Frame> = std::iter::from_fn(|| reader.next().unwrap()).collect();
        assert_eq!(
            frames,
            [
                Frame::SynStream {
                    stream: 1,
                    fin: false,
                    headers: vec![
                        ("streamtype".into(), "error".into()),
                        ("port".into(), "80".into())
                    ],
                },
                Frame::SynStream {
                    stream: 3,
                    fin: false,
                    headers: vec![
                        ("streamtype".into(), "data".into()),
                        ("port".into(), "80".into())
                    ],
                },
                Frame::Data {
                    stream: 3,
                    fin: true,
                    data: Bytes::from_static(b"GET /")
                },
                Frame::Ping(7),
            ]
        );
    }

    #[test]
    fn replies_inflate_for_a_client_that_holds_the_dictionary() {
        let mut writer = Writer::default();
        let mut inflate = Decompress::new(true);
        for stream in [1, 3] {
            let reply = writer.syn_reply(stream);
            assert_eq!(&reply[..4], &[0x80, 3, 0, 2]);
            assert_eq!(u32::from_be_bytes(reply[8..12].try_into().unwrap()), stream);
            let mut plain = Vec::with_capacity(64);
            inflate
                .decompress_vec(&reply[12..], &mut plain, FlushDecompress::Sync)
                .unwrap();
            assert_eq!(plain, [0, 0, 0, 0]);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut reader = Reader::default();
        reader.push(&[0x80, 2, 0, 1, 0, 0, 0, 0]);
        assert!(matches!(reader.next(), Err(SpdyError::Version(2))));
        let mut reader = Reader::default();
        reader.push(&control(
            SYN_STREAM,
            0,
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3],
        ));
        assert!(matches!(reader.next(), Err(SpdyError::Headers(_))));
        let mut reader = Reader::default();
        reader.push(&control(RST_STREAM, 0, &[0, 0]));
        assert!(matches!(reader.next(), Err(SpdyError::Short { .. })));
    }
}
