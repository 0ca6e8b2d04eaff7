//! Measurements of S3 sources, not tests: ignored by `cargo test`, run by
//!
//! ```sh
//! cargo xtask package   # then, with the variables it prints:
//! cargo test -p corral-s3-tests --test bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! and recorded in benches/RESULTS.md: publish to serving on two
//! corralds, installing a 10 MiB package, and a source of 10,000 plugins
//! listed and polled (time, and corrald's resident memory).

use corral_daemon_tests::{Daemon, Setup, eventually};
use corral_protocol::sources::{SourcePluginPage, SourceStatus};
use corral_s3_tests::packages::{Version, publish, timeout_ms_of};
use corral_s3_tests::{PICKUP_WAIT, S3Server, serving_timeout_ms, source_config};
use std::time::{Duration, Instant};

const BUCKET: &str = "bench";

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

async fn serving(d: &Daemon, name: &str, version: &str) {
    let want = timeout_ms_of(version);
    eventually(&format!("{name} {version}"), PICKUP_WAIT, || async {
        (serving_timeout_ms(&d.client, name).await == Some(want)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement; see the module's comment"]
async fn publish_to_serving_on_two_corralds() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = Version::new("app", "1.1.0").pack(dir.path(), None);
    publish(&v1, &s3.endpoint(), BUCKET, "");
    let mut setups = Vec::new();
    let mut hosts = Vec::new();
    for _ in 0..2 {
        let mut setup = Setup::new();
        setup.extra_config = source_config("b", &s3.endpoint(), BUCKET, "", "");
        hosts.push(Daemon::start(&setup).await);
        setups.push(setup);
    }
    for h in &hosts {
        serving(h, "app", "1.1.0").await;
    }
    for round in 2..=6u32 {
        let version = format!("1.{round}.0");
        let archive = Version::new("app", &version).pack(dir.path(), None);
        let start = Instant::now();
        publish(&archive, &s3.endpoint(), BUCKET, "");
        let published = start.elapsed();
        let mut each = Vec::new();
        for h in &hosts {
            serving(h, "app", &version).await;
            each.push(start.elapsed());
        }
        println!(
            "publish-to-serving {version}: publish {:.0} ms, host 1 {:.0} ms, host 2 {:.0} ms (poll interval 300 ms)",
            published.as_secs_f64() * 1e3,
            each[0].as_secs_f64() * 1e3,
            each[1].as_secs_f64() * 1e3
        );
    }
    for h in hosts {
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement; see the module's comment"]
async fn install_of_a_10_mib_package() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut setup = Setup::new();
    setup.extra_config = source_config("b", &s3.endpoint(), BUCKET, "", "follow_all = false");
    let daemon = Daemon::start(&setup).await;
    for i in 0..3 {
        let name = format!("big{i}");
        let archive = Version::new(&name, "1.0.0")
            .with_payload(10 << 20)
            .pack(dir.path(), None);
        let size = std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
        publish(&archive, &s3.endpoint(), BUCKET, "");
        let start = Instant::now();
        daemon
            .client
            .post_json(
                &format!("/v1/sources/b/plugins/{name}/install"),
                &serde_json::json!({"load": false}),
            )
            .await
            .status(200);
        println!(
            "install of a {:.1} MiB archive (download, sha256, unpack, store): {:.0} ms",
            size as f64 / 1048576.0,
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement; see the module's comment"]
async fn a_source_of_10000_plugins_listed_and_polled() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    // 10,000 plugins, each one archive and its .sha256 (placeholders: the
    // poll follows none of them, so it lists and groups them all).
    let client = s3.client();
    let start = Instant::now();
    let mut puts = Vec::new();
    for i in 0..10_000 {
        for suffix in [".tar.gz", ".tar.gz.sha256"] {
            let key = format!("p/plugin-{i:05}/1.0.0{suffix}");
            puts.push(key);
        }
    }
    let mut set = tokio::task::JoinSet::new();
    for chunk in puts.chunks(puts.len() / 16 + 1) {
        let chunk = chunk.to_vec();
        let client = client.clone();
        set.spawn(async move {
            for key in chunk {
                client
                    .put_object()
                    .bucket(BUCKET)
                    .key(&key)
                    .body(b"x".to_vec().into())
                    .send()
                    .await
                    .expect("put");
            }
        });
    }
    while set.join_next().await.is_some() {}
    println!(
        "filling the bucket with 20,000 objects: {:.1} s",
        start.elapsed().as_secs_f64()
    );

    let mut setup = Setup::new();
    setup.extra_config = source_config("b", &s3.endpoint(), BUCKET, "p", "follow_all = false")
        // One poll at a time, the ones this measures.
        .replace("poll_interval = \"300ms\"", "poll_interval = \"1h\"");
    let daemon = Daemon::start(&setup).await;
    let rss_before = rss_kib(daemon.pid);
    let start = Instant::now();
    let mut after: Option<String> = None;
    let mut count = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/sources/b/plugins?limit=1000&after={}", urlencode(a)),
            None => "/v1/sources/b/plugins?limit=1000".into(),
        };
        let page: SourcePluginPage = daemon.client.get(&path).await.ok();
        count += page.plugins.len();
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(count, 10_000);
    println!(
        "listing 10,000 plugins through the API, 1,000 a page: {:.0} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    for _ in 0..3 {
        let start = Instant::now();
        let status: SourceStatus = daemon.client.post("/v1/sources/b/poll").await.ok();
        assert!(status.last_error.is_none(), "{status:?}");
        println!(
            "a poll of 10,000 plugins (20,000 objects listed and grouped): {:.0} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!(
        "corrald resident memory: {} KiB before the listing, {} KiB after",
        rss_before,
        rss_kib(daemon.pid)
    );
    daemon.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
