//! Runs the built `hostile` binary unconfined, with a channel on fd 3, to
//! prove each attack really makes its system calls: where a plain rlimit
//! can stand in for the sandbox, the attack must hit it; where the attack
//! targets the host's end of the channel, the host must see the bad bytes.
//!
//! Attacks that would harm this machine without a sandbox (kill_all,
//! fork_bomb, mount, setuid as root, ...) are run only by the escape suite,
//! inside the sandbox.

use corral_protocol::frame::FrameError;
use corral_protocol::message::{CallResult, Init, InitLimits, PluginMessage};
use corral_sdk::testing::{Options, TestHost};
use serde_json::{Value, json};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

/// Starts `hostile` unconfined with its channel on fd 3 and completes the
/// handshake; it names itself after `CORRAL_PLUGIN` when that is set.
fn start_with(options: Options) -> TestHost {
    let expected = options
        .env
        .iter()
        .find(|(k, _)| k == "CORRAL_PLUGIN")
        .map_or_else(|| "hostile".to_string(), |(_, v)| v.clone());
    let max_frame = options.max_frame;
    let mut h = TestHost::spawn(env!("CARGO_BIN_EXE_hostile"), options).expect("spawn hostile");
    let hello = h
        .handshake(Init {
            version: 1,
            max_frame,
            config: b"{}".to_vec(),
            limits: InitLimits::default(),
        })
        .expect("handshake");
    assert_eq!(hello.name, expected);
    h
}

fn start() -> TestHost {
    start_with(Options::default())
}

fn send_call(h: &mut TestHost, method: &str, input: &Value) -> u64 {
    let bytes = serde_json::to_vec(input).expect("json");
    h.send_call(method, &bytes, 0).expect("send the call")
}

/// Calls an attack and returns its Attempt as JSON.
fn attack(h: &mut TestHost, method: &str, input: Value) -> Value {
    let id = send_call(h, method, &input);
    let reply = h.reply().expect("a reply");
    assert_eq!(reply.id, id);
    let CallResult::Ok(out) = reply.result else {
        panic!("{method} returned an error: {:?}", reply.result)
    };
    serde_json::from_slice(&out).expect("attempt json")
}

fn errno(attempt: &Value) -> i64 {
    attempt["errno"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected a failure with errno, got {attempt}"))
}

#[test]
fn whoami_and_proc_pids_see_this_process() {
    let mut h = start();
    let me = attack(&mut h, "whoami", Value::Null);
    assert_eq!(me["ok"], true);
    let pid = h.child().expect("child").id();
    let detail = me["detail"].as_str().expect("detail");
    assert!(detail.contains(&format!(" pid={pid} ")), "{detail}");
    let pids = attack(&mut h, "proc_pids", Value::Null);
    let listed: Vec<&str> = pids["detail"]
        .as_str()
        .expect("detail")
        .split(' ')
        .collect();
    assert!(listed.contains(&pid.to_string().as_str()), "{pids}");
    assert!(pids["value"].as_u64().is_some_and(|n| n > 1));
    assert!(h.close().expect("close").success());
}

#[test]
fn file_attacks_make_the_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("victim");
    let target = target.to_str().expect("utf-8 path");
    let mut h = start();

    let wrote = attack(&mut h, "write_file", json!({ "path": target }));
    assert_eq!(wrote["ok"], true, "{wrote}");
    let text = std::fs::read_to_string(target).expect("the file was written");
    assert!(text.contains("hostile"));

    let read = attack(&mut h, "read_file", json!({ "path": target }));
    assert_eq!(read["ok"], true);
    assert_eq!(read["value"], text.len());

    let missing = attack(
        &mut h,
        "read_file",
        json!({ "path": "/nonexistent/corral" }),
    );
    assert_eq!(missing["ok"], false);
    assert_eq!(errno(&missing), i64::from(libc::ENOENT));

    let listed = attack(&mut h, "list_dir", json!({ "path": dir.path() }));
    assert_eq!(listed["detail"], "victim");

    let fds = attack(&mut h, "fds", Value::Null);
    let detail = fds["detail"].as_str().expect("detail");
    assert!(
        detail.contains("3=socket:"),
        "the channel must show as fd 3: {fds}"
    );
    assert!(
        !detail.contains("readlink"),
        "only live fds are listed: {fds}"
    );
    assert_eq!(fds["value"], detail.split(' ').count(), "{fds}");
    assert!(h.close().expect("close").success());
}

#[test]
fn fd_exhaust_stops_at_rlimit_nofile_and_the_plugin_goes_on() {
    let mut h = start_with(Options {
        rlimits: vec![(libc::RLIMIT_NOFILE, 40)],
        ..Options::default()
    });
    let attempt = attack(&mut h, "fd_exhaust", Value::Null);
    assert_eq!(attempt["ok"], false, "{attempt}");
    assert_eq!(errno(&attempt), i64::from(libc::EMFILE));
    let opened = attempt["value"].as_u64().expect("count");
    assert!((30..40).contains(&opened), "{attempt}");
    // The fds were closed again: the plugin still serves.
    assert_eq!(attack(&mut h, "whoami", Value::Null)["ok"], true);
    assert!(h.close().expect("close").success());
}

#[test]
fn disk_fill_stops_at_rlimit_fsize() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fill");
    let mut h = start_with(Options {
        rlimits: vec![(libc::RLIMIT_FSIZE, 1 << 20)],
        ..Options::default()
    });
    let attempt = attack(&mut h, "disk_fill", json!({ "path": path }));
    assert_eq!(attempt["ok"], false, "{attempt}");
    assert_eq!(errno(&attempt), i64::from(libc::EFBIG));
    assert_eq!(attempt["value"], 1 << 20);
    assert!(!path.exists(), "the fill file is removed afterwards");
    assert!(h.close().expect("close").success());
}

#[test]
fn memory_bomb_stops_at_rlimit_as() {
    let mut h = start_with(Options {
        rlimits: vec![(libc::RLIMIT_AS, 256 << 20)],
        ..Options::default()
    });
    let attempt = attack(&mut h, "memory_bomb", Value::Null);
    assert_eq!(attempt["ok"], false, "{attempt}");
    assert_eq!(errno(&attempt), i64::from(libc::ENOMEM));
    let touched = attempt["value"].as_u64().expect("bytes");
    assert!(touched > 0 && touched < 256 << 20, "{attempt}");
    h.close().expect("close");
}

#[test]
fn thread_bomb_counts_to_its_ceiling() {
    let mut h = start();
    let attempt = attack(&mut h, "thread_bomb", json!({ "max": 4 }));
    assert_eq!(attempt["ok"], true, "{attempt}");
    assert_eq!(attempt["value"], 4);
    h.close().expect("close");
}

#[test]
fn network_attacks_make_the_calls() {
    let mut h = start();
    let unix = attack(&mut h, "socket", json!({ "domain": "unix" }));
    assert_eq!(unix["ok"], true, "{unix}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let connected = attack(
        &mut h,
        "connect_tcp",
        json!({ "host": "127.0.0.1", "port": port }),
    );
    assert_eq!(connected["ok"], true, "{connected}");
    drop(listener);
    let refused = attack(
        &mut h,
        "connect_tcp",
        json!({ "host": "127.0.0.1", "port": port }),
    );
    assert_eq!(errno(&refused), i64::from(libc::ECONNREFUSED));
    assert!(h.close().expect("close").success());
}

#[test]
fn signalling_and_tracing_a_missing_process_fail_with_esrch() {
    let mut h = start();
    let pid = i32::MAX;
    let kill = attack(&mut h, "kill", json!({ "pid": pid, "signal": 0 }));
    assert_eq!(errno(&kill), i64::from(libc::ESRCH));
    let trace = attack(&mut h, "ptrace", json!({ "pid": pid }));
    assert_eq!(errno(&trace), i64::from(libc::ESRCH), "{trace}");
    assert!(h.close().expect("close").success());
}

#[test]
fn huge_reply_reaches_the_host_as_an_oversized_frame() {
    let mut h = start_with(Options {
        max_frame: 64 * 1024,
        ..Options::default()
    });
    send_call(&mut h, "huge_reply", &json!({ "bytes": 1 << 20 }));
    match h.reader().read::<PluginMessage>() {
        Err(FrameError::TooLarge { len, max }) => {
            assert_eq!(len, (1 << 20) + 24);
            assert_eq!(max, 64 * 1024);
        }
        other => panic!("expected an oversized frame, got {other:?}"),
    }
}

#[test]
fn garbled_frame_reaches_the_host_as_a_decode_error() {
    let mut h = start();
    send_call(&mut h, "garbled_frame", &Value::Null);
    match h.reader().read::<PluginMessage>() {
        Err(FrameError::Decode(_)) => {}
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[test]
fn stdout_flood_writes_to_stdout_and_still_replies() {
    let mut h = start_with(Options {
        capture_stdout: true,
        ..Options::default()
    });
    let mut stdout = h.child().expect("child").stdout.take().expect("stdout");
    let drain = std::thread::spawn(move || {
        let mut total = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n as u64,
            }
        }
    });
    let attempt = attack(&mut h, "stdout_flood", json!({ "seconds": 0.2 }));
    assert_eq!(attempt["ok"], true, "{attempt}");
    let written = attempt["value"].as_u64().expect("bytes");
    assert!(written > 0);
    assert!(h.close().expect("close").success());
    assert_eq!(drain.join().expect("drain"), written);
}

#[test]
fn exit_abort_and_segfault_end_the_process_as_asked() {
    let mut h = start();
    send_call(&mut h, "exit", &json!({ "code": 3 }));
    assert_eq!(h.wait().expect("wait").code(), Some(3));

    let mut h = start();
    send_call(&mut h, "abort", &Value::Null);
    assert_eq!(h.wait().expect("wait").signal(), Some(libc::SIGABRT));

    let mut h = start();
    send_call(&mut h, "segfault", &Value::Null);
    assert_eq!(h.wait().expect("wait").signal(), Some(libc::SIGSEGV));
}

#[test]
fn the_name_comes_from_corral_plugin() {
    let h = start_with(Options {
        env: vec![("CORRAL_PLUGIN".into(), "hostile-net".into())],
        ..Options::default()
    });
    assert!(h.close().expect("close").success());
}

#[test]
fn unknown_arguments_are_invalid_input() {
    let mut h = start();
    let id = send_call(&mut h, "socket", &json!({ "domain": "carrier-pigeon" }));
    match h.receive().expect("a message") {
        PluginMessage::Reply(reply) => {
            assert_eq!(reply.id, id);
            match reply.result {
                CallResult::Err(e) => {
                    assert_eq!(e.code, "invalid_input");
                    assert!(e.message.contains("carrier-pigeon"));
                }
                other => panic!("expected an error, got {other:?}"),
            }
        }
        other => panic!("expected a reply, got {other:?}"),
    }
    assert!(h.close().expect("close").success());
}

#[test]
fn every_package_manifest_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packages");
    let load = |variant: &str| {
        let path = root.join(variant).join("plugin.toml");
        corral_protocol::Manifest::load(&path).expect("manifest parses")
    };
    let plain = load("hostile");
    assert_eq!(plain.name(), "hostile");
    assert_eq!(plain.plugin.entry.as_str(), "bin/hostile");
    assert_eq!(plain.permissions.threads, 2);
    assert!(!plain.permissions.exec);
    assert_eq!(plain.limits.pids, Some(8));
    assert_eq!(plain.limits.open_files, Some(32));
    assert_eq!(plain.limits.memory.map(|m| m.0), Some(64 << 20));
    assert_eq!(plain.limits.disk.map(|d| d.0), Some(1 << 20));
    assert_eq!(
        plain.limits.timeout.map(|t| t.0),
        Some(Duration::from_secs(2))
    );

    let exec = load("hostile-exec");
    assert!(exec.permissions.exec);
    assert_eq!(exec.limits.pids, Some(16));

    let net = load("hostile-net");
    assert_eq!(net.permissions.net.level(), "connect");
    for m in [&plain, &exec, &net] {
        assert_eq!(m.plugin.version.to_string(), env!("CARGO_PKG_VERSION"));
    }
}
