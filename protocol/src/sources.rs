//! API types for package sources (S3 buckets): their status, what they
//! hold, and installing from them. `GET /v1/sources`,
//! `GET /v1/sources/{source}/plugins[?limit=&after=]`,
//! `GET /v1/sources/{source}/plugins/{name}`, `.../manifest`, `.../files`,
//! `POST .../install`.

use crate::error::CorralError;
use crate::manifest::Manifest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One configured source and how its polling goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub name: String,
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub prefix: String,
    /// `packed` or `unpacked`.
    pub layout: String,
    pub poll_interval_ms: u64,
    /// Milliseconds since the Unix epoch of the last finished poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_poll_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<u64>,
    /// Polls failed in a row; the next one waits longer (backoff).
    pub consecutive_failures: u32,
    /// Why the last poll failed, while it keeps failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<CorralError>,
    /// What each followed plugin follows (`latest`, a version or a range)
    /// and what is installed from here.
    pub followed: BTreeMap<String, FollowedPlugin>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowedPlugin {
    /// `latest`, an exact version or a semver range.
    pub follows: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// sha256 of the fetched object (packed layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The store digest of the installed package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Why the last fetch of this plugin failed, while it keeps failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<CorralError>,
}

/// A page of the plugins a source holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourcePluginPage {
    pub plugins: Vec<String>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One plugin in a source, with every version it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourcePlugin {
    pub name: String,
    pub source_name: String,
    /// Newest first.
    pub versions: Vec<SourceVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceVersion {
    pub version: String,
    pub key: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The sha256 the `.sha256` beside it declares (packed layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub signed: bool,
}

/// A package's manifest as a source holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceManifest {
    pub name: String,
    pub version: String,
    pub manifest: Manifest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFiles {
    pub name: String,
    pub version: String,
    pub files: Vec<SourceFile>,
}

/// `POST /v1/sources/{source}/plugins/{name}/install`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceInstallRequest {
    /// `latest` (the default), an exact version or a semver range. The
    /// source then follows this (a pin) until installed again.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub load: bool,
    #[serde(default)]
    pub replace: bool,
}
