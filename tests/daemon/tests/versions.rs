//! Several versions of a plugin side by side: an install alongside keeps
//! the current one serving, a load with a version swaps to another (and
//! back), removing one version refuses the current one and names the
//! loaded plugins that need it, and the kept versions survive a restart.

use corral_daemon_tests::setup::set_manifest_key;
use corral_daemon_tests::{Daemon, Request, Setup};
use corral_protocol::api::{InstallResponse, PluginState, PluginSummary};
use serde_json::json;
use std::path::Path;

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

/// `(version, current, loaded)` of each installed version.
async fn versions(api: &corral_daemon_tests::Client, name: &str) -> Vec<(String, bool, bool)> {
    api.detail(name)
        .await
        .versions
        .into_iter()
        .map(|v| (v.version, v.current, v.loaded))
        .collect()
}

fn version_of(setup: &Setup, version: &str) -> std::path::PathBuf {
    let dir = setup.package_copy("hello", "greeter", &format!("v{version}"));
    set_manifest_key(&dir.join("plugin.toml"), "version", version);
    dir
}

async fn alongside(api: &corral_daemon_tests::Client, dir: &Path) -> InstallResponse {
    api.post_json("/v1/plugins?alongside=true", &json!({ "path": dir }))
        .await
        .status(201)
        .parse()
}

/// `corral --socket <daemon's> ARGS`: exit code, stdout and stderr.
fn corral(setup: &Setup, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(corral_daemon_tests::test_env().corral())
        .arg("--socket")
        .arg(setup.socket())
        .args(args)
        .output()
        .expect("corral runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn owned(v: &[(&str, bool, bool)]) -> Vec<(String, bool, bool)> {
    v.iter().map(|(s, c, l)| (s.to_string(), *c, *l)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_side_by_side_one_loaded() {
    let setup = Setup::new();
    let mut daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    api.install_path(&version_of(&setup, "0.1.0"), true)
        .await
        .installed(true);
    let pids = api.child_pids("greeter").await;

    // 0.2.0 beside it: installed, not loaded; 0.1.0 serves on.
    let added = alongside(api, &version_of(&setup, "0.2.0")).await;
    assert_eq!(
        (added.version.as_str(), added.state),
        ("0.2.0", PluginState::Installed)
    );
    assert_eq!(
        versions(api, "greeter").await,
        owned(&[("0.1.0", true, true), ("0.2.0", false, false)])
    );
    assert_eq!(api.child_pids("greeter").await, pids);
    assert_eq!(store_entries(&setup).len(), 2, "both in the store");
    api.post_json(
        "/v1/plugins?alongside=true&load=true",
        &json!({"path": "/x"}),
    )
    .await
    .error(400, "invalid_input");

    // Switch: a hot swap to 0.2.0, the calls go on.
    let switched: PluginSummary = api
        .post_json("/v1/plugins/greeter/load", &json!({"version": "0.2.0"}))
        .await
        .ok();
    assert_eq!(
        (switched.version.as_str(), switched.state),
        ("0.2.0", PluginState::Ready)
    );
    assert_ne!(api.child_pids("greeter").await, pids);
    api.call_ok("greeter", "greet", json!({"name": "two"}))
        .await;
    assert_eq!(
        versions(api, "greeter").await,
        owned(&[("0.2.0", true, true), ("0.1.0", false, false)])
    );
    api.post_json("/v1/plugins/greeter/load", &json!({"version": "9.9.9"}))
        .await
        .error(400, "invalid_input");

    // A plugin that needs >=0.2: the current version cannot go, nor can a
    // switch leave it unmet.
    let app = setup.package_copy("hello", "app", "app");
    let manifest = app.join("plugin.toml");
    let mut text = std::fs::read_to_string(&manifest).expect("manifest");
    text.push_str("\n[dependencies]\ngreeter = \">=0.2\"\n");
    std::fs::write(&manifest, text).expect("manifest");
    api.install_path(&app, true).await.installed(true);
    let e = api
        .send(&Request::delete("/v1/plugins/greeter?version=0.2.0"))
        .await
        .error(409, "version_in_use");
    assert_eq!(e["version"], "0.2.0", "{e}");
    assert_eq!(e["needed_by"], json!(["app"]), "{e}");
    api.post_json("/v1/plugins/greeter/load", &json!({"version": "0.1.0"}))
        .await
        .error(400, "dependency_missing");
    assert_eq!(api.detail("greeter").await.summary.version, "0.2.0");

    // The kept version is removed alone (`corral rm NAME@VERSION`); the
    // store lets go of it. The current one is refused there too.
    let before = store_entries(&setup).len();
    let (code, _) = corral(&setup, &["rm", "greeter@0.2.0"]);
    assert_ne!(code, 0, "the current version stays");
    let (code, out) = corral(&setup, &["rm", "greeter@0.1.0"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        versions(api, "greeter").await,
        owned(&[("0.2.0", true, true)])
    );
    assert_eq!(store_entries(&setup).len(), before - 1);
    api.send(&Request::delete("/v1/plugins/greeter?version=0.1.0"))
        .await
        .error(400, "invalid_input");

    // Kept versions survive a restart, and can be loaded after it.
    alongside(api, &version_of(&setup, "0.3.0")).await;
    daemon.stop().await;
    daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    assert_eq!(
        versions(api, "greeter").await,
        owned(&[("0.2.0", true, true), ("0.3.0", false, false)])
    );
    let (code, out) = corral(&setup, &["load", "greeter", "--version", "0.3.0"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(api.detail("greeter").await.summary.version, "0.3.0");
    api.call_ok("greeter", "greet", json!({"name": "three"}))
        .await;

    // Removing the plugin removes every version.
    api.send(&Request::delete("/v1/plugins/app"))
        .await
        .status(200);
    api.send(&Request::delete("/v1/plugins/greeter"))
        .await
        .status(200);
    assert!(
        store_entries(&setup).is_empty(),
        "{:?}",
        store_entries(&setup)
    );
    daemon.stop().await;
}
