//! Loading many plugins at once in corrald: a source folder with N renamed
//! copies of hello; the time from exec to the API answering with all of
//! them ready (corrald serves only after loading what is enabled), the
//! daemon's memory and the memory charged to the plugins' cgroups; and
//! the same for a daemon with one plugin, so the per-plugin cost is a
//! slope and the daemon's fixed cost drops out.

use crate::daemon::{Daemon, DaemonDir};
use crate::report::{Section, Table, verdict};
use crate::stats::{Summary, fmt_bytes};
use crate::{Ctx, SummaryRow};
use anyhow::{Result, bail};
use std::time::Duration;

struct Loaded {
    plugins: usize,
    ready: Duration,
    restart_ready: Option<Duration>,
    rss: f64,
    anon: f64,
    leaves: Vec<f64>,
    total: Option<f64>,
    stop: Duration,
}

fn load(ctx: &Ctx, tag: &str, plugins: usize, restart: bool) -> Result<Loaded> {
    let dir = DaemonDir::create(tag)?;
    if plugins == 1 {
        dir.add_hello(&ctx.env, "hello")?;
    } else {
        for i in 1..=plugins {
            dir.add_hello(&ctx.env, &format!("hello-{i:04}"))?;
        }
    }
    let limit = Duration::from_secs(600);
    let mut daemon = Daemon::start(&ctx.env, &dir)?;
    let (ready, health) = daemon.wait_ready(limit)?;
    let loaded = health["plugins_loaded"].as_u64().unwrap_or(0) as usize;
    let alive = health["children_alive"].as_u64().unwrap_or(0) as usize;
    if loaded != plugins || alive != plugins {
        bail!(
            "corrald reports {loaded} plugins loaded and {alive} children alive of {plugins}; its log:\n{}",
            daemon.log_tail()
        );
    }
    // Let start-up garbage settle (allocator, page cache of the store).
    std::thread::sleep(Duration::from_secs(2));
    let (rss, anon) = daemon.rss();
    let (leaves, total) = daemon.cgroup_memory();
    let stop = daemon.stop(limit)?;
    let restart_ready = if restart {
        let mut again = Daemon::start(&ctx.env, &dir)?;
        let (ready, _) = again.wait_ready(limit)?;
        again.stop(limit)?;
        Some(ready)
    } else {
        None
    };
    Ok(Loaded {
        plugins,
        ready,
        restart_ready,
        rss,
        anon,
        leaves,
        total,
        stop,
    })
}

pub fn run(ctx: &mut Ctx) -> Result<Section> {
    let n = if ctx.quick { 50 } else { ctx.plugins };
    let mut section = Section::new(&format!("5. Loading {n} plugins at once (corrald)"));
    let one = load(ctx, "load1", 1, false)?;
    let many = load(ctx, "load", n, true)?;

    let per = |a: f64, b: f64| (b - a) / (many.plugins - one.plugins).max(1) as f64;
    let mut leaves = many.leaves.clone();
    let leaf = Summary::of(&mut leaves);
    let mut table = Table::new(&[
        "figure",
        "1 plugin",
        &format!("{n} plugins"),
        "per extra plugin",
        "target",
        "verdict",
    ]);
    table.row(vec![
        "exec → API answering, all loaded and ready (fresh state: packages imported into the store)".into(),
        format!("{:.2} s", one.ready.as_secs_f64()),
        format!("{:.2} s", many.ready.as_secs_f64()),
        format!(
            "{:.2} ms",
            per(one.ready.as_secs_f64(), many.ready.as_secs_f64()) * 1000.0
        ),
        format!("{n} loaded at once"),
        verdict(true),
    ]);
    if let Some(r) = many.restart_ready {
        table.row(vec![
            "exec → ready again, restart with the packages installed".into(),
            String::new(),
            format!("{:.2} s", r.as_secs_f64()),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    let rss_per = per(one.rss, many.rss);
    table.row(vec![
        "daemon RSS".into(),
        fmt_bytes(one.rss),
        fmt_bytes(many.rss),
        fmt_bytes(rss_per),
        "< 64 KiB per plugin".into(),
        verdict(rss_per < 64.0 * 1024.0),
    ]);
    table.row(vec![
        "daemon anonymous RSS (RssAnon)".into(),
        fmt_bytes(one.anon),
        fmt_bytes(many.anon),
        fmt_bytes(per(one.anon, many.anon)),
        String::new(),
        String::new(),
    ]);
    let total = many.total.unwrap_or_else(|| many.leaves.iter().sum());
    table.row(vec![
        "memory charged to the plugins' cgroups, total".into(),
        fmt_bytes(one.total.unwrap_or_else(|| one.leaves.iter().sum())),
        fmt_bytes(total),
        String::new(),
        String::new(),
        String::new(),
    ]);
    table.row(vec![
        "… per plugin cgroup, p50 / p90 / max".into(),
        one.leaves
            .first()
            .map(|v| fmt_bytes(*v))
            .unwrap_or_default(),
        format!(
            "{} / {} / {}",
            fmt_bytes(leaf.p50),
            fmt_bytes(leaf.p90),
            fmt_bytes(leaves.last().copied().unwrap_or(0.0))
        ),
        String::new(),
        "< 256 KiB".into(),
        verdict(leaf.p50 < 256.0 * 1024.0),
    ]);
    table.row(vec![
        "SIGTERM → exit (children stopped, cgroups removed)".into(),
        format!("{:.2} s", one.stop.as_secs_f64()),
        format!("{:.2} s", many.stop.as_secs_f64()),
        String::new(),
        String::new(),
        String::new(),
    ]);
    section.intro(format!(
        "corrald (release build) with a source folder of {n} copies of hello renamed hello-0001 … (binary hard-linked, each package still hashed and copied into the store), watch off, built-in policy; and the same with one plugin. \
         The daemon answers its API only after every enabled plugin is loaded, so the time is exec → first answer of `GET /v1/health`, which must report all {n} loaded with a child alive each. \
         Memory is read 2 s after ready: the daemon's VmRSS/RssAnon, and each plugin cgroup's usage_in_bytes (kernel memory included)."
    ));
    section.table("", table);

    ctx.summary.push(SummaryRow {
        figure: format!("{n} plugins loaded at once in corrald"),
        corral: format!("{:.2} s to ready", many.ready.as_secs_f64()),
        baseline: format!("1 plugin {:.2} s", one.ready.as_secs_f64()),
        ratio: String::new(),
        target: "1,000 loaded on 2 cores".into(),
        verdict: verdict(n >= 1000),
    });
    ctx.summary.push(SummaryRow {
        figure: "corrald memory per loaded plugin (RSS slope)".into(),
        corral: fmt_bytes(rss_per),
        baseline: format!("anon {}", fmt_bytes(per(one.anon, many.anon))),
        ratio: String::new(),
        target: "< 64 KiB".into(),
        verdict: verdict(rss_per < 64.0 * 1024.0),
    });
    ctx.summary.push(SummaryRow {
        figure: "plugin cgroup memory in corrald (p50)".into(),
        corral: fmt_bytes(leaf.p50),
        baseline: String::new(),
        ratio: String::new(),
        target: "< 256 KiB".into(),
        verdict: verdict(leaf.p50 < 256.0 * 1024.0),
    });
    Ok(section)
}
