//! No user can lock the API (#8 items 3 and 4): a uid that is not an
//! admin holds a bounded number of connections, slow request heads and
//! bodies and unread answers are cut after their time bounds, admins and
//! `/v1/health` keep a reserve, running out of file descriptors pauses
//! `accept` instead of spinning, and what outsiders cause is logged at a
//! bounded rate. Every closed connection is counted by reason.

use corral_daemon_tests::peer::{Identity, Peer};
use corral_daemon_tests::raw::{self, metric};
use corral_daemon_tests::{Daemon, Request, SETTLE_WAIT, Setup, eventually};
use std::time::Duration;

const HOSTILE: u32 = 4500;
const NEIGHBOUR: u32 = 4501;
const CALLERS: u32 = 4100;

/// A daemon open to every local user (as `corrald --dev` is), with small
/// connection limits so a test can fill them.
fn open_setup() -> Setup {
    let mut setup = Setup::new()
        .package("hello")
        .limit("max_connections", "48")
        .limit("max_connections_per_uid", "8")
        .limit("reserved_connections", "8")
        .limit("health_connections", "4")
        // Long enough that the hostile heads stay for the whole test.
        .limit("header_timeout", "\"120s\"");
    setup.socket_mode = "0666".into();
    setup.caller_groups = vec![CALLERS.to_string()];
    setup
}

fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_from_one_uid_leave_everyone_else_served() {
    let setup = open_setup();
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let socket = setup.socket();
    let peer = Peer::new(env!("CARGO_BIN_EXE_dt-peer"), setup.root());
    let hostile = Identity::user(HOSTILE, &[CALLERS]);

    // More connections than the whole server has, all from one uid, each
    // with a request head that never ends.
    let held = peer.hold(&hostile, &socket, 200, "slow").await;
    assert!(
        held.opened > 48,
        "the hostile peer connected {} times",
        held.opened
    );

    // An admin, another user and a health probe are all answered.
    api.call_ok("hello", "greet", serde_json::json!({"name": "admin"}))
        .await;
    let neighbour = Identity::user(NEIGHBOUR, &[CALLERS]);
    peer.request(&neighbour, &socket, &Request::get("/v1/plugins"))
        .await
        .response
        .status(200);
    // A uid that holds all the connections it may still reaches
    // /v1/health, and nothing else, with the typed error.
    let full = Identity::user(4503, &[CALLERS]);
    let full_held = peer.hold(&full, &socket, 8, "slow").await;
    assert_eq!(full_held.opened, 8);
    peer.request(&full, &socket, &Request::get("/v1/health"))
        .await
        .response
        .status(200);
    let e = peer
        .request(&full, &socket, &Request::get("/v1/plugins"))
        .await
        .response
        .error(429, "overloaded");
    assert_eq!(e["limit"], 8, "{e}");
    full_held.release().await;

    // The refusals are counted by reason, and logged at a bounded rate.
    let text = api.metrics().await;
    assert!(
        metric(
            &text,
            "corral_connections_closed_total{reason=\"uid_limit\"}"
        ) > 0.0,
        "{text}"
    );
    assert!(metric(&text, "corral_connections_open") >= 8.0, "{text}");
    let refused_lines = count_lines(&daemon.log(), "connection refused");
    assert!(
        (1..=20).contains(&refused_lines),
        "{refused_lines} lines for {} refusals",
        held.opened
    );
    held.release().await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_nobody_reads_are_cut_after_the_write_timeout() {
    let setup = open_setup().limit("write_timeout", "\"1s\"");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let socket = setup.socket();
    let peer = Peer::new(env!("CARGO_BIN_EXE_dt-peer"), setup.root());
    let hostile = Identity::user(HOSTILE, &[CALLERS]);

    let held = peer.hold(&hostile, &socket, 8, "pipeline").await;
    assert_eq!(held.opened, 8);
    // The daemon gives up on each of them: none stays open.
    let text = eventually("the unread connections closed", SETTLE_WAIT * 3, || async {
        let text = api.metrics().await;
        let cut = metric(
            &text,
            "corral_connections_closed_total{reason=\"write_timeout\"}",
        );
        (cut >= 8.0).then_some(text)
    })
    .await;
    // The slots are free again: the same uid is served.
    peer.request(&hostile, &socket, &Request::get("/v1/plugins"))
        .await
        .response
        .status(200);
    assert!(metric(&text, "corral_connections_open") <= 2.0, "{text}");
    held.release().await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_comes_is_408_within_the_request_timeout() {
    let setup = open_setup().limit("request_timeout", "\"1s\"");
    let daemon = Daemon::start(&setup).await;
    let answer = raw::exchange(
        &setup.socket(),
        b"POST /v1/plugins/hello/call HTTP/1.1\r\nHost: corral\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"method\":",
    )
    .await;
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.error_code(), "invalid_input");
    let text = daemon.client.metrics().await;
    assert_eq!(
        metric(
            &text,
            "corral_connections_closed_total{reason=\"request_timeout\"}"
        ),
        1.0,
        "{text}"
    );
    assert!(
        metric(&text, "corral_http_errors_total{status=\"408\"}") >= 1.0,
        "{text}"
    );
    // The next call is served.
    daemon
        .client
        .call_ok("hello", "greet", serde_json::json!({"name": "next"}))
        .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_requests_are_counted_but_logged_at_a_bounded_rate() {
    let setup = open_setup();
    let daemon = Daemon::start(&setup).await;
    let peer = Peer::new(env!("CARGO_BIN_EXE_dt-peer"), setup.root());
    let stranger = Identity::user(4502, &[]);
    let answer = peer
        .request_repeated(
            &stranger,
            &setup.socket(),
            &Request::get("/v1/plugins"),
            100,
        )
        .await;
    answer.response.error(403, "permission_denied");
    let text = daemon.client.metrics().await;
    assert_eq!(metric(&text, "corral_api_denied_total"), 100.0, "{text}");
    let lines = count_lines(&daemon.log(), "request denied");
    let dropped = metric(
        &text,
        "corral_log_lines_dropped_total{line=\"request_denied\"}",
    );
    assert!(lines <= 20, "{lines} lines for 100 denials");
    assert_eq!(
        lines as f64 + dropped,
        100.0,
        "lines {lines}, dropped {dropped}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_accept_pauses_and_recovers() {
    let mut setup = Setup::new().limit("header_timeout", "\"120s\"");
    // Low enough to reach with a few hundred connections; corrald cannot
    // raise a soft limit above this hard one.
    setup.open_files = Some(96);
    let daemon = Daemon::start(&setup).await;
    let socket = setup.socket();
    // Fill the daemon's descriptor table (the backlog holds the rest).
    let mut held = Vec::new();
    for _ in 0..300 {
        match tokio::net::UnixStream::connect(&socket).await {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    assert!(held.len() > 96, "only {} connections", held.len());
    // Give a spinning accept loop time to show itself.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lines = count_lines(&daemon.log(), "accept failed");
    assert!(
        (1..=40).contains(&lines),
        "{lines} \"accept failed\" lines in 3 s"
    );
    drop(held);
    // Served again once descriptors are free, and the failures counted.
    let text = eventually(
        "metrics after the descriptors came back",
        SETTLE_WAIT,
        || async {
            let response = daemon
                .client
                .try_send(&Request::get("/metrics"))
                .await
                .ok()?;
            (response.status == 200).then(|| response.text())
        },
    )
    .await;
    assert!(metric(&text, "corral_accept_errors_total") > 0.0, "{text}");
    daemon.client.health().await;
    daemon.stop().await;
}

#[test]
fn the_unit_raises_the_open_files_limit_and_locks_noroot() {
    let unit = include_str!("../../../systemd/corrald.service");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("corrald.service sets no {key}"))
            .to_string()
    };
    let files: u64 = value("LimitNOFILE").parse().expect("a number");
    assert!(files >= 65536, "LimitNOFILE={files}");
    let bits: Vec<String> = value("SecureBits")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(
        bits.contains(&"noroot".to_string()) && bits.contains(&"noroot-locked".to_string()),
        "SecureBits={bits:?}: locking noroot without setting it locks it off"
    );
    // With noroot, root's capabilities are only the ambient ones: they
    // must be the bounding set, or corrald starts with none.
    assert_eq!(value("AmbientCapabilities"), value("CapabilityBoundingSet"));
}
