//! Hot reload: watches source folders (inotify) and, once a changed
//! package has been quiet for a moment, installs it again, which swaps it
//! in when it is loaded and its contents changed.

use super::Daemon;
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a package must stay unchanged before it is picked up, so a
/// package being copied in is not read half-written.
pub const QUIET: Duration = Duration::from_millis(400);

/// Starts watching `sources`; the returned watcher must be kept alive.
pub fn watch(
    daemon: Arc<Daemon>,
    sources: Vec<PathBuf>,
) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let roots = sources.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            // Reads (our own import reading the package) are not changes.
            if matches!(
                event.kind,
                notify::EventKind::Access(_) | notify::EventKind::Other
            ) {
                return;
            }
            for path in event.paths {
                if let Some(package) = package_of(&roots, &path) {
                    let _ = tx.send(package);
                }
            }
        }
    })?;
    for source in &sources {
        watcher.watch(source, RecursiveMode::Recursive)?;
    }
    tokio::spawn(async move {
        let mut pending: BTreeSet<PathBuf> = BTreeSet::new();
        loop {
            let next = if pending.is_empty() {
                rx.recv().await
            } else {
                match tokio::time::timeout(QUIET, rx.recv()).await {
                    Ok(p) => p,
                    Err(_) => {
                        for dir in std::mem::take(&mut pending) {
                            if corral_protocol::package_layout::is_package_dir(&dir) {
                                daemon.source_changed(&dir).await;
                            }
                        }
                        continue;
                    }
                }
            };
            match next {
                Some(dir) => {
                    pending.insert(dir);
                }
                None => return,
            }
        }
    });
    Ok(watcher)
}

/// The package directory (first level under a source) a path belongs to.
fn package_of(roots: &[PathBuf], path: &Path) -> Option<PathBuf> {
    roots.iter().find_map(|root| {
        let rest = path.strip_prefix(root).ok()?;
        let first = rest.components().next()?;
        Some(root.join(first))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_package() {
        let roots = vec![PathBuf::from("/srv/plugins")];
        assert_eq!(
            package_of(&roots, Path::new("/srv/plugins/hello/bin/hello")),
            Some(PathBuf::from("/srv/plugins/hello"))
        );
        assert_eq!(package_of(&roots, Path::new("/srv/plugins")), None);
        assert_eq!(package_of(&roots, Path::new("/etc/passwd")), None);
    }
}
