//! A plugin package on disk: a directory holding `plugin.toml` (or
//! `plugin.yaml`, or only `index.js`; see
//! [`corral_protocol::package_layout`]) and the entry it names.

use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::manifest::{Manifest, ManifestError};
use corral_protocol::package_layout;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Package {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// How the manifest is named in messages.
    pub manifest_file: String,
}

impl Package {
    /// Reads and validates the package's manifest, in whichever layout.
    pub fn open(dir: &Path) -> Result<Package, CorralError> {
        let dir = dir.canonicalize().map_err(|e| {
            CorralError::new(
                ErrorKind::InvalidPackage {
                    reason: format!("{}: {e}", dir.display()),
                },
                format!("cannot open package {}: {e}", dir.display()),
            )
        })?;
        if !dir.is_dir() {
            let reason = format!("{} is not a directory", dir.display());
            return Err(CorralError::new(
                ErrorKind::InvalidPackage {
                    reason: reason.clone(),
                },
                reason,
            ));
        }
        let (manifest, manifest_file) = package_layout::load(&dir).map_err(manifest_error)?;
        Ok(Package {
            manifest_file,
            dir,
            manifest,
        })
    }

    pub fn name(&self) -> &str {
        self.manifest.name()
    }
}

pub fn manifest_error(e: ManifestError) -> CorralError {
    let message = e.to_string();
    CorralError::new(
        ErrorKind::InvalidManifest {
            file: e.file,
            key: e.key,
            reason: e.reason,
        },
        message,
    )
}
