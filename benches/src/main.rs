//! corral's benchmarks: every figure of DESIGN's performance targets,
//! measured side by side with its baseline (the bare kernel primitive,
//! bwrap) in one run, printed as tables and written into
//! `benches/RESULTS.md`. Run with `cargo xtask bench`; see README.md.

mod api;
mod bare;
mod cold_start;
mod corral;
mod daemon;
mod env;
mod helpers;
mod load;
mod machine;
mod memory;
mod report;
mod scripts;
mod seccomp;
mod services;
mod soak;
mod stats;
mod warm_call;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use report::{Section, Table};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SectionName {
    ColdStart,
    WarmCall,
    Memory,
    Api,
    Load,
    Scripts,
    Services,
}

const ALL: [SectionName; 7] = [
    SectionName::ColdStart,
    SectionName::WarmCall,
    SectionName::Memory,
    SectionName::Api,
    SectionName::Load,
    SectionName::Scripts,
    SectionName::Services,
];

#[derive(Parser, Debug)]
#[command(
    name = "corral-benches",
    about = "corral's benchmarks against bare kernel primitives and bwrap; writes benches/RESULTS.md"
)]
struct Args {
    /// Run only these sections (repeatable). A partial run prints its
    /// tables but writes RESULTS.md only when --output is given.
    #[arg(long, value_enum)]
    only: Vec<SectionName>,
    /// Fewer repetitions and plugins: a smoke run, not for the record.
    #[arg(long)]
    quick: bool,
    /// Where to write the tables (spliced between the markers of an
    /// existing file). Default for a full run: benches/RESULTS.md.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Print only; write nothing.
    #[arg(long, conflicts_with = "output")]
    no_write: bool,
    /// Do not build the static-trampoline and dynamic-hello variants of
    /// the cold-start breakdown.
    #[arg(long)]
    no_build: bool,
    /// Children (memory) and plugins (load) to start.
    #[arg(long, default_value_t = 1000)]
    plugins: usize,
    /// Only drive one confined hello with this many echo calls in flight
    /// for --seconds and print the rate: a steady load to attach perf or
    /// strace to.
    #[arg(long, value_name = "IN_FLIGHT")]
    profile_calls: Option<usize>,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Only start and kill confined hellos one after another for
    /// --seconds (with the cold-start ladder's first LEVEL mechanisms taken
    /// away, 0 for the built-in policy) and print the median start.
    #[arg(long, value_name = "LEVEL")]
    profile_starts: Option<usize>,
    /// Only run the soak for this many seconds: 64 well-behaved clients
    /// against corrald while a hostile peer holds connections; prints its
    /// report (for benches/RESULTS.md) and fails on any failed call.
    #[arg(long, value_name = "SECONDS")]
    soak: Option<u64>,
    /// Worker threads of the async runtime (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
}

/// One line of the targets table.
pub struct SummaryRow {
    pub figure: String,
    pub corral: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    pub verdict: String,
}

/// What every benchmark gets.
pub struct Ctx {
    pub env: env::Env,
    pub quick: bool,
    pub plugins: usize,
    pub tokio: tokio::runtime::Runtime,
    pub workers: usize,
    pub summary: Vec<SummaryRow>,
}

impl Ctx {
    pub fn env_nproc(&self) -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    helpers::dispatch(&argv);
    let args = Args::parse();
    match run(args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("corral-benches: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Lets a thousand children's fds fit.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn command_line(argv: &[String]) -> String {
    let mut cmd = String::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        cmd.push_str(&format!("CARGO_TARGET_DIR={} ", dir.to_string_lossy()));
    }
    cmd.push_str("cargo xtask bench");
    for a in argv {
        cmd.push(' ');
        cmd.push_str(a);
    }
    cmd
}

/// Ok(false) when a section failed (its error is in the output).
fn run(args: Args) -> Result<bool> {
    raise_fd_limit();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let sections: Vec<SectionName> = if args.only.is_empty() {
        ALL.to_vec()
    } else {
        ALL.iter()
            .copied()
            .filter(|s| args.only.contains(s))
            .collect()
    };
    let mut env = env::Env::from_environment()?;
    if let Some(seconds) = args.soak {
        soak::run(&env, seconds, &command_line(&argv))?;
        return Ok(true);
    }
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if let Some(in_flight) = args.profile_calls {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let rate = warm_call::profile(
            &env,
            &tokio,
            in_flight,
            std::time::Duration::from_secs_f64(args.seconds),
        )?;
        println!("{}", stats::fmt_rate(rate));
        return Ok(true);
    }
    if sections.contains(&SectionName::ColdStart) && !args.no_build {
        env.build_variants();
    }
    if let Some(level) = args.profile_starts {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let p50 = cold_start::profile(
            &env,
            &tokio,
            level,
            std::time::Duration::from_secs_f64(args.seconds),
        )?;
        println!("{}", stats::fmt_us(p50));
        return Ok(true);
    }
    let machine = machine::Machine::probe();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut ctx = Ctx {
        env,
        quick: args.quick,
        plugins: args.plugins,
        tokio,
        workers,
        summary: Vec::new(),
    };

    let load_start = machine::load_avg();
    let started = Instant::now();
    let mut done: Vec<Section> = Vec::new();
    let mut all_ok = true;
    for name in &sections {
        let before = machine::load_avg();
        eprintln!(
            "== {name:?} (load {})",
            before.map(|l| l.to_string()).unwrap_or_default()
        );
        let t = Instant::now();
        let result = match name {
            SectionName::ColdStart => cold_start::run(&mut ctx),
            SectionName::WarmCall => warm_call::run(&mut ctx),
            SectionName::Memory => memory::run(&mut ctx),
            SectionName::Api => api::run(&mut ctx),
            SectionName::Load => load::run(&mut ctx),
            SectionName::Scripts => scripts::run(&mut ctx),
            SectionName::Services => services::run(&mut ctx),
        };
        let mut section = result.unwrap_or_else(|e| {
            all_ok = false;
            eprintln!("{name:?} failed: {e:#}");
            let mut s = Section::new(&format!("{name:?}"));
            s.note(format!("**This benchmark failed:** {e:#}"));
            s
        });
        section.load_before = before;
        section.load_after = machine::load_avg();
        section.seconds = t.elapsed().as_secs_f64();
        let mut text = String::new();
        section.render(&mut text);
        println!("{text}");
        done.push(section);
    }
    corral::remove_cgroup_bases();
    let load_end = machine::load_avg();

    let mut out = String::new();
    let load = |l: Option<machine::LoadAvg>| l.map(|l| l.to_string()).unwrap_or_else(|| "?".into());
    out.push_str(&format!(
        "## Run of {}\n\n\
         Command: `{}` ({}), {:.0} s in all{}.\n\n\
         Machine: {} CPUs ({}), kernel {}, {} MiB RAM, cgroups {}, {}. \
         Load average (1/5/15 min) at the start {}, at the end {}. \
         The benchmarks keep both CPUs busy themselves and the last one starts 1,000 processes at once, so the load average climbs during a run; \
         the value at the start of a section says what else was running.\n\n",
        machine.date_utc,
        command_line(&argv),
        if sections.len() == ALL.len() {
            "every section".to_string()
        } else {
            format!("sections {sections:?}")
        },
        started.elapsed().as_secs_f64(),
        if args.quick {
            ", --quick (smoke run, not for the record)"
        } else {
            ""
        },
        machine.nproc,
        machine.cpu_model,
        machine.kernel,
        machine.memory_total_mib,
        machine.cgroups,
        machine.bwrap,
        load(load_start),
        load(load_end),
    ));
    let mut targets = Table::new(&[
        "figure",
        "corral",
        "baseline (same run)",
        "ratio",
        "target (DESIGN)",
        "verdict",
    ]);
    for r in &ctx.summary {
        targets.row(vec![
            r.figure.clone(),
            r.corral.clone(),
            r.baseline.clone(),
            r.ratio.clone(),
            r.target.clone(),
            r.verdict.clone(),
        ]);
    }
    let mut summary = Section::new("Targets at a glance");
    summary.load_before = load_start;
    summary.load_after = load_end;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.table("", targets);
    summary.render(&mut out);
    for s in &done {
        s.render(&mut out);
    }
    println!("{out}");

    let output = match (&args.output, args.no_write) {
        (_, true) => None,
        (Some(p), false) => Some(p.clone()),
        (None, false) if sections.len() == ALL.len() => {
            Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("RESULTS.md"))
        }
        (None, false) => None,
    };
    if let Some(path) = output {
        let existing = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, report::splice(&existing, &out))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(all_ok)
}
