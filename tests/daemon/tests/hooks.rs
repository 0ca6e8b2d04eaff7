//! Hooks and retries end to end: the operator's `[[hooks]]` run methods
//! of a JavaScript plugin (`audit`, written here) around calls to `hello`;
//! `[retry]` retries a method the manifest marks idempotent after a
//! timeout, and never one it does not mark.

use corral_daemon_tests::{Daemon, Setup};
use corral_protocol::api::Event;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const AUDIT_JS: &str = r#"
class Audit {
  reject(req) { throw new Error(`no calls to ${req.plugin}.${req.method}`); }
  append_a(req) { return { input: { name: req.input.name + "-a" } }; }
  append_b(req) { return { input: { name: req.input.name + "-b" } }; }
  shout(req) { return { output: { greeting: req.output.greeting.toUpperCase() } }; }
  look(req) { return { seen: req.plugin }; }
  spin() { for (;;) {} }
}
module.exports = Audit;
"#;

/// Spins until the wall clock passes `input.until` (ms since the epoch),
/// so calls before then time out and calls after it answer at once,
/// whichever process serves them.
const FLAKY_JS: &str = r#"
class Flaky {
  get(input) { while (Date.now() < input.until) {} return { ok: "get" }; }
  put(input) { while (Date.now() < input.until) {} return { ok: "put" }; }
}
module.exports = Flaky;
"#;

/// A JavaScript package in the source folder.
fn js_package(sources: &Path, name: &str, extra: &str, js: &str) {
    let dir = sources.join(name);
    std::fs::create_dir_all(&dir).expect("package dir");
    std::fs::write(
        dir.join("plugin.toml"),
        format!(
            "[plugin]\nname = \"{name}\"\nversion = \"0.1.0\"\nentry = \"index.js\"\nruntime = \"js\"\n{extra}\n[limits]\ntimeout = \"5s\"\n"
        ),
    )
    .expect("plugin.toml");
    std::fs::write(dir.join("index.js"), js).expect("index.js");
}

fn hook(stage: &str, method: &str, targets: &str, priority: i32, extra: &str) -> String {
    format!(
        "[[hooks]]\nstage = \"{stage}\"\nplugin = \"audit\"\nmethod = \"{method}\"\ntargets = {targets}\npriority = {priority}\n{extra}\n"
    )
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_submit_hooks_rewrite_in_priority_order_and_on_result_rewrites_the_output() {
    let policy = [
        hook("on_submit", "append_b", "[\"hello\"]", 1, ""),
        hook("on_submit", "append_a", "[\"hel*\"]", 10, ""),
        hook("on_result", "shout", "[\"hello\"]", 0, ""),
        // Every plugin, the audit one included: it must never run on its
        // own calls.
        hook("on_submit", "look", "[\"*\"]", 0, ""),
    ]
    .concat();
    let setup = Setup::new().package("hello").with_policy(&policy);
    js_package(&setup.sources(), "audit", "", AUDIT_JS);
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    let mut events = api.events(Some("plugin=hello")).await;

    let out = api.call_ok("hello", "greet", json!({"name": "x"})).await;
    assert_eq!(out.output, json!({"greeting": "HELLO, X-A-B!"}));
    // The hook's own plugin runs without hooks.
    let own = api
        .call_ok("audit", "look", json!({"plugin": "direct"}))
        .await;
    assert_eq!(own.output, json!({"seen": "direct"}));

    let rewrote = events
        .wait_for("hook_ran", Duration::from_secs(10), |r| {
            matches!(&r.event, Event::HookRan { hook, outcome, .. } if hook == "audit.append_a" && outcome == "rewrote")
        })
        .await;
    assert!(matches!(rewrote.event, Event::HookRan { ref stage, .. } if stage == "on_submit"));
    let metrics = api.metrics().await;
    for (hook, stage, outcome) in [
        ("audit.append_a", "on_submit", "rewrote"),
        ("audit.append_b", "on_submit", "rewrote"),
        ("audit.shout", "on_result", "rewrote"),
        ("audit.look", "on_submit", "ok"),
    ] {
        let line = format!(
            "corral_hook_runs_total{{hook=\"{hook}\",stage=\"{stage}\",outcome=\"{outcome}\"}}"
        );
        assert_eq!(metric(&metrics, &line), 1, "{line} in:\n{metrics}");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejecting_hook_fails_the_call_naming_the_hook() {
    let policy = hook("on_submit", "reject", "[\"hello\"]", 0, "");
    let setup = Setup::new()
        .package("hello")
        .package_as("hello", "other")
        .with_policy(&policy);
    js_package(&setup.sources(), "audit", "", AUDIT_JS);
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    let error = api
        .call("hello", "greet", json!({"name": "x"}))
        .await
        .error(422, "hook_rejected");
    assert_eq!(error["hook"], "audit.reject", "{error}");
    assert_eq!(error["stage"], "on_submit", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("no calls to hello.greet"),
        "{error}"
    );
    // A plugin the hook does not target is not affected.
    api.call_ok("other", "greet", json!({"name": "x"})).await;
    daemon.stop().await;
}

/// A plugin granted `hello` as a dependency meets the same hooks as an
/// API client: the grant is no way around the operator's guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_call_meets_the_hooks_of_its_target() {
    let policy = [
        hook("on_submit", "reject", "[\"hello\"]", 0, ""),
        hook("on_result", "shout", "[\"other\"]", 0, ""),
    ]
    .concat();
    let setup = Setup::new()
        .package("hello")
        .package_as("hello", "other")
        .with_policy(&policy);
    let app = setup.add_package("services-raw", "app");
    let manifest = app.join("plugin.toml");
    let mut text = std::fs::read_to_string(&manifest).expect("read the manifest");
    text.push_str("\n[dependencies]\nhello = \"*\"\nother = \"*\"\n");
    std::fs::write(&manifest, text).expect("write the manifest");
    js_package(&setup.sources(), "audit", "", AUDIT_JS);
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    let via_app = |plugin: &'static str| {
        let api = api.clone();
        async move {
            api.call_ok(
                "app",
                "request",
                json!({"service": "plugins", "operation": "call",
                       "payload": {"plugin": plugin, "method": "greet", "input": {"name": "x"}}}),
            )
            .await
            .output
        }
    };

    let refused = via_app("hello").await;
    assert_eq!(refused["err"]["code"], "hook_rejected", "{refused}");
    assert_eq!(
        refused["err"]["details"]["hook"], "audit.reject",
        "{refused}"
    );
    let rewritten = via_app("other").await;
    assert_eq!(
        rewritten["ok"]["output"],
        json!({"greeting": "HELLO, X!"}),
        "{rewritten}"
    );
    // The hook's refusal changed nothing: the caller's next call works.
    api.call_ok("app", "echo", json!("still here")).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_error_hook_observes_without_changing_the_error() {
    let policy = [
        hook("on_error", "look", "[\"hello\"]", 0, ""),
        // A hook whose plugin is not installed: failed, so skipped by its rule.
        "[[hooks]]\nstage = \"on_submit\"\nplugin = \"absent\"\nmethod = \"check\"\non_failure = \"skip\"\n".to_string(),
    ]
    .concat();
    let setup = Setup::new().package("hello").with_policy(&policy);
    js_package(&setup.sources(), "audit", "", AUDIT_JS);
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    // hello's `fail` always fails with its own error; that is the answer.
    let error = api
        .call("hello", "fail", Value::Null)
        .await
        .error(422, "plugin_error");
    assert_eq!(error["plugin_code"], "requested_failure", "{error}");
    let metrics = api.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "corral_hook_runs_total{hook=\"audit.look\",stage=\"on_error\",outcome=\"ok\"}"
        ),
        1,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "corral_hook_runs_total{hook=\"absent.check\",stage=\"on_submit\",outcome=\"skipped\"}"
        ) >= 1,
        "{metrics}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_times_out_fails_the_call_or_is_skipped_by_its_rule() {
    let policy = [
        hook(
            "on_submit",
            "spin",
            "[\"hello\"]",
            0,
            "timeout = \"300ms\"\non_failure = \"fail\"",
        ),
        hook(
            "on_submit",
            "spin",
            "[\"lenient\"]",
            0,
            "timeout = \"300ms\"\non_failure = \"skip\"",
        ),
        "[restart]\ncrash_loop_failures = 100\n".to_string(),
    ]
    .concat();
    let setup = Setup::new()
        .package("hello")
        .package_as("hello", "lenient")
        .with_policy(&policy);
    js_package(&setup.sources(), "audit", "", AUDIT_JS);
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    let error = api
        .call("hello", "greet", json!({"name": "x"}))
        .await
        .error(502, "hook_failed");
    assert_eq!(error["hook"], "audit.spin", "{error}");
    assert_eq!(error["cause"], "timeout", "{error}");
    let out = api.call_ok("lenient", "greet", json!({"name": "y"})).await;
    assert_eq!(out.output, json!({"greeting": "Hello, y!"}));
    let metrics = api.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "corral_hook_runs_total{hook=\"audit.spin\",stage=\"on_submit\",outcome=\"skipped\"}"
        ),
        1,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "corral_hook_runs_total{hook=\"audit.spin\",stage=\"on_submit\",outcome=\"failed\"}"
        ) >= 1,
        "{metrics}"
    );
    daemon.stop().await;
}

fn until(ms: u64) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    json!({"until": now + ms})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_method_is_retried_after_a_timeout_and_another_is_not() {
    let policy = "[retry]\nattempts = 10\nbackoff = \"50ms\"\nbackoff_max = \"200ms\"\n\
                  [restart]\ncrash_loop_failures = 100\n";
    let setup = Setup::new().with_policy(policy);
    js_package(
        &setup.sources(),
        "flaky",
        "idempotent = [\"get\"]",
        FLAKY_JS,
    );
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    let mut events = api.events(Some("plugin=flaky")).await;

    // The first attempt spins past its 400 ms; a later one answers.
    let out: corral_protocol::api::CallResponse = api
        .post_json(
            "/v1/plugins/flaky/call",
            &json!({"method": "get", "input": until(1200), "timeout_ms": 400}),
        )
        .await
        .ok();
    assert_eq!(out.output, json!({"ok": "get"}));
    let retried = events
        .wait_for("call_retried", Duration::from_secs(10), |r| {
            matches!(r.event, Event::CallRetried { .. })
        })
        .await;
    assert!(
        matches!(&retried.event, Event::CallRetried { method, attempt: 1, code, .. } if method == "get" && code == "timeout"),
        "{retried:?}"
    );
    let retries = metric(
        &api.metrics().await,
        "corral_call_retries_total{plugin=\"flaky\"}",
    );
    assert!(retries >= 1, "retries counted: {retries}");

    // Not idempotent: one attempt, its timeout is the answer.
    api.post_json(
        "/v1/plugins/flaky/call",
        &json!({"method": "put", "input": until(1200), "timeout_ms": 400}),
    )
    .await
    .error(504, "timeout");
    assert_eq!(
        metric(
            &api.metrics().await,
            "corral_call_retries_total{plugin=\"flaky\"}"
        ),
        retries,
        "put was not retried"
    );
    daemon.stop().await;
}

/// A policy whose hooks or retries are wrong does not load: the reload is
/// `invalid_policy` naming the key, and the running policy stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_hook_or_retry_is_an_invalid_policy_naming_the_key() {
    let setup = Setup::new().package("hello");
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    for (text, key) in [
        (
            "[[hooks]]\nstage = \"before\"\nplugin = \"audit\"\nmethod = \"check\"\n",
            "hooks[0].stage",
        ),
        (
            "[[hooks]]\nstage = \"on_submit\"\nplugin = \"audit\"\nmethod = \"check\"\ntimeout = \"soon\"\n",
            "hooks[0].timeout",
        ),
        (
            "[[hooks]]\nstage = \"on_submit\"\nplugin = \"audit\"\nmethod = \"check\"\nretries = 2\n",
            "hooks[0]",
        ),
        ("[retry]\nattempts = 1000\n", "retry.attempts"),
    ] {
        setup.set_policy(text);
        let error = api.post("/v1/reload").await.error(400, "invalid_policy");
        let got = error["key"].as_str().unwrap_or_default().to_string();
        assert!(
            got.starts_with(key),
            "{text}: key {got} is not {key}: {error}"
        );
    }
    // Nothing changed: calls go on without hooks.
    api.call_ok("hello", "greet", json!({"name": "x"})).await;
    daemon.stop().await;
}

/// `services-probe`'s `crash` exits the process: marked idempotent it is
/// tried `attempts` more times (each a `crashed`), and the caller gets the
/// last `crashed`; the same method not marked is tried once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_method_is_retried_after_a_crash_up_to_the_attempts() {
    let policy = "[retry]\nattempts = 2\nbackoff = \"20ms\"\n\
                  [restart]\ncrash_loop_failures = 100\nbackoff_initial = \"10ms\"\n";
    let setup = Setup::new().with_policy(policy);
    let marked = setup.add_package("services-probe", "marked");
    let manifest = marked.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(
        &manifest,
        text.replace("[plugin]\n", "[plugin]\nidempotent = [\"crash\"]\n"),
    )
    .expect("manifest");
    setup.add_package("services-probe", "unmarked");
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();

    api.call("marked", "crash", Value::Null)
        .await
        .error(502, "crashed");
    let count = |metrics: &str, plugin: &str| {
        metric(
            metrics,
            &format!("corral_call_retries_total{{plugin=\"{plugin}\"}}"),
        )
    };
    let metrics = api.metrics().await;
    assert_eq!(count(&metrics, "marked"), 2, "{metrics}");
    api.call("unmarked", "crash", Value::Null)
        .await
        .error(502, "crashed");
    let metrics = api.metrics().await;
    assert_eq!(count(&metrics, "unmarked"), 0, "{metrics}");
    // Both serve again.
    api.call_ok("marked", "echo", json!(1)).await;
    api.call_ok("unmarked", "echo", json!(1)).await;
    daemon.stop().await;
}
