//! Idle memory: what one idle confined plugin costs in its own cgroup,
//! and what the supervisor keeps per loaded child. The child side is read
//! from each child's memory cgroup; the same binary started bare into a
//! cgroup of its own (no namespaces, no confinement) is the baseline. The
//! supervisor side is the slope of this process's RSS and heap between
//! a few hundred and a thousand idle children, so fixed costs drop out.

use crate::bare::{self, Program};
use crate::corral;
use crate::report::{Section, Table, verdict};
use crate::stats::{Summary, fmt_bytes, fmt_us};
use crate::{Ctx, SummaryRow};
use anyhow::{Context, Result};
use corral_supervisor::child::Child;
use corral_supervisor::runtime::Runtime;
use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Memory figures of one process and its cgroup, bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct CgroupMemory {
    /// memory.usage_in_bytes (v1) / memory.current (v2): all of it,
    /// kernel memory included.
    pub usage: f64,
    /// Kernel memory (v1 memory.kmem.usage_in_bytes; v2 kernel).
    pub kernel: f64,
    /// The process's own VmRSS (shared file pages included).
    pub process_rss: f64,
}

/// The memory cgroup directory of `pid`, from /proc/PID/cgroup.
pub fn memory_cgroup_dir(pid: i32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            return Some(PathBuf::from(format!("/sys/fs/cgroup/memory{path}")));
        }
        if controllers.is_empty() {
            let v2 = PathBuf::from(format!("/sys/fs/cgroup{path}"));
            if v2.join("memory.current").exists() {
                return Some(v2);
            }
        }
    }
    None
}

fn read_u64(path: PathBuf) -> Option<f64> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|v| v as f64)
}

fn stat_fields(dir: &std::path::Path) -> BTreeMap<String, f64> {
    std::fs::read_to_string(dir.join("memory.stat"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse::<u64>().ok()? as f64))
        })
        .collect()
}

pub fn cgroup_memory(pid: i32) -> Option<CgroupMemory> {
    let dir = memory_cgroup_dir(pid)?;
    let stat = stat_fields(&dir);
    let get = |k: &str| stat.get(k).copied().unwrap_or(0.0);
    let v1 = dir.join("memory.usage_in_bytes").exists();
    Some(if v1 {
        CgroupMemory {
            usage: read_u64(dir.join("memory.usage_in_bytes"))?,
            kernel: read_u64(dir.join("memory.kmem.usage_in_bytes")).unwrap_or(0.0),
            process_rss: bare::rss_bytes(&pid.to_string()).unwrap_or(0) as f64,
        }
    } else {
        CgroupMemory {
            usage: read_u64(dir.join("memory.current"))?,
            kernel: get("kernel"),
            process_rss: bare::rss_bytes(&pid.to_string()).unwrap_or(0) as f64,
        }
    })
}

/// Medians of each field over many processes.
fn medians(samples: &[CgroupMemory]) -> CgroupMemory {
    let med = |f: fn(&CgroupMemory) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        Summary::of(&mut v).p50
    };
    CgroupMemory {
        usage: med(|m| m.usage),
        kernel: med(|m| m.kernel),
        process_rss: med(|m| m.process_rss),
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Starts children until there are `target`, a few at a time.
fn start_until(
    ctx: &Ctx,
    rt: &Arc<Runtime>,
    spec: &corral_supervisor::child::ChildSpec,
    children: &mut Vec<Child>,
    target: usize,
) -> Result<Duration> {
    let t = Instant::now();
    while children.len() < target {
        let batch = (target - children.len()).min(8);
        let started = ctx.tokio.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..batch {
                let rt = rt.clone();
                let mut spec = spec.clone();
                spec.instance = (children.len() + i) as u32;
                set.spawn(async move { Child::start(&rt, spec).await });
            }
            let mut out = Vec::new();
            while let Some(r) = set.join_next().await {
                out.push(r);
            }
            out
        });
        for r in started {
            let child = r.context("a start task panicked")?.map_err(|e| {
                anyhow::anyhow!("starting child {}: {}", children.len(), e.into_error())
            })?;
            children.push(child);
        }
    }
    Ok(t.elapsed())
}

struct Snapshot {
    children: usize,
    rss: f64,
    anon: f64,
    heap: f64,
    fds: f64,
}

fn snapshot(children: usize) -> Snapshot {
    Snapshot {
        children,
        rss: bare::rss_bytes("self").unwrap_or(0) as f64,
        anon: rss_anon("self").unwrap_or(0) as f64,
        heap: bare::heap_in_use() as f64,
        fds: open_fds() as f64,
    }
}

pub fn rss_anon(pid: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Bare hellos, each in a fresh cgroup of its own joined before exec.
fn bare_idle(ctx: &Ctx, rt: &Runtime, count: usize) -> Result<Vec<CgroupMemory>> {
    let driver = rt.cgroups.clone().context("no cgroup driver")?;
    let hello = ctx.env.hello_binary().display().to_string();
    let mut running = Vec::new();
    let mut result = Ok(());
    for i in 0..count {
        let cg = driver.create(&format!("bare.{i}"))?;
        let mut args: Vec<String> = vec!["__exec-in-cgroup".into()];
        args.extend(cg.dirs().iter().map(|d| d.display().to_string()));
        args.push("--".into());
        args.push(hello.clone());
        let program = Program::new(&ctx.env.self_exe, &[])?.with_args(&args)?;
        match bare::start_to_ready(&program) {
            Ok((_, pid, channel)) => running.push((pid, channel, cg)),
            Err(e) => {
                let _ = cg.remove();
                result = Err(e);
                break;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let samples: Vec<CgroupMemory> = running
        .iter()
        .filter_map(|(pid, _, _)| cgroup_memory(*pid))
        .collect();
    for (pid, channel, cg) in running {
        drop::<UnixStream>(channel);
        bare::reap(pid, Duration::from_secs(2));
        let _ = cg.remove();
    }
    result?;
    Ok(samples)
}

pub fn run(ctx: &mut Ctx) -> Result<Section> {
    let env = ctx.env.clone();
    let (n0, n1) = if ctx.quick {
        (20, 100)
    } else {
        (ctx.plugins / 5, ctx.plugins)
    };
    let mut section = Section::new("3. Idle memory per plugin (supervisor library)");
    let _guard = ctx.tokio.enter();
    let policy = corral::policy("")?;
    let rt = corral::runtime(&env, &policy, "mem", None)?;
    let compiled = corral::compile_hello(&env, &policy, &rt)?;
    let spec = corral::spec(&compiled, 0);

    let bare = bare_idle(ctx, &rt, if ctx.quick { 5 } else { 20 })?;

    let mut children: Vec<Child> = Vec::new();
    let t0 = start_until(ctx, &rt, &spec, &mut children, n0)?;
    std::thread::sleep(Duration::from_secs(1));
    let at_n0 = snapshot(children.len());
    let t1 = start_until(ctx, &rt, &spec, &mut children, n1)?;
    std::thread::sleep(Duration::from_secs(1));
    let at_n1 = snapshot(children.len());
    let corral_samples: Vec<CgroupMemory> = children
        .iter()
        .filter_map(|c| cgroup_memory(c.pid()))
        .collect();
    let t = Instant::now();
    ctx.tokio.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for c in children.drain(..) {
            set.spawn(async move { c.shutdown(Duration::from_secs(5)).await });
        }
        while set.join_next().await.is_some() {}
    });
    let stop_time = t.elapsed();

    let corral_med = medians(&corral_samples);
    let bare_med = medians(&bare);
    let mut usage: Vec<f64> = corral_samples.iter().map(|m| m.usage).collect();
    let usage_s = Summary::of(&mut usage);
    let mut table = Table::new(&[
        "per idle plugin (median)",
        "corral, confined",
        "bare, own cgroup",
        "target",
        "verdict",
    ]);
    table.row(vec![
        "charged to its memory cgroup (usage_in_bytes, kernel memory included)".into(),
        fmt_bytes(corral_med.usage),
        fmt_bytes(bare_med.usage),
        "< 256 KiB".into(),
        verdict(corral_med.usage < 256.0 * 1024.0),
    ]);
    for (label, c, b) in [
        (
            "… of which kernel memory (kmem.usage_in_bytes)",
            corral_med.kernel,
            bare_med.kernel,
        ),
        (
            "… of which user pages (the rest)",
            corral_med.usage - corral_med.kernel,
            bare_med.usage - bare_med.kernel,
        ),
        (
            "the plugin process's VmRSS (shared file pages included)",
            corral_med.process_rss,
            bare_med.process_rss,
        ),
    ] {
        table.row(vec![
            label.into(),
            fmt_bytes(c),
            fmt_bytes(b),
            String::new(),
            String::new(),
        ]);
    }
    section.intro(format!(
        "{} idle hello children started with `Child::start` (built-in policy) in this process, {} bare hellos (same binary, posix_spawn'd into a fresh cgroup of their own, handshake done, no namespaces or confinement) as the baseline; read 1 s after the last start. \
         Cgroup charge over the {} confined children: p50 {}, p90 {}, max {}.",
        at_n1.children,
        bare.len(),
        usage_s.n,
        fmt_bytes(usage_s.p50),
        fmt_bytes(usage_s.p90),
        fmt_bytes(*usage.last().unwrap_or(&0.0)),
    ));
    section.table("", table);
    section.note(
        "The kernel charges memory to a cgroup in per-CPU batches (up to 64 pages held in a CPU's stock for the cgroup that charged last), so a single cgroup can read a few pages high or low; the medians over many cgroups are what the verdict uses.",
    );

    let per = |a: f64, b: f64| (b - a) / (at_n1.children - at_n0.children).max(1) as f64;
    let rss_per = per(at_n0.rss, at_n1.rss);
    let heap_per = per(at_n0.heap, at_n1.heap);
    // RSS does not grow while the allocator reuses pages freed by the
    // sections before this one, so the heap slope counts too: the
    // verdict takes the larger.
    let bookkeeping = rss_per.max(heap_per);
    let mut sup = Table::new(&[
        "supervisor, per extra idle child",
        "figure",
        "target",
        "verdict",
    ]);
    sup.row(vec![
        "the larger of the two slopes below".into(),
        fmt_bytes(bookkeeping),
        "< 64 KiB".into(),
        verdict(bookkeeping < 64.0 * 1024.0),
    ]);
    sup.row(vec![
        format!(
            "RSS slope, {} → {} children",
            at_n0.children, at_n1.children
        ),
        fmt_bytes(rss_per),
        String::new(),
        String::new(),
    ]);
    sup.row(vec![
        "anonymous RSS slope (RssAnon)".into(),
        fmt_bytes(per(at_n0.anon, at_n1.anon)),
        String::new(),
        String::new(),
    ]);
    sup.row(vec![
        "heap in use slope (glibc mallinfo2)".into(),
        fmt_bytes(heap_per),
        String::new(),
        String::new(),
    ]);
    sup.row(vec![
        "open fds per child".into(),
        format!("{:.1}", per(at_n0.fds, at_n1.fds)),
        String::new(),
        String::new(),
    ]);
    sup.row(vec![
        format!(
            "time to start {} children (8 at a time) / per child",
            at_n1.children - at_n0.children
        ),
        format!(
            "{:.2} s / {}",
            t1.as_secs_f64(),
            fmt_us(t1.as_secs_f64() * 1e6 / (at_n1.children - at_n0.children).max(1) as f64)
        ),
        String::new(),
        String::new(),
    ]);
    sup.row(vec![
        format!(
            "time to stop all {} children (Shutdown, concurrently)",
            at_n1.children
        ),
        format!("{:.2} s", stop_time.as_secs_f64()),
        String::new(),
        String::new(),
    ]);
    section.table(
        format!(
            "Supervisor side: this process's memory with {} and with {} idle children (the first {} took {:.2} s to start):",
            at_n0.children,
            at_n1.children,
            at_n0.children,
            t0.as_secs_f64()
        ),
        sup,
    );

    let encoded = corral_protocol::frame::encode(compiled.as_ref())
        .map(|b| b.len())
        .unwrap_or(0);
    section.note(format!(
        "For scale: hello's compiled `SandboxPolicy` (kept once per plugin, shared by its children here) encodes to {} in bincode: {} seccomp instructions, {} provenance entries, {} Landlock rules.",
        fmt_bytes(encoded as f64),
        compiled
            .confinement
            .seccomp
            .as_ref()
            .map(|p| p.instructions.len())
            .unwrap_or(0),
        compiled.provenance.len(),
        compiled
            .confinement
            .landlock
            .as_ref()
            .map(|l| l.fs.len())
            .unwrap_or(0),
    ));

    ctx.summary.push(SummaryRow {
        figure: "idle plugin, charged to its cgroup (p50)".into(),
        corral: fmt_bytes(corral_med.usage),
        baseline: format!("bare {}", fmt_bytes(bare_med.usage)),
        ratio: crate::stats::fmt_ratio(corral_med.usage / bare_med.usage),
        target: "< 256 KiB".into(),
        verdict: verdict(corral_med.usage < 256.0 * 1024.0),
    });
    ctx.summary.push(SummaryRow {
        figure: "supervisor library per idle child (heap / RSS slope)".into(),
        corral: format!("{} / {}", fmt_bytes(heap_per), fmt_bytes(rss_per)),
        baseline: String::new(),
        ratio: String::new(),
        target: "< 64 KiB".into(),
        verdict: verdict(bookkeeping < 64.0 * 1024.0),
    });
    if let Some(d) = rt.cgroups.as_ref() {
        let _ = d.remove_base();
    }
    Ok(section)
}
