//! An HTTP/1.1 client for corrald's Unix socket, built on hyper's client
//! connection API: each request opens its own connection unless the test
//! holds a [`Connection`] (keep-alive), and the event stream is read frame
//! by frame as the daemon writes it.

use bytes::Bytes;
use corral_protocol::api::{
    CallResponse, EventRecord, Health, InstallResponse, PluginDetail, PluginSummary,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

/// How long one request may take before the test calls it stuck. Generous:
/// some requests (load, reload, a 200-plugin list) start processes.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A daemon's API, addressed by its socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

/// One answer, body read in full.
#[derive(Debug, Clone)]
pub struct Response {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// Why a request got no answer at all.
#[derive(Debug)]
pub enum RequestError {
    Connect(std::io::Error),
    Http(hyper::Error),
    TimedOut,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Connect(e) => write!(f, "connecting: {e}"),
            RequestError::Http(e) => write!(f, "HTTP: {e}"),
            RequestError::TimedOut => write!(f, "no answer within {REQUEST_TIMEOUT:?}"),
        }
    }
}

/// A request to build: method, path, optional body and content type.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            content_type: None,
            body: Bytes::new(),
        }
    }

    pub fn get(path: &str) -> Request {
        Request::new("GET", path)
    }

    pub fn post(path: &str) -> Request {
        Request::new("POST", path)
    }

    pub fn delete(path: &str) -> Request {
        Request::new("DELETE", path)
    }

    pub fn json(mut self, body: &Value) -> Request {
        self.content_type = Some("application/json".into());
        self.body = Bytes::from(serde_json::to_vec(body).expect("JSON serialises"));
        self
    }

    pub fn raw(mut self, content_type: &str, body: impl Into<Bytes>) -> Request {
        self.content_type = Some(content_type.to_string());
        self.body = body.into();
        self
    }

    fn build(&self) -> hyper::Request<Full<Bytes>> {
        let mut builder = hyper::Request::builder()
            .method(self.method.as_str())
            .uri(self.path.as_str())
            .header(hyper::header::HOST, "corral");
        if let Some(ct) = &self.content_type {
            builder = builder.header(hyper::header::CONTENT_TYPE, ct.as_str());
        }
        builder
            .body(Full::new(self.body.clone()))
            .unwrap_or_else(|e| panic!("building {} {}: {e}", self.method, self.path))
    }
}

/// A kept-alive connection: several requests, one after the other.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    task: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Connection {
    pub async fn open(socket: &Path) -> Result<Connection, RequestError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(RequestError::Connect)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(RequestError::Http)?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection { sender, task })
    }

    async fn send_head(
        &mut self,
        request: &Request,
    ) -> Result<hyper::Response<Incoming>, RequestError> {
        self.sender.ready().await.map_err(RequestError::Http)?;
        self.sender
            .send_request(request.build())
            .await
            .map_err(RequestError::Http)
    }

    /// Sends one request and reads the whole answer.
    pub async fn try_send(&mut self, request: &Request) -> Result<Response, RequestError> {
        let exchange = async {
            let response = self.send_head(request).await?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(RequestError::Http)?
                .to_bytes();
            Ok(Response {
                method: request.method.clone(),
                path: request.path.clone(),
                status,
                content_type,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or(Err(RequestError::TimedOut))
    }

    pub async fn send(&mut self, request: &Request) -> Response {
        self.try_send(request)
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", request.method, request.path))
    }
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A connection to keep for several requests.
    pub async fn connect(&self) -> Connection {
        Connection::open(&self.socket)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.socket.display()))
    }

    /// One request on a connection of its own.
    pub async fn try_send(&self, request: &Request) -> Result<Response, RequestError> {
        let mut connection = Connection::open(&self.socket).await?;
        connection.try_send(request).await
    }

    pub async fn send(&self, request: &Request) -> Response {
        self.try_send(request).await.unwrap_or_else(|e| {
            panic!(
                "{} {} on {}: {e}",
                request.method,
                request.path,
                self.socket.display()
            )
        })
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send(&Request::get(path)).await
    }

    pub async fn post(&self, path: &str) -> Response {
        self.send(&Request::post(path)).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.send(&Request::post(path).json(body)).await
    }

    pub async fn health(&self) -> Health {
        self.get("/v1/health").await.ok()
    }

    pub async fn list(&self) -> Vec<PluginSummary> {
        self.get("/v1/plugins").await.ok()
    }

    pub async fn detail(&self, plugin: &str) -> PluginDetail {
        self.get(&format!("/v1/plugins/{plugin}")).await.ok()
    }

    /// The pids of a plugin's live children, by instance.
    pub async fn child_pids(&self, plugin: &str) -> Vec<i32> {
        let mut children = self.detail(plugin).await.processes;
        children.sort_by_key(|c| c.instance);
        children.iter().map(|c| c.pid).collect()
    }

    pub async fn lifecycle(&self, plugin: &str, action: &str) -> Response {
        self.post(&format!("/v1/plugins/{plugin}/{action}")).await
    }

    /// `POST /v1/plugins/{plugin}/call`; the answer, whatever it is.
    pub async fn call(&self, plugin: &str, method: &str, input: Value) -> Response {
        self.post_json(
            &format!("/v1/plugins/{plugin}/call"),
            &serde_json::json!({"method": method, "input": input}),
        )
        .await
    }

    /// A call that must succeed.
    pub async fn call_ok(&self, plugin: &str, method: &str, input: Value) -> CallResponse {
        self.call(plugin, method, input).await.ok()
    }

    pub async fn install_path(&self, path: &Path, load: bool) -> Response {
        self.post_json(
            "/v1/plugins",
            &serde_json::json!({"path": path, "load": load}),
        )
        .await
    }

    pub async fn install_upload(&self, archive: Vec<u8>, load: bool) -> Response {
        let path = if load {
            "/v1/plugins?load=true"
        } else {
            "/v1/plugins"
        };
        self.send(&Request::post(path).raw("application/gzip", archive))
            .await
    }

    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics").await.status(200);
        response.text()
    }

    /// Subscribes to `GET /v1/events` (with `query`, e.g. `plugin=hello`);
    /// returns once the daemon has answered, so events after this are seen.
    pub async fn events(&self, query: Option<&str>) -> EventStream {
        let path = match query {
            Some(q) => format!("/v1/events?{q}"),
            None => "/v1/events".to_string(),
        };
        let request = Request::get(&path);
        let mut connection = self.connect().await;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, connection.send_head(&request))
            .await
            .unwrap_or(Err(RequestError::TimedOut))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        let content_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert_eq!(content_type, "application/x-ndjson", "GET {path}");
        EventStream {
            body: response.into_body(),
            pending: Vec::new(),
            seen: Vec::new(),
            _connection: connection,
        }
    }
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics naming the request when it is not.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {} answered {} with a body that is not JSON ({e}): {}",
                self.method,
                self.path,
                self.status,
                self.text()
            )
        })
    }

    /// Asserts the status, showing the body when it differs.
    pub fn status(self, expected: u16) -> Response {
        assert_eq!(
            self.status,
            expected,
            "{} {} answered {} (expected {expected}): {}",
            self.method,
            self.path,
            self.status,
            self.text()
        );
        self
    }

    /// A 200 answer, parsed.
    pub fn ok<T: DeserializeOwned>(self) -> T {
        self.status(200).parse()
    }

    pub fn parse<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: the body does not parse as {} ({e}): {}",
                self.method,
                self.path,
                std::any::type_name::<T>(),
                self.text()
            )
        })
    }

    /// An error answer: asserts status, the documented shape
    /// `{"error": {"code", "message", ...}}` and the code; returns the
    /// error object (details included).
    pub fn error(self, status: u16, code: &str) -> Value {
        let response = self.status(status);
        let value = response.value();
        let error = value
            .get("error")
            .unwrap_or_else(|| {
                panic!(
                    "{} {}: no \"error\" object in {value}",
                    response.method, response.path
                )
            })
            .clone();
        assert_eq!(
            error.get("code").and_then(Value::as_str),
            Some(code),
            "{} {}: {value}",
            response.method,
            response.path
        );
        let message = error.get("message").and_then(Value::as_str).unwrap_or("");
        assert!(
            !message.is_empty(),
            "{} {}: the error has no message: {value}",
            response.method,
            response.path
        );
        assert_eq!(
            response.content_type.as_deref(),
            Some("application/json"),
            "{} {}: errors are JSON",
            response.method,
            response.path
        );
        error
    }

    /// The install answer, asserting 201 (new) or 200 (unchanged).
    pub fn installed(self, new: bool) -> InstallResponse {
        let response = self.status(if new { 201 } else { 200 });
        let install: InstallResponse = response.parse();
        assert_eq!(install.unchanged, !new, "{install:?}");
        install
    }
}

/// `GET /v1/events` as it arrives.
pub struct EventStream {
    body: Incoming,
    pending: Vec<u8>,
    /// Every event read so far, for failure messages.
    pub seen: Vec<EventRecord>,
    _connection: Connection,
}

impl EventStream {
    /// The next event, or `None` when none comes within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<EventRecord> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let record: EventRecord =
                    serde_json::from_slice(&line[..end]).unwrap_or_else(|e| {
                        panic!(
                            "an event line is not an EventRecord ({e}): {}",
                            String::from_utf8_lossy(&line)
                        )
                    });
                self.seen.push(record.clone());
                return Some(record);
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame()).await;
            match frame {
                Err(_) => return None,
                Ok(None) => panic!("the event stream ended; seen: {:?}", self.seen),
                Ok(Some(Err(e))) => panic!("reading the event stream: {e}"),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The first event matching `want`, among those already read or the
    /// ones still to come (for events whose order a test checks after
    /// reading both).
    pub async fn find(
        &mut self,
        what: &str,
        wait: Duration,
        want: impl Fn(&EventRecord) -> bool,
    ) -> EventRecord {
        if let Some(record) = self.seen.iter().find(|r| want(r)) {
            return record.clone();
        }
        self.wait_for(what, wait, want).await
    }

    /// Reads until an event matching `want` arrives; panics after `wait`
    /// with every event seen.
    pub async fn wait_for(
        &mut self,
        what: &str,
        wait: Duration,
        want: impl Fn(&EventRecord) -> bool,
    ) -> EventRecord {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(record) if want(&record) => return record,
                Some(_) => {}
                None => panic!("no {what} event within {wait:?}; seen: {:#?}", self.seen),
            }
        }
    }
}
