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
