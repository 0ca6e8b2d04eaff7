//! A call through corrald's Unix-socket API, end to end: a hyper HTTP/1.1
//! client per connection, `POST /v1/plugins/hello/call` with a 64-byte
//! echo, against a bare request/response of the same sizes over a Unix
//! socket (a helper process with a thread per connection, blocking client
//! threads here) at the same concurrency, alternating in one run.

use crate::bare::{self, Program};
use crate::daemon::{Daemon, DaemonDir, http};
use crate::report::{Section, Table, verdict};
use crate::stats::{Summary, fmt_bytes, fmt_rate, fmt_ratio, fmt_us};
use crate::{Ctx, SummaryRow};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CALL_PATH: &str = "/v1/plugins/hello/call";

fn call_body() -> String {
    // 64 bytes of input: the JSON string (quotes included) hello's echo
    // receives and sends back.
    format!(r#"{{"method":"echo","input":"{}"}}"#, "x".repeat(62))
}

/// The bytes hyper puts on the wire for one call, for the bare baseline.
fn request_size(body: &str) -> usize {
    format!(
        "POST {CALL_PATH} HTTP/1.1\r\nhost: corral\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .len()
}

/// Outcome of one concurrency level for one contender.
#[derive(Default)]
struct Run {
    latencies: Vec<Duration>,
    /// The `usage.wall_ms` corrald reports (time inside `Child::call`),
    /// of every fourth call, microseconds.
    inner: Vec<f64>,
    elapsed: Duration,
    errors: u64,
    first_error: Option<String>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn merge(&mut self, other: Run) {
        self.latencies.extend(other.latencies);
        self.inner.extend(other.inner);
        self.elapsed += other.elapsed;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(socket: &Path) -> Result<Sender> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request on `sender`: its status and body.
async fn exchange(sender: &mut Sender, body: &Bytes) -> Result<(hyper::StatusCode, Bytes)> {
    sender.ready().await?;
    let request = Request::post(CALL_PATH)
        .header(hyper::header::HOST, "corral")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.clone()))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

/// One keep-alive client calling until `deadline`. A failed exchange
/// (status or transport) is counted, and the client reconnects after a
/// transport error, so one bad moment shows in the errors column instead
/// of ending the benchmark.
async fn hyper_client(socket: PathBuf, body: Bytes, deadline: Instant) -> Result<Run> {
    let mut sender = connect(&socket).await?;
    let mut run = Run::default();
    while Instant::now() < deadline {
        let t = Instant::now();
        let (status, bytes) = match exchange(&mut sender, &body).await {
            Ok(answer) => answer,
            Err(e) => {
                run.errors += 1;
                if run.first_error.is_none() {
                    run.first_error = Some(format!("transport: {e:#}"));
                }
                sender = connect(&socket).await?;
                continue;
            }
        };
        run.latencies.push(t.elapsed());
        if status == hyper::StatusCode::OK && run.latencies.len() % 4 == 0 {
            let wall = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["usage"]["wall_ms"].as_f64());
            if let Some(ms) = wall {
                run.inner.push(ms * 1000.0);
            }
        }
        if status != hyper::StatusCode::OK {
            run.errors += 1;
            if run.first_error.is_none() {
                run.first_error = Some(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
            }
        }
    }
    Ok(run)
}

fn corral_level(ctx: &Ctx, socket: &Path, clients: usize, duration: Duration) -> Result<Run> {
    let body = Bytes::from(call_body());
    ctx.tokio.block_on(async {
        let start = Instant::now();
        let deadline = start + duration;
        let tasks: Vec<_> = (0..clients)
            .map(|_| tokio::spawn(hyper_client(socket.to_path_buf(), body.clone(), deadline)))
            .collect();
        let mut total = Run::default();
        for t in tasks {
            let run = t.await.context("a client task panicked")??;
            total.latencies.extend(run.latencies);
            total.inner.extend(run.inner);
            total.errors += run.errors;
            if total.first_error.is_none() {
                total.first_error = run.first_error;
            }
        }
        total.elapsed = start.elapsed();
        Ok(total)
    })
}

/// One blocking client speaking raw HTTP/1.1 to corrald (no hyper on
/// the client side), to tell the client's share from the daemon's.
fn raw_http_client(socket: &Path, duration: Duration) -> Result<Run> {
    let body = call_body();
    let request = format!(
        "POST {CALL_PATH} HTTP/1.1\r\nhost: corral\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = UnixStream::connect(socket)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut run = Run::default();
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        stream.write_all(request.as_bytes())?;
        let mut have = 0;
        let (head_end, content_length) = loop {
            let n = stream.read(&mut buf[have..])?;
            if n == 0 {
                bail!("corrald closed the connection");
            }
            have += n;
            if let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .context("a response without content-length")?;
                break (end + 4, length);
            }
        };
        while have < head_end + content_length {
            let n = stream.read(&mut buf[have..])?;
            if n == 0 {
                bail!("corrald closed the connection mid-response");
            }
            have += n;
        }
        run.latencies.push(t.elapsed());
        if !buf.starts_with(b"HTTP/1.1 200") {
            run.errors += 1;
        }
    }
    run.elapsed = start.elapsed();
    Ok(run)
}

fn bare_level(
    socket: &Path,
    clients: usize,
    request: usize,
    response: usize,
    duration: Duration,
) -> Result<Run> {
    let start = Instant::now();
    let deadline = start + duration;
    let results: Vec<Result<Vec<Duration>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(move || -> Result<Vec<Duration>> {
                    let mut stream = UnixStream::connect(socket)?;
                    let req = vec![b'q'; request];
                    let mut resp = vec![0u8; response];
                    let mut lat = Vec::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        stream.write_all(&req)?;
                        stream.read_exact(&mut resp)?;
                        lat.push(t.elapsed());
                    }
                    Ok(lat)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a client thread panicked")))
            })
            .collect()
    });
    let mut run = Run::default();
    for r in results {
        run.latencies.extend(r?);
    }
    run.elapsed = start.elapsed();
    Ok(run)
}

pub fn run(ctx: &mut Ctx) -> Result<Section> {
    let env = ctx.env.clone();
    let (rounds, duration) = if ctx.quick {
        (1, Duration::from_millis(800))
    } else {
        (3, Duration::from_millis(2500))
    };
    let levels = [1usize, 8, 64];
    let mut section = Section::new("4. A call through the Unix-socket API (corrald)");
    let dir = DaemonDir::create("api")?;
    dir.add_hello(&env, "hello")?;
    let mut daemon = Daemon::start(&env, &dir)?;
    let (ready, health) = daemon.wait_ready(Duration::from_secs(60))?;
    let (rss, _) = daemon.rss();

    // Sizes of one exchange, for the bare baseline.
    let body = call_body();
    let first = http(
        &daemon.socket,
        "POST",
        CALL_PATH,
        &body,
        Duration::from_secs(10),
    )?;
    if first.status != 200 {
        bail!(
            "the first call answered {}: {}",
            first.status,
            String::from_utf8_lossy(&first.body)
        );
    }
    let request_bytes = request_size(&body);
    let response_bytes = first.head_bytes + first.body.len();

    let bare_socket = dir.path().join("bare.sock");
    let server = Program::new(
        &env.self_exe,
        &[
            "__rr-server",
            &bare_socket.display().to_string(),
            &request_bytes.to_string(),
            &response_bytes.to_string(),
        ],
    )?;
    let server_pid = bare::spawn(&server, None, false)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&bare_socket).is_err() {
        if Instant::now() > deadline {
            bare::reap(server_pid, Duration::ZERO);
            bail!("the bare request/response server did not start");
        }
        std::thread::sleep(Duration::from_millis(5));
    }

    // Warm-up.
    corral_level(ctx, &daemon.socket, 8, Duration::from_millis(500))?;
    bare_level(
        &bare_socket,
        8,
        request_bytes,
        response_bytes,
        Duration::from_millis(300),
    )?;

    let mut raw = Run::default();
    let mut results: Vec<(usize, Run, Run)> = Vec::new();
    for &clients in &levels {
        let (mut c, mut b) = (Run::default(), Run::default());
        for _ in 0..rounds {
            b.merge(bare_level(
                &bare_socket,
                clients,
                request_bytes,
                response_bytes,
                duration,
            )?);
            c.merge(corral_level(ctx, &daemon.socket, clients, duration)?);
            if clients == 1 {
                raw.merge(raw_http_client(&daemon.socket, duration)?);
            }
        }
        results.push((clients, c, b));
    }
    bare::reap(server_pid, Duration::ZERO);
    let errors: u64 = results.iter().map(|(_, c, _)| c.errors).sum();
    let log_tail = (errors > 0).then(|| daemon.log_tail());
    let stop = daemon.stop(Duration::from_secs(30))?;

    let mut table = Table::new(&[
        "clients",
        "corral p50",
        "corral p99",
        "corral calls/s",
        "bare p50",
        "bare p99",
        "bare req/s",
        "p50 ÷ bare",
        "inside Child::call, p50",
        "errors",
    ]);
    for (clients, c, b) in &results {
        let cs = Summary::of_durations(&c.latencies);
        let bs = Summary::of_durations(&b.latencies);
        table.row(vec![
            clients.to_string(),
            fmt_us(cs.p50),
            fmt_us(cs.p99),
            fmt_rate(c.rate()),
            fmt_us(bs.p50),
            fmt_us(bs.p99),
            fmt_rate(b.rate()),
            fmt_ratio(cs.p50 / bs.p50),
            fmt_us(Summary::of(&mut c.inner.clone()).p50),
            match &c.first_error {
                Some(e) => format!("{} (first: {e})", c.errors),
                None => c.errors.to_string(),
            },
        ]);
    }
    section.intro(format!(
        "corrald from the release build, configuration and a source folder holding hello in a temporary directory under /var/tmp; ready {:.0} ms after exec, daemon RSS {} with one plugin loaded (health reports {} loaded). \
         Each client is one keep-alive HTTP/1.1 connection (hyper) calling `POST {CALL_PATH}` with `{body}` (64 bytes of input) back to back; \
         the bare baseline sends {request_bytes} bytes and reads {response_bytes} back (the same exchange's sizes) over a Unix socket to a helper process with a thread per connection. \
         {rounds} rounds of {:.1} s per level and contender, alternating bare and corral.",
        ready.as_secs_f64() * 1000.0,
        fmt_bytes(rss),
        health["plugins_loaded"],
        duration.as_secs_f64(),
    ));
    section.table("", table);
    let raw_s = Summary::of_durations(&raw.latencies);
    section.note(format!(
        "\"inside Child::call\" is the `usage.wall_ms` corrald reports with each reply (from handing the call to the child's channel to its reply), read from every fourth response; the rest of the p50 is HTTP, JSON, routing, the hops between processes and the client. \
         One client again with a blocking raw HTTP/1.1 client instead of hyper (same request bytes, one keep-alive connection): p50 {}, p99 {}, {} ({} errors); its difference to the first row is the client library's share. \
         SIGTERM to exit: {:.0} ms.",
        fmt_us(raw_s.p50),
        fmt_us(raw_s.p99),
        fmt_rate(raw.rate()),
        raw.errors,
        stop.as_secs_f64() * 1000.0
    ));
    if let Some(tail) = log_tail {
        section.note(format!(
            "**{errors} calls failed.** The end of corrald's log:\n\n```\n{tail}\n```"
        ));
    }

    if let Some((_, c, b)) = results.first() {
        let cs = Summary::of_durations(&c.latencies);
        let bs = Summary::of_durations(&b.latencies);
        let ratio = cs.p50 / bs.p50;
        ctx.summary.push(SummaryRow {
            figure: "API call, 1 client (p50)".into(),
            corral: fmt_us(cs.p50),
            baseline: format!("unix socket {}", fmt_us(bs.p50)),
            ratio: fmt_ratio(ratio),
            target: "≤ 4× bare".into(),
            verdict: verdict(ratio <= 4.0 && c.errors == 0),
        });
    }
    let rates: Vec<f64> = results.iter().map(|(_, c, _)| c.rate()).collect();
    if rates.len() == 3 {
        let grows = rates[1] > rates[0] && rates[2] >= rates[1] * 0.95;
        ctx.summary.push(SummaryRow {
            figure: "API throughput, 1 → 8 → 64 clients".into(),
            corral: rates
                .iter()
                .map(|r| fmt_rate(*r))
                .collect::<Vec<_>>()
                .join(" → "),
            baseline: results
                .iter()
                .map(|(_, _, b)| fmt_rate(b.rate()))
                .collect::<Vec<_>>()
                .join(" → "),
            ratio: String::new(),
            target: "grows with clients".into(),
            verdict: verdict(grows),
        });
    }
    Ok(section)
}
