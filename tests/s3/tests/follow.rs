//! Following a bucket: a version published with `corral publish` is
//! installed, loaded and called; a newer one is picked up by the poll and
//! swapped in while clients call without pause (no call fails); the
//! swap is announced as an event and counted in the metrics; a daemon
//! restarted while the store is down serves from its cache.

use corral_daemon_tests::{Daemon, Setup, eventually};
use corral_protocol::api::{Event, PluginState};
use corral_protocol::sources::SourceStatus;
use corral_s3_tests::packages::{release, timeout_ms_of};
use corral_s3_tests::{PICKUP_WAIT, S3Server, serving_timeout_ms, source_config};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const BUCKET: &str = "plugins";
const PREFIX: &str = "fleet/v1";

async fn daemon_following(s3_endpoint: &str) -> (Setup, Daemon) {
    let mut setup = Setup::new();
    setup.extra_config = source_config("main", s3_endpoint, BUCKET, PREFIX, "");
    let daemon = Daemon::start(&setup).await;
    (setup, daemon)
}

async fn wait_serving(daemon: &Daemon, plugin: &str, version: &str) {
    let want = timeout_ms_of(version);
    eventually(
        &format!("{plugin} {version} serving"),
        PICKUP_WAIT,
        || async { (serving_timeout_ms(&daemon.client, plugin).await == Some(want)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_published_version_is_installed_and_a_newer_one_swapped_in_without_a_failed_call() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    let published = release("greeter", "1.1.0", &s3.endpoint(), BUCKET, PREFIX);
    assert_eq!(published.key, "fleet/v1/greeter/1.1.0.tar.gz");
    let keys = s3.keys(BUCKET).await;
    assert!(
        keys.contains(&"fleet/v1/greeter/1.1.0.tar.gz.sha256".to_string()),
        "{keys:?}"
    );

    let (_setup, daemon) = daemon_following(&s3.endpoint()).await;
    let mut events = daemon.client.events(None).await;
    wait_serving(&daemon, "greeter", "1.1.0").await;
    let detail = daemon.client.detail("greeter").await;
    assert_eq!(detail.source, "s3:main");
    assert_eq!(detail.summary.state, PluginState::Ready);
    let reply = daemon
        .client
        .call_ok("greeter", "greet", json!({"name": "fleet"}))
        .await;
    assert_eq!(reply.output["greeting"], "Hello, fleet!");

    // Clients call without pause while 1.2.0 is published and swapped in.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..3)
        .map(|_| {
            let (client, stop, ok) = (daemon.client.clone(), stop.clone(), ok.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let r = client.call("greeter", "greet", json!({"name": "x"})).await;
                    if r.status == 200 {
                        ok.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failures.push(r.text());
                    }
                }
                failures
            })
        })
        .collect();
    release("greeter", "1.2.0", &s3.endpoint(), BUCKET, PREFIX);
    wait_serving(&daemon, "greeter", "1.2.0").await;
    let before = ok.load(Ordering::SeqCst);
    eventually("calls after the swap", PICKUP_WAIT, || async {
        (ok.load(Ordering::SeqCst) > before + 10).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for c in callers {
        let failures = c.await.expect("caller task");
        assert!(
            failures.is_empty(),
            "calls failed during the swap: {failures:?}"
        );
    }

    let updated = events
        .find("source_updated 1.2.0", PICKUP_WAIT, |r| {
            matches!(&r.event, Event::SourceUpdated { plugin, version, source_name, .. }
                if plugin == "greeter" && version == "1.2.0" && source_name == "main")
        })
        .await;
    let Event::SourceUpdated { digest, .. } = updated.event else {
        unreachable!("matched above")
    };
    assert_eq!(daemon.client.detail("greeter").await.digest, digest);

    let sources: Vec<SourceStatus> = daemon.client.get("/v1/sources").await.ok();
    assert_eq!(sources.len(), 1);
    let followed = &sources[0].followed["greeter"];
    assert_eq!(followed.installed_version.as_deref(), Some("1.2.0"));
    assert_eq!(followed.follows, "latest");
    assert!(
        followed.etag.is_some() && followed.sha256.is_some(),
        "{followed:?}"
    );
    let metrics = daemon.client.metrics().await;
    assert!(
        metrics.contains("corral_source_fetches_total{source=\"main\",outcome=\"ok\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("corral_source_up{source=\"main\"} 1"),
        "{metrics}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_restarted_while_the_store_is_down_serves_from_its_cache() {
    let mut s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    release("cached", "1.3.0", &s3.endpoint(), BUCKET, PREFIX);
    let (setup, daemon) = daemon_following(&s3.endpoint()).await;
    wait_serving(&daemon, "cached", "1.3.0").await;
    daemon.stop().await;

    s3.kill();
    let daemon = Daemon::start(&setup).await;
    // Installed and enabled before the store went away: loaded from the
    // store at start, no request needed.
    let reply = daemon
        .client
        .call_ok("cached", "greet", json!({"name": "cache"}))
        .await;
    assert_eq!(reply.output["greeting"], "Hello, cache!");
    assert_eq!(
        serving_timeout_ms(&daemon.client, "cached").await,
        Some(timeout_ms_of("1.3.0"))
    );
    let status: SourceStatus = eventually("a failed poll", PICKUP_WAIT, || async {
        let all: Vec<SourceStatus> = daemon.client.get("/v1/sources").await.ok();
        all.into_iter().find(|s| s.consecutive_failures > 0)
    })
    .await;
    let error = status.last_error.expect("the failure");
    assert_eq!(error.code(), "source_error");
    assert!(
        matches!(&error.kind, corral_protocol::error::ErrorKind::SourceError { problem, .. } if problem == "unreachable"),
        "{error:?}"
    );
    // Still serving.
    daemon
        .client
        .call_ok("cached", "greet", json!({"name": "still"}))
        .await;
    daemon.stop().await;
}
