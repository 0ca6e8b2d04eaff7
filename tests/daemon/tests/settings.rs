//! Plugin settings end to end: the manifest's `[config]` schema, values
//! from the policy and from `PATCH /v1/plugins/{name}/config`, what the
//! plugin receives in `Init.config` (hello's `limits` reports it), the
//! typed refusal of a value that does not fit, and a change that swaps
//! only that plugin without failing a call.

use corral_daemon_tests::{Daemon, Request, Setup, eventually};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const SCHEMA: &str = r#"
[config]
type = "object"
additionalProperties = false
properties.greeting = { type = "string", default = "hello" }
properties.retries = { type = "integer", minimum = 0, maximum = 5 }
"#;

/// Appends the settings schema to a package's manifest.
fn add_schema(package: &Path, schema: &str) {
    let manifest = package.join("plugin.toml");
    let mut text = std::fs::read_to_string(&manifest).expect("read plugin.toml");
    text.push_str(schema);
    std::fs::write(&manifest, text).expect("write plugin.toml");
}

fn patch(plugin: &str, body: &Value) -> Request {
    Request::new("PATCH", &format!("/v1/plugins/{plugin}/config")).json(body)
}

async fn settings_seen_by(api: &corral_daemon_tests::Client, plugin: &str) -> Value {
    api.call_ok(plugin, "limits", Value::Null).await.output["config"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_reach_the_plugin_validated_and_survive_a_restart() {
    let setup = Setup::new()
        .package("hello")
        .with_policy("[plugins.hello]\nsettings = { retries = 1 }\n");
    add_schema(&setup.sources().join("hello"), SCHEMA);
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();

    // The policy's value, and the schema's default for the rest.
    let expected = json!({"greeting": "hello", "retries": 1});
    assert_eq!(settings_seen_by(&api, "hello").await, expected);
    assert_eq!(
        api.get("/v1/plugins/hello/config").await.ok::<Value>(),
        expected
    );
    assert_eq!(api.detail("hello").await.settings, Some(expected.clone()));
    let pid = api.child_pids("hello").await;

    // A value over the maximum: typed, named, and nothing changes.
    let error = api
        .send(&patch("hello", &json!({"retries": 9})))
        .await
        .error(400, "invalid_config");
    assert_eq!(error["pointer"], "/retries", "{error}");
    assert_eq!(error["rule"], "maximum", "{error}");
    assert_eq!(error["key"], "plugins.hello.settings", "{error}");
    let error = api
        .send(&patch("hello", &json!({"colour": "red"})))
        .await
        .error(400, "invalid_config");
    assert_eq!(error["rule"], "additionalProperties", "{error}");
    assert_eq!(
        api.child_pids("hello").await,
        pid,
        "a refused change restarts nothing"
    );
    assert_eq!(settings_seen_by(&api, "hello").await, expected);

    // A valid change wins over the policy and reaches a new child.
    let changed = api
        .send(&patch("hello", &json!({"retries": 3, "greeting": "hi"})))
        .await
        .ok::<Value>();
    let want = json!({"greeting": "hi", "retries": 3});
    assert_eq!(changed, want);
    assert_eq!(settings_seen_by(&api, "hello").await, want);
    assert_ne!(
        api.child_pids("hello").await,
        pid,
        "new instances took the settings"
    );

    // null drops what the API set: the default shows again.
    let dropped = api
        .send(&patch("hello", &json!({"greeting": null})))
        .await
        .ok::<Value>();
    assert_eq!(dropped, json!({"greeting": "hello", "retries": 3}));

    // Kept in the state: a restarted daemon starts it with them.
    daemon.stop().await;
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    assert_eq!(
        settings_seen_by(&api, "hello").await,
        json!({"greeting": "hello", "retries": 3})
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_value_that_does_not_fit_keeps_the_plugin_from_loading() {
    let setup = Setup::new()
        .package("hello")
        .with_policy("[plugins.hello]\nsettings = { retries = \"many\" }\n");
    add_schema(&setup.sources().join("hello"), SCHEMA);
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    let detail = api.detail("hello").await;
    let error = detail.policy_error.expect("the settings are refused");
    let error = serde_json::to_value(&error).expect("json");
    assert_eq!(error["code"], "invalid_config", "{error}");
    assert_eq!(error["pointer"], "/retries", "{error}");
    assert_eq!(error["rule"], "type", "{error}");
    let error = api
        .lifecycle("hello", "load")
        .await
        .error(400, "invalid_config");
    assert_eq!(error["pointer"], "/retries", "{error}");
    // Fixed through the API, it loads.
    let fixed = api
        .send(&patch("hello", &json!({"retries": 2})))
        .await
        .ok::<Value>();
    assert_eq!(fixed["retries"], 2);
    api.lifecycle("hello", "load").await.status(200);
    assert_eq!(settings_seen_by(&api, "hello").await["retries"], 2);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_schema_is_refused_at_install() {
    let setup = Setup::new();
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    let package = setup.package_copy("hello", "bad-schema", "elsewhere");
    add_schema(&package, "\n[config]\ntype = \"no-such-type\"\n");
    let error = api
        .install_path(&package, true)
        .await
        .error(400, "invalid_manifest");
    assert_eq!(error["key"], "config", "{error}");
    assert!(api.list().await.is_empty(), "nothing installed");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_change_swaps_only_that_plugin_and_fails_no_call() {
    let setup = Setup::new()
        .package("hello")
        .package_as("hello", "bystander");
    add_schema(&setup.sources().join("hello"), SCHEMA);
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    let bystander = api.child_pids("bystander").await;
    let before = api.child_pids("hello").await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (api, stop, ok) = (api.clone(), stop.clone(), ok.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("c{c}-{i}");
                    let r = api.call("hello", "greet", json!({"name": name})).await;
                    if r.status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.push(format!("{name}: {} {}", r.status, r.text()));
                    }
                    i += 1;
                }
                failures
            })
        })
        .collect();
    eventually("calls flow", Duration::from_secs(20), || async {
        (ok.load(Ordering::Relaxed) >= 20).then_some(())
    })
    .await;
    for retries in 1..=3 {
        let at = ok.load(Ordering::Relaxed);
        api.send(&patch("hello", &json!({"retries": retries})))
            .await
            .status(200);
        eventually(
            "calls flow after the change",
            Duration::from_secs(20),
            || async { (ok.load(Ordering::Relaxed) >= at + 10).then_some(()) },
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.expect("a client task"));
    }
    assert!(
        failures.is_empty(),
        "calls failed during settings changes: {failures:#?}"
    );
    assert_eq!(settings_seen_by(&api, "hello").await["retries"], 3);
    assert_ne!(api.child_pids("hello").await, before, "hello was swapped");
    assert_eq!(
        api.child_pids("bystander").await,
        bystander,
        "the other plugin was not restarted"
    );
    daemon.stop().await;
}

/// Settings may hold secrets: a caller sees none of them, and may neither
/// read nor change them through the config endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_see_or_change_settings() {
    use corral_daemon_tests::peer::{Identity, Peer};
    const CALLERS: u32 = 4100;
    let mut setup = Setup::new()
        .package("hello")
        .with_policy("[plugins.hello]\nsettings = { greeting = \"s3cr3t-token\" }\n");
    add_schema(&setup.sources().join("hello"), SCHEMA);
    setup.socket_mode = "0666".into();
    setup.caller_groups = vec![CALLERS.to_string()];
    let daemon = Daemon::start(&setup).await;
    let socket = setup.socket();
    let peer = Peer::new(env!("CARGO_BIN_EXE_dt-peer"), setup.root());
    let caller = Identity::user(4001, &[CALLERS]);

    let seen: Value = peer
        .request(&caller, &socket, &Request::get("/v1/plugins/hello"))
        .await
        .response
        .status(200)
        .value();
    assert!(
        seen.get("settings").is_none(),
        "a caller sees settings: {seen}"
    );
    assert!(!seen.to_string().contains("s3cr3t-token"), "{seen}");
    peer.request(&caller, &socket, &Request::get("/v1/plugins/hello/config"))
        .await
        .response
        .error(403, "permission_denied");
    peer.request(&caller, &socket, &patch("hello", &json!({"retries": 1})))
        .await
        .response
        .error(403, "permission_denied");
    // The admin (root) sees them.
    let api = daemon.client.clone();
    assert_eq!(
        api.detail("hello")
            .await
            .settings
            .expect("admin sees settings")["greeting"],
        "s3cr3t-token"
    );
    daemon.stop().await;
}

/// Settings changed in the policy take effect on a policy reload, through
/// new instances; the API's values still win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_reload_applies_changed_settings() {
    let setup = Setup::new()
        .package("hello")
        .with_policy("[plugins.hello]\nsettings = { retries = 1 }\n");
    add_schema(&setup.sources().join("hello"), SCHEMA);
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    assert_eq!(settings_seen_by(&api, "hello").await["retries"], 1);
    setup.set_policy("[plugins.hello]\nsettings = { retries = 2, greeting = \"hey\" }\n");
    let report: Value = api.post("/v1/reload").await.ok();
    assert_eq!(report["policy_changed"], json!(["hello"]), "{report}");
    assert_eq!(
        settings_seen_by(&api, "hello").await,
        json!({"greeting": "hey", "retries": 2})
    );
    api.send(&patch("hello", &json!({"greeting": "api"})))
        .await
        .status(200);
    setup.set_policy("[plugins.hello]\nsettings = { retries = 4, greeting = \"policy\" }\n");
    api.post("/v1/reload").await.status(200);
    assert_eq!(
        settings_seen_by(&api, "hello").await,
        json!({"greeting": "api", "retries": 4})
    );
    // A policy value that does not fit: the reload is refused whole, and
    // the plugin keeps its instances and settings.
    let pid = api.child_pids("hello").await;
    setup.set_policy("[plugins.hello]\nsettings = { retries = 99 }\n");
    let error = api.post("/v1/reload").await.error(400, "invalid_config");
    assert_eq!(error["pointer"], "/retries", "{error}");
    assert_eq!(error["rule"], "maximum", "{error}");
    assert_eq!(api.child_pids("hello").await, pid);
    assert_eq!(settings_seen_by(&api, "hello").await["retries"], 4);
    daemon.stop().await;
}

/// A plugin speaking protocol version 2 reads its settings with the
/// `config.get` service, and sees a change after the swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_get_answers_the_plugins_own_settings() {
    let setup =
        Setup::new().with_policy("[plugins.probe]\nsettings = { greeting = \"from policy\" }\n");
    let probe = setup.add_package("services-probe", "probe");
    add_schema(&probe, SCHEMA);
    let daemon = Daemon::start(&setup).await;
    let api = daemon.client.clone();
    let get = json!({"service": "config", "operation": "get", "payload": {}});
    let answer = api.call_ok("probe", "request", get.clone()).await.output;
    assert_eq!(
        answer,
        json!({"ok": {"greeting": "from policy"}}),
        "{answer}"
    );
    api.send(&patch("probe", &json!({"retries": 2})))
        .await
        .status(200);
    let answer = api.call_ok("probe", "request", get).await.output;
    assert_eq!(
        answer,
        json!({"ok": {"greeting": "from policy", "retries": 2}})
    );
    let unknown = api
        .call_ok(
            "probe",
            "request",
            json!({"service": "config", "operation": "set", "payload": {}}),
        )
        .await
        .output;
    assert_eq!(unknown["err"]["code"], "invalid_input", "{unknown}");
    daemon.stop().await;
}
