//! The runtime's happy paths and the CLI a user meets first: `corral run`,
//! `corral check`, `corral policy show`, exit codes and JSON shapes; many
//! calls in flight on one child; cancellation; kernel features marked
//! `required` or `best_effort`; and a check that the leak check itself
//! sees what it must.

use corral_protocol::api::Event;
use corral_protocol::error::ErrorKind;
use corral_tests::cli::{CliOutput, corral};
use corral_tests::leaks::{Baseline, Leaks};
use corral_tests::{Harness, call, package_dir, run, wait_for_event};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// Exit codes of `corral` (cli/src/exit.rs).
const EXIT_OK: i32 = 0;
const EXIT_PLUGIN_ERROR: i32 = 1;
const EXIT_INVALID: i32 = 4;
const EXIT_DENIED: i32 = 5;

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A `corral run` left none of its cgroups behind.
#[track_caller]
fn assert_run_cleaned_up(out: &CliOutput) {
    assert_eq!(
        out.take_leftover_cgroups(),
        Vec::<std::path::PathBuf>::new(),
        "`corral {}` left cgroups behind",
        out.args.join(" ")
    );
}

#[test]
fn corral_run_prints_the_output_and_usage_as_json() {
    run(async {
        let hello = package_dir("hello");
        let out = corral(
            &[
                "run",
                path_str(&hello),
                "-m",
                "greet",
                "-i",
                r#"{"name":"x"}"#,
                "--json",
            ],
            &[],
        );
        out.assert_code(EXIT_OK);
        let json = out.json();
        assert_eq!(json["output"], json!({"greeting": "Hello, x!"}), "{json}");
        let usage = json["usage"].as_object().expect("usage is an object");
        let mut keys: Vec<&str> = usage.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["cpu_ms", "peak_memory_bytes", "wall_ms"], "{json}");
        assert!(usage["wall_ms"].as_f64().is_some_and(|v| v > 0.0), "{json}");
        assert!(usage["cpu_ms"].as_f64().is_some_and(|v| v >= 0.0), "{json}");
        // Peak memory of the plugin's cgroup: something, and below its limit.
        assert!(
            usage["peak_memory_bytes"]
                .as_u64()
                .is_some_and(|v| v > 0 && v <= 32 << 20),
            "{json}"
        );
        assert_run_cleaned_up(&out);

        // Without --json: the output itself, readable.
        let out = corral(
            &[
                "run",
                path_str(&hello),
                "-m",
                "greet",
                "-i",
                r#"{"name":"y"}"#,
            ],
            &[],
        );
        out.assert_code(EXIT_OK);
        assert_eq!(out.json(), json!({"greeting": "Hello, y!"}));
        assert_run_cleaned_up(&out);
    });
}

#[test]
fn corral_run_reports_failures_as_error_json_and_exit_1() {
    run(async {
        let hello = package_dir("hello");
        let out = corral(&["run", path_str(&hello), "-m", "fail", "--json"], &[]);
        out.assert_code(EXIT_PLUGIN_ERROR);
        let error = &out.json()["error"];
        assert_eq!(error["code"], "plugin_error", "{error}");
        assert_eq!(error["plugin_code"], "requested_failure", "{error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_run_cleaned_up(&out);

        // A sandbox verdict is an error of the same shape.
        let hostile = package_dir("hostile");
        let out = corral(
            &[
                "run",
                path_str(&hostile),
                "-m",
                "socket",
                "-i",
                r#"{"domain":"inet"}"#,
                "--json",
            ],
            &[],
        );
        out.assert_code(EXIT_PLUGIN_ERROR);
        assert_eq!(out.json()["error"]["code"], "seccomp_violation");
        assert_run_cleaned_up(&out);
    });
}

/// A package folder under /var/tmp (plugins cannot see /tmp's contents,
/// and need every directory open to their uid): hello's binary with the
/// given manifest.
fn package_with_manifest(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("corral-runtime-")
        .tempdir_in("/var/tmp")
        .expect("a directory in /var/tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::create_dir(dir.path().join("bin")).expect("mkdir bin");
    std::fs::copy(
        package_dir("hello").join("bin/hello"),
        dir.path().join("bin/hello"),
    )
    .expect("copy the hello binary");
    std::fs::write(dir.path().join("plugin.toml"), manifest).expect("write plugin.toml");
    dir
}

const HELLO_MANIFEST: &str = r#"[plugin]
name = "hello"
version = "0.1.0"
entry = "bin/hello"
"#;

#[test]
fn corral_run_rejects_a_bad_manifest_naming_file_key_and_reason() {
    run(async {
        let cases = [
            (
                "[limits]\nmemroy = \"32MiB\"\n",
                "limits.memroy",
                "unknown field",
            ),
            ("[limits]\nmemory = \"lots\"\n", "limits.memory", "lots"),
        ];
        for (extra, key, reason) in cases {
            let package = package_with_manifest(&format!("{HELLO_MANIFEST}{extra}"));
            let manifest = package.path().join("plugin.toml");
            let out = corral(
                &["run", path_str(package.path()), "-m", "greet", "--json"],
                &[],
            );
            out.assert_code(EXIT_INVALID);
            let error = &out.json()["error"];
            assert_eq!(error["code"], "invalid_manifest", "{error}");
            assert_eq!(error["file"], path_str(&manifest), "{error}");
            assert_eq!(error["key"], key, "{error}");
            assert!(
                error["reason"].as_str().is_some_and(|r| r.contains(reason)),
                "{error}"
            );
            // And for people: the same three on stderr.
            let out = corral(&["run", path_str(package.path()), "-m", "greet"], &[]);
            out.assert_code(EXIT_INVALID);
            assert!(
                out.stderr.contains(path_str(&manifest)) && out.stderr.contains(key),
                "{}",
                out.stderr
            );
        }
        // The same package with a good manifest runs: the binary was fine.
        let package = package_with_manifest(HELLO_MANIFEST);
        let out = corral(
            &[
                "run",
                path_str(package.path()),
                "-m",
                "greet",
                "-i",
                r#"{"name":"z"}"#,
                "--json",
            ],
            &[],
        );
        out.assert_code(EXIT_OK);
        assert_eq!(out.json()["output"], json!({"greeting": "Hello, z!"}));
        assert_run_cleaned_up(&out);
    });
}

#[test]
fn corral_policy_show_names_the_source_of_every_rule() {
    run(async {
        let hello = package_dir("hello");
        let manifest = hello.join("plugin.toml");
        let out = corral(&["policy", "show", path_str(&hello)], &[]);
        out.assert_code(EXIT_OK);
        let line = |rule: &str| -> String {
            out.stdout
                .lines()
                .find(|l| l.starts_with(rule))
                .unwrap_or_else(|| panic!("no `{rule}` line in:\n{}", out.stdout))
                .to_string()
        };
        assert!(line("RULE").contains("SOURCE"), "{}", out.stdout);
        let memory = line("limits.memory ");
        assert!(
            memory.contains("32MiB")
                && memory.contains(&format!("{} (limits.memory)", path_str(&manifest))),
            "{memory}"
        );
        assert!(
            line("limits.disk ").contains("built-in default policy (defaults.disk)"),
            "{}",
            out.stdout
        );

        // An operator file shows up as the source of what it sets.
        let policy = tempfile::Builder::new()
            .prefix("corral-policy-")
            .suffix(".toml")
            .tempfile_in("/var/tmp")
            .expect("a policy file");
        std::fs::write(policy.path(), "[defaults]\ndisk = \"2MiB\"\n").expect("write policy");
        let out = corral(
            &[
                "policy",
                "show",
                path_str(&hello),
                "--policy",
                path_str(policy.path()),
                "--json",
            ],
            &[],
        );
        out.assert_code(EXIT_OK);
        let json = out.json();
        let provenance = json["provenance"].as_array().expect("provenance");
        let disk = provenance
            .iter()
            .find(|p| p["rule"] == "limits.disk")
            .unwrap_or_else(|| panic!("no limits.disk in {json}"));
        assert_eq!(disk["value"], "2MiB", "{disk}");
        assert_eq!(
            disk["source"],
            format!("{} (defaults.disk)", path_str(policy.path())),
            "{disk}"
        );
        assert_eq!(
            json["confinement"]["mounts"]["scratch"]["size_bytes"],
            2 << 20
        );
    });
}

#[test]
fn corral_check_validates_packages_against_the_policy() {
    run(async {
        let hello = package_dir("hello");
        let out = corral(&["check", path_str(&hello)], &[]);
        out.assert_code(EXIT_OK);
        assert!(out.stdout.starts_with("ok: hello 0.1.0"), "{}", out.stdout);
        let out = corral(&["check", path_str(&hello), "--json"], &[]);
        out.assert_code(EXIT_OK);
        assert_eq!(
            out.json(),
            json!({"ok": true, "plugin": "hello", "version": "0.1.0", "warnings": []})
        );

        // hostile-exec asks for exec, which the built-in policy grants nobody.
        let exec = package_dir("hostile-exec");
        let out = corral(&["check", path_str(&exec), "--json"], &[]);
        out.assert_code(EXIT_DENIED);
        let error = &out.json()["error"];
        assert_eq!(error["code"], "permission_denied", "{error}");
        assert_eq!(error["permission"], "permissions.exec = true", "{error}");
        // An operator grant makes it load.
        let policy = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile_in("/var/tmp")
            .expect("a policy file");
        std::fs::write(
            policy.path(),
            "[plugins.hostile-exec]\ngrant = { exec = true }\n",
        )
        .expect("write policy");
        let out = corral(
            &[
                "check",
                path_str(&exec),
                "--policy",
                path_str(policy.path()),
            ],
            &[],
        );
        out.assert_code(EXIT_OK);
    });
}

/// `required` features fail the load; `best_effort` ones run without the
/// feature and say so. CORRAL_MASK_FEATURES makes this kernel (which has
/// everything) pretend to lack them.
#[test]
fn required_and_best_effort_kernel_features() {
    run(async {
        let hello = package_dir("hello");
        let greet = [
            "run",
            path_str(&hello),
            "-m",
            "greet",
            "-i",
            r#"{"name":"f"}"#,
            "--json",
        ];
        let out = corral(&greet, &[("CORRAL_MASK_FEATURES", "landlock")]);
        out.assert_code(EXIT_DENIED);
        let error = &out.json()["error"];
        assert_eq!(error["code"], "feature_unavailable", "{error}");
        assert_eq!(error["feature"], "landlock", "{error}");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("features.landlock")),
            "the message should name the policy key: {error}"
        );
        assert_run_cleaned_up(&out);

        let out = corral(&greet, &[("CORRAL_MASK_FEATURES", "landlock_scope")]);
        out.assert_code(EXIT_OK);
        assert_eq!(out.json()["output"], json!({"greeting": "Hello, f!"}));
        assert!(
            out.stderr.contains("landlock_scope"),
            "no warning about running without landlock_scope: {}",
            out.stderr
        );
        assert_run_cleaned_up(&out);

        let show = ["policy", "show", path_str(&hello), "--json"];
        let masked = corral(&show, &[("CORRAL_MASK_FEATURES", "landlock_scope")]);
        masked.assert_code(EXIT_OK);
        let masked = masked.json();
        let warnings = masked["warnings"].as_array().expect("warnings");
        assert!(
            warnings
                .iter()
                .any(|w| w.as_str().is_some_and(|w| w.contains("landlock_scope"))),
            "{masked}"
        );
        assert_eq!(masked["confinement"]["landlock"]["scope_signals"], false);
        // Unmasked, the same policy scopes signals and warns of nothing.
        let full = corral(&show, &[]);
        full.assert_code(EXIT_OK);
        let full = full.json();
        assert_eq!(full["warnings"], json!([]), "{full}");
        assert_eq!(full["confinement"]["landlock"]["scope_signals"], true);
    });
}

/// Many calls in flight on one child, multiplexed by id: every one gets
/// its own answer.
#[test]
fn many_calls_in_flight_on_one_child_are_all_answered() {
    run(async {
        let mut h = Harness::new();
        let child = h.child("hello").await;
        let timeout = Duration::from_secs(10);
        let calls = (0..200u32).map(|i| {
            let child = child.clone();
            tokio::spawn(async move {
                let input = format!("payload number {i}").into_bytes();
                let out = child
                    .call("echo", input.clone(), timeout)
                    .await
                    .unwrap_or_else(|e| panic!("call {i}: {e:?}"));
                assert_eq!(out.output, input, "call {i} got another call's answer");
            })
        });
        for call in futures_join(calls.collect()).await {
            call.expect("a call task");
        }
        assert!(child.is_alive());
        assert_eq!(child.in_flight(), 0);
        h.finish().await;
    });
}

async fn futures_join<T>(
    handles: Vec<tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await);
    }
    out
}

/// A call past its timeout is cancelled; a plugin that honours Cancel
/// (hello's `sleep` checks it) keeps running, and its next call is
/// answered at once instead of after the sleep.
#[test]
fn a_cancelled_call_times_out_and_the_child_survives() {
    run(async {
        let mut h = Harness::new();
        let mut events = h.events();
        let host = h.host("hello").await;
        let child = host.children().pop().expect("a live instance");
        let pid = child.pid();
        let err = child
            .call(
                "sleep",
                br#"{"ms": 20000}"#.to_vec(),
                Duration::from_millis(200),
            )
            .await
            .expect_err("the sleep must be cut short");
        assert_eq!(err.kind, ErrorKind::Timeout { limit_ms: 200 }, "{err:?}");
        assert!(child.is_alive(), "the child was killed");
        // Still sleeping, it could not answer within this limit.
        let out = child
            .call(
                "greet",
                br#"{"name":"again"}"#.to_vec(),
                Duration::from_secs(5),
            )
            .await
            .expect("the child answers after the cancellation");
        assert_eq!(out.output, br#"{"greeting":"Hello, again!"}"#);
        assert_eq!(
            call(&host, "greet", json!({"name": "host"}))
                .await
                .expect("through the host"),
            json!({"greeting": "Hello, host!"})
        );
        assert_eq!(host.children().pop().map(|c| c.pid()), Some(pid));
        let died = wait_for_event(&mut events, Duration::from_millis(200), |e| {
            matches!(e, Event::Crashed { .. } | Event::Restarted { .. })
        })
        .await;
        assert_eq!(died, None, "the cancellation cost the plugin its life");
        drop(child);
        h.finish().await;
    });
}

/// The leak check finds each kind of leak it looks for, so a clean
/// `finish` means something.
#[test]
fn the_leak_check_notices_leaks() {
    run(async {
        let h = Harness::new();
        let baseline = Baseline::take();
        let uids = h.uid_range();
        let base = h.cgroup_base().to_string();
        let find = || Leaks::find(&baseline, uids, &base);
        assert!(find().is_empty(), "{}", find());

        let file = std::fs::File::open("/dev/null").expect("open");
        assert_eq!(find().new_fds.len(), 1, "{}", find());
        drop(file);

        // A live child, then the zombie it becomes until reaped.
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = sleeper.id() as i32;
        assert!(find().children.iter().any(|p| p.pid == pid), "{}", find());
        sleeper.kill().expect("kill");
        let zombie = loop {
            let leaks = find();
            if let Some(p) = leaks
                .children
                .iter()
                .find(|p| p.pid == pid && p.state == 'Z')
            {
                break p.clone();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(zombie.state, 'Z');
        sleeper.wait().expect("reap");
        assert!(find().children.is_empty(), "{}", find());

        // A cgroup left under the base.
        let memory = corral_tests::leaks::cgroup_base_dirs(&base)
            .into_iter()
            .find(|d| d.starts_with("/sys/fs/cgroup/memory"))
            .expect("a memory hierarchy");
        let leaf = memory.join("left-behind");
        std::fs::create_dir(&leaf).expect("mkdir a leaf");
        assert_eq!(find().cgroups, vec![leaf.clone()]);
        std::fs::remove_dir(&leaf).expect("rmdir the leaf");
        assert!(find().is_empty(), "{}", find());
        h.finish().await;
    });
}

/// `Child::shutdown` and `Child::wait` promise to resolve once the child
/// is gone and cleaned up: a caller that exits right after (as `corral
/// run` does) must not leave its cgroup behind.
#[test]
fn a_dead_child_is_cleaned_up_before_wait_returns() {
    run(async {
        let mut h = Harness::new();
        let child = h.child("hostile").await;
        let err = child
            .call("exit", br#"{"code": 7}"#.to_vec(), Duration::from_secs(5))
            .await
            .expect_err("the plugin exits");
        assert_eq!(err.code(), "crashed", "{err:?}");
        child.wait().await;
        assert_eq!(
            h.cgroup_leaf_names(),
            std::collections::BTreeSet::new(),
            "wait() returned before the dead child's cgroup was removed"
        );
        let stopped = h.child("hello").await;
        stopped.shutdown(Duration::from_secs(1)).await;
        assert_eq!(
            h.cgroup_leaf_names(),
            std::collections::BTreeSet::new(),
            "shutdown() returned before the child's cgroup was removed"
        );
        h.finish().await;
    });
}

/// A copy of the hostile package at `dest` (a directory of its own, for
/// tests that place or edit the package).
fn copy_hostile_to(dest: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(package_dir("hostile"))
        .arg(dest)
        .status()
        .expect("cp");
    assert!(
        status.success(),
        "copying the hostile package to {}",
        dest.display()
    );
}

/// `corral run` of one method with a JSON input (and an operator policy
/// file), asserting it succeeded and cleaned up; returns the output.
fn run_method(package: &Path, policy: Option<&Path>, method: &str, input: Value) -> Value {
    let input = input.to_string();
    let mut args = vec!["run", path_str(package)];
    if let Some(policy) = policy {
        args.extend(["--policy", path_str(policy)]);
    }
    args.extend(["-m", method, "-i", &input, "--json"]);
    let out = corral(&args, &[]);
    out.assert_code(EXIT_OK);
    assert_run_cleaned_up(&out);
    out.json()["output"].clone()
}

/// A package beneath the scratch mount point (a checkout under /tmp, say)
/// stays visible inside, read-only, while the scratch space stays private.
#[test]
fn a_package_under_the_scratch_mount_point_runs_read_only() {
    run(async {
        let dir = tempfile::Builder::new()
            .prefix("corral-kept")
            .tempdir_in("/tmp")
            .expect("tempdir under /tmp");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let sibling = dir.path().join("sibling-secret");
        std::fs::write(&sibling, "not for plugins").expect("write a sibling");
        let package = dir.path().join("hostile");
        copy_hostile_to(&package);
        let call = |method: &str, input: Value| run_method(&package, None, method, input);
        let bin = package.join("bin");
        let listed = call("list_dir", json!({ "path": path_str(&bin) }));
        assert_eq!(
            listed["ok"],
            json!(true),
            "its own package is visible: {listed}"
        );
        let evil = package.join("evil");
        let written = call("write_file", json!({ "path": path_str(&evil) }));
        assert_eq!(written["errno"], json!(libc::EROFS), "read-only: {written}");
        assert!(!evil.exists(), "nothing was written on the host");
        let secret = call("read_file", json!({ "path": path_str(&sibling) }));
        assert_eq!(
            secret["ok"],
            json!(false),
            "the rest of /tmp stays hidden: {secret}"
        );
        let scratch = call("write_file", json!({ "path": "/tmp/made-inside" }));
        assert_eq!(
            scratch["ok"],
            json!(true),
            "scratch stays writable: {scratch}"
        );
        assert!(
            !std::path::Path::new("/tmp/made-inside").exists(),
            "and private"
        );
    });
}

/// The operator's remaps: a host directory shown where the plugin looks
/// for it, beneath the scratch space (read-only, since only reading is
/// granted) and over an existing host directory (writable, since writing
/// is), with Landlock still applying to the paths the plugin sees.
#[test]
fn remapped_host_directories_appear_where_the_plugin_looks() {
    run(async {
        let root = tempfile::Builder::new()
            .prefix("corral-remap-")
            .tempdir_in("/var/tmp")
            .expect("a directory in /var/tmp");
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let tenant = root.path().join("tenant-a");
        std::fs::create_dir(&tenant).expect("mkdir tenant");
        std::fs::write(tenant.join("report.csv"), "a,b\n1,2\n").expect("write the data");
        std::fs::set_permissions(&tenant, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let outbox = root.path().join("outbox");
        std::fs::create_dir(&outbox).expect("mkdir outbox");
        std::fs::write(outbox.join("hidden.txt"), "the host's own\n").expect("write");
        let not_granted = root.path().join("tenant-b.txt");
        std::fs::write(&not_granted, "another tenant\n").expect("write");

        let package = root.path().join("hostile");
        copy_hostile_to(&package);
        let manifest = package.join("plugin.toml");
        let text = std::fs::read_to_string(&manifest).expect("read the manifest");
        std::fs::write(
            &manifest,
            text.replace(
                "[permissions]\n",
                &format!(
                    "[permissions]\nfs.read = [\"/tmp/data\"]\nfs.write = [\"{}\"]\n",
                    path_str(&outbox)
                ),
            ),
        )
        .expect("write the manifest");
        let policy = root.path().join("policy.toml");
        std::fs::write(
            &policy,
            format!(
                "[plugins.hostile]\ngrant = {{ fs_read = [\"/tmp/data\"], fs_write = [\"{outbox}\"] }}\n\
                 remap = {{ \"/tmp/data\" = \"{tenant}\", \"{outbox}\" = \"{tenant}\" }}\n",
                outbox = path_str(&outbox),
                tenant = path_str(&tenant)
            ),
        )
        .expect("write the policy");

        let call = |method: &str, input: Value| run_method(&package, Some(&policy), method, input);
        let read = call("read_file", json!({ "path": "/tmp/data/report.csv" }));
        assert_eq!(read["ok"], json!(true), "{read}");
        assert!(
            read["detail"].as_str().is_some_and(|d| d.contains("a,b")),
            "the tenant's file is read at /tmp/data: {read}"
        );
        let refused = call("write_file", json!({ "path": "/tmp/data/evil.csv" }));
        assert_eq!(refused["errno"], json!(libc::EROFS), "read-only: {refused}");
        assert!(!tenant.join("evil.csv").exists());

        let outbox_path = path_str(&outbox).to_string();
        let listed = call("list_dir", json!({ "path": outbox_path }));
        assert!(
            listed["detail"]
                .as_str()
                .is_some_and(|d| d.contains("report.csv") && !d.contains("hidden.txt")),
            "the outbox shows the tenant's directory, not the host's own: {listed}"
        );
        let written = call(
            "write_file",
            json!({ "path": format!("{outbox_path}/result.txt") }),
        );
        assert_eq!(written["ok"], json!(true), "granted for writing: {written}");
        assert!(
            tenant.join("result.txt").exists(),
            "the write lands in the source"
        );
        assert!(
            !outbox.join("result.txt").exists(),
            "not in the covered directory"
        );

        // What is neither remapped nor granted stays out of reach: the
        // minimal root does not hold it.
        let other = call("read_file", json!({ "path": path_str(&not_granted) }));
        assert_eq!(other["errno"], json!(libc::ENOENT), "{other}");

        // `corral policy show` says where each mount comes from.
        let show = corral(
            &[
                "policy",
                "show",
                path_str(&package),
                "--policy",
                path_str(&policy),
            ],
            &[],
        );
        show.assert_code(EXIT_OK);
        assert!(
            show.stdout.contains("mount /tmp/data") && show.stdout.contains("read-only"),
            "{}",
            show.stdout
        );
    });
}

/// `corral run` has no daemon behind it: a plugin speaking protocol
/// version 2 is served, and every host-service request it makes is
/// answered `service_unavailable` naming the service, never left hanging,
/// however many are in flight at once.
#[test]
fn under_corral_run_every_host_service_is_unavailable() {
    run(async {
        let probe = package_dir("services-probe");
        let echoed = run_method(&probe, None, "echo", json!({ "a": [1, 2] }));
        assert_eq!(echoed, json!({ "a": [1, 2] }));

        let refused = run_method(
            &probe,
            None,
            "request",
            json!({ "service": "kv", "operation": "get", "payload": { "table": "t", "key": "k" } }),
        );
        assert_eq!(refused["err"]["code"], "service_unavailable", "{refused}");
        assert_eq!(refused["err"]["details"]["service"], "kv", "{refused}");
        assert!(refused.get("ok").is_none(), "{refused}");

        let called = run_method(
            &probe,
            None,
            "call",
            json!({ "plugin": "hello", "method": "greet", "input": { "name": "x" } }),
        );
        assert_eq!(called["err"]["code"], "service_unavailable", "{called}");

        let flooded = run_method(
            &probe,
            None,
            "flood",
            json!({ "count": 20, "service": "events", "operation": "publish", "payload": { "topic": "t", "payload": 1 } }),
        );
        assert_eq!(flooded, json!({ "service_unavailable": 20 }), "{flooded}");
    })
}
