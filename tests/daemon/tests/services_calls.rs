//! Calls from one plugin to another through the host (#11 item 2), on a
//! real corrald: `services-raw` plugins send `plugins.call` requests and
//! report what came back. Only granted dependencies are reached, the
//! caller's remaining time bounds the call, a dependency that dies gives
//! the caller `crashed` and the next call works, bad requests are typed,
//! and one plugin's flood of requests does not stop another's calls.

use corral_daemon_tests::{Daemon, SETTLE_WAIT, Setup};
use corral_protocol::api::PluginState;
use serde_json::{Value, json};
use std::path::Path;

fn append(package: &Path, text: &str) {
    let manifest = package.join("plugin.toml");
    let mut body = std::fs::read_to_string(&manifest).expect("read the manifest");
    body.push_str(text);
    std::fs::write(&manifest, body).expect("write the manifest");
}

/// `app` depends on `dep` (granted by the default `grantable.calls`);
/// `other` is installed but not a dependency; `hog` floods.
async fn start() -> (Setup, Daemon) {
    let setup = Setup::new();
    let app = setup.add_package("services-raw", "app");
    append(&app, "\n[dependencies]\ndep = \"*\"\n");
    let dep = setup.add_package("services-raw", "dep");
    // A longer limit than the API calls below give, so a bound the
    // dependency sees comes from its caller.
    let manifest = dep.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).expect("read the manifest");
    std::fs::write(
        &manifest,
        text.replace("timeout = \"10s\"", "timeout = \"60s\""),
    )
    .expect("write the manifest");
    setup.add_package("services-raw", "other");
    setup.add_package("services-raw", "hog");
    let daemon = Daemon::start(&setup).await;
    for name in ["app", "dep", "other", "hog"] {
        assert_eq!(
            daemon.client.detail(name).await.summary.state,
            PluginState::Ready,
            "{name} loaded"
        );
    }
    (setup, daemon)
}

/// `app` sends one request; its answer (`{"ok": ..}` or `{"err": ..}`).
async fn request(
    daemon: &Daemon,
    from: &str,
    service: &str,
    operation: &str,
    payload: Value,
) -> Value {
    daemon
        .client
        .call_ok(
            from,
            "request",
            json!({"service": service, "operation": operation, "payload": payload}),
        )
        .await
        .output
}

async fn call_dep(daemon: &Daemon, method: &str, input: Value) -> Value {
    request(
        daemon,
        "app",
        "plugins",
        "call",
        json!({"plugin": "dep", "method": method, "input": input}),
    )
    .await
}

fn err_code(answer: &Value) -> &str {
    answer["err"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_dependency_answers_within_the_callers_time() {
    let (_setup, daemon) = start().await;
    let api = &daemon.client;
    let answer = call_dep(&daemon, "echo", json!({"x": [1, 2]})).await;
    assert_eq!(answer["ok"]["output"], json!({"x": [1, 2]}), "{answer}");
    assert!(answer["ok"]["usage"]["wall_ms"].is_number(), "{answer}");

    // The API call to app has 2 s; dep's own limit is 60 s: what dep is
    // given is what is left of app's call.
    let out: Value = api
        .post_json(
            "/v1/plugins/app/call",
            &json!({"method": "request", "timeout_ms": 2000, "input": {
                "service": "plugins", "operation": "call",
                "payload": {"plugin": "dep", "method": "timeout"}}}),
        )
        .await
        .ok::<corral_protocol::api::CallResponse>()
        .output;
    let given = out["ok"]["output"]["timeout_ms"].as_u64().unwrap_or(0);
    assert!(
        given > 0 && given <= 2000,
        "dep was given {given} ms: {out}"
    );
    // A timeout the caller asks for is bounded the same way.
    let out = request(
        &daemon,
        "app",
        "plugins",
        "call",
        json!({"plugin": "dep", "method": "timeout", "timeout_ms": 1500}),
    )
    .await;
    let given = out["ok"]["output"]["timeout_ms"].as_u64().unwrap_or(0);
    assert!(
        given > 0 && given <= 1500,
        "dep was given {given} ms: {out}"
    );

    let list = request(&daemon, "app", "plugins", "list", json!({})).await;
    assert_eq!(list["ok"], json!({"plugins": ["dep"]}));
    let metrics = api.metrics().await;
    assert!(
        metrics.contains(
            r#"corral_service_requests_total{plugin="app",service="plugins",outcome="ok"} 4"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"corral_calls_total{plugin="dep",outcome="ok"} 3"#),
        "dependency calls are counted like API calls: {metrics}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_granted_is_refused_by_name() {
    let (_setup, daemon) = start().await;
    for target in ["other", "no-such-plugin", "app"] {
        let answer = request(
            &daemon,
            "app",
            "plugins",
            "call",
            json!({"plugin": target, "method": "echo"}),
        )
        .await;
        assert_eq!(err_code(&answer), "permission_denied", "{target}: {answer}");
        assert_eq!(
            answer["err"]["details"]["permission"],
            json!(format!("plugins.call {target}")),
            "{answer}"
        );
        assert!(
            answer["err"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("grant"),
            "says how to grant it: {answer}"
        );
    }
    // dep lists no dependencies: it may call nobody, app included.
    let answer = request(
        &daemon,
        "dep",
        "plugins",
        "call",
        json!({"plugin": "app", "method": "echo"}),
    )
    .await;
    assert_eq!(err_code(&answer), "permission_denied", "{answer}");
    let list = request(&daemon, "dep", "plugins", "list", json!({})).await;
    assert_eq!(list["ok"], json!({"plugins": []}));
    // The refused never reached the plugins.
    assert_eq!(daemon.client.detail("other").await.summary.calls_ok, 0);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_invalid_input_naming_what_is_wrong() {
    let (_setup, daemon) = start().await;
    let cases = [
        ("plugins", "call", json!("{not json"), "bad payload"),
        ("plugins", "call", json!({"method": "echo"}), "plugin"),
        (
            "plugins",
            "call",
            json!({"plugin": "dep", "surprise": 1}),
            "surprise",
        ),
        ("plugins", "list", json!({"x": 1}), "x"),
        ("plugins", "explode", json!({}), "explode"),
        ("nonsense", "call", json!({}), "nonsense"),
    ];
    for (service, operation, payload, needle) in cases {
        let answer = request(&daemon, "app", service, operation, payload.clone()).await;
        assert_eq!(
            err_code(&answer),
            "invalid_input",
            "{service}.{operation} {payload}: {answer}"
        );
        assert!(
            answer["err"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(needle),
            "{answer}"
        );
    }
    // And the next good one works.
    let answer = call_dep(&daemon, "echo", json!(1)).await;
    assert_eq!(answer["ok"]["output"], json!(1), "{answer}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_that_dies_mid_call_gives_crashed_and_the_next_call_works() {
    let (_setup, daemon) = start().await;
    let pids = daemon.client.child_pids("dep").await;
    let answer = call_dep(&daemon, "crash", json!(null)).await;
    assert_eq!(err_code(&answer), "crashed", "{answer}");
    assert_eq!(answer["err"]["details"]["exit_code"], json!(3), "{answer}");
    // The caller lives on, and dep is restarted for the next call.
    let answer = call_dep(&daemon, "echo", json!("again")).await;
    assert_eq!(answer["ok"]["output"], json!("again"), "{answer}");
    assert_ne!(
        daemon.client.child_pids("dep").await,
        pids,
        "dep was restarted"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_plugin_does_not_stop_another_plugins_calls() {
    let (_setup, daemon) = start().await;
    let api = &daemon.client;
    let sent = api.call_ok("hog", "flood", json!({"count": 600})).await;
    assert_eq!(sent.output, json!({"sent": 600}));
    for i in 0..20 {
        let answer = call_dep(&daemon, "echo", json!(i)).await;
        assert_eq!(answer["ok"]["output"], json!(i), "{answer}");
    }
    let metrics = corral_daemon_tests::eventually("hog's refusals counted", SETTLE_WAIT, || async {
        let m = api.metrics().await;
        m.contains(r#"corral_service_requests_total{plugin="hog",service="plugins",outcome="overloaded"}"#)
            .then_some(m)
    })
    .await;
    assert!(
        metrics.contains(
            r#"corral_service_requests_total{plugin="app",service="plugins",outcome="ok"} 20"#
        ),
        "{metrics}"
    );
    // hog itself is bounded, not killed: it still answers.
    assert_eq!(api.call_ok("hog", "echo", json!(1)).await.output, json!(1));
    daemon.stop().await;
}

/// The input that makes `chain[0]` call `chain[1]`, which calls
/// `chain[2]`, ..., the last one echoing "bottom".
fn chained(chain: &[String]) -> Value {
    match chain {
        [_, next, rest @ ..] => {
            let (method, input) = if rest.is_empty() {
                ("echo", json!("bottom"))
            } else {
                ("request", chained(&chain[1..]))
            };
            json!({"service": "plugins", "operation": "call",
                   "payload": {"plugin": next, "method": method, "input": input}})
        }
        _ => json!(null),
    }
}

/// What the innermost call answered, digging through each level's
/// `{"ok": {"output": ...}}`.
fn innermost(mut answer: Value) -> Value {
    while let Some(output) = answer.get("ok").and_then(|ok| ok.get("output")).cloned() {
        if output.get("ok").is_none() && output.get("err").is_none() {
            return output;
        }
        answer = output;
    }
    answer
}

/// A chain of dependency calls is bounded at run time (a cycle that
/// slipped past load would end the same way): eight calls deep works,
/// the ninth is refused with a typed error, and nothing hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_dependency_calls_is_bounded_in_depth() {
    let setup = Setup::new();
    let chain: Vec<String> = (0..10).map(|i| format!("link-{i}")).collect();
    for (i, name) in chain.iter().enumerate() {
        let dir = setup.add_package("services-raw", name);
        if let Some(next) = chain.get(i + 1) {
            append(&dir, &format!("\n[dependencies]\n{next} = \"*\"\n"));
        }
    }
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    // link-1 → ... → link-9: eight dependency calls.
    let answer = api
        .call_ok("link-1", "request", chained(&chain[1..]))
        .await
        .output;
    assert_eq!(innermost(answer.clone()), json!("bottom"), "{answer}");
    // link-0 → ... → link-9: the ninth is refused where it is made.
    let answer = api
        .call_ok("link-0", "request", chained(&chain))
        .await
        .output;
    let refused = innermost(answer.clone());
    assert_eq!(refused["err"]["code"], "dependency_missing", "{answer}");
    assert!(
        refused["err"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("at most 8"),
        "{refused}"
    );
    daemon.stop().await;
}

/// A dependency that does not answer in time gives the caller `timeout`
/// at the limit it asked for, not a hang; the next call works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_that_is_too_slow_gives_timeout() {
    let (_setup, daemon) = start().await;
    let answer = request(
        &daemon,
        "app",
        "plugins",
        "call",
        json!({"plugin": "dep", "method": "block", "input": {"ms": 3000}, "timeout_ms": 300}),
    )
    .await;
    assert_eq!(err_code(&answer), "timeout", "{answer}");
    assert_eq!(answer["err"]["details"]["limit_ms"], json!(300), "{answer}");
    let answer = call_dep(&daemon, "echo", json!("after")).await;
    assert_eq!(answer["ok"]["output"], json!("after"), "{answer}");
    daemon.stop().await;
}
