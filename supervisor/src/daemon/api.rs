//! The HTTP/1.1 + JSON API on the Unix socket. Routes check access, read
//! bounded bodies, and answer every error as
//! `{"error": {"code", "message", ...details}}` with a fitting status.

use super::access::{Need, Peer};
use super::conn_io::ConnState;
use super::{Daemon, InstallFlags};
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use corral_protocol::api::{CallRequest, Event, EventRecord, InstallRequest};
use corral_protocol::error::{CorralError, ErrorBody, ErrorKind};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// An error answer: the typed error and, rarely, a status other than the
/// one its kind implies (413 for an oversized body).
#[derive(Debug)]
pub struct ApiError {
    error: CorralError,
    status: Option<StatusCode>,
}

impl From<CorralError> for ApiError {
    fn from(error: CorralError) -> Self {
        ApiError {
            error,
            status: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| {
            StatusCode::from_u16(self.error.kind.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        (status, Json(ErrorBody { error: self.error })).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Largest request body and the time it may take to arrive, set per
/// server.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    pub bytes: usize,
    pub timeout: std::time::Duration,
}

pub fn router(daemon: Arc<Daemon>, body_limit: BodyLimit) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/plugins", get(list).post(install))
        .route("/v1/plugins/{name}", get(detail).delete(remove))
        .route("/v1/plugins/{name}/policy", get(policy))
        .route(
            "/v1/plugins/{name}/config",
            get(settings).patch(patch_settings),
        )
        .route("/v1/plugins/{name}/load", post(load))
        .route("/v1/plugins/{name}/unload", post(unload))
        .route("/v1/plugins/{name}/reload", post(reload))
        .route("/v1/plugins/{name}/call", post(call))
        .route("/v1/plugins/{name}/files", get(files))
        .route("/v1/plugins/{name}/files/{*path}", get(file))
        .route(
            "/v1/plugins/{name}/learn",
            get(learn_status).post(learn_start).delete(learn_stop),
        )
        .route("/v1/reload", post(reload_configuration))
        .route("/v1/events", get(events).post(publish_event))
        .route("/metrics", get(metrics))
        .merge(crate::sources::api::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(Extension(body_limit))
        .with_state(daemon)
}

async fn no_route(request: Request) -> ApiError {
    ApiError {
        error: CorralError::invalid_input(format!("no such endpoint: {}", request.uri().path())),
        status: Some(StatusCode::NOT_FOUND),
    }
}

async fn wrong_method(request: Request) -> ApiError {
    ApiError {
        error: CorralError::invalid_input(format!(
            "{} is not supported on {}",
            request.method(),
            request.uri().path()
        )),
        status: Some(StatusCode::METHOD_NOT_ALLOWED),
    }
}

/// Reads at most `limit.bytes` of body, within `limit.timeout`; a body
/// that takes longer closes the connection (noted in `conn`).
async fn read_body(body: Body, limit: BodyLimit, conn: &ConnState) -> ApiResult<Bytes> {
    let read = tokio::time::timeout(limit.timeout, axum::body::to_bytes(body, limit.bytes)).await;
    let Ok(read) = read else {
        conn.closing("request_timeout");
        return Err(ApiError {
            error: CorralError::invalid_input(format!(
                "the request body did not arrive within {}",
                humantime::format_duration(limit.timeout)
            )),
            status: Some(StatusCode::REQUEST_TIMEOUT),
        });
    };
    read.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_large {
            ApiError {
                error: CorralError::invalid_input(format!(
                    "the request body is larger than {} bytes",
                    limit.bytes
                )),
                status: Some(StatusCode::PAYLOAD_TOO_LARGE),
            }
        } else {
            CorralError::invalid_input(format!("reading the request body: {e}")).into()
        }
    })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> ApiResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| CorralError::invalid_input(format!("the {what} is not valid: {e}")).into())
}

fn parse_query<T: DeserializeOwned + Default>(raw: Option<String>) -> ApiResult<T> {
    match raw.as_deref() {
        None | Some("") => Ok(T::default()),
        Some(q) => serde_urlencoded::from_str(q).map_err(|e| {
            CorralError::invalid_input(format!("the query string is not valid: {e}")).into()
        }),
    }
}

fn check_name(name: &str) -> ApiResult<()> {
    corral_protocol::manifest::validate_plugin_name(name)
        .map_err(|reason| CorralError::invalid_input(reason).into())
}

async fn health(State(d): State<Arc<Daemon>>) -> Response {
    Json(d.health()).into_response()
}

async fn metrics(State(d): State<Arc<Daemon>>) -> Response {
    d.metrics.set_dropped(&d.rt.drops.snapshot());
    let text = d.metrics.render(&d.gauges());
    (
        // prometheus-client writes OpenMetrics text, which Prometheus
        // scrapes natively.
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn list(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Caller, "list plugins")?;
    Ok(Json(d.list()).into_response())
}

async fn detail(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Caller, "read plugins")?;
    check_name(&name)?;
    Ok(Json(d.detail_for(&name, &peer)?).into_response())
}

async fn policy(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Admin, "read policies")?;
    check_name(&name)?;
    Ok(Json(d.policy_of(&name)?).into_response())
}

/// A plugin's effective settings; admins only (settings may hold
/// secrets).
async fn settings(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Admin, "read plugin settings")?;
    check_name(&name)?;
    Ok(Json(&*d.settings_of(&name)?).into_response())
}

/// A JSON merge patch (RFC 7396) of a plugin's settings.
async fn patch_settings(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Extension(limit): Extension<BodyLimit>,
    Extension(conn): Extension<Arc<ConnState>>,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Admin, "change plugin settings")?;
    check_name(&name)?;
    let bytes = read_body(body, limit, &conn).await?;
    let patch: serde_json::Value = parse_json(&bytes, "settings patch")?;
    Ok(Json(d.patch_settings(&name, patch).await?).into_response())
}

/// `{"version": "1.2.0"}` (optional): which installed version to load
/// (`super::versions`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadRequest {
    version: Option<String>,
}

async fn load(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Extension(limit): Extension<BodyLimit>,
    Extension(conn): Extension<Arc<ConnState>>,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Admin, "load plugins")?;
    check_name(&name)?;
    let bytes = read_body(body, limit, &conn).await?;
    let request: LoadRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        LoadRequest::default()
    } else {
        parse_json(&bytes, "load request")?
    };
    let summary = match request.version {
        Some(version) => d.load_version(&name, &version).await?,
        None => d.load(&name).await?,
    };
    Ok(Json(summary).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnloadQuery {
    #[serde(default)]
    cascade: bool,
}

async fn unload(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Admin, "unload plugins")?;
    check_name(&name)?;
    let query: UnloadQuery = parse_query(query)?;
    Ok(Json(d.unload_with(&name, query.cascade).await?).into_response())
}

async fn reload(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Admin, "reload plugins")?;
    check_name(&name)?;
    Ok(Json(d.reload(&name, &peer).await?).into_response())
}

/// What SIGHUP does, with its outcome as the answer.
async fn reload_configuration(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Admin, "reload the configuration and policy")?;
    d.refuse_when_draining()?;
    tracing::info!(
        uid = peer.uid,
        pid = peer.pid,
        "configuration reload requested"
    );
    Ok(Json(d.reload_configuration().await?).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveQuery {
    /// Also remove the plugin's stored data (its key-value tables).
    #[serde(default)]
    purge_data: bool,
    /// Remove only this version (`super::versions`).
    version: Option<String>,
}

async fn remove(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Admin, "remove plugins")?;
    check_name(&name)?;
    let query: RemoveQuery = parse_query(query)?;
    if let Some(version) = query.version {
        return Ok(Json(d.remove_version(&name, &version).await?).into_response());
    }
    let removed = d.remove(&name, query.purge_data).await?;
    d.forget_versions(&name).await;
    Ok(Json(removed).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallQuery {
    #[serde(default)]
    load: bool,
    #[serde(default)]
    replace: bool,
    /// Keep the current version and add this one beside it
    /// (`super::versions`).
    #[serde(default)]
    alongside: bool,
}

async fn install(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Extension(limit): Extension<BodyLimit>,
    Extension(conn): Extension<Arc<ConnState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Admin, "install plugins")?;
    let query: InstallQuery = parse_query(query)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let bytes = read_body(body, limit, &conn).await?;
    if query.alongside {
        if query.load || query.replace {
            return Err(CorralError::invalid_input(
                "alongside keeps the current version: it goes without load and replace (load a version with POST /v1/plugins/{name}/load {\"version\": ...})",
            )
            .into());
        }
        let (response, created) = install_alongside(&d, &peer, &content_type, bytes).await?;
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return Ok((status, Json(response)).into_response());
    }
    let (response, created) = if content_type.starts_with("application/zip")
        || (content_type.starts_with("application/octet-stream")
            && crate::unzip::looks_like_zip(&bytes))
    {
        let flags = InstallFlags {
            load: query.load,
            replace: query.replace,
        };
        d.install_fetched(
            |store| crate::unzip::import_zip(store, &bytes),
            "upload".into(),
            flags,
        )
        .await?
    } else if content_type.starts_with("application/gzip")
        || content_type.starts_with("application/x-gzip")
        || content_type.starts_with("application/octet-stream")
    {
        let flags = InstallFlags {
            load: query.load,
            replace: query.replace,
        };
        d.install_upload(bytes, flags).await?
    } else if content_type.starts_with("application/json") {
        let request: InstallRequest = parse_json(&bytes, "install request")?;
        let path = std::path::Path::new(&request.path);
        if !path.is_absolute() {
            return Err(CorralError::invalid_input(format!(
                "{} is not absolute (the daemon reads it, from its own working directory)",
                request.path
            ))
            .into());
        }
        let flags = InstallFlags {
            load: request.load || query.load,
            replace: request.replace || query.replace,
        };
        d.install_path(path, flags, &peer).await?
    } else {
        return Err(CorralError::invalid_input(format!(
            "Content-Type {content_type} is not accepted: send JSON {{\"path\": ...}}, a .tar.gz as application/gzip or a .zip as application/zip"
        ))
        .into());
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(response)).into_response())
}

/// `POST /v1/plugins?alongside=true`: the same bodies as an install.
async fn install_alongside(
    d: &Arc<Daemon>,
    peer: &Peer,
    content_type: &str,
    bytes: Bytes,
) -> ApiResult<(corral_protocol::api::InstallResponse, bool)> {
    let result = if content_type.starts_with("application/zip")
        || (content_type.starts_with("application/octet-stream")
            && crate::unzip::looks_like_zip(&bytes))
    {
        d.install_alongside(
            |store| crate::unzip::import_zip(store, &bytes),
            "upload".into(),
        )
        .await
    } else if content_type.starts_with("application/gzip")
        || content_type.starts_with("application/x-gzip")
        || content_type.starts_with("application/octet-stream")
    {
        d.install_alongside(|store| store.import_tar_gz(&bytes[..]), "upload".into())
            .await
    } else if content_type.starts_with("application/json") {
        let request: InstallRequest = parse_json(&bytes, "install request")?;
        if request.load || request.replace {
            return Err(CorralError::invalid_input(
                "alongside keeps the current version: it goes without load and replace",
            )
            .into());
        }
        let path = std::path::PathBuf::from(&request.path);
        if !path.is_absolute() {
            return Err(CorralError::invalid_input(format!(
                "{} is not absolute (the daemon reads it, from its own working directory)",
                request.path
            ))
            .into());
        }
        let eyes = super::eyes_of(peer);
        let source = format!("path:{}", path.display());
        d.install_alongside(
            move |store| store.import_path_as(&path, &eyes).map(|i| i.package),
            source,
        )
        .await
    } else {
        return Err(CorralError::invalid_input(format!(
            "Content-Type {content_type} is not accepted: send JSON {{\"path\": ...}}, a .tar.gz as application/gzip or a .zip as application/zip"
        ))
        .into());
    };
    Ok(result?)
}

async fn call(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Extension(limit): Extension<BodyLimit>,
    Extension(conn): Extension<Arc<ConnState>>,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Caller, "call plugins")?;
    check_name(&name)?;
    let bytes = read_body(body, limit, &conn).await?;
    let request: CallRequest = parse_json(&bytes, "call request")?;
    Ok(Json(d.call(&name, request, &peer).await?).into_response())
}

/// The package's files (`super::files`): whoever may read the detail.
async fn files(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Caller, "read plugins")?;
    check_name(&name)?;
    Ok(Json(d.package_files(&name).await?).into_response())
}

async fn file(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Path((name, path)): Path<(String, String)>,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Caller, "read plugins")?;
    check_name(&name)?;
    let bytes = d.package_file(&name, &path).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Bytes::from(bytes),
    )
        .into_response())
}

/// Learning mode (`super::learning`): admins only, since the plugin runs
/// less confined meanwhile and the draft shows host paths.
async fn learn_start(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Extension(limit): Extension<BodyLimit>,
    Extension(conn): Extension<Arc<ConnState>>,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Admin, "start learning runs")?;
    check_name(&name)?;
    let bytes = read_body(body, limit, &conn).await?;
    let request: corral_protocol::learn::LearnRequest = parse_json(&bytes, "learn request")?;
    tracing::warn!(plugin = %name, uid = peer.uid, pid = peer.pid, duration_ms = request.duration_ms, "learning run requested");
    let status = d.learn_start(&name, request.duration_ms).await?;
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

async fn learn_stop(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Admin, "end learning runs")?;
    check_name(&name)?;
    Ok(Json(d.learn_stop(&name).await?).into_response())
}

async fn learn_status(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Admin, "read learning runs")?;
    check_name(&name)?;
    Ok(Json(d.learn_status(&name)?).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    plugin: Option<String>,
    /// Only events published on the bus whose (real) topic matches this
    /// pattern (`*` = any run).
    topic: Option<String>,
}

/// `POST /v1/events`: an admin client publishes on the plugins' bus.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    topic: String,
    #[serde(default)]
    payload: serde_json::Value,
}

async fn publish_event(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Extension(limit): Extension<BodyLimit>,
    Extension(conn): Extension<Arc<ConnState>>,
    body: Body,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Admin, "publish events")?;
    let bytes = read_body(body, limit, &conn).await?;
    let request: PublishRequest = parse_json(&bytes, "event")?;
    let reach = d
        .bus
        .publish_from_client(&request.topic, &request.payload)?;
    Ok(Json(reach).into_response())
}

/// Whether a record passes `?plugin=` and `?topic=`.
fn wanted(record: &EventRecord, plugin: Option<&str>, topic: Option<&str>) -> bool {
    if plugin.is_some_and(|p| p != record.event.plugin()) {
        return false;
    }
    match (topic, &record.event) {
        (None, _) => true,
        (Some(pattern), Event::Plugin { topic, .. }) => {
            corral_protocol::services::pattern_matches(pattern, topic)
        }
        (Some(_), _) => false,
    }
}

async fn events(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    d.authorize(&peer, Need::Caller, "watch events")?;
    let query: EventsQuery = parse_query(query)?;
    if let Some(p) = &query.plugin {
        check_name(p)?;
    }
    if let Some(t) = &query.topic {
        corral_protocol::services::valid_name(t, true)
            .map_err(|e| CorralError::invalid_input(format!("topic {e}")))?;
    }
    let receiver = d.rt.events.subscribe();
    let filter = (query.plugin, query.topic);
    let stream = futures::stream::unfold((receiver, filter), |(mut rx, filter)| async move {
        loop {
            let line = match rx.recv().await {
                Ok(record) => {
                    if !wanted(&record, filter.0.as_deref(), filter.1.as_deref()) {
                        continue;
                    }
                    serde_json::to_vec(&*record)
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    serde_json::to_vec(&EventRecord {
                        seq: 0,
                        time_ms: 0,
                        event: Event::Lagged { missed },
                    })
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            };
            let mut line = line.unwrap_or_default();
            line.push(b'\n');
            return Some((
                Ok::<Bytes, std::convert::Infallible>(Bytes::from(line)),
                (rx, filter),
            ));
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Errors produced before a route runs (bad paths, for instance) still
/// answer in the documented shape.
pub fn error_response(error: CorralError) -> Response {
    ApiError::from(error).into_response()
}

pub fn shutting_down_response() -> Response {
    error_response(CorralError::new(
        ErrorKind::ShuttingDown,
        "corrald is shutting down",
    ))
}
