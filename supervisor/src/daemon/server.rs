//! The Unix socket server: binds the socket with its mode and group,
//! accepts connections up to the configured number at once, reads each
//! peer's credentials, and serves HTTP/1.1 with a header timeout.

use super::Daemon;
use super::access::Peer;
use super::api::{self, BodyLimit};
use crate::config::Config;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio::sync::{Semaphore, watch};
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

/// Serves until `stop` turns true; returns after the listener is closed
/// (connections in progress finish on their own tasks).
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: UnixListener,
    config: &Config,
    mut stop: watch::Receiver<bool>,
) {
    let router = api::router(
        daemon.clone(),
        BodyLimit(config.limits.max_request_body.0 as usize),
    );
    let connections = Arc::new(Semaphore::new(config.limits.max_connections));
    let header_timeout = config.limits.header_timeout.0;
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let peer = match Peer::of(stream.as_fd()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the peer's credentials; closing the connection");
                continue;
            }
        };
        let router = router.clone();
        let draining = daemon.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(peer.clone());
                    let router = router.clone();
                    let draining = draining.is_draining();
                    async move {
                        let path = request.uri().path().to_string();
                        // While draining, health and metrics still answer so
                        // supervisors can watch the shutdown.
                        if draining && path != "/v1/health" && path != "/metrics" {
                            return Ok::<_, std::convert::Infallible>(api::shutting_down_response());
                        }
                        router.oneshot(request.map(axum::body::Body::new)).await
                    }
                });
            let result = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = result
                && !e.is_incomplete_message()
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
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
