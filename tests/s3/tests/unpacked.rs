//! The unpacked layout (seed 000's bucket): `<base>/<plugin>/` holding
//! the package's files. S3 keeps no modes; the entry the manifest names
//! is made executable. A changed file is picked up like a new version.

use corral_daemon_tests::{Daemon, Setup, eventually};
use corral_s3_tests::packages::{Version, timeout_ms_of};
use corral_s3_tests::{PICKUP_WAIT, S3Server, serving_timeout_ms, source_config};
use serde_json::json;

const BUCKET: &str = "seed";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_kept_as_files_is_installed_and_updated() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    let v1 = Version::new("loose", "1.1.0");
    for rel in ["plugin.toml", "bin/hello"] {
        let bytes = std::fs::read(v1.dir.join(rel)).expect("read");
        s3.put(BUCKET, &format!("plugins/loose/{rel}"), bytes).await;
    }
    let mut setup = Setup::new();
    setup.extra_config = source_config(
        "seed",
        &s3.endpoint(),
        BUCKET,
        "plugins",
        "layout = \"unpacked\"",
    );
    let daemon = Daemon::start(&setup).await;
    eventually("1.1.0 serving", PICKUP_WAIT, || async {
        (serving_timeout_ms(&daemon.client, "loose").await == Some(timeout_ms_of("1.1.0")))
            .then_some(())
    })
    .await;
    let reply = daemon
        .client
        .call_ok("loose", "greet", json!({"name": "seed"}))
        .await;
    assert_eq!(reply.output["greeting"], "Hello, seed!");

    let v2 = Version::new("loose", "1.2.0");
    s3.put(
        BUCKET,
        "plugins/loose/plugin.toml",
        std::fs::read(v2.dir.join("plugin.toml")).expect("read"),
    )
    .await;
    eventually("1.2.0 serving", PICKUP_WAIT, || async {
        (serving_timeout_ms(&daemon.client, "loose").await == Some(timeout_ms_of("1.2.0")))
            .then_some(())
    })
    .await;
    assert_eq!(daemon.client.detail("loose").await.summary.version, "1.2.0");
    daemon.stop().await;
}
