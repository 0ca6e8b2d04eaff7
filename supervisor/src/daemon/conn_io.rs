//! The socket as hyper sees it, with two guards hyper does not give:
//!
//! - A response may wait at most `write_timeout` on a peer that reads
//!   nothing (the socket accepts no byte): then the write fails and the
//!   connection closes. Without it, a client that pipelines requests and
//!   never reads holds its connection (and hyper's buffers) forever.
//! - hyper answers a request it cannot parse (bad request line, bad
//!   header, a head too large) itself, with an empty body. Those answers
//!   are recognised as they are written (every answer of ours to an error
//!   has a JSON body, so an error head with `content-length: 0` is
//!   hyper's) and replaced by the documented JSON error.
//!
//! Why a connection ended is noted in its [`ConnState`] for the metrics.

use super::metrics::Metrics;
use corral_protocol::error::{CorralError, ErrorBody};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::time::Sleep;

/// Shared between a connection's socket and its requests.
#[derive(Debug, Default)]
pub struct ConnState {
    reason: Mutex<Option<&'static str>>,
}

impl ConnState {
    /// Notes why the connection is about to close; the first reason wins.
    pub fn closing(&self, reason: &'static str) {
        if let Ok(mut r) = self.reason.lock()
            && r.is_none()
        {
            *r = Some(reason);
        }
    }

    pub fn reason(&self) -> Option<&'static str> {
        self.reason.lock().ok().and_then(|r| *r)
    }
}

pub struct GuardedIo {
    inner: UnixStream,
    write_timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    state: Arc<ConnState>,
    metrics: Arc<Metrics>,
    /// A replacement answer still to be written, and how much of it is.
    replacement: Option<(Vec<u8>, usize)>,
}

impl GuardedIo {
    pub fn new(
        inner: UnixStream,
        write_timeout: Duration,
        state: Arc<ConnState>,
        metrics: Arc<Metrics>,
    ) -> GuardedIo {
        GuardedIo {
            inner,
            write_timeout,
            stalled: None,
            state,
            metrics,
            replacement: None,
        }
    }

    /// A write that could not proceed: fails once it has waited
    /// `write_timeout`.
    fn stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let timeout = self.write_timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            self.state.closing("write_timeout");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of the answer within the write timeout",
            )));
        }
        Poll::Pending
    }

    /// Writes what is left of a replacement answer.
    fn drive_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.replacement {
            if *done == bytes.len() {
                self.replacement = None;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    *done += n;
                    self.stalled = None;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    ready!(self.stall(cx))?;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// hyper's own answer to a request it could not parse: an error status
/// line and a head with `content-length: 0`, nothing after it.
fn parser_error_status(buf: &[u8]) -> Option<u16> {
    if buf.len() > 1024 || !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let rest = buf.strip_prefix(b"HTTP/1.1 ")?;
    let status: u16 = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    let head = String::from_utf8_lossy(buf).to_ascii_lowercase();
    ((400..600).contains(&status) && head.contains("\r\ncontent-length: 0\r\n")).then_some(status)
}

/// The documented error answer for a request hyper could not parse.
fn parser_error_answer(status: u16) -> Vec<u8> {
    let what = match status {
        414 => "the request target is too long",
        431 => "the request head is too large",
        _ => "the request is not valid HTTP/1.1 (request line or a header)",
    };
    let body = serde_json::to_vec(&ErrorBody {
        error: CorralError::invalid_input(what),
    })
    .unwrap_or_default();
    let reason = match status {
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.drive_replacement(cx))?;
        if let Some(status) = parser_error_status(buf) {
            this.state.closing("bad_request");
            this.metrics.http_error(status);
            this.replacement = Some((parser_error_answer(status), 0));
            ready!(this.drive_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(result) => {
                this.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => this.stall(cx),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drive_replacement(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drive_replacement(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_error_heads_are_replaced() {
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 08:00:00 GMT\r\n\r\n";
        assert_eq!(parser_error_status(hyper_400), Some(400));
        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 80\r\n\r\n";
        assert_eq!(parser_error_status(ours), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parser_error_status(ok), None);
        let answer = String::from_utf8(parser_error_answer(431)).expect("utf-8");
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).expect("a body");
        let parsed: ErrorBody = serde_json::from_str(body).expect("the JSON error");
        assert_eq!(parsed.error.code(), "invalid_input");
    }
}
