//! The `s3` host service: plugins reach the buckets the policy grants
//! through corrald's own client (`[services.s3]`), against a real
//! S3-compatible server (moto), driven by the `services-probe` test
//! plugin. Covered: put, get, list and delete with the keys kept under
//! `<plugin>/` in an unmapped bucket (and at the root of a mapped one),
//! two plugins on one bucket not seeing each other, an ungranted bucket
//! refused naming `s3.bucket <name>`, bad keys and bodies, a store that
//! is down (typed `source_error`, and the plugin keeps working), and no
//! `[services.s3]` at all (`service_unavailable`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use corral_daemon_tests::{Daemon, Setup};
use corral_s3_tests::{ACCESS_KEY, S3Server, SECRET_KEY};
use serde_json::{Value, json};

const PROBE: &str = "services-probe";
const SHARED: &str = "plugin-data";
const TEAM: &str = "team-bucket";

fn services_config(endpoint: &str) -> String {
    format!(
        "[services.s3]\nendpoint = {endpoint:?}\nregion = \"us-east-1\"\npath_style = true\naccess_key_id = {ACCESS_KEY:?}\nsecret_access_key = {SECRET_KEY:?}\n"
    )
}

async fn install_probe(setup: &Setup, daemon: &Daemon, name: &str, buckets: &[&str]) {
    let dir = setup.package_copy(PROBE, name, "packages");
    let manifest = dir.join("plugin.toml");
    let mut text = std::fs::read_to_string(&manifest).expect("read the probe's manifest");
    let list: Vec<String> = buckets.iter().map(|b| format!("{b:?}")).collect();
    text.push_str(&format!(
        "\n[permissions.storage]\nbuckets = [{}]\ntables = [\"t\"]\n",
        list.join(", ")
    ));
    std::fs::write(&manifest, text).expect("write the manifest");
    daemon.client.install_path(&dir, true).await.installed(true);
}

async fn request(
    daemon: &Daemon,
    plugin: &str,
    service: &str,
    operation: &str,
    payload: Value,
) -> Result<Value, Value> {
    let out = daemon
        .client
        .call_ok(
            plugin,
            "request",
            json!({"service": service, "operation": operation, "payload": payload}),
        )
        .await
        .output;
    match (out.get("ok"), out.get("err")) {
        (Some(ok), None) => Ok(ok.clone()),
        (None, Some(err)) => Err(err.clone()),
        _ => panic!("the probe answered neither ok nor err: {out}"),
    }
}

async fn s3(
    daemon: &Daemon,
    plugin: &str,
    operation: &str,
    payload: Value,
) -> Result<Value, Value> {
    request(daemon, plugin, "s3", operation, payload).await
}

fn code(err: &Value) -> &str {
    err["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_are_brokered_under_each_plugins_prefix() {
    let mut server = S3Server::start().await;
    server.create_bucket(SHARED).await;
    server.create_bucket(TEAM).await;
    let mut setup = Setup::new();
    setup.extra_config = services_config(&server.endpoint());
    setup.set_policy(&format!(
        "[grantable]\nbuckets = [{SHARED:?}]\n\
         [plugins.s3-a.grant]\nbuckets = [\"team\"]\n\
         [plugins.s3-a.names]\nbuckets = {{ team = {TEAM:?} }}\n"
    ));
    let daemon = Daemon::start(&setup).await;
    install_probe(&setup, &daemon, "s3-a", &[SHARED, "team"]).await;
    install_probe(&setup, &daemon, "s3-b", &[SHARED]).await;

    let body = b"hello \x00 bytes".to_vec();
    let put = s3(
        &daemon,
        "s3-a",
        "put",
        json!({"bucket": SHARED, "key": "a/b.txt", "body": BASE64.encode(&body), "content_type": "text/plain"}),
    )
    .await
    .expect("put");
    assert!(put["etag"].is_string(), "{put}");
    // In the real bucket, under the plugin's name.
    assert_eq!(server.get(SHARED, "s3-a/a/b.txt").await, body);

    let got = s3(
        &daemon,
        "s3-a",
        "get",
        json!({"bucket": SHARED, "key": "a/b.txt"}),
    )
    .await
    .expect("get");
    assert_eq!(
        BASE64.decode(got["body"].as_str().unwrap_or("")).ok(),
        Some(body.clone())
    );
    assert_eq!(got["size"], json!(body.len()));
    assert_eq!(got["content_type"], json!("text/plain"));

    for i in 0..3 {
        s3(
            &daemon,
            "s3-a",
            "put",
            json!({"bucket": SHARED, "key": format!("p/{i}"), "body": ""}),
        )
        .await
        .expect("put");
    }
    let page = s3(
        &daemon,
        "s3-a",
        "list",
        json!({"bucket": SHARED, "prefix": "p/", "limit": 2}),
    )
    .await
    .expect("list");
    let keys: Vec<&str> = page["objects"]
        .as_array()
        .map(|a| a.iter().filter_map(|o| o["key"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(keys, ["p/0", "p/1"], "{page}");
    assert_eq!(page["next"], json!("p/1"));
    let page = s3(
        &daemon,
        "s3-a",
        "list",
        json!({"bucket": SHARED, "prefix": "p/", "after": "p/1"}),
    )
    .await
    .expect("list");
    assert_eq!(page["objects"][0]["key"], json!("p/2"), "{page}");
    assert_eq!(page["next"], Value::Null);

    // The other plugin on the same bucket sees none of it.
    let page = s3(&daemon, "s3-b", "list", json!({"bucket": SHARED}))
        .await
        .expect("list");
    assert_eq!(page["objects"], json!([]), "{page}");
    let err = s3(
        &daemon,
        "s3-b",
        "get",
        json!({"bucket": SHARED, "key": "a/b.txt"}),
    )
    .await
    .expect_err("not its object");
    assert_eq!(code(&err), "source_error", "{err}");
    assert_eq!(err["details"]["problem"], json!("not_found"), "{err}");
    // Nor can it climb out of its prefix.
    let err = s3(
        &daemon,
        "s3-b",
        "get",
        json!({"bucket": SHARED, "key": "../s3-a/a/b.txt"}),
    )
    .await
    .expect_err("a climbing key");
    assert_eq!(code(&err), "invalid_input", "{err}");
    // A bucket it was not granted.
    let err = s3(
        &daemon,
        "s3-b",
        "get",
        json!({"bucket": "team", "key": "x"}),
    )
    .await
    .expect_err("ungranted");
    assert_eq!(code(&err), "permission_denied", "{err}");
    assert_eq!(
        err["details"]["permission"],
        json!("s3.bucket team"),
        "{err}"
    );

    // A mapped bucket is reached as it is.
    s3(
        &daemon,
        "s3-a",
        "put",
        json!({"bucket": "team", "key": "shared.txt", "body": BASE64.encode("t")}),
    )
    .await
    .expect("put");
    assert_eq!(server.get(TEAM, "shared.txt").await, b"t");

    // Bad bodies and keys.
    for payload in [
        json!({"bucket": SHARED, "key": "k", "body": "not base64!"}),
        json!({"bucket": SHARED, "key": "", "body": ""}),
        json!({"bucket": SHARED, "key": "k"}),
    ] {
        let err = s3(&daemon, "s3-a", "put", payload.clone())
            .await
            .expect_err("bad");
        assert_eq!(code(&err), "invalid_input", "{payload}: {err}");
    }

    assert_eq!(
        s3(
            &daemon,
            "s3-a",
            "delete",
            json!({"bucket": SHARED, "key": "a/b.txt"})
        )
        .await,
        Ok(json!({}))
    );
    let err = s3(
        &daemon,
        "s3-a",
        "get",
        json!({"bucket": SHARED, "key": "a/b.txt"}),
    )
    .await
    .expect_err("deleted");
    assert_eq!(err["details"]["problem"], json!("not_found"), "{err}");

    // The store goes down: a typed error, and the plugin keeps working.
    server.kill();
    let err = s3(
        &daemon,
        "s3-a",
        "get",
        json!({"bucket": SHARED, "key": "p/0"}),
    )
    .await
    .expect_err("the store is down");
    assert_eq!(code(&err), "source_error", "{err}");
    assert_eq!(err["details"]["problem"], json!("unreachable"), "{err}");
    let message = err["message"].as_str().unwrap_or("");
    assert!(
        !message.contains(SECRET_KEY) && !message.contains("127.0.0.1"),
        "{message}"
    );
    assert_eq!(
        request(
            &daemon,
            "s3-a",
            "kv",
            "get",
            json!({"table": "t", "key": "k"})
        )
        .await,
        Ok(json!({"value": null}))
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_services_s3_the_service_is_unavailable() {
    let setup = Setup::new();
    setup.set_policy(&format!("[grantable]\nbuckets = [{SHARED:?}]\n"));
    let daemon = Daemon::start(&setup).await;
    install_probe(&setup, &daemon, "s3-none", &[SHARED]).await;
    let err = s3(
        &daemon,
        "s3-none",
        "get",
        json!({"bucket": SHARED, "key": "k"}),
    )
    .await
    .expect_err("no store");
    assert_eq!(code(&err), "service_unavailable", "{err}");
    assert_eq!(err["details"]["service"], json!("s3"), "{err}");
    daemon.stop().await;
}
