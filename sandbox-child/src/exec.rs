//! Step `exec`: change to the working directory and run the plugin.
//!
//! Everything `execve` needs is prepared ([`ExecPlan::new`]) before any
//! confinement step: once seccomp is installed, allocating may be
//! forbidden, so [`ExecPlan::exec`] makes no allocation and no system call
//! but `chdir` and `execve`.

use crate::error::{SandboxError, Step};
use corral_protocol::policy::Confinement;
use nix::errno::Errno;
use std::ffi::CString;

/// The plugin's entry, argv, environment and working directory as C
/// strings, with the pointer arrays `execve` takes.
#[derive(Debug)]
pub struct ExecPlan {
    entry: CString,
    workdir: CString,
    // Own the strings the pointer arrays point into.
    _argv: Vec<CString>,
    _env: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    env_ptrs: Vec<*const libc::c_char>,
}

/// The call of the exec step that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecCall {
    Chdir,
    Execve,
}

impl ExecPlan {
    pub fn new(confinement: &Confinement) -> Result<Self, SandboxError> {
        if !confinement.entry.starts_with('/') {
            return Err(SandboxError::new(
                Step::Exec,
                format!("entry {:?} is not an absolute path", confinement.entry),
            ));
        }
        if !confinement.workdir.starts_with('/') {
            return Err(SandboxError::new(
                Step::Exec,
                format!(
                    "working directory {:?} is not an absolute path",
                    confinement.workdir
                ),
            ));
        }
        if confinement.argv.is_empty() {
            return Err(SandboxError::new(
                Step::Exec,
                "argv is empty; it must hold at least the program name",
            ));
        }
        let entry = c_string(&confinement.entry, "entry")?;
        let workdir = c_string(&confinement.workdir, "workdir")?;
        let argv = confinement
            .argv
            .iter()
            .enumerate()
            .map(|(i, arg)| c_string(arg, &format!("argv[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let env = confinement
            .env
            .iter()
            .map(|(key, value)| {
                if key.is_empty() || key.contains('=') {
                    return Err(SandboxError::new(
                        Step::Exec,
                        format!("environment variable name {key:?} is empty or contains '='"),
                    ));
                }
                c_string(
                    &format!("{key}={value}"),
                    &format!("environment variable {key}"),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let argv_ptrs = null_terminated(&argv);
        let env_ptrs = null_terminated(&env);
        Ok(ExecPlan {
            entry,
            workdir,
            _argv: argv,
            _env: env,
            argv_ptrs,
            env_ptrs,
        })
    }

    /// Runs the plugin. Returns only on failure, with the failed call and
    /// its errno.
    pub fn exec(&self) -> (ExecCall, Errno) {
        // SAFETY: `workdir` is a valid NUL-terminated string.
        if unsafe { libc::chdir(self.workdir.as_ptr()) } != 0 {
            return (ExecCall::Chdir, Errno::last());
        }
        // SAFETY: both arrays are NULL-terminated and point into strings
        // owned by `self`, alive for the call.
        unsafe {
            libc::execve(
                self.entry.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.env_ptrs.as_ptr(),
            )
        };
        (ExecCall::Execve, Errno::last())
    }
}

fn c_string(s: &str, what: &str) -> Result<CString, SandboxError> {
    CString::new(s)
        .map_err(|_| SandboxError::new(Step::Exec, format!("{what} {s:?} contains a NUL byte")))
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_protocol::policy::{Credentials, Mounts, NamespaceSource, Namespaces};

    fn confinement(entry: &str, argv: &[&str], env: &[(&str, &str)]) -> Confinement {
        Confinement {
            entry: entry.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            workdir: "/".into(),
            namespaces: Namespaces {
                user: false,
                pid: true,
                mount: true,
                net: NamespaceSource::Fresh,
                ipc: NamespaceSource::Fresh,
                uts: NamespaceSource::Fresh,
                cgroup: false,
                memfd_noexec: false,
            },
            mounts: Mounts {
                proc: true,
                scratch: None,
                remaps: Vec::new(),
                root: None,
            },
            credentials: Credentials {
                uid: 1000,
                gid: 1000,
            },
            rlimits: vec![],
            die_with_parent: true,
            landlock: None,
            seccomp: None,
        }
    }

    #[test]
    fn plan_builds_null_terminated_arrays() {
        let plan = ExecPlan::new(&confinement(
            "/bin/plugin",
            &["plugin", "--serve"],
            &[("A", "1"), ("CORRAL_CHANNEL_FD", "3")],
        ))
        .expect("valid");
        assert_eq!(plan.argv_ptrs.len(), 3);
        assert!(plan.argv_ptrs[2].is_null());
        assert_eq!(plan.env_ptrs.len(), 3);
        assert!(plan.env_ptrs[2].is_null());
        assert_eq!(plan._env[1].to_str().expect("utf8"), "CORRAL_CHANNEL_FD=3");
    }

    #[test]
    fn bad_exec_inputs_are_named() {
        for (c, what) in [
            (confinement("bin/plugin", &["p"], &[]), "absolute"),
            (confinement("/bin/plugin", &[], &[]), "argv is empty"),
            (confinement("/bin/plugin", &["p\0q"], &[]), "argv[0]"),
            (confinement("/bin/plugin", &["p"], &[("A=B", "1")]), "'='"),
            (confinement("/bin/plugin", &["p"], &[("A", "\0")]), "NUL"),
        ] {
            let err = ExecPlan::new(&c).expect_err("must be refused");
            assert_eq!(err.step, Step::Exec);
            assert!(err.message.contains(what), "{what}: {}", err.message);
        }
    }
}
