//! The Unix socket server: binds the socket with its mode and group,
//! accepts connections (pausing when `accept` fails, as it does out of
//! file descriptors), reads each peer's credentials, gives it a slot or
//! not ([`super::admission`]), and serves HTTP/1.1 with time bounds on
//! the request head, the body and every response write
//! ([`super::conn_io`]). Why each connection closed goes to the metrics.

use super::Daemon;
use super::access::Peer;
use super::admission::{Admission, Kind, Ticket};
use super::api::{self, BodyLimit};
use super::conn_io::{ConnState, GuardedIo};
use crate::config::Config;
use axum::response::Response;
use corral_protocol::error::{CorralError, ErrorKind};
use hyper::Method;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tower::ServiceExt;

/// Binds the API socket: removes a stale socket file left by an earlier
/// run (never a live one), creates the parent directory, sets the mode and
/// group.
pub fn bind(config: &Config) -> Result<UnixListener, super::StartError> {
    let path = &config.socket;
    let fail = |source: std::io::Error| super::StartError::Socket {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another corrald is listening on it",
            )));
        }
        std::fs::remove_file(path).map_err(fail)?;
    }
    let listener = UnixListener::bind(path).map_err(fail)?;
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(config.socket_mode_bits()),
    )
    .map_err(fail)?;
    if let Some(group) = &config.socket_group {
        match nix::unistd::Group::from_name(group) {
            Ok(Some(g)) => {
                nix::unistd::chown(path, None, Some(g.gid))
                    .map_err(|e| fail(std::io::Error::from(e)))?;
            }
            _ => {
                tracing::warn!(group = %group, "socket group does not exist; the socket keeps the daemon's group")
            }
        }
    }
    Ok(listener)
}

/// The header timeout of a health-only connection.
const HEALTH_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The time bounds of one connection.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    write: Duration,
}

/// Serves until `stop` turns true; returns after the listener is closed
/// (connections in progress finish on their own tasks).
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: UnixListener,
    config: &Config,
    mut stop: watch::Receiver<bool>,
) {
    let limits = &config.limits;
    let router = api::router(
        daemon.clone(),
        BodyLimit {
            bytes: limits.max_request_body.0 as usize,
            timeout: limits.request_timeout.0,
        },
    );
    let admission = Admission::new(limits);
    let timeouts = Timeouts {
        header: limits.header_timeout.0,
        write: limits.write_timeout.0,
    };
    let mut backoff = Backoff::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff.reset();
                stream
            }
            Err(e) => {
                // EMFILE and its kin fail again at once: pause (growing up
                // to a second) instead of spinning, and log a few lines.
                daemon.metrics.accept_error();
                let pause = backoff.next();
                if let Some(suppressed) = daemon.metrics.logs.admit("accept_failed") {
                    tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, suppressed, "accept failed; pausing before the next one");
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => continue,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        };
        let peer = match Peer::of(stream.as_fd()) {
            Ok(p) => p,
            Err(e) => {
                daemon.metrics.connection_refused("no_credentials");
                if let Some(suppressed) = daemon.metrics.logs.admit("no_credentials") {
                    tracing::warn!(error = %e, suppressed, "cannot read the peer's credentials; closing the connection");
                }
                continue;
            }
        };
        let ticket = match admission.admit(peer.uid, daemon.is_admin(&peer)) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                daemon.metrics.connection_refused(refusal.reason());
                if let Some(suppressed) = daemon.metrics.logs.admit("connection_refused") {
                    tracing::warn!(
                        uid = peer.uid,
                        pid = peer.pid,
                        held = admission.held_by(peer.uid),
                        reason = refusal.reason(),
                        suppressed,
                        "connection refused"
                    );
                }
                continue;
            }
        };
        daemon.metrics.connection_opened();
        tokio::spawn(serve_connection(
            daemon.clone(),
            router.clone(),
            stream,
            peer,
            ticket,
            timeouts,
            admission.per_uid(),
        ));
    }
}

/// Serves one connection to its end, then counts why it ended.
async fn serve_connection(
    daemon: Arc<Daemon>,
    router: axum::Router,
    stream: UnixStream,
    peer: Peer,
    ticket: Ticket,
    timeouts: Timeouts,
    per_uid: usize,
) {
    let state = Arc::new(ConnState::default());
    let kind = ticket.kind;
    let io = GuardedIo::new(
        stream,
        timeouts.write,
        state.clone(),
        daemon.metrics.clone(),
    );
    let service = {
        let daemon = daemon.clone();
        let state = state.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(peer.clone());
            request.extensions_mut().insert(state.clone());
            let router = router.clone();
            let daemon = daemon.clone();
            async move {
                let response = match gate(&daemon, &request, kind, per_uid) {
                    Some(refused) => refused,
                    None => match router.oneshot(request.map(axum::body::Body::new)).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                };
                let status = response.status().as_u16();
                if status >= 400 {
                    daemon.metrics.http_error(status);
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    // A health-only slot is scarce: a slow head loses it fast.
    let header_timeout = match kind {
        Kind::Regular => timeouts.header,
        Kind::HealthOnly => timeouts.header.min(HEALTH_HEADER_TIMEOUT),
    };
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // A health-only connection answers once.
        .keep_alive(kind == Kind::Regular)
        .serve_connection(TokioIo::new(io), service)
        .await;
    let reason = state.reason().unwrap_or(match &result {
        Ok(()) => "done",
        Err(e) if e.is_timeout() => "header_timeout",
        Err(e) if e.is_parse() || e.is_parse_too_large() => "bad_request",
        Err(e) if e.is_incomplete_message() || e.is_closed() || e.is_canceled() => "client_closed",
        Err(_) => "error",
    });
    if let Err(e) = &result
        && reason == "error"
    {
        tracing::debug!(error = %e, "connection ended with an error");
    }
    daemon.metrics.connection_ended(reason);
    drop(ticket);
}

/// Answers a request without routing it, when it must not reach the API:
/// while draining (health and metrics still answer, so supervisors can
/// watch the shutdown), without a `Host` header (HTTP/1.1 requires one),
/// or on a health-only connection.
fn gate(
    daemon: &Daemon,
    request: &hyper::Request<Incoming>,
    kind: Kind,
    per_uid: usize,
) -> Option<Response> {
    let path = request.uri().path();
    if !request.headers().contains_key(hyper::header::HOST) {
        return Some(api::error_response(CorralError::invalid_input(
            "the request has no Host header, which HTTP/1.1 requires (any name will do, e.g. `Host: corral`)",
        )));
    }
    if kind == Kind::HealthOnly && !(path == "/v1/health" && request.method() == Method::GET) {
        return Some(api::error_response(CorralError::new(
            ErrorKind::Overloaded {
                limit: u32::try_from(per_uid).unwrap_or(u32::MAX),
            },
            format!(
                "too many connections: your uid holds the {per_uid} it may, or every slot is taken; this connection answers GET /v1/health only"
            ),
        )));
    }
    if daemon.is_draining() && path != "/v1/health" && path != "/metrics" {
        return Some(api::shutting_down_response());
    }
    None
}

/// The pause after a failed `accept`: 5 ms, doubling up to a second,
/// back to nothing after a success.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ms = 5u64.saturating_mul(1 << (self.failures - 1).min(8));
        Duration::from_millis(ms.min(1000))
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Removes the socket file (on shutdown).
pub fn unlink(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// The directory a socket path lives in, for messages.
pub fn socket_dir(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"))
}
