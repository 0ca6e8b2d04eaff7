//! A chosen version of a plugin, downloaded and verified: for the packed
//! layout the archive (size bounded, sha256 against its `.sha256`,
//! signature against the configured keys); for the unpacked layout every
//! file of the folder (count and total size bounded, paths checked) in a
//! temporary directory. Also reads a package's manifest and file list
//! without installing it, for browsing.

use super::Source;
use super::config::{Follow, Layout};
use super::layout::{self, MINISIG_EXT, PackedVersion, SHA256_EXT};
use super::s3::{Downloaded, ObjectInfo, source_error};
use super::verify;
use corral_protocol::error::CorralError;
use corral_protocol::manifest::{MANIFEST_FILE, Manifest};
use corral_protocol::sources::SourceFile;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Largest `.sha256` and `.minisig` read.
const SMALL_OBJECT: u64 = 4096;
/// Largest manifest read while browsing.
const MANIFEST_MAX: u64 = 1 << 20;
/// Most files an unpacked plugin may hold (the store's default too).
const MAX_UNPACKED_FILES: usize = 10_000;

/// What a follow resolved to in a listing.
#[derive(Debug, Clone)]
pub enum Choice {
    Packed(PackedVersion),
    /// The folder's files; its version is known once plugin.toml is read.
    Unpacked {
        files: Vec<(String, ObjectInfo)>,
        fingerprint: String,
    },
}

impl Choice {
    /// `(key, etag)` the cache compares.
    pub fn identity(&self) -> (String, Option<String>) {
        match self {
            Choice::Packed(v) => (v.archive.key.clone(), v.archive.etag.clone()),
            Choice::Unpacked { files, fingerprint } => (
                files
                    .first()
                    .map(|(_, o)| o.key.clone())
                    .unwrap_or_default(),
                Some(fingerprint.clone()),
            ),
        }
    }
}

/// A verified download, ready for the store.
pub enum Fetched {
    Archive {
        version: semver::Version,
        download: Downloaded,
    },
    Folder {
        dir: tempfile::TempDir,
    },
}

fn not_found(source: &Source, plugin: &str, why: String) -> CorralError {
    source_error(source.name(), "not_found", format!("{plugin}: {why}"))
}

/// Picks what `follow` names among `objects` (everything under
/// `<base>/<plugin>/`).
pub fn choose(
    source: &Source,
    plugin: &str,
    objects: &[ObjectInfo],
    follow: &Follow,
) -> Result<Choice, CorralError> {
    let base = source.config.base();
    if objects.is_empty() {
        return Err(not_found(
            source,
            plugin,
            format!(
                "nothing under {}/{}",
                source.config.bucket,
                layout::plugin_prefix(base, plugin)
            ),
        ));
    }
    match source.config.layout {
        Layout::Packed => {
            let versions = layout::packed_versions(base, plugin, objects);
            // `latest` is what was published last (so republishing an old
            // version rolls back to it); a version or a range picks the
            // highest that matches.
            let picked = match follow {
                Follow::Latest => versions
                    .iter()
                    .max_by_key(|v| (v.archive.modified_ms, v.version.clone()))
                    .map(|v| v.version.clone()),
                _ => follow.pick(versions.iter().map(|v| &v.version)).cloned(),
            };
            let available: Vec<String> = versions.iter().map(|v| v.version.to_string()).collect();
            let chosen = picked
                .and_then(|p| versions.into_iter().find(|v| v.version == p))
                .ok_or_else(|| {
                    not_found(
                        source,
                        plugin,
                        format!(
                            "no version matches {follow} (available: {})",
                            if available.is_empty() {
                                "none".into()
                            } else {
                                available.join(", ")
                            }
                        ),
                    )
                })?;
            Ok(Choice::Packed(chosen))
        }
        Layout::Unpacked => {
            let files: Vec<(String, ObjectInfo)> = layout::unpacked_files(base, plugin, objects)
                .into_iter()
                .map(|(rel, o)| (rel, o.clone()))
                .collect();
            let refs: Vec<(String, &ObjectInfo)> =
                files.iter().map(|(r, o)| (r.clone(), o)).collect();
            let fingerprint = layout::fingerprint(&refs);
            Ok(Choice::Unpacked { files, fingerprint })
        }
    }
}

/// Downloads and verifies a choice.
pub async fn fetch(source: &Source, plugin: &str, choice: &Choice) -> Result<Fetched, CorralError> {
    match choice {
        Choice::Packed(v) => fetch_packed(source, plugin, v).await,
        Choice::Unpacked { files, .. } => fetch_folder(source, plugin, files).await,
    }
}

async fn fetch_packed(
    source: &Source,
    plugin: &str,
    v: &PackedVersion,
) -> Result<Fetched, CorralError> {
    let name = source.name();
    let key = &v.archive.key;
    if !v.has_sha256 {
        return Err(source_error(
            name,
            "invalid_object",
            format!("{key} has no {key}{SHA256_EXT} beside it; publish with `corral publish`"),
        ));
    }
    let must_sign = source.config.require_signatures;
    if must_sign && !v.has_signature {
        return Err(source_error(
            name,
            "signature_missing",
            format!(
                "{key} is not signed ({key}{MINISIG_EXT} is missing) and this source requires signatures"
            ),
        ));
    }
    let max = source.config.max_object_size.0;
    // Checked before asking for the body, then again while it streams.
    if v.archive.size > max {
        return Err(source_error(
            name,
            "too_large",
            format!(
                "{key} is {} bytes, over max_object_size ({max} bytes)",
                v.archive.size
            ),
        ));
    }
    let sha_key = format!("{key}{SHA256_EXT}");
    let declared = verify::parse_sha256_file(
        name,
        &sha_key,
        &source.s3.get_small(&sha_key, SMALL_OBJECT).await?,
    )?;
    let download = source.s3.download(key, max, &source.scratch).await?;
    verify::check_sha256(name, key, &declared, &download.sha256)?;
    if v.has_signature && !source.keys.is_empty() {
        let sig_key = format!("{key}{MINISIG_EXT}");
        let signature = source.s3.get_small(&sig_key, SMALL_OBJECT).await?;
        verify::check_signature(name, key, download.file.path(), &signature, &source.keys)?;
    }
    tracing::debug!(source = %name, plugin, %key, bytes = download.size, "fetched and verified");
    Ok(Fetched::Archive {
        version: v.version.clone(),
        download,
    })
}

async fn fetch_folder(
    source: &Source,
    plugin: &str,
    files: &[(String, ObjectInfo)],
) -> Result<Fetched, CorralError> {
    let name = source.name();
    let max = source.config.max_object_size.0;
    if files.len() > MAX_UNPACKED_FILES {
        return Err(source_error(
            name,
            "too_large",
            format!("{plugin} holds more than {MAX_UNPACKED_FILES} files"),
        ));
    }
    let declared: u64 = files
        .iter()
        .map(|(_, o)| o.size)
        .fold(0, u64::saturating_add);
    if declared > max {
        return Err(source_error(
            name,
            "too_large",
            format!(
                "{plugin}'s files add up to {declared} bytes, over max_object_size ({max} bytes)"
            ),
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix(".folder-")
        .tempdir_in(&source.scratch)
        .map_err(|e| {
            CorralError::internal(format!(
                "creating a directory in {}: {e}",
                source.scratch.display()
            ))
        })?;
    let mut budget = max;
    for (rel, object) in files {
        let rel_path = crate::store::safe_relative(Path::new(rel)).map_err(|e| {
            source_error(
                name,
                "invalid_object",
                format!("{plugin}: the key {}: {e}", object.key),
            )
        })?;
        if rel_path.as_os_str().is_empty() {
            continue;
        }
        let download = source
            .s3
            .download(&object.key, budget, &source.scratch)
            .await?;
        budget = budget.saturating_sub(download.size);
        let dest = dir.path().join(&rel_path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                CorralError::internal(format!("creating {}: {e}", parent.display()))
            })?;
        }
        download.file.persist(&dest).map_err(|e| {
            CorralError::internal(format!("writing {}: {}", dest.display(), e.error))
        })?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| CorralError::internal(format!("chmod {}: {e}", dest.display())))?;
    }
    // S3 keeps no modes: the entry the manifest names is the one file
    // that must be executable.
    let manifest_path = dir.path().join(MANIFEST_FILE);
    if let Ok(manifest) = Manifest::load(&manifest_path) {
        let entry = crate::store::safe_relative(Path::new(manifest.plugin.entry.as_str()))
            .unwrap_or_default();
        let entry = dir.path().join(entry);
        if entry.is_file() {
            let _ = std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755));
        }
    }
    Ok(Fetched::Folder { dir })
}

/// The manifest inside a fetched package.
pub fn manifest_of(source: &Source, fetched: &Fetched) -> Result<Manifest, CorralError> {
    let invalid = |why: String| source_error(source.name(), "invalid_object", why);
    match fetched {
        Fetched::Folder { dir } => {
            Manifest::load(&dir.path().join(MANIFEST_FILE)).map_err(crate::package::manifest_error)
        }
        Fetched::Archive { download, .. } => {
            let mut found = None;
            walk_archive(download.file.path(), |path, kind, size, entry| {
                let depth = path.components().count();
                let is_manifest =
                    path.file_name().is_some_and(|n| n == MANIFEST_FILE) && depth <= 2;
                if kind == "file" && is_manifest && found.is_none() {
                    if size > MANIFEST_MAX {
                        return Err(format!(
                            "{} is larger than {MANIFEST_MAX} bytes",
                            path.display()
                        ));
                    }
                    let mut text = String::new();
                    entry
                        .take(MANIFEST_MAX)
                        .read_to_string(&mut text)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    found = Some((path.display().to_string(), text));
                }
                Ok(())
            })
            .map_err(invalid)?;
            let (file, text) =
                found.ok_or_else(|| invalid(format!("the archive holds no {MANIFEST_FILE}")))?;
            Manifest::parse(&text, &file).map_err(crate::package::manifest_error)
        }
    }
}

/// The files inside a fetched package.
pub fn files_of(source: &Source, fetched: &Fetched) -> Result<Vec<SourceFile>, CorralError> {
    let mut files = Vec::new();
    match fetched {
        Fetched::Archive { download, .. } => {
            walk_archive(download.file.path(), |path, kind, size, _| {
                files.push(SourceFile {
                    path: path.display().to_string(),
                    kind: kind.to_string(),
                    size,
                });
                Ok(())
            })
            .map_err(|why| source_error(source.name(), "invalid_object", why))?;
        }
        Fetched::Folder { dir } => {
            let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
            while let Some(rel) = stack.pop() {
                let Ok(listing) = std::fs::read_dir(dir.path().join(&rel)) else {
                    continue;
                };
                for item in listing.flatten() {
                    let child = rel.join(item.file_name());
                    let meta = item.metadata().ok();
                    if meta.as_ref().is_some_and(|m| m.is_dir()) {
                        stack.push(child.clone());
                        files.push(SourceFile {
                            path: child.display().to_string(),
                            kind: "dir".into(),
                            size: 0,
                        });
                    } else {
                        files.push(SourceFile {
                            path: child.display().to_string(),
                            kind: "file".into(),
                            size: meta.map(|m| m.len()).unwrap_or(0),
                        });
                    }
                }
            }
            files.sort_by(|a, b| a.path.cmp(&b.path));
        }
    }
    Ok(files)
}

/// Reads a `.tar.gz`'s entries (bounded by the store's file count),
/// handing each (path, kind, size, reader) to `visit`. Nothing is
/// written to disk.
fn walk_archive(
    path: &Path,
    mut visit: impl FnMut(&Path, &str, u64, &mut dyn Read) -> Result<(), String>,
) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar.gz archive: {e}"))?;
    for (count, entry) in entries.enumerate() {
        if count >= MAX_UNPACKED_FILES {
            return Err(format!("more than {MAX_UNPACKED_FILES} entries"));
        }
        let mut entry = entry.map_err(|e| format!("not a readable tar.gz archive: {e}"))?;
        let raw = entry
            .path()
            .map_err(|e| format!("an entry with an unreadable path: {e}"))?
            .into_owned();
        let rel = crate::store::safe_relative(&raw)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let kind = match entry.header().entry_type() {
            tar::EntryType::Directory => "dir",
            tar::EntryType::Regular | tar::EntryType::Continuous => "file",
            tar::EntryType::Symlink => "symlink",
            other => {
                return Err(format!(
                    "{}: entries of type {other:?} are not allowed",
                    rel.display()
                ));
            }
        };
        let size = entry.header().size().unwrap_or(0);
        visit(&rel, kind, size, &mut entry)?;
    }
    Ok(())
}
