//! Every daemon subcommand of the real `corral` binary against a fake
//! corrald: the request it sends (method, path, body), what it prints and
//! its exit code, plus the failures (unreachable daemon, typed errors,
//! answers it cannot read) and event streaming.

mod common;

use common::{Answer, FakeDaemon, Run, TestPackage, corral_command, hello_manifest_file};
use corral_protocol::api::{
    ChildInfo, EventRecord, Health, InstallResponse, PluginDetail, PluginFailure, PluginState,
    PluginSummary, ReloadReport, RemoveResponse,
};
use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::manifest::Manifest;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

const UNREACHABLE: i32 = 3;

fn summary(name: &str, state: PluginState) -> PluginSummary {
    PluginSummary {
        name: name.into(),
        version: "0.1.0".into(),
        description: "Greets".into(),
        state,
        enabled: state == PluginState::Ready,
        instances: 2,
        children: 2,
        in_flight: 1,
        calls_ok: 40,
        calls_failed: 2,
        restarts: 1,
        memory_bytes: 5 << 20,
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("fixture encodes")
}

fn hello_manifest() -> Manifest {
    let text = std::fs::read_to_string(hello_manifest_file()).expect("read hello's plugin.toml");
    Manifest::parse(&text, "plugin.toml").expect("hello's manifest parses")
}

/// hello's policy as `corral policy show DIR --json` compiles it here.
fn hello_policy_json(package: &TestPackage) -> Value {
    let mut command = corral_command();
    command
        .args(["policy", "show", "--json"])
        .arg(package.path());
    let run = Run::of(command).expect_code(0);
    serde_json::from_str(&run.stdout).expect("policy show --json prints JSON")
}

fn plugin_not_found(name: &str) -> CorralError {
    CorralError::new(
        ErrorKind::PluginNotFound {
            plugin: name.into(),
        },
        format!("no plugin named `{name}` is installed"),
    )
}

#[test]
fn ls_prints_an_aligned_table() {
    let plugins = vec![
        summary("hello", PluginState::Ready),
        summary("word-count", PluginState::Quarantined),
    ];
    let daemon = FakeDaemon::start(vec![(
        ("GET", "/v1/plugins"),
        Answer::json(200, &to_json(&plugins)),
    )]);
    let run = daemon.corral(&["ls"]).expect_code(0);
    assert_eq!(
        run.stdout,
        "NAME        VERSION  STATE        CHILDREN  CALLS  FAILED  RESTARTS   MEMORY\n\
         hello       0.1.0    ready             2/2     42       2         1  5.0 MiB\n\
         word-count  0.1.0    quarantined       2/2     42       2         1  5.0 MiB\n"
    );
    let request = daemon.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/v1/plugins")
    );
    assert!(request.body.is_empty());
}

#[test]
fn json_mode_prints_the_answer_exactly() {
    // Spacing and key order the typed structs would not reproduce.
    let body = r#"[ {"name": "hello", "zz_future_field": 1, "version": "0.1.0"} ]"#;
    let daemon = FakeDaemon::start(vec![(
        ("GET", "/v1/plugins"),
        Answer::text(200, "application/json", body),
    )]);
    let run = daemon.corral(&["ls", "--json"]).expect_code(0);
    assert_eq!(run.stdout, format!("{body}\n"));
}

#[test]
fn the_socket_comes_from_corral_socket_too() {
    let daemon = FakeDaemon::start(vec![(
        ("GET", "/v1/plugins"),
        Answer::json(200, &json!([])),
    )]);
    let mut command = corral_command();
    command.env("CORRAL_SOCKET", daemon.socket()).arg("ls");
    let run = Run::of(command).expect_code(0);
    assert_eq!(
        run.stdout.lines().count(),
        1,
        "just the header: {}",
        run.stdout
    );
    assert!(
        run.stderr.contains("no plugins installed"),
        "{}",
        run.stderr
    );
    assert_eq!(daemon.requests().len(), 1);
}

#[test]
fn info_shows_the_plugin_and_its_children() {
    let mut running = summary("hello", PluginState::Ready);
    running.children = 1;
    let detail = PluginDetail {
        summary: running,
        source: "/var/lib/corral/sources/hello".into(),
        digest: "9f2c".repeat(16),
        manifest: hello_manifest(),
        policy: Some(
            serde_json::from_value(hello_policy_json(&TestPackage::hello()))
                .expect("policy decodes"),
        ),
        policy_error: None,
        processes: vec![ChildInfo {
            instance: 0,
            pid: 4242,
            uid: 61000,
            start_ms: 3.25,
            in_flight: 1,
            memory_bytes: 1 << 20,
            memory_peak_bytes: 2 << 20,
            pids: 1,
            cpu_ms: 12.5,
        }],
        last_error: Some(CorralError::new(
            ErrorKind::Timeout { limit_ms: 10_000 },
            "the call ran longer than 10s",
        )),
        settings: None,
        learning: false,
        versions: Vec::new(),
    };
    let body = serde_json::to_string(&detail).expect("detail encodes");
    let daemon = FakeDaemon::start(vec![(
        ("GET", "/v1/plugins/hello"),
        Answer::text(200, "application/json", &body),
    )]);
    let run = daemon.corral(&["info", "hello"]).expect_code(0);
    for expected in [
        "name:          hello\n",
        "state:         ready (enabled)\n",
        "children:      1 of 2 running, 1 calls in flight\n",
        "calls:         40 ok, 2 failed\n",
        "entry:         bin/hello\n",
        "last error:    timeout: the call ran longer than 10s\n",
        "policy:        memory 32.0 MiB, pids 4, call timeout 10s",
    ] {
        assert!(
            run.stdout.contains(expected),
            "missing {expected:?} in\n{}",
            run.stdout
        );
    }
    let children: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("INSTANCE"))
        .collect();
    assert_eq!(children.len(), 2, "{}", run.stdout);
    assert!(
        children[0].starts_with("INSTANCE   PID    UID"),
        "{}",
        children[0]
    );
    assert!(children[1].contains("4242  61000"), "{}", children[1]);
    let request = daemon.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/v1/plugins/hello")
    );
}

#[test]
fn a_missing_plugin_exits_4_with_the_typed_error() {
    let daemon = FakeDaemon::start(vec![(
        ("GET", "/v1/plugins/nope"),
        Answer::error(plugin_not_found("nope")),
    )]);
    let run = daemon.corral(&["info", "nope"]).expect_code(4);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(
        run.stderr,
        "error: plugin_not_found: no plugin named `nope` is installed\n  plugin: nope\n"
    );

    let run = daemon.corral(&["info", "nope", "--json"]).expect_code(4);
    let printed: Value = serde_json::from_str(&run.stdout).expect("an error object");
    assert_eq!(printed["error"]["code"], "plugin_not_found");
    assert_eq!(printed["error"]["plugin"], "nope");
}

#[test]
fn load_unload_and_reload_post_to_their_paths() {
    let ready = to_json(&summary("hello", PluginState::Ready));
    let mut installed = summary("hello", PluginState::Installed);
    installed.children = 0;
    let daemon = FakeDaemon::start(vec![
        (
            ("POST", "/v1/plugins/hello/load"),
            Answer::json(200, &ready),
        ),
        (
            ("POST", "/v1/plugins/hello/reload"),
            Answer::json(200, &ready),
        ),
        (
            ("POST", "/v1/plugins/hello/unload"),
            Answer::json(200, &to_json(&installed)),
        ),
    ]);
    let run = daemon.corral(&["load", "hello"]).expect_code(0);
    assert_eq!(run.stdout, "hello 0.1.0: ready, 2/2 children, enabled\n");
    let run = daemon.corral(&["reload", "hello"]).expect_code(0);
    assert_eq!(run.stdout, "hello 0.1.0: ready, 2/2 children, enabled\n");
    let run = daemon.corral(&["unload", "hello"]).expect_code(0);
    assert_eq!(run.stdout, "hello 0.1.0: installed, 0/2 children\n");
    let sent: Vec<(String, String, usize)> = daemon
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path, r.body.len()))
        .collect();
    assert_eq!(
        sent,
        [
            ("POST".into(), "/v1/plugins/hello/load".into(), 0),
            ("POST".into(), "/v1/plugins/hello/reload".into(), 0),
            ("POST".into(), "/v1/plugins/hello/unload".into(), 0),
        ]
    );
}

#[test]
fn a_quarantined_plugin_exits_6() {
    let daemon = FakeDaemon::start(vec![(
        ("POST", "/v1/plugins/hello/call"),
        Answer::error(CorralError::new(
            ErrorKind::Quarantined {
                plugin: "hello".into(),
                failures: 5,
                window_ms: 60_000,
            },
            "hello is quarantined after 5 failures; `corral reload hello` lifts it",
        )),
    )]);
    let run = daemon.corral(&["call", "hello", "greet"]).expect_code(6);
    assert!(
        run.stderr.starts_with("error: quarantined: "),
        "{}",
        run.stderr
    );
}

fn call_answer() -> Value {
    json!({
        "output": {"greeting": "Hello, Ada!"},
        "usage": {"wall_ms": 1.5, "cpu_ms": 0.5, "peak_memory_bytes": 1048576}
    })
}

#[test]
fn call_sends_method_input_and_timeout_and_prints_the_output() {
    let daemon = FakeDaemon::start(vec![(
        ("POST", "/v1/plugins/hello/call"),
        Answer::json(200, &call_answer()),
    )]);
    let run = daemon
        .corral(&[
            "call",
            "hello",
            "greet",
            "--input",
            r#"{"name": "Ada"}"#,
            "--timeout",
            "250",
        ])
        .expect_code(0);
    assert_eq!(run.stdout, "{\n  \"greeting\": \"Hello, Ada!\"\n}\n");
    let request = daemon.only_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/plugins/hello/call");
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        request.json(),
        json!({"method": "greet", "input": {"name": "Ada"}, "timeout_ms": 250})
    );
}

#[test]
fn call_reads_input_files_and_defaults_to_null() {
    let daemon = FakeDaemon::start(vec![(
        ("POST", "/v1/plugins/hello/call"),
        Answer::json(200, &call_answer()),
    )]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("input.json");
    std::fs::write(&file, r#"{"name": "Grace"}"#).expect("write input");
    let file = file.to_str().expect("utf-8 path");
    let run = daemon
        .corral(&["call", "hello", "greet", "--input-file", file, "--json"])
        .expect_code(0);
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).expect("raw answer"),
        call_answer()
    );
    daemon.corral(&["call", "hello", "main"]).expect_code(0);
    let requests = daemon.requests();
    assert_eq!(
        requests[0].json(),
        json!({"method": "greet", "input": {"name": "Grace"}})
    );
    assert_eq!(requests[1].json(), json!({"method": "main", "input": null}));
}

#[test]
fn input_that_is_not_json_is_refused_before_anything_is_sent() {
    let daemon = FakeDaemon::start(vec![]);
    let run = daemon
        .corral(&["call", "hello", "greet", "--input", "{oops"])
        .expect_code(4);
    assert!(run.stderr.contains("invalid_input"), "{}", run.stderr);
    assert!(run.stderr.contains("not JSON"), "{}", run.stderr);
    assert!(daemon.requests().is_empty());
}

#[test]
fn typed_call_failures_map_to_their_exit_codes() {
    let cases = [
        (
            CorralError::new(
                ErrorKind::PluginError {
                    plugin_code: "bad_name".into(),
                },
                "names must not be empty",
            ),
            1,
        ),
        (
            CorralError::new(
                ErrorKind::Timeout { limit_ms: 250 },
                "the call ran longer than 250ms",
            ),
            1,
        ),
        (
            CorralError::new(
                ErrorKind::MemoryLimitExceeded {
                    limit_bytes: 32 << 20,
                    peak_bytes: 32 << 20,
                },
                "killed at its memory limit",
            ),
            1,
        ),
        (
            CorralError::new(
                ErrorKind::PermissionDenied { permission: None },
                "uid 1000 may not call hello",
            ),
            5,
        ),
        (
            CorralError::new(
                ErrorKind::NotLoaded {
                    plugin: "hello".into(),
                },
                "hello is not loaded",
            ),
            6,
        ),
        (
            CorralError::new(ErrorKind::Overloaded { limit: 64 }, "64 calls in flight"),
            6,
        ),
        (CorralError::internal("a defect"), 70),
    ];
    for (error, code) in cases {
        let daemon = FakeDaemon::start(vec![(
            ("POST", "/v1/plugins/hello/call"),
            Answer::error(error.clone()),
        )]);
        let run = daemon.corral(&["call", "hello", "greet"]).expect_code(code);
        assert!(
            run.stderr
                .starts_with(&format!("error: {}: {}", error.code(), error.message)),
            "{}",
            run.stderr
        );
        let run = daemon
            .corral(&["call", "hello", "greet", "--json"])
            .expect_code(code);
        let printed: Value = serde_json::from_str(&run.stdout).expect("error JSON");
        assert_eq!(printed["error"]["code"], error.code());
    }
}

#[test]
fn install_sends_an_absolute_path() {
    let answer = InstallResponse {
        plugin: "hello".into(),
        version: "0.1.0".into(),
        digest: "ab".repeat(32),
        unchanged: false,
        state: PluginState::Ready,
    };
    let daemon = FakeDaemon::start(vec![(
        ("POST", "/v1/plugins"),
        Answer::json(201, &to_json(&answer)),
    )]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = corral_command();
    command
        .current_dir(dir.path())
        .arg("--socket")
        .arg(daemon.socket())
        .args(["install", "pkgs/hello", "--load"]);
    let run = Run::of(command).expect_code(0);
    assert_eq!(
        run.stdout,
        format!(
            "installed hello 0.1.0 (state: ready)\ndigest: {}\n",
            "ab".repeat(32)
        )
    );
    let request = daemon.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v1/plugins")
    );
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    let expected = dir.path().join("pkgs/hello");
    assert_eq!(
        request.json(),
        json!({"path": expected.to_str().expect("utf-8 temp path"), "load": true, "replace": false})
    );
}

#[test]
fn install_upload_sends_the_archive_bytes() {
    let answer = InstallResponse {
        plugin: "hello".into(),
        version: "0.1.0".into(),
        digest: "cd".repeat(32),
        unchanged: true,
        state: PluginState::Installed,
    };
    let daemon = FakeDaemon::start(vec![(
        ("POST", "/v1/plugins?load=false&replace=false"),
        Answer::json(200, &to_json(&answer)),
    )]);
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("hello.tar.gz");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    std::fs::write(&archive, &bytes).expect("write archive");
    let run = daemon
        .corral(&[
            "install",
            "--upload",
            archive.to_str().expect("utf-8"),
            "--json",
        ])
        .expect_code(0);
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).expect("raw answer"),
        to_json(&answer)
    );
    let request = daemon.only_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/plugins?load=false&replace=false");
    assert_eq!(request.content_type.as_deref(), Some("application/gzip"));
    assert!(request.body == bytes, "the body is the archive's bytes");
}

#[test]
fn install_upload_of_a_missing_file_exits_4() {
    let daemon = FakeDaemon::start(vec![]);
    let run = daemon
        .corral(&["install", "--upload", "/nonexistent/hello.tar.gz"])
        .expect_code(4);
    assert!(
        run.stderr.contains("/nonexistent/hello.tar.gz"),
        "{}",
        run.stderr
    );
    assert!(daemon.requests().is_empty());
}

#[test]
fn install_refusals_keep_their_code() {
    let daemon = FakeDaemon::start(vec![(
        ("POST", "/v1/plugins"),
        Answer::error(CorralError::new(
            ErrorKind::InvalidManifest {
                file: "plugin.toml".into(),
                key: "plugin.entry".into(),
                reason: "must be a relative path".into(),
            },
            "plugin.toml: plugin.entry: must be a relative path",
        )),
    )]);
    let run = daemon.corral(&["install", "/srv/bad"]).expect_code(4);
    assert!(
        run.stderr.contains("error: invalid_manifest"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("  key: plugin.entry"), "{}", run.stderr);
}

#[test]
fn install_replace_is_sent_and_a_clash_exits_4_with_what_is_installed() {
    let clash = CorralError::new(
        ErrorKind::AlreadyExists {
            plugin: "hello".into(),
            installed_version: "0.1.0".into(),
            installed_digest: "ab".repeat(32),
        },
        "another package is installed as hello; install with replace to swap it",
    );
    let daemon = FakeDaemon::start(vec![(("POST", "/v1/plugins"), Answer::error(clash))]);
    let run = daemon.corral(&["install", "/srv/hello"]).expect_code(4);
    assert!(
        run.stderr.contains("error: already_exists"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("  installed_version: 0.1.0"),
        "{}",
        run.stderr
    );
    assert_eq!(daemon.only_request().json()["replace"], false);

    let answer = InstallResponse {
        plugin: "hello".into(),
        version: "0.2.0".into(),
        digest: "cd".repeat(32),
        unchanged: false,
        state: PluginState::Ready,
    };
    let daemon = FakeDaemon::start(vec![(
        ("POST", "/v1/plugins"),
        Answer::json(200, &to_json(&answer)),
    )]);
    daemon
        .corral(&["install", "/srv/hello", "--replace"])
        .expect_code(0);
    assert_eq!(
        daemon.only_request().json(),
        json!({"path": "/srv/hello", "load": false, "replace": true})
    );
}

#[test]
fn policy_reload_posts_and_prints_what_changed() {
    let report = ReloadReport {
        policy_changed: vec!["hello".into(), "hostile".into()],
        unloaded: vec![PluginFailure {
            plugin: "hostile".into(),
            error: CorralError::new(
                ErrorKind::PermissionDenied {
                    permission: Some("net".into()),
                },
                "hostile asks for net, which the policy does not grant",
            ),
        }],
        not_swapped: Vec::new(),
        restart_needed: vec!["socket".into()],
    };
    let daemon = FakeDaemon::start(vec![(
        ("POST", "/v1/reload"),
        Answer::json(200, &to_json(&report)),
    )]);
    let run = daemon.corral(&["policy", "reload"]).expect_code(0);
    assert_eq!(
        run.stdout,
        "configuration and policy reloaded\n\
         policy changed: hello, hostile\n\
         unloaded hostile: the new policy does not admit it: permission_denied: hostile asks for net, which the policy does not grant\n\
         changed, effective after a daemon restart: socket\n"
    );
    assert_eq!(daemon.only_request().method, "POST");

    // A bad policy file: exit 4 with the file and key.
    let daemon = FakeDaemon::start(vec![(
        ("POST", "/v1/reload"),
        Answer::error(CorralError::new(
            ErrorKind::InvalidPolicy {
                file: "/etc/corral/policy.d/50-typo.toml".into(),
                key: "defaults.memmory".into(),
                reason: "unknown key".into(),
            },
            "/etc/corral/policy.d/50-typo.toml: defaults.memmory: unknown key",
        )),
    )]);
    let run = daemon.corral(&["policy", "reload"]).expect_code(4);
    assert!(
        run.stderr.contains("error: invalid_policy"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("50-typo.toml"), "{}", run.stderr);
}

#[test]
fn rm_deletes_the_plugin() {
    let daemon = FakeDaemon::start(vec![(
        ("DELETE", "/v1/plugins/hello"),
        Answer::json(
            200,
            &to_json(&RemoveResponse {
                removed: "hello".into(),
                purged: None,
            }),
        ),
    )]);
    let run = daemon.corral(&["rm", "hello"]).expect_code(0);
    assert_eq!(run.stdout, "removed hello\n");
    let request = daemon.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("DELETE", "/v1/plugins/hello")
    );
}

#[test]
fn rm_purge_data_asks_for_the_data_too() {
    let daemon = FakeDaemon::start(vec![(
        ("DELETE", "/v1/plugins/hello?purge_data=true"),
        Answer::json(
            200,
            &to_json(&RemoveResponse {
                removed: "hello".into(),
                purged: Some(corral_protocol::api::PurgedData {
                    tables: vec!["hello_users".into()],
                    bytes: 42,
                }),
            }),
        ),
    )]);
    let run = daemon
        .corral(&["rm", "--purge-data", "hello"])
        .expect_code(0);
    assert_eq!(
        run.stdout,
        "removed hello and its stored data (1 tables, 42 bytes)\n"
    );
    let request = daemon.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("DELETE", "/v1/plugins/hello?purge_data=true")
    );
}

#[test]
fn policy_show_asks_the_daemon_for_an_installed_plugin() {
    let package = TestPackage::hello();
    let policy = hello_policy_json(&package);
    let daemon = FakeDaemon::start(vec![(
        ("GET", "/v1/plugins/hello/policy"),
        Answer::json(200, &policy),
    )]);
    let remote = daemon.corral(&["policy", "show", "hello"]).expect_code(0);
    // Whether it is learning (a daemon that does not answer that is
    // taken as no), then the policy.
    let requests: Vec<(String, String)> = daemon
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(
        requests,
        [
            ("GET".to_string(), "/v1/plugins/hello/learn".to_string()),
            ("GET".to_string(), "/v1/plugins/hello/policy".to_string())
        ]
    );
    // The same policy renders the same, wherever it was compiled.
    let mut command = corral_command();
    command.args(["policy", "show"]).arg(package.path());
    let local = Run::of(command).expect_code(0);
    assert_eq!(remote.stdout, local.stdout);
    assert!(
        remote.stdout.starts_with("sandbox policy for hello 0.1.0"),
        "{}",
        remote.stdout
    );

    let run = daemon
        .corral(&["policy", "show", "hello", "--json"])
        .expect_code(0);
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).expect("raw policy"),
        policy
    );
}

#[test]
fn policy_show_of_a_directory_never_asks_the_daemon() {
    let daemon = FakeDaemon::start(vec![]);
    let package = TestPackage::hello();
    let run = daemon
        .corral(&["policy", "show", package.path_str()])
        .expect_code(0);
    assert!(
        run.stdout.starts_with("sandbox policy for hello"),
        "{}",
        run.stdout
    );
    assert!(daemon.requests().is_empty());
}

#[test]
fn policy_files_apply_only_to_directories() {
    let daemon = FakeDaemon::start(vec![]);
    let run = daemon
        .corral(&[
            "policy",
            "show",
            "hello",
            "--policy",
            "/etc/corral/policy.toml",
        ])
        .expect_code(2);
    assert!(
        run.stderr
            .contains("--policy applies to a package directory"),
        "{}",
        run.stderr
    );
    assert!(daemon.requests().is_empty());
}

#[test]
fn health_prints_a_key_value_block() {
    let health = Health {
        status: "ok".into(),
        version: "0.1.0".into(),
        uptime_ms: 90_061_000,
        plugins_installed: 3,
        plugins_loaded: 2,
        children_alive: 4,
        cgroup: "v1".into(),
        landlock_abi: 7,
        features_unavailable: Vec::new(),
        cgroup_favordynmods: true,
    };
    let daemon = FakeDaemon::start(vec![(
        ("GET", "/v1/health"),
        Answer::json(200, &to_json(&health)),
    )]);
    let run = daemon.corral(&["health"]).expect_code(0);
    assert_eq!(
        run.stdout,
        "status:             ok\n\
         version:            0.1.0\n\
         uptime:             1day 1h 1m 1s\n\
         plugins installed:  3\n\
         plugins loaded:     2\n\
         children alive:     4\n\
         cgroup:             v1\n\
         landlock abi:       7\n\
         missing features:   none\n\
         cgroup attach:      fast (favordynmods)\n"
    );
    let run = daemon.corral(&["health", "--json"]).expect_code(0);
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).expect("raw health"),
        to_json(&health)
    );
    assert!(
        daemon
            .requests()
            .iter()
            .all(|r| r.method == "GET" && r.path == "/v1/health")
    );
}

#[test]
fn metrics_are_printed_as_sent() {
    let text = "# TYPE corral_calls_total counter\ncorral_calls_total{plugin=\"hello\",outcome=\"ok\"} 42\n";
    let daemon = FakeDaemon::start(vec![(
        ("GET", "/metrics"),
        Answer::text(200, "text/plain; version=0.0.4", text),
    )]);
    let run = daemon.corral(&["metrics"]).expect_code(0);
    assert_eq!(run.stdout, text);
    let request = daemon.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/metrics")
    );
}

fn event_lines() -> Vec<String> {
    [
        json!({"seq": 1, "time_ms": 1_700_000_000_000u64, "type": "loaded", "plugin": "hello", "version": "0.1.0"}),
        json!({"seq": 2, "time_ms": 1_700_000_000_250u64, "type": "ready", "plugin": "hello", "instance": 0, "pid": 77, "start_ms": 3.5}),
        json!({"seq": 3, "time_ms": 1_700_000_001_000u64, "type": "call_failed", "plugin": "hello", "method": "greet", "code": "timeout", "message": "the call ran longer than 10s"}),
    ]
    .iter()
    .map(|v| {
        // Every fixture must be an event the protocol knows.
        serde_json::from_value::<EventRecord>(v.clone()).expect("fixture is an EventRecord");
        v.to_string()
    })
    .collect()
}

#[test]
fn events_prints_one_line_per_event_and_says_when_the_stream_ends() {
    let daemon = FakeDaemon::start(vec![(
        ("GET", "/v1/events?plugin=hello"),
        Answer::Stream {
            lines: event_lines(),
            keep_open: false,
        },
    )]);
    // The daemon only ends the stream when it goes away.
    let run = daemon
        .corral(&["events", "--plugin", "hello"])
        .expect_code(UNREACHABLE);
    assert_eq!(
        run.stdout,
        "2023-11-14T22:13:20.000Z  hello            loaded         version 0.1.0\n\
         2023-11-14T22:13:20.250Z  hello            ready          instance 0, pid 77, started in 3.5 ms\n\
         2023-11-14T22:13:21.000Z  hello            call failed    greet: timeout: the call ran longer than 10s\n"
    );
    assert!(
        run.stderr.contains("ended the event stream"),
        "{}",
        run.stderr
    );
    let request = daemon.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/v1/events?plugin=hello")
    );
}

#[test]
fn events_json_prints_the_raw_lines_and_skips_none() {
    let mut lines = event_lines();
    // An event type from a newer daemon: passed through with --json, a
    // warning without.
    lines.insert(
        1,
        json!({"seq": 9, "time_ms": 1, "type": "teleported", "plugin": "hello"}).to_string(),
    );
    let daemon = FakeDaemon::start(vec![(
        ("GET", "/v1/events"),
        Answer::Stream {
            lines: lines.clone(),
            keep_open: false,
        },
    )]);
    let run = daemon
        .corral(&["events", "--json"])
        .expect_code(UNREACHABLE);
    assert_eq!(run.stdout, format!("{}\n", lines.join("\n")));

    let run = daemon.corral(&["events"]).expect_code(UNREACHABLE);
    assert_eq!(run.stdout.lines().count(), 3, "{}", run.stdout);
    assert!(run.stderr.contains("does not understand"), "{}", run.stderr);
    assert!(run.stderr.contains("teleported"), "{}", run.stderr);
}

#[test]
fn events_streams_until_interrupted() {
    let daemon = FakeDaemon::start(vec![(
        ("GET", "/v1/events"),
        Answer::Stream {
            lines: event_lines(),
            keep_open: true,
        },
    )]);
    let mut command = corral_command();
    command
        .arg("--socket")
        .arg(daemon.socket())
        .arg("events")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("spawn corral events");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    // The lines arrive while the stream is still open.
    for expected in ["loaded", "ready", "call failed"] {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read an event line");
        assert!(
            line.contains(expected),
            "{line:?} should be a {expected} event"
        );
    }
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "corral events must keep following an open stream"
    );
    let pid = i32::try_from(child.id()).expect("pid fits");
    // SAFETY: plain kill(2) of the child this test spawned.
    let sent = unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(sent, 0, "send SIGINT");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("corral events did not stop within 30 s of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "Ctrl-C ends `corral events` with 0");
}

#[test]
fn no_socket_exits_3_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("missing.sock");
    let socket_text = socket.to_str().expect("utf-8");
    let mut command = corral_command();
    command.args(["--socket", socket_text, "ls"]);
    let run = Run::of(command).expect_code(UNREACHABLE);
    assert!(run.stderr.contains(socket_text), "{}", run.stderr);
    assert!(run.stderr.contains("Is corrald running?"), "{}", run.stderr);

    let mut command = corral_command();
    command.args(["--socket", socket_text, "--json", "health"]);
    let run = Run::of(command).expect_code(UNREACHABLE);
    let printed: Value = serde_json::from_str(&run.stdout).expect("error JSON");
    assert_eq!(printed["error"]["code"], "daemon_unreachable");
    assert_eq!(printed["error"]["socket"], socket_text);
}

#[test]
fn a_socket_nobody_listens_on_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("stale.sock");
    // Bound and closed: the file stays, the listener is gone.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    let mut command = corral_command();
    command
        .arg("--socket")
        .arg(&socket)
        .args(["call", "hello", "greet"]);
    let run = Run::of(command).expect_code(UNREACHABLE);
    assert!(run.stderr.contains("ECONNREFUSED"), "{}", run.stderr);
    assert!(
        run.stderr.contains(socket.to_str().expect("utf-8")),
        "{}",
        run.stderr
    );
}

#[test]
fn a_daemon_that_hangs_up_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("rude.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let server = std::thread::spawn(move || {
        // Take the request, answer nothing, hang up.
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).expect("read the request line");
        line
    });
    let mut command = corral_command();
    command.arg("--socket").arg(&socket).arg("ls");
    let run = Run::of(command).expect_code(UNREACHABLE);
    assert!(run.stderr.contains("broke"), "{}", run.stderr);
    let request_line = server.join().expect("server thread");
    assert_eq!(request_line, "GET /v1/plugins HTTP/1.1\r\n");
}

#[test]
fn answers_outside_the_contract_exit_70() {
    let daemon = FakeDaemon::start(vec![
        (
            ("GET", "/v1/plugins"),
            Answer::text(500, "text/plain", "boom"),
        ),
        (
            ("GET", "/v1/health"),
            Answer::text(200, "application/json", "{\"status\": "),
        ),
    ]);
    let run = daemon.corral(&["ls"]).expect_code(70);
    assert!(
        run.stderr.contains("unexpected answer from corrald"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("500"), "{}", run.stderr);
    assert!(run.stderr.contains("boom"), "{}", run.stderr);
    let run = daemon.corral(&["health"]).expect_code(70);
    assert!(run.stderr.contains("cannot decode"), "{}", run.stderr);
    let run = daemon.corral(&["ls", "--json"]).expect_code(70);
    let printed: Value = serde_json::from_str(&run.stdout).expect("error JSON");
    assert_eq!(printed["error"]["code"], "bad_response");
}
