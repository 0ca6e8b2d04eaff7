//! The supervisor's side of the seccomp filter: refused system calls, read
//! from the filter's listener and answered by policy.
//!
//! The program refers every call outside the allow-list to the supervisor
//! (`SECCOMP_RET_USER_NOTIF`). The trampoline installs it with
//! `SECCOMP_FILTER_FLAG_NEW_LISTENER` and sends the listener on the
//! channel before the plugin runs, behind a marker in place of a frame
//! length ([`receive_listener`]); the plugin never holds it, and what the
//! listener reports comes from the kernel (the calling thread is stopped
//! in the call), so it cannot be forged.
//!
//! [`watch`] reads each refused call (`SECCOMP_IOCTL_NOTIF_RECV`), names
//! it and its checked arguments, logs, counts and publishes it, then kills
//! the plugin (its death is `seccomp_violation` with the call) or fails the
//! call with the policy's errno (`SECCOMP_IOCTL_NOTIF_SEND`) and goes on.
//!
//! The work per child is bounded: one refused call is handled at a time
//! (its thread waits in the kernel meanwhile, so nothing queues here), log
//! lines and events are limited per second with a counted drop, and past
//! [`ANSWERS_PER_SECOND`] the answers wait for the next second, which slows
//! the plugin rather than the supervisor.

use super::exit::{DeathCause, Violation};
use crate::events::EventBus;
use crate::policy::seccomp_args;
use crate::runtime::LifecycleObserver;
use corral_protocol::api::Event;
use corral_protocol::policy::{SECCOMP_LISTENER_ATTACHED, SECCOMP_LISTENER_NONE, SeccompAction};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

/// Refused calls logged (and published as events) per second and child;
/// the rest are counted and reported as one line.
pub const LOGS_PER_SECOND: u32 = 10;
/// Refused calls answered per second and child before answers wait.
pub const ANSWERS_PER_SECOND: u32 = 1000;

/// What came first on the channel after the bootstrap.
#[derive(Debug, Default)]
pub struct Handoff {
    pub listener: Option<OwnedFd>,
    /// Bytes that turned out to begin a frame (a failed step's report),
    /// for the frame reader.
    pub frame_bytes: Vec<u8>,
}

/// Reads the trampoline's four-byte marker and the listener riding with it
/// as `SCM_RIGHTS`. Anything else is the start of a frame (a step before
/// seccomp failed) and is handed back; a closed channel leaves both empty
/// for the frame reader to find.
pub async fn receive_listener(stream: &tokio::net::UnixStream) -> io::Result<Handoff> {
    let mut bytes = [0u8; 4];
    let mut got = 0;
    let mut listener = None;
    while got < bytes.len() {
        stream.readable().await?;
        let step = stream.try_io(Interest::READABLE, || {
            recv_with_fd(stream.as_raw_fd(), &mut bytes[got..])
        });
        let (n, fd) = match step {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if fd.is_some() && listener.is_some() {
            return Err(io::Error::other("two fds arrived with the seccomp marker"));
        }
        listener = listener.or(fd);
        if n == 0 {
            return Ok(Handoff {
                listener: None,
                frame_bytes: bytes[..got].to_vec(),
            });
        }
        got += n;
    }
    let marker = u32::from_le_bytes(bytes);
    match (marker, listener) {
        (SECCOMP_LISTENER_ATTACHED, Some(fd)) => Ok(Handoff {
            listener: Some(fd),
            frame_bytes: Vec::new(),
        }),
        (SECCOMP_LISTENER_ATTACHED, None) => Err(io::Error::other(
            "the trampoline announced a seccomp listener but sent none",
        )),
        (SECCOMP_LISTENER_NONE, _) => Ok(Handoff::default()),
        // An fd that did not come with the marker is dropped (closed).
        (_, _) => Ok(Handoff {
            listener: None,
            frame_bytes: bytes.to_vec(),
        }),
    }
}

/// One `recvmsg` into `buf`, taking at most one fd.
fn recv_with_fd(socket: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for a header and a few ints, aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain old data; the fields used are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at live buffers for the whole call.
    let n = unsafe { libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut first: Option<OwnedFd> = None;
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let payload = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..payload / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    // Every fd received is owned (and closed) here.
                    let owned = OwnedFd::from_raw_fd(fd);
                    if first.is_none() {
                        first = Some(owned);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, first))
}

/// What [`watch`] needs of the child it serves.
pub struct Context {
    pub plugin: String,
    pub instance: u32,
    pub action: SeccompAction,
    pub events: EventBus,
    pub observer: Option<Arc<dyn LifecycleObserver>>,
    /// Where a kill for a refused call is requested.
    pub kill: mpsc::UnboundedSender<DeathCause>,
    pub death: watch::Receiver<Option<DeathCause>>,
}

/// A refused call as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub id: u64,
    /// The calling thread, as this process's pid namespace numbers it.
    pub pid: u32,
    pub nr: i32,
    pub args: [u64; 6],
}

impl Refused {
    pub fn violation(&self) -> Violation {
        let name = syscalls::Sysno::new(self.nr as usize)
            .filter(|_| self.nr >= 0)
            .map(|s| s.name().to_string());
        let argument = name
            .as_deref()
            .and_then(|n| seccomp_args::describe_arguments(n, &self.args));
        Violation {
            syscall: name.unwrap_or_else(|| format!("syscall {}", self.nr)),
            argument,
        }
    }
}

/// Serves the listener until the child dies: every refused call is
/// reported, then answered by `ctx.action`.
pub fn watch(listener: OwnedFd, ctx: Context) {
    tokio::spawn(async move {
        let plugin = ctx.plugin.clone();
        if let Err(e) = serve(listener, ctx).await {
            tracing::warn!(plugin = %plugin, error = %e, "seccomp listener failed");
        }
    });
}

async fn serve(listener: OwnedFd, mut ctx: Context) -> io::Result<()> {
    // SAFETY: the OwnedFd stays open and unchanged inside the AsyncFd for
    // its whole lifetime.
    let fd = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut budget = Budget::new(Instant::now());
    loop {
        let mut guard = tokio::select! {
            g = fd.readable() => g?,
            _ = ctx.death.wait_for(|d| d.is_some()) => return Ok(()),
        };
        // Take what is pending, never more: RECV with nothing pending
        // would block this thread.
        loop {
            match pending(fd.get_ref().as_raw_fd())? {
                Pending::Call => {}
                Pending::Nothing => break,
                Pending::Hangup => return Ok(()),
            }
            let Some(refused) = receive(fd.get_ref().as_raw_fd())? else {
                continue;
            };
            if !handle(&fd, &ctx, &mut budget, refused).await? {
                // The listener stays open until the plugin is dead: closed
                // earlier, the waiting call would return ENOSYS and the
                // plugin run on until the kill lands.
                let _ = ctx.death.wait_for(|d| d.is_some()).await;
                return Ok(());
            }
        }
        guard.clear_ready();
    }
}

/// Reports one refused call and answers it; false once the plugin is
/// being killed.
async fn handle(
    fd: &AsyncFd<OwnedFd>,
    ctx: &Context,
    budget: &mut Budget,
    refused: Refused,
) -> io::Result<bool> {
    let violation = refused.violation();
    if ctx.action == SeccompAction::Learn {
        learn(ctx, &refused, violation);
        respond_continue(fd.get_ref().as_raw_fd(), refused.id)?;
        return Ok(true);
    }
    let killed = ctx.action == SeccompAction::Kill;
    if let Some(o) = &ctx.observer {
        o.seccomp_refused(&ctx.plugin, &violation.syscall, killed);
    }
    let now = Instant::now();
    match budget.log(now) {
        LogDecision::Log { dropped } => {
            if dropped > 0 {
                tracing::warn!(plugin = %ctx.plugin, instance = ctx.instance, dropped,
                    "{dropped} more refused system calls were not logged (over {LOGS_PER_SECOND} a second)");
            }
            report(ctx, &violation, killed);
        }
        LogDecision::Drop => {}
    }
    if killed {
        let _ = ctx.kill.send(DeathCause::Seccomp {
            violation: Some(violation),
        });
        return Ok(false);
    }
    if let Some(wait) = budget.answer(now) {
        tokio::time::sleep(wait).await;
    }
    let errno = match ctx.action {
        SeccompAction::Errno { errno } => errno,
        SeccompAction::Kill | SeccompAction::Learn => libc::EPERM,
    };
    respond(fd.get_ref().as_raw_fd(), refused.id, errno)?;
    Ok(true)
}

fn report(ctx: &Context, v: &Violation, killed: bool) {
    let argument = v.argument.as_deref().unwrap_or("");
    let answer = match ctx.action {
        SeccompAction::Kill => "killing the plugin".to_string(),
        SeccompAction::Learn => "learning".to_string(),
        SeccompAction::Errno { errno } => {
            format!("failing it with {}", io::Error::from_raw_os_error(errno))
        }
    };
    tracing::warn!(plugin = %ctx.plugin, instance = ctx.instance, syscall = %v.syscall,
        argument, "refused system call `{}`; {answer}", v.syscall);
    ctx.events.publish(Event::SeccompViolation {
        plugin: ctx.plugin.clone(),
        instance: ctx.instance,
        syscall: v.syscall.clone(),
        argument: v.argument.clone(),
        killed,
    });
}

/// Learning mode: records what the call needs (read from the caller's
/// memory while it waits) for the draft.
fn learn(ctx: &Context, refused: &Refused, violation: Violation) {
    let Some(observer) = &ctx.observer else {
        return;
    };
    let needs = crate::learn::needs_of(
        refused.pid,
        &violation.syscall,
        violation.argument,
        &refused.args,
    );
    for need in needs {
        observer.learned(&ctx.plugin, need);
    }
}

/// `SECCOMP_IOCTL_NOTIF_SEND` with `SECCOMP_USER_NOTIF_FLAG_CONTINUE`: the
/// kernel runs the call as if the filter had allowed it (learning only).
fn respond_continue(listener: RawFd, id: u64) -> io::Result<()> {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: 0,
        flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
    };
    // SAFETY: `resp` is the struct the ioctl encodes.
    let rc = unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(e);
        }
    }
    Ok(())
}

enum Pending {
    Call,
    Nothing,
    Hangup,
}

/// Whether a refused call waits to be received (POLLIN), the filter has
/// no users left (POLLHUP), or neither.
fn pending(listener: RawFd) -> io::Result<Pending> {
    let mut pfd = libc::pollfd {
        fd: listener,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(Pending::Nothing)
        } else {
            Err(e)
        };
    }
    Ok(if pfd.revents & libc::POLLIN != 0 {
        Pending::Call
    } else if pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
        Pending::Hangup
    } else {
        Pending::Nothing
    })
}

/// `SECCOMP_IOCTL_NOTIF_RECV`; `None` when the caller went away between
/// the poll and the receive (ENOENT) or a signal interrupted it.
fn receive(listener: RawFd) -> io::Result<Option<Refused>> {
    // SAFETY: the kernel requires a zeroed struct, which is valid POD.
    let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl fills `notif`, which is the size it encodes.
    let rc = unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut notif) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT | libc::EINTR) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(Refused {
        id: notif.id,
        pid: notif.pid,
        nr: notif.data.nr,
        args: notif.data.args,
    }))
}

/// `SECCOMP_IOCTL_NOTIF_SEND`: the call fails with `errno`. A caller gone
/// meanwhile (ENOENT) needs no answer.
fn respond(listener: RawFd, id: u64, errno: i32) -> io::Result<()> {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: -errno,
        flags: 0,
    };
    // SAFETY: `resp` is the struct the ioctl encodes.
    let rc = unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(e);
        }
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum LogDecision {
    /// Log this one; `dropped` were not logged since the last line.
    Log {
        dropped: u64,
    },
    Drop,
}

/// Per-second budgets of log lines and answers for one child.
#[derive(Debug)]
struct Budget {
    window: Instant,
    logged: u32,
    answered: u32,
    dropped: u64,
}

impl Budget {
    fn new(now: Instant) -> Budget {
        Budget {
            window: now,
            logged: 0,
            answered: 0,
            dropped: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.logged = 0;
            self.answered = 0;
        }
    }

    fn log(&mut self, now: Instant) -> LogDecision {
        self.roll(now);
        if self.logged < LOGS_PER_SECOND {
            self.logged += 1;
            LogDecision::Log {
                dropped: std::mem::take(&mut self.dropped),
            }
        } else {
            self.dropped += 1;
            LogDecision::Drop
        }
    }

    /// How long to hold this answer back, if the second's answers are
    /// used up.
    fn answer(&mut self, now: Instant) -> Option<Duration> {
        self.roll(now);
        self.answered += 1;
        (self.answered > ANSWERS_PER_SECOND)
            .then(|| Duration::from_secs(1).saturating_sub(now.duration_since(self.window)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_calls_are_named_with_their_arguments() {
        let socket = Refused {
            id: 1,
            pid: 0,
            nr: libc::SYS_socket as i32,
            args: [libc::AF_NETLINK as u64, libc::SOCK_RAW as u64, 0, 0, 0, 0],
        };
        let v = socket.violation();
        assert_eq!(v.syscall, "socket");
        assert!(
            v.argument
                .as_deref()
                .is_some_and(|a| a.contains("AF_NETLINK")),
            "{v:?}"
        );
        let ptrace = Refused {
            id: 2,
            pid: 0,
            nr: libc::SYS_ptrace as i32,
            args: [0; 6],
        };
        assert_eq!(
            ptrace.violation(),
            Violation {
                syscall: "ptrace".into(),
                argument: None
            }
        );
        let unknown = Refused {
            id: 3,
            pid: 0,
            nr: 99_999,
            args: [0; 6],
        };
        assert_eq!(unknown.violation().syscall, "syscall 99999");
    }

    #[test]
    fn logs_are_limited_per_second_with_a_counted_drop() {
        let start = Instant::now();
        let mut b = Budget::new(start);
        for _ in 0..LOGS_PER_SECOND {
            assert_eq!(b.log(start), LogDecision::Log { dropped: 0 });
        }
        for _ in 0..5 {
            assert_eq!(b.log(start), LogDecision::Drop);
        }
        let next = start + Duration::from_secs(1);
        assert_eq!(b.log(next), LogDecision::Log { dropped: 5 });
        assert_eq!(b.log(next), LogDecision::Log { dropped: 0 });
    }

    #[test]
    fn answers_past_the_budget_wait_for_the_next_second() {
        let start = Instant::now();
        let mut b = Budget::new(start);
        for _ in 0..ANSWERS_PER_SECOND {
            assert_eq!(b.answer(start), None);
        }
        let later = start + Duration::from_millis(400);
        assert_eq!(b.answer(later), Some(Duration::from_millis(600)));
        assert_eq!(b.answer(start + Duration::from_secs(1)), None);
    }
}
