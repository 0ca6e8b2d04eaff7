//! Every way a source fails gives its typed error (`source_error` with
//! the problem) in the API, the log, the events and the metrics, changes
//! nothing installed, and the plugin keeps serving: wrong credentials, a
//! missing bucket, a corrupt object, an oversized one, a store that dies
//! mid-download. (An unreachable store: follow.rs.)

use corral_daemon_tests::{Daemon, Setup, eventually};
use corral_protocol::api::{Event, EventRecord};
use corral_protocol::error::ErrorKind;
use corral_protocol::sources::SourceStatus;
use corral_s3_tests::packages::{Version, publish, release, timeout_ms_of};
use corral_s3_tests::{PICKUP_WAIT, Proxy, S3Server, serving_timeout_ms, source_config};
use serde_json::json;

const BUCKET: &str = "plugins";

fn failed_with(record: &EventRecord, want_plugin: &str, want_problem: &str) -> bool {
    matches!(&record.event, Event::SourceFailed { plugin, problem, code, .. }
        if plugin == want_plugin && problem == want_problem && code == "source_error")
}

async fn status(daemon: &Daemon) -> SourceStatus {
    let all: Vec<SourceStatus> = daemon.client.get("/v1/sources").await.ok();
    all.into_iter().next().expect("one source")
}

fn problem(e: &corral_protocol::error::CorralError) -> String {
    match &e.kind {
        ErrorKind::SourceError { problem, .. } => problem.clone(),
        other => format!("not a source error: {other:?}"),
    }
}

/// A whole-source failure: the status, the event, the log and the
/// metrics all say `problem`.
async fn assert_source_fails(extra_config: String, want: &str) {
    let mut setup = Setup::new();
    setup.extra_config = extra_config;
    let daemon = Daemon::start(&setup).await;
    let mut events = daemon.client.events(None).await;
    events
        .wait_for(want, PICKUP_WAIT, |r| failed_with(r, "", want))
        .await;
    let s = status(&daemon).await;
    assert!(s.consecutive_failures >= 1, "{s:?}");
    let error = s.last_error.clone().expect("the error");
    assert_eq!(problem(&error), want, "{error:?}");
    let metrics = daemon.client.metrics().await;
    assert!(
        metrics.contains(&format!(
            "corral_source_polls_total{{source=\"main\",outcome=\"{want}\"}}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("corral_source_up{source=\"main\"} 0"),
        "{metrics}"
    );
    daemon
        .wait_log(&["polling the source failed", want], PICKUP_WAIT)
        .await;
    // The API's own calls answer the same error.
    let e = daemon
        .client
        .get("/v1/sources/main/plugins")
        .await
        .error(502, "source_error");
    assert_eq!(e["problem"], want, "{e}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_access_denied() {
    // With no auth actions allowed, moto checks every key, and knows none.
    let s3 = S3Server::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).await;
    assert_source_fails(
        source_config("main", &s3.endpoint(), BUCKET, "", ""),
        "access_denied",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_named() {
    let s3 = S3Server::start().await;
    assert_source_fails(
        source_config("main", &s3.endpoint(), "no-such-bucket", "", ""),
        "no_such_bucket",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_backs_off() {
    let port = corral_s3_tests::server::free_port();
    assert_source_fails(
        source_config("main", &format!("http://127.0.0.1:{port}"), BUCKET, "", ""),
        "unreachable",
    )
    .await;
}

fn fetched_bytes(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("corral_source_fetched_bytes_total{source=\"main\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A daemon serving `name` 1.1.0 from a fresh bucket, through `proxy`
/// when given.
async fn serving(s3: &S3Server, name: &str, extra: &str, via: Option<&Proxy>) -> (Setup, Daemon) {
    s3.create_bucket(BUCKET).await;
    release(name, "1.1.0", &s3.endpoint(), BUCKET, "");
    let endpoint = via.map(Proxy::endpoint).unwrap_or_else(|| s3.endpoint());
    let mut setup = Setup::new();
    setup.extra_config = source_config("main", &endpoint, BUCKET, "", extra);
    let daemon = Daemon::start(&setup).await;
    eventually("1.1.0 serving", PICKUP_WAIT, || async {
        (serving_timeout_ms(&daemon.client, name).await == Some(timeout_ms_of("1.1.0")))
            .then_some(())
    })
    .await;
    (setup, daemon)
}

/// After a failed update: the same package, still serving.
async fn assert_unchanged(daemon: &Daemon, name: &str, digest: &str) {
    let detail = daemon.client.detail(name).await;
    assert_eq!(detail.digest, digest, "the installed package changed");
    assert_eq!(
        serving_timeout_ms(&daemon.client, name).await,
        Some(timeout_ms_of("1.1.0"))
    );
    daemon
        .client
        .call_ok(name, "greet", json!({"name": "still"}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_object_is_refused_and_the_installed_version_keeps_serving() {
    let s3 = S3Server::start().await;
    let (_setup, daemon) = serving(&s3, "corrupt", "", None).await;
    let digest = daemon.client.detail("corrupt").await.digest;
    let mut events = daemon.client.events(None).await;
    // 1.2.0 published to a bucket the daemon does not watch, then copied
    // over with its archive flipped by one byte: the checksum first, so
    // the daemon never sees the good archive (a poll between a publish
    // and a flip in place would install it).
    s3.create_bucket("staging").await;
    let p = release("corrupt", "1.2.0", &s3.endpoint(), "staging", "");
    let sha_key = format!("{}.sha256", p.key);
    let sha = s3.get("staging", &sha_key).await;
    let mut bytes = s3.get("staging", &p.key).await;
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    s3.put(BUCKET, &sha_key, sha).await;
    s3.put(BUCKET, &p.key, bytes).await;
    events
        .wait_for("digest_mismatch", PICKUP_WAIT, |r| {
            failed_with(r, "corrupt", "digest_mismatch")
        })
        .await;
    assert_unchanged(&daemon, "corrupt", &digest).await;
    let s = status(&daemon).await;
    let e = s.followed["corrupt"]
        .last_error
        .clone()
        .expect("the plugin's error");
    assert_eq!(problem(&e), "digest_mismatch");
    assert!(
        e.message.contains(&p.sha256),
        "names the expected digest: {e:?}"
    );
    let metrics = daemon.client.metrics().await;
    assert!(
        metrics
            .contains("corral_source_fetches_total{source=\"main\",outcome=\"digest_mismatch\"}"),
        "{metrics}"
    );
    // Nothing of 1.2.0 reached the store: only the serving package.
    let store = _setup.state_dir().join("store");
    let stored: Vec<String> = std::fs::read_dir(&store)
        .expect("the store")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(stored, vec![digest.clone()], "{store:?}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_object_is_refused_before_it_is_downloaded() {
    let s3 = S3Server::start().await;
    let (_setup, daemon) = serving(&s3, "big", "max_object_size = \"2MiB\"", None).await;
    let digest = daemon.client.detail("big").await.digest;
    let fetched_before = fetched_bytes(&daemon.client.metrics().await);
    assert!(fetched_before > 0.0);
    let mut events = daemon.client.events(None).await;
    let v = Version::new("big", "1.2.0").with_payload(3 << 20);
    let out = tempfile::tempdir().expect("tempdir");
    publish(&v.pack(out.path(), None), &s3.endpoint(), BUCKET, "");
    let failed = events
        .wait_for("too_large", PICKUP_WAIT, |r| {
            failed_with(r, "big", "too_large")
        })
        .await;
    let Event::SourceFailed { message, .. } = failed.event else {
        unreachable!()
    };
    assert!(message.contains("max_object_size"), "{message}");
    assert_unchanged(&daemon, "big", &digest).await;
    assert_eq!(
        fetched_bytes(&daemon.client.metrics().await),
        fetched_before,
        "no byte of the big object was downloaded"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_killed_mid_fetch_changes_nothing_and_the_next_poll_recovers() {
    let mut s3 = S3Server::start().await;
    let proxy = Proxy::start(s3.port).await;
    let (_setup, daemon) = serving(&s3, "midway", "", Some(&proxy)).await;
    let digest = daemon.client.detail("midway").await.digest;
    let mut events = daemon.client.events(None).await;
    // A 4 MiB 1.2.0; the proxy lets 256 KiB of it through, then stalls.
    let v = Version::new("midway", "1.2.0").with_payload(4 << 20);
    let out = tempfile::tempdir().expect("tempdir");
    let archive = v.pack(out.path(), None);
    proxy.arm(256 << 10);
    publish(&archive, &s3.endpoint(), BUCKET, "");
    eventually("a stalled download", PICKUP_WAIT, || async {
        proxy.stalled().then_some(())
    })
    .await;
    s3.kill();
    let failed = events
        .wait_for("a broken download", PICKUP_WAIT, |r| {
            matches!(&r.event, Event::SourceFailed { plugin, .. } if plugin == "midway")
                || failed_with(r, "", "unreachable")
        })
        .await;
    if let Event::SourceFailed {
        plugin, problem, ..
    } = &failed.event
        && plugin == "midway"
    {
        assert!(
            matches!(problem.as_str(), "interrupted" | "unreachable"),
            "{failed:?}"
        );
    }
    assert_unchanged(&daemon, "midway", &digest).await;
    let staging: Vec<String> = std::fs::read_dir(_setup.state_dir().join("sources/tmp"))
        .expect("the download directory")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert!(
        staging.is_empty(),
        "half a download left behind: {staging:?}"
    );

    // The store comes back (empty: moto keeps nothing) and 1.2.0 is
    // published again: the next poll installs it.
    let s3 = S3Server::start().await;
    proxy.disarm();
    proxy.set_upstream(s3.port);
    s3.create_bucket(BUCKET).await;
    publish(&archive, &s3.endpoint(), BUCKET, "");
    eventually("1.2.0 serving after the outage", PICKUP_WAIT, || async {
        (serving_timeout_ms(&daemon.client, "midway").await == Some(timeout_ms_of("1.2.0")))
            .then_some(())
    })
    .await;
    let s = status(&daemon).await;
    assert_eq!(s.consecutive_failures, 0, "{s:?}");
    daemon.stop().await;
}
