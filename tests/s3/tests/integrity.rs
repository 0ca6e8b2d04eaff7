//! Integrity of what a source delivers, with signatures required: a
//! package signed with the configured key installs; an unsigned one, one
//! signed with another key, and a correctly signed archive that breaks
//! the unpacking rules (`..`) are each refused with their own error, and
//! the installed version keeps serving throughout.

use corral_daemon_tests::tarball::tar_gz_with_raw_entry;
use corral_daemon_tests::{Daemon, Setup, eventually};
use corral_protocol::api::Event;
use corral_protocol::sources::SourcePlugin;
use corral_s3_tests::packages::{Version, corral, publish, timeout_ms_of};
use corral_s3_tests::{PICKUP_WAIT, S3Server, serving_timeout_ms, source_config};
use serde_json::json;
use sha2::Digest;
use std::path::Path;

const BUCKET: &str = "signed";

fn keygen(dir: &Path) -> String {
    let out = corral(
        &["--json".into(), "keygen".into(), dir.display().to_string()],
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("keygen JSON");
    let key = v["public_key"].as_str().expect("a public key").to_string();
    assert!(dir.join("corral.key").is_file() && dir.join("corral.pub").is_file());
    key
}

fn publish_version(s3: &S3Server, version: &str, key: Option<&Path>) {
    let v = Version::new("signed", version);
    let out = tempfile::tempdir().expect("tempdir");
    let archive = v.pack(out.path(), key);
    assert_eq!(
        archive.with_extension("gz.minisig").exists(),
        key.is_some(),
        "a .minisig exactly when signing"
    );
    publish(&archive, &s3.endpoint(), BUCKET, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_packages_signed_with_a_configured_key_and_unpacking_cleanly_are_installed() {
    let keys = tempfile::tempdir().expect("tempdir");
    let good = keys.path().join("good");
    let other = keys.path().join("other");
    std::fs::create_dir_all(&good).expect("mkdir");
    std::fs::create_dir_all(&other).expect("mkdir");
    let public = keygen(&good);
    keygen(&other);
    let good_key = good.join("corral.key");
    let other_key = other.join("corral.key");

    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    publish_version(&s3, "1.1.0", Some(&good_key));
    let mut setup = Setup::new();
    setup.extra_config = source_config(
        "main",
        &s3.endpoint(),
        BUCKET,
        "",
        &format!("require_signatures = true\npublic_keys = [{public:?}]"),
    );
    let daemon = Daemon::start(&setup).await;
    let mut events = daemon.client.events(None).await;
    eventually("the signed 1.1.0 serving", PICKUP_WAIT, || async {
        (serving_timeout_ms(&daemon.client, "signed").await == Some(timeout_ms_of("1.1.0")))
            .then_some(())
    })
    .await;
    let digest = daemon.client.detail("signed").await.digest;
    let meta: SourcePlugin = daemon
        .client
        .get("/v1/sources/main/plugins/signed")
        .await
        .ok();
    assert!(meta.versions[0].signed, "{meta:?}");

    publish_version(&s3, "1.2.0", None);
    refused(&mut events, &daemon, &digest, "1.2.0", "signature_missing").await;
    publish_version(&s3, "1.3.0", Some(&other_key));
    refused(&mut events, &daemon, &digest, "1.3.0", "signature_invalid").await;

    // Signed with the right key, checksummed, and hostile inside: the
    // store's unpacking rules still apply.
    let v = Version::new("signed", "1.4.0");
    let hostile = tar_gz_with_raw_entry(&v.dir, "signed", "../../escaped", b"x");
    let out = tempfile::tempdir().expect("tempdir");
    let archive = out.path().join("signed-1.4.0.tar.gz");
    std::fs::write(&archive, &hostile).expect("write");
    let sha = corral_supervisor_hex(&sha2::Sha256::digest(&hostile));
    std::fs::write(
        out.path().join("signed-1.4.0.tar.gz.sha256"),
        format!("{sha}  signed-1.4.0.tar.gz\n"),
    )
    .expect("write");
    let status = corral_s3_tests::packages::corral_status(
        &[
            "publish".into(),
            archive.display().to_string(),
            "--bucket".into(),
            BUCKET.into(),
            "--endpoint".into(),
            s3.endpoint(),
            "--path-style".into(),
        ],
        &[],
    );
    assert!(
        !status.status.success(),
        "corral publish checks the archive first"
    );
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains("leaves the package"), "{stderr}");
    // Uploaded behind corral's back, signed with the good key.
    let signature = sign_with(&good_key, &archive);
    s3.put(
        BUCKET,
        "signed/1.4.0.tar.gz.sha256",
        format!("{sha}\n").into_bytes(),
    )
    .await;
    s3.put(BUCKET, "signed/1.4.0.tar.gz.minisig", signature)
        .await;
    s3.put(BUCKET, "signed/1.4.0.tar.gz", hostile).await;
    let record = events
        .wait_for("the hostile 1.4.0 refused", PICKUP_WAIT, |r| {
            matches!(&r.event, Event::SourceFailed { plugin, code, .. }
                if plugin == "signed" && code == "invalid_package")
        })
        .await;
    let Event::SourceFailed { message, .. } = &record.event else {
        unreachable!()
    };
    assert!(message.contains("leaves the package"), "{message}");
    assert_eq!(daemon.client.detail("signed").await.digest, digest);

    publish_version(&s3, "1.5.0", Some(&good_key));
    eventually("the signed 1.5.0 serving", PICKUP_WAIT, || async {
        (serving_timeout_ms(&daemon.client, "signed").await == Some(timeout_ms_of("1.5.0")))
            .then_some(())
    })
    .await;
    daemon.stop().await;
}

/// `version` refused with `problem`; the installed package unchanged
/// and serving.
async fn refused(
    events: &mut corral_daemon_tests::EventStream,
    daemon: &Daemon,
    digest: &str,
    version: &str,
    problem: &str,
) {
    let record = events
        .wait_for(&format!("{version} refused as {problem}"), PICKUP_WAIT, |r| {
            matches!(&r.event, Event::SourceFailed { plugin, code, problem: p, message, .. }
                if plugin == "signed" && code == "source_error" && p == problem && message.contains(version))
        })
        .await;
    assert_eq!(
        daemon.client.detail("signed").await.digest,
        digest,
        "{record:?}"
    );
    assert_eq!(
        serving_timeout_ms(&daemon.client, "signed").await,
        Some(timeout_ms_of("1.1.0"))
    );
    daemon
        .client
        .call_ok("signed", "greet", json!({"name": "still"}))
        .await;
}

fn corral_supervisor_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `corral sign`: a .minisig of `file` with `key`.
fn sign_with(key: &Path, file: &Path) -> Vec<u8> {
    let out = corral(
        &[
            "--json".into(),
            "sign".into(),
            file.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ],
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("sign JSON");
    std::fs::read(v["signature_file"].as_str().expect("a signature file"))
        .expect("read the signature")
}
