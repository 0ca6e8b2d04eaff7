//! What an operator meets (#8 item 7, #7 item 6): a package dropped into
//! a watched folder is loaded; a removal through the API wins over the
//! folder; two daemons never touch each other's cgroups; a stopped daemon
//! leaves no cgroup directory; a broken edit shows where an operator
//! looks; metrics for connections, errors and plugin states; malformed
//! requests answer the JSON error; `corrald --check` says what it read.

use corral_daemon_tests::raw::{self, metric};
use corral_daemon_tests::setup::copy_package;
use corral_daemon_tests::{
    Daemon, EVENT_WAIT, Request, SETTLE_WAIT, Setup, eventually, leaks, test_env,
};
use corral_protocol::api::{Event, PluginState};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_dropped_into_a_watched_folder_is_loaded() {
    let setup = Setup::new();
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    assert!(api.list().await.is_empty());
    // Copied in elsewhere and moved, as an operator's `cp -r; mv` does.
    let staged = setup.package_copy("hello", "dropped", "staging");
    std::fs::rename(&staged, setup.sources().join("dropped")).expect("move into the source");
    eventually("the dropped package loaded", EVENT_WAIT, || async {
        let list = api.list().await;
        list.iter()
            .find(|p| p.name == "dropped" && p.state == PluginState::Ready)
            .map(|_| ())
    })
    .await;
    api.call_ok("dropped", "greet", json!({"name": "drop"}))
        .await;
    daemon
        .wait_log(
            &["new package in a source folder installed and loaded"],
            SETTLE_WAIT,
        )
        .await;
    daemon.stop().await;
    // And after a restart.
    let daemon = Daemon::start(&setup).await;
    assert_eq!(
        daemon.client.detail("dropped").await.summary.state,
        PluginState::Ready
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_through_the_api_wins_over_the_source_folder() {
    let setup = Setup::new().package("hello");
    let daemon = Daemon::start(&setup).await;
    daemon
        .client
        .send(&Request::delete("/v1/plugins/hello"))
        .await
        .status(200);
    daemon.stop().await;
    // Not back after a restart, nor when the folder's copy changes.
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    assert!(api.list().await.is_empty(), "{:?}", api.list().await);
    std::fs::write(setup.sources().join("hello/notes.txt"), "edited").expect("edit");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(api.list().await.is_empty(), "{:?}", api.list().await);
    // An install through the API brings it back, for good.
    api.install_path(&setup.sources().join("hello"), true)
        .await
        .installed(true);
    daemon.stop().await;
    let daemon = Daemon::start(&setup).await;
    assert_eq!(daemon.client.list().await.len(), 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_edit_shows_in_info_events_and_metrics() {
    let setup = Setup::new().package("hello");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let mut events = api.events(Some("plugin=hello")).await;
    std::fs::write(
        setup.sources().join("hello/plugin.toml"),
        "[plugin]\nname = \"hello\"\nversion = \"not semver\"\n",
    )
    .expect("break the manifest");
    let record = events
        .wait_for("reload_failed", EVENT_WAIT, |r| {
            matches!(r.event, Event::ReloadFailed { .. })
        })
        .await;
    let Event::ReloadFailed { code, .. } = &record.event else {
        unreachable!("matched above");
    };
    assert_eq!(code, "invalid_manifest");
    let detail = api.detail("hello").await;
    let last = detail.last_error.expect("a last error");
    assert_eq!(last.code(), "invalid_manifest");
    let text = api.metrics().await;
    assert_eq!(
        metric(&text, "corral_hot_reload_failures_total{plugin=\"hello\"}"),
        1.0,
        "{text}"
    );
    // The running version keeps serving.
    api.call_ok("hello", "greet", json!({"name": "still"}))
        .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_connections_errors_and_plugin_states() {
    let setup = Setup::new().package("hello");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    api.get("/v1/nowhere").await.status(404);
    let text = api.metrics().await;
    assert_eq!(
        metric(
            &text,
            "corral_plugin_state{plugin=\"hello\",state=\"ready\"}"
        ),
        1.0,
        "{text}"
    );
    assert!(
        metric(&text, "corral_http_errors_total{status=\"404\"}") >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "corral_connections_accepted_total") >= 2.0,
        "{text}"
    );
    assert!(metric(&text, "corral_connections_open") >= 1.0, "{text}");
    api.lifecycle("hello", "unload").await.status(200);
    let text = api.metrics().await;
    assert_eq!(
        metric(
            &text,
            "corral_plugin_state{plugin=\"hello\",state=\"installed\"}"
        ),
        1.0,
        "{text}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_and_requests_without_host_answer_the_json_error() {
    let setup = Setup::new();
    let daemon = Daemon::start(&setup).await;
    let socket = setup.socket();
    let no_host = raw::exchange(&socket, b"GET /v1/health HTTP/1.1\r\n\r\n").await;
    assert_eq!(no_host.status, 400, "{no_host:?}");
    assert_eq!(no_host.error_code(), "invalid_input");
    for bad in [
        &b"GET /v1/he alth HTTP/1.1\r\nHost: corral\r\n\r\n"[..],
        &b"GET /v1/health HTTP/1.1\r\nHost corral\r\n\r\n"[..],
    ] {
        let answer = raw::exchange(&socket, bad).await;
        assert_eq!(answer.status, 400, "{answer:?}");
        assert_eq!(answer.error_code(), "invalid_input", "{answer:?}");
        assert!(
            answer.head.contains("content-type: application/json"),
            "{answer:?}"
        );
    }
    let text = daemon.client.metrics().await;
    assert!(
        metric(&text, "corral_http_errors_total{status=\"400\"}") >= 3.0,
        "{text}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_daemon_leaves_no_cgroup_directory() {
    let setup = Setup::new().package("hello");
    let daemon = Daemon::start(&setup).await;
    let base = daemon.cgroup_base.clone();
    assert!(
        !leaks::cgroup_base_dirs(&base).is_empty(),
        "the base exists while it runs"
    );
    daemon.stop().await;
    let left = leaks::cgroup_base_dirs(&base);
    assert!(left.is_empty(), "left after a clean stop: {left:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_never_cleans_up_another_live_daemons_cgroups() {
    let first = Setup::new().package("hello");
    let daemon = Daemon::start(&first).await;
    let pids = daemon.client.child_pids("hello").await;
    // A second daemon configured with the same cgroup base refuses to
    // start, and touches nothing.
    let mut second = Setup::new().package("hello");
    second.cgroup_base = first.cgroup_base.clone();
    let mut intruder = Daemon::spawn(&second);
    let status = intruder.wait_exit(Duration::from_secs(60)).await;
    assert!(!status.success(), "{status}");
    assert!(
        intruder.log().contains("another corrald"),
        "{}",
        intruder.log()
    );
    assert_eq!(daemon.client.child_pids("hello").await, pids);
    daemon
        .client
        .call_ok("hello", "greet", json!({"name": "first"}))
        .await;
    daemon.stop().await;
}

/// A `corrald --dev` with hello, in a directory of its own, with the
/// setup's uids; stopped (SIGTERM) and reaped on drop.
struct DevDaemon {
    child: std::process::Child,
    client: corral_daemon_tests::Client,
}

impl DevDaemon {
    async fn start(setup: &Setup, name: &str) -> DevDaemon {
        let dev_dir = setup.root().join(format!("dev-{name}"));
        std::fs::create_dir_all(dev_dir.join("policy.d")).expect("dev dir");
        std::fs::write(
            dev_dir.join("policy.d/00-uids.toml"),
            format!(
                "[sandbox]\nuid_range = \"{}-{}\"\n",
                setup.uid_first, setup.uid_last
            ),
        )
        .expect("uid drop-in");
        let plugins = setup.root().join(format!("plugins-{name}"));
        copy_package(
            &test_env().package("hello"),
            &plugins.join("hello"),
            "hello",
        );
        let log = std::fs::File::create(setup.root().join(format!("dev-{name}.log"))).expect("log");
        let child = Command::new(test_env().corrald())
            .arg("--dev")
            .arg("--dev-dir")
            .arg(&dev_dir)
            .arg("--plugins")
            .arg(&plugins)
            .env("CORRAL_SANDBOX", &test_env().sandbox)
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("corrald --dev");
        let client = corral_daemon_tests::Client::new(dev_dir.join("corral.sock"));
        eventually("corrald --dev ready", Duration::from_secs(120), || async {
            client
                .try_send(&Request::get("/v1/health"))
                .await
                .ok()
                .filter(|r| r.status == 200)
        })
        .await;
        DevDaemon { child, client }
    }
}

impl Drop for DevDaemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dev_daemons_keep_their_plugins() {
    // Two uid ranges: one setup each.
    let a_setup = Setup::new();
    let b_setup = Setup::new();
    let a = DevDaemon::start(&a_setup, "a").await;
    let pids = a.client.child_pids("hello").await;
    assert!(!pids.is_empty());
    let b = DevDaemon::start(&b_setup, "b").await;
    b.client
        .call_ok("hello", "greet", json!({"name": "b"}))
        .await;
    assert_eq!(
        a.client.child_pids("hello").await,
        pids,
        "the first one's plugin was restarted"
    );
    a.client
        .call_ok("hello", "greet", json!({"name": "a"}))
        .await;
    drop(b);
    a.client
        .call_ok("hello", "greet", json!({"name": "a again"}))
        .await;
    drop(a);
}
