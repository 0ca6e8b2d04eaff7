//! `corral pack`: a package directory as `<name>-<version>.tar.gz`, the
//! same bytes for the same files (sorted entries, zero times and owners,
//! modes reduced to 0644/0755), and its `.sha256`. The directory is first
//! checked by the store's rules in a throw-away store, so what packs is
//! what installs.

use super::verify::hex;
use crate::store::{PackageLimits, Store};
use corral_protocol::error::CorralError;
use corral_protocol::manifest::Manifest;
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Packed {
    pub manifest: Manifest,
    pub archive: Vec<u8>,
    pub sha256: String,
}

impl Packed {
    /// `<name>-<version>.tar.gz`.
    pub fn file_name(&self) -> String {
        format!(
            "{}-{}.tar.gz",
            self.manifest.name(),
            self.manifest.plugin.version
        )
    }

    /// The `.sha256` text, as `sha256sum` writes it.
    pub fn sha256_text(&self, file_name: &str) -> String {
        format!("{}  {file_name}\n", self.sha256)
    }
}

pub fn pack(dir: &Path) -> Result<Packed, CorralError> {
    let check = tempfile::tempdir()
        .map_err(|e| CorralError::internal(format!("a temporary directory: {e}")))?;
    let store = Store::open(&check.path().join("store"), PackageLimits::default())?;
    let stored = store.import_dir(dir)?;
    let mut paths = Vec::new();
    collect(dir, PathBuf::new(), &mut paths)?;
    paths.sort();
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    builder.follow_symlinks(false);
    let io = |p: &Path, e: std::io::Error| {
        CorralError::internal(format!("packing {}: {e}", p.display()))
    };
    for rel in paths {
        let abs = dir.join(&rel);
        let meta = std::fs::symlink_metadata(&abs).map_err(|e| io(&abs, e))?;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder
                .append_data(&mut header, &rel, std::io::empty())
                .map_err(|e| io(&abs, e))?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&abs).map_err(|e| io(&abs, e))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder
                .append_link(&mut header, &rel, &target)
                .map_err(|e| io(&abs, e))?;
        } else {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(mode);
            header.set_size(meta.len());
            let file = std::fs::File::open(&abs).map_err(|e| io(&abs, e))?;
            builder
                .append_data(&mut header, &rel, file)
                .map_err(|e| io(&abs, e))?;
        }
    }
    let archive = builder
        .into_inner()
        .and_then(|gz| gz.finish())
        .map_err(|e| io(dir, e))?;
    let sha256 = hex(&Sha256::digest(&archive));
    Ok(Packed {
        manifest: stored.manifest,
        archive,
        sha256,
    })
}

fn collect(root: &Path, rel: PathBuf, out: &mut Vec<PathBuf>) -> Result<(), CorralError> {
    let abs = root.join(&rel);
    let listing = std::fs::read_dir(&abs)
        .map_err(|e| CorralError::internal(format!("{}: {e}", abs.display())))?;
    for item in listing.flatten() {
        let child = rel.join(item.file_name());
        let is_dir = item.file_type().map(|t| t.is_dir()).unwrap_or(false);
        out.push(child.clone());
        if is_dir {
            collect(root, child, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_reproducibly_and_installs_as_the_same_package() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("p");
        std::fs::create_dir_all(dir.join("bin")).expect("mkdir");
        std::fs::write(
            dir.join("plugin.toml"),
            "[plugin]\nname = \"p\"\nversion = \"1.2.0\"\nentry = \"bin/p\"\n",
        )
        .expect("manifest");
        std::fs::write(dir.join("bin/p"), b"code").expect("entry");
        std::fs::set_permissions(dir.join("bin/p"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let a = pack(&dir).expect("pack");
        let b = pack(&dir).expect("pack again");
        assert_eq!(a.sha256, b.sha256, "same files, same bytes");
        assert_eq!(a.file_name(), "p-1.2.0.tar.gz");
        assert!(a.sha256_text("p-1.2.0.tar.gz").starts_with(&a.sha256));
        let store =
            Store::open(&tmp.path().join("store"), PackageLimits::default()).expect("store");
        let from_dir = store.import_dir(&dir).expect("dir");
        let from_archive = store.import_tar_gz(&a.archive[..]).expect("archive");
        assert_eq!(from_dir.digest, from_archive.digest);
    }

    #[test]
    fn a_package_the_store_refuses_does_not_pack() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("plugin.toml"), "[plugin]\nname = \"p\"\n")
            .expect("manifest");
        let e = pack(tmp.path()).expect_err("bad manifest");
        assert_eq!(e.code(), "invalid_manifest");
    }
}
