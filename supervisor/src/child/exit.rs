//! Why a child stopped, and what in-flight calls are told.
//!
//! The exit status alone is ambiguous: an OOM kill and a timeout kill are
//! both SIGKILL. The cgroup's counters (OOM kills, pids-limit hits) read
//! right after the death, and what the supervisor itself did (a timeout
//! kill, a protocol violation), decide the typed cause.

use corral_protocol::error::{CorralError, ErrorKind, signal_name};

/// How the process ended, from `waitid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    pub fn describe(self) -> String {
        match self {
            ExitStatus::Exited(code) => format!("exited with code {code}"),
            ExitStatus::Signaled(sig) => format!("killed by {}", signal_name(sig)),
        }
    }
}

/// A refused system call, as the filter's listener reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// By name, e.g. `ptrace` (or `syscall 1234` for a number unknown here).
    pub syscall: String,
    /// The checked arguments, decoded, where an argument check refused it.
    pub argument: Option<String>,
}

/// What the supervisor knows about a child's death.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeathCause {
    /// The kernel's OOM killer acted in the child's cgroup.
    OutOfMemory { limit_bytes: u64, peak_bytes: u64 },
    /// The child hit its pids limit and then died or hung.
    PidsLimit { limit: u64 },
    /// A system call outside its seccomp allow-list: killed by the
    /// supervisor, which read the call from the filter's listener
    /// (`violation`), or by the kernel's SIGSYS where no listener exists
    /// (`None`: the call is unknown).
    Seccomp { violation: Option<Violation> },
    /// The supervisor killed it because call `call_id` exceeded `limit_ms`.
    CallTimeout { call_id: u64, limit_ms: u64 },
    /// The child broke the protocol and was killed.
    ProtocolViolation { reason: String },
    /// No Pong within the heartbeat interval while idle.
    Unresponsive { after_ms: u64 },
    /// It crashed or exited on its own.
    Crashed(ExitStatus),
    /// The supervisor stopped it (unload, shutdown, reload).
    Stopped,
}

impl DeathCause {
    /// Whether this counts as a failure for restart backoff and crash-loop
    /// detection.
    pub fn is_failure(&self) -> bool {
        !matches!(self, DeathCause::Stopped)
    }

    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            DeathCause::OutOfMemory { .. } => "memory_limit_exceeded",
            DeathCause::PidsLimit { .. } => "pids_limit_exceeded",
            DeathCause::Seccomp { .. } => "seccomp_violation",
            DeathCause::CallTimeout { .. } => "timeout",
            DeathCause::ProtocolViolation { .. } => "protocol_violation",
            DeathCause::Unresponsive { .. } => "unresponsive",
            DeathCause::Crashed(_) => "crashed",
            DeathCause::Stopped => "stopped",
        }
    }

    /// The error for a call that was in flight when the child died.
    /// `call_id` is that call, so the call that timed out gets `timeout`
    /// and its neighbours are told why they were cut short.
    pub fn error_for_call(&self, call_id: u64, plugin: &str) -> CorralError {
        match self {
            DeathCause::OutOfMemory {
                limit_bytes,
                peak_bytes,
            } => CorralError::new(
                ErrorKind::MemoryLimitExceeded {
                    limit_bytes: *limit_bytes,
                    peak_bytes: *peak_bytes,
                },
                format!(
                    "plugin {plugin} was killed at its memory limit of {limit_bytes} bytes (peak {peak_bytes} bytes)"
                ),
            ),
            DeathCause::PidsLimit { limit } => CorralError::new(
                ErrorKind::PidsLimitExceeded { limit: *limit },
                format!("plugin {plugin} hit its limit of {limit} processes and threads"),
            ),
            DeathCause::Seccomp { violation: None } => CorralError::new(
                ErrorKind::SeccompViolation {
                    syscall: None,
                    argument: None,
                },
                format!(
                    "plugin {plugin} was killed by seccomp: it made a system call its policy does not allow"
                ),
            ),
            DeathCause::Seccomp { violation: Some(v) } => CorralError::new(
                ErrorKind::SeccompViolation {
                    syscall: Some(v.syscall.clone()),
                    argument: v.argument.clone(),
                },
                match &v.argument {
                    Some(arg) => format!(
                        "plugin {plugin} was killed for calling `{}` ({arg}), which its policy does not allow",
                        v.syscall
                    ),
                    None => format!(
                        "plugin {plugin} was killed for calling `{}`, which its policy does not allow",
                        v.syscall
                    ),
                },
            ),
            DeathCause::CallTimeout {
                call_id: timed_out,
                limit_ms,
            } if *timed_out == call_id => CorralError::new(
                ErrorKind::Timeout {
                    limit_ms: *limit_ms,
                },
                format!(
                    "call to plugin {plugin} exceeded its {limit_ms} ms timeout and was stopped"
                ),
            ),
            DeathCause::CallTimeout { limit_ms, .. } => CorralError::new(
                ErrorKind::Crashed {
                    signal: Some(libc::SIGKILL),
                    signal_name: Some("SIGKILL".into()),
                    exit_code: None,
                },
                format!(
                    "plugin {plugin} was stopped because another call exceeded its {limit_ms} ms timeout"
                ),
            ),
            DeathCause::ProtocolViolation { reason } => CorralError::new(
                ErrorKind::ProtocolViolation {
                    reason: reason.clone(),
                },
                format!("plugin {plugin} broke the protocol and was stopped: {reason}"),
            ),
            DeathCause::Unresponsive { after_ms } => CorralError::new(
                ErrorKind::Crashed {
                    signal: Some(libc::SIGKILL),
                    signal_name: Some("SIGKILL".into()),
                    exit_code: None,
                },
                format!("plugin {plugin} stopped answering pings for {after_ms} ms and was killed"),
            ),
            DeathCause::Crashed(status) => {
                let (signal, exit_code) = match status {
                    ExitStatus::Signaled(s) => (Some(*s), None),
                    ExitStatus::Exited(c) => (None, Some(*c)),
                };
                CorralError::new(
                    ErrorKind::Crashed {
                        signal,
                        signal_name: signal.map(signal_name),
                        exit_code,
                    },
                    format!("plugin {plugin} {}", status.describe()),
                )
            }
            DeathCause::Stopped => CorralError::new(
                ErrorKind::Cancelled,
                format!("plugin {plugin} was stopped while the call was in flight"),
            ),
        }
    }
}

/// Evidence gathered right after a death, turned into one cause.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub status: Option<ExitStatus>,
    /// Set when the supervisor itself decided to kill the child.
    pub supervisor_kill: Option<DeathCause>,
    /// OOM kills in the cgroup since the child started.
    pub oom_kills: u64,
    /// Times the pids limit refused a fork/clone since the child started.
    pub pids_limit_hits: u64,
    pub memory_limit: Option<u64>,
    pub memory_peak: u64,
    pub pids_limit: Option<u64>,
}

impl Evidence {
    pub fn classify(&self) -> DeathCause {
        // The kernel's verdicts first: a call that timed out because the
        // plugin was thrashing at its memory limit died of the limit.
        if self.oom_kills > 0 {
            return DeathCause::OutOfMemory {
                limit_bytes: self.memory_limit.unwrap_or(0),
                peak_bytes: self.memory_peak,
            };
        }
        if let Some(ExitStatus::Signaled(sig)) = self.status
            && sig == libc::SIGSYS
        {
            return DeathCause::Seccomp { violation: None };
        }
        // The supervisor's kill for a refused call, before the pids-limit
        // guess: it knows the call.
        if let Some(cause @ DeathCause::Seccomp { .. }) = &self.supervisor_kill {
            return cause.clone();
        }
        if self.pids_limit_hits > 0
            && let Some(limit) = self.pids_limit
            && !matches!(self.supervisor_kill, Some(DeathCause::Stopped))
        {
            return DeathCause::PidsLimit { limit };
        }
        if let Some(cause) = &self.supervisor_kill {
            return cause.clone();
        }
        match self.status {
            Some(status) => DeathCause::Crashed(status),
            None => DeathCause::Crashed(ExitStatus::Signaled(libc::SIGKILL)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_wins_over_the_sigkill_it_caused() {
        let e = Evidence {
            status: Some(ExitStatus::Signaled(libc::SIGKILL)),
            oom_kills: 1,
            memory_limit: Some(64 << 20),
            memory_peak: 64 << 20,
            ..Evidence::default()
        };
        let cause = e.classify();
        assert_eq!(
            cause,
            DeathCause::OutOfMemory {
                limit_bytes: 64 << 20,
                peak_bytes: 64 << 20
            }
        );
        assert_eq!(cause.error_for_call(1, "p").code(), "memory_limit_exceeded");
    }

    #[test]
    fn sigsys_is_a_seccomp_violation() {
        let e = Evidence {
            status: Some(ExitStatus::Signaled(libc::SIGSYS)),
            ..Evidence::default()
        };
        assert_eq!(
            e.classify().error_for_call(0, "p").code(),
            "seccomp_violation"
        );
    }

    #[test]
    fn a_reported_violation_names_the_call_and_its_argument() {
        let e = Evidence {
            status: Some(ExitStatus::Signaled(libc::SIGKILL)),
            supervisor_kill: Some(DeathCause::Seccomp {
                violation: Some(Violation {
                    syscall: "socket".into(),
                    argument: Some("family=AF_NETLINK".into()),
                }),
            }),
            pids_limit_hits: 1,
            pids_limit: Some(8),
            ..Evidence::default()
        };
        let err = e.classify().error_for_call(0, "p");
        assert_eq!(
            err.kind,
            ErrorKind::SeccompViolation {
                syscall: Some("socket".into()),
                argument: Some("family=AF_NETLINK".into())
            }
        );
        assert!(
            err.message.contains("`socket` (family=AF_NETLINK)"),
            "{}",
            err.message
        );
    }

    #[test]
    fn timeout_kill_tells_the_late_call_timeout_and_the_others_why() {
        let e = Evidence {
            status: Some(ExitStatus::Signaled(libc::SIGKILL)),
            supervisor_kill: Some(DeathCause::CallTimeout {
                call_id: 7,
                limit_ms: 2000,
            }),
            ..Evidence::default()
        };
        let cause = e.classify();
        let late = cause.error_for_call(7, "p");
        assert_eq!(late.kind, ErrorKind::Timeout { limit_ms: 2000 });
        let other = cause.error_for_call(8, "p");
        assert_eq!(other.code(), "crashed");
        assert!(other.message.contains("another call"));
    }

    #[test]
    fn pids_limit_hits_explain_a_hang_or_crash() {
        let e = Evidence {
            status: Some(ExitStatus::Exited(101)),
            pids_limit_hits: 3,
            pids_limit: Some(8),
            ..Evidence::default()
        };
        assert_eq!(e.classify(), DeathCause::PidsLimit { limit: 8 });
        let plain = Evidence {
            status: Some(ExitStatus::Exited(3)),
            ..Evidence::default()
        };
        let err = plain.classify().error_for_call(0, "p");
        assert_eq!(
            err.kind,
            ErrorKind::Crashed {
                signal: None,
                signal_name: None,
                exit_code: Some(3)
            }
        );
    }
}
