//! Where things are in a bucket, for both layouts, and reading a listing
//! into a catalog (plugin -> versions).
//!
//! Packed: `<base>/<plugin>/<version>.tar.gz` with `<version>.tar.gz.sha256`
//! (required) and `<version>.tar.gz.minisig` (optional) beside it.
//! Unpacked (seed 000): `<base>/<plugin>/` holding the package's files;
//! its one version is whatever its plugin.toml says.

use super::s3::ObjectInfo;
use corral_protocol::sources::SourceVersion;
use std::collections::BTreeMap;

pub const ARCHIVE_EXT: &str = ".tar.gz";
pub const SHA256_EXT: &str = ".sha256";
pub const MINISIG_EXT: &str = ".minisig";

/// `<base>/` (or "" for the bucket's root).
pub fn root(base: &str) -> String {
    if base.is_empty() {
        String::new()
    } else {
        format!("{base}/")
    }
}

/// `<base>/<plugin>/`.
pub fn plugin_prefix(base: &str, plugin: &str) -> String {
    format!("{}{plugin}/", root(base))
}

/// `<base>/<plugin>/<version>.tar.gz`.
pub fn archive_key(base: &str, plugin: &str, version: &str) -> String {
    format!("{}{version}{ARCHIVE_EXT}", plugin_prefix(base, plugin))
}

/// One version of a packed plugin, from a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedVersion {
    pub version: semver::Version,
    pub archive: ObjectInfo,
    pub has_sha256: bool,
    pub has_signature: bool,
}

impl PackedVersion {
    pub fn to_api(&self, sha256: Option<String>) -> SourceVersion {
        SourceVersion {
            version: self.version.to_string(),
            key: self.archive.key.clone(),
            size: self.archive.size,
            last_modified: self.archive.last_modified.clone(),
            etag: self.archive.etag.clone(),
            sha256,
            signed: self.has_signature,
        }
    }
}

/// Plugin name -> its objects, from a listing of `<base>/`. Keys whose
/// plugin part is not a valid plugin name are skipped.
pub fn group_by_plugin(base: &str, objects: Vec<ObjectInfo>) -> BTreeMap<String, Vec<ObjectInfo>> {
    let root = root(base);
    let mut out: BTreeMap<String, Vec<ObjectInfo>> = BTreeMap::new();
    for o in objects {
        let Some(rest) = o.key.strip_prefix(&root) else {
            continue;
        };
        let Some((plugin, file)) = rest.split_once('/') else {
            continue;
        };
        if file.is_empty() || corral_protocol::manifest::validate_plugin_name(plugin).is_err() {
            continue;
        }
        out.entry(plugin.to_string()).or_default().push(o);
    }
    out
}

/// The versions of one packed plugin (newest first), from its objects.
/// Archives without a `.sha256` are listed too (`has_sha256` false): they
/// cannot be installed, and the error says why.
pub fn packed_versions(base: &str, plugin: &str, objects: &[ObjectInfo]) -> Vec<PackedVersion> {
    let prefix = plugin_prefix(base, plugin);
    let keys: std::collections::BTreeSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let mut out: Vec<PackedVersion> = objects
        .iter()
        .filter_map(|o| {
            let file = o.key.strip_prefix(&prefix)?;
            let version = file.strip_suffix(ARCHIVE_EXT)?;
            if version.contains('/') {
                return None;
            }
            let version = semver::Version::parse(version).ok()?;
            Some(PackedVersion {
                version,
                archive: o.clone(),
                has_sha256: keys.contains(format!("{}{SHA256_EXT}", o.key).as_str()),
                has_signature: keys.contains(format!("{}{MINISIG_EXT}", o.key).as_str()),
            })
        })
        .collect();
    out.sort_by(|a, b| b.version.cmp(&a.version));
    out
}

/// The package files of an unpacked plugin: (path inside the package,
/// object), the `<base>/<plugin>/` prefix stripped; "directory marker"
/// keys ending in `/` skipped.
pub fn unpacked_files<'a>(
    base: &str,
    plugin: &str,
    objects: &'a [ObjectInfo],
) -> Vec<(String, &'a ObjectInfo)> {
    let prefix = plugin_prefix(base, plugin);
    objects
        .iter()
        .filter_map(|o| {
            let rel = o.key.strip_prefix(&prefix)?;
            (!rel.is_empty() && !rel.ends_with('/')).then(|| (rel.to_string(), o))
        })
        .collect()
}

/// One fingerprint for a set of objects (an unpacked plugin): changes
/// when any key, size or etag does.
pub fn fingerprint(objects: &[(String, &ObjectInfo)]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut sorted: Vec<_> = objects.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, o) in sorted {
        h.update(rel.as_bytes());
        h.update([0]);
        h.update(o.size.to_le_bytes());
        h.update(o.etag.as_deref().unwrap_or("").as_bytes());
        h.update([0]);
    }
    super::verify::hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size: 1,
            etag: Some("\"e\"".into()),
            last_modified: None,
            modified_ms: 0,
        }
    }

    #[test]
    fn listings_group_into_versions() {
        let objects = vec![
            obj("base/hello/1.0.0.tar.gz"),
            obj("base/hello/1.0.0.tar.gz.sha256"),
            obj("base/hello/1.2.0.tar.gz"),
            obj("base/hello/1.2.0.tar.gz.sha256"),
            obj("base/hello/1.2.0.tar.gz.minisig"),
            obj("base/hello/notes.txt"),
            obj("base/hello/x.y.tar.gz"),
            obj("base/Bad Name/1.0.0.tar.gz"),
            obj("base/loose-file"),
        ];
        let grouped = group_by_plugin("base", objects);
        assert_eq!(grouped.keys().collect::<Vec<_>>(), ["hello"]);
        let versions = packed_versions("base", "hello", &grouped["hello"]);
        let names: Vec<String> = versions.iter().map(|v| v.version.to_string()).collect();
        assert_eq!(names, ["1.2.0", "1.0.0"]);
        assert!(versions[0].has_signature && versions[0].has_sha256);
        assert!(!versions[1].has_signature);
    }

    #[test]
    fn an_empty_base_is_the_bucket_root() {
        assert_eq!(archive_key("", "p", "1.0.0"), "p/1.0.0.tar.gz");
        assert_eq!(archive_key("a/b", "p", "1.0.0"), "a/b/p/1.0.0.tar.gz");
    }
}
