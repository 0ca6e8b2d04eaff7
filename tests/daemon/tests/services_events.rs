//! The event bus seen from client apps (#11 item 3): an admin publishes
//! with `POST /v1/events`, a client follows topics with
//! `GET /v1/events?topic=PATTERN`, and what is published is counted in
//! the metrics by publisher only.

use corral_daemon_tests::peer::{Identity, Peer};
use corral_daemon_tests::{Daemon, EVENT_WAIT, Request, Setup};
use corral_protocol::api::Event;
use serde_json::{Value, json};
use std::time::Duration;

const CALLERS: u32 = 4300;

fn publish(topic: &str, payload: Value) -> Request {
    Request::post("/v1/events").json(&json!({"topic": topic, "payload": payload}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_gets_the_topics_it_asked_for_only() {
    let setup = Setup::new();
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let mut orders = api.events(Some("topic=orders.*")).await;
    let mut everything = api.events(None).await;

    for (topic, n) in [
        ("users.created", 1),
        ("orders.created", 2),
        ("orders.paid", 3),
    ] {
        let reach: Value = api.send(&publish(topic, json!({"n": n}))).await.ok();
        assert_eq!(
            reach,
            json!({"delivered": 0, "dropped": 0}),
            "no plugin subscribed"
        );
    }
    let mut got = Vec::new();
    while let Some(record) = orders.next(Duration::from_secs(2)).await {
        match record.event {
            Event::Plugin {
                plugin,
                topic,
                payload,
            } => got.push((plugin, topic, payload["n"].clone())),
            other => panic!("a topic stream carries bus events only: {other:?}"),
        }
    }
    assert_eq!(
        got,
        vec![
            ("client".to_string(), "orders.created".to_string(), json!(2)),
            ("client".to_string(), "orders.paid".to_string(), json!(3)),
        ]
    );
    // Without the parameter the lifecycle stream carries them too.
    everything
        .wait_for(
            "users.created",
            EVENT_WAIT,
            |r| matches!(&r.event, Event::Plugin { topic, .. } if topic == "users.created"),
        )
        .await;
    let metrics = api.metrics().await;
    assert!(
        metrics.contains("corral_events_published_total{plugin=\"client\"} 3"),
        "{metrics}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_topics_and_bodies_are_refused_by_name() {
    let setup = Setup::new();
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let e = api
        .send(&publish("has space", json!(null)))
        .await
        .error(400, "invalid_input");
    assert!(e["message"].as_str().unwrap_or("").contains("topic"), "{e}");
    let e = api
        .send(&publish("wild*", json!(null)))
        .await
        .error(400, "invalid_input");
    assert!(e["message"].as_str().unwrap_or("").contains("topic"), "{e}");
    api.send(&Request::post("/v1/events").json(&json!({"payload": 1})))
        .await
        .error(400, "invalid_input");
    api.send(&Request::post("/v1/events").json(&json!({"topic": "a", "extra": 1})))
        .await
        .error(400, "invalid_input");
    let e = api
        .send(&Request::get("/v1/events?topic=a%20b"))
        .await
        .error(400, "invalid_input");
    assert!(e["message"].as_str().unwrap_or("").contains("topic"), "{e}");
    // Nothing was published.
    let metrics = api.metrics().await;
    assert!(
        !metrics.contains("corral_events_published_total{"),
        "{metrics}"
    );
    daemon.stop().await;
}

/// Watching is a caller's right; publishing to the plugins' bus is an
/// admin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_publishes() {
    let mut setup = Setup::new();
    setup.socket_mode = "0666".into();
    setup.caller_groups = vec![CALLERS.to_string()];
    let daemon = Daemon::start(&setup).await;
    let peer = Peer::new(env!("CARGO_BIN_EXE_dt-peer"), setup.root());
    let caller = Identity::user(4301, &[CALLERS]);
    let answer = peer
        .request(
            &caller,
            &setup.socket(),
            &publish("orders.created", json!(1)),
        )
        .await;
    answer.response.error(403, "permission_denied");
    let metrics = daemon.client.metrics().await;
    assert!(
        !metrics.contains("corral_events_published_total{"),
        "{metrics}"
    );
    daemon.stop().await;
}

// ---- plugins on the bus -------------------------------------------------

/// `pub` publishes `orders.*` and `user-events` (mapped to the real
/// `shared-events`); `sub` subscribes to `orders.*`; `mapped` names the
/// shared topic `people`; `slow` subscribes to `bulk` with a queue of 4.
const BUS_POLICY: &str = r#"
[plugins.pub.grant]
events_publish = ["orders.*", "user-events"]

[plugins.pub.names]
topics = { "user-events" = "shared-events" }

[plugins.sub.grant]
events_subscribe = ["orders.*"]

[plugins.mapped.grant]
events_subscribe = ["people"]

[plugins.mapped.names]
topics = { "people" = "shared-events" }

[plugins.slow.grant]
events_subscribe = ["bulk"]

[plugins.slow.services]
event_queue = 4
"#;

fn ask(package: &std::path::Path, text: &str) {
    let manifest = package.join("plugin.toml");
    let mut body = std::fs::read_to_string(&manifest).expect("read the manifest");
    body.push_str(text);
    std::fs::write(&manifest, body).expect("write the manifest");
}

async fn start_bus() -> (Setup, Daemon) {
    let setup = Setup::new().with_policy(BUS_POLICY);
    let p = setup.add_package("services-raw", "pub");
    ask(
        &p,
        "\n[permissions.events]\npublish = [\"orders.*\", \"user-events\"]\n",
    );
    let s = setup.add_package("services-raw", "sub");
    ask(&s, "\n[permissions.events]\nsubscribe = [\"orders.*\"]\n");
    let m = setup.add_package("services-raw", "mapped");
    ask(&m, "\n[permissions.events]\nsubscribe = [\"people\"]\n");
    let s = setup.add_package("services-raw", "slow");
    ask(&s, "\n[permissions.events]\nsubscribe = [\"bulk\"]\n");
    let daemon = Daemon::start(&setup).await;
    for name in ["pub", "sub", "mapped", "slow"] {
        assert_eq!(
            daemon.client.detail(name).await.summary.state,
            corral_protocol::api::PluginState::Ready,
            "{name} loaded: {}",
            daemon.log()
        );
    }
    (setup, daemon)
}

async fn request(daemon: &Daemon, from: &str, operation: &str, payload: Value) -> Value {
    daemon
        .client
        .call_ok(
            from,
            "request",
            json!({"service": "events", "operation": operation, "payload": payload}),
        )
        .await
        .output
}

async fn events_of(daemon: &Daemon, plugin: &str) -> Vec<Value> {
    let out = daemon
        .client
        .call_ok(plugin, "events", json!(null))
        .await
        .output;
    out.as_array().cloned().unwrap_or_default()
}

/// The deliveries a plugin has read once `want` of them arrived (a
/// delivery is queued before the publish is answered, but read by the
/// plugin between its calls).
async fn wait_events(daemon: &Daemon, plugin: &str, want: usize) -> Vec<Value> {
    corral_daemon_tests::eventually("deliveries", corral_daemon_tests::SETTLE_WAIT, || async {
        let got = events_of(daemon, plugin).await;
        (got.len() >= want).then_some(got)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_subscriber_gets_matching_topics_in_its_own_names() {
    let (_setup, daemon) = start_bus().await;
    let ok = request(&daemon, "sub", "subscribe", json!({"pattern": "orders.*"})).await;
    assert_eq!(ok["ok"], json!({}), "{ok}");
    let ok = request(&daemon, "mapped", "subscribe", json!({"pattern": "people"})).await;
    assert_eq!(ok["ok"], json!({}), "{ok}");

    let reach = request(
        &daemon,
        "pub",
        "publish",
        json!({"topic": "orders.created", "payload": {"id": 7}}),
    )
    .await;
    assert_eq!(reach["ok"], json!({"delivered": 1, "dropped": 0}));
    let reach = request(
        &daemon,
        "pub",
        "publish",
        json!({"topic": "user-events", "payload": "hi"}),
    )
    .await;
    assert_eq!(
        reach["ok"],
        json!({"delivered": 1, "dropped": 0}),
        "mapped gets the shared topic"
    );
    // An admin client publishing the real name reaches the mapped one too.
    let reach: Value = daemon
        .client
        .send(&publish("shared-events", json!(2)))
        .await
        .ok();
    assert_eq!(reach, json!({"delivered": 1, "dropped": 0}));

    let got = wait_events(&daemon, "sub", 1).await;
    assert_eq!(
        got,
        vec![json!({"topic": "orders.created", "from": "pub", "payload": {"id": 7}})]
    );
    let got = wait_events(&daemon, "mapped", 2).await;
    assert_eq!(
        got,
        vec![
            json!({"topic": "people", "from": "pub", "payload": "hi"}),
            json!({"topic": "people", "from": "client", "payload": 2}),
        ]
    );
    // Unsubscribed, sub gets nothing more.
    let removed = request(
        &daemon,
        "sub",
        "unsubscribe",
        json!({"pattern": "orders.*"}),
    )
    .await;
    assert_eq!(removed["ok"], json!({"removed": true}));
    let reach = request(&daemon, "pub", "publish", json!({"topic": "orders.paid"})).await;
    assert_eq!(reach["ok"], json!({"delivered": 0, "dropped": 0}));
    let metrics = daemon.client.metrics().await;
    assert!(
        metrics.contains(r#"corral_events_total{plugin="mapped"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"corral_events_published_total{plugin="pub"} 3"#),
        "{metrics}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_publish_and_subscribe_are_refused_by_name() {
    let (_setup, daemon) = start_bus().await;
    let cases = [
        (
            "pub",
            "publish",
            json!({"topic": "billing.paid"}),
            "events.publish billing.paid",
        ),
        (
            "pub",
            "subscribe",
            json!({"pattern": "orders.*"}),
            "events.subscribe orders.*",
        ),
        (
            "sub",
            "subscribe",
            json!({"pattern": "*"}),
            "events.subscribe *",
        ),
        (
            "sub",
            "publish",
            json!({"topic": "orders.x"}),
            "events.publish orders.x",
        ),
    ];
    for (plugin, operation, payload, permission) in cases {
        let answer = request(&daemon, plugin, operation, payload).await;
        assert_eq!(answer["err"]["code"], "permission_denied", "{answer}");
        assert_eq!(
            answer["err"]["details"]["permission"], permission,
            "{answer}"
        );
    }
    let bad = [
        ("publish", json!({"topic": "has space"})),
        ("publish", json!({"topic": "orders.*"})),
        ("subscribe", json!({})),
        ("shout", json!({})),
    ];
    for (operation, payload) in bad {
        let answer = request(&daemon, "pub", operation, payload.clone()).await;
        assert_eq!(
            answer["err"]["code"], "invalid_input",
            "{operation} {payload}: {answer}"
        );
    }
    daemon.stop().await;
}

/// `slow` stops reading its channel while the bus floods its topic: the
/// publisher is answered every time, what does not fit is dropped and
/// counted, and slow is served again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_never_slows_a_publisher() {
    let (_setup, daemon) = start_bus().await;
    let api = daemon.client.clone();
    let ok = request(&daemon, "slow", "subscribe", json!({"pattern": "bulk"})).await;
    assert_eq!(ok["ok"], json!({}), "{ok}");
    let blocked =
        tokio::spawn(async move { api.call_ok("slow", "block", json!({"ms": 4000})).await });
    corral_daemon_tests::eventually(
        "slow is blocked in its call",
        corral_daemon_tests::SETTLE_WAIT,
        || async { (daemon.client.detail("slow").await.summary.in_flight == 1).then_some(()) },
    )
    .await;
    let big = "x".repeat(16 << 10);
    let (mut delivered, mut dropped) = (0, 0);
    for _ in 0..200 {
        let reach: Value = daemon.client.send(&publish("bulk", json!(big))).await.ok();
        delivered += reach["delivered"].as_u64().unwrap_or(0);
        dropped += reach["dropped"].as_u64().unwrap_or(0);
    }
    assert_eq!(
        delivered + dropped,
        200,
        "every publish was answered with its reach"
    );
    assert!(dropped > 0, "a full queue drops (delivered {delivered})");
    let metrics = daemon.client.metrics().await;
    assert!(
        metrics.contains(&format!(
            r#"corral_event_drops_total{{plugin="slow"}} {dropped}"#
        )),
        "{metrics}"
    );
    let slept = blocked.await.expect("the blocked call");
    assert_eq!(slept.output, json!({"slept_ms": 4000}));
    assert_eq!(
        daemon.client.call_ok("slow", "echo", json!(1)).await.output,
        json!(1)
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_end_with_the_subscriber() {
    let (_setup, daemon) = start_bus().await;
    let ok = request(&daemon, "sub", "subscribe", json!({"pattern": "orders.*"})).await;
    assert_eq!(ok["ok"], json!({}), "{ok}");
    let reach: Value = daemon
        .client
        .send(&publish("orders.one", json!(1)))
        .await
        .ok();
    assert_eq!(reach["delivered"], 1);
    let e = daemon
        .client
        .call("sub", "crash", json!(null))
        .await
        .error(502, "crashed");
    assert!(e["exit_code"] == 3, "{e}");
    let reach: Value = daemon
        .client
        .send(&publish("orders.two", json!(2)))
        .await
        .ok();
    assert_eq!(
        reach,
        json!({"delivered": 0, "dropped": 0}),
        "the dead child's subscription is gone"
    );
    // The restarted child starts with none, and subscribes again.
    let ok = request(&daemon, "sub", "subscribe", json!({"pattern": "orders.*"})).await;
    assert_eq!(ok["ok"], json!({}), "{ok}");
    let reach: Value = daemon
        .client
        .send(&publish("orders.three", json!(3)))
        .await
        .ok();
    assert_eq!(reach["delivered"], 1);
    let got = wait_events(&daemon, "sub", 1).await;
    assert_eq!(
        got,
        vec![json!({"topic": "orders.three", "from": "client", "payload": 3})]
    );
    daemon.stop().await;
}
