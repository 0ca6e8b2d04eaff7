//! A plugin that attacks its own sandbox, for corral's escape and limit
//! suites. Each method makes the forbidden system call(s) for real and
//! answers `{"attempted", "ok", "errno", "detail", "value"}` so a test can
//! prove the attempt failed inside the sandbox; the attacks the sandbox
//! answers by killing the process (seccomp, OOM, limits) are reported by
//! the supervisor instead.
//!
//! One binary serves several packages (`packages/<variant>/plugin.toml`)
//! that differ only in what they are granted, so the name it announces
//! comes from `CORRAL_PLUGIN`, which the host sets to the package's name.
//! One variant behaves differently: `hostile-silent` never says Hello, for
//! the host's start timeout.

mod attempt;
mod channel;
mod flood;
mod fs;
mod memexec;
mod metadata;
mod net;
mod privilege;
mod process;
mod scoped;
mod shaped;

use attempt::Attempt;
use corral_sdk::{Context, Error, Plugin};

fn whoami() -> Attempt {
    // SAFETY: these calls cannot fail and touch no memory of ours.
    let (uid, euid, gid, pid, ppid) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getpid(),
            libc::getppid(),
        )
    };
    let mut host = [0u8; 256];
    // SAFETY: the buffer is valid for its length.
    let hostname = if unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) } == 0 {
        let len = host.iter().position(|&b| b == 0).unwrap_or(host.len());
        String::from_utf8_lossy(&host[..len]).into_owned()
    } else {
        format!("({})", std::io::Error::last_os_error())
    };
    let cap_eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string()))
        })
        .unwrap_or_else(|| "(unreadable)".into());
    Attempt::succeeded(
        "getuid, geteuid, getgid, getpid, getppid, gethostname",
        format!(
            "uid={uid} euid={euid} gid={gid} pid={pid} ppid={ppid} hostname={hostname} cap_eff={cap_eff}"
        ),
    )
    .with_value(u64::from(uid))
}

fn main() {
    let name = std::env::var("CORRAL_PLUGIN").unwrap_or_else(|_| "hostile".to_string());
    if name == "hostile-silent" {
        // Holds the channel open and says nothing: only the host's start
        // timeout can end this.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    Plugin::new(name, env!("CARGO_PKG_VERSION"))
        .json("read_file", |_: &mut Context, i| Ok(fs::read_file(i)))
        .json("write_file", |_: &mut Context, i| Ok(fs::write_file(i)))
        .json("list_dir", |_: &mut Context, i| Ok(fs::list_dir(i)))
        .json("proc_pids", |_: &mut Context, (): ()| Ok(fs::proc_pids()))
        .json("fds", |_: &mut Context, (): ()| Ok(fs::fds()))
        .json("disk_fill", |_: &mut Context, i| Ok(fs::disk_fill(i)))
        .json("socket", |_: &mut Context, i| net::socket(i))
        .json("connect_tcp", |_: &mut Context, i| net::connect_tcp(i))
        .json("ptrace", |_: &mut Context, i| Ok(process::ptrace(i)))
        .json("kill", |_: &mut Context, i| Ok(process::kill(i)))
        .json(
            "kill_all",
            |_: &mut Context, (): ()| Ok(process::kill_all()),
        )
        .json("fork_bomb", |_: &mut Context, i| Ok(process::fork_bomb(i)))
        .json("thread_bomb", |_: &mut Context, i| {
            Ok(process::thread_bomb(i))
        })
        .json("memory_bomb", |_: &mut Context, i| {
            Ok(process::memory_bomb(i))
        })
        .json("cpu_spin", |_: &mut Context, i| Ok(process::cpu_spin(i)))
        .json("fd_exhaust", |_: &mut Context, i| {
            Ok(process::fd_exhaust(i))
        })
        .json("mount", |_: &mut Context, i| Ok(privilege::mount(i)))
        .json("unshare", |_: &mut Context, i| privilege::unshare(i))
        .json("setuid", |_: &mut Context, i| Ok(privilege::setuid(i)))
        .json("chroot", |_: &mut Context, i| Ok(privilege::chroot(i)))
        .json("init_module", |_: &mut Context, (): ()| {
            Ok(privilege::init_module())
        })
        .json("raise_rlimit", |_: &mut Context, i| {
            privilege::raise_rlimit(i)
        })
        .json("huge_reply", |ctx: &mut Context, i| {
            Ok(channel::huge_reply(ctx.call_id(), i))
        })
        .json("garbled_frame", |_: &mut Context, i| {
            channel::garbled_frame(i)
        })
        .json("stdout_flood", |_: &mut Context, i| {
            Ok(channel::stdout_flood(i))
        })
        .json("raw_syscall", |_: &mut Context, i| shaped::raw(i))
        .json("refused_loop", |_: &mut Context, i| shaped::refused_loop(i))
        .json("ifconf", |_: &mut Context, (): ()| Ok(shaped::ifconf()))
        .json("fionread", |_: &mut Context, (): ()| Ok(shaped::fionread()))
        .json("socketpair", |_: &mut Context, i| shaped::socketpair(i))
        .json("memfd_exec", |_: &mut Context, (): ()| {
            Ok(shaped::memfd_exec())
        })
        .json("connect_abstract", |_: &mut Context, i| {
            Ok(scoped::connect_abstract(i))
        })
        .json("own_abstract", |_: &mut Context, i| {
            Ok(scoped::own_abstract(i))
        })
        .json("sdk_read", |_: &mut Context, i| scoped::sdk_read(i))
        .json("whoami", |_: &mut Context, (): ()| Ok(whoami()))
        .json("host_metadata", |_: &mut Context, i| {
            Ok(metadata::host_metadata(i))
        })
        .json("datagram_to_path", |_: &mut Context, i| {
            Ok(metadata::datagram_to_path(i))
        })
        .json("read_text", |_: &mut Context, i| Ok(metadata::read_text(i)))
        .json("ping_flood", |_: &mut Context, i| Ok(flood::ping_flood(i)))
        .json("log_flood", |_: &mut Context, i| Ok(flood::log_flood(i)))
        .json("exec_image", |_: &mut Context, i| {
            Ok(memexec::exec_image(i))
        })
        .json("exit", |_: &mut Context, i| -> Result<Attempt, Error> {
            process::exit(i)
        })
        .json(
            "abort",
            |_: &mut Context, (): ()| -> Result<Attempt, Error> { process::abort() },
        )
        .json(
            "segfault",
            |_: &mut Context, (): ()| Ok(process::segfault()),
        )
        .serve()
}
