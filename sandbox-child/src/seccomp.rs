//! Step `seccomp`: install the syscall filter, last of all.
//!
//! The supervisor compiles the program once per policy; this step only
//! hands the instructions to the kernel. It runs after every other step
//! because the filter may forbid what they use (mount, setns, prctl,
//! landlock_*); after it, the trampoline makes only `chdir`, `execve`
//! and, on failure, `write` and `exit_group`. A single thread needs no
//! TSYNC.

use crate::error::{SandboxError, Step};
use corral_protocol::policy::{BpfInstruction, SeccompProgram};
use nix::errno::Errno;

/// The kernel's limit on instructions in one filter (BPF_MAXINSNS).
pub const MAX_INSTRUCTIONS: usize = 4096;

/// The program as the kernel's `struct sock_filter` array.
pub fn to_sock_filters(
    instructions: &[BpfInstruction],
) -> Result<Vec<libc::sock_filter>, SandboxError> {
    if instructions.is_empty() {
        return Err(SandboxError::new(
            Step::Seccomp,
            "the seccomp program is empty; a policy without a filter says so with no program",
        ));
    }
    if instructions.len() > MAX_INSTRUCTIONS {
        return Err(SandboxError::new(
            Step::Seccomp,
            format!(
                "the seccomp program has {} instructions; the kernel accepts at most \
                 {MAX_INSTRUCTIONS}",
                instructions.len()
            ),
        ));
    }
    Ok(instructions
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect())
}

pub fn apply(program: Option<&SeccompProgram>) -> Result<(), SandboxError> {
    let Some(program) = program else {
        return Ok(());
    };
    let mut filters = to_sock_filters(&program.instructions)?;
    let prog = libc::sock_fprog {
        // Bounded by MAX_INSTRUCTIONS above.
        len: filters.len() as libc::c_ushort,
        filter: filters.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `filters`, which outlives the call; the
    // kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(SandboxError::sys(
            Step::Seccomp,
            Errno::last(),
            format_args!(
                "install the seccomp filter ({} instructions)",
                filters.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_map_field_by_field() {
        let filters = to_sock_filters(&[BpfInstruction {
            code: 0x06,
            jt: 1,
            jf: 2,
            k: 0x7fff_0000,
        }])
        .expect("valid");
        assert_eq!(filters.len(), 1);
        assert_eq!(
            (filters[0].code, filters[0].jt, filters[0].jf, filters[0].k),
            (0x06, 1, 2, 0x7fff_0000)
        );
    }

    #[test]
    fn empty_and_oversized_programs_are_refused() {
        let err = to_sock_filters(&[]).expect_err("empty");
        assert_eq!(err.step, Step::Seccomp);
        assert!(err.message.contains("empty"), "{}", err.message);
        let ret_allow = BpfInstruction {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        };
        let err = to_sock_filters(&vec![ret_allow; MAX_INSTRUCTIONS + 1]).expect_err("too long");
        assert!(err.message.contains("4097"), "{}", err.message);
        assert!(to_sock_filters(&vec![ret_allow; MAX_INSTRUCTIONS]).is_ok());
    }
}
