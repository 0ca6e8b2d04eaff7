//! Following a source: every `poll_interval` one listing of the whole
//! prefix (a few requests per thousand objects, however many plugins),
//! then for each followed plugin the version its follow picks; a version
//! whose object (key and etag) the cache already holds costs nothing
//! more. A new one is fetched, verified, installed and swapped in the way
//! hot reload swaps (new instances first, then calls move, then the old
//! ones drain), so no call fails.
//!
//! A failure (the store unreachable, wrong credentials, a missing bucket,
//! a corrupt or oversized object) is logged, published as a
//! `source_failed` event, counted in the metrics and shown in
//! `GET /v1/sources`; nothing installed changes, and the next poll waits
//! longer (exponential backoff up to 16 intervals, at most 5 minutes past
//! the interval).

use super::Source;
use super::cache::Fetched as CacheRecord;
use super::config::Follow;
use super::fetch::{self, Fetched};
use super::s3::{self, ObjectInfo, problem_of, source_error};
use crate::daemon::{Daemon, InstallFlags};
use corral_protocol::api::{Event, InstallResponse};
use corral_protocol::error::{CorralError, ErrorKind};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Starts one poll loop per source.
pub fn spawn(daemon: Arc<Daemon>) {
    for source in daemon.sources.all() {
        let daemon = daemon.clone();
        tokio::spawn(async move { run(daemon, source).await });
    }
}

/// The wait before the next poll after `failures` failed polls in a row.
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let factor = 1u32 << failures.min(4);
    (interval * factor).min(interval + Duration::from_secs(300))
}

async fn run(daemon: Arc<Daemon>, source: Arc<Source>) {
    loop {
        if daemon.is_draining() {
            return;
        }
        let _ = poll(&daemon, &source).await;
        let failures = source
            .status
            .lock()
            .map(|s| s.consecutive_failures)
            .unwrap_or(0);
        let wait = backoff(source.config.poll_interval(), failures);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = source.wake.notified() => {}
        }
    }
}

/// One poll of `source`: lists it, brings every followed plugin to the
/// version it follows. Returns the first failure, after recording all.
pub async fn poll(daemon: &Daemon, source: &Source) -> Result<(), CorralError> {
    let _sync = source.sync.lock().await;
    let name = source.name().to_string();
    let root = super::layout::root(source.config.base());
    let listing = source.s3.list_all(&root, s3::MAX_LISTED_KEYS).await;
    let objects = match listing {
        Ok(o) => o,
        Err(e) => {
            record_poll(daemon, source, Some(&e));
            return Err(e);
        }
    };
    let grouped = super::layout::group_by_plugin(source.config.base(), objects);
    if grouped.len() > source.config.max_plugins {
        let e = source_error(
            &name,
            "too_large",
            format!(
                "the source holds {} plugins, over max_plugins ({})",
                grouped.len(),
                source.config.max_plugins
            ),
        );
        record_poll(daemon, source, Some(&e));
        return Err(e);
    }
    let mut followed: Vec<String> = if source.config.follow_all {
        grouped.keys().cloned().collect()
    } else {
        Vec::new()
    };
    let pinned: Vec<String> = {
        let cache = source
            .cache
            .lock()
            .map(|c| c.pins.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        cache
            .into_iter()
            .chain(source.config.pins.keys().cloned())
            .collect()
    };
    for p in pinned {
        if !followed.contains(&p) {
            followed.push(p);
        }
    }
    let empty = Vec::new();
    let mut failures: BTreeMap<String, CorralError> = BTreeMap::new();
    let mut retry = Vec::new();
    for plugin in &followed {
        let objects = grouped.get(plugin).unwrap_or(&empty);
        match sync_plugin(
            daemon,
            source,
            plugin,
            objects,
            &source.follow_of(plugin),
            false,
        )
        .await
        {
            Ok(_) => {}
            // A dependency that comes later in the listing: once more at the end.
            Err(e) if matches!(e.kind, ErrorKind::DependencyMissing { .. }) => {
                retry.push(plugin.clone())
            }
            Err(e) => {
                failures.insert(plugin.clone(), e);
            }
        }
    }
    for plugin in retry {
        let objects = grouped.get(&plugin).unwrap_or(&empty);
        if let Err(e) = sync_plugin(
            daemon,
            source,
            &plugin,
            objects,
            &source.follow_of(&plugin),
            false,
        )
        .await
        {
            failures.insert(plugin, e);
        }
    }
    for (plugin, e) in &failures {
        tracing::error!(source = %name, plugin = %plugin, problem = problem_of(e), error = %e, "cannot update from the source; the installed version keeps serving");
        daemon.rt.events.publish(Event::SourceFailed {
            plugin: plugin.clone(),
            source_name: name.clone(),
            code: e.code().to_string(),
            problem: problem_of(e).to_string(),
            message: e.message.clone(),
        });
    }
    let first = failures.values().next().cloned();
    if let Ok(mut s) = source.status.lock() {
        s.plugin_errors = failures;
    }
    record_poll(daemon, source, first.as_ref());
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn record_poll(daemon: &Daemon, source: &Source, error: Option<&CorralError>) {
    let name = source.name();
    let now = super::now_ms();
    source
        .metrics
        .poll(name, error.map(problem_of).unwrap_or("ok"));
    if let Ok(mut s) = source.status.lock() {
        s.last_poll_ms = Some(now);
        match error {
            None => {
                s.last_success_ms = Some(now);
                s.consecutive_failures = 0;
                s.last_error = None;
            }
            Some(e) => {
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                s.last_error = Some(e.clone());
            }
        }
    }
    // Per-plugin failures were already published one by one.
    if let Some(e) = error
        && !matches!(&e.kind, ErrorKind::SourceError { problem, .. } if problem == "not_found")
        && source
            .status
            .lock()
            .map(|s| s.plugin_errors.is_empty())
            .unwrap_or(true)
    {
        tracing::error!(source = %name, problem = problem_of(e), error = %e, "polling the source failed; installed plugins keep running");
        daemon.rt.events.publish(Event::SourceFailed {
            plugin: String::new(),
            source_name: name.to_string(),
            code: e.code().to_string(),
            problem: problem_of(e).to_string(),
            message: e.message.clone(),
        });
    }
}

/// Brings `plugin` to what `follow` picks among `objects`; `explicit` is
/// an operator's install (it may replace a plugin installed from
/// elsewhere). Returns the install's answer, or None when nothing changed.
pub async fn sync_plugin(
    daemon: &Daemon,
    source: &Source,
    plugin: &str,
    objects: &[ObjectInfo],
    follow: &Follow,
    explicit: bool,
) -> Result<Option<InstallResponse>, CorralError> {
    let label = source.label();
    let existing = daemon.entry(plugin).ok();
    if let Some(e) = &existing
        && e.source != label
        && !explicit
    {
        return Err(CorralError::new(
            ErrorKind::AlreadyExists {
                plugin: plugin.to_string(),
                installed_version: e.package.manifest.plugin.version.to_string(),
                installed_digest: e.package.digest.clone(),
            },
            format!(
                "{plugin} is installed from {}, not from {label}; install it from the source to switch",
                e.source
            ),
        ));
    }
    let choice = fetch::choose(source, plugin, objects, follow)?;
    let (key, etag) = choice.identity();
    let cached = source
        .cache
        .lock()
        .ok()
        .and_then(|c| c.fetched.get(plugin).cloned());
    if let (Some(c), Some(e)) = (&cached, &existing)
        && c.key == key
        && c.etag == etag
        && e.package.digest == c.digest
        && e.source == label
    {
        return Ok(None);
    }
    let fetched = fetch::fetch(source, plugin, &choice).await;
    let fetched = match fetched {
        Ok(f) => f,
        Err(e) => {
            source.metrics.fetch(source.name(), problem_of(&e), 0);
            return Err(e);
        }
    };
    let (bytes, sha256) = match &fetched {
        Fetched::Archive { download, .. } => (download.size, Some(download.sha256.clone())),
        Fetched::Folder { .. } => (0, None),
    };
    let expected_version = match &fetched {
        Fetched::Archive { version, .. } => Some(version.clone()),
        Fetched::Folder { .. } => None,
    };
    let load = existing
        .as_ref()
        .map(|e| e.enabled.load(std::sync::atomic::Ordering::Relaxed))
        .unwrap_or(source.config.load);
    let source_name = source.name().to_string();
    let wanted = plugin.to_string();
    let follow_check = follow.clone();
    let installed = daemon
        .install_fetched(
            move |store| {
                let package = match &fetched {
                    Fetched::Archive { download, .. } => {
                        let file = std::fs::File::open(download.file.path()).map_err(|e| {
                            CorralError::internal(format!("reading a download back: {e}"))
                        })?;
                        store.import_tar_gz(file)?
                    }
                    Fetched::Folder { dir } => store.import_dir(dir.path())?,
                };
                let name = package.manifest.name();
                let version = &package.manifest.plugin.version;
                if name != wanted {
                    return Err(source_error(
                        &source_name,
                        "invalid_object",
                        format!("the package under {wanted}/ names itself {name}"),
                    ));
                }
                if let Some(v) = &expected_version
                    && v != version
                {
                    return Err(source_error(
                        &source_name,
                        "invalid_object",
                        format!("{wanted}/{v}.tar.gz holds version {version} in its plugin.toml"),
                    ));
                }
                if !follow_check.matches(version) {
                    return Err(source_error(
                        &source_name,
                        "not_found",
                        format!("{wanted} {version} does not match {follow_check}"),
                    ));
                }
                Ok(package)
            },
            label,
            InstallFlags {
                load,
                replace: true,
            },
        )
        .await;
    let (response, _) = match installed {
        Ok(r) => r,
        Err(e) => {
            source.metrics.fetch(source.name(), problem_of(&e), bytes);
            return Err(e);
        }
    };
    source.metrics.fetch(source.name(), "ok", bytes);
    if let Ok(mut c) = source.cache.lock() {
        c.fetched.insert(
            plugin.to_string(),
            CacheRecord {
                version: response.version.clone(),
                key,
                etag,
                sha256,
                digest: response.digest.clone(),
            },
        );
    }
    source.save_cache();
    if !response.unchanged {
        tracing::info!(source = %source.name(), plugin, version = %response.version, digest = %response.digest, "installed a new version from the source");
        daemon.rt.events.publish(Event::SourceUpdated {
            plugin: plugin.to_string(),
            source_name: source.name().to_string(),
            version: response.version.clone(),
            digest: response.digest.clone(),
        });
    }
    Ok(Some(response))
}

/// An operator's install from a source (API): resolves `follow`, installs
/// and, when `follow` is not `latest`, keeps following it (a pin) so the
/// next poll does not move the plugin away.
pub async fn install(
    daemon: &Daemon,
    source: &Source,
    plugin: &str,
    follow: Follow,
    load: bool,
) -> Result<InstallResponse, CorralError> {
    let _sync = source.sync.lock().await;
    let prefix = super::layout::plugin_prefix(source.config.base(), plugin);
    let objects = source.s3.list_all(&prefix, 100_000).await?;
    let response = sync_plugin(daemon, source, plugin, &objects, &follow, true).await?;
    if let Ok(mut c) = source.cache.lock() {
        match follow {
            Follow::Latest => c.pins.remove(plugin),
            other => c.pins.insert(plugin.to_string(), other.to_string()),
        };
    }
    source.save_cache();
    let response = match response {
        Some(r) => r,
        None => {
            let entry = daemon.entry(plugin)?;
            InstallResponse {
                plugin: plugin.to_string(),
                version: entry.package.manifest.plugin.version.to_string(),
                digest: entry.package.digest.clone(),
                unchanged: true,
                state: daemon.summary(plugin)?.state,
            }
        }
    };
    if load && daemon.entry(plugin).is_ok_and(|e| e.host().is_none()) {
        daemon.load(plugin).await?;
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let i = Duration::from_secs(1);
        assert_eq!(backoff(i, 0), i);
        assert_eq!(backoff(i, 1), Duration::from_secs(2));
        assert_eq!(backoff(i, 3), Duration::from_secs(8));
        assert_eq!(backoff(i, 30), Duration::from_secs(16));
        let long = Duration::from_secs(60);
        assert_eq!(backoff(long, 9), long + Duration::from_secs(300));
    }
}
