//! The API's happy paths over a real socket: health, list, info, call,
//! policy, metrics, load/unload/reload, install (path and upload), remove,
//! and the event stream.

use corral_daemon_tests::leaks;
use corral_daemon_tests::tarball::package_tar_gz;
use corral_daemon_tests::{Daemon, EVENT_WAIT, SETTLE_WAIT, Setup, eventually};
use corral_protocol::api::{
    CallResponse, Event, EventRecord, PluginState, PluginSummary, RemoveResponse,
};
use corral_protocol::policy::SandboxPolicy;
use serde_json::json;
use std::time::Duration;

fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_list_info_call_policy_and_metrics() {
    let setup = Setup::new().package("hello").package("hostile");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;

    let health = api.health().await;
    assert_eq!(health.status, "ok");
    assert!(!health.version.is_empty());
    assert_eq!(health.plugins_installed, 2, "{health:?}");
    assert_eq!(health.plugins_loaded, 2, "{health:?}");
    assert_eq!(health.children_alive, 2, "{health:?}");
    assert_eq!(health.cgroup, "v1", "this machine has cgroup v1");
    assert!(health.landlock_abi > 0, "{health:?}");

    let list = api.list().await;
    let names: Vec<&str> = list.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["hello", "hostile"], "sorted by name");
    for p in &list {
        assert_eq!(p.state, PluginState::Ready, "{p:?}");
        assert!(p.enabled, "{p:?}");
        assert_eq!((p.instances, p.children), (1, 1), "{p:?}");
        assert_eq!(p.version, "0.1.0");
    }
    assert!(list[0].description.starts_with("Greets"), "{:?}", list[0]);

    let detail = api.detail("hello").await;
    assert_eq!(detail.summary.name, "hello");
    assert_eq!(detail.manifest.name(), "hello");
    assert!(detail.source.starts_with("source:"), "{}", detail.source);
    assert_eq!(detail.digest.len(), 64, "sha256 hex: {}", detail.digest);
    assert!(detail.digest.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(detail.policy_error.is_none(), "{:?}", detail.policy_error);
    let policy = detail.policy.as_ref().expect("the compiled policy");
    assert_eq!(policy.plugin, "hello");
    assert_eq!(
        policy.resources.memory_max,
        Some(32 << 20),
        "hello asks 32MiB"
    );
    assert_eq!(detail.processes.len(), 1, "{:?}", detail.processes);
    let child = &detail.processes[0];
    assert!(
        leaks::is_alive(child.pid),
        "child pid {} is not running",
        child.pid
    );
    assert!(
        (setup.uid_first..=setup.uid_last).contains(&child.uid),
        "the child's uid {} is outside this daemon's range",
        child.uid
    );
    let proc_uid = leaks::processes()
        .into_iter()
        .find(|p| p.pid == child.pid)
        .and_then(|p| p.uid);
    assert_eq!(proc_uid, Some(child.uid), "the kernel agrees on the uid");
    assert!(child.memory_bytes > 0, "{child:?}");

    let greeting = api
        .call_ok("hello", "greet", json!({"name": "world"}))
        .await;
    assert_eq!(greeting.output, json!({"greeting": "Hello, world!"}));
    assert_eq!(greeting.output_encoding, None);
    assert!(greeting.usage.wall_ms > 0.0, "{:?}", greeting.usage);
    assert!(greeting.usage.peak_memory_bytes > 0, "{:?}", greeting.usage);
    let payload = json!({"nested": [1, 2, {"three": "3"}], "text": "é\u{1F600}"});
    let echoed = api.call_ok("hello", "echo", payload.clone()).await;
    assert_eq!(echoed.output, payload, "echo returns its input");
    let raw = api.call("hello", "echo", json!("plain")).await;
    let raw: CallResponse = raw.ok();
    assert_eq!(raw.output, json!("plain"));

    let summary: PluginSummary = api.get("/v1/plugins/hello").await.ok();
    assert_eq!(
        (summary.calls_ok, summary.calls_failed),
        (3, 0),
        "{summary:?}"
    );

    let compiled: SandboxPolicy = api.get("/v1/plugins/hello/policy").await.ok();
    assert_eq!(compiled.plugin, "hello");
    assert_eq!(
        Some(&compiled),
        detail.policy.as_ref(),
        "info and policy agree"
    );
    let memory_rule = compiled
        .provenance
        .iter()
        .find(|p| p.rule == "limits.memory")
        .expect("a provenance line for limits.memory");
    assert!(
        memory_rule.source.contains("plugin.toml"),
        "hello's memory limit comes from its manifest: {memory_rule:?}"
    );

    let metrics = api.get("/metrics").await.status(200);
    let content_type = metrics.content_type.clone().unwrap_or_default();
    let text = metrics.text();
    // Prometheus text 0.0.4 or OpenMetrics text, declared as what it is.
    if content_type.starts_with("application/openmetrics-text") {
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics ends with # EOF:\n{text}"
        );
    } else {
        assert!(
            content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
            "{content_type}"
        );
        assert!(
            !text.contains("# EOF"),
            "# EOF is OpenMetrics, not 0.0.4:\n{text}"
        );
    }
    for (series, want) in [
        ("corral_calls_total{plugin=\"hello\",outcome=\"ok\"}", 3.0),
        ("corral_call_duration_seconds_count{plugin=\"hello\"}", 3.0),
        ("corral_children_alive{plugin=\"hello\"}", 1.0),
        ("corral_children_alive{plugin=\"hostile\"}", 1.0),
        ("corral_plugins_loaded", 2.0),
    ] {
        assert_eq!(
            metric_value(&text, series),
            Some(want),
            "{series} in\n{text}"
        );
    }
    let memory = metric_value(&text, "corral_plugin_memory_bytes{plugin=\"hello\"}")
        .expect("memory of hello");
    assert!(memory > 0.0, "{text}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_load_and_reload_change_state_and_children() {
    let setup = Setup::new().package("hello");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let first = api.child_pids("hello").await;
    assert_eq!(first.len(), 1);

    let unloaded: PluginSummary = api.lifecycle("hello", "unload").await.ok();
    assert_eq!(unloaded.state, PluginState::Installed, "{unloaded:?}");
    assert!(!unloaded.enabled, "unload disables: {unloaded:?}");
    assert_eq!(unloaded.children, 0);
    eventually("the unloaded child exits", SETTLE_WAIT, || async {
        (!leaks::is_alive(first[0])).then_some(())
    })
    .await;
    eventually("the unloaded child's cgroup goes", SETTLE_WAIT, || async {
        leaks::populated_cgroup_leaves(&setup.cgroup_base)
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(api.health().await.plugins_loaded, 0);

    let loaded: PluginSummary = api.lifecycle("hello", "load").await.ok();
    assert_eq!(loaded.state, PluginState::Ready, "{loaded:?}");
    assert!(loaded.enabled);
    assert_eq!(loaded.children, 1);
    let second = api.child_pids("hello").await;
    assert_ne!(second, first, "a load starts a new child");
    api.call_ok("hello", "greet", json!({"name": "again"}))
        .await;

    let reloaded: PluginSummary = api.lifecycle("hello", "reload").await.ok();
    assert_eq!(reloaded.state, PluginState::Ready, "{reloaded:?}");
    let third = api.child_pids("hello").await;
    assert_eq!(third.len(), 1);
    assert_ne!(third, second, "a reload replaces the child");
    eventually("the replaced child exits", SETTLE_WAIT, || async {
        (!leaks::is_alive(second[0])).then_some(())
    })
    .await;
    let out = api
        .call_ok("hello", "greet", json!({"name": "reloaded"}))
        .await;
    assert_eq!(out.output, json!({"greeting": "Hello, reloaded!"}));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_from_a_path_and_by_upload_then_remove() {
    let setup = Setup::new();
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    assert!(api.list().await.is_empty());

    // From a path, not loaded; the same package again is unchanged.
    let dir = setup.package_copy("hello", "hello-path", "elsewhere");
    let first = api.install_path(&dir, false).await.installed(true);
    assert_eq!(first.plugin, "hello-path");
    assert_eq!(first.version, "0.1.0");
    assert_eq!(first.state, PluginState::Installed);
    let again = api.install_path(&dir, false).await.installed(false);
    assert_eq!(again.digest, first.digest);
    let detail = api.detail("hello-path").await;
    assert_eq!(detail.digest, first.digest);
    assert!(detail.source.starts_with("path:"), "{}", detail.source);
    assert!(detail.processes.is_empty());
    // Unchanged, but asked to load: it loads.
    let loading = api.install_path(&dir, true).await.installed(false);
    assert_eq!(loading.state, PluginState::Ready);
    api.call_ok("hello-path", "greet", json!({"name": "path"}))
        .await;

    // By upload, loaded at once.
    let upload_dir = setup.package_copy("hello", "hello-up", "upload");
    let archive = package_tar_gz(&upload_dir, "hello-up");
    let uploaded = api
        .install_upload(archive.clone(), true)
        .await
        .installed(true);
    assert_eq!(uploaded.plugin, "hello-up");
    assert_eq!(uploaded.state, PluginState::Ready);
    assert_ne!(
        uploaded.digest, first.digest,
        "another name, other contents"
    );
    let out = api
        .call_ok("hello-up", "greet", json!({"name": "upload"}))
        .await;
    assert_eq!(out.output, json!({"greeting": "Hello, upload!"}));
    assert_eq!(api.detail("hello-up").await.source, "upload");
    let same = api.install_upload(archive, false).await.installed(false);
    assert_eq!(same.digest, uploaded.digest);
    let pids = api.child_pids("hello-up").await;

    let removed: RemoveResponse = api
        .send(&corral_daemon_tests::Request::delete(
            "/v1/plugins/hello-up",
        ))
        .await
        .ok();
    assert_eq!(removed.removed, "hello-up");
    api.get("/v1/plugins/hello-up")
        .await
        .error(404, "plugin_not_found");
    eventually("the removed plugin's child exits", SETTLE_WAIT, || async {
        (!leaks::is_alive(pids[0])).then_some(())
    })
    .await;
    let names: Vec<String> = api.list().await.into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["hello-path"]);
    daemon.stop().await;
}

fn is(record: &EventRecord, plugin: &str, kind: &str) -> bool {
    let value = serde_json::to_value(&record.event).expect("events serialise");
    record.event.plugin() == plugin && value["type"] == kind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_lifecycle_in_order() {
    let setup = Setup::new().package("hello");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let hostile = setup.package_copy("hostile", "hostile", "elsewhere");
    api.install_path(&hostile, false).await.installed(true);

    let mut all = api.events(None).await;
    let mut only_hello = api.events(Some("plugin=hello")).await;

    // A load: the plugin is loaded, then its child is ready.
    let _: PluginSummary = api.lifecycle("hostile", "load").await.ok();
    let pid = api.child_pids("hostile").await[0];
    let loaded = all
        .find("hostile loaded", EVENT_WAIT, |r| is(r, "hostile", "loaded"))
        .await;
    let ready = all
        .find("hostile ready", EVENT_WAIT, |r| is(r, "hostile", "ready"))
        .await;
    // A call failure on another plugin.
    api.call("hello", "fail", json!(null))
        .await
        .error(422, "plugin_error");
    let failed = all
        .wait_for("hello call_failed", EVENT_WAIT, |r| {
            is(r, "hello", "call_failed")
        })
        .await;
    match &failed.event {
        Event::CallFailed { method, code, .. } => {
            assert_eq!((method.as_str(), code.as_str()), ("fail", "plugin_error"))
        }
        other => panic!("{other:?}"),
    }
    // A crash: the death, then a restart, then a new child ready.
    api.call("hostile", "exit", json!({"code": 7}))
        .await
        .error(502, "crashed");
    let crashed = all
        .wait_for("hostile crashed", EVENT_WAIT, |r| {
            is(r, "hostile", "crashed")
        })
        .await;
    match &crashed.event {
        Event::Crashed { code, .. } => assert_eq!(code, "crashed"),
        other => panic!("{other:?}"),
    }
    let restarted = all
        .wait_for("hostile restarted", EVENT_WAIT, |r| {
            is(r, "hostile", "restarted")
        })
        .await;
    let ready_again = all
        .wait_for("hostile ready again", EVENT_WAIT, |r| {
            is(r, "hostile", "ready")
        })
        .await;
    match &ready_again.event {
        Event::Ready { pid: new_pid, .. } => assert_ne!(*new_pid, pid, "a new child"),
        other => panic!("{other:?}"),
    }
    let _: PluginSummary = api.lifecycle("hostile", "unload").await.ok();
    let unloaded = all
        .wait_for("hostile unloaded", EVENT_WAIT, |r| {
            is(r, "hostile", "unloaded")
        })
        .await;

    // Every record came in sequence order; the call failure of the crash
    // was reported too.
    let seqs: Vec<u64> = all.seen.iter().map(|r| r.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers increase: {seqs:?}"
    );
    assert!(
        all.seen.iter().any(|r| matches!(&r.event,
            Event::CallFailed { plugin, method, code, .. }
                if plugin == "hostile" && method == "exit" && code == "crashed")),
        "the crashed call is a call_failed event too: {:#?}",
        all.seen
    );
    assert!(crashed.seq < restarted.seq && restarted.seq < ready_again.seq);
    assert!(ready_again.seq < unloaded.seq);
    // The documented order of a load: `loaded` (policy compiled, children
    // starting), then `ready` for each child.
    assert!(
        loaded.seq < ready.seq,
        "`loaded` must come before the child's `ready`: {:#?}",
        all.seen
    );

    // The filtered stream saw hello's failure and nothing of hostile's.
    let seen = only_hello
        .wait_for("hello call_failed (filtered)", EVENT_WAIT, |r| {
            is(r, "hello", "call_failed")
        })
        .await;
    assert_eq!(seen.seq, failed.seq);
    while let Some(r) = only_hello.next(Duration::from_millis(200)).await {
        assert_eq!(r.event.plugin(), "hello", "filtered stream: {r:?}");
    }
    drop(all);
    drop(only_hello);
    daemon.stop().await;
}
