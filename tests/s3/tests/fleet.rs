//! The fleet: two corralds (their own state, store and socket) follow
//! one bucket with no coordination. A version published once reaches
//! both and both serve it; republishing the old version rolls both back;
//! pinning a version holds one host there while the other follows.

use corral_daemon_tests::{Daemon, Setup, eventually};
use corral_s3_tests::packages::{Version, publish, timeout_ms_of};
use corral_s3_tests::{PICKUP_WAIT, S3Server, serving_timeout_ms, source_config};
use serde_json::json;

const BUCKET: &str = "fleet";
const PREFIX: &str = "prod";

async fn all_serve(hosts: &[&Daemon], version: &str) {
    let want = timeout_ms_of(version);
    for (i, host) in hosts.iter().enumerate() {
        eventually(
            &format!("host {i} serving {version}"),
            PICKUP_WAIT,
            || async {
                (serving_timeout_ms(&host.client, "app").await == Some(want)).then_some(())
            },
        )
        .await;
        let reply = host
            .client
            .call_ok("app", "greet", json!({"name": "fleet"}))
            .await;
        assert_eq!(reply.output["greeting"], "Hello, fleet!");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_publish_reaches_every_host_and_rolls_back_the_same_way() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    let packed = tempfile::tempdir().expect("tempdir");
    let v1 = Version::new("app", "1.1.0").pack(packed.path(), None);
    let v2 = Version::new("app", "1.2.0").pack(packed.path(), None);
    publish(&v1, &s3.endpoint(), BUCKET, PREFIX);

    let mut setups = Vec::new();
    let mut hosts = Vec::new();
    for _ in 0..2 {
        let mut setup = Setup::new();
        setup.extra_config = source_config("fleet", &s3.endpoint(), BUCKET, PREFIX, "");
        hosts.push(Daemon::start(&setup).await);
        setups.push(setup);
    }
    assert_ne!(hosts[0].socket, hosts[1].socket);
    let refs: Vec<&Daemon> = hosts.iter().collect();
    all_serve(&refs, "1.1.0").await;

    publish(&v2, &s3.endpoint(), BUCKET, PREFIX);
    all_serve(&refs, "1.2.0").await;
    let digests: Vec<String> = futures_digests(&refs).await;
    assert_eq!(digests[0], digests[1], "the same package on every host");

    // Rollback: the old archive published again is the latest (stores
    // keep Last-Modified to the second: publish in a later one).
    next_second().await;
    publish(&v1, &s3.endpoint(), BUCKET, PREFIX);
    all_serve(&refs, "1.1.0").await;

    // Pinning holds host 0 at 1.1.0 while host 1 follows a new publish.
    hosts[0]
        .client
        .post_json(
            "/v1/sources/fleet/plugins/app/install",
            &json!({"version": "=1.1.0"}),
        )
        .await
        .status(200);
    publish(&v2, &s3.endpoint(), BUCKET, PREFIX);
    all_serve(&refs[1..], "1.2.0").await;
    let _ = hosts[0].client.post("/v1/sources/fleet/poll").await;
    assert_eq!(
        serving_timeout_ms(&hosts[0].client, "app").await,
        Some(timeout_ms_of("1.1.0"))
    );

    for host in hosts {
        host.stop().await;
    }
}

/// Waits until the wall clock is in a later second than now.
async fn next_second() {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let start = now();
    while now() == start {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn futures_digests(hosts: &[&Daemon]) -> Vec<String> {
    let mut out = Vec::new();
    for h in hosts {
        out.push(h.client.detail("app").await.digest);
    }
    out
}
