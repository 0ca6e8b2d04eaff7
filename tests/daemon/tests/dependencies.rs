//! Dependencies between plugins: a cycle is refused at install with the
//! cycle named (nothing changes); a plugin that loaded plugins need is
//! not unloaded unless asked to cascade, which unloads them first.

use corral_daemon_tests::{Daemon, Request, Setup};
use corral_protocol::api::{PluginState, PluginSummary};
use serde_json::json;
use std::path::Path;

fn depend_on(package: &Path, deps: &[&str]) {
    let manifest = package.join("plugin.toml");
    let mut body = std::fs::read_to_string(&manifest).expect("read the manifest");
    body.push_str("\n[dependencies]\n");
    for d in deps {
        body.push_str(&format!("{d} = \"*\"\n"));
    }
    std::fs::write(&manifest, body).expect("write the manifest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_cycle_is_refused_at_install_and_named() {
    let setup = Setup::new();
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let a = setup.package_copy("hello", "cyc-a", "packages");
    depend_on(&a, &["cyc-b"]);
    let b = setup.package_copy("hello", "cyc-b", "packages");
    depend_on(&b, &["cyc-c"]);
    let c = setup.package_copy("hello", "cyc-c", "packages");
    depend_on(&c, &["cyc-a"]);
    api.install_path(&a, false).await.installed(true);
    api.install_path(&b, false).await.installed(true);
    let e = api
        .install_path(&c, false)
        .await
        .error(400, "dependency_missing");
    let message = e["message"].as_str().unwrap_or("");
    assert!(
        message.contains("cyc-c -> cyc-a -> cyc-b -> cyc-c"),
        "the cycle is named: {e}"
    );
    let names: Vec<String> = api.list().await.into_iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        ["cyc-a", "cyc-b"],
        "the refused install changed nothing"
    );
    // A plugin that needs itself is a manifest error already.
    let own = setup.package_copy("hello", "selfish", "packages");
    depend_on(&own, &["selfish"]);
    let e = api
        .install_path(&own, false)
        .await
        .error(400, "invalid_manifest");
    assert!(
        e["message"].as_str().unwrap_or("").contains("itself"),
        "{e}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloading_what_others_need_takes_cascade() {
    let setup = Setup::new();
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let base = setup.package_copy("hello", "base", "packages");
    let app = setup.package_copy("hello", "app", "packages");
    depend_on(&app, &["base"]);
    api.install_path(&base, false).await.installed(true);
    api.install_path(&app, true).await.installed(true);
    assert_eq!(api.detail("base").await.summary.state, PluginState::Ready);

    let e = api
        .lifecycle("base", "unload")
        .await
        .error(400, "dependency_missing");
    assert!(
        e["requirement"].as_str().unwrap_or("").contains("app"),
        "{e}"
    );
    assert_eq!(api.detail("base").await.summary.state, PluginState::Ready);
    assert_eq!(api.detail("app").await.summary.state, PluginState::Ready);
    api.call_ok("app", "greet", json!({"name": "still"})).await;

    let unloaded: PluginSummary = api
        .send(&Request::post("/v1/plugins/base/unload?cascade=true"))
        .await
        .ok();
    assert_eq!(unloaded.state, PluginState::Installed);
    assert_eq!(
        api.detail("app").await.summary.state,
        PluginState::Installed
    );
    assert!(api.child_pids("app").await.is_empty() && api.child_pids("base").await.is_empty());
    // Loading app again brings base back.
    let loaded: PluginSummary = api.lifecycle("app", "load").await.ok();
    assert_eq!(loaded.state, PluginState::Ready);
    assert_eq!(api.detail("base").await.summary.state, PluginState::Ready);
    daemon.stop().await;
}

/// Install refuses a cycle, but packages in a source folder are taken as
/// they are at start: the cycle first shows when they load, and the load
/// refuses it with the cycle named instead of chasing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_that_appears_only_at_load_is_refused_and_named() {
    let setup = Setup::new();
    let a = setup.add_package("hello", "loop-a");
    depend_on(&a, &["loop-b"]);
    let b = setup.add_package("hello", "loop-b");
    depend_on(&b, &["loop-a"]);
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    for name in ["loop-a", "loop-b"] {
        assert_eq!(
            api.detail(name).await.summary.state,
            PluginState::Installed,
            "{name} is installed but not loaded"
        );
    }
    let e = api
        .lifecycle("loop-a", "load")
        .await
        .error(400, "dependency_missing");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("loop-a -> loop-b -> loop-a"),
        "the cycle is named: {e}"
    );
    assert!(api.child_pids("loop-a").await.is_empty());
    assert!(api.child_pids("loop-b").await.is_empty());
    daemon.stop().await;
}
