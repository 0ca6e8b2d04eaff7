//! A fake corrald for the CLI's tests: a hyper server on a temporary Unix
//! socket that answers canned bodies per (method, path) and records every
//! request it gets, so a test can check both what `corral` sent and what
//! it made of the answer.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

/// What the fake daemon answers to one route.
#[derive(Clone)]
pub enum Answer {
    /// A whole body with its status and content type.
    Body {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// An NDJSON stream of these lines; kept open afterwards (until the
    /// client goes away) when `keep_open`.
    Stream { lines: Vec<String>, keep_open: bool },
}

impl Answer {
    pub fn json(status: u16, body: &serde_json::Value) -> Answer {
        Answer::Body {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(body).expect("canned JSON encodes"),
        }
    }

    /// The API's error body for a typed error, with its status.
    pub fn error(error: corral_protocol::error::CorralError) -> Answer {
        let status = error.kind.http_status();
        let body = serde_json::to_value(corral_protocol::error::ErrorBody { error })
            .expect("error body encodes");
        Answer::json(status, &body)
    }

    pub fn text(status: u16, content_type: &'static str, body: &str) -> Answer {
        Answer::Body {
            status,
            content_type,
            body: body.as_bytes().to_vec(),
        }
    }
}

/// One request as the fake daemon received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

type Routes = HashMap<(String, String), Answer>;

pub struct FakeDaemon {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    requests: Arc<Mutex<Vec<Recorded>>>,
    // Dropped last: stops the server's tasks.
    _runtime: tokio::runtime::Runtime,
}

impl FakeDaemon {
    /// Serves `routes`, keyed by (method, path with query).
    pub fn start(routes: Vec<((&str, &str), Answer)>) -> FakeDaemon {
        let dir = tempfile::tempdir().expect("temp dir for the socket");
        let socket = dir.path().join("corral.sock");
        let routes: Arc<Routes> = Arc::new(
            routes
                .into_iter()
                .map(|((m, p), a)| ((m.to_string(), p.to_string()), a))
                .collect(),
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("fake daemon runtime");
        let listener = {
            let _guard = runtime.enter();
            tokio::net::UnixListener::bind(&socket).expect("bind the fake daemon's socket")
        };
        let recorded = requests.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let routes = routes.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        answer(request, routes.clone(), recorded.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeDaemon {
            _dir: dir,
            socket,
            requests,
            _runtime: runtime,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("requests lock").clone()
    }

    /// The one request the daemon got.
    pub fn only_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "expected one request, got {requests:?}");
        requests.into_iter().next().expect("one request")
    }

    /// `corral --socket <this> ARGS`.
    pub fn corral(&self, args: &[&str]) -> Run {
        let mut command = corral_command();
        command.arg("--socket").arg(&self.socket).args(args);
        Run::of(command)
    }
}

async fn answer(
    request: Request<Incoming>,
    routes: Arc<Routes>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
) -> Result<Response<UnsyncBoxBody<Bytes, Infallible>>, Infallible> {
    let method = request.method().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let content_type = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    recorded.lock().expect("requests lock").push(Recorded {
        method: method.clone(),
        path: path.clone(),
        content_type,
        body,
    });
    let response = match routes.get(&(method.clone(), path.clone())) {
        Some(Answer::Body {
            status,
            content_type,
            body,
        }) => Response::builder()
            .status(*status)
            .header(hyper::header::CONTENT_TYPE, *content_type)
            .body(Full::new(Bytes::from(body.clone())).boxed_unsync()),
        Some(Answer::Stream { lines, keep_open }) => {
            let frames = stream::iter(
                lines
                    .iter()
                    .map(|l| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{l}\n")))))
                    .collect::<Vec<_>>(),
            );
            let tail = if *keep_open {
                stream::pending().boxed()
            } else {
                stream::empty().boxed()
            };
            Response::builder()
                .status(200)
                .header(hyper::header::CONTENT_TYPE, "application/x-ndjson")
                .body(StreamBody::new(frames.chain(tail)).boxed_unsync())
        }
        // Not part of the API: a test that gets this sent the wrong request.
        None => Response::builder()
            .status(599)
            .header(hyper::header::CONTENT_TYPE, "text/plain")
            .body(
                Full::new(Bytes::from(format!("no canned answer for {method} {path}")))
                    .boxed_unsync(),
            ),
    };
    Ok(response.expect("canned response builds"))
}

/// The `corral` binary, isolated from the caller's CORRAL_SOCKET and logs.
pub fn corral_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_corral"));
    command
        .env_remove("CORRAL_SOCKET")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

/// A finished `corral` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(mut command: Command) -> Run {
        let Output {
            status,
            stdout,
            stderr,
        } = command.output().expect("run corral");
        Run {
            code: status
                .code()
                .expect("corral exited, not killed by a signal"),
            stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
        }
    }

    /// Asserts the exit code, showing the output when it is wrong.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// The example plugin's manifest.
pub fn hello_manifest_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/plugins/hello/plugin.toml")
}

/// A package with hello's manifest and a stand-in entry, enough to compile
/// its policy (nothing runs it).
pub struct TestPackage {
    dir: tempfile::TempDir,
}

impl TestPackage {
    pub fn hello() -> TestPackage {
        use std::os::unix::fs::PermissionsExt;
        // Not under /tmp: the sandbox mounts its own scratch space there.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp package dir");
        // Plugins run as other uids, so the policy compiler wants the
        // package open to others; tempdir makes it 0700.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the package dir");
        std::fs::copy(hello_manifest_file(), dir.path().join("plugin.toml"))
            .expect("copy hello's plugin.toml");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir bin");
        // Any ELF executable will do for compiling.
        std::fs::copy("/usr/bin/true", bin.join("hello"))
            .expect("/usr/bin/true is needed as a stand-in plugin executable");
        TestPackage { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn path_str(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp path")
    }
}
