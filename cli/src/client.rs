//! An async client for corrald's API: HTTP/1.1 + JSON on the daemon's Unix
//! socket (see API.md and `corral_protocol::api`).
//!
//! Every request opens its own connection: the socket is local, connecting
//! costs microseconds, and it keeps one slow call from holding up the next
//! request of the same client. The client needs a Tokio runtime (it spawns
//! the task that drives each connection).
//!
//! ```no_run
//! # async fn demo() -> Result<(), corral::ClientError> {
//! let client = corral::Client::from_env();
//! let reply = client
//!     .call("hello", "greet", serde_json::json!({"name": "Ada"}), None)
//!     .await?;
//! println!("{}", reply.output);
//! # Ok(())
//! # }
//! ```

use bytes::Bytes;
use corral_protocol::api::{
    CallRequest, CallResponse, DEFAULT_SOCKET, EventRecord, Health, InstallRequest,
    InstallResponse, PluginDetail, PluginSummary, ReloadReport, RemoveResponse, SOCKET_ENV,
};
use corral_protocol::error::{CorralError, ErrorBody};
use corral_protocol::policy::SandboxPolicy;
use futures_util::stream::{self, Stream, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Largest answer body the client reads into memory (a call's output is
/// bounded by the daemon's output limit, far below this).
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;
/// Longest line the event stream may send before the client gives up on it.
pub const MAX_EVENT_LINE_BYTES: usize = 16 << 20;

/// What went wrong talking to corrald.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be connected to.
    #[error("cannot reach corrald at {}: {}", socket.display(), unreachable_reason(source))]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The connection was made but broke before a full answer arrived.
    #[error("the connection to corrald at {} broke: {source}", socket.display())]
    Disconnected {
        socket: PathBuf,
        #[source]
        source: hyper::Error,
    },
    /// The daemon answered with a typed error.
    #[error(transparent)]
    Api(CorralError),
    /// The daemon answered something this client does not understand
    /// (an unexpected status, or a body that is not what the API says).
    #[error("unexpected answer from corrald: {0}")]
    Protocol(String),
    /// The request could not be built from what was given.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// Why connecting failed, and what to do about it.
fn unreachable_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::NotFound => format!(
            "no such socket (ENOENT). Is corrald running? Start it with \
             `systemctl start corrald` (or `corrald --dev`), or point --socket \
             or {SOCKET_ENV} at the socket it listens on"
        ),
        ErrorKind::ConnectionRefused => "connection refused (ECONNREFUSED): nothing \
             listens on the socket, so corrald has stopped and left it behind. Start \
             it again with `systemctl start corrald`"
            .to_string(),
        ErrorKind::PermissionDenied => "permission denied (EACCES): the socket is \
             root:corral mode 0660 by default; add your user to the `corral` group \
             (and log in again), or run as root"
            .to_string(),
        _ => e.to_string(),
    }
}

/// One request of the API: its method, path and body. [`Client::send`]
/// takes one; the typed methods of [`Client`] build them.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    Health,
    List,
    Info {
        name: String,
    },
    Policy {
        name: String,
    },
    /// `GET /v1/plugins/{name}/config`: its effective settings.
    Settings {
        name: String,
    },
    /// `PATCH /v1/plugins/{name}/config`: a JSON merge patch (RFC 7396)
    /// of its settings.
    PatchSettings {
        name: String,
        patch: serde_json::Value,
    },
    Load {
        name: String,
    },
    Unload {
        name: String,
    },
    /// Unload, and first whatever loaded plugins need it.
    UnloadCascade {
        name: String,
    },
    Reload {
        name: String,
    },
    Call {
        name: String,
        request: CallRequest,
    },
    InstallPath(InstallRequest),
    /// `POST /v1/plugins?alongside=true`: another version beside the
    /// current one.
    InstallPathAlongside(InstallRequest),
    /// `POST /v1/plugins/{name}/load` with `{"version": ...}`.
    LoadVersion {
        name: String,
        version: String,
    },
    /// `DELETE /v1/plugins/{name}?version=...`: one installed version.
    RemoveVersion {
        name: String,
        version: String,
    },
    InstallUpload {
        archive: Bytes,
        options: InstallOptions,
    },
    /// `POST /v1/plugins/{name}/learn`: a learning run of a loaded plugin.
    LearnStart {
        name: String,
        request: corral_protocol::learn::LearnRequest,
    },
    /// `GET /v1/plugins/{name}/learn`: how it goes, and its draft.
    LearnStatus {
        name: String,
    },
    /// `GET /v1/plugins/{name}/files`: the installed package's files.
    Files {
        name: String,
    },
    /// `GET /v1/plugins/{name}/files/{path}`: one file's bytes.
    File {
        name: String,
        path: String,
    },
    /// `POST /v1/reload`: re-read the configuration and policy.
    ReloadConfiguration,
    Remove {
        name: String,
        /// Also remove its stored data (`?purge_data=true`).
        purge_data: bool,
    },
    Events {
        plugin: Option<String>,
    },
    Metrics,
    /// `GET /v1/sources`: each S3 source and how its polling goes.
    Sources,
    /// `POST /v1/sources/{source}/poll`.
    SourcePoll {
        source: String,
    },
    /// `GET /v1/sources/{source}/plugins`: a page of plugin names.
    SourcePlugins {
        source: String,
        limit: Option<u32>,
        after: Option<String>,
    },
    /// `GET /v1/sources/{source}/plugins/{name}`: versions and metadata.
    SourcePlugin {
        source: String,
        name: String,
    },
    SourceManifest {
        source: String,
        name: String,
        version: Option<String>,
    },
    SourceFiles {
        source: String,
        name: String,
        version: Option<String>,
    },
    /// `POST /v1/sources/{source}/plugins/{name}/install`.
    SourceInstall {
        source: String,
        name: String,
        request: corral_protocol::sources::SourceInstallRequest,
    },
}

impl Endpoint {
    pub fn method(&self) -> Method {
        match self {
            Endpoint::Health
            | Endpoint::List
            | Endpoint::Info { .. }
            | Endpoint::Policy { .. }
            | Endpoint::Settings { .. }
            | Endpoint::LearnStatus { .. }
            | Endpoint::Files { .. }
            | Endpoint::File { .. }
            | Endpoint::Events { .. }
            | Endpoint::Metrics
            | Endpoint::Sources
            | Endpoint::SourcePlugins { .. }
            | Endpoint::SourcePlugin { .. }
            | Endpoint::SourceManifest { .. }
            | Endpoint::SourceFiles { .. } => Method::GET,
            Endpoint::Load { .. }
            | Endpoint::Unload { .. }
            | Endpoint::UnloadCascade { .. }
            | Endpoint::Reload { .. }
            | Endpoint::Call { .. }
            | Endpoint::LearnStart { .. }
            | Endpoint::InstallPath(_)
            | Endpoint::InstallPathAlongside(_)
            | Endpoint::LoadVersion { .. }
            | Endpoint::InstallUpload { .. }
            | Endpoint::ReloadConfiguration
            | Endpoint::SourcePoll { .. }
            | Endpoint::SourceInstall { .. } => Method::POST,
            Endpoint::Remove { .. } | Endpoint::RemoveVersion { .. } => Method::DELETE,
            Endpoint::PatchSettings { .. } => Method::PATCH,
        }
    }

    /// The path with its query, names percent-encoded.
    pub fn path(&self) -> String {
        let plugin = |name: &str, rest: &str| format!("/v1/plugins/{}{rest}", encode(name));
        match self {
            Endpoint::Health => "/v1/health".into(),
            Endpoint::List | Endpoint::InstallPath(_) => "/v1/plugins".into(),
            Endpoint::Info { name } => plugin(name, ""),
            Endpoint::Remove { name, purge_data } => {
                plugin(name, if *purge_data { "?purge_data=true" } else { "" })
            }
            Endpoint::Policy { name } => plugin(name, "/policy"),
            Endpoint::Settings { name } | Endpoint::PatchSettings { name, .. } => {
                plugin(name, "/config")
            }
            Endpoint::Load { name } | Endpoint::LoadVersion { name, .. } => plugin(name, "/load"),
            Endpoint::InstallPathAlongside(_) => "/v1/plugins?alongside=true".into(),
            Endpoint::RemoveVersion { name, version } => {
                plugin(name, &format!("?version={}", encode(version)))
            }
            Endpoint::Unload { name } => plugin(name, "/unload"),
            Endpoint::UnloadCascade { name } => plugin(name, "/unload?cascade=true"),
            Endpoint::Reload { name } => plugin(name, "/reload"),
            Endpoint::Call { name, .. } => plugin(name, "/call"),
            Endpoint::Files { name } => plugin(name, "/files"),
            Endpoint::File { name, path } => {
                let path: Vec<String> = path.split('/').map(encode).collect();
                plugin(name, &format!("/files/{}", path.join("/")))
            }
            Endpoint::LearnStart { name, .. } | Endpoint::LearnStatus { name } => {
                plugin(name, "/learn")
            }
            Endpoint::InstallUpload { options, .. } => format!(
                "/v1/plugins?load={}&replace={}",
                options.load, options.replace
            ),
            Endpoint::ReloadConfiguration => "/v1/reload".into(),
            Endpoint::Events { plugin: None } => "/v1/events".into(),
            Endpoint::Events { plugin: Some(p) } => format!("/v1/events?plugin={}", encode(p)),
            Endpoint::Metrics => "/metrics".into(),
            Endpoint::Sources => "/v1/sources".into(),
            Endpoint::SourcePoll { source } => format!("/v1/sources/{}/poll", encode(source)),
            Endpoint::SourcePlugins {
                source,
                limit,
                after,
            } => {
                let mut query = Vec::new();
                if let Some(l) = limit {
                    query.push(format!("limit={l}"));
                }
                if let Some(a) = after {
                    query.push(format!("after={}", encode(a)));
                }
                let query = if query.is_empty() {
                    String::new()
                } else {
                    format!("?{}", query.join("&"))
                };
                format!("/v1/sources/{}/plugins{query}", encode(source))
            }
            Endpoint::SourcePlugin { source, name } => {
                format!("/v1/sources/{}/plugins/{}", encode(source), encode(name))
            }
            Endpoint::SourceManifest {
                source,
                name,
                version,
            }
            | Endpoint::SourceFiles {
                source,
                name,
                version,
            } => {
                let what = if matches!(self, Endpoint::SourceManifest { .. }) {
                    "manifest"
                } else {
                    "files"
                };
                let query = version
                    .as_ref()
                    .map(|v| format!("?version={}", encode(v)))
                    .unwrap_or_default();
                format!(
                    "/v1/sources/{}/plugins/{}/{what}{query}",
                    encode(source),
                    encode(name)
                )
            }
            Endpoint::SourceInstall { source, name, .. } => format!(
                "/v1/sources/{}/plugins/{}/install",
                encode(source),
                encode(name)
            ),
        }
    }

    /// The body and its content type (`None` for an empty body).
    pub fn body(&self) -> Result<Option<(&'static str, Bytes)>, ClientError> {
        match self {
            Endpoint::Call { request, .. } => json_body(request),
            Endpoint::PatchSettings { patch, .. } => json_body(patch),
            Endpoint::LearnStart { request, .. } => json_body(request),
            Endpoint::InstallPath(request) | Endpoint::InstallPathAlongside(request) => {
                json_body(request)
            }
            Endpoint::LoadVersion { version, .. } => {
                json_body(&serde_json::json!({ "version": version }))
            }
            Endpoint::InstallUpload { archive, .. } => {
                let zip = archive.starts_with(b"PK\x03\x04") || archive.starts_with(b"PK\x05\x06");
                let content_type = if zip {
                    "application/zip"
                } else {
                    "application/gzip"
                };
                Ok(Some((content_type, archive.clone())))
            }
            Endpoint::SourceInstall { request, .. } => json_body(request),
            _ => Ok(None),
        }
    }
}

fn json_body<T: serde::Serialize>(value: &T) -> Result<Option<(&'static str, Bytes)>, ClientError> {
    serde_json::to_vec(value)
        .map(|bytes| Some(("application/json", Bytes::from(bytes))))
        .map_err(|e| ClientError::InvalidRequest(format!("cannot encode the body: {e}")))
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a
/// name can never change the path or query it is put in.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A successful answer, as the daemon sent it.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl RawResponse {
    /// The body decoded as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ClientError::Protocol(format!(
                "cannot decode the answer ({e}): {}",
                snippet(&self.body)
            ))
        })
    }
}

/// A client of one corrald socket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
        }
    }

    /// The socket named by `CORRAL_SOCKET`, else `/run/corral/corral.sock`.
    pub fn from_env() -> Client {
        match std::env::var_os(SOCKET_ENV) {
            Some(path) if !path.is_empty() => Client::new(path),
            _ => Client::new(DEFAULT_SOCKET),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.json(&Endpoint::Health).await
    }

    /// Every installed plugin, sorted by name.
    pub async fn list(&self) -> Result<Vec<PluginSummary>, ClientError> {
        self.json(&Endpoint::List).await
    }

    pub async fn info(&self, name: &str) -> Result<PluginDetail, ClientError> {
        let raw = self.send(&Endpoint::Info { name: name.into() }).await?;
        decode_detail(&raw.body)
    }

    /// The plugin's compiled sandbox policy, with where every rule came from.
    pub async fn policy(&self, name: &str) -> Result<SandboxPolicy, ClientError> {
        self.json(&Endpoint::Policy { name: name.into() }).await
    }

    /// Loads and enables the plugin; answers once it is ready.
    pub async fn load(&self, name: &str) -> Result<PluginSummary, ClientError> {
        self.json(&Endpoint::Load { name: name.into() }).await
    }

    /// Disables the plugin and stops its children after in-flight calls.
    pub async fn unload(&self, name: &str) -> Result<PluginSummary, ClientError> {
        self.json(&Endpoint::Unload { name: name.into() }).await
    }

    /// Re-reads the package and policy and swaps in new children; lifts a
    /// quarantine.
    pub async fn reload(&self, name: &str) -> Result<PluginSummary, ClientError> {
        self.json(&Endpoint::Reload { name: name.into() }).await
    }

    /// Calls `method` of the plugin. A failed call is
    /// `ClientError::Api` with its typed error (timeout, plugin_error, ...).
    pub async fn call(
        &self,
        name: &str,
        method: &str,
        input: serde_json::Value,
        timeout_ms: Option<u64>,
    ) -> Result<CallResponse, ClientError> {
        self.json(&Endpoint::Call {
            name: name.into(),
            request: CallRequest {
                method: method.into(),
                input,
                timeout_ms,
            },
        })
        .await
    }

    /// Installs the package directory or `.tar.gz` at `path`, which the
    /// daemon reads itself. A relative path is made absolute here, since
    /// the daemon's working directory is not the caller's.
    pub async fn install_path(
        &self,
        path: &Path,
        options: InstallOptions,
    ) -> Result<InstallResponse, ClientError> {
        let endpoint = Endpoint::InstallPath(install_request(path, options)?);
        self.json(&endpoint).await
    }

    /// Installs a package sent as the bytes of a `.tar.gz`.
    pub async fn install_upload(
        &self,
        archive: impl Into<Bytes>,
        options: InstallOptions,
    ) -> Result<InstallResponse, ClientError> {
        self.json(&Endpoint::InstallUpload {
            archive: archive.into(),
            options,
        })
        .await
    }

    /// Re-reads the daemon's configuration and policy files, as SIGHUP
    /// does, and says what that changed. A file that does not load is an
    /// `invalid_config` or `invalid_policy` error and changes nothing.
    pub async fn reload_configuration(&self) -> Result<ReloadReport, ClientError> {
        self.json(&Endpoint::ReloadConfiguration).await
    }

    /// Unloads (if loaded) and removes the plugin; its stored data stays
    /// unless `purge_data`.
    pub async fn remove(
        &self,
        name: &str,
        purge_data: bool,
    ) -> Result<RemoveResponse, ClientError> {
        self.json(&Endpoint::Remove {
            name: name.into(),
            purge_data,
        })
        .await
    }

    /// The metrics in Prometheus text format.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let raw = self.send(&Endpoint::Metrics).await?;
        String::from_utf8(raw.body.to_vec())
            .map_err(|e| ClientError::Protocol(format!("the metrics are not UTF-8: {e}")))
    }

    /// Lifecycle events as they happen, of one plugin or of all, until the
    /// stream is dropped. A line that is not an event is an `Err` item and
    /// the stream goes on; a broken connection ends it after an `Err`.
    pub fn events(
        &self,
        plugin: Option<&str>,
    ) -> impl Stream<Item = Result<EventRecord, ClientError>> + Send + use<> {
        self.event_lines(plugin).map(|line| {
            let line = line?;
            serde_json::from_str(&line).map_err(|e| {
                ClientError::Protocol(format!("an event line that is not an event ({e}): {line}"))
            })
        })
    }

    /// The event stream's lines as the daemon sends them (NDJSON, one
    /// object per line, without the newline).
    pub fn event_lines(
        &self,
        plugin: Option<&str>,
    ) -> impl Stream<Item = Result<String, ClientError>> + Send + use<> {
        let start = LineState::Start {
            client: self.clone(),
            endpoint: Endpoint::Events {
                plugin: plugin.map(str::to_string),
            },
        };
        stream::unfold(start, |state| async move {
            match state {
                LineState::Start { client, endpoint } => match client.start(&endpoint).await {
                    Ok((response, sender)) => {
                        let reader = LineReader {
                            socket: client.socket,
                            body: response.into_body(),
                            buffer: Vec::new(),
                            _sender: sender,
                        };
                        reader.next_line().await
                    }
                    Err(e) => Some((Err(e), LineState::Done)),
                },
                LineState::Reading(reader) => reader.next_line().await,
                LineState::Done => None,
            }
        })
    }

    /// Sends `endpoint` and reads the whole answer. A status other than 2xx
    /// is an error: `Api` when the body is the API's error body.
    pub async fn send(&self, endpoint: &Endpoint) -> Result<RawResponse, ClientError> {
        let (response, _sender) = self.start(endpoint).await?;
        let status = response.status();
        let content_type = content_type(&response);
        let body = self.read_body(response.into_body()).await?;
        Ok(RawResponse {
            status,
            content_type,
            body,
        })
    }

    async fn json<T: DeserializeOwned>(&self, endpoint: &Endpoint) -> Result<T, ClientError> {
        self.send(endpoint).await?.json()
    }

    /// Connects, sends the request and waits for the answer's head; a
    /// failure status is read in full and turned into an error. The sender
    /// is handed back so the connection lives as long as the body is read.
    async fn start(
        &self,
        endpoint: &Endpoint,
    ) -> Result<(Response<Incoming>, SendRequest<Full<Bytes>>), ClientError> {
        let mut builder = Request::builder()
            .method(endpoint.method())
            .uri(endpoint.path())
            // The daemon ignores Host, but HTTP/1.1 requires one.
            .header(header::HOST, "corral");
        let body = match endpoint.body()? {
            Some((content_type, bytes)) => {
                builder = builder.header(header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(body))
            .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;

        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Unreachable {
                socket: self.socket.clone(),
                source,
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.transport(e))?;
        tokio::spawn(async move {
            // Its failures surface through the request and the body.
            let _ = connection.await;
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.transport(e))?;
        if response.status().is_success() {
            return Ok((response, sender));
        }
        let status = response.status();
        let body = self.read_body(response.into_body()).await?;
        Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => ClientError::Api(error.error),
            Err(_) => ClientError::Protocol(format!(
                "{} {} answered {status}: {}",
                endpoint.method(),
                endpoint.path(),
                snippet(&body)
            )),
        })
    }

    async fn read_body(&self, body: Incoming) -> Result<Bytes, ClientError> {
        match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) => match e.downcast::<hyper::Error>() {
                Ok(e) => Err(self.transport(*e)),
                Err(e) => Err(ClientError::Protocol(format!(
                    "the answer is larger than {MAX_RESPONSE_BYTES} bytes ({e})"
                ))),
            },
        }
    }

    /// A malformed answer is the daemon's fault; anything else means the
    /// connection went away.
    fn transport(&self, e: hyper::Error) -> ClientError {
        if e.is_parse() || e.is_parse_status() || e.is_user() {
            ClientError::Protocol(e.to_string())
        } else {
            ClientError::Disconnected {
                socket: self.socket.clone(),
                source: e,
            }
        }
    }
}

/// What an install does besides adding a new plugin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstallOptions {
    /// Load and enable the plugin once installed.
    pub load: bool,
    /// Swap out another package installed under the same name; without
    /// it that install fails with `already_exists`.
    pub replace: bool,
}

/// The JSON install request for `path`, made absolute with its symbolic
/// links resolved here, with the user's own permissions: the daemon reads
/// the path with them too, and follows no link.
pub fn install_request(
    path: &Path,
    options: InstallOptions,
) -> Result<InstallRequest, ClientError> {
    // A path this user cannot see is sent as given (made absolute): the
    // daemon's answer says what is wrong with it.
    let absolute = std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .map_err(|e| {
            ClientError::InvalidRequest(format!("cannot make {} absolute: {e}", path.display()))
        })?;
    let path = absolute.to_str().ok_or_else(|| {
        ClientError::InvalidRequest(format!(
            "{} is not UTF-8, which the API cannot carry",
            absolute.display()
        ))
    })?;
    Ok(InstallRequest {
        path: path.to_string(),
        load: options.load,
        replace: options.replace,
    })
}

/// Decodes `GET /v1/plugins/{name}`.
pub fn decode_detail(body: &[u8]) -> Result<PluginDetail, ClientError> {
    serde_json::from_slice::<PluginDetail>(body).map_err(|e| {
        ClientError::Protocol(format!(
            "cannot decode the plugin's detail ({e}): {}",
            snippet(body)
        ))
    })
}

fn content_type(response: &Response<Incoming>) -> Option<String> {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The start of a body, for error messages.
fn snippet(body: &[u8]) -> String {
    const MAX: usize = 300;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".into()
    } else if body.len() > MAX {
        format!("{text}...")
    } else {
        text.to_string()
    }
}

enum LineState {
    Start { client: Client, endpoint: Endpoint },
    Reading(LineReader),
    Done,
}

struct LineReader {
    socket: PathBuf,
    body: Incoming,
    buffer: Vec<u8>,
    _sender: SendRequest<Full<Bytes>>,
}

impl LineReader {
    /// The next non-empty line, reading more of the body as needed.
    async fn next_line(mut self) -> Option<(Result<String, ClientError>, LineState)> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                let item = String::from_utf8(line.to_vec())
                    .map_err(|e| ClientError::Protocol(format!("an event line is not UTF-8: {e}")));
                return Some((item, LineState::Reading(self)));
            }
            if self.buffer.len() > MAX_EVENT_LINE_BYTES {
                let error = ClientError::Protocol(format!(
                    "an event line is longer than {MAX_EVENT_LINE_BYTES} bytes"
                ));
                return Some((Err(error), LineState::Done));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(source)) => {
                    let error = ClientError::Disconnected {
                        socket: self.socket.clone(),
                        source,
                    };
                    return Some((Err(error), LineState::Done));
                }
                None => {
                    // The stream ended: a last line without its newline
                    // still counts.
                    let rest = self.buffer.trim_ascii();
                    if rest.is_empty() {
                        return None;
                    }
                    let item = String::from_utf8(rest.to_vec()).map_err(|e| {
                        ClientError::Protocol(format!("an event line is not UTF-8: {e}"))
                    });
                    return Some((item, LineState::Done));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_map_to_the_contracts_methods_and_paths() {
        let name = || "hello".to_string();
        let cases = [
            (Endpoint::Health, "GET", "/v1/health"),
            (Endpoint::List, "GET", "/v1/plugins"),
            (Endpoint::Info { name: name() }, "GET", "/v1/plugins/hello"),
            (
                Endpoint::Policy { name: name() },
                "GET",
                "/v1/plugins/hello/policy",
            ),
            (
                Endpoint::Load { name: name() },
                "POST",
                "/v1/plugins/hello/load",
            ),
            (
                Endpoint::Unload { name: name() },
                "POST",
                "/v1/plugins/hello/unload",
            ),
            (
                Endpoint::Reload { name: name() },
                "POST",
                "/v1/plugins/hello/reload",
            ),
            (
                Endpoint::Remove {
                    name: name(),
                    purge_data: false,
                },
                "DELETE",
                "/v1/plugins/hello",
            ),
            (
                Endpoint::Remove {
                    name: name(),
                    purge_data: true,
                },
                "DELETE",
                "/v1/plugins/hello?purge_data=true",
            ),
            (
                Endpoint::InstallUpload {
                    archive: Bytes::new(),
                    options: InstallOptions {
                        load: true,
                        replace: false,
                    },
                },
                "POST",
                "/v1/plugins?load=true&replace=false",
            ),
            (Endpoint::ReloadConfiguration, "POST", "/v1/reload"),
            (Endpoint::Events { plugin: None }, "GET", "/v1/events"),
            (
                Endpoint::Events {
                    plugin: Some(name()),
                },
                "GET",
                "/v1/events?plugin=hello",
            ),
            (Endpoint::Metrics, "GET", "/metrics"),
        ];
        for (endpoint, method, path) in cases {
            assert_eq!(endpoint.method().as_str(), method, "{endpoint:?}");
            assert_eq!(endpoint.path(), path, "{endpoint:?}");
        }
    }

    #[test]
    fn names_cannot_escape_their_path_segment() {
        let e = Endpoint::Info {
            name: "../x?y=1&z#w/é".into(),
        };
        assert_eq!(e.path(), "/v1/plugins/..%2Fx%3Fy%3D1%26z%23w%2F%C3%A9");
        let e = Endpoint::Events {
            plugin: Some("a&b".into()),
        };
        assert_eq!(e.path(), "/v1/events?plugin=a%26b");
    }

    #[test]
    fn bodies_are_json_gzip_or_empty() {
        let call = Endpoint::Call {
            name: "hello".into(),
            request: CallRequest {
                method: "greet".into(),
                input: serde_json::json!({"name": "Ada"}),
                timeout_ms: Some(500),
            },
        };
        let (ty, body) = call.body().expect("encodes").expect("has a body");
        assert_eq!(ty, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"method": "greet", "input": {"name": "Ada"}, "timeout_ms": 500})
        );

        let upload = Endpoint::InstallUpload {
            archive: Bytes::from_static(b"\x1f\x8b"),
            options: InstallOptions {
                load: false,
                replace: true,
            },
        };
        let (ty, body) = upload.body().expect("encodes").expect("has a body");
        assert_eq!((ty, &body[..]), ("application/gzip", &b"\x1f\x8b"[..]));
        assert_eq!(upload.path(), "/v1/plugins?load=false&replace=true");

        assert!(
            Endpoint::Load { name: "x".into() }
                .body()
                .expect("encodes")
                .is_none()
        );
    }

    #[test]
    fn install_paths_are_sent_absolute_with_links_resolved() {
        let options = InstallOptions {
            load: true,
            replace: false,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("pkgs/hello");
        std::fs::create_dir_all(&real).expect("mkdir");
        std::os::unix::fs::symlink(&real, dir.path().join("link")).expect("symlink");
        let request = install_request(&dir.path().join("link"), options).expect("request");
        let resolved = real.canonicalize().expect("canonical");
        assert_eq!(Path::new(&request.path), resolved);
        assert!(request.load);
        assert!(!request.replace);
        let missing = install_request(Path::new("no/such/package"), options).expect("sent");
        assert!(missing.path.starts_with('/'), "{}", missing.path);
    }

    #[test]
    fn unreachable_errors_say_what_to_do() {
        let error = |kind: std::io::ErrorKind| ClientError::Unreachable {
            socket: "/run/corral/corral.sock".into(),
            source: std::io::Error::from(kind),
        };
        let missing = error(std::io::ErrorKind::NotFound).to_string();
        assert!(missing.contains("/run/corral/corral.sock"), "{missing}");
        assert!(missing.contains("ENOENT"), "{missing}");
        assert!(missing.contains("Is corrald running?"), "{missing}");
        assert!(missing.contains("CORRAL_SOCKET"), "{missing}");
        let refused = error(std::io::ErrorKind::ConnectionRefused).to_string();
        assert!(refused.contains("ECONNREFUSED"), "{refused}");
        let denied = error(std::io::ErrorKind::PermissionDenied).to_string();
        assert!(denied.contains("EACCES"), "{denied}");
        assert!(denied.contains("`corral` group"), "{denied}");
    }

    fn detail() -> PluginDetail {
        let manifest = corral_protocol::manifest::Manifest::parse(
            "[plugin]\nname = \"hello\"\nversion = \"0.1.0\"\nentry = \"bin/hello\"\n",
            "plugin.toml",
        )
        .expect("manifest");
        let child = |instance| corral_protocol::api::ChildInfo {
            instance,
            pid: 100 + i32::try_from(instance).expect("small"),
            uid: 61000,
            start_ms: 2.0,
            in_flight: 0,
            memory_bytes: 1,
            memory_peak_bytes: 2,
            pids: 1,
            cpu_ms: 0.5,
        };
        PluginDetail {
            summary: PluginSummary {
                name: "hello".into(),
                version: "0.1.0".into(),
                description: String::new(),
                state: corral_protocol::api::PluginState::Ready,
                enabled: true,
                instances: 2,
                children: 2,
                in_flight: 0,
                calls_ok: 1,
                calls_failed: 0,
                restarts: 0,
                memory_bytes: 3,
            },
            source: "/srv/hello".into(),
            digest: "00".into(),
            manifest,
            policy: None,
            policy_error: None,
            processes: vec![child(0), child(1)],
            last_error: None,
            settings: None,
            learning: false,
            versions: Vec::new(),
        }
    }

    #[test]
    fn details_decode() {
        let detail = detail();
        let body = serde_json::to_string(&detail).expect("encodes");
        assert_eq!(decode_detail(body.as_bytes()).expect("decodes"), detail);
    }

    #[test]
    fn undecodable_details_are_protocol_errors() {
        let error = decode_detail(br#"{"name": "hello"}"#).expect_err("not a detail");
        assert!(matches!(error, ClientError::Protocol(_)), "{error:?}");
        assert!(error.to_string().contains("cannot decode"), "{error}");
    }

    #[test]
    fn snippets_are_short_and_never_empty() {
        assert_eq!(snippet(b""), "(empty body)");
        assert_eq!(snippet(b" oops \n"), "oops");
        let long = vec![b'a'; 1000];
        assert_eq!(snippet(&long).len(), 303);
    }
}
