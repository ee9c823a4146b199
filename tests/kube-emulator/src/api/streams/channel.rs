//! The channel protocol of `pods/exec` over a WebSocket
//! (`staging/src/k8s.io/apimachinery/pkg/util/httpstream/wsstream` and
//! `.../util/remotecommand`): every binary message is one byte naming the
//! stream, then that stream's bytes. 0 is stdin, 1 stdout, 2 stderr, 3 the
//! error stream (one `Status` when the command ends: `Success`, or
//! `Failure` with reason `NonZeroExitCode` and the code as an `ExitCode`
//! cause, which kubectl turns into "command terminated with exit code N"
//! and its own exit code), 4 terminal resizes. `v5.channel.k8s.io` adds
//! message `[255, stream]`: the client closed that stream (stdin's EOF),
//! which v4 cannot say.

use bytes::{BufMut as _, Bytes, BytesMut};
use serde_json::{json, Value};

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
/// The subprotocols served, the newest first.
pub const PROTOCOLS: &[&str] = &[V5, V4];

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const CLOSE: u8 = 255;

/// What one message from the client means.
#[derive(Debug, PartialEq, Eq)]
pub enum FromClient<'a> {
    Stdin(&'a [u8]),
    /// The client will send no more on this stream (v5).
    Closed(u8),
    /// A terminal resize, or anything for a stream nobody reads.
    Ignored,
}

/// Reads one binary message from the client.
pub fn parse(message: &[u8]) -> FromClient<'_> {
    match message {
        [STDIN, data @ ..] => FromClient::Stdin(data),
        [CLOSE, stream, ..] => FromClient::Closed(*stream),
        _ => FromClient::Ignored,
    }
}

/// One message carrying `data` on `stream`.
pub fn frame(stream: u8, data: &[u8]) -> Bytes {
    let mut message = BytesMut::with_capacity(1 + data.len());
    message.put_u8(stream);
    message.put_slice(data);
    message.freeze()
}

/// The `Status` the error stream carries when a command ends with `code`
/// (`None`: killed by a signal, reported as the shell would, 128 + n, or
/// as an error when even that is unknown).
pub fn exit_status(command: &[String], code: Option<i32>) -> Value {
    match code {
        Some(0) => json!({"metadata": {}, "status": "Success"}),
        Some(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                command.join(" ")
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        None => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("error executing command [{}]: the process was killed", command.join(" ")),
            "reason": "InternalError",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_their_stream() {
        assert_eq!(parse(&[0, b'h', b'i']), FromClient::Stdin(b"hi"));
        assert_eq!(parse(&[255, 0]), FromClient::Closed(0));
        // a terminal resize
        assert_eq!(parse(&[4, b'{']), FromClient::Ignored);
        assert_eq!(parse(&[]), FromClient::Ignored);
        assert_eq!(&frame(STDOUT, b"out")[..], b"\x01out");
    }

    #[test]
    fn a_non_zero_exit_names_its_code_as_kubectl_reads_it() {
        let command = ["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        let status = exit_status(&command, Some(3));
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        assert_eq!(exit_status(&command, Some(0))["status"], "Success");
    }
}
