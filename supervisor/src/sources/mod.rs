//! Where packages come from besides local folders: S3 buckets (AWS or any
//! S3-compatible store). The local-folder source stays in
//! `daemon::watch` (inotify); this tree holds the remote one, one module
//! per step, in the order a package goes through them:
//!
//! - [`config`]: `[[s3_sources]]` in corrald.toml, and what a plugin
//!   follows (`latest`, a version, a range);
//! - [`s3`]: the aws-sdk-s3 client: listing, bounded downloads, uploads,
//!   and every failure typed as a `source_error` with its problem;
//! - [`layout`]: where versions live in the bucket (packed or unpacked);
//! - [`verify`]: sha256 and minisign signatures, before any unpacking;
//! - [`fetch`]: a chosen version downloaded, verified and inspected;
//! - [`cache`]: what was fetched, by etag and digest, and the pins set
//!   through the API, kept across restarts;
//! - [`follow`]: the poll loop (backoff on failure) that installs new
//!   versions and swaps them in like hot reload;
//! - [`pack`]: `corral pack` and `corral publish`'s side: archives and
//!   their `.sha256`;
//! - [`metrics`] and [`api`]: what operators see.
//!
//! Fetched packages are unpacked by the store with all of its rules, into
//! a staging directory that is renamed into place, so a bad object never
//! changes what is installed, and installed plugins keep running from the
//! store whatever the bucket does.

pub mod api;
pub mod cache;
pub mod config;
pub mod fetch;
pub mod follow;
pub mod layout;
pub mod metrics;
pub mod pack;
pub mod s3;
pub mod verify;

use crate::config::Config;
use crate::daemon::metrics::Metrics;
use cache::Cache;
use config::{Follow, S3SourceConfig};
use corral_protocol::error::CorralError;
use corral_protocol::sources::{FollowedPlugin, SourceStatus};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// One configured source at run time.
pub struct Source {
    pub config: S3SourceConfig,
    pub s3: s3::S3,
    pub keys: Vec<minisign_verify::PublicKey>,
    /// Downloads land here before they are verified and unpacked.
    pub scratch: PathBuf,
    pub cache: Mutex<Cache>,
    cache_file: PathBuf,
    pub status: Mutex<RunStatus>,
    /// One sync (poll or API install) at a time per source.
    pub sync: tokio::sync::Mutex<()>,
    /// Wakes the poll loop early (an API install, a test).
    pub wake: tokio::sync::Notify,
    pub metrics: metrics::SourceMetrics,
}

/// How polling goes, for `GET /v1/sources`.
#[derive(Debug, Default, Clone)]
pub struct RunStatus {
    pub last_poll_ms: Option<u64>,
    pub last_success_ms: Option<u64>,
    pub consecutive_failures: u32,
    pub last_error: Option<CorralError>,
    pub plugin_errors: BTreeMap<String, CorralError>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Source {
    /// The label installed plugins carry (`PluginEntry::source`).
    pub fn label(&self) -> String {
        format!("s3:{}", self.config.name)
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// What `plugin` follows: a pin set through the API, else one in the
    /// configuration, else `latest`.
    pub fn follow_of(&self, plugin: &str) -> Follow {
        let runtime = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.pins.get(plugin).and_then(|t| Follow::parse(t).ok()));
        runtime
            .or_else(|| self.config.pin(plugin))
            .unwrap_or(Follow::Latest)
    }

    pub fn save_cache(&self) {
        let snapshot = self.cache.lock().map(|c| c.clone()).unwrap_or_default();
        if let Err(e) = snapshot.save(&self.cache_file) {
            tracing::warn!(source = %self.name(), error = %e, "cannot save the source cache");
        }
    }

    pub fn status(&self) -> SourceStatus {
        let run = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        let cache = self.cache.lock().map(|c| c.clone()).unwrap_or_default();
        let mut followed: BTreeMap<String, FollowedPlugin> = BTreeMap::new();
        let names = cache
            .fetched
            .keys()
            .chain(cache.pins.keys())
            .chain(self.config.pins.keys())
            .chain(run.plugin_errors.keys());
        for name in names {
            let fetched = cache.fetched.get(name);
            followed.insert(
                name.clone(),
                FollowedPlugin {
                    follows: self.follow_of(name).to_string(),
                    installed_version: fetched.map(|f| f.version.clone()),
                    etag: fetched.and_then(|f| f.etag.clone()),
                    sha256: fetched.and_then(|f| f.sha256.clone()),
                    digest: fetched.map(|f| f.digest.clone()),
                    last_error: run.plugin_errors.get(name).cloned(),
                },
            );
        }
        SourceStatus {
            name: self.config.name.clone(),
            bucket: self.config.bucket.clone(),
            endpoint: self.config.endpoint.clone(),
            prefix: self.config.base().to_string(),
            layout: self.config.layout.as_str().to_string(),
            poll_interval_ms: self.config.poll_interval().as_millis() as u64,
            last_poll_ms: run.last_poll_ms,
            last_success_ms: run.last_success_ms,
            consecutive_failures: run.consecutive_failures,
            last_error: run.last_error,
            followed,
        }
    }
}

/// Every configured source, by name.
#[derive(Default)]
pub struct Sources {
    by_name: BTreeMap<String, Arc<Source>>,
}

impl Sources {
    /// Builds the clients (no request is made yet) and reads each
    /// source's cache from `<state_dir>/sources/`.
    pub async fn new(config: &Config, metrics: &Metrics) -> Sources {
        let families = metrics::SourceMetrics::default();
        if !config.s3_sources.is_empty() {
            metrics.register(|r| families.register(r));
        }
        let dir = config.state_dir.join("sources");
        // Downloads a crash left half-done: nothing is in flight yet.
        let _ = std::fs::remove_dir_all(dir.join("tmp"));
        let mut by_name = BTreeMap::new();
        for c in &config.s3_sources {
            let scratch = dir.join("tmp");
            if let Err(e) = std::fs::create_dir_all(&scratch) {
                tracing::error!(source = %c.name, error = %e, "cannot create {}", scratch.display());
            }
            let cache_file = dir.join(format!("{}.json", c.name));
            let cache = Cache::load(&cache_file).unwrap_or_else(|e| {
                tracing::warn!(source = %c.name, error = %e, "the source cache is unreadable; starting afresh");
                Cache::default()
            });
            let source = Source {
                s3: s3::S3::new(c).await,
                // Checked when the configuration was read.
                keys: c.keys().unwrap_or_default(),
                config: c.clone(),
                scratch,
                cache: Mutex::new(cache),
                cache_file,
                status: Mutex::new(RunStatus::default()),
                sync: tokio::sync::Mutex::new(()),
                wake: tokio::sync::Notify::new(),
                metrics: families.clone(),
            };
            by_name.insert(c.name.clone(), Arc::new(source));
        }
        Sources { by_name }
    }

    pub fn get(&self, name: &str) -> Result<Arc<Source>, CorralError> {
        self.by_name.get(name).cloned().ok_or_else(|| {
            s3::source_error(
                name,
                "not_found",
                format!(
                    "no source named {name} is configured (configured: {})",
                    if self.by_name.is_empty() {
                        "none".to_string()
                    } else {
                        self.by_name.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                ),
            )
        })
    }

    pub fn all(&self) -> Vec<Arc<Source>> {
        self.by_name.values().cloned().collect()
    }
}
