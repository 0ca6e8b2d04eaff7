//! Limits: a hostile plugin exhausts each resource it is given. For every
//! limit the test checks the typed error (or, where the plugin survives
//! the limit, the errno it met and the kernel's count that proves the
//! limit held), then that the next call on the same PluginHost succeeds
//! (after the restart, where there was one), that only the live plugin's
//! process and cgroup remain ([`Harness::assert_settled`]), and at the end
//! that nothing leaked ([`Harness::finish`]).
//!
//! The hostile packages ask for small limits (64 MiB, 8 or 16 pids, 32
//! fds, 1 MiB of scratch) so every bomb is over in well under a second.

use corral_protocol::api::{Event, PluginState};
use corral_protocol::error::ErrorKind;
use corral_supervisor::host::PluginHost;
use corral_tests::{
    EVENT_WAIT, Harness, attempt, call, call_within, expect_error, pid_of, run, wait_for_event,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// `hostile-exec` may fork; the default policy grants exec to nobody.
const EXEC_GRANT: &str = "[plugins.hostile-exec]\ngrant = { exec = true }\n";

/// The next call after a limit: served, by a restarted child when
/// `restarted`, by the same one otherwise.
async fn assert_next_call_works(h: &Harness, host: &PluginHost, before: i32, restarted: bool) {
    let who = attempt(host, "whoami", Value::Null).await;
    who.assert_succeeded();
    let after = pid_of(host);
    if restarted {
        assert_ne!(after, before, "the next call should run in a new child");
    } else {
        assert_eq!(after, before, "the plugin should have survived the limit");
    }
    assert_eq!(host.state(), PluginState::Ready);
    h.assert_settled().await;
}

/// The limit as the compiled policy has it, to compare reports with.
fn memory_limit(host: &PluginHost) -> u64 {
    host.policy()
        .resources
        .memory_max
        .expect("the memory limit is set")
}

fn pids_limit(host: &PluginHost) -> u64 {
    host.policy()
        .resources
        .pids_max
        .expect("the pids limit is set")
}

#[test]
fn memory_bomb_is_memory_limit_exceeded() {
    run(async {
        let mut h = Harness::new();
        let mut events = h.events();
        let host = h.host("hostile").await;
        let limit = memory_limit(&host);
        assert_eq!(limit, 64 * MIB, "hostile asks for 64MiB");
        let before = pid_of(&host);
        let err = expect_error(&host, "memory_bomb", Value::Null).await;
        let ErrorKind::MemoryLimitExceeded {
            limit_bytes,
            peak_bytes,
        } = err.kind
        else {
            panic!("expected memory_limit_exceeded, got {err:?}");
        };
        assert_eq!(limit_bytes, limit, "{err:?}");
        assert!(
            peak_bytes >= limit / 10 * 9 && peak_bytes <= limit,
            "peak {peak_bytes} should be within 90-100% of the limit {limit}"
        );
        assert!(
            wait_for_event(&mut events, EVENT_WAIT, |e| matches!(
                e,
                Event::Crashed { code, .. } if code == "memory_limit_exceeded"
            ))
            .await
            .is_some(),
            "no Crashed event with memory_limit_exceeded"
        );
        assert_next_call_works(&h, &host, before, true).await;
        h.finish().await;
    });
}

/// Samples the pids count of `host`'s cgroup until `stop`, keeping the
/// highest.
fn sample_pids(host: &Arc<PluginHost>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let child = host.children().pop().expect("a live instance");
    tokio::spawn(async move {
        let mut highest = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Some(stats) = child.stats() {
                highest = highest.max(stats.pids_current);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        highest
    })
}

/// A fork bomb meets the pids limit: forks fail with EAGAIN, the tree
/// never grows past the limit, and when the plugin then dies the death is
/// reported as `pids_limit_exceeded`.
#[test]
fn fork_bomb_is_held_at_the_pids_limit() {
    run(async {
        let mut h = Harness::with_policy(EXEC_GRANT);
        let host = h.host("hostile-exec").await;
        let limit = pids_limit(&host);
        assert_eq!(limit, 16, "hostile-exec asks for 16 pids");
        let before = pid_of(&host);
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = sample_pids(&host, stop.clone());
        let bomb = attempt(&host, "fork_bomb", json!({"max": 1000})).await;
        let child = host.children().pop().expect("alive after the bomb");
        let stats = child.stats().expect("cgroup stats");
        stop.store(true, Ordering::Relaxed);
        let highest = sampler.await.expect("sampler").max(stats.pids_current);
        bomb.assert_denied(libc::EAGAIN);
        assert!(
            bomb.value() < limit,
            "the plugin forked {} children under a limit of {limit}: {}",
            bomb.value(),
            bomb.detail
        );
        assert!(
            highest <= limit,
            "{highest} tasks in the cgroup, above the limit of {limit}"
        );
        assert_eq!(
            stats.pids_current, limit,
            "the bomb should fill the cgroup up to the limit"
        );
        assert!(stats.pids_limit_hits > 0, "the kernel refused no fork");

        // The plugin survived its own bomb and still answers.
        attempt(&host, "whoami", Value::Null)
            .await
            .assert_succeeded();
        assert_eq!(pid_of(&host), before);
        // When it dies, the death is put down to the limit it hit.
        let err = expect_error(&host, "exit", json!({"code": 0})).await;
        assert_eq!(err.kind, ErrorKind::PidsLimitExceeded { limit }, "{err:?}");
        assert_next_call_works(&h, &host, before, true).await;
        let fresh = host.children().pop().expect("restarted");
        assert_eq!(
            fresh.stats().expect("stats").pids_current,
            1,
            "the bomb's processes must not survive into the new child"
        );
        h.finish().await;
    });
}

/// Without exec, `permissions.threads` is the plugin's task limit: a
/// thread past it fails with EAGAIN, the pids limit is never reached, and
/// the plugin goes on answering.
#[test]
fn thread_bomb_is_held_at_the_threads_permission() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        let threads = 2; // hostile's plugin.toml
        let pids = pids_limit(&host);
        assert!(pids > threads, "the pids limit must not be what stops it");
        let before = pid_of(&host);
        let bomb = attempt(&host, "thread_bomb", json!({"max": 1000})).await;
        let stats = host
            .children()
            .pop()
            .expect("alive")
            .stats()
            .expect("stats");
        bomb.assert_denied(libc::EAGAIN);
        assert_eq!(
            bomb.value() + 1,
            threads,
            "the main thread and the new ones fill permissions.threads exactly: {}",
            bomb.detail
        );
        assert_eq!(
            stats.pids_limit_hits, 0,
            "the pids limit stopped it instead"
        );
        assert!(
            stats.pids_current <= threads,
            "{} tasks",
            stats.pids_current
        );
        assert_next_call_works(&h, &host, before, false).await;
        // The threads started are still there: the next bomb starts none.
        let again = attempt(&host, "thread_bomb", json!({"max": 1000})).await;
        again.assert_denied(libc::EAGAIN);
        assert_eq!(again.value(), 0, "{}", again.detail);
        h.finish().await;
    });
}

/// With exec granted, threads count against the pids limit with the
/// processes: spawning stops at it with EAGAIN and the plugin goes on
/// answering.
#[test]
fn thread_bomb_is_held_at_the_pids_limit() {
    run(async {
        let mut h = Harness::with_policy(EXEC_GRANT);
        let host = h.host("hostile-exec").await;
        let limit = pids_limit(&host);
        let before = pid_of(&host);
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = sample_pids(&host, stop.clone());
        let bomb = attempt(&host, "thread_bomb", json!({"max": 1000})).await;
        let stats = host
            .children()
            .pop()
            .expect("alive")
            .stats()
            .expect("stats");
        stop.store(true, Ordering::Relaxed);
        let highest = sampler.await.expect("sampler").max(stats.pids_current);
        bomb.assert_denied(libc::EAGAIN);
        assert_eq!(
            bomb.value() + 1,
            limit,
            "the main thread and the new ones fill the limit exactly: {}",
            bomb.detail
        );
        assert!(
            highest <= limit,
            "{highest} tasks, above the limit of {limit}"
        );
        assert!(stats.pids_limit_hits > 0, "the kernel refused no clone");
        assert_next_call_works(&h, &host, before, false).await;
        h.finish().await;
    });
}

/// A call that spins past its timeout and ignores the Cancel is stopped
/// and reported as `timeout` with the limit.
#[test]
fn cpu_spin_past_the_call_timeout_is_timeout() {
    run(async {
        // hostile asks for 2s; the cap clamps it to a shorter test.
        let mut h = Harness::with_policy("[caps]\ntimeout = \"700ms\"\n");
        let mut events = h.events();
        let host = h.host("hostile").await;
        let limit = host.policy().timeouts.call;
        assert_eq!(limit, Duration::from_millis(700));
        let before = pid_of(&host);
        let started = Instant::now();
        let policy_limit = expect_error(&host, "cpu_spin", json!({"seconds": 60})).await;
        let took = started.elapsed();
        assert_eq!(policy_limit.code(), "timeout", "{policy_limit:?}");
        assert!(took >= limit, "stopped after {took:?}, before the limit");
        assert!(
            wait_for_event(&mut events, EVENT_WAIT, |e| matches!(
                e,
                Event::Crashed { code, .. } if code == "timeout"
            ))
            .await
            .is_some(),
            "no Crashed event with timeout"
        );
        assert_next_call_works(&h, &host, before, true).await;

        // A shorter per-call timeout is enforced (and reported) instead.
        let before = pid_of(&host);
        let caller_limit = call_within(
            &host,
            "cpu_spin",
            json!({"seconds": 60}),
            Duration::from_millis(300),
        )
        .await
        .expect_err("the spin must be stopped");
        assert_eq!(caller_limit.code(), "timeout", "{caller_limit:?}");
        assert_next_call_works(&h, &host, before, true).await;
        h.finish().await;

        // The error names the limit that was exceeded, as configured.
        assert_eq!(
            policy_limit.kind,
            ErrorKind::Timeout { limit_ms: 700 },
            "{policy_limit:?}"
        );
        assert_eq!(
            caller_limit.kind,
            ErrorKind::Timeout { limit_ms: 300 },
            "{caller_limit:?}"
        );
    });
}

#[test]
fn fd_exhaustion_stops_at_the_open_files_limit() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        let before = pid_of(&host);
        // The limit as the kernel enforces it: RLIMIT_NOFILE from the policy.
        let open_files = host
            .policy()
            .confinement
            .rlimits
            .iter()
            .find(|r| r.resource == corral_protocol::policy::Rlimit::Nofile)
            .map(|r| r.hard)
            .expect("an RLIMIT_NOFILE");
        assert_eq!(open_files, 32, "hostile asks for 32");
        // Open already: stdio and the channel.
        let open = attempt(&host, "fds", Value::Null).await.value();
        assert_eq!(open, 4, "stdio and the channel");
        let exhausted = attempt(&host, "fd_exhaust", Value::Null).await;
        exhausted.assert_denied(libc::EMFILE);
        assert_eq!(
            open + exhausted.value(),
            open_files,
            "fds stopped at {} + {}: {}",
            open,
            exhausted.value(),
            exhausted.detail
        );
        assert_next_call_works(&h, &host, before, false).await;
        h.finish().await;
    });
}

#[test]
fn disk_fill_stops_at_the_scratch_size() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        let before = pid_of(&host);
        let scratch = host
            .policy()
            .confinement
            .mounts
            .scratch
            .as_ref()
            .map(|s| s.size_bytes)
            .expect("a scratch tmpfs");
        assert_eq!(scratch, MIB, "hostile asks for 1MiB");
        let first = attempt(&host, "disk_fill", json!({"path": "/tmp/a", "keep": true})).await;
        // RLIMIT_FSIZE (the scratch size) ends one file at exactly the size.
        first.assert_denied(libc::EFBIG);
        assert_eq!(first.value(), scratch, "{}", first.detail);
        // The tmpfs is then full: a second file gets nothing more.
        let second = attempt(&host, "disk_fill", json!({"path": "/tmp/b", "keep": true})).await;
        second.assert_denied(libc::ENOSPC);
        assert!(
            first.value() + second.value() <= scratch,
            "{} + {} bytes written to a {scratch}-byte scratch",
            first.value(),
            second.value()
        );
        assert_next_call_works(&h, &host, before, false).await;
        h.finish().await;
    });
}

#[test]
fn huge_reply_frame_is_protocol_violation() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        let before = pid_of(&host);
        let max = host.policy().max_frame;
        let err = expect_error(&host, "huge_reply", Value::Null).await;
        let ErrorKind::ProtocolViolation { reason } = &err.kind else {
            panic!("expected protocol_violation, got {err:?}");
        };
        assert!(
            reason.contains(&format!("exceeds the maximum of {max} bytes")),
            "{reason}"
        );
        assert_next_call_works(&h, &host, before, true).await;
        h.finish().await;
    });
}

#[test]
fn garbled_frames_are_protocol_violation() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        // A well-framed payload that does not decode, then bytes that are
        // not even a sensible frame.
        for mode in ["payload", "raw"] {
            let before = pid_of(&host);
            let err = expect_error(&host, "garbled_frame", json!({"mode": mode})).await;
            assert_eq!(err.code(), "protocol_violation", "{mode}: {err:?}");
            assert_next_call_works(&h, &host, before, true).await;
        }
        h.finish().await;
    });
}

/// A plugin writing to stdout as fast as it can: the call still succeeds,
/// the flood is drained (the plugin is never blocked on a full pipe), and
/// another plugin's calls complete while it goes on.
#[test]
fn stdout_flood_does_not_stall_the_supervisor() {
    run(async {
        let mut h = Harness::new();
        let flooder = h.host("hostile").await;
        let other = h.host("hello").await;
        let before = pid_of(&flooder);
        let done = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let meanwhile = {
            let (done, answered, other) = (done.clone(), answered.clone(), other.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    let reply = call(&other, "greet", json!({"name": "neighbour"})).await;
                    assert_eq!(
                        reply.expect("the neighbour answers during the flood"),
                        json!({"greeting": "Hello, neighbour!"})
                    );
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let flood = attempt(&flooder, "stdout_flood", json!({"seconds": 1.0})).await;
        let during = answered.load(Ordering::Relaxed);
        done.store(true, Ordering::Relaxed);
        meanwhile.await.expect("the neighbour's calls");
        flood.assert_succeeded();
        // Far more than a pipe holds (64 KiB): the supervisor kept reading.
        assert!(
            flood.value() >= MIB,
            "only {} bytes flooded: the pipe was not drained",
            flood.value()
        );
        assert!(
            during > 0,
            "no call to another plugin completed during the flood"
        );
        assert_next_call_works(&h, &flooder, before, false).await;
        h.finish().await;
    });
}

/// Plugins that die on their own are reported `crashed` with the exit
/// code or the signal, and restarted.
#[test]
fn crashes_are_reported_with_their_exit_code_or_signal() {
    run(async {
        let mut h = Harness::with_policy("[restart]\ncrash_loop_failures = 50\n");
        let host = h.host("hostile").await;
        let crashed = |signal: Option<i32>, exit_code: Option<i32>| ErrorKind::Crashed {
            signal,
            signal_name: signal.map(corral_protocol::error::signal_name),
            exit_code,
        };
        let cases = [
            ("exit", json!({"code": 3}), crashed(None, Some(3))),
            ("segfault", Value::Null, crashed(Some(libc::SIGSEGV), None)),
        ];
        for (method, input, expected) in cases {
            let before = pid_of(&host);
            let err = expect_error(&host, method, input).await;
            assert_eq!(err.kind, expected, "{method}: {err:?}");
            assert_next_call_works(&h, &host, before, true).await;
        }
        // abort(3) raises SIGABRT at itself; the plugin is the first
        // process of its pid namespace, which ignores signals it has no
        // handler for, so glibc's abort falls through to `hlt` and the
        // process dies of SIGSEGV instead. Either is a crash by signal.
        let before = pid_of(&host);
        let err = expect_error(&host, "abort", Value::Null).await;
        assert!(
            matches!(
                err.kind,
                ErrorKind::Crashed {
                    signal: Some(libc::SIGABRT | libc::SIGSEGV),
                    exit_code: None,
                    ..
                }
            ),
            "abort: {err:?}"
        );
        assert_next_call_works(&h, &host, before, true).await;
        h.finish().await;
    });
}

/// Three deaths in the window quarantine the plugin: the Quarantined
/// event is published, and calls are refused with `quarantined` instead
/// of starting it again.
#[test]
fn crash_loop_ends_in_quarantine() {
    run(async {
        let mut h = Harness::with_policy(
            "[restart]\ncrash_loop_failures = 3\ncrash_loop_window = \"60s\"\n",
        );
        let mut events = h.events();
        let host = h.host("hostile").await;
        for code in [1, 2, 3] {
            let err = expect_error(&host, "exit", json!({"code": code})).await;
            assert_eq!(
                err.kind,
                ErrorKind::Crashed {
                    signal: None,
                    signal_name: None,
                    exit_code: Some(code)
                },
                "{err:?}"
            );
        }
        let quarantined = wait_for_event(&mut events, EVENT_WAIT, |e| {
            matches!(e, Event::Quarantined { .. })
        })
        .await;
        assert_eq!(
            quarantined,
            Some(Event::Quarantined {
                plugin: "hostile".into(),
                failures: 3,
                window_ms: 60_000
            })
        );
        assert_eq!(host.state(), PluginState::Quarantined);
        let refused = expect_error(&host, "whoami", Value::Null).await;
        assert_eq!(
            refused.kind,
            ErrorKind::Quarantined {
                plugin: "hostile".into(),
                failures: 3,
                window_ms: 60_000
            },
            "{refused:?}"
        );
        assert!(
            host.children().is_empty(),
            "a quarantined plugin runs nothing"
        );
        h.assert_settled().await;
        h.finish().await;
    });
}

/// A plugin that pings and never reads its channel is killed once 1024
/// Pongs wait unwritten: the supervisor's queue for it stays bounded, the
/// death is the typed protocol violation, and the next call works.
#[test]
fn a_ping_flood_that_never_reads_is_a_protocol_violation() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        let before = pid_of(&host);
        let err = expect_error(&host, "ping_flood", json!({"count": 1_000_000})).await;
        let ErrorKind::ProtocolViolation { reason } = &err.kind else {
            panic!("expected protocol_violation, got {err:?}");
        };
        assert!(
            reason.contains("1024 Pings without reading the Pongs"),
            "{reason}"
        );
        assert_next_call_works(&h, &host, before, true).await;
        h.finish().await;
    });
}

/// 20,000 `Log` records (40 times the burst): drained, rate limited like stdout, each drop
/// counted per plugin; the plugin is not harmed and the next call works.
#[test]
fn a_log_flood_is_capped_and_counted() {
    const COUNT: u64 = 20_000;
    run(async {
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        let before = pid_of(&host);
        let limit = h.runtime().output_limit;
        let started = Instant::now();
        let sent = attempt(&host, "log_flood", json!({"count": COUNT})).await;
        sent.assert_succeeded();
        assert_eq!(sent.value(), COUNT);
        // The reader handles frames in order: after the reply, every
        // record has been judged.
        let elapsed = started.elapsed().as_secs_f64();
        let dropped = h
            .runtime()
            .drops
            .snapshot()
            .into_iter()
            .find(|(name, _, _)| name == "hostile")
            .map(|(_, logs, _)| logs)
            .expect("the plugin's drop counters");
        let logged = COUNT - dropped;
        let allowed = f64::from(limit.burst) + f64::from(limit.per_second) * elapsed + 1.0;
        assert!(
            (logged as f64) <= allowed,
            "{logged} records logged, the limit allows {allowed:.0} in {elapsed:.2}s"
        );
        assert!(dropped > 0);
        assert_next_call_works(&h, &host, before, false).await;
        h.finish().await;
    });
}
