//! Host services through a real corrald: what a call from one plugin to
//! another costs against the same call made by an API client and against
//! a warm call from the supervisor library straight to a child, and what
//! publishing one event to 100 subscribed plugins costs.
//!
//! The plugins are the `services-raw` test plugin, which times its own
//! requests (`elapsed_us`: Request written to Response read), so the
//! dependency figure is the round trip as the calling plugin sees it:
//! app → corrald → dep → corrald → app. The API figure is a client's
//! round trip on a kept-alive connection; the warm call is `Child::call`
//! to a confined hello in this process. All three echo a small JSON
//! string.

use crate::corral;
use crate::daemon::{Daemon, DaemonDir};
use crate::env::Env;
use crate::report::{Section, Table};
use crate::stats::{Summary, fmt_ratio, fmt_us};
use crate::{Ctx, SummaryRow};
use anyhow::{Context, Result, bail};
use corral_supervisor::child::Child;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

const SUBSCRIBERS: usize = 100;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Adds the packaged services-raw as `name`, with `extra` appended to its
/// manifest.
fn add_raw(env: &Env, dir: &DaemonDir, name: &str, extra: &str) -> Result<()> {
    let src = env.packages.join("services-raw");
    let dest = dir.path().join("plugins").join(name);
    std::fs::create_dir_all(dest.join("bin"))?;
    let manifest = std::fs::read_to_string(src.join("plugin.toml"))
        .context("the services-raw package (built by `cargo xtask package`)")?;
    let renamed = manifest.replacen("name = \"services-raw\"", &format!("name = \"{name}\""), 1);
    std::fs::write(dest.join("plugin.toml"), renamed + extra)?;
    let bin = dest.join("bin/services-raw");
    if std::fs::hard_link(src.join("bin/services-raw"), &bin).is_err() {
        std::fs::copy(src.join("bin/services-raw"), &bin)?;
    }
    for p in [dest.clone(), dest.join("bin")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// One kept-alive HTTP/1.1 connection to corrald.
struct Api {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Api {
    fn connect(socket: &Path) -> Result<Api> {
        let writer = UnixStream::connect(socket)?;
        writer.set_read_timeout(Some(TIMEOUT))?;
        Ok(Api {
            reader: BufReader::new(writer.try_clone()?),
            writer,
        })
    }

    fn post(&mut self, path: &str, body: &Value) -> Result<Value> {
        let body = body.to_string();
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: corral\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.writer.write_all(request.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no status")?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().context("content-length")?;
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        if status != 200 {
            bail!("POST {path}: {status} {}", String::from_utf8_lossy(&body));
        }
        serde_json::from_slice(&body).context("the answer is not JSON")
    }

    /// A call to `plugin`'s `method`; its output.
    fn call(&mut self, plugin: &str, method: &str, input: &Value) -> Result<Value> {
        let answer = self.post(
            &format!("/v1/plugins/{plugin}/call"),
            &json!({"method": method, "input": input}),
        )?;
        Ok(answer["output"].clone())
    }
}

/// What `from` measured for one request, after checking it succeeded.
fn timed_request(
    api: &mut Api,
    from: &str,
    service: &str,
    operation: &str,
    payload: &Value,
) -> Result<(f64, Value)> {
    let out = api.call(
        from,
        "request",
        &json!({"service": service, "operation": operation, "payload": payload}),
    )?;
    if out.get("ok").is_none() {
        bail!("{service}.{operation} from {from} failed: {out}");
    }
    let us = out["elapsed_us"].as_f64().context("no elapsed_us")?;
    Ok((us, out["ok"].clone()))
}

fn warm_calls(ctx: &Ctx, env: &Env, n: usize) -> Result<Vec<Duration>> {
    let _guard = ctx.tokio.enter();
    let policy = corral::policy("")?;
    let rt = corral::runtime(env, &policy, "services-warm", None)?;
    let compiled = corral::compile_hello(env, &policy, &rt)?;
    let child = ctx
        .tokio
        .block_on(Child::start(&rt, corral::spec(&compiled, 0)))
        .map_err(|e| anyhow::anyhow!("starting hello: {}", e.into_error()))?;
    let input = json!("x".repeat(32)).to_string().into_bytes();
    let samples = ctx.tokio.block_on(async {
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + n / 10 {
            let t = Instant::now();
            child
                .call("echo", input.clone(), TIMEOUT)
                .await
                .map_err(|e| anyhow::anyhow!("echo: {e}"))?;
            if i >= n / 10 {
                samples.push(t.elapsed());
            }
        }
        Ok::<_, anyhow::Error>(samples)
    })?;
    ctx.tokio.block_on(child.shutdown(Duration::from_secs(2)));
    Ok(samples)
}

pub fn run(ctx: &mut Ctx) -> Result<Section> {
    let env = ctx.env.clone();
    let (n, events) = if ctx.quick { (200, 50) } else { (2000, 300) };
    let mut section = Section::new("7. Host services: dependency calls and event fan-out");
    let dir = DaemonDir::create("services")?;
    std::fs::write(
        dir.path().join("policy.toml"),
        "[grantable]\nevents_publish = [\"bench.*\"]\nevents_subscribe = [\"bench.*\"]\n",
    )?;
    add_raw(&env, &dir, "dep", "")?;
    add_raw(&env, &dir, "app", "\n[dependencies]\ndep = \"*\"\n")?;
    add_raw(
        &env,
        &dir,
        "pub",
        "\n[permissions.events]\npublish = [\"bench.*\"]\n",
    )?;
    for i in 0..SUBSCRIBERS {
        add_raw(
            &env,
            &dir,
            &format!("sub-{i:03}"),
            "\n[permissions.events]\nsubscribe = [\"bench.*\"]\n",
        )?;
    }
    let mut daemon = Daemon::start(&env, &dir)?;
    daemon.wait_ready(Duration::from_secs(120))?;
    let mut api = Api::connect(&daemon.socket)?;
    let input = json!("x".repeat(32));

    // Warm-up, then the three contenders interleaved in blocks.
    let call_dep = json!({"plugin": "dep", "method": "echo", "input": input});
    for _ in 0..n / 10 {
        api.call("dep", "echo", &input)?;
        timed_request(&mut api, "app", "plugins", "call", &call_dep)?;
    }
    let (mut direct, mut dependency) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        api.call("dep", "echo", &input)?;
        direct.push(t.elapsed().as_secs_f64() * 1e6);
        let (us, ok) = timed_request(&mut api, "app", "plugins", "call", &call_dep)?;
        if ok["output"] != input {
            bail!("dep echoed {ok}");
        }
        dependency.push(us);
    }
    let warm = Summary::of_durations(&warm_calls(ctx, &env, n)?);
    let direct = Summary::of(&mut direct);
    let dependency = Summary::of(&mut dependency);

    let mut table = Table::new(&["path", "p50", "p90", "p99", "min", "n", "p50 ÷ warm call"]);
    for (name, s) in [
        ("warm call: Child::call to a confined child (library)", warm),
        ("direct API call: client → corrald → dep", direct),
        (
            "dependency call: app → corrald → dep → app (as app sees it)",
            dependency,
        ),
    ] {
        table.row(vec![
            name.to_string(),
            fmt_us(s.p50),
            fmt_us(s.p90),
            fmt_us(s.p99),
            fmt_us(s.min),
            s.n.to_string(),
            fmt_ratio(s.p50 / warm.p50),
        ]);
    }
    section.table(
        "A 32-byte JSON string echoed by a services-raw plugin (warm call: by hello).",
        table,
    );

    // Fan-out: every subscriber subscribes, then pub publishes.
    for i in 0..SUBSCRIBERS {
        timed_request(
            &mut api,
            &format!("sub-{i:03}"),
            "events",
            "subscribe",
            &json!({"pattern": "bench.*"}),
        )?;
    }
    let event = json!({"topic": "bench.tick", "payload": {"n": 1}});
    let (mut publish, mut client) = (Vec::new(), Vec::new());
    let mut dropped = 0;
    for _ in 0..events {
        let (us, reach) = timed_request(&mut api, "pub", "events", "publish", &event)?;
        publish.push(us);
        dropped += reach["dropped"].as_u64().unwrap_or(0);
        if reach["delivered"].as_u64().unwrap_or(0) + reach["dropped"].as_u64().unwrap_or(0)
            != SUBSCRIBERS as u64
        {
            bail!("a publish reached {reach}, not {SUBSCRIBERS} subscribers");
        }
        let t = Instant::now();
        api.post("/v1/events", &event)?;
        client.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let publish = Summary::of(&mut publish);
    let client = Summary::of(&mut client);
    let mut table = Table::new(&[
        "publisher",
        "p50",
        "p90",
        "p99",
        "min",
        "n",
        "per subscriber (p50)",
    ]);
    for (name, s) in [
        ("a plugin: events.publish (as it sees it)", publish),
        ("an API client: POST /v1/events", client),
    ] {
        table.row(vec![
            name.to_string(),
            fmt_us(s.p50),
            fmt_us(s.p90),
            fmt_us(s.p99),
            fmt_us(s.min),
            s.n.to_string(),
            fmt_us(s.p50 / SUBSCRIBERS as f64),
        ]);
    }
    section.table(
        format!(
            "One event published to {SUBSCRIBERS} subscribed plugins; the publish is answered once every delivery is queued (dropped in the run: {dropped})."
        ),
        table,
    );
    ctx.summary.push(SummaryRow {
        figure: "dependency call round trip (p50)".into(),
        corral: fmt_us(dependency.p50),
        baseline: format!("API call {}, warm {}", fmt_us(direct.p50), fmt_us(warm.p50)),
        ratio: fmt_ratio(dependency.p50 / direct.p50),
        target: String::new(),
        verdict: String::new(),
    });
    ctx.summary.push(SummaryRow {
        figure: format!("event fan-out to {SUBSCRIBERS} plugins (p50)"),
        corral: fmt_us(publish.p50),
        baseline: String::new(),
        ratio: String::new(),
        target: String::new(),
        verdict: String::new(),
    });
    daemon.stop(Duration::from_secs(30))?;
    Ok(section)
}
