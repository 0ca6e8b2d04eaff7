//! Learning mode in the daemon: an admin swaps a loaded plugin's instances
//! for learning ones, the plugin is marked as learning where an operator
//! looks, what it needed is drafted, and afterwards it runs under its
//! normal policy again. Callers cannot start, read or end a run.

use corral_daemon_tests::peer::{Identity, Peer};
use corral_daemon_tests::{Client, Daemon, Request, Setup, test_env};
use corral_protocol::learn::LearnStatus;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const CALLERS: u32 = 4110;

/// A directory the plugin is not granted, with one file in it.
fn private_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("learn-data");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(dir.join("data.csv"), "a,b\n").expect("a file");
    dir
}

async fn list_dir(api: &Client, dir: &Path) -> Value {
    api.call_ok("hostile", "list_dir", json!({"path": dir}))
        .await
        .output
}

fn policy_show(setup: &Setup) -> String {
    let corral = test_env().corral();
    let out = std::process::Command::new(&corral)
        .arg("--socket")
        .arg(setup.socket())
        .args(["policy", "show", "hostile"])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", corral.display()));
    assert!(
        out.status.success(),
        "corral policy show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_learns_what_a_loaded_plugin_needs_then_it_runs_confined_again() {
    let mut setup = Setup::new().package("hostile");
    setup.socket_mode = "0666".into();
    setup.caller_groups = vec![CALLERS.to_string()];
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let dir = private_dir(setup.root());

    // Under its normal policy the directory is out of reach.
    let before = list_dir(api, &dir).await;
    assert_eq!(before["ok"], false, "confined: {before}");
    let pids_before = api.child_pids("hostile").await;

    // A caller may neither start, read nor end a run.
    let peer = Peer::new(env!("CARGO_BIN_EXE_dt-peer"), setup.root());
    let caller = Identity::user(4011, &[CALLERS]);
    let socket = setup.socket();
    for request in [
        Request::post("/v1/plugins/hostile/learn").json(&json!({"duration_ms": 600000})),
        Request::get("/v1/plugins/hostile/learn"),
        Request::delete("/v1/plugins/hostile/learn"),
    ] {
        peer.request(&caller, &socket, &request)
            .await
            .response
            .error(403, "permission_denied");
    }
    assert!(
        !api.detail("hostile").await.learning,
        "a refused request starts nothing"
    );

    // Bounded durations; unknown keys refused.
    for body in [
        json!({"duration_ms": 0}),
        json!({"duration_ms": 600001}),
        json!({"duration_ms": 1000, "policy": "none"}),
    ] {
        api.post_json("/v1/plugins/hostile/learn", &body)
            .await
            .error(400, "invalid_input");
    }

    let started: LearnStatus = api
        .post_json("/v1/plugins/hostile/learn", &json!({"duration_ms": 600000}))
        .await
        .status(202)
        .parse();
    assert!(started.learning && started.remaining_ms > 0, "{started:?}");
    api.post_json("/v1/plugins/hostile/learn", &json!({"duration_ms": 1000}))
        .await
        .error(400, "invalid_input");
    let detail = api.detail("hostile").await;
    assert!(detail.learning, "the detail marks a learning plugin");
    let shown = policy_show(&setup);
    assert!(
        shown
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("learning: yes")),
        "policy show marks it:\n{shown}"
    );
    let pids_learning = api.child_pids("hostile").await;
    assert_ne!(
        pids_learning, pids_before,
        "new instances under the learning policy"
    );

    // The plugin reaches for the directory while it learns.
    list_dir(api, &dir).await;
    let ended: LearnStatus = api
        .send(&Request::delete("/v1/plugins/hostile/learn"))
        .await
        .ok();
    assert!(!ended.learning);
    let draft = ended.draft.expect("a draft");
    assert!(draft.restored, "{draft:?}");
    // `fs.read = [` then one line per path: exactly the directory, and
    // no other grant.
    let grants: Vec<&str> = draft
        .manifest
        .lines()
        .filter(|l| !l.starts_with('[') && !l.starts_with(']') && !l.starts_with("fs.read"))
        .collect();
    assert_eq!(grants.len(), 1, "one grant:\n{}", draft.manifest);
    assert!(
        draft.manifest.contains("fs.read = [")
            && grants[0]
                .trim_start()
                .starts_with(&format!("\"{}\",", dir.display())),
        "exactly the directory is drafted:\n{}",
        draft.manifest
    );
    assert!(
        draft.manifest.contains('#') && draft.policy.contains("[plugins.hostile]"),
        "lines say why:\n{}\n{}",
        draft.manifest,
        draft.policy
    );
    // The draft stays readable.
    let again: LearnStatus = api.get("/v1/plugins/hostile/learn").await.ok();
    assert_eq!(again.draft.as_ref(), Some(&draft));

    // Normal policy again: new instances, the directory out of reach,
    // nothing marked.
    assert!(!api.detail("hostile").await.learning);
    assert!(
        !policy_show(&setup).contains("learning"),
        "no mark after the run"
    );
    let pids_after = api.child_pids("hostile").await;
    assert!(
        pids_after.iter().all(|p| !pids_learning.contains(p)),
        "the learning instances are gone: {pids_learning:?} -> {pids_after:?}"
    );
    let after = list_dir(api, &dir).await;
    assert_eq!(after["ok"], false, "confined again: {after}");
    api.send(&Request::delete("/v1/plugins/hostile/learn"))
        .await
        .error(400, "invalid_input");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_ends_by_itself_and_an_unloaded_plugin_cannot_learn() {
    let setup = Setup::new()
        .package("hostile")
        .package_as("hostile", "idle");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    api.lifecycle("idle", "unload").await.status(200);
    api.post_json("/v1/plugins/idle/learn", &json!({"duration_ms": 1000}))
        .await
        .error(409, "not_loaded");
    api.post_json("/v1/plugins/nope/learn", &json!({"duration_ms": 1000}))
        .await
        .error(404, "plugin_not_found");

    api.post_json("/v1/plugins/hostile/learn", &json!({"duration_ms": 300}))
        .await
        .status(202);
    let status: LearnStatus = corral_daemon_tests::eventually(
        "the run to end by itself",
        corral_daemon_tests::EVENT_WAIT,
        || async {
            let s: LearnStatus = api.get("/v1/plugins/hostile/learn").await.ok();
            (!s.learning).then_some(s)
        },
    )
    .await;
    assert!(status.draft.is_some_and(|d| d.restored));
    assert!(!api.detail("hostile").await.learning);
    let out = api
        .call_ok("hostile", "list_dir", json!({"path": "/proc/1"}))
        .await;
    assert!(out.output.is_object(), "it serves again: {}", out.output);

    // The CLI starts a run, waits for its end and prints the draft.
    let out = std::process::Command::new(test_env().corral())
        .arg("--socket")
        .arg(setup.socket())
        .args(["learn", "--daemon", "hostile", "--for", "200ms"])
        .output()
        .expect("corral learn runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("[permissions]") && stdout.contains("[plugins.hostile]"),
        "{stdout}"
    );
    assert!(!api.detail("hostile").await.learning);
    daemon.stop().await;
}
