//! `[[s3_sources]]` in corrald.toml: one S3 bucket (AWS or any
//! S3-compatible store) that corrald lists, fetches from and follows.
//!
//! ```toml
//! [[s3_sources]]
//! name = "fleet"                      # how the API, the CLI and logs name it
//! bucket = "corral-plugins"
//! prefix = "plugins"                  # seed 000's basePath; "" for the root
//! endpoint = "http://127.0.0.1:9000"  # unset: AWS
//! region = "us-east-1"
//! path_style = true                   # MinIO and most self-hosted stores
//! layout = "packed"                   # or "unpacked"
//! poll_interval = "30s"
//! follow_all = true                   # every plugin in the bucket, at latest
//! pins = { "csv-summary" = "^1.2", "text-utils" = "2.0.1" }
//! require_signatures = true
//! public_keys = ["RWQ..."]            # minisign public keys
//! ```
//!
//! Credentials come from the standard AWS chain (environment, profile,
//! web identity, instance metadata) unless both `access_key_id` and
//! `secret_access_key` are set here.

use corral_protocol::units::{ByteSize, HumanDuration};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `<prefix>/<plugin>/<version>.tar.gz`, `.tar.gz.sha256` beside it
    /// and optionally `.tar.gz.minisig`.
    #[default]
    Packed,
    /// `<prefix>/<plugin>/` holding the package's files (one version).
    Unpacked,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Packed => "packed",
            Layout::Unpacked => "unpacked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3SourceConfig {
    pub name: String,
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub path_style: bool,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub layout: Layout,
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// Follow every plugin the bucket holds (at `latest` unless pinned).
    #[serde(default = "yes")]
    pub follow_all: bool,
    /// Plugin name to `latest`, an exact version (`1.2.0`) or a semver
    /// range (`^1.2`).
    #[serde(default)]
    pub pins: BTreeMap<String, String>,
    /// Load (enable) what is installed from here.
    #[serde(default = "yes")]
    pub load: bool,
    /// Refuse any package without a valid `.minisig` from `public_keys`.
    #[serde(default)]
    pub require_signatures: bool,
    /// minisign public keys (the base64 line of a `.pub` file).
    #[serde(default)]
    pub public_keys: Vec<String>,
    /// Largest object fetched (checked before and while downloading).
    #[serde(default = "default_max_object_size")]
    pub max_object_size: ByteSize,
    /// Most plugins one listing may hold.
    #[serde(default = "default_max_plugins")]
    pub max_plugins: usize,
}

fn yes() -> bool {
    true
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_poll_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_max_object_size() -> ByteSize {
    ByteSize(64 << 20)
}

fn default_max_plugins() -> usize {
    100_000
}

/// What a plugin follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    Latest,
    Exact(semver::Version),
    Range(semver::VersionReq),
}

impl Follow {
    /// `latest`, an exact version (`1.2.0`, `=1.2.0`) or a semver range.
    /// A bare version is exact, unlike cargo, because pinning is for
    /// rolling back to precisely that version.
    pub fn parse(text: &str) -> Result<Follow, String> {
        let t = text.trim();
        if t.is_empty() || t == "latest" || t == "*" {
            return Ok(Follow::Latest);
        }
        if let Ok(v) = semver::Version::parse(t.trim_start_matches('=')) {
            return Ok(Follow::Exact(v));
        }
        semver::VersionReq::parse(t)
            .map(Follow::Range)
            .map_err(|e| format!("`{text}` is not `latest`, a version or a semver range: {e}"))
    }

    pub fn matches(&self, v: &semver::Version) -> bool {
        match self {
            Follow::Latest => true,
            Follow::Exact(x) => x == v,
            Follow::Range(r) => r.matches(v),
        }
    }

    /// The newest version this follows, preferring releases over
    /// pre-releases for `latest`.
    pub fn pick<'a>(
        &self,
        versions: impl Iterator<Item = &'a semver::Version>,
    ) -> Option<&'a semver::Version> {
        let candidates: Vec<&semver::Version> = versions.filter(|v| self.matches(v)).collect();
        let release = candidates
            .iter()
            .filter(|v| v.pre.is_empty())
            .max()
            .copied();
        match self {
            Follow::Latest => release.or_else(|| candidates.iter().max().copied()),
            _ => candidates.iter().max().copied(),
        }
    }
}

impl std::fmt::Display for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Follow::Latest => f.write_str("latest"),
            Follow::Exact(v) => write!(f, "={v}"),
            Follow::Range(r) => write!(f, "{r}"),
        }
    }
}

impl S3SourceConfig {
    /// A source with every default, for `bucket`.
    pub fn new(name: &str, bucket: &str) -> S3SourceConfig {
        S3SourceConfig {
            name: name.to_string(),
            bucket: bucket.to_string(),
            prefix: String::new(),
            endpoint: None,
            region: default_region(),
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            layout: Layout::Packed,
            poll_interval: default_poll_interval(),
            follow_all: true,
            pins: BTreeMap::new(),
            load: true,
            require_signatures: false,
            public_keys: Vec::new(),
            max_object_size: default_max_object_size(),
            max_plugins: default_max_plugins(),
        }
    }

    /// The prefix with no leading or trailing `/`.
    pub fn base(&self) -> &str {
        self.prefix.trim_matches('/')
    }

    pub fn poll_interval(&self) -> Duration {
        self.poll_interval.0
    }

    pub fn pin(&self, plugin: &str) -> Option<Follow> {
        self.pins.get(plugin).and_then(|t| Follow::parse(t).ok())
    }

    /// The decoded public keys; each entry may be the key line alone or a
    /// whole `.pub` file.
    pub fn keys(&self) -> Result<Vec<minisign_verify::PublicKey>, String> {
        self.public_keys
            .iter()
            .map(|k| {
                let line = k
                    .lines()
                    .map(str::trim)
                    .rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
                    .unwrap_or("");
                minisign_verify::PublicKey::from_base64(line)
                    .map_err(|e| format!("`{line}` is not a minisign public key: {e}"))
            })
            .collect()
    }
}

/// Checks every source; the error is `(key, reason)` for ConfigError.
pub fn check(sources: &[S3SourceConfig]) -> Result<(), (String, String)> {
    let mut names = std::collections::BTreeSet::new();
    for (i, s) in sources.iter().enumerate() {
        let key = |k: &str| format!("s3_sources[{i}].{k}");
        corral_protocol::manifest::validate_plugin_name(&s.name).map_err(|e| (key("name"), e))?;
        if !names.insert(s.name.as_str()) {
            return Err((key("name"), format!("`{}` names two sources", s.name)));
        }
        if s.bucket.is_empty() || s.bucket.len() > 255 || s.bucket.contains('/') {
            return Err((
                key("bucket"),
                format!("`{}` is not a bucket name", s.bucket),
            ));
        }
        if s.base().split('/').any(|c| c == ".." || c == ".") {
            return Err((key("prefix"), "must not hold `.` or `..` components".into()));
        }
        if let Some(e) = &s.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err((key("endpoint"), format!("`{e}` is not an http(s) URL")));
        }
        if s.access_key_id.is_some() != s.secret_access_key.is_some() {
            return Err((
                key("access_key_id"),
                "set both access_key_id and secret_access_key, or neither (the standard AWS chain)"
                    .into(),
            ));
        }
        if s.poll_interval.0 < Duration::from_millis(100) {
            return Err((key("poll_interval"), "must be at least 100ms".into()));
        }
        if s.max_object_size.0 == 0 {
            return Err((key("max_object_size"), "must be more than 0".into()));
        }
        for (plugin, follow) in &s.pins {
            corral_protocol::manifest::validate_plugin_name(plugin)
                .map_err(|e| (key(&format!("pins.{plugin}")), e))?;
            Follow::parse(follow).map_err(|e| (key(&format!("pins.{plugin}")), e))?;
        }
        s.keys().map_err(|e| (key("public_keys"), e))?;
        if s.require_signatures && s.public_keys.is_empty() {
            return Err((
                key("require_signatures"),
                "needs at least one key in public_keys".into(),
            ));
        }
        if s.require_signatures && s.layout == Layout::Unpacked {
            return Err((
                key("require_signatures"),
                "the unpacked layout has no signatures; use layout = \"packed\"".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_parses_and_picks() {
        let v = |s: &str| semver::Version::parse(s).expect("version");
        let all = [v("1.0.0"), v("1.2.0"), v("2.0.0-rc.1"), v("1.10.1")];
        assert_eq!(
            Follow::parse("latest").expect("l").pick(all.iter()),
            Some(&all[3])
        );
        assert_eq!(
            Follow::parse("1.2.0").expect("e").pick(all.iter()),
            Some(&all[1])
        );
        assert_eq!(
            Follow::parse("~1.0").expect("r").pick(all.iter()),
            Some(&all[0])
        );
        assert_eq!(Follow::parse("3").expect("r").pick(all.iter()), None);
        assert!(Follow::parse("not a range").is_err());
    }
}
