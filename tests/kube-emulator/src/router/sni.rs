//! Reading the server name a TLS client asks for, without terminating TLS.
//!
//! A passthrough router must pick the backend before any TLS byte reaches
//! it, from the SNI extension of the client's first message (ClientHello),
//! and then hand the backend exactly the bytes the client sent. So the
//! bytes are buffered, not consumed: [`read_client_hello`] returns them for
//! the proxy to replay. A ClientHello may arrive in many TCP reads and may
//! even be fragmented over several TLS records (both are legal), so records
//! are reassembled until the whole handshake message is there. Record and
//! message parsing is `tls-parser`'s; this module only does the buffering.

use tls_parser::{
    parse_tls_extension, parse_tls_message_handshake, parse_tls_raw_record, SNIType, TlsExtension,
    TlsMessage, TlsMessageHandshake, TlsRecordType,
};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The most a client may send before its ClientHello is complete. Real
/// ClientHellos are a few hundred bytes to a few KiB (post-quantum key
/// shares make them larger); anything bigger is not worth buffering.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// Extension type of `server_name` (RFC 6066).
const SERVER_NAME_EXTENSION: u16 = 0;

/// The start of a TLS connection, read but not consumed.
#[derive(Debug)]
pub struct ClientHello {
    /// Every byte read from the client so far, to be sent to the backend
    /// before anything else.
    pub buffered: Vec<u8>,
    /// The host name from the SNI extension, lowercased and without a
    /// trailing dot; `None` when the client sent no SNI.
    pub server_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SniError {
    #[error(
        "the client closed the connection after {0} bytes, before its ClientHello was complete"
    )]
    Truncated(usize),
    #[error("the client sent more than {MAX_CLIENT_HELLO} bytes without completing a ClientHello")]
    TooLarge,
    #[error("not a TLS ClientHello: {0}")]
    NotClientHello(String),
    #[error("reading from the client: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads from `stream` until a whole ClientHello has arrived and returns it
/// with its server name. The caller bounds the time this may take.
pub async fn read_client_hello<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<ClientHello, SniError> {
    let mut buffered = Vec::with_capacity(1024);
    loop {
        if let Some(server_name) = parse(&buffered)? {
            return Ok(ClientHello {
                buffered,
                server_name,
            });
        }
        if buffered.len() >= MAX_CLIENT_HELLO {
            return Err(SniError::TooLarge);
        }
        let mut chunk = [0u8; 4096];
        let want = chunk.len().min(MAX_CLIENT_HELLO - buffered.len());
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(SniError::Truncated(buffered.len()));
        }
        buffered.extend_from_slice(&chunk[..n]);
    }
}

/// `Ok(None)` while more bytes are needed; `Ok(Some(server_name))` once
/// the ClientHello is complete.
fn parse(bytes: &[u8]) -> Result<Option<Option<String>>, SniError> {
    if let Some(&first) = bytes.first() {
        // Fail fast on plain HTTP and other protocols rather than waiting
        // for a record that will never make sense.
        if first != u8::from(TlsRecordType::Handshake) {
            return Err(SniError::NotClientHello(format!(
                "the first byte is {first:#04x}, not that of a TLS handshake record"
            )));
        }
    }
    // Reassemble the handshake layer from as many complete records as
    // there are.
    let mut handshake = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (after, record) = match parse_tls_raw_record(rest) {
            Ok(parsed) => parsed,
            Err(tls_parser::nom::Err::Incomplete(_)) => break,
            Err(e) => return Err(SniError::NotClientHello(format!("bad TLS record: {e:?}"))),
        };
        if record.hdr.record_type != TlsRecordType::Handshake {
            return Err(SniError::NotClientHello(format!(
                "the first record is of type {:?} instead of a handshake",
                record.hdr.record_type
            )));
        }
        handshake.extend_from_slice(record.data);
        rest = after;
    }
    // A handshake message is a type byte and a 24-bit length.
    if handshake.len() < 4 {
        return Ok(None);
    }
    let length = usize::from(handshake[1]) << 16
        | usize::from(handshake[2]) << 8
        | usize::from(handshake[3]);
    if handshake.len() < 4 + length {
        return Ok(None);
    }
    let hello = match parse_tls_message_handshake(&handshake[..4 + length]) {
        Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)))) => hello,
        Ok((_, other)) => {
            return Err(SniError::NotClientHello(format!(
                "the first handshake message is not a ClientHello: {other:?}"
            )))
        }
        Err(e) => {
            return Err(SniError::NotClientHello(format!(
                "malformed ClientHello: {e:?}"
            )))
        }
    };
    Ok(Some(server_name(hello.ext.unwrap_or_default())?))
}

/// Finds the `server_name` extension among the raw extensions and takes
/// its host name. Extensions are walked one by one rather than all parsed,
/// so that an extension tls-parser does not understand cannot hide the
/// server name.
fn server_name(mut extensions: &[u8]) -> Result<Option<String>, SniError> {
    while extensions.len() >= 4 {
        let kind = u16::from_be_bytes([extensions[0], extensions[1]]);
        let length = usize::from(u16::from_be_bytes([extensions[2], extensions[3]]));
        let Some(extension) = extensions.get(..4 + length) else {
            return Err(SniError::NotClientHello(
                "an extension overruns the ClientHello".into(),
            ));
        };
        if kind == SERVER_NAME_EXTENSION {
            let names = match parse_tls_extension(extension) {
                Ok((_, TlsExtension::SNI(names))) => names,
                _ => {
                    return Err(SniError::NotClientHello(
                        "malformed server_name extension".into(),
                    ))
                }
            };
            let Some((_, name)) = names
                .into_iter()
                .find(|(kind, _)| *kind == SNIType::HostName)
            else {
                return Ok(None);
            };
            let name = std::str::from_utf8(name)
                .map_err(|_| SniError::NotClientHello("the SNI host name is not UTF-8".into()))?;
            return Ok(Some(name.trim_end_matches('.').to_ascii_lowercase()));
        }
        extensions = &extensions[4 + length..];
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The first flight of a real rustls client connecting to `name`.
    fn real_client_hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let server_name =
            rustls::pki_types::ServerName::try_from(name.to_string()).expect("a DNS name");
        let mut connection = rustls::ClientConnection::new(Arc::new(config), server_name)
            .expect("client connection");
        let mut bytes = Vec::new();
        connection
            .write_tls(&mut bytes)
            .expect("writing the ClientHello to memory");
        bytes
    }

    /// Feeds `bytes` in chunks of `chunk` bytes through a pipe.
    async fn read_in_chunks(bytes: Vec<u8>, chunk: usize) -> Result<ClientHello, SniError> {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in bytes.chunks(chunk) {
                if client.write_all(piece).await.is_err() {
                    return;
                }
                client.flush().await.ok();
                tokio::task::yield_now().await;
            }
        });
        let result = read_client_hello(&mut server).await;
        writer.abort();
        result
    }

    #[tokio::test]
    async fn finds_the_server_name_of_a_real_client_hello_read_one_byte_at_a_time() {
        let bytes = real_client_hello("Receiver-NS.apps.example.test");
        let hello = read_in_chunks(bytes.clone(), 1)
            .await
            .expect("a ClientHello");
        assert_eq!(
            hello.server_name.as_deref(),
            Some("receiver-ns.apps.example.test")
        );
        assert_eq!(
            hello.buffered, bytes,
            "every byte read is kept for the backend"
        );
    }

    #[tokio::test]
    async fn reassembles_a_client_hello_fragmented_over_several_records() {
        let bytes = real_client_hello("fragmented.example.test");
        // Re-frame the handshake message into records of at most 100 bytes.
        let handshake = &bytes[5..];
        let mut fragmented = Vec::new();
        for piece in handshake.chunks(100) {
            fragmented.extend_from_slice(&[22, 3, 1]);
            fragmented.extend_from_slice(&(piece.len() as u16).to_be_bytes());
            fragmented.extend_from_slice(piece);
        }
        let hello = read_in_chunks(fragmented.clone(), 7)
            .await
            .expect("a ClientHello");
        assert_eq!(
            hello.server_name.as_deref(),
            Some("fragmented.example.test")
        );
        assert_eq!(hello.buffered, fragmented);
    }

    #[tokio::test]
    async fn a_client_hello_without_sni_has_no_server_name() {
        // rustls sends no SNI for an IP address.
        let bytes = real_client_hello("127.0.0.1");
        let hello = read_in_chunks(bytes, 4096).await.expect("a ClientHello");
        assert_eq!(hello.server_name, None);
    }

    #[tokio::test]
    async fn plain_http_is_refused_at_once() {
        let error = read_in_chunks(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 4096)
            .await
            .expect_err("not TLS");
        assert!(matches!(error, SniError::NotClientHello(_)), "{error}");
    }

    #[tokio::test]
    async fn a_client_hello_cut_short_is_reported_as_truncated() {
        let mut bytes = real_client_hello("cut.example.test");
        bytes.truncate(bytes.len() / 2);
        let length = bytes.len();
        let error = read_in_chunks(bytes, 4096).await.expect_err("incomplete");
        assert!(
            matches!(error, SniError::Truncated(n) if n == length),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_endless_handshake_is_cut_off_at_the_size_limit() {
        // A handshake message header announcing 16 MiB, then records of
        // filler: the reader must give up at the bound, not buffer it all.
        let mut bytes = vec![22, 3, 1, 0x40, 0x00, 1, 0xff, 0xff, 0xff];
        bytes.extend(std::iter::repeat_n(0u8, 0x4000 - 4));
        let record = bytes.clone();
        let mut stream = Vec::new();
        while stream.len() < 2 * MAX_CLIENT_HELLO {
            stream.extend_from_slice(&record);
        }
        let error = read_in_chunks(stream, 4096).await.expect_err("too large");
        assert!(matches!(error, SniError::TooLarge), "{error}");
    }
}
