//! Where a package keeps its manifest. Three layouts, looked for in this
//! order:
//!
//! 1. `plugin.toml`: corral's manifest.
//! 2. `plugin.yaml`: seed 002's manifest ([`crate::manifest_yaml`]).
//! 3. `index.js` alone (seed 000's bucket layout): a JavaScript plugin named
//!    after its folder, run by the embedded engine, with the policy's
//!    default limits, no permissions, and calls that name no method served
//!    by `codeGeneration.generateCode`.
//!
//! A folder holding both manifests is refused: which one counts would
//! otherwise depend on this order.

use crate::manifest::{
    EntryPath, LimitRequests, MANIFEST_FILE, Manifest, ManifestError, MethodName, Permissions,
    PluginName, PluginSection, Runtime,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Seed 002's manifest file.
pub const YAML_MANIFEST_FILE: &str = "plugin.yaml";
/// The entry of a bucket-layout package.
pub const BARE_ENTRY: &str = "index.js";
/// The method a bucket-layout package serves calls that name none with
/// (seed 000's `getExecutionResult`).
pub const BARE_DEFAULT_METHOD: &str = "codeGeneration.generateCode";
/// The version a bucket-layout package reports (it has none).
pub const BARE_VERSION: semver::Version = semver::Version::new(0, 0, 0);

/// Which layout a package directory has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    Toml(PathBuf),
    Yaml(PathBuf),
    /// `index.js` and no manifest.
    Bare(PathBuf),
}

impl Layout {
    /// The file that describes the package (for messages).
    pub fn file(&self) -> &Path {
        match self {
            Layout::Toml(p) | Layout::Yaml(p) | Layout::Bare(p) => p,
        }
    }
}

/// The layout of `dir`, or `None` when it holds no package.
pub fn layout_of(dir: &Path) -> Option<Layout> {
    let toml = dir.join(MANIFEST_FILE);
    if toml.is_file() {
        return Some(Layout::Toml(toml));
    }
    let yaml = dir.join(YAML_MANIFEST_FILE);
    if yaml.is_file() {
        return Some(Layout::Yaml(yaml));
    }
    let index = dir.join(BARE_ENTRY);
    index.is_file().then_some(Layout::Bare(index))
}

/// True when `dir` holds a package in any layout (for source folders).
pub fn is_package_dir(dir: &Path) -> bool {
    layout_of(dir).is_some()
}

/// Reads the manifest of the package in `dir`, whatever its layout;
/// returns it with the name of the file it came from.
pub fn load(dir: &Path) -> Result<(Manifest, String), ManifestError> {
    let layout = layout_of(dir).ok_or_else(|| ManifestError {
        file: dir.join(MANIFEST_FILE).display().to_string(),
        key: "(document)".into(),
        reason: format!(
            "no package here: a package holds {MANIFEST_FILE}, {YAML_MANIFEST_FILE}, or just {BARE_ENTRY}"
        ),
        line: None,
    })?;
    let file = layout.file().display().to_string();
    let manifest = match &layout {
        Layout::Toml(path) => {
            if dir.join(YAML_MANIFEST_FILE).exists() {
                return Err(ManifestError {
                    file,
                    key: "(document)".into(),
                    reason: format!(
                        "the package holds both {MANIFEST_FILE} and {YAML_MANIFEST_FILE}; keep one"
                    ),
                    line: None,
                });
            }
            Manifest::load(path)?
        }
        Layout::Yaml(path) => Manifest::load(path)?,
        Layout::Bare(_) => bare(dir)?,
    };
    Ok((manifest, file))
}

/// The manifest of a folder holding only `index.js`.
pub fn bare(dir: &Path) -> Result<Manifest, ManifestError> {
    let folder = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = PluginName::try_from(folder).map_err(|reason| ManifestError {
        file: dir.join(BARE_ENTRY).display().to_string(),
        key: "(package)".into(),
        reason: format!(
            "a folder holding only {BARE_ENTRY} is a plugin named after the folder: {reason}"
        ),
        line: None,
    })?;
    Ok(bare_manifest(name))
}

/// The manifest a bucket-layout package named `name` stands for.
pub fn bare_manifest(name: PluginName) -> Manifest {
    Manifest {
        plugin: PluginSection {
            name,
            version: BARE_VERSION,
            description: String::new(),
            author: String::new(),
            license: String::new(),
            entry: EntryPath::try_from(BARE_ENTRY.to_string())
                .unwrap_or_else(|_| unreachable!("a constant, valid path")),
            runtime: Runtime::Js,
            default_method: MethodName::try_from(BARE_DEFAULT_METHOD.to_string()).ok(),
            engine: semver::VersionReq::STAR,
            instances: 1,
            idempotent: Vec::new(),
        },
        dependencies: BTreeMap::new(),
        permissions: Permissions::default(),
        limits: LimitRequests::default(),
        config: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(name: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (f, text) in files {
            std::fs::write(dir.join(f), text).expect("write");
        }
        (tmp, dir)
    }

    #[test]
    fn a_folder_with_only_index_js_is_a_js_plugin_named_after_it() {
        let (_tmp, dir) = dir_with("my-plugin", &[("index.js", "module.exports = class {};")]);
        assert!(is_package_dir(&dir));
        let (m, file) = load(&dir).expect("bare");
        assert_eq!(m.name(), "my-plugin");
        assert_eq!(m.plugin.runtime, Runtime::Js);
        assert_eq!(m.plugin.entry.as_str(), "index.js");
        assert_eq!(
            m.plugin.default_method.as_ref().map(MethodName::as_str),
            Some("codeGeneration.generateCode")
        );
        assert_eq!(m.limits, LimitRequests::default(), "the policy's defaults");
        assert_eq!(m.permissions, Permissions::default(), "nothing granted");
        assert!(file.ends_with("my-plugin/index.js"));
    }

    #[test]
    fn a_bare_folder_needs_a_valid_plugin_name() {
        let (_tmp, dir) = dir_with("My Plugin", &[("index.js", "")]);
        let e = load(&dir).expect_err("bad name");
        assert_eq!(e.key, "(package)");
        assert!(e.reason.contains("named after the folder"), "{e}");
    }

    #[test]
    fn manifests_win_over_index_js_and_two_manifests_are_refused() {
        let toml =
            "[plugin]\nname = \"t\"\nversion = \"1.0.0\"\nentry = \"index.js\"\nruntime = \"js\"\n";
        let (_a, dir) = dir_with("x", &[("index.js", ""), ("plugin.toml", toml)]);
        assert_eq!(load(&dir).expect("toml").0.name(), "t");
        let yaml = "name: y\nversion: 1.0.0\nentry_point: index.js\n";
        let (_b, dir) = dir_with("x", &[("index.js", ""), ("plugin.yaml", yaml)]);
        assert_eq!(load(&dir).expect("yaml").0.name(), "y");
        let (_c, dir) = dir_with("x", &[("plugin.toml", toml), ("plugin.yaml", yaml)]);
        let e = load(&dir).expect_err("both");
        assert!(e.reason.contains("keep one"), "{e}");
        let (_d, dir) = dir_with("x", &[("README.md", "")]);
        assert!(!is_package_dir(&dir));
        assert!(
            load(&dir)
                .expect_err("empty")
                .reason
                .contains("no package here")
        );
    }
}
