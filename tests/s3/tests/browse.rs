//! Browsing a source through the API and the CLI: plugins page by page,
//! whether one exists, its versions and their metadata, a version's
//! manifest and files; installing a range or a version (which the source
//! then follows); and `.zip` uploads.

use corral_daemon_tests::{Daemon, Setup, eventually};
use corral_protocol::sources::{
    SourceFiles, SourceManifest, SourcePlugin, SourcePluginPage, SourceStatus,
};
use corral_s3_tests::packages::{Version, corral, release, timeout_ms_of};
use corral_s3_tests::{PICKUP_WAIT, S3Server, serving_timeout_ms, source_config};
use serde_json::json;
use std::io::Write;

const BUCKET: &str = "catalog";
const PREFIX: &str = "shelf";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_is_listed_page_by_page_and_its_versions_described() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    let names = ["alpha", "bravo", "charlie", "delta", "echo"];
    for n in names {
        release(n, "0.1.0", &s3.endpoint(), BUCKET, PREFIX);
    }
    let mut published = Vec::new();
    for v in ["1.0.0", "2.0.0", "1.1.0"] {
        published.push((v, release("multi", v, &s3.endpoint(), BUCKET, PREFIX)));
    }
    let mut setup = Setup::new();
    setup.extra_config =
        source_config("main", &s3.endpoint(), BUCKET, PREFIX, "follow_all = false");
    let daemon = Daemon::start(&setup).await;

    // Pages of two, followed to the end.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/sources/main/plugins?limit=2&after={}", urlencode(a)),
            None => "/v1/sources/main/plugins?limit=2".to_string(),
        };
        let page: SourcePluginPage = daemon.client.get(&path).await.ok();
        assert!(page.plugins.len() <= 2, "{page:?}");
        seen.extend(page.plugins);
        pages += 1;
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(
        seen,
        ["alpha", "bravo", "charlie", "delta", "echo", "multi"]
    );
    assert_eq!(pages, 3);
    daemon
        .client
        .get("/v1/sources/main/plugins?limit=0")
        .await
        .error(400, "invalid_input");

    // Metadata: every version, newest first, with what the publisher said.
    let multi: SourcePlugin = daemon
        .client
        .get("/v1/sources/main/plugins/multi")
        .await
        .ok();
    let versions: Vec<&str> = multi.versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(versions, ["2.0.0", "1.1.0", "1.0.0"]);
    for v in &multi.versions {
        let (_, p) = published
            .iter()
            .find(|(n, _)| *n == v.version)
            .expect("published");
        assert_eq!(v.sha256.as_deref(), Some(p.sha256.as_str()), "{v:?}");
        assert_eq!(v.key, p.key);
        assert!(
            v.size > 0 && v.etag.is_some() && v.last_modified.is_some(),
            "{v:?}"
        );
        assert!(!v.signed);
    }
    // Exists, or not.
    let e = daemon
        .client
        .get("/v1/sources/main/plugins/nothing-here")
        .await
        .error(404, "source_error");
    assert_eq!(e["problem"], "not_found");
    let e = daemon
        .client
        .get("/v1/sources/elsewhere/plugins")
        .await
        .error(404, "source_error");
    assert!(e["message"].as_str().unwrap_or("").contains("main"), "{e}");

    // A range's manifest and files, read without installing.
    let m: SourceManifest = daemon
        .client
        .get("/v1/sources/main/plugins/multi/manifest?version=%5E1")
        .await
        .ok();
    assert_eq!((m.name.as_str(), m.version.as_str()), ("multi", "1.1.0"));
    assert_eq!(m.manifest.plugin.entry.as_str(), "bin/hello");
    let f: SourceFiles = daemon
        .client
        .get("/v1/sources/main/plugins/multi/files?version=2.0.0")
        .await
        .ok();
    assert_eq!(f.version, "2.0.0");
    let paths: Vec<&str> = f.files.iter().map(|f| f.path.as_str()).collect();
    assert!(
        paths.contains(&"plugin.toml") && paths.contains(&"bin/hello"),
        "{paths:?}"
    );
    assert!(
        daemon.client.list().await.is_empty(),
        "browsing installs nothing"
    );

    // The CLI says the same.
    let socket = daemon.socket.display().to_string();
    let out = corral(
        &[
            "--socket".into(),
            socket.clone(),
            "source".into(),
            "ls".into(),
            "main".into(),
            "--limit".into(),
            "10".into(),
        ],
        &[],
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["alpha", "bravo", "charlie", "delta", "echo", "multi"]
    );
    let out = corral(
        &[
            "--socket".into(),
            socket.clone(),
            "source".into(),
            "show".into(),
            "main".into(),
            "multi".into(),
        ],
        &[],
    );
    assert!(
        out.contains("2.0.0") && out.contains(&published[0].1.sha256),
        "{out}"
    );

    // Install a range: the highest match, then followed.
    let installed = daemon
        .client
        .post_json(
            "/v1/sources/main/plugins/multi/install",
            &json!({"version": "^1", "load": true}),
        )
        .await
        .status(200)
        .value();
    assert_eq!(installed["version"], "1.1.0", "{installed}");
    assert_eq!(
        serving_timeout_ms(&daemon.client, "multi").await,
        Some(timeout_ms_of("1.1.0"))
    );
    release("multi", "1.3.0", &s3.endpoint(), BUCKET, PREFIX);
    eventually("1.3.0, the new highest of ^1", PICKUP_WAIT, || async {
        (serving_timeout_ms(&daemon.client, "multi").await == Some(timeout_ms_of("1.3.0")))
            .then_some(())
    })
    .await;
    // Pin back to a version (a rollback): it stays there.
    let out = corral(
        &[
            "--socket".into(),
            socket.clone(),
            "source".into(),
            "install".into(),
            "main".into(),
            "multi".into(),
            "--version".into(),
            "1.0.0".into(),
        ],
        &[],
    );
    assert!(out.contains("1.0.0"), "{out}");
    assert_eq!(
        serving_timeout_ms(&daemon.client, "multi").await,
        Some(timeout_ms_of("1.0.0"))
    );
    let status: SourceStatus = daemon.client.post("/v1/sources/main/poll").await.ok();
    assert_eq!(status.followed["multi"].follows, "=1.0.0");
    assert_eq!(
        status.followed["multi"].installed_version.as_deref(),
        Some("1.0.0")
    );
    assert_eq!(
        serving_timeout_ms(&daemon.client, "multi").await,
        Some(timeout_ms_of("1.0.0"))
    );
    daemon
        .client
        .post_json(
            "/v1/sources/main/plugins/multi/install",
            &json!({"version": "9.9.9"}),
        )
        .await
        .error(404, "source_error");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_uploads_install_like_tarballs() {
    let setup = Setup::new();
    let daemon = Daemon::start(&setup).await;
    let v = Version::new("zipped", "1.0.0");
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (rel, mode) in [("plugin.toml", 0o644), ("bin/hello", 0o755)] {
        w.start_file(
            format!("zipped/{rel}"),
            zip::write::SimpleFileOptions::default().unix_permissions(mode),
        )
        .expect("start a file");
        w.write_all(&std::fs::read(v.dir.join(rel)).expect("read"))
            .expect("write");
    }
    let bytes = w.finish().expect("finish").into_inner();
    let response = daemon
        .client
        .send(
            &corral_daemon_tests::Request::post("/v1/plugins?load=true")
                .raw("application/zip", bytes),
        )
        .await;
    let installed = response.installed(true);
    assert_eq!(installed.plugin, "zipped");
    let reply = daemon
        .client
        .call_ok("zipped", "greet", json!({"name": "zip"}))
        .await;
    assert_eq!(reply.output["greeting"], "Hello, zip!");
    // A zip with `..` is refused and installs nothing.
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file("../evil", zip::write::SimpleFileOptions::default())
        .expect("start");
    w.write_all(b"x").expect("write");
    let bytes = w.finish().expect("finish").into_inner();
    let e = daemon
        .client
        .send(&corral_daemon_tests::Request::post("/v1/plugins").raw("application/zip", bytes))
        .await
        .error(400, "invalid_package");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("leaves the package"),
        "{e}"
    );
    assert_eq!(daemon.client.list().await.len(), 1);
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
