//! Raw bytes on the socket, for what a well-formed client never sends (a
//! request without `Host`, a broken request line, a head whose body never
//! comes) and answers read without an HTTP library's help.

use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long a raw exchange waits for the answer before calling it stuck.
pub const RAW_WAIT: Duration = Duration::from_secs(60);

/// An answer read off the socket.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    /// The head, lower-cased.
    pub head: String,
    pub body: Vec<u8>,
}

impl RawAnswer {
    /// The body as the documented JSON error; returns its `code`.
    pub fn error_code(&self) -> String {
        let value: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the answer's body is not JSON ({e}): {:?} (head {:?})",
                String::from_utf8_lossy(&self.body),
                self.head
            )
        });
        value["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {value}"))
            .to_string()
    }
}

/// Connects, writes `bytes`, and reads one answer (head and a body of
/// `content-length`), or panics after [`RAW_WAIT`].
pub async fn exchange(socket: &Path, bytes: &[u8]) -> RawAnswer {
    let mut stream = UnixStream::connect(socket)
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    stream.write_all(bytes).await.expect("write the request");
    read_answer(&mut stream).await
}

/// Reads one answer from `stream`.
pub async fn read_answer(stream: &mut UnixStream) -> RawAnswer {
    tokio::time::timeout(RAW_WAIT, read_answer_inner(stream))
        .await
        .unwrap_or_else(|_| panic!("no answer within {RAW_WAIT:?}"))
}

async fn read_answer_inner(stream: &mut UnixStream) -> RawAnswer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await.expect("read the answer");
        assert!(
            n > 0,
            "the connection closed before a whole head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.expect("read the body");
        assert!(n > 0, "the connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    RawAnswer { status, head, body }
}

/// The value of the metric line starting with `series` (name and labels),
/// 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}
