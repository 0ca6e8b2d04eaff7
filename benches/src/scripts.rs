//! Script plugins against native ones: the no-op JavaScript plugin
//! (`js-noop`, run by the static `corral-js`) beside the static Rust hello,
//! both fully confined under the built-in policy, measured in one run:
//! spawn → Ready, a warm call's round trip, and the memory an idle child is
//! charged. Node and Python rows join when their runtimes are in the tree.

use crate::report::{Section, Table, verdict};
use crate::stats::{Summary, fmt_bytes, fmt_ratio, fmt_us};
use crate::{Ctx, SummaryRow, bare, corral};
use anyhow::{Context, Result, bail};
use corral_protocol::policy::SandboxPolicy;
use corral_supervisor::child::Child;
use corral_supervisor::package::Package;
use corral_supervisor::run;
use corral_supervisor::runtime::Runtime;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A JSON string of 64 bytes, quotes included: what both echoes return.
const INPUT: &[u8] = b"\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"";

fn compile(
    ctx: &Ctx,
    name: &str,
    policy: &corral_supervisor::policy::Policy,
    rt: &Runtime,
) -> Result<Arc<SandboxPolicy>> {
    let package =
        Package::open(&ctx.env.packages.join(name)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let compiled = run::compile_package(&package, policy, rt)
        .map_err(|e| anyhow::anyhow!("compiling {name}'s policy: {e}"))?;
    Ok(Arc::new(compiled))
}

/// Starts a child, times it to Ready; returns it running.
fn start(ctx: &Ctx, rt: &Arc<Runtime>, policy: &Arc<SandboxPolicy>) -> Result<(Duration, Child)> {
    let rt = rt.clone();
    let spec = corral::spec(policy, 0);
    ctx.tokio.block_on(async move {
        tokio::spawn(async move {
            let t = Instant::now();
            let child = Child::start(&rt, spec).await;
            let elapsed = t.elapsed();
            child
                .map(|c| (elapsed, c))
                .map_err(|e| anyhow::anyhow!("{}", e.into_error()))
        })
        .await
        .context("the start task panicked")?
    })
}

fn kill(ctx: &Ctx, child: Child) {
    ctx.tokio.block_on(async move { child.kill().await });
}

/// Sequential echo calls; their round trips.
fn calls(ctx: &Ctx, child: &Child, n: usize) -> Result<Vec<Duration>> {
    let child = child.clone();
    ctx.tokio.block_on(async move {
        tokio::spawn(async move {
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let out = child
                    .call("echo", INPUT.to_vec(), CALL_TIMEOUT)
                    .await
                    .map_err(|e| anyhow::anyhow!("echo: {e}"))?;
                samples.push(t.elapsed());
                if out.output != INPUT {
                    bail!("echo returned {:?}", String::from_utf8_lossy(&out.output));
                }
            }
            Ok(samples)
        })
        .await
        .context("the call task panicked")?
    })
}

struct Row {
    label: &'static str,
    policy: Arc<SandboxPolicy>,
    starts: Vec<Duration>,
    calls: Vec<Duration>,
    idle: Vec<f64>,
}

pub fn run(ctx: &mut Ctx) -> Result<Section> {
    let (rounds, per_child) = if ctx.quick { (20, 200) } else { (150, 2000) };
    let mut section = Section::new("6. Script plugins: embedded JavaScript against the Rust hello");
    let _guard = ctx.tokio.enter();
    let policy = corral::policy("")?;
    let rt = corral::runtime(&ctx.env, &policy, "scripts", None)?;
    let mut rows = [
        Row {
            label: "Rust hello (static)",
            policy: corral::compile_hello(&ctx.env, &policy, &rt)?,
            starts: Vec::new(),
            calls: Vec::new(),
            idle: Vec::new(),
        },
        Row {
            label: "JavaScript js-noop (static corral-js)",
            policy: compile(ctx, "js-noop", &policy, &rt)?,
            starts: Vec::new(),
            calls: Vec::new(),
            idle: Vec::new(),
        },
    ];
    // Bare: the same binaries spawned with the handshake, no sandbox.
    let js_program = rows[1].policy.confinement.argv.clone();
    let hello = bare::Program::new(&ctx.env.hello_binary(), &[])?;
    let args: Vec<&str> = js_program[1..].iter().map(String::as_str).collect();
    let js_bare = bare::Program::new(std::path::Path::new(&js_program[0]), &args)?;
    let mut bare_starts: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];

    for round in 0..rounds + 3 {
        for (i, program) in [&hello, &js_bare].into_iter().enumerate() {
            let (elapsed, pid, channel) = bare::start_to_ready(program)?;
            drop(channel);
            bare::reap(pid, Duration::from_secs(2));
            if round >= 3 {
                bare_starts[i].push(elapsed);
            }
        }
        for k in 0..rows.len() {
            let row = &mut rows[(round + k) % 2];
            let (elapsed, child) = start(ctx, &rt, &row.policy)?;
            if round >= 3 {
                row.starts.push(elapsed);
            }
            if round % 10 == 0 {
                row.calls.extend(calls(ctx, &child, per_child / 10)?);
                // Settled after its calls: what an idle loaded plugin costs.
                std::thread::sleep(Duration::from_millis(50));
                if let Some(stats) = child.stats() {
                    row.idle.push(stats.memory_current as f64);
                }
            }
            kill(ctx, child);
        }
    }

    let mut table = Table::new(&[
        "plugin",
        "bare spawn → Ready p50",
        "confined spawn → Ready p50 (p90)",
        "warm call p50 (p90)",
        "idle, charged (p50)",
    ]);
    let mut figures = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let bare = Summary::of_durations(&bare_starts[i]);
        let s = Summary::of_durations(&row.starts);
        let c = Summary::of_durations(&row.calls);
        let idle = Summary::of(&mut row.idle.clone());
        table.row(vec![
            row.label.into(),
            fmt_us(bare.p50),
            format!("{} ({})", fmt_us(s.p50), fmt_us(s.p90)),
            format!("{} ({})", fmt_us(c.p50), fmt_us(c.p90)),
            fmt_bytes(idle.p50),
        ]);
        figures.push((s.p50, c.p50, idle.p50));
    }
    section.intro(format!(
        "Both plugins under the built-in policy with the same runtime (shared empty namespaces, no cgroup pool), {rounds} rounds after 3 of warm-up, alternating which goes first. \
         Bare: `posix_spawn` of the same program (`hello`; `corral-js js-noop/index.js`) with the channel on fd 3, Hello/Init/Ready. \
         Warm call: sequential `echo` calls of a 64-byte JSON string, {} per plugin in total, each on a fresh child after its start. \
         Idle: the child's cgroup `memory.usage_in_bytes` 50 ms after its last call.",
        rows[0].calls.len()
    ));
    section.table("", table);
    let (hello, js) = (figures[0], figures[1]);
    ctx.summary.push(SummaryRow {
        figure: "embedded-JS plugin start (spawn → Ready, p50)".into(),
        corral: fmt_us(js.0),
        baseline: format!("Rust hello {}", fmt_us(hello.0)),
        ratio: fmt_ratio(js.0 / hello.0),
        target: "≤ 2× hello".into(),
        verdict: verdict(js.0 <= 2.0 * hello.0),
    });
    ctx.summary.push(SummaryRow {
        figure: "embedded-JS plugin idle, charged (p50)".into(),
        corral: fmt_bytes(js.2),
        baseline: format!("Rust hello {}", fmt_bytes(hello.2)),
        ratio: fmt_ratio(js.2 / hello.2),
        target: "< 2 MiB".into(),
        verdict: verdict(js.2 < 2.0 * 1024.0 * 1024.0),
    });
    ctx.summary.push(SummaryRow {
        figure: "embedded-JS warm call (p50)".into(),
        corral: fmt_us(js.1),
        baseline: format!("Rust hello {}", fmt_us(hello.1)),
        ratio: fmt_ratio(js.1 / hello.1),
        target: "≤ 2× hello".into(),
        verdict: verdict(js.1 <= 2.0 * hello.1),
    });
    if let Some(d) = rt.cgroups.as_ref() {
        let _ = d.remove_base();
    }
    Ok(section)
}
