//! Installs that the daemon refuses: a name another package holds
//! (`already_exists` unless the install asks to replace it) and
//! dependencies that are missing, do not match, or are still needed
//! (`dependency_missing`). A refused install changes nothing.

use corral_daemon_tests::setup::set_manifest_key;
use corral_daemon_tests::tarball::package_tar_gz;
use corral_daemon_tests::{Daemon, Request, Setup};
use corral_protocol::api::{InstallResponse, PluginState, PluginSummary, RemoveResponse};
use serde_json::json;
use std::path::Path;

/// The store's entries (content digests), sorted.
fn store_entries(setup: &Setup) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(setup.state_dir().join("store"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Appends `text` to the package's manifest.
fn append_to_manifest(package: &Path, text: &str) {
    let manifest = package.join("plugin.toml");
    let mut body = std::fs::read_to_string(&manifest).expect("read the manifest");
    body.push('\n');
    body.push_str(text);
    std::fs::write(&manifest, body).expect("write the manifest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_package_under_an_installed_name_is_409_unless_replaced() {
    let setup = Setup::new();
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let first_dir = setup.package_copy("hello", "greeter", "v1");
    let first = api.install_path(&first_dir, true).await.installed(true);
    assert_eq!(first.state, PluginState::Ready);
    let pids = api.child_pids("greeter").await;
    let store = store_entries(&setup);

    // Version 0.2.0 of the same name, by path and by upload.
    let second_dir = setup.package_copy("hello", "greeter", "v2");
    set_manifest_key(&second_dir.join("plugin.toml"), "version", "0.2.0");
    for response in [
        api.install_path(&second_dir, true).await,
        api.install_upload(package_tar_gz(&second_dir, "greeter"), true)
            .await,
    ] {
        let e = response.error(409, "already_exists");
        assert_eq!(e["plugin"], "greeter", "{e}");
        assert_eq!(e["installed_version"], "0.1.0", "{e}");
        assert_eq!(e["installed_digest"], first.digest.as_str(), "{e}");
        assert!(
            e["message"].as_str().is_some_and(|m| m.contains("replace")),
            "the message says how to go on: {e}"
        );
    }
    // Nothing changed: the same package serves from the same child, and
    // the store holds no copy of the refused one.
    let detail = api.detail("greeter").await;
    assert_eq!(detail.summary.version, "0.1.0");
    assert_eq!(detail.digest, first.digest);
    assert_eq!(api.child_pids("greeter").await, pids);
    assert_eq!(store_entries(&setup), store);
    api.call_ok("greeter", "greet", json!({"name": "still one"}))
        .await;

    // The identical package again is no clash.
    let same = api.install_path(&first_dir, false).await.installed(false);
    assert!(same.unchanged);

    // Asked to replace, the new version is swapped in and serves.
    let replaced: InstallResponse = api
        .post_json("/v1/plugins", &json!({"path": second_dir, "replace": true}))
        .await
        .status(200)
        .parse();
    assert_eq!(replaced.version, "0.2.0");
    assert!(!replaced.unchanged);
    assert_eq!(
        replaced.state,
        PluginState::Ready,
        "a loaded plugin stays loaded"
    );
    assert_ne!(api.child_pids("greeter").await, pids);
    let out = api
        .call_ok("greeter", "greet", json!({"name": "two"}))
        .await;
    assert_eq!(out.output, json!({"greeting": "Hello, two!"}));
    assert_eq!(
        store_entries(&setup),
        std::slice::from_ref(&replaced.digest),
        "the replaced package left the store"
    );

    // Back to 0.1.0 by upload with ?replace=true.
    let back: InstallResponse = api
        .send(
            &Request::post("/v1/plugins?replace=true")
                .raw("application/gzip", package_tar_gz(&first_dir, "greeter")),
        )
        .await
        .status(200)
        .parse();
    assert_eq!(back.version, "0.1.0");
    assert_eq!(back.digest, first.digest);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_must_be_installed_match_and_stay() {
    let setup = Setup::new();
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let app = setup.package_copy("hello", "app", "packages");
    append_to_manifest(&app, "[dependencies]\nbase = \"^0.2\"\n");
    api.install_path(&app, false).await.installed(true);

    // Not installed at all.
    let e = api
        .lifecycle("app", "load")
        .await
        .error(400, "dependency_missing");
    assert_eq!(e["dependency"], "base", "{e}");
    assert_eq!(e["requirement"], "^0.2", "{e}");

    // Installed, but 0.1.0 does not match ^0.2.
    let base = setup.package_copy("hello", "base", "packages");
    api.install_path(&base, false).await.installed(true);
    let e = api
        .lifecycle("app", "load")
        .await
        .error(400, "dependency_missing");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("0.1.0")),
        "the message names the installed version: {e}"
    );
    assert!(api.child_pids("app").await.is_empty());
    assert!(
        api.child_pids("base").await.is_empty(),
        "a failed load starts nothing"
    );

    // 0.2.0 matches: loading app loads base first.
    set_manifest_key(&base.join("plugin.toml"), "version", "0.2.0");
    api.post_json("/v1/plugins", &json!({"path": base, "replace": true}))
        .await
        .status(200);
    let loaded: PluginSummary = api.lifecycle("app", "load").await.ok();
    assert_eq!(loaded.state, PluginState::Ready);
    assert_eq!(api.detail("base").await.summary.state, PluginState::Ready);
    api.call_ok("app", "greet", json!({"name": "app"})).await;

    // base cannot go while app needs it.
    let e = api
        .send(&Request::delete("/v1/plugins/base"))
        .await
        .error(400, "dependency_missing");
    assert_eq!(e["dependency"], "base", "{e}");
    assert!(
        e["requirement"].as_str().is_some_and(|r| r.contains("app")),
        "the error names who needs it: {e}"
    );
    assert_eq!(api.detail("base").await.summary.state, PluginState::Ready);
    api.call_ok("base", "greet", json!({"name": "base"})).await;
    // Once app is gone, it can.
    let _: RemoveResponse = api.send(&Request::delete("/v1/plugins/app")).await.ok();
    let _: RemoveResponse = api.send(&Request::delete("/v1/plugins/base")).await.ok();
    assert!(api.list().await.is_empty());
    daemon.stop().await;
}
