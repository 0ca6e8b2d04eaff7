//! The confinement steps by name, and the error every step returns.

use corral_protocol::message::SandboxFailure;
use nix::errno::Errno;
use std::fmt;

/// One confinement step, in the order the trampoline applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Bootstrap,
    Fds,
    Namespaces,
    Mounts,
    Credentials,
    UserNamespace,
    Rlimits,
    Pdeathsig,
    NoNewPrivs,
    Landlock,
    Seccomp,
    Exec,
}

impl Step {
    /// Every step, in the order they are applied.
    pub const ALL: [Step; 12] = [
        Step::Bootstrap,
        Step::Fds,
        Step::Namespaces,
        Step::Mounts,
        Step::Credentials,
        Step::UserNamespace,
        Step::Rlimits,
        Step::Pdeathsig,
        Step::NoNewPrivs,
        Step::Landlock,
        Step::Seccomp,
        Step::Exec,
    ];

    /// The name carried in `SandboxFailure.step` and shown to operators.
    pub fn name(self) -> &'static str {
        match self {
            Step::Bootstrap => "bootstrap",
            Step::Fds => "fds",
            Step::Namespaces => "namespaces",
            Step::Mounts => "mounts",
            Step::Credentials => "credentials",
            Step::UserNamespace => "user_namespace",
            Step::Rlimits => "rlimits",
            Step::Pdeathsig => "pdeathsig",
            Step::NoNewPrivs => "no_new_privs",
            Step::Landlock => "landlock",
            Step::Seccomp => "seccomp",
            Step::Exec => "exec",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A step that could not be applied. The plugin is never started after one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("confinement step {step} failed: {message}")]
pub struct SandboxError {
    pub step: Step,
    /// The errno the kernel returned; 0 when the failure is not a system
    /// call's (a bad policy value, a failed safety check).
    pub errno: i32,
    pub message: String,
}

impl SandboxError {
    /// A failure that is not a system call's.
    pub fn new(step: Step, message: impl Into<String>) -> Self {
        SandboxError {
            step,
            errno: 0,
            message: message.into(),
        }
    }

    /// A system call failed; `what` says what was being done.
    pub fn sys(step: Step, errno: Errno, what: impl fmt::Display) -> Self {
        SandboxError {
            step,
            errno: errno as i32,
            message: format!("{what}: {}", errno.desc()),
        }
    }

    /// A failed `std::io` operation.
    pub fn io(step: Step, err: &std::io::Error, what: impl fmt::Display) -> Self {
        SandboxError {
            step,
            errno: err.raw_os_error().unwrap_or(0),
            message: format!("{what}: {err}"),
        }
    }

    /// The frame the supervisor receives.
    pub fn to_failure(&self) -> SandboxFailure {
        SandboxFailure {
            step: self.step.name().to_owned(),
            errno: self.errno,
            message: self.message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_are_distinct_snake_case_and_in_order() {
        let names: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "bootstrap",
                "fds",
                "namespaces",
                "mounts",
                "credentials",
                "user_namespace",
                "rlimits",
                "pdeathsig",
                "no_new_privs",
                "landlock",
                "seccomp",
                "exec"
            ]
        );
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "step names must be unique");
    }

    #[test]
    fn sys_error_carries_errno_and_description() {
        let e = SandboxError::sys(Step::Mounts, Errno::EPERM, "mount /proc");
        assert_eq!(e.errno, libc::EPERM);
        assert_eq!(e.message, "mount /proc: Operation not permitted");
        let failure = e.to_failure();
        assert_eq!(failure.step, "mounts");
        assert_eq!(failure.errno, libc::EPERM);
        assert_eq!(
            e.to_string(),
            "confinement step mounts failed: mount /proc: Operation not permitted"
        );
    }

    #[test]
    fn io_error_keeps_its_errno() {
        let err = std::io::Error::from_raw_os_error(libc::ENOENT);
        let e = SandboxError::io(Step::Landlock, &err, "open /nope");
        assert_eq!(e.errno, libc::ENOENT);
        assert!(e.message.starts_with("open /nope: "), "{}", e.message);
    }
}
