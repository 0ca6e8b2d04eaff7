//! The content-addressed package store: `<state>/store/<sha256>/`.
//!
//! A package is checked before anything of it runs: its manifest parses,
//! its entry exists, and it contains only regular files, directories and
//! relative symlinks that stay inside it: no `..`, no absolute paths, no
//! hard links, no devices, within size and count limits. The store copy is
//! owned by the daemon and readable (not writable) by plugin uids, so a
//! plugin can never change its own code or another plugin's; the store's
//! own directory cannot be listed by them. The digest covers paths, kinds,
//! the executable bit and contents, so the same package always lands in
//! the same directory.
//!
//! How a package is read: [`eyes`] (whose permissions apply: a client's
//! for a path it asked to install), [`tree`] (a directory, never through
//! a link, never blocking, refused if it changes), [`tar_guard`] (bounds
//! on an archive's headers before the tar reader allocates for them).

mod eyes;
mod tar_guard;
mod tree;

pub use eyes::Eyes;

use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::manifest::{MANIFEST_FILE, Manifest};
use corral_protocol::package_layout::{self, YAML_MANIFEST_FILE};
use nix::sys::stat::{SFlag, fstat};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use tree::{Entry, Tree, Walk};

/// Limits on what a package may contain.
#[derive(Debug, Clone, Copy)]
pub struct PackageLimits {
    pub max_bytes: u64,
    pub max_files: usize,
}

impl Default for PackageLimits {
    fn default() -> Self {
        PackageLimits {
            max_bytes: 512 << 20,
            max_files: 10_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    limits: PackageLimits,
}

/// A package in the store.
#[derive(Debug, Clone)]
pub struct StoredPackage {
    pub digest: String,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// What an install from a path read.
#[derive(Debug, Clone)]
pub struct Imported {
    pub package: StoredPackage,
    /// It was a directory (which a reload can read again), not an archive.
    pub from_dir: bool,
}

pub(crate) fn invalid(reason: impl Into<String>) -> CorralError {
    let reason = reason.into();
    CorralError::new(
        ErrorKind::InvalidPackage {
            reason: reason.clone(),
        },
        format!("invalid package: {reason}"),
    )
}

fn io_error(context: &str, path: &Path, e: std::io::Error) -> CorralError {
    CorralError::internal(format!("{context} {}: {e}", path.display()))
}

impl Store {
    pub fn open(root: &Path, limits: PackageLimits) -> Result<Store, CorralError> {
        std::fs::create_dir_all(root).map_err(|e| io_error("creating", root, e))?;
        // Plugin uids must traverse the store to reach their packages, but
        // nobody needs to list it.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| io_error("setting the mode of", root, e))?;
        Ok(Store {
            root: root.to_path_buf(),
            limits,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The stored package with this digest, if present.
    pub fn get(&self, digest: &str) -> Option<StoredPackage> {
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let dir = self.root.join(digest);
        let (manifest, _) = package_layout::load(&dir).ok()?;
        Some(StoredPackage {
            digest: digest.to_string(),
            dir,
            manifest,
        })
    }

    /// What a package may hold.
    pub fn limits(&self) -> PackageLimits {
        self.limits
    }

    /// Imports a package from a directory or a `.tar.gz` file, read with
    /// the daemon's own permissions (source folders, `corrald --check`).
    pub fn import_path(&self, path: &Path) -> Result<StoredPackage, CorralError> {
        self.import_path_as(path, &Eyes::Daemon)
            .map(|imported| imported.package)
    }

    /// Imports a package directory, with the daemon's own permissions.
    pub fn import_dir(&self, dir: &Path) -> Result<StoredPackage, CorralError> {
        let imported = self.import_path_as(dir, &Eyes::Daemon)?;
        if !imported.from_dir {
            return Err(invalid(format!("{} is not a directory", dir.display())));
        }
        Ok(imported.package)
    }

    /// Imports a package from a directory or a `.tar.gz` file, reading it
    /// with `eyes`' permissions, on a thread of its own (blocking: call it
    /// from a blocking context).
    pub fn import_path_as(&self, path: &Path, eyes: &Eyes) -> Result<Imported, CorralError> {
        let store = self.clone();
        let path = path.to_path_buf();
        let eyes = eyes.clone();
        eyes::on_own_thread(move || store.import_path_on_this_thread(&path, &eyes))
            .map_err(|e| CorralError::internal(format!("reading the package: {e}")))?
    }

    fn import_path_on_this_thread(
        &self,
        path: &Path,
        eyes: &Eyes,
    ) -> Result<Imported, CorralError> {
        if !path.is_absolute() {
            return Err(invalid(format!("{} is not absolute", path.display())));
        }
        let mut switch = eyes::Switch::new(eyes)
            .map_err(|e| CorralError::internal(format!("reading credentials: {e}")))?;
        switch
            .peer()
            .map_err(|e| CorralError::internal(format!("taking the client's credentials: {e}")))?;
        let fd = tree::open_path(path);
        switch.daemon().map_err(|e| {
            CorralError::internal(format!("taking back the daemon's credentials: {e}"))
        })?;
        let fd = fd?;
        let before = fstat(fd.as_fd()).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        match SFlag::from_bits_truncate(before.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => Ok(Imported {
                package: self.import_dir_fd(&fd, path, &mut switch)?,
                from_dir: true,
            }),
            SFlag::S_IFREG => {
                let mut file = std::fs::File::from(fd);
                let package = self.import_tar_gz(&mut file)?;
                let after =
                    fstat(file.as_fd()).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
                if after.st_size != before.st_size
                    || after.st_mtime != before.st_mtime
                    || after.st_mtime_nsec != before.st_mtime_nsec
                {
                    self.prune_one_unreferenced(&package.digest);
                    return Err(invalid(format!(
                        "{} changed while it was being read",
                        path.display()
                    )));
                }
                Ok(Imported {
                    package,
                    from_dir: false,
                })
            }
            _ => Err(invalid(format!(
                "{} is not a regular file or a directory (a FIFO, socket or device): install a package directory or a .tar.gz",
                path.display()
            ))),
        }
    }

    /// Nothing to do: an archive that changed may have landed in the
    /// store, where the next prune (after every install) removes it when
    /// nothing refers to it.
    fn prune_one_unreferenced(&self, _digest: &str) {}

    /// A package directory open at `fd`: hashed in place first (nothing is
    /// copied when the store has it), then copied, hashing again; the two
    /// digests must agree.
    fn import_dir_fd(
        &self,
        fd: &std::os::fd::OwnedFd,
        shown: &Path,
        switch: &mut eyes::Switch,
    ) -> Result<StoredPackage, CorralError> {
        let tree = Walk {
            switch,
            limits: self.limits,
            dest: None,
        }
        .run(fd, shown)?;
        // A bucket-layout folder (only `index.js`) is named after itself,
        // which its store directory (named by digest) is not: its copy gets
        // the `plugin.toml` it stands for, and the name is in its digest.
        let bare = bare_manifest_of(&tree, shown)?;
        let digest = match &bare {
            Some(manifest) => bare_digest(&tree.digest, manifest),
            None => tree.digest.clone(),
        };
        let final_dir = self.root.join(&digest);
        if final_dir.exists() {
            let manifest = checked_manifest(&final_dir, &tree, shown)?;
            return Ok(StoredPackage {
                digest,
                dir: final_dir,
                manifest,
            });
        }
        let staging = self.staging(".import-")?;
        let copied = Walk {
            switch,
            limits: self.limits,
            dest: Some(staging.path()),
        }
        .run(fd, shown)?;
        if copied.digest != tree.digest {
            return Err(invalid(format!(
                "{} changed while it was being read",
                shown.display()
            )));
        }
        if let Some(manifest) = &bare {
            let path = staging.path().join(MANIFEST_FILE);
            std::fs::write(&path, bare_manifest_text(manifest))
                .map_err(|e| io_error("writing", &path, e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .map_err(|e| io_error("setting the mode of", &path, e))?;
        }
        let manifest = checked_manifest(staging.path(), &copied, shown)?;
        self.adopt(staging.keep(), &final_dir)?;
        Ok(StoredPackage {
            digest,
            dir: final_dir,
            manifest,
        })
    }

    fn staging(&self, prefix: &str) -> Result<tempfile::TempDir, CorralError> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.root)
            .map_err(|e| io_error("creating a staging directory in", &self.root, e))
    }

    /// Moves a complete staged package to its final name.
    fn adopt(&self, staged: PathBuf, final_dir: &Path) -> Result<(), CorralError> {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io_error("setting the mode of", &staged, e))?;
        if let Err(e) = std::fs::rename(&staged, final_dir) {
            let _ = std::fs::remove_dir_all(&staged);
            // Another import of the same digest may have won the race.
            if !final_dir.exists() {
                return Err(io_error("moving the package into", final_dir, e));
            }
        }
        Ok(())
    }

    /// Imports an uploaded or local `.tar.gz` of a package directory (the
    /// archive holds the package's files at its top level, or under one
    /// top-level directory).
    pub fn import_tar_gz<R: Read>(&self, reader: R) -> Result<StoredPackage, CorralError> {
        let staging = self.staging(".upload-")?;
        self.unpack(reader, staging.path())?;
        // A single top-level directory is the package.
        let mut top: Vec<PathBuf> = std::fs::read_dir(staging.path())
            .map_err(|e| io_error("reading", staging.path(), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        let package_dir =
            if top.len() == 1 && top[0].is_dir() && !package_layout::is_package_dir(staging.path())
            {
                top.remove(0)
            } else {
                staging.path().to_path_buf()
            };
        // Unpacked already, by us: hashed where it lies and moved into
        // place, not copied again.
        let shown = Path::new("the archive");
        let fd = tree::open_path(&package_dir)?;
        let mut switch = eyes::Switch::new(&Eyes::Daemon)
            .map_err(|e| CorralError::internal(format!("reading credentials: {e}")))?;
        let tree = Walk {
            switch: &mut switch,
            limits: self.limits,
            dest: None,
        }
        .run(&fd, shown)?;
        let manifest = checked_manifest(&package_dir, &tree, shown)?;
        let final_dir = self.root.join(&tree.digest);
        if !final_dir.exists() {
            let moved = self.root.join(format!(".upload-{}", tree.digest));
            let _ = std::fs::remove_dir_all(&moved);
            std::fs::rename(&package_dir, &moved)
                .map_err(|e| io_error("moving", &package_dir, e))?;
            self.adopt(moved, &final_dir)?;
        }
        Ok(StoredPackage {
            digest: tree.digest,
            dir: final_dir,
            manifest,
        })
    }

    fn unpack<R: Read>(&self, reader: R, into: &Path) -> Result<(), CorralError> {
        let gz = flate2::read::GzDecoder::new(reader);
        let mut archive = tar::Archive::new(tar_guard::TarGuard::new(gz));
        let entries = archive
            .entries()
            .map_err(|e| invalid(format!("not a tar.gz archive: {e}")))?;
        let mut total: u64 = 0;
        let mut count = 0usize;
        for entry in entries {
            let mut entry = entry.map_err(|e| {
                if count == 0 {
                    invalid(format!("not a tar.gz archive: {e}"))
                } else {
                    invalid(format!("corrupt archive: {e}"))
                }
            })?;
            count += 1;
            if count > self.limits.max_files {
                return Err(invalid(format!(
                    "more than {} entries",
                    self.limits.max_files
                )));
            }
            let raw_path = entry
                .path()
                .map_err(|e| invalid(format!("entry with an unreadable path: {e}")))?
                .into_owned();
            let rel = safe_relative(&raw_path).map_err(invalid)?;
            if rel.as_os_str().is_empty() {
                continue;
            }
            let dest = into.join(&rel);
            let kind = entry.header().entry_type();
            match kind {
                tar::EntryType::Directory => {
                    std::fs::create_dir_all(&dest).map_err(|e| io_error("creating", &dest, e))?;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry
                        .header()
                        .size()
                        .map_err(|e| invalid(format!("{}: {e}", rel.display())))?;
                    // Refused on the declared size before writing, and
                    // counted by what is written.
                    let budget = self.limits.max_bytes.saturating_sub(total);
                    if size > budget {
                        return Err(invalid(format!(
                            "larger than {} bytes unpacked",
                            self.limits.max_bytes
                        )));
                    }
                    if let Some(parent) = dest.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| io_error("creating", parent, e))?;
                    }
                    reject_existing_link(&dest)?;
                    let mut out =
                        std::fs::File::create(&dest).map_err(|e| io_error("creating", &dest, e))?;
                    // Copy at most the declared size: a lying header cannot
                    // make us write more.
                    let copied = std::io::copy(&mut (&mut entry).take(size), &mut out)
                        .map_err(|e| invalid(format!("{}: {e}", rel.display())))?;
                    if copied != size {
                        return Err(invalid(format!(
                            "{}: truncated in the archive",
                            rel.display()
                        )));
                    }
                    total = total.saturating_add(copied);
                    let mode = entry.header().mode().unwrap_or(0o644);
                    let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| io_error("setting the mode of", &dest, e))?;
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(|e| invalid(format!("{}: {e}", rel.display())))?
                        .ok_or_else(|| {
                            invalid(format!("{}: symlink without a target", rel.display()))
                        })?
                        .into_owned();
                    check_symlink(&rel, &target).map_err(invalid)?;
                    if let Some(parent) = dest.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| io_error("creating", parent, e))?;
                    }
                    reject_existing_link(&dest)?;
                    std::os::unix::fs::symlink(&target, &dest)
                        .map_err(|e| io_error("creating", &dest, e))?;
                }
                tar::EntryType::Link => {
                    return Err(invalid(format!(
                        "{}: hard links are not allowed",
                        rel.display()
                    )));
                }
                other => {
                    return Err(invalid(format!(
                        "{}: entries of type {other:?} are not allowed (only files, directories and relative symlinks)",
                        rel.display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Deletes stored packages whose digest is not in `keep`.
    pub fn prune(&self, keep: &[&str]) -> Vec<String> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return removed;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale_staging = name.starts_with(".import-") || name.starts_with(".upload-");
            if (stale_staging || (name.len() == 64 && !keep.contains(&name.as_str())))
                && std::fs::remove_dir_all(entry.path()).is_ok()
            {
                removed.push(name);
            }
        }
        removed
    }
}

/// An archive path as a relative path with only normal components.
pub(crate) fn safe_relative(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("{}: '..' leaves the package", path.display()));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{}: absolute paths are not allowed",
                    path.display()
                ));
            }
        }
    }
    Ok(out)
}

/// A symlink at `at` (relative to the package) must point, relatively, to
/// somewhere inside the package.
pub(crate) fn check_symlink(at: &Path, target: &Path) -> Result<(), String> {
    if target.is_absolute() {
        return Err(format!(
            "{}: symlink to the absolute path {}",
            at.display(),
            target.display()
        ));
    }
    let mut depth: i64 = at.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Err(format!(
                "{}: symlink to {} points outside the package",
                at.display(),
                target.display()
            ));
        }
    }
    Ok(())
}

/// Refuses to write through a symlink an earlier archive entry planted.
fn reject_existing_link(dest: &Path) -> Result<(), CorralError> {
    let mut p = PathBuf::new();
    for c in dest.components() {
        p.push(c);
        if let Ok(m) = std::fs::symlink_metadata(&p)
            && m.file_type().is_symlink()
        {
            return Err(invalid(format!(
                "{}: written through a symlink",
                dest.display()
            )));
        }
    }
    Ok(())
}

/// The manifest of a package read into `dir` (a directory of ours), and
/// its entry present as a file.
fn checked_manifest(dir: &Path, tree: &Tree, shown: &Path) -> Result<Manifest, CorralError> {
    let file = if dir.join(YAML_MANIFEST_FILE).exists() && !dir.join(MANIFEST_FILE).exists() {
        YAML_MANIFEST_FILE
    } else {
        MANIFEST_FILE
    };
    let label = shown.join(file).display().to_string();
    let text = std::fs::read_to_string(dir.join(file)).map_err(|e| {
        crate::package::manifest_error(corral_protocol::manifest::ManifestError {
            file: label.clone(),
            key: "(document)".into(),
            reason: format!("cannot read: {e}"),
            line: None,
        })
    })?;
    let manifest = if file == YAML_MANIFEST_FILE {
        corral_protocol::manifest_yaml::parse(&text, &label)
    } else {
        Manifest::parse(&text, &label)
    }
    .map_err(crate::package::manifest_error)?;
    let entry_rel: PathBuf = Path::new(manifest.plugin.entry.as_str())
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect();
    match tree.entries.get(&entry_rel) {
        Some(Entry::File { .. }) => {}
        Some(Entry::Symlink { .. }) => {
            let resolved = dir
                .join(&entry_rel)
                .canonicalize()
                .map_err(|e| invalid(format!("entry {}: {e}", entry_rel.display())))?;
            if !resolved.is_file() {
                return Err(invalid(format!(
                    "entry {} is not a file",
                    entry_rel.display()
                )));
            }
        }
        _ => {
            return Err(invalid(format!(
                "the entry {} named in the manifest is not in the package",
                entry_rel.display()
            )));
        }
    }
    Ok(manifest)
}

/// The manifest a folder holding only `index.js` (seed 000's bucket
/// layout) stands for, named after the folder; `None` for a package with a
/// manifest of its own.
fn bare_manifest_of(tree: &Tree, shown: &Path) -> Result<Option<Manifest>, CorralError> {
    let has = |name: &str| tree.entries.contains_key(Path::new(name));
    if has(MANIFEST_FILE) || has(YAML_MANIFEST_FILE) || !has(package_layout::BARE_ENTRY) {
        return Ok(None);
    }
    package_layout::bare(shown)
        .map(Some)
        .map_err(crate::package::manifest_error)
}

/// A bare package's digest: its files' digest and the name it stands for.
fn bare_digest(files_digest: &str, manifest: &Manifest) -> String {
    let mut hasher = Sha256::new();
    hasher.update(files_digest.as_bytes());
    hasher.update(b"\0bare\0");
    hasher.update(manifest.name().as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `plugin.toml` a bucket-layout package stands for (its name was
/// checked as a plugin name, so it needs no quoting).
fn bare_manifest_text(manifest: &Manifest) -> String {
    let p = &manifest.plugin;
    format!(
        "# Written by corral for a folder holding only {entry} (seed 000's layout).\n[plugin]\nname = \"{name}\"\nversion = \"{version}\"\nentry = \"{entry}\"\nruntime = \"{runtime}\"\ndefault_method = \"{method}\"\n",
        name = p.name,
        version = p.version,
        entry = p.entry.as_str(),
        runtime = p.runtime,
        method = package_layout::BARE_DEFAULT_METHOD,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(dir: &Path) {
        std::fs::create_dir_all(dir.join("bin")).expect("mkdir");
        std::fs::write(
            dir.join("plugin.toml"),
            "[plugin]\nname = \"p\"\nversion = \"1.0.0\"\nentry = \"bin/p\"\n",
        )
        .expect("manifest");
        std::fs::write(dir.join("bin/p"), b"\x7fELF fake").expect("entry");
        std::fs::set_permissions(dir.join("bin/p"), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(&dir.path().join("store"), PackageLimits::default()).expect("store");
        (dir, store)
    }

    fn tar_gz(build: impl FnOnce(&mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>)) -> Vec<u8> {
        let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(enc);
        build(&mut b);
        b.into_inner().expect("tar").finish().expect("gz")
    }

    fn file(
        b: &mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>,
        path: &str,
        data: &[u8],
        mode: u32,
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Regular);
        // set_path refuses '..'; write the raw name to test our checks.
        let name = h.as_old_mut().name.as_mut();
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, data).expect("append");
    }

    #[test]
    fn import_is_content_addressed_and_normalises_modes() {
        let (tmp, store) = store();
        let src = tmp.path().join("src");
        package(&src);
        let a = store.import_dir(&src).expect("import");
        let b = store.import_dir(&src).expect("again");
        assert_eq!(a.digest, b.digest);
        let mode = std::fs::metadata(a.dir.join("bin/p"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(
            mode, 0o755,
            "executable and readable by plugin uids, writable by nobody else"
        );
        std::fs::write(src.join("data.txt"), "x").expect("write");
        let c = store.import_dir(&src).expect("changed");
        assert_ne!(a.digest, c.digest);
        assert_eq!(store.prune(&[c.digest.as_str()]), vec![a.digest.clone()]);
        assert!(store.get(&a.digest).is_none());
        assert!(store.get(&c.digest).is_some());
    }

    #[test]
    fn tarballs_unpack_with_or_without_a_top_directory() {
        let (_tmp, store) = store();
        let manifest = b"[plugin]\nname = \"p\"\nversion = \"1.0.0\"\nentry = \"bin/p\"\n";
        let flat = tar_gz(|b| {
            file(b, "plugin.toml", manifest, 0o644);
            file(b, "bin/p", b"code", 0o755);
        });
        let nested = tar_gz(|b| {
            file(b, "p-1.0/plugin.toml", manifest, 0o644);
            file(b, "p-1.0/bin/p", b"code", 0o755);
        });
        let a = store.import_tar_gz(&flat[..]).expect("flat");
        let b = store.import_tar_gz(&nested[..]).expect("nested");
        assert_eq!(a.digest, b.digest);
    }

    #[test]
    fn hostile_archives_are_refused_and_leave_nothing() {
        let (_tmp, store) = store();
        let manifest = b"[plugin]\nname = \"p\"\nversion = \"1.0.0\"\nentry = \"bin/p\"\n";
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "leaves the package",
                tar_gz(|b| file(b, "../../etc/evil", b"x", 0o644)),
            ),
            ("absolute", tar_gz(|b| file(b, "/etc/evil", b"x", 0o644))),
            (
                "points outside",
                tar_gz(|b| {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.set_path("lib").expect("path");
                    h.set_link_name("../../../etc").expect("link");
                    h.set_cksum();
                    b.append(&h, &[][..]).expect("append");
                }),
            ),
            (
                "hard links",
                tar_gz(|b| {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    h.set_path("x").expect("path");
                    h.set_link_name("plugin.toml").expect("link");
                    h.set_cksum();
                    b.append(&h, &[][..]).expect("append");
                }),
            ),
            (
                "not allowed",
                tar_gz(|b| {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_size(0);
                    h.set_path("dev").expect("path");
                    h.set_cksum();
                    b.append(&h, &[][..]).expect("append");
                }),
            ),
            (
                "not in the package",
                tar_gz(|b| file(b, "plugin.toml", manifest, 0o644)),
            ),
            ("not a tar.gz", b"this is not gzip".to_vec()),
        ];
        for (expected, bytes) in cases {
            let e = store.import_tar_gz(&bytes[..]).expect_err(expected);
            assert_eq!(e.code(), "invalid_package", "{e}");
            assert!(e.message.contains(expected), "{expected}: {e}");
        }
        let left: Vec<_> = std::fs::read_dir(store.root()).expect("read").collect();
        assert!(left.is_empty(), "staging left behind: {left:?}");
    }

    #[test]
    fn bad_manifests_are_named() {
        let (tmp, store) = store();
        let src = tmp.path().join("src");
        package(&src);
        std::fs::write(src.join("plugin.toml"), "[plugin]\nname = \"P!\"\n").expect("write");
        let e = store.import_dir(&src).expect_err("bad");
        assert_eq!(e.code(), "invalid_manifest");
        assert!(e.message.contains("plugin.name"), "{e}");
    }

    #[test]
    fn symlinks_inside_are_fine_and_outside_are_not() {
        let (tmp, store) = store();
        let src = tmp.path().join("src");
        package(&src);
        std::os::unix::fs::symlink("bin/p", src.join("alias")).expect("symlink");
        store.import_dir(&src).expect("inside");
        std::os::unix::fs::symlink("/etc/shadow", src.join("shadow")).expect("symlink");
        let e = store.import_dir(&src).expect_err("outside");
        assert!(e.message.contains("absolute"), "{e}");
    }

    #[test]
    fn a_bare_index_js_folder_is_stored_with_the_manifest_it_stands_for() {
        let (tmp, store) = store();
        let src = tmp.path().join("src/my-plugin");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(src.join("index.js"), "module.exports = class {};").expect("write");
        let stored = store.import_dir(&src).expect("import");
        assert_eq!(stored.manifest.name(), "my-plugin");
        assert_eq!(
            stored.manifest.plugin.runtime,
            corral_protocol::manifest::Runtime::Js
        );
        // Read back from the store, where the folder is named by digest.
        let again = store.get(&stored.digest).expect("stored");
        assert_eq!(again.manifest, stored.manifest);
        // The same script under another folder name is another plugin.
        let other = tmp.path().join("src/other");
        std::fs::create_dir_all(&other).expect("mkdir");
        std::fs::copy(src.join("index.js"), other.join("index.js")).expect("copy");
        let second = store.import_dir(&other).expect("import");
        assert_ne!(second.digest, stored.digest);
        assert_eq!(second.manifest.name(), "other");
    }

    #[test]
    fn a_plugin_yaml_package_is_stored() {
        let (tmp, store) = store();
        let src = tmp.path().join("src/y");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(
            src.join("plugin.yaml"),
            "name: seed_two\nversion: 1.0.0\nauthor: A\nentry_point: ./plugin.py\n",
        )
        .expect("write");
        std::fs::write(src.join("plugin.py"), "").expect("write");
        let stored = store.import_dir(&src).expect("import");
        assert_eq!(stored.manifest.name(), "seed_two");
        assert_eq!(
            store.get(&stored.digest).expect("stored").manifest.name(),
            "seed_two"
        );
    }
}
