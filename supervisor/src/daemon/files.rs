//! An installed package's files over the API (`GET
//! /v1/plugins/{name}/files` and `.../files/{path}`): what client
//! libraries show as a plugin's code and size.
//!
//! They are read from the daemon's store copy, never from where the
//! package was installed from. A requested path is relative, made of
//! plain names (no `..`, `.`, empty or absolute parts), and must still be
//! inside the package once symlinks are resolved; only regular files are
//! served, up to [`MAX_FILE_BYTES`]. Listing stops at [`MAX_FILES`]
//! entries and [`MAX_DEPTH`] levels, so a package cannot make an answer
//! grow without bound. Who may read them: whoever may read the plugin's
//! detail (a caller), since the package is what the detail's manifest and
//! digest already describe.

use super::Daemon;
use corral_protocol::api::{PackageFile, PackageFiles};
use corral_protocol::error::CorralError;
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

/// The largest file served; larger ones are refused, never cut.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Entries listed at most.
pub const MAX_FILES: usize = 10_000;
/// Directory levels walked at most.
pub const MAX_DEPTH: usize = 32;

fn modified_ms(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The regular files under `root`, sorted by path (symlinks are not
/// followed; a package's own links are reachable by their path).
pub fn list(root: &Path) -> Result<Vec<PackageFile>, CorralError> {
    let mut files = Vec::new();
    let mut pending = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| CorralError::internal(format!("reading the stored package: {e}")))?;
        for entry in entries {
            let entry = entry
                .map_err(|e| CorralError::internal(format!("reading the stored package: {e}")))?;
            let meta = entry
                .metadata()
                .map_err(|e| CorralError::internal(format!("reading the stored package: {e}")))?;
            let path = entry.path();
            if meta.is_dir() && depth < MAX_DEPTH {
                pending.push((path, depth + 1));
            } else if meta.is_file() {
                if files.len() >= MAX_FILES {
                    return Err(CorralError::internal(format!(
                        "the package holds more than {MAX_FILES} files"
                    )));
                }
                let relative = path.strip_prefix(root).unwrap_or(&path);
                files.push(PackageFile {
                    path: relative.to_string_lossy().into_owned(),
                    size: meta.len(),
                    modified_ms: modified_ms(&meta),
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// `requested` checked to be plain names inside a package.
pub fn checked_path(requested: &str) -> Result<PathBuf, CorralError> {
    let bad = |why: &str| CorralError::invalid_input(format!("file path {requested:?}: {why}"));
    if requested.is_empty() || requested.len() > 4096 || requested.contains('\0') {
        return Err(bad("must be 1 to 4096 bytes without NUL"));
    }
    if requested.starts_with('/') {
        return Err(bad("must be relative to the package"));
    }
    if requested
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad(
            "must be plain names separated by single `/` (no `.`, `..`)",
        ));
    }
    let path = PathBuf::from(requested);
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad("must be plain names"));
    }
    Ok(path)
}

/// The bytes of `requested` under `root`: a regular file inside the
/// package once links are resolved, at most [`MAX_FILE_BYTES`].
pub fn read(root: &Path, requested: &str) -> Result<Vec<u8>, CorralError> {
    let relative = checked_path(requested)?;
    let missing = || CorralError::invalid_input(format!("the package has no file {requested}"));
    let root = root
        .canonicalize()
        .map_err(|e| CorralError::internal(format!("the stored package: {e}")))?;
    let resolved = root.join(&relative).canonicalize().map_err(|_| missing())?;
    if !resolved.starts_with(&root) {
        return Err(CorralError::invalid_input(format!(
            "{requested} leads outside the package"
        )));
    }
    let meta = std::fs::metadata(&resolved).map_err(|_| missing())?;
    if !meta.is_file() {
        return Err(CorralError::invalid_input(format!(
            "{requested} is not a regular file"
        )));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(CorralError::invalid_input(format!(
            "{requested} is {} bytes, more than the {MAX_FILE_BYTES} served",
            meta.len()
        )));
    }
    let bytes = std::fs::read(&resolved)
        .map_err(|e| CorralError::internal(format!("reading {requested}: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(CorralError::invalid_input(format!(
            "{requested} is more than the {MAX_FILE_BYTES} bytes served"
        )));
    }
    Ok(bytes)
}

impl Daemon {
    /// `GET /v1/plugins/{name}/files`.
    pub async fn package_files(&self, name: &str) -> Result<PackageFiles, CorralError> {
        let entry = self.entry(name)?;
        let dir = entry.package.dir.clone();
        let files = tokio::task::spawn_blocking(move || list(&dir))
            .await
            .map_err(|e| CorralError::internal(format!("listing the package: {e}")))??;
        Ok(PackageFiles {
            plugin: name.to_string(),
            version: entry.package.manifest.plugin.version.to_string(),
            digest: entry.package.digest.clone(),
            files,
        })
    }

    /// `GET /v1/plugins/{name}/files/{path}`.
    pub async fn package_file(&self, name: &str, path: &str) -> Result<Vec<u8>, CorralError> {
        checked_path(path)?;
        let entry = self.entry(name)?;
        let dir = entry.package.dir.clone();
        let path = path.to_string();
        tokio::task::spawn_blocking(move || read(&dir, &path))
            .await
            .map_err(|e| CorralError::internal(format!("reading the package: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("bin")).expect("mkdir");
        std::fs::write(dir.path().join("plugin.toml"), "[plugin]\n").expect("write");
        std::fs::write(dir.path().join("bin/p"), b"\x7fELF").expect("write");
        std::os::unix::fs::symlink("bin/p", dir.path().join("alias")).expect("symlink");
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("out")).expect("symlink");
        dir
    }

    #[test]
    fn lists_regular_files_with_sizes() {
        let dir = package();
        let files = list(dir.path()).expect("list");
        let paths: Vec<(&str, u64)> = files.iter().map(|f| (f.path.as_str(), f.size)).collect();
        assert_eq!(paths, [("bin/p", 4), ("plugin.toml", 9)]);
        assert!(files.iter().all(|f| f.modified_ms > 0));
    }

    #[test]
    fn reads_files_and_links_inside_only() {
        let dir = package();
        assert_eq!(read(dir.path(), "bin/p").expect("read"), b"\x7fELF");
        assert_eq!(
            read(dir.path(), "alias").expect("in-package link"),
            b"\x7fELF"
        );
        let outside = read(dir.path(), "out").expect_err("a link out");
        assert!(outside.message.contains("outside"), "{outside}");
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "bin/../plugin.toml",
            "./plugin.toml",
            "bin//p",
        ] {
            let e = read(dir.path(), bad).expect_err(bad);
            assert_eq!(e.code(), "invalid_input", "{bad}: {e}");
        }
        let e = read(dir.path(), "bin").expect_err("a directory");
        assert!(e.message.contains("not a regular file"), "{e}");
        let e = read(dir.path(), "missing").expect_err("missing");
        assert!(e.message.contains("no file"), "{e}");
    }

    #[test]
    fn files_past_the_bound_are_refused() {
        let dir = package();
        let big = std::fs::File::create(dir.path().join("big")).expect("create");
        big.set_len(MAX_FILE_BYTES + 1).expect("sparse file");
        let e = read(dir.path(), "big").expect_err("too big");
        assert!(e.message.contains("more than"), "{e}");
    }
}
