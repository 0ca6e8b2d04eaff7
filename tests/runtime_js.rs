//! JavaScript plugins on the embedded engine, fully confined: started the
//! way the daemon starts them (corral-js exec'd by the trampoline with the
//! script as data), called through a PluginHost. A call works; a thrown
//! error is typed; an infinite loop is `timeout` and a memory bomb is
//! `memory_limit_exceeded`, each answered by the same child, which then
//! serves the next call; what the engine does not offer (files, network,
//! processes, std/os modules) is not reachable; seed 000's bucket layout
//! (a folder holding only index.js) runs with its default method; a host
//! service asked for without corrald is `service_unavailable`, typed in the
//! script, and the child goes on.

use corral_protocol::error::ErrorKind;
use corral_protocol::policy::FsAccess;
use corral_tests::{Harness, call, call_within, expect_error, package_dir, pid_of, run};
use serde_json::{Value, json};
use std::time::Duration;

#[test]
fn a_js_plugin_is_confined_and_its_calls_work() {
    run(async {
        let mut h = Harness::new();
        let policy = h.compile("js-probe").expect("compile");
        // The engine is exec'd; the script is its argument, read-only data.
        assert!(
            policy.confinement.entry.ends_with("/corral-js"),
            "{}",
            policy.confinement.entry
        );
        let script = package_dir("js-probe")
            .join("index.js")
            .canonicalize()
            .expect("script");
        assert_eq!(
            policy.confinement.argv.last().map(String::as_str),
            script.to_str()
        );
        let landlock = policy.confinement.landlock.as_ref().expect("landlock");
        let package = &policy.confinement.workdir;
        assert!(
            landlock
                .fs
                .iter()
                .any(|r| &r.path == package && r.access == FsAccess::Read),
            "the package is read-only: {:?}",
            landlock.fs
        );

        let host = h.host("js-probe").await;
        let out = call(&host, "greet", json!({"name": "ada"}))
            .await
            .expect("greet");
        assert_eq!(out, json!({"greeting": "HELLO, ADA", "calls": 1}));
        assert_eq!(
            call(&host, "later", json!(21)).await.expect("later"),
            json!(42)
        );
        // No method named: the manifest's default_method (greet).
        let out = call(&host, "", json!({"name": "bo"}))
            .await
            .expect("default");
        assert_eq!(out["greeting"], "HELLO, BO");
        assert_eq!(out["calls"], 2, "one instance serves every call");
        h.finish().await;
    });
}

#[test]
fn a_host_service_without_corrald_is_service_unavailable_and_the_child_goes_on() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("js-probe").await;
        let out = call(&host, "service", json!({"table": "users", "key": "u1"}))
            .await
            .expect("service");
        // The request went through the supervisor, which has no broker here
        // (as in `corral run`): the script sees the typed error.
        assert_eq!(out["err"]["name"], "ServiceUnavailableError", "{out}");
        assert_eq!(out["err"]["code"], "service_unavailable", "{out}");
        assert_eq!(out["err"]["service"], "kv", "{out}");
        assert!(call(&host, "greet", json!({"name": "next"})).await.is_ok());
        h.finish().await;
    });
}

#[test]
fn a_thrown_error_is_a_typed_plugin_error() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("js-probe").await;
        let err = expect_error(&host, "fail", json!({"what": "that"})).await;
        assert_eq!(
            err.kind,
            ErrorKind::PluginError {
                plugin_code: "plugin_error".into()
            },
            "{err:?}"
        );
        assert_eq!(err.message, "TypeError: refused that");
        let err = expect_error(&host, "no.such.method", Value::Null).await;
        assert_eq!(
            err.kind,
            ErrorKind::PluginError {
                plugin_code: "unknown_method".into()
            },
            "{err:?}"
        );
        assert!(call(&host, "greet", json!({})).await.is_ok());
        h.finish().await;
    });
}

#[test]
fn an_infinite_loop_times_out_and_the_same_child_serves_the_next_call() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("js-probe").await;
        let before = pid_of(&host);
        let err = call_within(&host, "spin", Value::Null, Duration::from_millis(500))
            .await
            .expect_err("a loop never returns");
        assert!(
            matches!(err.kind, ErrorKind::Timeout { limit_ms: 500 }),
            "{err:?}"
        );
        let out = call(&host, "greet", json!({"name": "after"}))
            .await
            .expect("the next call");
        assert_eq!(out["greeting"], "HELLO, AFTER");
        assert_eq!(
            pid_of(&host),
            before,
            "the engine stopped the loop: the child was not killed"
        );
        h.finish().await;
    });
}

#[test]
fn a_memory_bomb_is_memory_limit_exceeded_and_the_same_child_goes_on() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("js-probe").await;
        let limit = host.policy().resources.memory_max.expect("a memory limit");
        assert_eq!(limit, 64 << 20, "js-probe asks for 64MiB");
        let before = pid_of(&host);
        let err = expect_error(&host, "bomb", Value::Null).await;
        let ErrorKind::MemoryLimitExceeded {
            limit_bytes,
            peak_bytes,
        } = err.kind
        else {
            panic!("expected memory_limit_exceeded, got {err:?}");
        };
        assert_eq!(limit_bytes, limit);
        assert!(
            peak_bytes > 0 && peak_bytes < limit,
            "the engine stopped below the cgroup limit: peak {peak_bytes} of {limit}"
        );
        let out = call(&host, "greet", json!({"name": "after"}))
            .await
            .expect("the next call");
        assert_eq!(out["greeting"], "HELLO, AFTER");
        assert_eq!(pid_of(&host), before, "no OOM kill, no restart");
        h.finish().await;
    });
}

#[test]
fn hostile_js_finds_no_files_network_processes_or_host_modules() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("js-probe").await;
        assert_eq!(
            call(&host, "reach", json!("globals"))
                .await
                .expect("globals"),
            json!([]),
            "no host object exists"
        );
        for probe in [
            "require-fs",
            "require-child_process",
            "require-absolute",
            "require-outside",
        ] {
            let err = expect_error(&host, "reach", json!(probe)).await;
            assert_eq!(
                err.kind,
                ErrorKind::PluginError {
                    plugin_code: "plugin_error".into()
                },
                "{probe}: {err:?}"
            );
            assert!(
                err.message.contains("cannot load"),
                "{probe}: {}",
                err.message
            );
        }
        for module in ["os", "std", "qjs:os", "/etc/passwd"] {
            let err = expect_error(&host, "importModule", json!(module)).await;
            assert!(
                err.message.contains("cannot load"),
                "import {module}: {}",
                err.message
            );
        }
        assert!(call(&host, "greet", json!({})).await.is_ok());
        h.finish().await;
    });
}

#[test]
fn a_bucket_layout_folder_runs_seed_000s_example() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("js-bucket").await;
        assert_eq!(host.policy().plugin, "js-bucket", "named after its folder");
        assert_eq!(
            host.policy().default_method.as_deref(),
            Some("codeGeneration.generateCode")
        );
        // Seed 000's getExecutionResult(name, settings): no method named.
        let code = call(&host, "", json!({"dataset": "users.csv", "rows": 3}))
            .await
            .expect("generateCode");
        let code = code.as_str().expect("a string");
        assert!(code.contains("pd.read_csv('users.csv')"), "{code}");
        assert!(code.contains("data.head(3)"), "{code}");
        h.finish().await;
    });
}
