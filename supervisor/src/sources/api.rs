//! The sources' API routes, merged into the daemon's router:
//!
//! ```text
//! GET  /v1/sources                                   status of each source
//! POST /v1/sources/{source}/poll                     poll now
//! GET  /v1/sources/{source}/plugins?limit=&after=    a page of plugin names
//! GET  /v1/sources/{source}/plugins/{name}           versions, sizes, etags, sha256
//! GET  /v1/sources/{source}/plugins/{name}/manifest?version=
//! GET  /v1/sources/{source}/plugins/{name}/files?version=
//! POST /v1/sources/{source}/plugins/{name}/install   {"version": "^1", "load": true}
//! ```
//!
//! Reading needs caller rights, polling and installing admin rights, as
//! for installed plugins.

use super::config::{Follow, Layout};
use super::fetch;
use super::follow;
use super::layout;
use crate::daemon::Daemon;
use crate::daemon::access::{Need, Peer};
use crate::daemon::api::ApiError;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use corral_protocol::error::CorralError;
use corral_protocol::sources::{
    SourceFiles, SourceInstallRequest, SourceManifest, SourcePlugin, SourcePluginPage,
    SourceVersion,
};
use serde::Deserialize;
use std::sync::Arc;

type ApiResult = Result<Response, ApiError>;

/// Largest page of plugin names.
const MAX_PAGE: u32 = 1000;
/// Versions whose `.sha256` one metadata request reads.
const MAX_DIGESTS_READ: usize = 100;
/// Largest install request body.
const MAX_INSTALL_BODY: usize = 64 * 1024;

pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/v1/sources", get(list_sources))
        .route("/v1/sources/{source}/poll", post(poll))
        .route("/v1/sources/{source}/plugins", get(list_plugins))
        .route("/v1/sources/{source}/plugins/{name}", get(plugin))
        .route(
            "/v1/sources/{source}/plugins/{name}/manifest",
            get(manifest),
        )
        .route("/v1/sources/{source}/plugins/{name}/files", get(files))
        .route("/v1/sources/{source}/plugins/{name}/install", post(install))
}

fn query<T: serde::de::DeserializeOwned + Default>(raw: Option<String>) -> Result<T, ApiError> {
    match raw.as_deref() {
        None | Some("") => Ok(T::default()),
        Some(q) => serde_urlencoded::from_str(q).map_err(|e| {
            CorralError::invalid_input(format!("the query string is not valid: {e}")).into()
        }),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    corral_protocol::manifest::validate_plugin_name(name)
        .map_err(|reason| CorralError::invalid_input(reason).into())
}

fn parse_follow(version: Option<&str>) -> Result<Follow, ApiError> {
    Follow::parse(version.unwrap_or("latest")).map_err(|e| CorralError::invalid_input(e).into())
}

async fn list_sources(State(d): State<Arc<Daemon>>, Extension(peer): Extension<Peer>) -> ApiResult {
    d.authorize(&peer, Need::Caller, "read sources")?;
    let all: Vec<_> = d.sources.all().iter().map(|s| s.status()).collect();
    Ok(Json(all).into_response())
}

async fn poll(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Path(source): Path<String>,
) -> ApiResult {
    d.authorize(&peer, Need::Admin, "poll sources")?;
    let s = d.sources.get(&source)?;
    // The outcome is in the status either way.
    let _ = follow::poll(&d, &s).await;
    Ok(Json(s.status()).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<u32>,
    after: Option<String>,
}

async fn list_plugins(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Path(source): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    d.authorize(&peer, Need::Caller, "read sources")?;
    let q: PageQuery = query(raw)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(CorralError::invalid_input(format!("limit must be 1 to {MAX_PAGE}")).into());
    }
    let s = d.sources.get(&source)?;
    let root = layout::root(s.config.base());
    let (_, prefixes, next) =
        s.s3.list_page(&root, Some("/"), q.after, Some(limit as i32))
            .await?;
    let plugins = prefixes
        .iter()
        .filter_map(|p| p.strip_prefix(&root)?.strip_suffix('/'))
        .filter(|p| corral_protocol::manifest::validate_plugin_name(p).is_ok())
        .map(str::to_string)
        .collect();
    Ok(Json(SourcePluginPage { plugins, next }).into_response())
}

async fn plugin(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Path((source, name)): Path<(String, String)>,
) -> ApiResult {
    d.authorize(&peer, Need::Caller, "read sources")?;
    check_name(&name)?;
    let s = d.sources.get(&source)?;
    let objects =
        s.s3.list_all(&layout::plugin_prefix(s.config.base(), &name), 100_000)
            .await?;
    // Fails as not_found when the source holds nothing of it.
    let choice = fetch::choose(&s, &name, &objects, &Follow::Latest)?;
    let versions = match (s.config.layout, choice) {
        (Layout::Packed, _) => {
            let mut out = Vec::new();
            for (i, v) in layout::packed_versions(s.config.base(), &name, &objects)
                .iter()
                .enumerate()
            {
                let sha256 = if v.has_sha256 && i < MAX_DIGESTS_READ {
                    let key = format!("{}{}", v.archive.key, layout::SHA256_EXT);
                    match s.s3.get_small(&key, 4096).await {
                        Ok(text) => super::verify::parse_sha256_file(s.name(), &key, &text).ok(),
                        Err(_) => None,
                    }
                } else {
                    None
                };
                out.push(v.to_api(sha256));
            }
            out
        }
        (Layout::Unpacked, choice) => {
            let fetched = fetch::fetch(&s, &name, &choice).await?;
            let manifest = fetch::manifest_of(&s, &fetched)?;
            let fetch::Choice::Unpacked { files, fingerprint } = choice else {
                return Err(CorralError::internal("layout mismatch").into());
            };
            vec![SourceVersion {
                version: manifest.plugin.version.to_string(),
                key: layout::plugin_prefix(s.config.base(), &name),
                size: files.iter().map(|(_, o)| o.size).sum(),
                last_modified: files
                    .iter()
                    .filter_map(|(_, o)| o.last_modified.clone())
                    .max(),
                etag: Some(fingerprint),
                sha256: None,
                signed: false,
            }]
        }
    };
    Ok(Json(SourcePlugin {
        name,
        source_name: source,
        versions,
    })
    .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionQuery {
    version: Option<String>,
}

/// Fetches (and verifies) what `version` names, for manifest and files.
async fn fetch_for_browsing(
    d: &Daemon,
    source: &str,
    name: &str,
    raw: Option<String>,
) -> Result<(Arc<super::Source>, fetch::Fetched), ApiError> {
    check_name(name)?;
    let q: VersionQuery = query(raw)?;
    let follow = parse_follow(q.version.as_deref())?;
    let s = d.sources.get(source)?;
    let objects =
        s.s3.list_all(&layout::plugin_prefix(s.config.base(), name), 100_000)
            .await?;
    let choice = fetch::choose(&s, name, &objects, &follow)?;
    let fetched = fetch::fetch(&s, name, &choice).await?;
    Ok((s, fetched))
}

async fn manifest(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Path((source, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    d.authorize(&peer, Need::Caller, "read sources")?;
    let (s, fetched) = fetch_for_browsing(&d, &source, &name, raw).await?;
    let manifest = fetch::manifest_of(&s, &fetched)?;
    Ok(Json(SourceManifest {
        name: manifest.name().to_string(),
        version: manifest.plugin.version.to_string(),
        manifest,
    })
    .into_response())
}

async fn files(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Path((source, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    d.authorize(&peer, Need::Caller, "read sources")?;
    let (s, fetched) = fetch_for_browsing(&d, &source, &name, raw).await?;
    let manifest = fetch::manifest_of(&s, &fetched)?;
    let files = fetch::files_of(&s, &fetched)?;
    Ok(Json(SourceFiles {
        name: manifest.name().to_string(),
        version: manifest.plugin.version.to_string(),
        files,
    })
    .into_response())
}

async fn install(
    State(d): State<Arc<Daemon>>,
    Extension(peer): Extension<Peer>,
    Path((source, name)): Path<(String, String)>,
    body: Body,
) -> ApiResult {
    d.authorize(&peer, Need::Admin, "install plugins")?;
    check_name(&name)?;
    let bytes = axum::body::to_bytes(body, MAX_INSTALL_BODY)
        .await
        .map_err(|e| CorralError::invalid_input(format!("reading the request body: {e}")))?;
    let request: SourceInstallRequest = if bytes.is_empty() {
        SourceInstallRequest::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            CorralError::invalid_input(format!("the install request is not valid: {e}"))
        })?
    };
    let follow = parse_follow(request.version.as_deref())?;
    let s = d.sources.get(&source)?;
    if !request.replace
        && let Ok(e) = d.entry(&name)
        && e.source != s.label()
    {
        return Err(CorralError::invalid_input(format!(
            "{name} is installed from {}; install with replace to switch it to {}",
            e.source,
            s.label()
        ))
        .into());
    }
    let response = follow::install(&d, &s, &name, follow, request.load).await?;
    Ok(Json(response).into_response())
}
