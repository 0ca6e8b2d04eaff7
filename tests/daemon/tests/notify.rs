//! systemd's notification protocol for real (#8 item 8): corrald started
//! with a fake `NOTIFY_SOCKET` (a datagram socket this test reads) and a
//! watchdog interval says, in order, what it is doing while it starts
//! (`STATUS=`), `READY=1`, pings `WATCHDOG=1` while it serves, and
//! `STOPPING=1` when told to stop.

use corral_daemon_tests::{Daemon, Setup};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// Reads datagrams until `done` holds for what was read, or `within`.
fn read_until(
    socket: &UnixDatagram,
    seen: &mut Vec<String>,
    within: Duration,
    done: impl Fn(&[String]) -> bool,
) {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 4096];
    while !done(seen) {
        assert!(Instant::now() < deadline, "notifications so far: {seen:#?}");
        match socket.recv(&mut buf) {
            Ok(n) => seen.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("reading the notify socket: {e}"),
        }
    }
}

fn position(seen: &[String], what: &str) -> usize {
    seen.iter()
        .position(|m| m.lines().any(|l| l.starts_with(what)))
        .unwrap_or_else(|| panic!("no {what} in {seen:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_status_watchdog_and_stopping_arrive_in_order() {
    let setup = Setup::new().package("hello");
    let path = setup.root().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let setup = setup
        .daemon_env("NOTIFY_SOCKET", &path.display().to_string())
        .daemon_env("WATCHDOG_USEC", "200000");
    let daemon = Daemon::start(&setup).await;
    let mut seen = Vec::new();
    read_until(&socket, &mut seen, Duration::from_secs(30), |s| {
        s.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2
    });
    daemon.signal(libc::SIGTERM);
    read_until(&socket, &mut seen, Duration::from_secs(30), |s| {
        s.iter().any(|m| m.contains("STOPPING=1"))
    });
    let starting = position(&seen, "STATUS=starting");
    let ready = position(&seen, "READY=1");
    let watchdog = position(&seen, "WATCHDOG=1");
    let stopping = position(&seen, "STOPPING=1");
    assert!(
        starting < ready && ready < watchdog && watchdog < stopping,
        "out of order: {seen:#?}"
    );
    // READY comes with the status an operator reads in systemctl status.
    assert!(
        seen[ready].contains("STATUS=serving 1 plugins on"),
        "{}",
        seen[ready]
    );
    let mut daemon = daemon;
    let status = daemon.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
}
