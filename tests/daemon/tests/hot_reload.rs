//! Hot reload under load: clients call a plugin without pause while its
//! package in the watched source folder is replaced (a new version
//! swapped in atomically, then an in-place edit). No call may fail, and
//! each change must reach a new child.

use corral_daemon_tests::setup::{copy_tree, set_manifest_key};
use corral_daemon_tests::{Client, Daemon, Request, Setup, eventually};
use corral_protocol::api::{CallResponse, PluginDetail};
use serde_json::json;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How long a change in the source folder gets to be picked up (the
/// daemon waits for it to be quiet for 400 ms, then starts a child).
const PICKUP_WAIT: Duration = Duration::from_secs(20);
const CLIENTS: usize = 4;

/// Swaps two directory entries atomically (renameat2 RENAME_EXCHANGE):
/// the package path never stops existing, and never holds half a package.
fn exchange(a: &Path, b: &Path) {
    let ca = CString::new(a.as_os_str().as_bytes()).expect("no NUL in the path");
    let cb = CString::new(b.as_os_str().as_bytes()).expect("no NUL in the path");
    // SAFETY: both strings are valid and NUL-terminated for the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(
        r,
        0,
        "renameat2({}, {}, RENAME_EXCHANGE): {}",
        a.display(),
        b.display(),
        std::io::Error::last_os_error()
    );
}

struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(api: &Client) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let tasks = (0..CLIENTS)
            .map(|client| {
                let (api, stop, ok) = (api.clone(), stop.clone(), ok.clone());
                tokio::spawn(async move {
                    let mut failures = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let name = format!("c{client}-{i}");
                        let request = Request::post("/v1/plugins/hello/call")
                            .json(&json!({"method": "greet", "input": {"name": name}}));
                        match api.try_send(&request).await {
                            Ok(r) if r.status == 200 => {
                                let out: CallResponse = r.parse();
                                if out.output["greeting"] == format!("Hello, {name}!") {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    failures.push(format!("{name}: wrong output {}", out.output));
                                }
                            }
                            Ok(r) => failures.push(format!("{name}: {} {}", r.status, r.text())),
                            Err(e) => failures.push(format!("{name}: {e}")),
                        }
                        i += 1;
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, tasks }
    }

    fn calls_ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for task in self.tasks {
            failures.extend(task.await.expect("a client task"));
        }
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

async fn wait_for_change(api: &Client, before: &PluginDetail, what: &str) -> PluginDetail {
    let old_pid = before.processes[0].pid;
    eventually(what, PICKUP_WAIT, || async {
        let now = api.detail("hello").await;
        (now.digest != before.digest && now.processes.len() == 1 && now.processes[0].pid != old_pid)
            .then_some(now)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_package_is_swapped_in_without_failing_a_call() {
    let setup = Setup::new().package("hello");
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    let package = setup.sources().join("hello");
    let original = api.detail("hello").await;
    assert_eq!(original.summary.version, "0.1.0");

    let load = Load::start(&api);
    eventually("calls are flowing", PICKUP_WAIT, || async {
        (load.calls_ok() >= 20).then_some(())
    })
    .await;

    // A new version, prepared next to the source folder and swapped in.
    let staging = setup.root().join("staging-hello");
    copy_tree(&package, &staging);
    set_manifest_key(&staging.join("plugin.toml"), "version", "0.2.0");
    set_manifest_key(
        &staging.join("plugin.toml"),
        "description",
        "the second version, swapped in by rename",
    );
    let before_swap = load.calls_ok();
    exchange(&staging, &package);
    std::fs::remove_dir_all(&staging).expect("remove the old version");
    let swapped = wait_for_change(&api, &original, "the new version is swapped in").await;
    assert_eq!(swapped.summary.version, "0.2.0");
    assert_eq!(
        swapped.summary.description,
        "the second version, swapped in by rename"
    );
    assert!(
        swapped.source.starts_with("source:"),
        "still from the source folder: {}",
        swapped.source
    );
    let during_first = load.calls_ok() - before_swap;

    // An in-place edit of the manifest in the (new) package directory.
    let before_edit = load.calls_ok();
    set_manifest_key(
        &package.join("plugin.toml"),
        "description",
        "edited in place",
    );
    let edited = wait_for_change(&api, &swapped, "the edited package is swapped in").await;
    assert_eq!(edited.summary.description, "edited in place");
    assert_eq!(edited.summary.version, "0.2.0");
    let during_second = load.calls_ok() - before_edit;

    // A little more load on the final version, then stop.
    let settled = load.calls_ok();
    eventually("calls reach the final version", PICKUP_WAIT, || async {
        (load.calls_ok() >= settled + 20).then_some(())
    })
    .await;
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} calls failed during hot reloads: {failures:#?}",
        failures.len(),
        ok + failures.len() as u64
    );
    assert!(
        during_first > 0 && during_second > 0,
        "calls kept flowing during both swaps ({during_first}, {during_second})"
    );
    eprintln!(
        "{ok} calls, none failed; {during_first} during the rename swap, {during_second} during the in-place edit"
    );
    let old_pids = [original.processes[0].pid, swapped.processes[0].pid];
    eventually("the replaced children exit", PICKUP_WAIT, || async {
        old_pids
            .iter()
            .all(|p| !corral_daemon_tests::leaks::is_alive(*p))
            .then_some(())
    })
    .await;
    assert_eq!(api.list().await.len(), 1, "still one plugin");
    daemon.stop().await;
}
