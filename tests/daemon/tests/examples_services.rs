//! The bundled examples of host services, with the policy file that comes
//! with them (`examples/policy.d/examples.toml`): seed 001's plugins
//! (a dependency, a wildcard subscription, a prefixed topic, a table of
//! its own) and seed 003's hooks (reject, rewrite, stamp), as a new user
//! runs them after `cargo xtask dev`.

use corral_daemon_tests::{Daemon, EVENT_WAIT, Setup};
use corral_protocol::api::Event;
use serde_json::{Value, json};

fn examples_setup() -> Setup {
    let setup = Setup::new()
        .package("user-directory")
        .package("greeter-service")
        .package("audit");
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/policy.d/examples.toml");
    std::fs::copy(&policy, setup.root().join("policy.d/examples.toml"))
        .expect("copy the examples' policy");
    setup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_001_plugins_call_each_other_share_events_and_keep_data() {
    let setup = examples_setup();
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let mut greeted = api.events(Some("topic=greeter.*")).await;

    // The audit hook lower-cases the id before user-directory sees it.
    let created = api
        .call_ok(
            "user-directory",
            "createUser",
            json!({"id": " ADA ", "name": "Ada"}),
        )
        .await;
    let created: Value = created.output;
    assert_eq!(created["id"], "ada");

    // greeter-service reaches user-directory through plugins.call, and
    // stamps come from the on_result hook.
    let greeting = api
        .call_ok("greeter-service", "execute", json!({"id": "ada"}))
        .await;
    let greeting: Value = greeting.output;
    assert_eq!(greeting["greeting"], "Hello, Ada!");
    assert!(greeting["audit"]["seq"].as_u64().is_some(), "{greeting}");

    // Its wildcard subscription saw user:created from user-directory.
    let seen = api
        .call_ok("greeter-service", "recentEvents", json!(null))
        .await;
    let seen: Value = seen.output;
    assert!(
        seen.as_array().is_some_and(|events| events.iter().any(|e| {
            e["topic"] == "user:created"
                && e["from"] == "user-directory"
                && e["data"]["id"] == "ada"
        })),
        "{seen}"
    );

    // Its own topic went out under the operator's name map.
    let record = greeted
        .next(EVENT_WAIT)
        .await
        .expect("greeter.greeted reached the client stream");
    match record.event {
        Event::Plugin { plugin, topic, .. } => {
            assert_eq!(
                (plugin.as_str(), topic.as_str()),
                ("greeter-service", "greeter.greeted")
            )
        }
        other => panic!("expected a bus event, got {other:?}"),
    }

    // The data survives a restart of the daemon.
    daemon.stop().await;
    let daemon = Daemon::start(&setup).await;
    let user = daemon
        .client
        .call_ok("user-directory", "getUser", json!({"id": "ada"}))
        .await;
    let user: Value = user.output;
    assert_eq!(user["name"], "Ada");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_003_hooks_reject_and_the_policy_shows_every_grant() {
    let setup = examples_setup();
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;

    // audit's settings come from the policy and hold "drop table".
    let e = api
        .call(
            "user-directory",
            "createUser",
            json!({"id": "x", "name": "x; DROP TABLE users"}),
        )
        .await
        .error(422, "hook_rejected");
    assert!(
        e["message"].as_str().unwrap_or("").contains("drop table"),
        "{e}"
    );
    let missing = api
        .call("user-directory", "getUser", json!({"id": "x"}))
        .await
        .error(422, "plugin_error");
    assert!(
        missing["message"]
            .as_str()
            .unwrap_or("")
            .contains("no user x"),
        "{missing}"
    );

    // Each grant is in the compiled policy with where it came from.
    let policy: Value = api.get("/v1/plugins/greeter-service/policy").await.value();
    let lines: Vec<String> = policy["provenance"]
        .as_array()
        .expect("provenance")
        .iter()
        .map(|l| format!("{} = {} <- {}", l["rule"], l["value"], l["source"]))
        .collect();
    for needle in [
        "\"services.plugins.call\" = \"user-directory\"",
        "\"services.events.subscribe\" = \"user:*\"",
        "\"services.names.topics\" = \"greeted -> greeter.greeted\"",
        "\"hooks.on_submit\" = \"audit.checkSubmit (priority 10",
        "\"hooks.on_result\" = \"audit.stampResult",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(needle)),
            "{needle} in {lines:#?}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("examples.toml")),
        "grants cite the examples' policy file: {lines:#?}"
    );
    let policy: Value = api.get("/v1/plugins/user-directory/policy").await.value();
    assert!(
        policy["provenance"]
            .as_array()
            .is_some_and(|lines| lines.iter().any(|l| {
                l["rule"] == "retry"
                    && l["value"]
                        .as_str()
                        .is_some_and(|v| v.starts_with("getUser, listUsers after"))
            })),
        "the retry rule of the idempotent reads: {policy}"
    );
    let stats = api.call_ok("audit", "stats", json!(null)).await;
    let stats: Value = stats.output;
    assert!(
        stats["errors"].as_u64().is_some_and(|n| n >= 1),
        "on_error saw the failure: {stats}"
    );
    daemon.stop().await;
}
