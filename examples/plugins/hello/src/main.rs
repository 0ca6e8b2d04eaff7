//! corral's example plugin. Each method shows one thing a plugin can do;
//! `whoami` and `limits` show what the sandbox looks like from inside.

use corral_sdk::{Context, Error, InitLimits, LogLevel, Plugin};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The name in `plugin.toml`; the host checks the two agree.
const NAME: &str = "hello";

#[derive(Deserialize)]
struct Greet {
    name: String,
}

#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

#[derive(Serialize)]
struct LimitsReport {
    limits: InitLimits,
    config: serde_json::Value,
}

#[derive(Deserialize)]
struct Sleep {
    ms: u64,
}

#[derive(Serialize)]
struct Slept {
    slept_ms: u64,
    cancelled: bool,
}

#[derive(Deserialize, Default)]
struct LogInput {
    #[serde(default)]
    message: Option<String>,
}

#[derive(Serialize)]
struct Whoami {
    uid: u32,
    gid: u32,
    pid: i32,
    hostname: String,
}

fn greet(_ctx: &mut Context, input: Greet) -> Result<Greeting, Error> {
    if input.name.trim().is_empty() {
        return Err(Error::invalid_input("`name` is empty: say who to greet"));
    }
    Ok(Greeting {
        greeting: format!("Hello, {}!", input.name),
    })
}

fn limits(ctx: &mut Context, _: ()) -> Result<LimitsReport, Error> {
    Ok(LimitsReport {
        limits: ctx.limits(),
        config: ctx.config()?,
    })
}

/// Sleeps in short steps so that a cancel (or the call's deadline) stops
/// it within a step.
fn sleep(ctx: &mut Context, input: Sleep) -> Result<Slept, Error> {
    const STEP: Duration = Duration::from_millis(5);
    let start = Instant::now();
    let total = Duration::from_millis(input.ms);
    let mut cancelled = false;
    while start.elapsed() < total {
        if ctx.is_cancelled() {
            cancelled = true;
            break;
        }
        std::thread::sleep(STEP.min(total.saturating_sub(start.elapsed())));
    }
    Ok(Slept {
        slept_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        cancelled,
    })
}

fn fail(_ctx: &mut Context, _: ()) -> Result<(), Error> {
    Err(Error::new(
        "requested_failure",
        "the `fail` method always fails, to show how errors look",
    ))
}

/// One record per level, with a field, over the channel.
fn log(ctx: &mut Context, input: Option<LogInput>) -> Result<u32, Error> {
    let message = input
        .unwrap_or_default()
        .message
        .unwrap_or_else(|| "hello from the sandbox".to_string());
    let levels = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];
    let call_id = ctx.call_id().to_string();
    for level in levels {
        ctx.log_fields(level, message.clone(), &[("call_id", &call_id)]);
    }
    Ok(levels.len() as u32)
}

fn whoami(_ctx: &mut Context, _: ()) -> Result<Whoami, Error> {
    // SAFETY: these calls cannot fail and touch no memory of ours.
    let (uid, gid, pid) = unsafe { (libc::getuid(), libc::getgid(), libc::getpid()) };
    Ok(Whoami {
        uid,
        gid,
        pid,
        hostname: hostname()?,
    })
}

fn hostname() -> Result<String, Error> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it when the name fits.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
}

fn main() {
    Plugin::new(NAME, env!("CARGO_PKG_VERSION"))
        .json("greet", greet)
        .raw("echo", |_ctx, input: &[u8]| Ok(input.to_vec()))
        .json("limits", limits)
        .json("sleep", sleep)
        .json("fail", fail)
        .json("log", log)
        .json("whoami", whoami)
        .serve()
}
