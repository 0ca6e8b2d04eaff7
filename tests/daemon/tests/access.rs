//! Access control with real connections from other uids: the `dt-peer`
//! helper runs with the uid, gid and groups a test names, so the daemon
//! reads them from the kernel (SO_PEERCRED, SO_PEERGROUPS) as it would for
//! any client.

use corral_daemon_tests::peer::{Identity, Peer};
use corral_daemon_tests::{Daemon, Request, SETTLE_WAIT, Setup};
use corral_protocol::api::{PluginDetail, PluginSummary};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

const CALLERS: u32 = 4100;
const ADMINS: u32 = 4200;

fn call(plugin: &str) -> Request {
    Request::post(&format!("/v1/plugins/{plugin}/call"))
        .json(&json!({"method": "greet", "input": {"name": "peer"}}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_admins_and_allowed_callers_from_other_uids() {
    let mut setup = Setup::new()
        .package("hello")
        .package_as("hello", "hello-open")
        .with_policy("[plugins.hello]\nallowed_callers = [\"uid:4001\", \"gid:4300\"]\n");
    setup.socket_mode = "0666".into();
    setup.caller_groups = vec![CALLERS.to_string()];
    setup.admin_groups = vec![ADMINS.to_string()];
    let daemon = Daemon::start(&setup).await;
    let socket = setup.socket();
    let mode = std::fs::metadata(&socket)
        .expect("the socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o666, "socket_mode applies");
    let peer = Peer::new(env!("CARGO_BIN_EXE_dt-peer"), setup.root());

    // No group of the daemon's: health and metrics, nothing else.
    let stranger = Identity::user(4000, &[]);
    let health = peer
        .request(&stranger, &socket, &Request::get("/v1/health"))
        .await;
    health.response.status(200);
    peer.request(&stranger, &socket, &Request::get("/metrics"))
        .await
        .response
        .status(200);
    let denied = peer
        .request(&stranger, &socket, &Request::get("/v1/plugins"))
        .await;
    let e = denied.response.error(403, "permission_denied");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("4000")),
        "the message names the uid: {e}"
    );
    // The denial is logged with the peer's uid, gid and pid.
    daemon
        .wait_log(
            &[
                "request denied",
                "uid=4000",
                "gid=4000",
                &format!("pid={}", denied.pid),
            ],
            SETTLE_WAIT,
        )
        .await;
    for request in [
        call("hello-open"),
        Request::get("/v1/plugins/hello-open"),
        Request::get("/v1/events"),
        Request::post("/v1/plugins/hello-open/unload"),
    ] {
        peer.request(&stranger, &socket, &request)
            .await
            .response
            .error(403, "permission_denied");
    }

    // A caller (through a supplementary group): lists, reads and calls;
    // administers nothing.
    let caller = Identity::user(4001, &[CALLERS]);
    let list: Vec<PluginSummary> = peer
        .request(&caller, &socket, &Request::get("/v1/plugins"))
        .await
        .response
        .ok();
    assert_eq!(list.len(), 2);
    let _: PluginDetail = peer
        .request(&caller, &socket, &Request::get("/v1/plugins/hello"))
        .await
        .response
        .ok();
    for plugin in ["hello", "hello-open"] {
        let out = peer.request(&caller, &socket, &call(plugin)).await.response;
        assert_eq!(
            out.status(200).value()["output"]["greeting"],
            "Hello, peer!"
        );
    }
    let dir = setup.package_copy("hello", "hello-new", "paths");
    for request in [
        Request::post("/v1/plugins/hello-open/unload"),
        Request::post("/v1/plugins/hello-open/load"),
        Request::post("/v1/plugins/hello-open/reload"),
        Request::get("/v1/plugins/hello/policy"),
        Request::delete("/v1/plugins/hello-open"),
        Request::post("/v1/plugins").json(&json!({"path": dir, "load": true})),
        Request::post("/v1/reload"),
    ] {
        let answer = peer.request(&caller, &socket, &request).await;
        answer.response.error(403, "permission_denied");
    }
    daemon
        .wait_log(
            &["request denied", "uid=4001", "operation=\"read policies\""],
            SETTLE_WAIT,
        )
        .await;

    // A caller through its primary group only.
    let primary = Identity {
        uid: 4005,
        gid: CALLERS,
        groups: vec![4005],
    };
    peer.request(&primary, &socket, &call("hello-open"))
        .await
        .response
        .status(200);

    // allowed_callers narrows hello to uid 4001 and group 4300; other
    // callers still reach hello-open.
    let other_caller = Identity::user(4002, &[CALLERS]);
    let narrowed = peer.request(&other_caller, &socket, &call("hello")).await;
    let e = narrowed.response.error(403, "permission_denied");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("allowed callers")),
        "{e}"
    );
    daemon
        .wait_log(
            &[
                "call denied by allowed_callers",
                "uid=4002",
                &format!("pid={}", narrowed.pid),
            ],
            SETTLE_WAIT,
        )
        .await;
    peer.request(&other_caller, &socket, &call("hello-open"))
        .await
        .response
        .status(200);
    let group_caller = Identity::user(4003, &[CALLERS, 4300]);
    peer.request(&group_caller, &socket, &call("hello"))
        .await
        .response
        .status(200);
    // allowed_callers narrows calls, it does not make callers: a stranger
    // in group 4300 but no caller group is still refused.
    let outsider = Identity::user(4006, &[4300]);
    peer.request(&outsider, &socket, &call("hello"))
        .await
        .response
        .error(403, "permission_denied");

    // An admin (through the admin group) administers, and may call a
    // plugin whose allowed_callers do not name it.
    let admin = Identity::user(4010, &[ADMINS]);
    let unloaded: PluginSummary = peer
        .request(
            &admin,
            &socket,
            &Request::post("/v1/plugins/hello-open/unload"),
        )
        .await
        .response
        .ok();
    assert!(!unloaded.enabled);
    let loaded: PluginSummary = peer
        .request(
            &admin,
            &socket,
            &Request::post("/v1/plugins/hello-open/load"),
        )
        .await
        .response
        .ok();
    assert!(loaded.enabled);
    peer.request(&admin, &socket, &Request::get("/v1/plugins/hello/policy"))
        .await
        .response
        .status(200);
    peer.request(&admin, &socket, &Request::post("/v1/reload"))
        .await
        .response
        .status(200);
    peer.request(
        &admin,
        &socket,
        &Request::post("/v1/plugins").json(&json!({"path": dir, "load": false})),
    )
    .await
    .response
    .installed(true);
    peer.request(&admin, &socket, &call("hello"))
        .await
        .response
        .status(200);

    let metrics = daemon.client.metrics().await;
    let denied: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("corral_api_denied_total ")?
                .trim()
                .parse()
                .ok()
        })
        .expect("corral_api_denied_total");
    // 5 as the stranger, 7 as the caller, 1 by allowed_callers, 1 outsider.
    assert_eq!(denied, 14.0, "every denial is counted");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_mode_keeps_other_uids_out() {
    let mut setup = Setup::new().package("hello");
    setup.caller_groups = vec![CALLERS.to_string()];
    let daemon = Daemon::start(&setup).await;
    let socket = setup.socket();
    let mode = std::fs::metadata(&socket)
        .expect("the socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    let peer = Peer::new(env!("CARGO_BIN_EXE_dt-peer"), setup.root());
    // Not in the socket's group (root): the kernel refuses the connect,
    // whatever the daemon's caller groups say.
    let error = peer
        .request_error(
            &Identity::user(4001, &[CALLERS]),
            &socket,
            &Request::get("/v1/health"),
        )
        .await;
    assert!(
        error.contains("Permission denied"),
        "connecting without write access to the socket: {error}"
    );
    // In the socket's group: in.
    peer.request(
        &Identity::user(4001, &[0, CALLERS]),
        &socket,
        &call("hello"),
    )
    .await
    .response
    .status(200);
    daemon.stop().await;
}
