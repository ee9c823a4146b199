//! HTTP CONNECT proxies: where a sender may only reach the receiver
//! through a forward proxy (a corporate egress proxy, a squid in front of
//! a cluster), it opens a tunnel with `CONNECT host:port`, as stunnel's
//! `protocol = connect` does, and runs TLS to the receiver inside it. The
//! proxy sees only the receiver's address and the TLS handshake; the
//! server name (SNI) and the certificate check stay the receiver's.
//!
//! Only an explicit `--proxy` is used: `HTTPS_PROXY` and `NO_PROXY` are
//! meant for HTTP clients and are often set cluster-wide in pods, where
//! they would silently send a volume's data through a proxy the
//! migration plan never named.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::failure::Failure;

/// An HTTP proxy, from `http://[user:password@]host:port`.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// The URL as given, credentials included.
    url: String,
    /// `host:port` (an IPv6 host in brackets), to connect to.
    authority: String,
    /// User and password, percent-decoded.
    credentials: Option<(String, String)>,
}

/// The longest answer head a proxy may send to CONNECT.
const MAX_HEAD: usize = 16 * 1024;

impl FromStr for Proxy {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("proxy {:?}: {why}", redact(url));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected http://[USER:PASSWORD@]HOST:PORT"))?;
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad(&format!(
                "only http:// proxies are supported (the tunnel carries TLS already), not {scheme}://"
            )));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(bad("a proxy URL has no path"));
        }
        let (userinfo, authority) = match rest.rsplit_once('@') {
            Some((userinfo, authority)) => (Some(userinfo), authority),
            None => (None, rest),
        };
        let credentials = userinfo
            .map(|info| {
                let (user, password) = info.split_once(':').unwrap_or((info, ""));
                Ok::<_, String>((percent_decode(user)?, percent_decode(password)?))
            })
            .transpose()
            .map_err(|e| bad(&e))?;
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| bad("expected HOST:PORT (the port is required)"))?;
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        if host.is_empty() || (bare.is_none() && host.contains(':')) {
            return Err(bad("expected HOST:PORT (an IPv6 address in brackets)"));
        }
        port.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad(&format!("port {port:?} is not a port number")))?;
        Ok(Proxy {
            url: url.to_string(),
            authority: authority.to_string(),
            credentials,
        })
    }
}

impl fmt::Display for Proxy {
    /// The URL without credentials, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

/// Serialized without credentials (a plan recorded in a cluster resource
/// must not carry a password).
impl serde::Serialize for Proxy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proxy({self})")
    }
}

impl Proxy {
    /// The URL as given, credentials included: for handing on to another
    /// `mover send --proxy`, never for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connects to the proxy and asks it for a tunnel to `target`
    /// (`host:port`); returns the connection, ready for the TLS handshake
    /// with the receiver.
    ///
    /// A proxy that cannot be reached, or answers 502/503/504 (it could
    /// not reach the receiver), 408 or 429, fails retryably; any other
    /// refusal (407 wrong or missing credentials, 403 a forbidden
    /// destination) fails for good, naming the proxy and its status line.
    pub async fn tunnel(&self, target: &str) -> Result<TcpStream, Failure> {
        let mut tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| Failure::retryable(format!("connecting to proxy {self}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        tcp.write_all(self.request(target).as_bytes())
            .await
            .map_err(|e| Failure::retryable(format!("proxy {self}: sending CONNECT: {e}")))?;
        let head = read_head(&mut tcp).await.map_err(|e| {
            Failure::retryable(format!(
                "proxy {self}: reading its answer to CONNECT {target}: {e}"
            ))
        })?;
        let status_line = head.lines().next().unwrap_or_default().trim();
        let code = status_code(status_line).ok_or_else(|| {
            Failure::permanent(format!(
                "proxy {self} answered CONNECT {target} with {status_line:?}, not HTTP"
            ))
        })?;
        if (200..300).contains(&code) {
            return Ok(tcp);
        }
        let hint = match (code, &self.credentials) {
            (407, None) => " (it wants credentials: --proxy http://USER:PASSWORD@HOST:PORT)",
            (407, Some(_)) => " (it refused the credentials given)",
            _ => "",
        };
        let message = format!("proxy {self} refused CONNECT {target}: {status_line}{hint}");
        Err(if matches!(code, 408 | 429 | 502 | 503 | 504) {
            Failure::retryable(message)
        } else {
            Failure::permanent(message)
        })
    }

    /// The CONNECT request for `target`.
    fn request(&self, target: &str) -> String {
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some((user, password)) = &self.credentials {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request += &format!("Proxy-Authorization: Basic {token}\r\n");
        }
        request + "\r\n"
    }
}

/// Reads the proxy's answer head up to its blank line, a byte at a time so
/// that nothing of the tunnel behind it is consumed.
async fn read_head(tcp: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() == MAX_HEAD {
            return Err(std::io::Error::other(format!(
                "no end of headers in its first {MAX_HEAD} bytes"
            )));
        }
        match tcp.read_u8().await {
            Ok(byte) => head.push(byte),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(std::io::Error::new(
                    e.kind(),
                    "the proxy closed the connection without answering",
                ))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The status code of `HTTP/1.x NNN reason`.
fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

/// `%XX` escapes decoded (so a password may hold `@` or `:`).
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a % in the credentials must start an escape like %40")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the credentials are not UTF-8 once unescaped".to_string())
}

/// `url` with any password replaced, for messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (userinfo, authority) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{authority}")
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proxy_urls() {
        let p: Proxy = "http://squid.corp:3128".parse().unwrap();
        assert_eq!(p.authority, "squid.corp:3128");
        assert_eq!(p.credentials, None);
        assert_eq!(p.to_string(), "http://squid.corp:3128");
        let p: Proxy = "HTTP://al%40ice:p%3Ass:w@[::1]:8080/".parse().unwrap();
        assert_eq!(p.authority, "[::1]:8080");
        assert_eq!(
            p.credentials,
            Some(("al@ice".to_string(), "p:ss:w".to_string()))
        );
        assert_eq!(p.to_string(), "http://[::1]:8080", "no credentials shown");
        assert_eq!(format!("{p:?}"), "Proxy(http://[::1]:8080)");
        assert_eq!(p.url(), "HTTP://al%40ice:p%3Ass:w@[::1]:8080/");
        assert_eq!(serde_json::to_string(&p).unwrap(), r#""http://[::1]:8080""#);
    }

    #[test]
    fn refuses_what_is_not_an_http_proxy_url() {
        for (url, why) in [
            ("squid:3128", "expected http://"),
            ("https://squid:3128", "only http:// proxies"),
            ("socks5://squid:1080", "only http:// proxies"),
            ("http://squid", "the port is required"),
            ("http://squid:0", "not a port number"),
            ("http://squid:http", "not a port number"),
            ("http://:3128", "expected HOST:PORT"),
            ("http://::1:3128", "IPv6 address in brackets"),
            ("http://squid:3128/path", "no path"),
            ("http://u:%zz@squid:3128", "must start an escape"),
        ] {
            let error = url.parse::<Proxy>().unwrap_err();
            assert!(error.contains(why), "{url}: {error}");
        }
        let error = "https://bob:secret@squid:3128"
            .parse::<Proxy>()
            .unwrap_err();
        assert!(!error.contains("secret"), "{error}");
        assert!(error.contains("bob:***@squid:3128"), "{error}");
    }

    #[test]
    fn connect_request_carries_host_and_basic_credentials() {
        let p: Proxy = "http://squid:3128".parse().unwrap();
        assert_eq!(
            p.request("route.example:443"),
            "CONNECT route.example:443 HTTP/1.1\r\nHost: route.example:443\r\n\r\n"
        );
        let p: Proxy = "http://Aladdin:open%20sesame@squid:3128".parse().unwrap();
        assert_eq!(
            p.request("10.0.0.1:443"),
            "CONNECT 10.0.0.1:443 HTTP/1.1\r\nHost: 10.0.0.1:443\r\n\
             Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            status_code("HTTP/1.1 200 Connection established"),
            Some(200)
        );
        assert_eq!(
            status_code("HTTP/1.0 407 Proxy Authentication Required"),
            Some(407)
        );
        assert_eq!(status_code("SSH-2.0-OpenSSH_9.6"), None);
        assert_eq!(status_code(""), None);
    }
}
