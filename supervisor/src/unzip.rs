//! `.zip` packages (seed 002 packs zips), unpacked under the same rules
//! as `.tar.gz` ones in `store`: only files, directories and relative
//! symlinks that stay inside; no `..`, no absolute paths, no devices or
//! other special files; the entry count and the unpacked bytes bounded
//! (declared sizes first, then the bytes actually inflated, so a zip
//! bomb stops at the limit). Unpacked into a staging directory inside
//! the store and imported from there, so the store is never half-changed.

use crate::store::{Store, StoredPackage, check_symlink, safe_relative};
use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::manifest::MANIFEST_FILE;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A zip begins with a local file header (or, empty, with the end of its
/// central directory).
pub fn looks_like_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

fn invalid(reason: impl Into<String>) -> CorralError {
    let reason = reason.into();
    CorralError::new(
        ErrorKind::InvalidPackage {
            reason: reason.clone(),
        },
        format!("invalid package: {reason}"),
    )
}

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
/// Longest symlink target read.
const MAX_LINK: u64 = 4096;

pub fn import_zip(store: &Store, bytes: &[u8]) -> Result<StoredPackage, CorralError> {
    let staging = tempfile::Builder::new()
        .prefix(".upload-")
        .tempdir_in(store.root())
        .map_err(|e| CorralError::internal(format!("creating a staging directory: {e}")))?;
    unpack(store, bytes, staging.path())?;
    let mut top: Vec<PathBuf> = std::fs::read_dir(staging.path())
        .map_err(|e| CorralError::internal(format!("reading the staging directory: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let package_dir =
        if top.len() == 1 && top[0].is_dir() && !staging.path().join(MANIFEST_FILE).exists() {
            top.remove(0)
        } else {
            staging.path().to_path_buf()
        };
    store.import_dir(&package_dir)
}

fn unpack(store: &Store, bytes: &[u8], into: &Path) -> Result<(), CorralError> {
    let limits = store.limits();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| invalid(format!("not a zip archive: {e}")))?;
    if archive.len() > limits.max_files {
        return Err(invalid(format!("more than {} entries", limits.max_files)));
    }
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| invalid(format!("corrupt archive: {e}")))?;
        let name = entry.name().to_string();
        let rel = safe_relative(Path::new(&name)).map_err(invalid)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let dest = into.join(&rel);
        let mode = entry.unix_mode().unwrap_or(0);
        let kind = mode & S_IFMT;
        if entry.is_dir() || kind == S_IFDIR {
            std::fs::create_dir_all(&dest).map_err(|e| io(&dest, e))?;
            continue;
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        reject_existing_link(into, &rel)?;
        if kind == S_IFLNK {
            let mut target = String::new();
            (&mut entry)
                .take(MAX_LINK)
                .read_to_string(&mut target)
                .map_err(|e| invalid(format!("{}: {e}", rel.display())))?;
            check_symlink(&rel, Path::new(&target)).map_err(invalid)?;
            std::os::unix::fs::symlink(&target, &dest).map_err(|e| io(&dest, e))?;
            continue;
        }
        if kind != 0 && kind != S_IFREG {
            return Err(invalid(format!(
                "{}: entries of mode {mode:o} are not allowed (only files, directories and relative symlinks)",
                rel.display()
            )));
        }
        let size = entry.size();
        total = total.saturating_add(size);
        if total > limits.max_bytes {
            return Err(invalid(format!(
                "larger than {} bytes unpacked",
                limits.max_bytes
            )));
        }
        let mut out = std::fs::File::create(&dest).map_err(|e| io(&dest, e))?;
        // At most the declared size, plus one byte to catch a liar.
        let copied = std::io::copy(&mut (&mut entry).take(size + 1), &mut out)
            .map_err(|e| invalid(format!("{}: {e}", rel.display())))?;
        if copied != size {
            return Err(invalid(format!(
                "{}: inflates to a size other than the {size} bytes it declares",
                rel.display()
            )));
        }
        out.flush().map_err(|e| io(&dest, e))?;
        let perm = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(perm))
            .map_err(|e| io(&dest, e))?;
    }
    Ok(())
}

fn io(path: &Path, e: std::io::Error) -> CorralError {
    CorralError::internal(format!("{}: {e}", path.display()))
}

/// Refuses to write through a symlink an earlier entry planted.
fn reject_existing_link(root: &Path, rel: &Path) -> Result<(), CorralError> {
    let mut p = root.to_path_buf();
    for c in rel.components() {
        p.push(c);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(invalid(format!(
                "{}: written through a symlink",
                rel.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PackageLimits;
    use zip::write::SimpleFileOptions;

    const MANIFEST: &[u8] = b"[plugin]\nname = \"p\"\nversion = \"1.0.0\"\nentry = \"bin/p\"\n";

    fn zip_of(build: impl FnOnce(&mut zip::ZipWriter<std::io::Cursor<Vec<u8>>>)) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        build(&mut w);
        w.finish().expect("finish").into_inner()
    }

    fn file(w: &mut zip::ZipWriter<std::io::Cursor<Vec<u8>>>, name: &str, data: &[u8], mode: u32) {
        w.start_file(name, SimpleFileOptions::default().unix_permissions(mode))
            .expect("start");
        w.write_all(data).expect("write");
    }

    /// Sets the unix mode of `name` in the central directory (the writer
    /// only makes files, directories and symlinks).
    fn with_mode(mut zip: Vec<u8>, name: &str, mode: u32) -> Vec<u8> {
        let mut i = 0;
        while i + 46 <= zip.len() {
            if zip[i..].starts_with(b"PK\x01\x02") {
                let len = u16::from_le_bytes([zip[i + 28], zip[i + 29]]) as usize;
                if zip.get(i + 46..i + 46 + len) == Some(name.as_bytes()) {
                    zip[i + 5] = 3; // made by unix
                    zip[i + 38..i + 42].copy_from_slice(&(mode << 16).to_le_bytes());
                    return zip;
                }
            }
            i += 1;
        }
        panic!("{name} not in the archive");
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            &dir.path().join("store"),
            PackageLimits {
                max_bytes: 1 << 20,
                max_files: 100,
            },
        )
        .expect("store");
        (dir, store)
    }

    #[test]
    fn a_zip_installs_as_the_same_package_as_its_tarball() {
        let (_tmp, store) = store();
        let flat = zip_of(|w| {
            file(w, "plugin.toml", MANIFEST, 0o644);
            file(w, "bin/p", b"code", 0o755);
        });
        let nested = zip_of(|w| {
            file(w, "p-1.0/plugin.toml", MANIFEST, 0o644);
            file(w, "p-1.0/bin/p", b"code", 0o755);
        });
        assert!(looks_like_zip(&flat));
        let a = import_zip(&store, &flat).expect("flat");
        let b = import_zip(&store, &nested).expect("nested");
        assert_eq!(a.digest, b.digest);
        let mode = std::fs::metadata(a.dir.join("bin/p"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn hostile_zips_are_refused_and_leave_nothing() {
        let (_tmp, store) = store();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "leaves the package",
                zip_of(|w| file(w, "../evil", b"x", 0o644)),
            ),
            ("absolute", zip_of(|w| file(w, "/etc/evil", b"x", 0o644))),
            (
                "points outside",
                zip_of(|w| {
                    w.add_symlink("lib", "../../etc", SimpleFileOptions::default())
                        .expect("symlink");
                }),
            ),
            (
                "not allowed",
                with_mode(zip_of(|w| file(w, "dev", b"", 0o644)), "dev", 0o020644),
            ),
            (
                "larger than",
                zip_of(|w| {
                    file(w, "plugin.toml", MANIFEST, 0o644);
                    // Compresses to a few KiB, inflates past the limit.
                    file(w, "bomb", &vec![0u8; 2 << 20], 0o644);
                }),
            ),
            (
                "not in the package",
                zip_of(|w| file(w, "plugin.toml", MANIFEST, 0o644)),
            ),
            ("not a zip", b"PK\x03\x04 but not really".to_vec()),
        ];
        for (expected, bytes) in cases {
            let e = import_zip(&store, &bytes).expect_err(expected);
            assert_eq!(e.code(), "invalid_package", "{e}");
            assert!(e.message.contains(expected), "{expected}: {e}");
        }
        let left: Vec<_> = std::fs::read_dir(store.root()).expect("read").collect();
        assert!(left.is_empty(), "staging left behind: {left:?}");
    }
}
