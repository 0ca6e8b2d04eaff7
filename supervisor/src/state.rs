//! The daemon's persistent state: which plugins are installed (by digest)
//! and which are enabled. Written atomically (write a temporary file,
//! fsync it, rename it over the old one, fsync the directory), so a crash
//! or power loss leaves either the old state or the new one, never half.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPlugin {
    pub version: String,
    pub digest: String,
    /// Where it came from: `source:<dir>`, `path:<path>` or `upload`.
    pub source: String,
    /// Loaded at start and kept loaded.
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    pub plugins: BTreeMap<String, InstalledPlugin>,
    /// Plugins removed through the API while a source folder still held
    /// them: the removal wins, so the folder's package is not installed
    /// again (at start or when it changes) until an install through the
    /// API brings the name back.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub removed: BTreeSet<String>,
    /// Settings set through the API, by plugin: merge-patch overlays on
    /// the policy's (`crate::services::config`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a corral state file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl State {
    /// Reads the state; a missing file is an empty state.
    pub fn load(dir: &Path) -> Result<State, StateError> {
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    format: FORMAT,
                    ..State::default()
                });
            }
            Err(source) => return Err(StateError::Io { path, source }),
        };
        let state: State = serde_json::from_slice(&text).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if state.format != FORMAT {
            return Err(StateError::Corrupt {
                path,
                reason: format!("format {} is not the supported {FORMAT}", state.format),
            });
        }
        Ok(state)
    }

    /// Writes the state atomically.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(STATE_FILE);
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        tmp.write_all(&bytes).map_err(io(tmp.path()))?;
        tmp.as_file().sync_all().map_err(io(tmp.path()))?;
        tmp.persist(&path).map_err(|e| StateError::Io {
            path: path.clone(),
            source: e.error,
        })?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(State::load(dir.path()).expect("empty").plugins.is_empty());
        let mut s = State::load(dir.path()).expect("empty");
        s.plugins.insert(
            "hello".into(),
            InstalledPlugin {
                version: "0.1.0".into(),
                digest: "ab".repeat(32),
                source: "upload".into(),
                enabled: true,
            },
        );
        s.save(dir.path()).expect("save");
        assert_eq!(State::load(dir.path()).expect("load"), s);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() != STATE_FILE)
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn corrupt_state_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(STATE_FILE), b"{ not json").expect("write");
        assert!(matches!(
            State::load(dir.path()),
            Err(StateError::Corrupt { .. })
        ));
    }
}
