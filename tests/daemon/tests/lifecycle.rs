//! The daemon's own lifecycle: restart with plugins coming back, SIGTERM
//! drain (and a clean stop leaving no cgroup, and a signal right after
//! startup being handled), kill -9 and the cleanup at the next start,
//! SIGHUP and `POST /v1/reload` of the configuration and policy.

use corral_daemon_tests::daemon::EXIT_WAIT;
use corral_daemon_tests::leaks;
use corral_daemon_tests::tarball::package_tar_gz;
use corral_daemon_tests::{Daemon, EVENT_WAIT, SETTLE_WAIT, Setup, eventually};
use corral_protocol::api::{Event, PluginState, PluginSummary, ReloadReport};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

fn by_name(list: Vec<PluginSummary>) -> BTreeMap<String, PluginSummary> {
    list.into_iter().map(|p| (p.name.clone(), p)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabled_plugins_come_back_after_a_restart_and_unloaded_ones_stay_down() {
    let setup = Setup::new().package("hello").package("hostile");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let from_path = setup.package_copy("hello", "hello-path", "paths");
    api.install_path(&from_path, true).await.installed(true);
    let upload = setup.package_copy("hello", "hello-up", "uploads");
    api.install_upload(package_tar_gz(&upload, "hello-up"), true)
        .await
        .installed(true);
    let _: PluginSummary = api.lifecycle("hostile", "unload").await.ok();
    let digests: BTreeMap<String, String> = {
        let mut d = BTreeMap::new();
        for name in ["hello", "hostile", "hello-path", "hello-up"] {
            d.insert(name.to_string(), api.detail(name).await.digest);
        }
        d
    };
    let old_pid = api.child_pids("hello").await;
    daemon.stop().await;

    // The state file was written atomically and names every plugin.
    let state_dir = setup.state_dir();
    let state: Value = serde_json::from_slice(
        &std::fs::read(state_dir.join("state.json")).expect("the state file"),
    )
    .expect("the state file is JSON");
    assert_eq!(state["plugins"]["hostile"]["enabled"], false, "{state}");
    assert_eq!(state["plugins"]["hello-up"]["enabled"], true, "{state}");
    let leftovers: Vec<String> = std::fs::read_dir(&state_dir)
        .expect("list the state dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let list = by_name(api.list().await);
    assert_eq!(
        list.keys().map(String::as_str).collect::<Vec<_>>(),
        ["hello", "hello-path", "hello-up", "hostile"]
    );
    for name in ["hello", "hello-path", "hello-up"] {
        let p = &list[name];
        assert_eq!(p.state, PluginState::Ready, "{name} is back: {p:?}");
        assert!(p.enabled, "{p:?}");
        let out = api.call_ok(name, "greet", json!({"name": name})).await;
        assert_eq!(out.output["greeting"], format!("Hello, {name}!"));
    }
    let hostile = &list["hostile"];
    assert_eq!(
        hostile.state,
        PluginState::Installed,
        "stays unloaded: {hostile:?}"
    );
    assert!(!hostile.enabled);
    api.call("hostile", "whoami", Value::Null)
        .await
        .error(409, "not_loaded");
    for (name, digest) in &digests {
        assert_eq!(
            &api.detail(name).await.digest,
            digest,
            "{name}: same package"
        );
    }
    assert_eq!(api.detail("hello-up").await.source, "upload");
    assert_ne!(api.child_pids("hello").await, old_pid, "new children");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_call_in_flight_then_exits_cleanly() {
    // Several plugins: each child's cleanup at shutdown is its own chance
    // to be cut short.
    let mut setup = Setup::new().package("hello").package("hostile");
    for i in 0..4 {
        setup = setup.package_as("hello", &format!("hello-{i}"));
    }
    let mut daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    let mut pids = Vec::new();
    for plugin in api.list().await {
        pids.extend(api.child_pids(&plugin.name).await);
    }
    assert_eq!(pids.len(), 6);
    assert!(!leaks::cgroup_leaves(&setup.cgroup_base).is_empty());

    let slow = tokio::spawn({
        let api = api.clone();
        async move { api.call("hello", "sleep", json!({"ms": 1000})).await }
    });
    eventually("the slow call is in flight", EVENT_WAIT, || async {
        (api.detail("hello").await.summary.in_flight == 1).then_some(())
    })
    .await;
    daemon.signal(libc::SIGTERM);
    eventually("health says draining", Duration::from_secs(5), || async {
        (api.health().await.status == "draining").then_some(())
    })
    .await;
    // New work is refused while the call in flight finishes.
    api.call("hello", "greet", json!({"name": "late"}))
        .await
        .error(503, "shutting_down");
    api.lifecycle("hostile", "reload")
        .await
        .error(503, "shutting_down");
    api.get("/v1/plugins").await.error(503, "shutting_down");
    assert_eq!(
        api.get("/metrics").await.status,
        200,
        "metrics still answer"
    );

    let slow = slow.await.expect("the slow call's task").status(200);
    let out = slow.value();
    assert_eq!(out["output"]["cancelled"], false, "{out}");
    assert!(out["output"]["slept_ms"].as_u64() >= Some(1000), "{out}");

    let status = daemon.wait_exit(EXIT_WAIT).await;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        daemon.log()
    );
    assert!(!setup.socket().exists(), "the socket is removed");
    for pid in pids {
        assert!(!leaks::is_alive(pid), "child {pid} outlived the daemon");
    }
    daemon.assert_no_plugin_processes().await;
    daemon.assert_no_cgroups().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_removes_every_cgroup() {
    // Idle plugins, stopped at once: whether a child's cgroup is removed
    // before the daemon exits is a race in the daemon, so the test stops
    // several plugins several times to lose it reliably when it is there.
    let mut setup = Setup::new().package("hostile");
    for i in 0..5 {
        setup = setup.package_as("hello", &format!("hello-{i}"));
    }
    for round in 0..3 {
        let mut daemon = Daemon::start(&setup).await;
        assert_eq!(
            leaks::populated_cgroup_leaf_names(&setup.cgroup_base).len(),
            6,
            "round {round}: one leaf per child"
        );
        daemon.signal(libc::SIGTERM);
        let status = daemon.wait_exit(EXIT_WAIT).await;
        assert!(
            status.success(),
            "round {round}: {status}; its log:\n{}",
            daemon.log()
        );
        daemon.assert_no_plugin_processes().await;
        let left = leaks::cgroup_leaves(&setup.cgroup_base);
        assert!(
            left.is_empty(),
            "round {round}: corrald exited 0 but left {} cgroups: {left:#?}\nits log:\n{}",
            left.len(),
            daemon.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_right_after_the_first_answer_is_handled() {
    // Once corrald answers on its socket it is up, for clients and for
    // service managers alike (it reports READY to systemd about then);
    // a SIGTERM from then on must be a clean stop, not a kill.
    let mut setup = Setup::new().package("hostile");
    for i in 0..3 {
        setup = setup.package_as("hello", &format!("hello-{i}"));
    }
    for round in 0..6 {
        let mut daemon = Daemon::spawn(&setup);
        daemon
            .wait_ready(corral_daemon_tests::daemon::READY_WAIT)
            .await;
        daemon.signal(libc::SIGTERM);
        let status = daemon.wait_exit(EXIT_WAIT).await;
        assert!(
            status.success(),
            "round {round}: SIGTERM right after /v1/health answered ended corrald with {status} \
             instead of a clean stop; its log:\n{}",
            daemon.log()
        );
        daemon.assert_no_plugin_processes().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_takes_the_children_along_and_the_next_start_cleans_up() {
    let setup = Setup::new().package("hello").package("hostile");
    let mut daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    let pids: Vec<i32> = [
        api.child_pids("hello").await,
        api.child_pids("hostile").await,
    ]
    .concat();
    let before = leaks::populated_cgroup_leaf_names(&setup.cgroup_base);
    assert_eq!(before.len(), 2, "one leaf per child: {before:?}");
    // Every leaf, the empty ones the daemon keeps ready included.
    let all_before = leaks::cgroup_leaf_names(&setup.cgroup_base);

    daemon.kill9().await;
    eventually("the children die with the daemon", SETTLE_WAIT, || async {
        pids.iter().all(|p| !leaks::is_alive(*p)).then_some(())
    })
    .await;
    daemon.assert_no_plugin_processes().await;
    assert_eq!(
        leaks::cgroup_leaf_names(&setup.cgroup_base),
        all_before,
        "nobody removed the cgroups of a killed daemon"
    );
    assert!(
        setup.socket().exists(),
        "the stale socket file is still there"
    );
    let old_pid = daemon.pid;
    drop(daemon);

    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    daemon
        .wait_log(&["removed cgroups left by an earlier run"], SETTLE_WAIT)
        .await;
    let after = leaks::populated_cgroup_leaf_names(&setup.cgroup_base);
    let all_after = leaks::cgroup_leaf_names(&setup.cgroup_base);
    for stale in &all_before {
        assert!(
            !all_after.contains(stale),
            "stale cgroup {stale} survived the start"
        );
    }
    assert_eq!(after.len(), 2, "only the new children's leaves: {after:?}");
    for leaf in &after {
        assert!(
            !leaf.contains(&format!(".{old_pid}.")),
            "{leaf} belongs to the killed daemon"
        );
    }
    api.call_ok("hello", "greet", json!({"name": "again"}))
        .await;
    api.call_ok("hostile", "whoami", Value::Null).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_replaces_only_the_plugin_whose_policy_changed() {
    let setup = Setup::new()
        .package_as("hello", "hello-a")
        .package_as("hello", "hello-b");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let a_before = api.child_pids("hello-a").await;
    let b_before = api.child_pids("hello-b").await;
    let mut events = api.events(None).await;

    // A policy that no longer loads changes nothing.
    setup.set_policy("[no_such_table]\nx = 1\n");
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_log(&["the reload failed", "no_such_table"], SETTLE_WAIT)
        .await;
    assert_eq!(api.child_pids("hello-a").await, a_before);
    assert_eq!(api.child_pids("hello-b").await, b_before);

    setup.set_policy("[plugins.hello-a]\nlimits = { memory = \"16MiB\" }\n");
    daemon.signal(libc::SIGHUP);
    let changed = events
        .wait_for("policy_changed", EVENT_WAIT, |r| {
            matches!(r.event, Event::PolicyChanged { .. })
        })
        .await;
    assert_eq!(changed.event.plugin(), "hello-a");
    daemon
        .wait_log(&["configuration and policy reloaded"], SETTLE_WAIT)
        .await;
    let a = api.detail("hello-a").await;
    let a_policy = a.policy.as_ref().expect("hello-a's policy");
    assert_eq!(
        a_policy.resources.memory_max,
        Some(16 << 20),
        "clamped to the new cap"
    );
    let a_after: Vec<i32> = a.processes.iter().map(|c| c.pid).collect();
    assert_eq!(a_after.len(), 1);
    assert_ne!(
        a_after, a_before,
        "hello-a runs under its new policy in a new child"
    );
    let b = api.detail("hello-b").await;
    assert_eq!(
        b.policy.as_ref().and_then(|p| p.resources.memory_max),
        Some(32 << 20)
    );
    assert_eq!(
        b.processes.iter().map(|c| c.pid).collect::<Vec<_>>(),
        b_before,
        "hello-b's policy did not change, so its child keeps running"
    );
    while events.next(Duration::from_millis(300)).await.is_some() {}
    assert!(
        !events.seen.iter().any(|r| matches!(&r.event,
            Event::PolicyChanged { plugin } if plugin == "hello-b")),
        "{:#?}",
        events.seen
    );
    eventually("the replaced child exits", SETTLE_WAIT, || async {
        (!leaks::is_alive(a_before[0])).then_some(())
    })
    .await;
    api.call_ok("hello-a", "greet", json!({"name": "a"})).await;
    api.call_ok("hello-b", "greet", json!({"name": "b"})).await;
    let limits = api.call_ok("hello-a", "limits", Value::Null).await;
    assert_eq!(
        limits.output["limits"]["memory_bytes"],
        16u64 << 20,
        "the child itself is told its new limit: {}",
        limits.output
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_reports_bad_files_and_what_changed() {
    let setup = Setup::new()
        .package_as("hello", "hello-a")
        .package_as("hello", "hello-b");
    // hello-b reads a directory the policy grants it.
    let data = setup.root().join("data");
    std::fs::create_dir_all(&data).expect("mkdir data");
    let manifest = setup.sources().join("hello-b/plugin.toml");
    let text = std::fs::read_to_string(&manifest).expect("read the manifest");
    let text = format!(
        "{text}\n[permissions.fs]\nread = [{:?}]\n",
        data.display().to_string()
    );
    std::fs::write(&manifest, text).expect("write the manifest");
    let grant_b = format!(
        "[plugins.hello-b]\ngrant = {{ fs_read = [{:?}] }}\n",
        data.display().to_string()
    );
    let limit_a = "[plugins.hello-a]\nlimits = { memory = \"16MiB\" }\n";
    setup.set_policy(&grant_b);
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let a_before = api.child_pids("hello-a").await;
    let b_before = api.child_pids("hello-b").await;

    // Nothing changed on disk: nothing changes.
    let report: ReloadReport = api.post("/v1/reload").await.ok();
    assert_eq!(report, ReloadReport::default());

    // A drop-in with an unknown key: invalid_policy naming it, nothing
    // applied.
    let dropin = setup.root().join("policy.d/50-typo.toml");
    std::fs::write(&dropin, "[defaults]\nmemmory = \"1GiB\"\n").expect("write the drop-in");
    let e = api.post("/v1/reload").await.error(400, "invalid_policy");
    assert!(
        e["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("50-typo.toml")),
        "the error names the file: {e}"
    );
    assert!(
        e["key"].as_str().is_some_and(|k| k.contains("memmory")),
        "the error names the key: {e}"
    );
    std::fs::remove_file(&dropin).expect("remove the drop-in");

    // A configuration file that does not parse: invalid_config, and the
    // policy change written beside it is not applied either.
    setup.set_policy(&format!("{grant_b}{limit_a}"));
    let config = std::fs::read_to_string(setup.config_path()).expect("read corrald.toml");
    std::fs::write(
        setup.config_path(),
        format!("socket_colour = \"blue\"\n{config}"),
    )
    .expect("write corrald.toml");
    let e = api.post("/v1/reload").await.error(400, "invalid_config");
    assert!(
        e["key"]
            .as_str()
            .is_some_and(|k| k.contains("socket_colour")),
        "{e}"
    );
    let a = api.detail("hello-a").await;
    assert_eq!(
        a.policy.as_ref().and_then(|p| p.resources.memory_max),
        Some(32 << 20),
        "the policy was not applied"
    );
    assert_eq!(api.child_pids("hello-a").await, a_before);

    // Both files good: hello-a gets its new policy, hello-b is untouched,
    // and a setting that needs a restart is named.
    let moved = config.replace(
        &format!("cgroup_base = {:?}", setup.cgroup_base),
        &format!("cgroup_base = \"{}-moved\"", setup.cgroup_base),
    );
    assert_ne!(moved, config, "corrald.toml sets cgroup_base");
    std::fs::write(setup.config_path(), moved).expect("write corrald.toml");
    let report: ReloadReport = api.post("/v1/reload").await.ok();
    assert_eq!(report.policy_changed, ["hello-a"]);
    assert!(
        report.unloaded.is_empty() && report.not_swapped.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.restart_needed, ["cgroup_base"]);
    assert_ne!(api.child_pids("hello-a").await, a_before);
    assert_eq!(api.child_pids("hello-b").await, b_before);

    // A policy that no longer grants what a loaded plugin asks unloads
    // it, saying why.
    setup.set_policy(limit_a);
    let report = api.post("/v1/reload").await.status(200).value();
    let unloaded = &report["unloaded"];
    assert_eq!(unloaded[0]["plugin"], "hello-b", "{report}");
    assert_eq!(
        unloaded[0]["error"]["code"], "permission_denied",
        "the reason is a typed error: {report}"
    );
    assert_eq!(report["policy_changed"], json!(["hello-b"]), "{report}");
    api.call("hello-b", "greet", json!({"name": "b"}))
        .await
        .error(409, "not_loaded");
    api.call_ok("hello-a", "greet", json!({"name": "a"})).await;
    daemon.stop().await;
}
