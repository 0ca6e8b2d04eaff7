//! Warm calls: a 64-byte `echo` through `Child::call` to one running,
//! fully confined hello, against 64 bytes echoed over a bare socketpair
//! between this process and a helper process. One call in flight (round
//! trip and its rate), then 64 in flight (corral batches the frames;
//! the bare baseline writes 64 messages in one write).

use crate::bare::{self, Program};
use crate::corral;
use crate::report::{Section, Table, verdict};
use crate::stats::{Summary, fmt_rate, fmt_ratio, fmt_us};
use crate::{Ctx, SummaryRow};
use anyhow::{Context, Result, bail};
use corral_supervisor::child::Child;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const PAYLOAD: usize = 64;
const IN_FLIGHT: usize = 64;
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A helper process echoing on the other end of a socketpair.
struct Echo {
    pid: libc::pid_t,
    stream: UnixStream,
}

impl Echo {
    fn start(ctx: &Ctx, cpu: Option<usize>) -> Result<Echo> {
        let mut args = vec!["__echo"];
        let cpu_arg = cpu.map(|c| c.to_string());
        if let Some(c) = &cpu_arg {
            args.push(c);
        }
        let program = Program::new(&ctx.env.self_exe, &args)?;
        let (ours, theirs) = UnixStream::pair()?;
        let pid = bare::spawn(&program, Some(std::os::fd::AsFd::as_fd(&theirs)), false)?;
        drop(theirs);
        Ok(Echo { pid, stream: ours })
    }

    fn stop(self) {
        drop(self.stream);
        bare::reap(self.pid, Duration::from_secs(2));
    }
}

/// `n` round trips of 64 bytes; the time of each.
fn ping_pong(stream: &mut UnixStream, n: usize) -> Result<Vec<Duration>> {
    let out = [b'x'; PAYLOAD];
    let mut back = [0u8; PAYLOAD];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        stream.write_all(&out)?;
        stream.read_exact(&mut back)?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

/// Messages echoed per second with 64 in flight: 64 messages per write.
fn batched(stream: &mut UnixStream, duration: Duration) -> Result<f64> {
    let out = vec![b'x'; PAYLOAD * IN_FLIGHT];
    let mut back = vec![0u8; PAYLOAD * IN_FLIGHT];
    let start = Instant::now();
    let mut messages = 0u64;
    while start.elapsed() < duration {
        stream.write_all(&out)?;
        stream.read_exact(&mut back)?;
        messages += IN_FLIGHT as u64;
    }
    Ok(messages as f64 / start.elapsed().as_secs_f64())
}

/// The bare round trip driven from a tokio task (the runtime's reactor
/// and wake-ups, no corral): how much of corral's figure is the async
/// runtime's.
fn tokio_ping_pong(ctx: &Ctx, n: usize) -> Result<Vec<Duration>> {
    let echo = Echo::start(ctx, None)?;
    let stream = echo.stream.try_clone()?;
    stream.set_nonblocking(true)?;
    let result = ctx.tokio.block_on(async move {
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::UnixStream::from_std(stream)?;
            let out = [b'x'; PAYLOAD];
            let mut back = [0u8; PAYLOAD];
            let mut samples = Vec::with_capacity(n);
            for i in 0..(n + 1000) {
                let t = Instant::now();
                stream.write_all(&out).await?;
                stream.read_exact(&mut back).await?;
                if i >= 1000 {
                    samples.push(t.elapsed());
                }
            }
            Ok::<_, anyhow::Error>(samples)
        })
        .await
        .context("the tokio ping-pong task panicked")?
    });
    echo.stop();
    result
}

fn corral_sequential(ctx: &Ctx, child: &Child, n: usize) -> Result<Vec<Duration>> {
    let child = child.clone();
    ctx.tokio.block_on(async move {
        tokio::spawn(async move {
            let input = vec![b'x'; PAYLOAD];
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let out = child
                    .call("echo", input.clone(), CALL_TIMEOUT)
                    .await
                    .map_err(|e| anyhow::anyhow!("echo call: {e}"))?;
                samples.push(t.elapsed());
                if out.output.len() != PAYLOAD {
                    bail!("echo returned {} bytes", out.output.len());
                }
            }
            Ok(samples)
        })
        .await
        .context("the call task panicked")?
    })
}

/// Calls per second with `IN_FLIGHT` callers, and their latencies.
fn corral_concurrent(ctx: &Ctx, child: &Child, duration: Duration) -> Result<(f64, Vec<Duration>)> {
    concurrent(&ctx.tokio, child, IN_FLIGHT, duration)
}

fn concurrent(
    tokio: &tokio::runtime::Runtime,
    child: &Child,
    in_flight: usize,
    duration: Duration,
) -> Result<(f64, Vec<Duration>)> {
    let child = child.clone();
    tokio.block_on(async move {
        let start = Instant::now();
        let deadline = start + duration;
        let tasks: Vec<_> = (0..in_flight)
            .map(|_| {
                let child = child.clone();
                tokio::spawn(async move {
                    let input = vec![b'x'; PAYLOAD];
                    let mut samples = Vec::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        child
                            .call("echo", input.clone(), CALL_TIMEOUT)
                            .await
                            .map_err(|e| anyhow::anyhow!("echo call: {e}"))?;
                        samples.push(t.elapsed());
                    }
                    Ok::<_, anyhow::Error>(samples)
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.context("a call task panicked")??);
        }
        let rate = all.len() as f64 / start.elapsed().as_secs_f64();
        Ok((rate, all))
    })
}

fn pinned_ping_pong(ctx: &Ctx, helper_cpu: usize, n: usize) -> Result<Summary> {
    let echo = Echo::start(ctx, Some(helper_cpu))?;
    let mut stream = echo.stream.try_clone()?;
    let samples = std::thread::scope(|s| {
        s.spawn(|| {
            bare::pin_to_cpu(0)?;
            ping_pong(&mut stream, 1000)?;
            ping_pong(&mut stream, n)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the pinned client panicked"))?
    });
    drop(stream);
    let samples = samples?;
    echo.stream.shutdown(std::net::Shutdown::Both).ok();
    echo.stop();
    Ok(Summary::of_durations(&samples))
}

/// `--profile-calls`: one confined hello under a steady call load.
pub fn profile(
    env: &crate::env::Env,
    tokio: &tokio::runtime::Runtime,
    in_flight: usize,
    duration: Duration,
) -> Result<f64> {
    let _guard = tokio.enter();
    let policy = corral::policy("")?;
    let rt = corral::runtime(env, &policy, "profile", None)?;
    let compiled = corral::compile_hello(env, &policy, &rt)?;
    let child = tokio
        .block_on(Child::start(&rt, corral::spec(&compiled, 0)))
        .map_err(|e| anyhow::anyhow!("starting hello: {}", e.into_error()))?;
    eprintln!("hello runs as pid {}", child.pid());
    let (rate, _) = concurrent(tokio, &child, in_flight.max(1), duration)?;
    tokio.block_on(child.shutdown(Duration::from_secs(2)));
    if let Some(d) = rt.cgroups.as_ref() {
        let _ = d.remove_base();
    }
    Ok(rate)
}

pub fn run(ctx: &mut Ctx) -> Result<Section> {
    let env = ctx.env.clone();
    let (blocks, per_block, flight_blocks, flight_time) = if ctx.quick {
        (2, 1000, 1, Duration::from_millis(700))
    } else {
        (8, 5000, 4, Duration::from_secs(2))
    };
    let mut section = Section::new("2. Warm calls: supervisor ↔ child");
    let _guard = ctx.tokio.enter();
    let policy = corral::policy("")?;
    let rt = corral::runtime(&env, &policy, "warm", None)?;
    let compiled = corral::compile_hello(&env, &policy, &rt)?;
    let spec = corral::spec(&compiled, 0);
    let child = ctx
        .tokio
        .block_on(Child::start(&rt, spec))
        .map_err(|e| anyhow::anyhow!("starting hello: {}", e.into_error()))?;
    let mut echo = Echo::start(ctx, None)?;

    // Warm both paths up.
    ping_pong(&mut echo.stream, 2000)?;
    corral_sequential(ctx, &child, 2000)?;

    let (mut bare_samples, mut corral_samples) = (Vec::new(), Vec::new());
    let (mut bare_time, mut corral_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..blocks {
        let t = Instant::now();
        bare_samples.extend(ping_pong(&mut echo.stream, per_block)?);
        bare_time += t.elapsed();
        let t = Instant::now();
        corral_samples.extend(corral_sequential(ctx, &child, per_block)?);
        corral_time += t.elapsed();
    }
    let bare_s = Summary::of_durations(&bare_samples);
    let corral_s = Summary::of_durations(&corral_samples);
    let bare_rate = bare_samples.len() as f64 / bare_time.as_secs_f64();
    let corral_rate = corral_samples.len() as f64 / corral_time.as_secs_f64();

    let (mut bare_flight, mut corral_flight, mut flight_lat) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..flight_blocks {
        bare_flight.push(batched(&mut echo.stream, flight_time)?);
        let (rate, lat) = corral_concurrent(ctx, &child, flight_time)?;
        corral_flight.push(rate);
        flight_lat.extend(lat);
    }
    let bare_flight = Summary::of(&mut bare_flight).p50;
    let corral_flight = Summary::of(&mut corral_flight).p50;
    let flight_s = Summary::of_durations(&flight_lat);
    echo.stop();

    let tokio_s = Summary::of_durations(&tokio_ping_pong(ctx, per_block)?);
    let same_core = pinned_ping_pong(ctx, 0, per_block)?;
    let cross_core = if ctx.env_nproc() >= 2 {
        Some(pinned_ping_pong(ctx, 1, per_block)?)
    } else {
        None
    };

    let mut table = Table::new(&["figure", "corral", "bare socketpair", "corral ÷ bare"]);
    table.row(vec![
        "round trip p50, 64 B, 1 in flight".into(),
        fmt_us(corral_s.p50),
        fmt_us(bare_s.p50),
        fmt_ratio(corral_s.p50 / bare_s.p50),
    ]);
    table.row(vec![
        "round trip p90".into(),
        fmt_us(corral_s.p90),
        fmt_us(bare_s.p90),
        fmt_ratio(corral_s.p90 / bare_s.p90),
    ]);
    table.row(vec![
        "round trip p99".into(),
        fmt_us(corral_s.p99),
        fmt_us(bare_s.p99),
        fmt_ratio(corral_s.p99 / bare_s.p99),
    ]);
    table.row(vec![
        "calls per second, 1 in flight".into(),
        fmt_rate(corral_rate),
        fmt_rate(bare_rate),
        fmt_ratio(corral_rate / bare_rate),
    ]);
    table.row(vec![
        format!("calls per second, {IN_FLIGHT} in flight"),
        fmt_rate(corral_flight),
        format!("{} (64 per write)", fmt_rate(bare_flight)),
        fmt_ratio(corral_flight / bare_flight),
    ]);
    table.row(vec![
        format!("call latency p50 / p99, {IN_FLIGHT} in flight"),
        format!("{} / {}", fmt_us(flight_s.p50), fmt_us(flight_s.p99)),
        String::new(),
        String::new(),
    ]);
    section.intro(format!(
        "One confined hello (built-in policy) serving `echo` with 64 bytes of input, called with `Child::call` from tasks of a {}-worker tokio runtime; \
         the bare baseline echoes 64 bytes over a socketpair between this process (blocking I/O) and a helper process, neither pinned. \
         1 in flight: {blocks} blocks of {per_block} round trips each, alternating bare and corral. \
         {IN_FLIGHT} in flight: {flight_blocks} blocks of {:.1} s each (median of the blocks); corral runs {IN_FLIGHT} concurrent callers, the baseline writes {IN_FLIGHT} messages per write and reads them back.",
        ctx.workers,
        flight_time.as_secs_f64()
    ));
    section.table("", table);
    let mut pinned = Table::new(&["bare 64 B round trip, for context", "p50", "p99"]);
    pinned.row(vec![
        "from a tokio task (tokio UnixStream, same runtime, no corral)".into(),
        fmt_us(tokio_s.p50),
        fmt_us(tokio_s.p99),
    ]);
    pinned.row(vec![
        "same core (both on CPU 0)".into(),
        fmt_us(same_core.p50),
        fmt_us(same_core.p99),
    ]);
    if let Some(c) = cross_core {
        pinned.row(vec![
            "cross core (CPU 0 ↔ CPU 1)".into(),
            fmt_us(c.p50),
            fmt_us(c.p99),
        ]);
    }
    section.table(
        "For context: the same ping-pong driven from a tokio task, and with both ends pinned (DESIGN: ~5 µs same core, ~16 µs cross core):",
        pinned,
    );

    let ratio = corral_s.p50 / bare_s.p50;
    ctx.summary.push(SummaryRow {
        figure: "warm call round trip, 64 B (p50)".into(),
        corral: fmt_us(corral_s.p50),
        baseline: format!("socketpair {}", fmt_us(bare_s.p50)),
        ratio: fmt_ratio(ratio),
        target: "≤ 1.5× bare".into(),
        verdict: verdict(ratio <= 1.5),
    });
    ctx.summary.push(SummaryRow {
        figure: "calls/s to one child, 1 in flight".into(),
        corral: fmt_rate(corral_rate),
        baseline: format!("ping-pong {}", fmt_rate(bare_rate)),
        ratio: fmt_ratio(corral_rate / bare_rate),
        target: "≥ 0.5× bare ping-pong".into(),
        verdict: verdict(corral_rate >= 0.5 * bare_rate),
    });
    ctx.summary.push(SummaryRow {
        figure: format!("calls/s to one child, {IN_FLIGHT} in flight"),
        corral: fmt_rate(corral_flight),
        baseline: format!("batched {}", fmt_rate(bare_flight)),
        ratio: fmt_ratio(corral_flight / bare_flight),
        target: "> 1 M/s".into(),
        verdict: verdict(corral_flight > 1e6),
    });

    ctx.tokio.block_on(child.shutdown(Duration::from_secs(2)));
    if let Some(d) = rt.cgroups.as_ref() {
        let _ = d.remove_base();
    }
    Ok(section)
}
