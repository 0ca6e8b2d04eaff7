//! What each role sees of `GET /v1/plugins/{name}` (#8 item 2): nobody
//! (no group of the daemon's) is refused; a caller sees what it needs to
//! use the plugin but not how the host runs it (no compiled policy with
//! its host paths and uids, no pids, no host path of its origin); an
//! admin sees everything, as `/v1/plugins/{name}/policy` shows it.

use corral_daemon_tests::peer::{Identity, Peer};
use corral_daemon_tests::{Daemon, Request, Setup};
use serde_json::Value;

const CALLERS: u32 = 4100;
const ADMINS: u32 = 4200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_sees_its_fields_of_a_plugin() {
    let mut setup = Setup::new().package("hello");
    setup.socket_mode = "0666".into();
    setup.caller_groups = vec![CALLERS.to_string()];
    setup.admin_groups = vec![ADMINS.to_string()];
    let daemon = Daemon::start(&setup).await;
    let socket = setup.socket();
    let peer = Peer::new(env!("CARGO_BIN_EXE_dt-peer"), setup.root());
    let get = Request::get("/v1/plugins/hello");

    // nobody
    let nobody = Identity::user(4000, &[]);
    peer.request(&nobody, &socket, &get)
        .await
        .response
        .error(403, "permission_denied");

    // caller
    let caller = Identity::user(4001, &[CALLERS]);
    let seen: Value = peer
        .request(&caller, &socket, &get)
        .await
        .response
        .status(200)
        .value();
    assert_eq!(seen["name"], "hello");
    assert_eq!(seen["state"], "ready");
    assert!(
        seen["digest"].as_str().is_some_and(|d| d.len() == 64),
        "{seen}"
    );
    assert_eq!(seen["manifest"]["plugin"]["name"], "hello", "{seen}");
    assert!(seen["children"].as_u64().is_some_and(|n| n >= 1), "{seen}");
    assert!(
        seen["policy"].is_null(),
        "a caller sees the compiled policy: {seen}"
    );
    assert_eq!(
        seen["processes"],
        serde_json::json!([]),
        "pids and uids: {seen}"
    );
    assert_eq!(seen["source"], "source", "no host path: {seen}");
    let text = seen.to_string();
    assert!(
        !text.contains(&setup.root().display().to_string()),
        "a host path reaches a caller: {text}"
    );

    // admin
    let admin = Identity::user(4010, &[ADMINS]);
    let full: Value = peer
        .request(&admin, &socket, &get)
        .await
        .response
        .status(200)
        .value();
    assert!(full["policy"].is_object(), "{full}");
    assert!(
        full["processes"][0]["pid"].as_i64().is_some_and(|p| p > 0),
        "{full}"
    );
    assert!(
        full["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("source:/")),
        "{full}"
    );
    // Root sees what an admin sees.
    let root = daemon
        .client
        .get("/v1/plugins/hello")
        .await
        .status(200)
        .value();
    assert!(root["policy"].is_object(), "{root}");
    daemon.stop().await;
}
