//! The soak (`--soak SECONDS`): corrald with hello, open to every local
//! user as `corrald --dev` is, 64 well-behaved clients calling it for the
//! whole run while a hostile peer holds connections the whole time
//! (request heads it never finishes, pipelined `GET /metrics` it never
//! reads, reconnecting whenever the daemon cuts one). The clients and the
//! hostile peer run as two other, unprivileged uids (neither is an
//! admin), in helper processes of this binary. What it reports: calls
//! made and failed by the clients, their latency, the daemon's memory and
//! open descriptors sampled every 10 s, and why the daemon closed
//! connections. Done means no failed call and flat memory.

use crate::daemon::{Daemon, DaemonDir, http};
use crate::env::Env;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The well-behaved clients' uid and gid (a caller group of the daemon).
const CLIENT_UID: u32 = 65533;
/// The hostile peer's uid: no group of the daemon's at all.
const HOSTILE_UID: u32 = 65534;
const CLIENTS: usize = 64;
/// Connections the hostile peer keeps trying to hold, per mode.
const HOSTILE_SLOW: usize = 600;
const HOSTILE_PIPELINE: usize = 200;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// What the clients' helper prints at the end.
#[derive(Debug, Default)]
struct ClientTotals {
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    latencies_us: Vec<u64>,
}

/// One memory sample.
struct Sample {
    at: Duration,
    rss: u64,
    fds: usize,
}

/// Runs the soak and prints (and returns) its markdown report.
pub fn run(env: &Env, seconds: u64, command: &str) -> Result<String> {
    let mut dir = DaemonDir::create("soak")?;
    dir.socket_mode = "0666".into();
    dir.caller_groups = vec![CLIENT_UID.to_string()];
    dir.add_hello(env, "hello")?;
    let mut daemon = Daemon::start(env, &dir)?;
    daemon.wait_ready(Duration::from_secs(120))?;
    let socket = dir.socket();
    let socket_arg = socket.display().to_string();
    let duration = Duration::from_secs(seconds);
    let mut hostile = Vec::new();
    for (mode, count) in [("slow", HOSTILE_SLOW), ("pipeline", HOSTILE_PIPELINE)] {
        hostile.push(helper(
            env,
            HOSTILE_UID,
            &[
                "__soak-hostile",
                &socket_arg,
                &count.to_string(),
                mode,
                &(seconds + 30).to_string(),
            ],
        )?);
    }
    // The hostile peer first, so the clients start against a full house.
    std::thread::sleep(Duration::from_secs(2));
    let clients = helper(
        env,
        CLIENT_UID,
        &[
            "__soak-clients",
            &socket_arg,
            &CLIENTS.to_string(),
            &seconds.to_string(),
        ],
    )?;
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < duration {
        std::thread::sleep(SAMPLE_EVERY.min(duration.saturating_sub(started.elapsed())));
        samples.push(Sample {
            at: started.elapsed(),
            rss: crate::bare::rss_bytes(&daemon.pid().to_string()).unwrap_or(0),
            fds: std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
                .map(|d| d.count())
                .unwrap_or(0),
        });
        if let Some(status) = daemon.process.try_wait()? {
            bail!(
                "corrald exited with {status} during the soak; its log:\n{}",
                daemon.log_tail()
            );
        }
    }
    let output = clients
        .wait_with_output()
        .context("waiting for the clients")?;
    let totals = parse_totals(&String::from_utf8_lossy(&output.stdout)).with_context(|| {
        format!(
            "the clients' helper printed no totals; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let metrics = match http(&socket, "GET", "/metrics", "", Duration::from_secs(30)) {
        Ok(r) => String::from_utf8_lossy(&r.body).into_owned(),
        Err(e) => format!("# GET /metrics failed: {e:#}\n"),
    };
    // The hostile peer must have held on to the end: a helper that died
    // early would make the run look better than it was.
    let mut hostile_end = Vec::new();
    for mut h in hostile {
        match h.try_wait() {
            Ok(None) => hostile_end.push("running".to_string()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = h.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                hostile_end.push(format!("exited early: {status} {}", err.trim()));
            }
            Err(e) => hostile_end.push(format!("unknown: {e}")),
        }
        let _ = h.kill();
        let _ = h.wait();
    }
    let log_bytes = std::fs::metadata(&daemon.log).map(|m| m.len()).unwrap_or(0);
    daemon.stop(Duration::from_secs(60))?;
    let mut report = render(command, seconds, &totals, &samples, &metrics, log_bytes);
    report.push_str(&format!(
        "\nThe hostile peer's two helpers at the end: {}.\n",
        hostile_end.join(", ")
    ));
    println!("{report}");
    if totals.failed > 0 {
        bail!(
            "{} of {} calls failed; the first: {}",
            totals.failed,
            totals.ok + totals.failed,
            totals.first_error.unwrap_or_default()
        );
    }
    Ok(report)
}

/// Starts this binary in a helper mode as `uid` (gid and only group the
/// same number).
fn helper(env: &Env, uid: u32, args: &[&str]) -> Result<Child> {
    let mut command = Command::new(&env.self_exe);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec, on data
    // prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            let groups = [uid];
            if libc::setgroups(1, groups.as_ptr()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("starting {} {}", env.self_exe.display(), args[0]))
}

fn parse_totals(text: &str) -> Result<ClientTotals> {
    let v: serde_json::Value = serde_json::from_str(text.trim())?;
    Ok(ClientTotals {
        ok: v["ok"].as_u64().unwrap_or(0),
        failed: v["failed"].as_u64().unwrap_or(0),
        first_error: v["first_error"].as_str().map(str::to_string),
        latencies_us: v["latencies_us"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
            .unwrap_or_default(),
    })
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn render(
    command: &str,
    seconds: u64,
    totals: &ClientTotals,
    samples: &[Sample],
    metrics: &str,
    log_bytes: u64,
) -> String {
    let mut lat = totals.latencies_us.clone();
    lat.sort_unstable();
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    let mut out = String::new();
    out.push_str(&format!(
        "Command: `{command}`\n\n\
         {CLIENTS} well-behaved clients (uid {CLIENT_UID}, a caller group) calling hello's echo on keep-alive connections for {seconds} s, \
         while a hostile peer (uid {HOSTILE_UID}, no group) keeps trying to hold {HOSTILE_SLOW} connections with request heads it never finishes \
         and {HOSTILE_PIPELINE} with pipelined `GET /metrics` it never reads, reconnecting whenever one is cut.\n\n\
         | figure | value |\n|---|---|\n\
         | calls answered | {} |\n| calls failed | {} |\n| rate | {:.0} calls/s |\n\
         | latency p50 / p99 / max (sampled) | {} / {} / {} µs |\n\
         | daemon log written | {} |\n",
        totals.ok,
        totals.failed,
        totals.ok as f64 / seconds.max(1) as f64,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0),
        mib(log_bytes),
    ));
    if let Some(e) = &totals.first_error {
        out.push_str(&format!("| first failure | {e} |\n"));
    }
    out.push_str("\nThe daemon's memory (VmRSS) and open descriptors, every 10 s:\n\n| time | RSS | fds |\n|---|---|---|\n");
    for s in samples {
        out.push_str(&format!(
            "| {:.0} s | {} | {} |\n",
            s.at.as_secs_f64(),
            mib(s.rss),
            s.fds
        ));
    }
    out.push_str("\nConnections the daemon closed, by reason (`corral_connections_closed_total`), and the rest of its connection metrics at the end:\n\n```\n");
    for line in metrics.lines().filter(|l| {
        (l.starts_with("corral_connections")
            || l.starts_with("# GET")
            || l.starts_with("corral_accept_errors")
            || l.starts_with("corral_log_lines_dropped")
            || l.starts_with("corral_http_errors"))
            && !l.starts_with("# HELP")
            && !l.starts_with("# TYPE")
    }) {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("```\n");
    out
}

// ---- helper modes ------------------------------------------------------

/// `__soak-hostile SOCKET COUNT slow|pipeline SECONDS`.
pub fn hostile_helper(args: &[String]) -> Result<()> {
    let [socket, count, mode, seconds] = args else {
        bail!("usage: __soak-hostile SOCKET COUNT slow|pipeline SECONDS");
    };
    let count: usize = count.parse()?;
    let until = Instant::now() + Duration::from_secs(seconds.parse()?);
    let mut held: Vec<UnixStream> = Vec::new();
    while Instant::now() < until {
        // Drop what the daemon closed, then top up.
        held.retain(still_open);
        while held.len() < count {
            let Ok(mut s) = UnixStream::connect(socket) else {
                break;
            };
            if abuse(&mut s, mode) {
                held.push(s);
            } else {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn abuse(s: &mut UnixStream, mode: &str) -> bool {
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    match mode {
        "slow" => s
            .write_all(b"POST /v1/plugins/hello/call HTTP/1.1\r\nHost: corral\r\nX-Slow: ")
            .is_ok(),
        _ => {
            let burst = b"GET /metrics HTTP/1.1\r\nHost: corral\r\n\r\n".repeat(64);
            loop {
                match s.write(&burst) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                    Err(_) => return false,
                }
            }
        }
    }
}

/// A held connection the daemon has not closed (a read sees no EOF).
fn still_open(s: &UnixStream) -> bool {
    let mut buf = [0u8; 1];
    let mut r: &UnixStream = s;
    match r.read(&mut buf) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

/// `__soak-clients SOCKET CLIENTS SECONDS`: prints the totals as JSON.
pub fn clients_helper(args: &[String]) -> Result<()> {
    let [socket, clients, seconds] = args else {
        bail!("usage: __soak-clients SOCKET CLIENTS SECONDS");
    };
    let clients: usize = clients.parse()?;
    let duration = Duration::from_secs(seconds.parse()?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let socket = std::path::PathBuf::from(socket);
    let totals = runtime.block_on(async move {
        let until = tokio::time::Instant::now() + duration;
        let tasks: Vec<_> = (0..clients)
            .map(|i| tokio::spawn(client(socket.clone(), until, i)))
            .collect();
        let mut totals = ClientTotals::default();
        for t in tasks {
            if let Ok(t) = t.await {
                totals.ok += t.ok;
                totals.failed += t.failed;
                totals.latencies_us.extend(t.latencies_us);
                if totals.first_error.is_none() {
                    totals.first_error = t.first_error;
                }
            }
        }
        totals
    });
    let json = serde_json::json!({
        "ok": totals.ok,
        "failed": totals.failed,
        "first_error": totals.first_error,
        "latencies_us": totals.latencies_us,
    });
    println!("{json}");
    Ok(())
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(socket: &Path) -> Result<Sender> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One well-behaved client: calls in a loop on one keep-alive connection
/// (a health check every 100th request), reconnecting only when the
/// daemon closed it at an idle moment.
async fn client(
    socket: std::path::PathBuf,
    until: tokio::time::Instant,
    index: usize,
) -> ClientTotals {
    let mut totals = ClientTotals::default();
    let body = format!(r#"{{"method":"echo","input":"client {index}"}}"#);
    let mut sender: Option<Sender> = None;
    let mut n: u64 = 0;
    while tokio::time::Instant::now() < until {
        n += 1;
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            match connect(&socket).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    totals.failed += 1;
                    totals.first_error.get_or_insert(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let (method, path, payload) = if n % 100 == 0 {
            ("GET", "/v1/health", String::new())
        } else {
            ("POST", "/v1/plugins/hello/call", body.clone())
        };
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "corral")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(payload)));
        let Ok(request) = request else { continue };
        let t = Instant::now();
        let outcome = async {
            s.ready().await?;
            let response = s.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        }
        .await;
        match outcome {
            Ok((200, _)) => {
                totals.ok += 1;
                if n % 16 == 0 {
                    totals.latencies_us.push(t.elapsed().as_micros() as u64);
                }
            }
            Ok((status, body)) => {
                totals.failed += 1;
                totals.first_error.get_or_insert(format!(
                    "{method} {path}: {status} {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            Err(e) => {
                totals.failed += 1;
                totals
                    .first_error
                    .get_or_insert(format!("{method} {path}: {e}"));
                sender = None;
            }
        }
    }
    totals
}
