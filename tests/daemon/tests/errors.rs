//! Every error the API documents, with its status and the JSON shape
//! `{"error": {"code", "message", ...details}}`, provoked for real.

use corral_daemon_tests::tarball::{package_tar_gz, tar_gz_with_raw_entry};
use corral_daemon_tests::{Daemon, EVENT_WAIT, Request, SETTLE_WAIT, Setup, eventually, leaks};
use corral_protocol::api::{PluginState, PluginSummary};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

fn files_named(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == name {
            found.push(path.clone());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(files_named(&path, name));
        }
    }
    found
}

fn store_entries(setup: &Setup) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(setup.state_dir().join("store"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_not_loaded_invalid_input_and_plugin_errors() {
    let setup = Setup::new().package("hello");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;

    // plugin_not_found, 404, on every route that names a plugin.
    let e = api
        .call("nope", "greet", json!({}))
        .await
        .error(404, "plugin_not_found");
    assert_eq!(e["plugin"], "nope", "{e}");
    api.get("/v1/plugins/nope")
        .await
        .error(404, "plugin_not_found");
    api.get("/v1/plugins/nope/policy")
        .await
        .error(404, "plugin_not_found");
    for action in ["load", "unload", "reload"] {
        api.lifecycle("nope", action)
            .await
            .error(404, "plugin_not_found");
    }
    api.send(&Request::delete("/v1/plugins/nope"))
        .await
        .error(404, "plugin_not_found");

    // invalid_input, 400: the body, the method name, the plugin name.
    let call = "/v1/plugins/hello/call";
    for (what, body) in [
        ("not JSON", "{\"method\": \"greet\", "),
        ("an array", "[1, 2]"),
        ("no method", "{\"input\": {}}"),
        (
            "an unknown field",
            "{\"method\": \"greet\", \"input\": {}, \"colour\": \"red\"}",
        ),
        ("an empty method", "{\"method\": \"\", \"input\": {}}"),
    ] {
        let e = api
            .send(&Request::post(call).raw("application/json", body.to_string()))
            .await
            .error(400, "invalid_input");
        assert!(e["reason"].is_string(), "{what}: {e}");
    }
    api.call("hello", &"m".repeat(300), json!({}))
        .await
        .error(400, "invalid_input");
    for bad in ["Hello", "-hello", "he..llo", "hello%20x", &"a".repeat(65)] {
        api.call(bad, "greet", json!({}))
            .await
            .error(400, "invalid_input");
        api.get(&format!("/v1/plugins/{bad}"))
            .await
            .error(400, "invalid_input");
    }
    api.get("/v1/events?plugin=Bad_Name")
        .await
        .error(400, "invalid_input");
    api.get("/v1/events?colour=red")
        .await
        .error(400, "invalid_input");
    // Installs: neither JSON nor an archive, a relative path, bad JSON.
    api.send(&Request::post("/v1/plugins").raw("text/plain", "hello"))
        .await
        .error(400, "invalid_input");
    api.post_json("/v1/plugins", &json!({"path": "relative/hello"}))
        .await
        .error(400, "invalid_input");
    api.post_json("/v1/plugins", &json!({"path": "/x", "colour": 1}))
        .await
        .error(400, "invalid_input");

    // Unknown routes and methods answer in the same shape.
    api.get("/v1/nope").await.error(404, "invalid_input");
    api.get("/v2/health").await.error(404, "invalid_input");
    api.post("/v1/health").await.error(405, "invalid_input");
    api.send(&Request::delete("/v1/plugins"))
        .await
        .error(405, "invalid_input");
    api.get("/v1/plugins/hello/call")
        .await
        .error(405, "invalid_input");

    // plugin_error, 422: the plugin's own errors, its code kept.
    let e = api
        .call("hello", "fail", Value::Null)
        .await
        .error(422, "plugin_error");
    assert_eq!(e["plugin_code"], "requested_failure", "{e}");
    let e = api
        .call("hello", "no_such_method", Value::Null)
        .await
        .error(422, "plugin_error");
    assert_eq!(e["plugin_code"], "unknown_method", "{e}");
    let e = api
        .call("hello", "greet", json!({"name": " "}))
        .await
        .error(422, "plugin_error");
    assert_eq!(e["plugin_code"], "invalid_input", "{e}");
    // None of that hurt the plugin.
    api.call_ok("hello", "greet", json!({"name": "still"}))
        .await;

    // not_loaded, 409.
    let _: PluginSummary = api.lifecycle("hello", "unload").await.ok();
    let e = api
        .call("hello", "greet", json!({"name": "x"}))
        .await
        .error(409, "not_loaded");
    assert_eq!(e["plugin"], "hello");
    api.lifecycle("hello", "unload")
        .await
        .error(409, "not_loaded");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413() {
    let setup = Setup::new()
        .package("hello")
        .limit("max_request_body", "\"2KiB\"");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let small = api.call_ok("hello", "echo", json!("x".repeat(1000))).await;
    assert_eq!(small.output, json!("x".repeat(1000)));
    let e = api
        .call("hello", "echo", json!("x".repeat(8 << 10)))
        .await
        .error(413, "invalid_input");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("2048")),
        "the message names the limit: {e}"
    );
    // A package archive over the limit, but small enough to sit in the
    // socket's buffer: the daemon answers before reading it all and
    // closes, and a client still writing a larger body would see the
    // connection closed instead of the answer.
    let dir = setup.root().join("uploads/big");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(
        corral_daemon_tests::test_env()
            .package("hello")
            .join("plugin.toml"),
        dir.join("plugin.toml"),
    )
    .expect("copy the manifest");
    corral_daemon_tests::setup::set_manifest_key(&dir.join("plugin.toml"), "name", "big");
    let mut noise = Vec::with_capacity(24 << 10);
    let mut x: u32 = 0x9e37_79b9;
    while noise.len() < 24 << 10 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(dir.join("noise"), noise).expect("write the noise");
    let archive = package_tar_gz(&dir, "big");
    assert!(
        archive.len() > 2 << 10 && archive.len() < 64 << 10,
        "the archive is over the limit and under a socket buffer: {}",
        archive.len()
    );
    api.install_upload(archive, false)
        .await
        .error(413, "invalid_input");
    api.get("/v1/plugins/big")
        .await
        .error(404, "plugin_not_found");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_packages_and_manifests_install_nothing() {
    let setup = Setup::new();
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let store_before = store_entries(&setup);

    // An archive with an entry that climbs out.
    let dir = setup.package_copy("hello", "sneaky", "uploads");
    for name in ["../escaped-by-dots.txt", "sneaky/../../escaped-by-dots.txt"] {
        let archive = tar_gz_with_raw_entry(&dir, "sneaky", name, b"outside\n");
        let e = api
            .install_upload(archive, true)
            .await
            .error(400, "invalid_package");
        assert!(e["reason"].is_string(), "{e}");
    }
    // An absolute entry.
    let absolute = setup.root().join("escaped-absolute.txt");
    let archive = tar_gz_with_raw_entry(
        &dir,
        "sneaky",
        &absolute.display().to_string(),
        b"outside\n",
    );
    api.install_upload(archive, true)
        .await
        .error(400, "invalid_package");
    // Not an archive at all.
    api.install_upload(b"not gzip at all".to_vec(), false)
        .await
        .error(400, "invalid_package");
    assert!(
        files_named(setup.root(), "escaped-by-dots.txt").is_empty(),
        "an entry with .. was written"
    );
    assert!(!absolute.exists(), "an absolute entry was written");
    assert!(
        files_named(Path::new("/var/tmp"), "escaped-by-dots.txt").is_empty(),
        "an entry with .. was written under /var/tmp"
    );

    // A manifest with a key corral does not know.
    let bad = setup.package_copy("hello", "typo", "paths");
    let manifest = bad.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).expect("read the manifest");
    std::fs::write(
        &manifest,
        text.replace("[limits]", "[limits]\nmemmory = \"1GiB\""),
    )
    .expect("write the manifest");
    let e = api
        .install_path(&bad, true)
        .await
        .error(400, "invalid_manifest");
    assert!(
        e["key"].as_str().is_some_and(|k| k.contains("memmory")),
        "the error names the key: {e}"
    );
    // The same package as an upload.
    let e = api
        .install_upload(package_tar_gz(&bad, "typo"), true)
        .await
        .error(400, "invalid_manifest");
    assert!(
        e["key"].as_str().is_some_and(|k| k.contains("memmory")),
        "{e}"
    );
    // A directory without a manifest.
    let empty = setup.root().join("paths/empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    api.install_path(&empty, false).await.status(400);

    assert!(api.list().await.is_empty(), "nothing was installed");
    let store_after: Vec<String> = store_entries(&setup)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    let store_before: Vec<String> = store_before
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(store_after, store_before, "the store holds nothing new");
    let staging: Vec<String> = store_entries(&setup)
        .into_iter()
        .filter(|n| n.starts_with(".upload-"))
        .collect();
    assert!(staging.is_empty(), "staging directories left: {staging:?}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permission_the_policy_does_not_grant_is_403() {
    let setup = Setup::new().package("hostile-net");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let detail = api.detail("hostile-net").await;
    assert_eq!(detail.summary.state, PluginState::Installed);
    let policy_error = detail.policy_error.expect("the policy does not compile");
    assert_eq!(policy_error.code(), "permission_denied", "{policy_error:?}");
    let e = api
        .lifecycle("hostile-net", "load")
        .await
        .error(403, "permission_denied");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("net")),
        "the error names the permission: {e}"
    );
    api.call("hostile-net", "whoami", Value::Null)
        .await
        .error(409, "not_loaded");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_plugin_is_overloaded_429() {
    let setup = Setup::new()
        .package("hello")
        .limit("max_in_flight_per_plugin", "1");
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    let slow = tokio::spawn({
        let api = api.clone();
        async move { api.call("hello", "sleep", json!({"ms": 1500})).await }
    });
    eventually("the slow call is in flight", EVENT_WAIT, || async {
        (api.detail("hello").await.summary.in_flight == 1).then_some(())
    })
    .await;
    let e = api
        .call("hello", "sleep", json!({"ms": 10}))
        .await
        .error(429, "overloaded");
    assert_eq!(e["limit"], 1, "{e}");
    let slow = slow.await.expect("the slow call's task").status(200);
    assert_eq!(slow.value()["output"]["cancelled"], false);
    // The slot is free again.
    api.call_ok("hello", "sleep", json!({"ms": 10})).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_timeout_is_504() {
    let setup = Setup::new().package("hello");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    // Every call past its limit is a timeout, also when the handler sees
    // its deadline and returns just as the daemon's timer fires (hello's
    // sleep stops at the deadline and answers `cancelled: true`). Many
    // short calls, because which side wins is a race.
    const CALLS: usize = 30;
    let mut not_timeouts = Vec::new();
    let mut timeouts = Vec::new();
    for i in 0..CALLS {
        let limit = if i == 0 { 300 } else { 50 };
        let response = api
            .post_json(
                "/v1/plugins/hello/call",
                &json!({"method": "sleep", "input": {"ms": 5000}, "timeout_ms": limit}),
            )
            .await;
        if response.status == 504 {
            timeouts.push((limit, response.error(504, "timeout")));
        } else {
            not_timeouts.push(format!("{} {}", response.status, response.text()));
        }
    }
    for (limit, e) in &timeouts {
        let limit_ms = e["limit_ms"].as_u64().expect("limit_ms");
        assert!(
            limit_ms <= *limit && limit_ms > 0,
            "the limit is the call's ({limit}): {e}"
        );
    }
    // The plugin honours the cancel and goes on serving.
    let out = api
        .call_ok("hello", "greet", json!({"name": "later"}))
        .await;
    assert_eq!(out.output, json!({"greeting": "Hello, later!"}));
    assert!(
        not_timeouts.is_empty(),
        "{} of {CALLS} calls past their limit were not `timeout`: {not_timeouts:#?}",
        not_timeouts.len()
    );
    daemon.stop().await;
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deaths_are_typed_502_and_the_next_call_works() {
    let setup = Setup::new().package("hostile");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;

    let e = api
        .call("hostile", "exit", json!({"code": 3}))
        .await
        .error(502, "crashed");
    assert_eq!(e["exit_code"], 3, "{e}");
    api.call_ok("hostile", "whoami", Value::Null).await;

    let e = api
        .call("hostile", "memory_bomb", json!({"max_mib": 1024}))
        .await
        .error(502, "memory_limit_exceeded");
    assert_eq!(e["limit_bytes"], 64u64 << 20, "hostile's limit: {e}");
    assert!(e["peak_bytes"].as_u64().is_some(), "{e}");
    api.call_ok("hostile", "whoami", Value::Null).await;

    let e = api
        .call("hostile", "socket", json!({"domain": "inet"}))
        .await
        .error(502, "seccomp_violation");
    assert_eq!(e["syscall"], "socket", "{e}");
    assert!(
        e["argument"]
            .as_str()
            .is_some_and(|a| a.starts_with("family=AF_INET ")),
        "{e}"
    );
    api.call_ok("hostile", "whoami", Value::Null).await;

    let detail = api.detail("hostile").await;
    assert_eq!(detail.summary.restarts, 3, "{:?}", detail.summary);
    assert_eq!(detail.summary.calls_failed, 3);
    let last = detail.last_error.expect("the last death");
    assert_eq!(last.code(), "seccomp_violation", "{last:?}");

    let text = api.metrics().await;
    for (series, want) in [
        (
            "corral_child_deaths_total{plugin=\"hostile\",cause=\"crashed\"}",
            1.0,
        ),
        ("corral_oom_kills_total{plugin=\"hostile\"}", 1.0),
        ("corral_seccomp_violations_total{plugin=\"hostile\"}", 1.0),
        (
            "corral_seccomp_kills_total{plugin=\"hostile\",syscall=\"socket\"}",
            1.0,
        ),
        ("corral_restarts_total{plugin=\"hostile\"}", 3.0),
        (
            "corral_calls_total{plugin=\"hostile\",outcome=\"memory_limit_exceeded\"}",
            1.0,
        ),
        ("corral_calls_total{plugin=\"hostile\",outcome=\"ok\"}", 3.0),
    ] {
        assert_eq!(metric(&text, series), want, "{series} in\n{text}");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_is_quarantined_409_until_reload() {
    let setup = Setup::new()
        .package("hostile")
        .with_policy("[restart]\ncrash_loop_failures = 2\ncrash_loop_window = \"60s\"\n");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let mut events = api.events(Some("plugin=hostile")).await;

    let mut crashes = 0;
    let quarantined = loop {
        let response = api.call("hostile", "exit", json!({"code": 1})).await;
        if response.status == 409 {
            break response.error(409, "quarantined");
        }
        response.error(502, "crashed");
        crashes += 1;
        assert!(
            crashes <= 2,
            "still not quarantined after {crashes} crashes"
        );
    };
    assert_eq!(crashes, 2, "the second crash in the window quarantines");
    assert_eq!(quarantined["plugin"], "hostile");
    assert_eq!(quarantined["failures"], 2, "{quarantined}");
    assert_eq!(quarantined["window_ms"], 60_000, "{quarantined}");
    events
        .wait_for("quarantined", EVENT_WAIT, |r| {
            serde_json::to_value(&r.event).is_ok_and(|v| v["type"] == "quarantined")
        })
        .await;
    let detail = api.detail("hostile").await;
    assert_eq!(detail.summary.state, PluginState::Quarantined);
    assert!(detail.processes.is_empty(), "{:?}", detail.processes);
    // It stays down: no restart happens by itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    api.call("hostile", "whoami", Value::Null)
        .await
        .error(409, "quarantined");

    let reloaded: PluginSummary = api.lifecycle("hostile", "reload").await.ok();
    assert_eq!(reloaded.state, PluginState::Ready, "reload lifts it");
    api.call_ok("hostile", "whoami", Value::Null).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbled_frame_is_a_protocol_violation_502() {
    let setup = Setup::new().package("hostile");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let before = api.child_pids("hostile").await;
    let e = api
        .call("hostile", "garbled_frame", json!({"bytes": 64}))
        .await
        .error(502, "protocol_violation");
    assert!(
        e["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "the reason says what was wrong: {e}"
    );
    // The child that broke the protocol is gone; a new one answers.
    eventually("the offending child exits", SETTLE_WAIT, || async {
        (!leaks::is_alive(before[0])).then_some(())
    })
    .await;
    api.call_ok("hostile", "whoami", Value::Null).await;
    assert_ne!(api.child_pids("hostile").await, before);
    let last = api.detail("hostile").await.last_error.expect("recorded");
    assert_eq!(last.code(), "protocol_violation", "{last:?}");
    daemon.stop().await;
    no_cgroups_left(&setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_death_at_the_pids_limit_is_pids_limit_exceeded_502() {
    let setup = Setup::new()
        .package("hostile-exec")
        .with_policy("[plugins.hostile-exec]\ngrant = { exec = true }\n");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    // The bomb is held at the limit (the plugin sees EAGAIN and answers).
    let bomb = api
        .call_ok("hostile-exec", "fork_bomb", json!({"max": 1000}))
        .await;
    assert_eq!(bomb.output["ok"], false, "{}", bomb.output);
    assert_eq!(bomb.output["errno"], libc::EAGAIN, "{}", bomb.output);
    // Its death is then put down to the limit it hit.
    let e = api
        .call("hostile-exec", "exit", json!({"code": 0}))
        .await
        .error(502, "pids_limit_exceeded");
    assert_eq!(e["limit"], 16, "hostile-exec's pids limit: {e}");
    api.call_ok("hostile-exec", "whoami", Value::Null).await;
    let text = api.metrics().await;
    let series = "corral_child_deaths_total{plugin=\"hostile-exec\",cause=\"pids_limit_exceeded\"}";
    assert_eq!(metric(&text, series), 1.0, "{series} in\n{text}");
    daemon.stop().await;
    no_cgroups_left(&setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_never_says_hello_is_start_timeout_504() {
    let setup = Setup::new()
        .package("hostile-silent")
        .with_policy("[timeouts]\nstart = \"1s\"\n");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    // The load at start-up failed and left nothing running.
    let detail = api.detail("hostile-silent").await;
    assert_ne!(detail.summary.state, PluginState::Ready, "{detail:?}");
    assert!(detail.processes.is_empty(), "{:?}", detail.processes);

    let started = std::time::Instant::now();
    let e = api
        .lifecycle("hostile-silent", "load")
        .await
        .error(504, "start_timeout");
    assert_eq!(e["limit_ms"], 1000, "the policy's start timeout: {e}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the load waited {:?}",
        started.elapsed()
    );
    // The silent child was killed with its cgroup, and the plugin is not
    // counted as loaded.
    daemon.assert_no_plugin_processes().await;
    daemon.assert_only_idle_cgroups().await;
    api.call("hostile-silent", "whoami", Value::Null)
        .await
        .error(409, "not_loaded");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confinement_step_that_fails_is_sandbox_setup_failed_502() {
    // A granted directory that is gone when the plugin starts: it cannot
    // be bound into the plugin's root, and the start stops at that step.
    let setup = Setup::new();
    let data = setup.root().join("data");
    std::fs::create_dir_all(&data).expect("mkdir data");
    let dir = setup.package_copy("hello", "reader", "packages");
    let manifest = dir.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).expect("read the manifest");
    std::fs::write(
        &manifest,
        format!(
            "{text}\n[permissions.fs]\nread = [{:?}]\n",
            data.display().to_string()
        ),
    )
    .expect("write the manifest");
    setup.set_policy(&format!(
        "[plugins.reader]\ngrant = {{ fs_read = [{:?}] }}\n",
        data.display().to_string()
    ));
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    api.install_path(&dir, false).await.installed(true);
    std::fs::remove_dir(&data).expect("rmdir data");

    let e = api
        .lifecycle("reader", "load")
        .await
        .error(502, "sandbox_setup_failed");
    assert_eq!(e["step"], "mounts", "the step is named: {e}");
    assert_eq!(e["errno"], libc::ENOENT, "{e}");
    daemon.assert_no_plugin_processes().await;
    daemon.assert_only_idle_cgroups().await;

    // With the directory back, the same load works.
    std::fs::create_dir_all(&data).expect("mkdir data again");
    let loaded: PluginSummary = api.lifecycle("reader", "load").await.ok();
    assert_eq!(loaded.state, PluginState::Ready);
    api.call_ok("reader", "greet", json!({"name": "again"}))
        .await;
    daemon.stop().await;
    no_cgroups_left(&setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_kernel_feature_that_is_missing_is_501() {
    // The daemon is told Landlock is missing; the built-in policy requires it.
    let setup = Setup::new()
        .package("hello")
        .daemon_env("CORRAL_MASK_FEATURES", "landlock");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let health = api.health().await;
    assert_eq!(
        health.landlock_abi, 0,
        "health reports it missing: {health:?}"
    );
    let detail = api.detail("hello").await;
    assert_eq!(detail.summary.state, PluginState::Installed);
    assert!(detail.processes.is_empty());
    let e = api
        .lifecycle("hello", "load")
        .await
        .error(501, "feature_unavailable");
    assert_eq!(e["feature"], "landlock", "{e}");
    api.call("hello", "greet", json!({"name": "x"}))
        .await
        .error(409, "not_loaded");

    // An operator who accepts running without it says so in the policy.
    setup.set_policy("[features]\nlandlock = \"best_effort\"\n");
    let report = api.post("/v1/reload").await.status(200).value();
    assert_eq!(report["policy_changed"], json!(["hello"]), "{report}");
    let loaded: PluginSummary = api.lifecycle("hello", "load").await.ok();
    assert_eq!(loaded.state, PluginState::Ready);
    let policy = api
        .get("/v1/plugins/hello/policy")
        .await
        .status(200)
        .value();
    assert!(
        policy["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w.to_string().contains("landlock"))),
        "the compiled policy warns that Landlock is off: {}",
        policy["warnings"]
    );
    api.call_ok("hello", "greet", json!({"name": "unlocked"}))
        .await;
    daemon.stop().await;
    no_cgroups_left(&setup).await;
}

/// After a clean stop, which already waited for every plugin process to
/// be gone: no cgroup leaf under the daemon's base either.
async fn no_cgroups_left(setup: &Setup) {
    eventually("no cgroup is left", SETTLE_WAIT, || async {
        leaks::cgroup_leaves(&setup.cgroup_base)
            .is_empty()
            .then_some(())
    })
    .await;
}
