//! The `kv` service's checks and naming, with hand-made grants, against a
//! real database file. The daemon-level tests (tests/daemon) drive the
//! same paths through a real plugin.

use super::*;
use corral_protocol::services::NameScope;
use std::collections::BTreeMap;

fn grants(plugin: &str, tables: &[&str], map: &[(&str, &str)], quota: u64) -> ServiceGrants {
    ServiceGrants {
        tables: tables.iter().map(|t| t.to_string()).collect(),
        table_names: NameScope {
            prefix: format!("{plugin}_"),
            map: map
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<BTreeMap<_, _>>(),
        },
        storage_quota: quota,
        ..ServiceGrants::default()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: Db,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("succeeds");
    let db = Db::open(&dir.path().join("kv.redb")).expect("succeeds");
    Fixture { _dir: dir, db }
}

fn call(
    f: &Fixture,
    plugin: &str,
    g: &ServiceGrants,
    op: &str,
    payload: serde_json::Value,
) -> Result<serde_json::Value, CorralError> {
    let op = prepare(plugin, g, op, payload.to_string().as_bytes())?;
    let out = op.run(&f.db).map_err(|e| db_error(plugin, "test", e))?;
    Ok(serde_json::from_slice(&out).expect("succeeds"))
}

#[test]
fn own_tables_round_trip() {
    let f = fixture();
    let g = grants("a", &["users"], &[], 1 << 20);
    let v = serde_json::json!({"name": "ada", "n": [1, 2]});
    assert_eq!(
        call(
            &f,
            "a",
            &g,
            "put",
            serde_json::json!({"table": "users", "key": "u1", "value": v})
        )
        .expect("succeeds"),
        serde_json::json!({})
    );
    assert_eq!(
        call(
            &f,
            "a",
            &g,
            "get",
            serde_json::json!({"table": "users", "key": "u1"})
        )
        .expect("succeeds"),
        serde_json::json!({ "value": v })
    );
    // Stored under the plugin's prefix.
    assert!(f.db.get("a_users", "u1").expect("succeeds").is_some());
    assert_eq!(
        call(
            &f,
            "a",
            &g,
            "delete",
            serde_json::json!({"table": "users", "key": "u1"})
        )
        .expect("succeeds"),
        serde_json::json!({"deleted": true})
    );
    assert_eq!(
        call(
            &f,
            "a",
            &g,
            "get",
            serde_json::json!({"table": "users", "key": "u1"})
        )
        .expect("succeeds"),
        serde_json::json!({"value": null})
    );
}

#[test]
fn ungranted_tables_are_refused_naming_the_permission() {
    let f = fixture();
    let g = grants("a", &["users"], &[], 1 << 20);
    for op in ["get", "put", "delete", "list"] {
        let payload = if op == "list" {
            serde_json::json!({"table": "secrets"})
        } else if op == "put" {
            serde_json::json!({"table": "secrets", "key": "k", "value": 1})
        } else {
            serde_json::json!({"table": "secrets", "key": "k"})
        };
        let err2 = call(&f, "a", &g, op, payload).expect_err("refused");
        assert_eq!(err2.code(), "permission_denied", "{op}");
        assert!(
            matches!(&err2.kind, ErrorKind::PermissionDenied { permission: Some(p) } if p == "kv.table secrets"),
            "{op}: {err2:?}"
        );
    }
}

#[test]
fn same_names_in_two_plugins_never_meet_unless_mapped() {
    let f = fixture();
    let a = grants(
        "a",
        &["users", "shared"],
        &[("shared", "team_shared")],
        1 << 20,
    );
    let b = grants(
        "b",
        &["users", "common"],
        &[("common", "team_shared")],
        1 << 20,
    );
    call(
        &f,
        "a",
        &a,
        "put",
        serde_json::json!({"table": "users", "key": "k", "value": "from a"}),
    )
    .expect("succeeds");
    assert_eq!(
        call(
            &f,
            "b",
            &b,
            "get",
            serde_json::json!({"table": "users", "key": "k"})
        )
        .expect("succeeds"),
        serde_json::json!({"value": null})
    );
    call(
        &f,
        "a",
        &a,
        "put",
        serde_json::json!({"table": "shared", "key": "k", "value": "both"}),
    )
    .expect("succeeds");
    assert_eq!(
        call(
            &f,
            "b",
            &b,
            "get",
            serde_json::json!({"table": "common", "key": "k"})
        )
        .expect("succeeds"),
        serde_json::json!({"value": "both"})
    );
    // The shared table has no owner: a purge of either leaves it.
    f.db.purge("a").expect("succeeds");
    assert!(f.db.get("team_shared", "k").expect("succeeds").is_some());
    assert!(f.db.get("a_users", "k").expect("succeeds").is_none());
}

#[test]
fn the_quota_holds_and_a_refused_put_changes_nothing() {
    let f = fixture();
    let g = grants("a", &["t"], &[], 40);
    // "k1" + "\"0123456789\"" = 14 bytes.
    call(
        &f,
        "a",
        &g,
        "put",
        serde_json::json!({"table": "t", "key": "k1", "value": "0123456789"}),
    )
    .expect("succeeds");
    call(
        &f,
        "a",
        &g,
        "put",
        serde_json::json!({"table": "t", "key": "k2", "value": "0123456789"}),
    )
    .expect("succeeds");
    let err = call(
        &f,
        "a",
        &g,
        "put",
        serde_json::json!({"table": "t", "key": "k3", "value": "0123456789"}),
    )
    .expect_err("refused");
    assert!(
        matches!(
            err.kind,
            ErrorKind::QuotaExceeded {
                quota_bytes: 40,
                used_bytes: 28
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        call(
            &f,
            "a",
            &g,
            "get",
            serde_json::json!({"table": "t", "key": "k3"})
        )
        .expect("succeeds"),
        serde_json::json!({"value": null})
    );
    call(
        &f,
        "a",
        &g,
        "delete",
        serde_json::json!({"table": "t", "key": "k1"}),
    )
    .expect("succeeds");
    call(
        &f,
        "a",
        &g,
        "put",
        serde_json::json!({"table": "t", "key": "k3", "value": "0123456789"}),
    )
    .expect("succeeds");
}

#[test]
fn a_shared_table_counts_against_each_user() {
    let f = fixture();
    let a = grants("a", &["s"], &[("s", "shared")], 1000);
    let b = grants("b", &["s"], &[("s", "shared")], 20);
    call(
        &f,
        "a",
        &a,
        "put",
        serde_json::json!({"table": "s", "key": "k", "value": "x".repeat(30)}),
    )
    .expect("succeeds");
    let err = call(
        &f,
        "b",
        &b,
        "put",
        serde_json::json!({"table": "s", "key": "k2", "value": 1}),
    )
    .expect_err("refused");
    assert_eq!(err.code(), "quota_exceeded");
}

#[test]
fn bad_input_is_refused_naming_what_is_wrong() {
    let f = fixture();
    let g = grants("a", &["t"], &[], 1 << 20);
    let cases = [
        (
            "get",
            serde_json::json!({"table": "t", "key": ""}),
            "key is 0 bytes",
        ),
        (
            "get",
            serde_json::json!({"table": "t", "key": "k".repeat(1025)}),
            "1 to 1024",
        ),
        (
            "put",
            serde_json::json!({"table": "t", "key": "k"}),
            "missing field `value`",
        ),
        (
            "get",
            serde_json::json!({"table": "t", "key": 7}),
            "bad payload",
        ),
        (
            "get",
            serde_json::json!({"table": "t", "key": "k", "extra": 1}),
            "unknown field",
        ),
        (
            "list",
            serde_json::json!({"table": "t", "limit": 1001}),
            "limit 1001",
        ),
        (
            "list",
            serde_json::json!({"table": "t", "limit": 0}),
            "limit 0",
        ),
        (
            "list",
            serde_json::json!({"table": "t", "after": "a".repeat(1025)}),
            "after is 1025",
        ),
        ("scan", serde_json::json!({"table": "t"}), "no operation"),
    ];
    for (op, payload, want) in cases {
        let err = call(&f, "a", &g, op, payload).expect_err("refused");
        assert_eq!(err.code(), "invalid_input", "{op}: {err:?}");
        assert!(err.message.contains(want), "{op}: {}", err.message);
    }
    let err = prepare("a", &g, "get", b"not json").err().expect("refused");
    assert_eq!(err.code(), "invalid_input");
    // A 1024-byte key is fine.
    call(
        &f,
        "a",
        &g,
        "put",
        serde_json::json!({"table": "t", "key": "k".repeat(1024), "value": 1}),
    )
    .expect("succeeds");
}

#[test]
fn list_pages_through_every_key_once() {
    let f = fixture();
    let g = grants("a", &["t"], &[], 1 << 20);
    for i in 0..25 {
        call(
            &f,
            "a",
            &g,
            "put",
            serde_json::json!({"table": "t", "key": format!("k{i:02}"), "value": i}),
        )
        .expect("succeeds");
    }
    call(
        &f,
        "a",
        &g,
        "put",
        serde_json::json!({"table": "t", "key": "other", "value": 0}),
    )
    .expect("succeeds");
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = call(
            &f,
            "a",
            &g,
            "list",
            serde_json::json!({"table": "t", "prefix": "k", "after": after, "limit": 10}),
        )
        .expect("succeeds");
        let keys: Vec<String> = serde_json::from_value(page["keys"].clone()).expect("succeeds");
        assert!(keys.len() <= 10);
        seen.extend(keys);
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    let want: Vec<String> = (0..25).map(|i| format!("k{i:02}")).collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn a_corrupt_database_refuses_requests_naming_the_file() {
    let dir = tempfile::tempdir().expect("succeeds");
    std::fs::create_dir_all(dir.path().join("services")).expect("succeeds");
    std::fs::write(dir.path().join(DB_FILE), vec![0x42; 8192]).expect("succeeds");
    let storage = Storage::open(dir.path());
    let err = storage.purge("a").await.expect_err("refused");
    assert_eq!(err.code(), "service_unavailable");
    assert!(err.message.contains("kv.redb"), "{}", err.message);
    // The file is left for the operator, untouched.
    assert_eq!(
        std::fs::read(dir.path().join(DB_FILE)).expect("succeeds"),
        vec![0x42; 8192]
    );
}

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().expect("succeeds");
    {
        let db = Db::open(&dir.path().join(DB_FILE)).expect("succeeds");
        let g = grants("a", &["t"], &[], 1 << 20);
        let op =
            prepare("a", &g, "put", br#"{"table":"t","key":"k","value":[1]}"#).expect("succeeds");
        op.run(&db).expect("succeeds");
    }
    let storage = Storage::open(dir.path());
    let purged = storage.purge("a").await.expect("succeeds");
    assert_eq!(purged.tables, ["a_t"]);
    assert_eq!(purged.bytes, 4);
}
