//! Package archives for upload installs: a well-formed `.tar.gz` of a
//! package directory, and hostile ones that must be refused.

use flate2::Compression;
use flate2::write::GzEncoder;
use std::path::Path;

/// `dir` as a `.tar.gz` with one top-level directory `top`.
pub fn package_tar_gz(dir: &Path, top: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    builder.mode(tar::HeaderMode::Deterministic);
    builder
        .append_dir_all(top, dir)
        .unwrap_or_else(|e| panic!("archiving {}: {e}", dir.display()));
    finish(builder)
}

/// A package archive with one extra entry whose raw name is `name`
/// (written into the header directly, since tar's builder refuses `..`).
pub fn tar_gz_with_raw_entry(dir: &Path, top: &str, name: &str, contents: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    builder.mode(tar::HeaderMode::Deterministic);
    builder
        .append_dir_all(top, dir)
        .unwrap_or_else(|e| panic!("archiving {}: {e}", dir.display()));
    let mut header = tar::Header::new_old();
    let raw = name.as_bytes();
    let field = &mut header.as_old_mut().name;
    assert!(raw.len() < field.len(), "entry name {name} is too long");
    field[..raw.len()].copy_from_slice(raw);
    header.set_size(contents.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder
        .append(&header, contents)
        .expect("append the raw entry");
    finish(builder)
}

fn finish(builder: tar::Builder<GzEncoder<Vec<u8>>>) -> Vec<u8> {
    builder
        .into_inner()
        .expect("finish the tar stream")
        .finish()
        .expect("finish the gzip stream")
}
