//! corral's trampoline: confines itself, then execs the plugin.
//!
//! # How it is started
//!
//! The supervisor starts `corral-sandbox` as root with a vfork-style
//! `clone(CLONE_VM | CLONE_VFORK | CLONE_NEWPID | CLONE_NEWNS [| CLONE_NEWNET
//! | CLONE_NEWIPC | CLONE_NEWUTS] | SIGCHLD)` and `execve`, so it begins as
//! pid 1 of a fresh pid namespace in a fresh mount namespace, with fd 0 on
//! /dev/null, fds 1 and 2 on pipes to the supervisor's log capture, fd 3 the
//! channel ([`CHANNEL_FD`]), and possibly pre-made namespaces to join open on
//! the fds the policy names. The supervisor puts the process in the plugin's
//! cgroup, then writes one [`Bootstrap`] frame on the channel.
//!
//! # The steps, in order
//!
//! Each step is one module and one [`Step`]; the first that fails ends the
//! trampoline: it writes `PluginMessage::SandboxFailure { step, errno,
//! message }` on the channel and exits with status 126. The plugin's code
//! never runs unless every step succeeded.
//!
//! 1. [`bootstrap`]: unblock all signals and restore default dispositions
//!    (a blocked mask and ignored signals survive execve), then read the
//!    bootstrap frame. A missing or garbled frame exits 126 with a message
//!    on stderr only, since the channel itself is in doubt.
//! 2. [`fds`]: close every fd but 0-2, the channel and the namespace fds
//!    to join; reopen 0-2 on /dev/null if closed.
//! 3. [`namespaces`]: refuse to go on unless we are pid 1 of a new pid
//!    namespace and in a mount namespace that is not the host's (nothing is
//!    ever mounted into the host's); join the pre-made net/ipc/uts
//!    namespaces and close their fds; name a fresh UTS namespace `corral`.
//!    Then a new cgroup namespace (the supervisor has put us in the
//!    plugin's cgroup by now, so /proc/self/cgroup shows `/`), and
//!    `vm.memfd_noexec = 2` for the pid namespace while still privileged,
//!    so that no memfd can ever be executed.
//! 4. [`mounts`]: make the mount tree private (so nothing propagates to the
//!    host), mount a fresh /proc for the pid namespace and the tmpfs scratch
//!    space owned by the plugin's uid, `noexec`. With a minimal root in the
//!    policy, [`root`] builds the plugin's whole tree instead: a tmpfs
//!    holding only the granted host paths, /proc, the scratch and the
//!    remaps, pivoted into, the host's tree detached. Still root of the
//!    initial user namespace, which these mounts need; before Landlock,
//!    whose rules then name paths of the new tree.
//! 5. [`credentials`]: empty the capability bounding and ambient sets,
//!    drop supplementary groups, become the plugin's gid and uid (never 0),
//!    empty the remaining capability sets and check they are.
//! 6. [`user_namespace`]: when asked, a user namespace mapping only the
//!    plugin's own uid and gid. An unprivileged process may map its own
//!    euid, so it comes after step 5; the mounts of step 4 could not be made
//!    from inside it, so it comes after them. The capabilities it grants
//!    inside are dropped again and the securebits locked.
//! 7. [`rlimits`]: lower the resource limits; without CAP_SYS_RESOURCE
//!    the plugin cannot raise a hard limit back.
//! 8. [`pdeathsig`]: SIGKILL on the supervisor's death. After every
//!    credential change, because those clear it; and if the supervisor is
//!    already gone (its end of the channel hung up), stop here.
//! 9. [`no_new_privs`]: no execve can grant privileges again; it also lets
//!    an unprivileged process install Landlock rules and seccomp filters.
//! 10. [`landlock`]: filesystem rules, TCP port rules and scopes, each
//!     part `required` or `best_effort` by policy.
//! 11. [`seccomp`]: the supervisor's compiled syscall filter, last, since
//!     it may forbid what the steps above use. A filter that refers
//!     refused calls to the supervisor is installed with a listener, which
//!     goes to the supervisor over the channel and is closed here.
//! 12. [`exec`]: chdir to the working directory and execve the entry with
//!     exactly the policy's argv and environment. The channel stays open on
//!     fd 3 for the plugin, which speaks the protocol from Hello on.
//!
//! Everything `exec` needs, and the memory to report its failure, is
//! prepared before step 2, so that after seccomp the trampoline makes no
//! system call but `sendmsg` and `close` (the listener), `chdir`,
//! `execve`, `write` and `exit_group`. The
//! process is single-threaded throughout, which `unshare(CLONE_NEWUSER)`,
//! `setns` and a filter without TSYNC all rely on.

pub mod bootstrap;
pub mod caps;
pub mod channel;
pub mod credentials;
pub mod error;
pub mod exec;
pub mod fds;
pub mod landlock;
pub mod mounts;
pub mod namespaces;
pub mod no_new_privs;
pub mod pdeathsig;
pub mod rlimits;
pub mod root;
pub mod seccomp;
pub mod user_namespace;

pub use corral_protocol::Bootstrap;
pub use corral_protocol::message::CHANNEL_FD;
pub use error::{SandboxError, Step};

use channel::FailureReport;
use std::os::fd::RawFd;

/// The trampoline's whole life: read the bootstrap, confine, exec the
/// plugin. Never returns: it becomes the plugin or exits with status 126.
pub fn run() -> ! {
    let bootstrap = match bootstrap::reset_signals().and_then(|()| bootstrap::read(CHANNEL_FD)) {
        Ok(bootstrap) => bootstrap,
        Err(e) => {
            // The channel is not known to work: say it on stderr only.
            eprintln!("corral-sandbox: {e}");
            channel::exit_failure()
        }
    };
    let report = FailureReport::reserve();
    let plan = match exec::ExecPlan::new(&bootstrap.confinement) {
        Ok(plan) => plan,
        Err(e) => report.send_and_exit(CHANNEL_FD, &e),
    };
    if let Err(e) = confine(&bootstrap, CHANNEL_FD) {
        report.send_and_exit(CHANNEL_FD, &e);
    }
    // From here on seccomp may be in force: nothing below allocates.
    let (call, errno) = plan.exec();
    let confinement = &bootstrap.confinement;
    match call {
        exec::ExecCall::Chdir => report.send_parts_and_exit(
            CHANNEL_FD,
            Step::Exec.name(),
            errno as i32,
            format_args!(
                "chdir to the working directory {}: {}",
                confinement.workdir,
                errno.desc()
            ),
        ),
        exec::ExecCall::Execve => report.send_parts_and_exit(
            CHANNEL_FD,
            Step::Exec.name(),
            errno as i32,
            format_args!("execve {}: {}", confinement.entry, errno.desc()),
        ),
    }
}

/// Applies steps 2 to 11 (fds to seccomp) to the calling process, in
/// order, stopping at the first that fails. `channel` is the fd kept open
/// for the plugin (fd 3 in the trampoline).
///
/// This irreversibly confines the calling process; it is meant for the
/// trampoline and for tests that run in a process of their own.
pub fn confine(bootstrap: &Bootstrap, channel: RawFd) -> Result<(), SandboxError> {
    let c = &bootstrap.confinement;
    fds::apply(channel, &namespaces::join_fds(&c.namespaces))?;
    namespaces::apply(&c.namespaces)?;
    mounts::apply(&c.mounts, &c.namespaces, &c.credentials)?;
    credentials::apply(&c.credentials)?;
    user_namespace::apply(&c.namespaces, &c.credentials)?;
    rlimits::apply(&c.rlimits)?;
    pdeathsig::apply(c.die_with_parent, channel)?;
    no_new_privs::apply()?;
    landlock::apply(c.landlock.as_ref())?;
    seccomp::apply(c.seccomp.as_ref(), channel)
}
