//! Package versions made from the built `hello` package: renamed, given
//! a version, and a `timeout` limit of `10 s + minor` so a call to
//! `limits` shows which version serves; packed and published with the
//! real `corral pack` and `corral publish`.

use corral_daemon_tests::setup::{copy_tree, set_manifest_key};
use corral_test_support::env::test_env;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Version {
    pub name: String,
    pub version: String,
    /// The package directory.
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

/// The call timeout (ms) version `x.y.z` of a test package runs with.
pub fn timeout_ms_of(version: &str) -> u64 {
    let minor: u64 = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    (10 + minor) * 1000
}

impl Version {
    pub fn new(name: &str, version: &str) -> Version {
        let tmp = tempfile::Builder::new()
            .prefix("corral-s3-pkg-")
            .tempdir_in("/var/tmp")
            .expect("a directory in /var/tmp");
        let dir = tmp.path().join(name);
        copy_tree(&test_env().package("hello"), &dir);
        let manifest = dir.join("plugin.toml");
        set_manifest_key(&manifest, "name", name);
        set_manifest_key(&manifest, "version", version);
        let text = std::fs::read_to_string(&manifest).expect("read the manifest");
        let timeout = format!("timeout = \"{}s\"", timeout_ms_of(version) / 1000);
        let text = text.replace("timeout = \"10s\"", &timeout);
        assert!(
            text.contains(&timeout),
            "the hello manifest sets no timeout = \"10s\": {text}"
        );
        std::fs::write(&manifest, text).expect("write the manifest");
        Version {
            name: name.into(),
            version: version.into(),
            dir,
            _tmp: tmp,
        }
    }

    /// Adds `bytes` of incompressible data (a big package).
    pub fn with_payload(self, bytes: usize) -> Version {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut data = Vec::with_capacity(bytes + 8);
        while data.len() < bytes {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        data.truncate(bytes);
        std::fs::write(self.dir.join("payload.bin"), data).expect("write the payload");
        self
    }

    /// `corral pack` into `out`; returns the archive's path.
    pub fn pack(&self, out: &Path, key: Option<&Path>) -> PathBuf {
        let mut args = vec![
            "pack".to_string(),
            self.dir.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        if let Some(k) = key {
            args.push("--key".into());
            args.push(k.display().to_string());
        }
        corral(&args, &[]);
        let archive = out.join(format!("{}-{}.tar.gz", self.name, self.version));
        assert!(
            archive.is_file(),
            "corral pack wrote no {}",
            archive.display()
        );
        archive
    }
}

/// What `corral publish` answered.
pub struct Published {
    pub key: String,
    pub sha256: String,
}

/// `corral publish ARCHIVE` to `bucket` at `endpoint`.
pub fn publish(archive: &Path, endpoint: &str, bucket: &str, prefix: &str) -> Published {
    let out = corral(
        &[
            "--json".into(),
            "publish".into(),
            archive.display().to_string(),
            "--bucket".into(),
            bucket.into(),
            "--prefix".into(),
            prefix.into(),
            "--endpoint".into(),
            endpoint.into(),
            "--path-style".into(),
        ],
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("publish printed no JSON ({e}): {out}"));
    Published {
        key: v["key"].as_str().unwrap_or_default().to_string(),
        sha256: v["sha256"].as_str().unwrap_or_default().to_string(),
    }
}

/// Runs the corral CLI with the test credentials; panics with its output
/// when it fails. Returns stdout.
pub fn corral(args: &[String], env: &[(&str, &str)]) -> String {
    let out = corral_status(args, env);
    assert!(
        out.status.success(),
        "corral {args:?} failed with {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn corral_status(args: &[String], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(test_env().corral())
        .args(args)
        .env("AWS_ACCESS_KEY_ID", crate::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", crate::SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running corral: {e}"))
}

/// A package version packed and published in one step.
pub fn release(name: &str, version: &str, endpoint: &str, bucket: &str, prefix: &str) -> Published {
    let v = Version::new(name, version);
    let out = tempfile::tempdir().expect("tempdir");
    let archive = v.pack(out.path(), None);
    publish(&archive, endpoint, bucket, prefix)
}
