//! The `kv` host service against the real corrald, driven by the
//! `services-probe` test plugin (its method `request` sends one request
//! and returns `{"ok": body}` or `{"err": {code, message, details}}`).
//!
//! Covered: a plugin's own tables (put, get, list pages, delete), data
//! surviving a daemon restart, two plugins' same-named tables never
//! meeting, a table shared through the operator's name map, an ungranted
//! table refused naming `kv.table <name>`, the quota (refused with its
//! figures, nothing changed, the next put after a delete works),
//! oversized and malformed requests, and data removed with the plugin
//! only when the operator asks.

use corral_daemon_tests::{Daemon, Request, Setup};
use serde_json::{Value, json};
use std::path::PathBuf;

const PROBE: &str = "services-probe";

/// Installs a copy of the probe named `name` asking for `tables`.
async fn install_probe(setup: &Setup, daemon: &Daemon, name: &str, tables: &[&str]) -> PathBuf {
    let dir = setup.package_copy(PROBE, name, "packages");
    let manifest = dir.join("plugin.toml");
    let mut text = std::fs::read_to_string(&manifest).expect("read the probe's manifest");
    let list: Vec<String> = tables.iter().map(|t| format!("{t:?}")).collect();
    text.push_str(&format!(
        "\n[permissions.storage]\ntables = [{}]\n",
        list.join(", ")
    ));
    std::fs::write(&manifest, text).expect("write the manifest");
    daemon.client.install_path(&dir, true).await.installed(true);
    dir
}

/// One `kv` request through the probe: the body, or the error object.
async fn kv(
    daemon: &Daemon,
    plugin: &str,
    operation: &str,
    payload: Value,
) -> Result<Value, Value> {
    let out = daemon
        .client
        .call_ok(
            plugin,
            "request",
            json!({"service": "kv", "operation": operation, "payload": payload}),
        )
        .await
        .output;
    match (out.get("ok"), out.get("err")) {
        (Some(ok), None) => Ok(ok.clone()),
        (None, Some(err)) => Err(err.clone()),
        _ => panic!("the probe answered neither ok nor err: {out}"),
    }
}

fn code(err: &Value) -> &str {
    err["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_tables_round_trip_and_survive_a_restart() {
    let setup = Setup::new();
    let daemon = Daemon::start(&setup).await;
    install_probe(&setup, &daemon, "kv-a", &["users"]).await;
    install_probe(&setup, &daemon, "kv-b", &["users"]).await;

    let value = json!({"name": "ada", "tags": ["x", 1, null]});
    assert_eq!(
        kv(
            &daemon,
            "kv-a",
            "put",
            json!({"table": "users", "key": "u1", "value": value})
        )
        .await,
        Ok(json!({}))
    );
    assert_eq!(
        kv(
            &daemon,
            "kv-a",
            "get",
            json!({"table": "users", "key": "u1"})
        )
        .await,
        Ok(json!({ "value": value }))
    );
    // Same table name, another plugin: its own prefixed table, empty.
    assert_eq!(
        kv(
            &daemon,
            "kv-b",
            "get",
            json!({"table": "users", "key": "u1"})
        )
        .await,
        Ok(json!({"value": null}))
    );
    // A table it was not granted, whatever it is called.
    for table in ["secrets", "kv-a_users"] {
        let err = kv(&daemon, "kv-b", "get", json!({"table": table, "key": "u1"}))
            .await
            .expect_err("an ungranted table");
        assert_eq!(code(&err), "permission_denied", "{err}");
        assert_eq!(
            err["details"]["permission"],
            json!(format!("kv.table {table}")),
            "{err}"
        );
    }

    daemon.stop().await;
    let daemon = Daemon::start(&setup).await;
    assert_eq!(
        kv(
            &daemon,
            "kv-a",
            "get",
            json!({"table": "users", "key": "u1"})
        )
        .await,
        Ok(json!({ "value": value })),
        "the data survived the restart"
    );
    assert_eq!(
        kv(
            &daemon,
            "kv-a",
            "delete",
            json!({"table": "users", "key": "u1"})
        )
        .await,
        Ok(json!({"deleted": true}))
    );
    assert_eq!(
        kv(
            &daemon,
            "kv-a",
            "delete",
            json!({"table": "users", "key": "u1"})
        )
        .await,
        Ok(json!({"deleted": false}))
    );
    assert_eq!(
        kv(
            &daemon,
            "kv-a",
            "get",
            json!({"table": "users", "key": "u1"})
        )
        .await,
        Ok(json!({"value": null}))
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_shared_through_the_name_map_reaches_both() {
    let setup = Setup::new();
    setup.set_policy(
        "[plugins.kv-owner.names]\ntables = { team = \"team_data\" }\n\
         [plugins.kv-reader.names]\ntables = { common = \"team_data\" }\n",
    );
    let daemon = Daemon::start(&setup).await;
    install_probe(&setup, &daemon, "kv-owner", &["team"]).await;
    install_probe(&setup, &daemon, "kv-reader", &["common"]).await;
    kv(
        &daemon,
        "kv-owner",
        "put",
        json!({"table": "team", "key": "k", "value": "from owner"}),
    )
    .await
    .expect("put");
    assert_eq!(
        kv(
            &daemon,
            "kv-reader",
            "get",
            json!({"table": "common", "key": "k"})
        )
        .await,
        Ok(json!({"value": "from owner"}))
    );
    kv(
        &daemon,
        "kv-reader",
        "put",
        json!({"table": "common", "key": "k2", "value": 2}),
    )
    .await
    .expect("put");
    assert_eq!(
        kv(&daemon, "kv-owner", "list", json!({"table": "team"})).await,
        Ok(json!({"keys": ["k", "k2"], "next": null}))
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_holds_and_bad_requests_are_refused_by_type() {
    let setup = Setup::new();
    setup.set_policy(
        "[plugins.kv-q.services]\nstorage_quota = \"200B\"\nrequest_max_bytes = \"4KiB\"\n",
    );
    let daemon = Daemon::start(&setup).await;
    install_probe(&setup, &daemon, "kv-q", &["t"]).await;
    let fifty = "x".repeat(48); // "k0" + "\"x..x\"" = 52 bytes a key
    for i in 0..3 {
        kv(
            &daemon,
            "kv-q",
            "put",
            json!({"table": "t", "key": format!("k{i}"), "value": fifty}),
        )
        .await
        .expect("under the quota");
    }
    let err = kv(
        &daemon,
        "kv-q",
        "put",
        json!({"table": "t", "key": "k3", "value": fifty}),
    )
    .await
    .expect_err("past the quota");
    assert_eq!(code(&err), "quota_exceeded", "{err}");
    assert_eq!(err["details"]["quota_bytes"], json!(200), "{err}");
    assert_eq!(err["details"]["used_bytes"], json!(156), "{err}");
    assert_eq!(
        kv(&daemon, "kv-q", "get", json!({"table": "t", "key": "k3"})).await,
        Ok(json!({"value": null})),
        "the refused put changed nothing"
    );
    kv(
        &daemon,
        "kv-q",
        "delete",
        json!({"table": "t", "key": "k0"}),
    )
    .await
    .expect("delete");
    kv(
        &daemon,
        "kv-q",
        "put",
        json!({"table": "t", "key": "k3", "value": fifty}),
    )
    .await
    .expect("room again after a delete");

    // Larger than the request limit: refused before the service.
    let err = kv(
        &daemon,
        "kv-q",
        "put",
        json!({"table": "t", "key": "big", "value": "y".repeat(8192)}),
    )
    .await
    .expect_err("oversized");
    assert_eq!(code(&err), "payload_too_large", "{err}");
    // Malformed: the wrong shape, a key too long, an unknown operation.
    for (op, payload) in [
        ("put", json!({"table": "t", "key": "k"})),
        ("get", json!({"table": "t", "key": 5})),
        ("get", json!({"table": "t", "key": "k".repeat(1025)})),
        ("scan", json!({"table": "t"})),
        ("list", json!({"table": "t", "limit": 5000})),
    ] {
        let err = kv(&daemon, "kv-q", op, payload.clone())
            .await
            .expect_err("malformed");
        assert_eq!(code(&err), "invalid_input", "{op} {payload}: {err}");
    }
    // And the plugin keeps working.
    assert_eq!(
        kv(&daemon, "kv-q", "list", json!({"table": "t", "limit": 2})).await,
        Ok(json!({"keys": ["k1", "k2"], "next": "k2"}))
    );
    assert_eq!(
        kv(
            &daemon,
            "kv-q",
            "list",
            json!({"table": "t", "limit": 2, "after": "k2"})
        )
        .await,
        Ok(json!({"keys": ["k3"], "next": null}))
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_is_removed_with_the_plugin_only_on_request() {
    let setup = Setup::new();
    let daemon = Daemon::start(&setup).await;
    let dir = install_probe(&setup, &daemon, "kv-p", &["t"]).await;
    kv(
        &daemon,
        "kv-p",
        "put",
        json!({"table": "t", "key": "k", "value": 1}),
    )
    .await
    .expect("put");

    let removed = daemon
        .client
        .send(&Request::delete("/v1/plugins/kv-p"))
        .await
        .status(200)
        .value();
    assert!(removed.get("purged").is_none(), "{removed}");
    daemon.client.install_path(&dir, true).await.installed(true);
    assert_eq!(
        kv(&daemon, "kv-p", "get", json!({"table": "t", "key": "k"})).await,
        Ok(json!({"value": 1})),
        "a plain removal keeps the data"
    );

    let removed = daemon
        .client
        .send(&Request::delete("/v1/plugins/kv-p?purge_data=true"))
        .await
        .status(200)
        .value();
    assert_eq!(removed["purged"]["tables"], json!(["kv-p_t"]), "{removed}");
    daemon.client.install_path(&dir, true).await.installed(true);
    assert_eq!(
        kv(&daemon, "kv-p", "get", json!({"table": "t", "key": "k"})).await,
        Ok(json!({"value": null})),
        "purged on request"
    );
    let e = daemon
        .client
        .send(&Request::delete("/v1/plugins/kv-p?purge=yes"))
        .await
        .error(400, "invalid_input");
    assert!(e["message"].as_str().unwrap_or("").contains("purge"), "{e}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_database_refuses_kv_and_the_daemon_still_serves() {
    let setup = Setup::new();
    let db = setup.state_dir().join("services/kv.redb");
    std::fs::create_dir_all(db.parent().expect("a parent")).expect("mkdir");
    std::fs::write(&db, vec![0x42u8; 8192]).expect("write a corrupt file");
    let daemon = Daemon::start(&setup).await;
    install_probe(&setup, &daemon, "kv-c", &["t"]).await;
    let err = kv(&daemon, "kv-c", "get", json!({"table": "t", "key": "k"}))
        .await
        .expect_err("no database");
    assert_eq!(code(&err), "service_unavailable", "{err}");
    assert!(
        err["message"].as_str().unwrap_or("").contains("kv.redb"),
        "the file is named: {err}"
    );
    assert!(daemon.log().contains("kv.redb"), "and logged");
    assert_eq!(
        std::fs::read(&db).expect("read"),
        vec![0x42u8; 8192],
        "the file is left for the operator"
    );
    daemon.stop().await;
}
