//! Cold start: from "start it" to the plugin's Ready, for a fully confined
//! plugin (`Child::start` with the built-in policy), the same binary
//! started bare (posix_spawn with the channel on fd 3, handshake with
//! blocking I/O), and the same binary under `bwrap --unshare-all`.
//!
//! Every contender runs once per round, rounds interleave the contenders
//! (rotating who goes first), so load that comes and goes hits them all
//! alike. The breakdown strips the confinement one mechanism at a time
//! to show where the time goes.

use crate::bare::{self, Program};
use crate::corral;
use crate::report::{Section, Table, verdict};
use crate::stats::{Summary, fmt_ratio, fmt_us};
use crate::{Ctx, SummaryRow};
use anyhow::{Context, Result};
use corral_cgroups::Limits;
use corral_protocol::policy::{NamespaceSource, SandboxPolicy};
use corral_supervisor::child::Child;
use corral_supervisor::runtime::Runtime;
use std::sync::Arc;
use std::time::{Duration, Instant};

enum Kind {
    Bare(Program),
    Corral {
        rt: Arc<Runtime>,
        policy: Arc<SandboxPolicy>,
    },
}

struct Contender {
    label: String,
    kind: Kind,
    samples: Vec<Duration>,
    error: Option<String>,
}

impl Contender {
    fn new(label: impl Into<String>, kind: Kind) -> Contender {
        Contender {
            label: label.into(),
            kind,
            samples: Vec::new(),
            error: None,
        }
    }

    fn summary(&self) -> Summary {
        Summary::of_durations(&self.samples)
    }
}

fn run_once(ctx: &Ctx, kind: &Kind) -> Result<Duration> {
    match kind {
        Kind::Bare(program) => {
            let (elapsed, pid, channel) = bare::start_to_ready(program)?;
            // Closing the channel ends the plugin (and bwrap with it).
            drop(channel);
            bare::reap(pid, Duration::from_secs(2));
            Ok(elapsed)
        }
        Kind::Corral { rt, policy } => timed_start(&ctx.tokio, rt, policy),
    }
}

/// One confined start to Ready, timed on a worker thread of the runtime
/// (where the daemon starts its children too); the child is killed after.
fn timed_start(
    tokio: &tokio::runtime::Runtime,
    rt: &Arc<Runtime>,
    policy: &Arc<SandboxPolicy>,
) -> Result<Duration> {
    let rt = rt.clone();
    let spec = corral::spec(policy, 0);
    tokio.block_on(async move {
        tokio::spawn(async move {
            let t = Instant::now();
            let child = Child::start(&rt, spec).await;
            let elapsed = t.elapsed();
            match child {
                Ok(child) => {
                    child.kill().await;
                    Ok(elapsed)
                }
                Err(e) => Err(anyhow::anyhow!("{}", e.into_error())),
            }
        })
        .await
        .context("the start task panicked")?
    })
}

/// The ladder: the built-in policy with more and more taken away.
pub fn stripped(policy: &SandboxPolicy, level: usize) -> SandboxPolicy {
    let mut p = policy.clone();
    let c = &mut p.confinement;
    if level >= 1 {
        c.seccomp = None;
    }
    if level >= 2 {
        c.landlock = None;
    }
    if level >= 3 {
        c.namespaces.user = false;
    }
    if level >= 4 {
        c.mounts.proc = false;
        c.mounts.scratch = None;
        c.mounts.root = None;
    }
    if level >= 5 {
        c.rlimits.clear();
        c.die_with_parent = false;
    }
    if level >= 6 {
        c.namespaces.net = NamespaceSource::Host;
        c.namespaces.ipc = NamespaceSource::Host;
        c.namespaces.uts = NamespaceSource::Host;
    }
    p
}

pub const LADDER: [&str; 6] = [
    "− seccomp",
    "− seccomp, Landlock",
    "− seccomp, Landlock, user ns",
    "− … , the minimal root, /proc and /tmp mounts",
    "− … , rlimits, pdeathsig",
    "− … , net/ipc/uts (host's): trampoline + pid/mount ns + cgroup",
];

/// `--profile-starts`: confined starts back to back, for perf or strace.
pub fn profile(
    env: &crate::env::Env,
    tokio: &tokio::runtime::Runtime,
    level: usize,
    duration: Duration,
) -> Result<f64> {
    let _guard = tokio.enter();
    let policy = corral::policy("")?;
    let rt = corral::runtime(env, &policy, "profile", None)?;
    let full = corral::compile_hello(env, &policy, &rt)?;
    let policy = Arc::new(stripped(&full, level));
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        samples.push(timed_start(tokio, &rt, &policy)?);
    }
    if let Some(d) = rt.cgroups.as_ref() {
        let _ = d.remove_base();
    }
    Ok(Summary::of_durations(&samples).p50)
}

pub fn run(ctx: &mut Ctx) -> Result<Section> {
    let env = ctx.env.clone();
    let rounds = if ctx.quick { 40 } else { 400 };
    let warmup = if ctx.quick { 5 } else { 15 };
    let mut section = Section::new("1. Cold start: spawn → Ready");

    let _guard = ctx.tokio.enter();
    let shared_policy = corral::policy("")?;
    let rt = corral::runtime(&env, &shared_policy, "cold", None)?;
    let full = corral::compile_hello(&env, &shared_policy, &rt)?;
    let fresh_policy = corral::policy("[sandbox]\nshare_empty_namespaces = false\n")?;
    let rt_fresh = corral::runtime(&env, &fresh_policy, "cold-fresh", None)?;
    let full_fresh = corral::compile_hello(&env, &fresh_policy, &rt_fresh)?;
    let host_tree_policy = corral::policy("[sandbox]\nminimal_root = false\n")?;
    let host_tree = corral::compile_hello(&env, &host_tree_policy, &rt)?;
    let rt_static = match &env.static_trampoline {
        Some(path) => Some(corral::runtime(
            &env,
            &shared_policy,
            "cold-static",
            Some(path),
        )?),
        None => None,
    };

    let hello = Program::new(&env.hello_binary(), &[])?;
    let hello_path = env.hello_binary().display().to_string();
    // The binary's own directory is bound again after the tmpfs on /tmp,
    // which would otherwise hide a checkout under /tmp.
    let hello_dir = env
        .hello_binary()
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "/".into());
    let bwrap_args = [
        "--unshare-all",
        "--die-with-parent",
        "--ro-bind",
        "/",
        "/",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
        "--ro-bind",
        hello_dir.as_str(),
        hello_dir.as_str(),
        "--",
        hello_path.as_str(),
    ];
    let bwrap_path = which("bwrap");

    let mut contenders = vec![
        Contender::new("bare: posix_spawn + handshake", Kind::Bare(hello.clone())),
        Contender::new(
            "corral: Child::start, built-in policy",
            Kind::Corral {
                rt: rt.clone(),
                policy: full.clone(),
            },
        ),
    ];
    match &bwrap_path {
        Some(path) => contenders.push(Contender::new(
            format!("bwrap {} + handshake", bwrap_args[..12].join(" ")),
            Kind::Bare(Program::new(path, &bwrap_args)?),
        )),
        None => section.note(
            "**bwrap is not installed** (`apt-get install -y bubblewrap`): its row is missing.",
        ),
    }
    // The breakdown.
    contenders.push(Contender::new(
        "corral, net/ipc/uts created fresh (share_empty_namespaces = false)",
        Kind::Corral {
            rt: rt_fresh.clone(),
            policy: full_fresh.clone(),
        },
    ));
    contenders.push(Contender::new(
        "corral, the host's tree instead of a minimal root (minimal_root = false)",
        Kind::Corral {
            rt: rt.clone(),
            policy: host_tree,
        },
    ));
    if let Some(rt_static) = &rt_static {
        contenders.push(Contender::new(
            "corral, static trampoline",
            Kind::Corral {
                rt: rt_static.clone(),
                policy: full.clone(),
            },
        ));
    }
    for (i, label) in LADDER.iter().enumerate() {
        contenders.push(Contender::new(
            format!("corral {label}"),
            Kind::Corral {
                rt: rt.clone(),
                policy: Arc::new(stripped(&full, i + 1)),
            },
        ));
    }
    if let Some(rt_static) = &rt_static {
        contenders.push(Contender::new(
            format!("corral {}, static trampoline", LADDER[5]),
            Kind::Corral {
                rt: rt_static.clone(),
                policy: Arc::new(stripped(&full, 6)),
            },
        ));
    }
    if let Some(dynamic) = &env.dynamic_hello {
        contenders.push(Contender::new(
            "bare, dynamically linked hello",
            Kind::Bare(Program::new(dynamic, &[])?),
        ));
    }

    let n = contenders.len();
    for round in 0..(warmup + rounds) {
        for k in 0..n {
            let c = &mut contenders[(round + k) % n];
            if c.error.is_some() {
                continue;
            }
            match run_once(ctx, &c.kind) {
                Ok(d) if round >= warmup => c.samples.push(d),
                Ok(_) => {}
                Err(e) => c.error = Some(format!("{e:#}")),
            }
        }
    }

    let bare_p50 = contenders[0].summary().p50;
    let mut table = Table::new(&["contender", "p50", "p90", "p99", "min", "n", "p50 ÷ bare"]);
    for c in &contenders {
        let s = c.summary();
        match &c.error {
            Some(e) => table.row(vec![
                c.label.clone(),
                format!("failed: {e}"),
                String::new(),
                String::new(),
                String::new(),
                s.n.to_string(),
                String::new(),
            ]),
            None => table.row(vec![
                c.label.clone(),
                fmt_us(s.p50),
                fmt_us(s.p90),
                fmt_us(s.p99),
                fmt_us(s.min),
                s.n.to_string(),
                fmt_ratio(s.p50 / bare_p50),
            ]),
        }
    }
    section.intro(format!(
        "Spawn → Ready of the packaged hello plugin (static, {}), {rounds} rounds after {warmup} of warm-up; each round runs every contender once, in rotating order. \
         bare: `posix_spawn` of the same binary with the channel on fd 3, then Hello/Init/Ready with blocking reads. \
         corral: `Child::start` with the built-in policy (uid, cgroup with memory/pids/cpu limits, pid/mount/user namespaces, the shared empty net/ipc/uts namespaces, the minimal root (a tmpfs with the package, /dev nodes, /proc and /tmp, pivoted into), rlimits, no_new_privs, Landlock, seccomp), measured on a tokio worker. \
         bwrap: `bwrap {}` running the same binary, channel passed through on fd 3. The rows below the first three are the breakdown: the built-in policy with mechanisms taken away one after another (cumulative), and the static/dynamic variants.",
        env.hello_binary().display(),
        bwrap_args[..12].join(" "),
    ));
    section.table("", table);

    // The verdicts.
    let corral_p50 = contenders[1].summary().p50;
    let ratio = corral_p50 / bare_p50;
    ctx.summary.push(SummaryRow {
        figure: "cold start spawn → Ready (p50)".into(),
        corral: fmt_us(corral_p50),
        baseline: format!("bare {}", fmt_us(bare_p50)),
        ratio: fmt_ratio(ratio),
        target: "≤ 1.5× bare".into(),
        verdict: verdict(ratio <= 1.5 && contenders[1].error.is_none()),
    });
    if bwrap_path.is_some() {
        // A failed bwrap row stays in the summary, said to have failed.
        let bwrap = &contenders[2];
        let bwrap_p50 = bwrap.summary().p50;
        let speedup = bwrap_p50 / corral_p50;
        ctx.summary.push(SummaryRow {
            figure: "cold start vs bwrap (p50)".into(),
            corral: fmt_us(corral_p50),
            baseline: match &bwrap.error {
                None => format!("bwrap {}", fmt_us(bwrap_p50)),
                Some(e) => format!("bwrap failed: {e}"),
            },
            ratio: match &bwrap.error {
                None => format!("{} faster", fmt_ratio(speedup)),
                Some(_) => "n/a".into(),
            },
            target: "≥ 3× faster than bwrap".into(),
            verdict: verdict(bwrap.error.is_none() && speedup >= 3.0),
        });
    }

    section.table(
        "Pieces measured on their own (same run, cgroup v1, the hello policy's limits):",
        cgroup_pieces(&rt, &full, if ctx.quick { 30 } else { 150 })?,
    );
    if let Some(program) = &full.confinement.seccomp {
        section.table(
            "",
            seccomp_pieces(&env, program, if ctx.quick { 20 } else { 100 })?,
        );
    }
    if let Some(t) = trampoline_exec(&env, if ctx.quick { 30 } else { 150 })? {
        section.table("", t);
    }
    if let Some(d) = rt.cgroups.as_ref() {
        let _ = d.remove_base();
    }
    for r in [&rt_fresh].into_iter().chain(rt_static.as_ref()) {
        if let Some(d) = r.cgroups.as_ref() {
            let _ = d.remove_base();
        }
    }
    Ok(section)
}

/// cgroup create + limits, attach, remove, each timed alone.
fn cgroup_pieces(rt: &Runtime, policy: &SandboxPolicy, reps: usize) -> Result<Table> {
    let driver = rt.cgroups.clone().context("no cgroup driver")?;
    let r = &policy.resources;
    let limits = Limits {
        memory_max: r.memory_max,
        swap_max: r.swap_max,
        pids_max: r.pids_max,
        cpu_quota_us: r.cpu_quota_us,
        cpu_period_us: r.cpu_period_us,
    };
    let sleeper = Program::new(&which("sleep").context("no `sleep` on PATH")?, &["60"])?;
    let (mut create, mut attach, mut remove) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..reps {
        let t = Instant::now();
        let cg = driver.create(&format!("piece.{i}"))?;
        if let Err(e) = cg.apply(&limits) {
            // Unsupported best-effort resources are what the supervisor
            // drops too; apply what the hierarchy has.
            eprintln!("note: cgroup limits: {e}");
        }
        create.push(t.elapsed());
        let pid = bare::spawn(&sleeper, None, true)?;
        let t = Instant::now();
        let attached = cg.attach(pid as u32);
        attach.push(t.elapsed());
        bare::reap(pid, Duration::ZERO);
        attached?;
        let t = Instant::now();
        cg.remove()?;
        remove.push(t.elapsed());
    }
    // Back to back, the kernel's threadgroup lock stays in the state a
    // writer left it in; an isolated start first waits for an RCU grace
    // period (unless a hierarchy is mounted favordynmods).
    let mut isolated = Vec::new();
    for i in 0..reps.min(20) {
        let cg = driver.create(&format!("piece.idle.{i}"))?;
        let pid = bare::spawn(&sleeper, None, true)?;
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        let attached = cg.attach(pid as u32);
        isolated.push(t.elapsed());
        bare::reap(pid, Duration::ZERO);
        attached?;
        cg.remove()?;
    }
    let mut table = Table::new(&["piece", "p50", "p90", "n"]);
    for (label, samples) in [
        (
            format!("cgroup create + limits ({} hierarchies)", cg_count(rt)),
            &create,
        ),
        ("cgroup attach (write the pid)".to_string(), &attach),
        (
            "cgroup attach after 100 ms without one (an isolated start)".to_string(),
            &isolated,
        ),
        ("cgroup remove (rmdir)".to_string(), &remove),
    ] {
        let s = Summary::of_durations(samples);
        table.row(vec![label, fmt_us(s.p50), fmt_us(s.p90), s.n.to_string()]);
    }
    Ok(table)
}

/// The built-in program's install against a binary-search tree's.
fn seccomp_pieces(
    env: &crate::env::Env,
    program: &corral_protocol::policy::SeccompProgram,
    reps: usize,
) -> Result<Table> {
    let tree = crate::seccomp::binary_tree_of(program)?;
    let mut table = Table::new(&[
        "seccomp() install, alone",
        "instructions",
        "p50",
        "p90",
        "n",
    ]);
    let variants = [
        (
            "the built-in policy's program (hello)",
            &program.instructions,
        ),
        (
            "binary-search tree over the same system calls (no argument checks)",
            &tree,
        ),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    // Interleaved, a few at a time, so both see the same load.
    for _ in 0..reps.div_ceil(10) {
        for (i, (_, insns)) in variants.iter().enumerate() {
            samples[i].extend(crate::seccomp::time_installs(&env.self_exe, insns, 10)?);
        }
    }
    for ((label, insns), s) in variants.iter().zip(&samples) {
        let s = Summary::of_durations(s);
        table.row(vec![
            label.to_string(),
            insns.len().to_string(),
            fmt_us(s.p50),
            fmt_us(s.p90),
            s.n.to_string(),
        ]);
    }
    Ok(table)
}

fn cg_count(rt: &Runtime) -> usize {
    rt.cgroups
        .as_ref()
        .and_then(|d| d.create("probe").ok())
        .map(|cg| {
            let n = cg.dirs().len();
            let _ = cg.remove();
            n
        })
        .unwrap_or(0)
}

/// exec of the trampoline until it gives up for lack of a bootstrap: the
/// loader's share of every start, dynamic vs static.
fn trampoline_exec(env: &crate::env::Env, reps: usize) -> Result<Option<Table>> {
    let mut table = Table::new(&["exec → exit, no bootstrap", "p50", "p90", "n"]);
    let mut variants = vec![("trampoline as built (release)", env.trampoline.clone())];
    if let Some(s) = &env.static_trampoline {
        variants.push(("trampoline, static", s.clone()));
    }
    if variants.len() < 2 {
        return Ok(None);
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    for _ in 0..reps {
        for (i, (_, path)) in variants.iter().enumerate() {
            let program = Program::new(path, &[])?;
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
            let t = Instant::now();
            let pid = bare::spawn(&program, Some(std::os::fd::AsFd::as_fd(&theirs)), true)?;
            drop(theirs);
            drop(ours);
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            samples[i].push(t.elapsed());
        }
    }
    for ((label, _), s) in variants.iter().zip(&samples) {
        let s = Summary::of_durations(s);
        table.row(vec![
            label.to_string(),
            fmt_us(s.p50),
            fmt_us(s.p90),
            s.n.to_string(),
        ]);
    }
    Ok(Some(table))
}

pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
