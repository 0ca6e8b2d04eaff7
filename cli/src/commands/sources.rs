//! Packages and S3 sources: `pack`, `keygen` and `publish` work without a
//! daemon (publishing runs where packages are built, with that machine's
//! AWS credentials, which may write to the bucket while the hosts running
//! corrald only read it); `source ...` asks corrald what its sources hold
//! and installs from them.

use super::args::{PublishTarget, SourceCommand};
use super::output::{answer, emit, fail};
use corral::exit;
use corral::{Client, Endpoint};
use corral_protocol::api::InstallResponse;
use corral_protocol::error::CorralError;
use corral_protocol::sources::{
    SourceFiles, SourceInstallRequest, SourceManifest, SourcePlugin, SourcePluginPage, SourceStatus,
};
use corral_supervisor::config::Config;
use corral_supervisor::sources::config::{Layout, S3SourceConfig};
use corral_supervisor::sources::layout;
use corral_supervisor::sources::pack::{Packed, pack as pack_dir};
use corral_supervisor::sources::s3::S3;
use corral_supervisor::store::{PackageLimits, Store};
use std::path::Path;

/// Environment variable holding the signing key's password.
pub const PASSWORD_ENV: &str = "CORRAL_SIGNING_PASSWORD";

fn invalid(reason: String) -> CorralError {
    CorralError::invalid_input(reason)
}

/// A minisign signature of `data` with the secret key in `key_file`.
fn sign(data: &[u8], key_file: &Path, trusted: &str) -> Result<String, CorralError> {
    let text = std::fs::read_to_string(key_file)
        .map_err(|e| invalid(format!("{}: {e}", key_file.display())))?;
    let sk_box = minisign::SecretKeyBox::from_string(&text).map_err(|e| {
        invalid(format!(
            "{} is not a minisign secret key: {e}",
            key_file.display()
        ))
    })?;
    let sk = match std::env::var(PASSWORD_ENV) {
        Ok(password) => sk_box.into_secret_key(Some(password)),
        Err(_) => sk_box.into_unencrypted_secret_key(),
    }
    .map_err(|e| {
        invalid(format!(
            "cannot open the key {} ({e}); an encrypted key needs its password in {PASSWORD_ENV}",
            key_file.display()
        ))
    })?;
    let signature = minisign::sign(None, &sk, std::io::Cursor::new(data), Some(trusted), None)
        .map_err(|e| invalid(format!("signing: {e}")))?;
    Ok(signature.into_string())
}

fn signed(packed: &Packed, key: Option<&Path>) -> Result<Option<String>, CorralError> {
    key.map(|k| {
        sign(
            &packed.archive,
            k,
            &format!("corral package {}", packed.file_name()),
        )
    })
    .transpose()
}

pub fn pack(dir: &Path, out: &Path, key: Option<&Path>, json: bool) -> u8 {
    let result = (|| {
        let packed = pack_dir(dir)?;
        let signature = signed(&packed, key)?;
        let name = packed.file_name();
        let write = |file: &str, bytes: &[u8]| {
            let path = out.join(file);
            std::fs::write(&path, bytes)
                .map(|_| path.display().to_string())
                .map_err(|e| invalid(format!("writing {}: {e}", path.display())))
        };
        let archive = write(&name, &packed.archive)?;
        let sha = write(
            &format!("{name}.sha256"),
            packed.sha256_text(&name).as_bytes(),
        )?;
        let sig = match &signature {
            Some(s) => Some(write(&format!("{name}.minisig"), s.as_bytes())?),
            None => None,
        };
        Ok::<_, CorralError>(serde_json::json!({
            "plugin": packed.manifest.name(),
            "version": packed.manifest.plugin.version.to_string(),
            "archive": archive,
            "sha256_file": sha,
            "signature_file": sig,
            "sha256": packed.sha256,
        }))
    })();
    match result {
        Ok(v) if json => {
            emit(&v.to_string());
            exit::OK
        }
        Ok(v) => {
            for k in ["archive", "sha256_file", "signature_file"] {
                if let Some(p) = v[k].as_str() {
                    emit(p);
                }
            }
            exit::OK
        }
        Err(e) => fail(&e, json),
    }
}

pub fn sign_file(file: &Path, key: &Path, json: bool) -> u8 {
    let result = (|| {
        let data = std::fs::read(file).map_err(|e| invalid(format!("{}: {e}", file.display())))?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let signature = sign(&data, key, &format!("corral package {name}"))?;
        let mut out = file.as_os_str().to_owned();
        out.push(".minisig");
        let out = std::path::PathBuf::from(out);
        std::fs::write(&out, signature).map_err(|e| invalid(format!("{}: {e}", out.display())))?;
        Ok::<_, CorralError>(out.display().to_string())
    })();
    match result {
        Ok(path) if json => {
            emit(&serde_json::json!({ "signature_file": path }).to_string());
            exit::OK
        }
        Ok(path) => {
            emit(&path);
            exit::OK
        }
        Err(e) => fail(&e, json),
    }
}

pub fn keygen(dir: &Path, json: bool) -> u8 {
    let result = (|| {
        let pair = match std::env::var(PASSWORD_ENV) {
            Ok(p) => minisign::KeyPair::generate_encrypted_keypair(Some(p)),
            Err(_) => minisign::KeyPair::generate_unencrypted_keypair(),
        }
        .map_err(|e| invalid(format!("generating a key pair: {e}")))?;
        let secret = pair
            .sk
            .to_box(None)
            .map_err(|e| invalid(format!("encoding the secret key: {e}")))?
            .to_string();
        let public = pair
            .pk
            .to_box()
            .map_err(|e| invalid(format!("encoding the public key: {e}")))?
            .to_string();
        let sk_path = dir.join("corral.key");
        let pk_path = dir.join("corral.pub");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&sk_path)
                .map_err(|e| invalid(format!("{}: {e}", sk_path.display())))?;
            f.write_all(secret.as_bytes())
                .map_err(|e| invalid(format!("{}: {e}", sk_path.display())))?;
        }
        std::fs::write(&pk_path, &public)
            .map_err(|e| invalid(format!("{}: {e}", pk_path.display())))?;
        Ok::<_, CorralError>(serde_json::json!({
            "secret_key_file": sk_path.display().to_string(),
            "public_key_file": pk_path.display().to_string(),
            "public_key": pair.pk.to_base64(),
        }))
    })();
    match result {
        Ok(v) if json => {
            emit(&v.to_string());
            exit::OK
        }
        Ok(v) => {
            emit(&format!(
                "secret key: {}\npublic key: {}\nfor corrald.toml: public_keys = [\"{}\"]",
                v["secret_key_file"].as_str().unwrap_or(""),
                v["public_key_file"].as_str().unwrap_or(""),
                v["public_key"].as_str().unwrap_or("")
            ));
            exit::OK
        }
        Err(e) => fail(&e, json),
    }
}

/// The source `corral publish` writes to.
fn target_config(t: &PublishTarget) -> Result<S3SourceConfig, CorralError> {
    let mut config = match (&t.source, &t.bucket) {
        (Some(name), _) => {
            let file = Config::load(&t.config, true)?;
            file.s3_sources
                .into_iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| {
                    invalid(format!(
                        "{} has no [[s3_sources]] named {name}",
                        t.config.display()
                    ))
                })?
        }
        (None, Some(bucket)) => S3SourceConfig::new("publish", bucket),
        (None, None) => {
            return Err(invalid(
                "name a --source of the configuration or a --bucket".into(),
            ));
        }
    };
    if let Some(b) = &t.bucket {
        config.bucket = b.clone();
    }
    if let Some(p) = &t.prefix {
        config.prefix = p.clone();
    }
    if let Some(e) = &t.endpoint {
        config.endpoint = Some(e.clone());
    }
    if let Some(r) = &t.region {
        config.region = r.clone();
    }
    config.path_style |= t.path_style;
    corral_supervisor::sources::config::check(std::slice::from_ref(&config))
        .map_err(|(key, reason)| invalid(format!("{key}: {reason}")))?;
    if config.layout == Layout::Unpacked {
        return Err(invalid(format!(
            "source {} keeps the unpacked layout; publish writes packed archives (copy the package folder to <prefix>/<name>/ instead)",
            config.name
        )));
    }
    Ok(config)
}

/// The archive, its sha256 and signature to upload, checked here first.
fn load_package(
    package: &Path,
    key: Option<&Path>,
) -> Result<(Packed, Option<String>), CorralError> {
    if package.is_dir() {
        let packed = pack_dir(package)?;
        let signature = signed(&packed, key)?;
        return Ok((packed, signature));
    }
    let read = |p: &Path| std::fs::read(p).map_err(|e| invalid(format!("{}: {e}", p.display())));
    let archive = read(package)?;
    let with = |ext: &str| {
        let mut s = package.as_os_str().to_owned();
        s.push(ext);
        std::path::PathBuf::from(s)
    };
    let sha_file = with(".sha256");
    let declared = corral_supervisor::sources::verify::parse_sha256_file(
        "local",
        &sha_file.display().to_string(),
        &read(&sha_file)?,
    )?;
    let actual = {
        use sha2::Digest;
        corral_supervisor::sources::verify::hex(&sha2::Sha256::digest(&archive))
    };
    if declared != actual {
        return Err(invalid(format!(
            "{} has sha256 {actual}, but {} says {declared}",
            package.display(),
            sha_file.display()
        )));
    }
    let sig_file = with(".minisig");
    let signature = if sig_file.exists() {
        Some(String::from_utf8_lossy(&read(&sig_file)?).into_owned())
    } else {
        None
    };
    // The store's rules, in a throw-away store: what uploads installs.
    let check = tempfile::tempdir().map_err(|e| invalid(format!("a temporary directory: {e}")))?;
    let store = Store::open(&check.path().join("store"), PackageLimits::default())?;
    let stored = store.import_tar_gz(&archive[..])?;
    Ok((
        Packed {
            manifest: stored.manifest,
            archive,
            sha256: actual,
        },
        signature,
    ))
}

pub async fn publish(package: &Path, target: &PublishTarget, key: Option<&Path>, json: bool) -> u8 {
    let result = async {
        let config = target_config(target)?;
        let (packed, signature) = load_package(package, key)?;
        let name = packed.manifest.name().to_string();
        let version = packed.manifest.plugin.version.to_string();
        let archive_key = layout::archive_key(config.base(), &name, &version);
        let s3 = S3::new(&config).await;
        // Checksum and signature first, the archive last: a poll never sees
        // a new archive without its .sha256.
        let sha_text = packed.sha256_text(&format!("{version}.tar.gz"));
        s3.put(
            &format!("{archive_key}{}", layout::SHA256_EXT),
            sha_text.into_bytes(),
            "text/plain",
        )
        .await?;
        if let Some(sig) = &signature {
            s3.put(
                &format!("{archive_key}{}", layout::MINISIG_EXT),
                sig.clone().into_bytes(),
                "text/plain",
            )
            .await?;
        }
        s3.put(&archive_key, packed.archive.clone(), "application/gzip")
            .await?;
        Ok::<_, CorralError>(serde_json::json!({
            "plugin": name,
            "version": version,
            "bucket": config.bucket,
            "key": archive_key,
            "sha256": packed.sha256,
            "signed": signature.is_some(),
        }))
    }
    .await;
    match result {
        Ok(v) if json => {
            emit(&v.to_string());
            exit::OK
        }
        Ok(v) => {
            emit(&format!(
                "published {} {} to s3://{}/{}{}",
                v["plugin"].as_str().unwrap_or(""),
                v["version"].as_str().unwrap_or(""),
                v["bucket"].as_str().unwrap_or(""),
                v["key"].as_str().unwrap_or(""),
                if v["signed"].as_bool().unwrap_or(false) {
                    " (signed)"
                } else {
                    ""
                }
            ));
            exit::OK
        }
        Err(e) => fail(&e, json),
    }
}

fn status_lines(sources: &[SourceStatus]) -> String {
    let mut out = Vec::new();
    for s in sources {
        let state = match &s.last_error {
            Some(e) => format!(
                "failing ({} in a row): {}",
                s.consecutive_failures, e.message
            ),
            None if s.last_success_ms.is_some() => "ok".to_string(),
            None => "not polled yet".to_string(),
        };
        out.push(format!(
            "{}\ts3://{}/{}\t{}\t{state}",
            s.name, s.bucket, s.prefix, s.layout
        ));
        for (plugin, f) in &s.followed {
            let error = f
                .last_error
                .as_ref()
                .map(|e| format!("\terror: {}", e.message))
                .unwrap_or_default();
            out.push(format!(
                "  {plugin}\tfollows {}\tinstalled {}{error}",
                f.follows,
                f.installed_version.as_deref().unwrap_or("-")
            ));
        }
    }
    if out.is_empty() {
        "no S3 sources are configured".into()
    } else {
        out.join("\n")
    }
}

pub async fn source(client: &Client, command: SourceCommand, json: bool) -> u8 {
    match command {
        SourceCommand::Ls { source: None, .. } => {
            answer(client, Endpoint::Sources, json, |s: Vec<SourceStatus>| {
                status_lines(&s)
            })
            .await
        }
        SourceCommand::Ls {
            source: Some(source),
            limit,
            after,
        } => {
            answer(
                client,
                Endpoint::SourcePlugins {
                    source,
                    limit,
                    after,
                },
                json,
                |p: SourcePluginPage| {
                    let mut lines = p.plugins.join("\n");
                    if let Some(next) = p.next {
                        lines.push_str(&format!("\n(more: --after {next})"));
                    }
                    lines
                },
            )
            .await
        }
        SourceCommand::Show { source, name } => {
            answer(
                client,
                Endpoint::SourcePlugin { source, name },
                json,
                |p: SourcePlugin| {
                    let mut lines = vec![format!("{} in {}:", p.name, p.source_name)];
                    for v in p.versions {
                        lines.push(format!(
                            "  {}\t{} bytes\t{}\t{}\t{}{}",
                            v.version,
                            v.size,
                            v.last_modified.unwrap_or_default(),
                            v.etag.unwrap_or_default(),
                            v.sha256.unwrap_or_default(),
                            if v.signed { "\tsigned" } else { "" }
                        ));
                    }
                    lines.join("\n")
                },
            )
            .await
        }
        SourceCommand::Manifest {
            source,
            name,
            version,
        } => {
            answer(
                client,
                Endpoint::SourceManifest {
                    source,
                    name,
                    version,
                },
                json,
                |m: SourceManifest| serde_json::to_string_pretty(&m.manifest).unwrap_or_default(),
            )
            .await
        }
        SourceCommand::Files {
            source,
            name,
            version,
        } => {
            answer(
                client,
                Endpoint::SourceFiles {
                    source,
                    name,
                    version,
                },
                json,
                |f: SourceFiles| {
                    f.files
                        .iter()
                        .map(|f| format!("{}\t{}\t{}", f.kind, f.size, f.path))
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            )
            .await
        }
        SourceCommand::Install {
            source,
            name,
            version,
            load,
            replace,
        } => {
            let request = SourceInstallRequest {
                version,
                load,
                replace,
            };
            answer(
                client,
                Endpoint::SourceInstall {
                    source,
                    name,
                    request,
                },
                json,
                |i: InstallResponse| corral::render::installed(&i),
            )
            .await
        }
        SourceCommand::Poll { source } => {
            answer(
                client,
                Endpoint::SourcePoll { source },
                json,
                |s: SourceStatus| status_lines(&[s]),
            )
            .await
        }
    }
}
