//! What a source fetched, kept in `<state_dir>/sources/<source>.json`:
//! per plugin the object (key and etag, or the fingerprint of an unpacked
//! folder), its sha256 and the store digest it became, so a poll that
//! finds the same etag downloads nothing; and the pins set through the
//! API. Written atomically like the daemon state.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    #[serde(default)]
    pub fetched: BTreeMap<String, Fetched>,
    /// Plugin -> `latest`, a version or a range, set by an install
    /// through the API; wins over the configuration's pins.
    #[serde(default)]
    pub pins: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetched {
    pub version: String,
    /// The archive's key, or the plugin's prefix (unpacked).
    pub key: String,
    /// The archive's etag, or the fingerprint of the unpacked files.
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    /// The store digest the package became.
    pub digest: String,
}

impl Cache {
    pub fn load(path: &Path) -> Result<Cache, String> {
        match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Cache::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), String> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let err = |e: std::io::Error| format!("{}: {e}", path.display());
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        tmp.write_all(&bytes).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(path).map_err(|e| err(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s/fleet.json");
        assert_eq!(
            Cache::load(&path).expect("missing is empty"),
            Cache::default()
        );
        let mut c = Cache::default();
        c.pins.insert("hello".into(), "=1.0.0".into());
        c.fetched.insert(
            "hello".into(),
            Fetched {
                version: "1.0.0".into(),
                key: "p/hello/1.0.0.tar.gz".into(),
                etag: Some("\"abc\"".into()),
                sha256: None,
                digest: "ab".repeat(32),
            },
        );
        c.save(&path).expect("save");
        assert_eq!(Cache::load(&path).expect("load"), c);
        std::fs::write(&path, "{not json").expect("write");
        assert!(Cache::load(&path).is_err());
    }
}
