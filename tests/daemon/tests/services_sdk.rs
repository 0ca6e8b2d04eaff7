//! The Rust SDK's host services against a real corrald: `services-probe`
//! plugins (built on `corral-sdk`) call a dependency, publish and
//! subscribe, and keep serving API calls while a request waits.

use corral_daemon_tests::{Daemon, SETTLE_WAIT, Setup, eventually};
use corral_protocol::api::PluginState;
use serde_json::{Value, json};
use std::path::Path;

const POLICY: &str = r#"
[plugins.publisher.grant]
events_publish = ["orders.*"]

[plugins.app.grant]
events_subscribe = ["orders.*"]
"#;

fn ask(package: &Path, text: &str) {
    let manifest = package.join("plugin.toml");
    let mut body = std::fs::read_to_string(&manifest).expect("read the manifest");
    body.push_str(text);
    std::fs::write(&manifest, body).expect("write the manifest");
}

/// `app` depends on `dep` and subscribes to `orders.*`; `publisher`
/// publishes there.
async fn start() -> (Setup, Daemon) {
    let setup = Setup::new().with_policy(POLICY);
    let app = setup.add_package("services-probe", "app");
    ask(
        &app,
        "\n[dependencies]\ndep = \"*\"\n\n[permissions.events]\nsubscribe = [\"orders.*\"]\n",
    );
    setup.add_package("services-probe", "dep");
    let publisher = setup.add_package("services-probe", "publisher");
    ask(
        &publisher,
        "\n[permissions.events]\npublish = [\"orders.*\"]\n",
    );
    let daemon = Daemon::start(&setup).await;
    for name in ["app", "dep", "publisher"] {
        assert_eq!(
            daemon.client.detail(name).await.summary.state,
            PluginState::Ready,
            "{name} loaded: {}",
            daemon.log()
        );
    }
    (setup, daemon)
}

async fn call(daemon: &Daemon, plugin: &str, method: &str, input: Value) -> Value {
    daemon.client.call_ok(plugin, method, input).await.output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_plugin_calls_its_dependency_and_survives_its_crash() {
    let (_setup, daemon) = start().await;
    let answer = call(
        &daemon,
        "app",
        "call",
        json!({"plugin": "dep", "method": "echo", "input": {"x": [1, 2]}}),
    )
    .await;
    assert_eq!(answer, json!({"ok": {"x": [1, 2]}}));

    let crashed = call(
        &daemon,
        "app",
        "call",
        json!({"plugin": "dep", "method": "crash", "input": null}),
    )
    .await;
    assert_eq!(crashed["err"]["code"], "crashed", "{crashed}");

    let refused = call(
        &daemon,
        "app",
        "call",
        json!({"plugin": "publisher", "method": "echo", "input": 1}),
    )
    .await;
    assert_eq!(refused["err"]["code"], "permission_denied", "{refused}");
    assert_eq!(
        refused["err"]["details"]["permission"], "plugins.call publisher",
        "{refused}"
    );

    let again = call(
        &daemon,
        "app",
        "call",
        json!({"plugin": "dep", "method": "echo", "input": "again"}),
    )
    .await;
    assert_eq!(again, json!({"ok": "again"}));
    daemon.stop().await;
}

/// While `app` waits for a slow dependency, an API call to `app` is kept
/// and answered after it, not lost or refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_arrive_while_a_request_waits_are_answered() {
    let (_setup, daemon) = start().await;
    let slow = call(
        &daemon,
        "app",
        "call",
        json!({"plugin": "dep", "method": "sleep", "input": {"ms": 300}}),
    );
    let quick = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        call(&daemon, "app", "echo", json!("quick")).await
    };
    let (slow, quick) = tokio::join!(slow, quick);
    assert!(slow["ok"]["slept_ms"].as_u64().is_some(), "{slow}");
    assert_eq!(quick, json!("quick"));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_plugin_gets_the_events_it_subscribed_to() {
    let (_setup, daemon) = start().await;
    let subscribed = call(&daemon, "app", "subscribe", json!({"pattern": "orders.*"})).await;
    assert_eq!(subscribed, json!({"ok": {}}));
    let refused = call(&daemon, "dep", "subscribe", json!({"pattern": "orders.*"})).await;
    assert_eq!(refused["err"]["code"], "permission_denied", "{refused}");

    let published = call(
        &daemon,
        "publisher",
        "request",
        json!({"service": "events", "operation": "publish",
               "payload": {"topic": "orders.created", "payload": {"id": 7}}}),
    )
    .await;
    assert_eq!(
        published["ok"],
        json!({"delivered": 1, "dropped": 0}),
        "{published}"
    );
    let events = eventually("the delivery", SETTLE_WAIT, || async {
        let got = call(&daemon, "app", "events", json!({"clear": true})).await;
        got.as_array().filter(|a| !a.is_empty()).cloned()
    })
    .await;
    assert_eq!(
        events,
        vec![json!({"topic": "orders.created", "from": "publisher", "payload": {"id": 7}})]
    );

    let flooded = call(
        &daemon,
        "app",
        "flood",
        json!({"count": 10, "service": "plugins", "operation": "list"}),
    )
    .await;
    assert_eq!(flooded, json!({"ok": 10}));
    daemon.stop().await;
}
