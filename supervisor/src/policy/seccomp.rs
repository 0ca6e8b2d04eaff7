//! Compiles a plugin's system call allow-list to a classic-BPF program,
//! once per policy, in the supervisor; the trampoline only installs the
//! bytes.
//!
//! The allow-list itself is built with `seccompiler`. In front of it goes a
//! short prefix answering `clone3` with ENOSYS: seccomp cannot read
//! `clone3`'s flags (they are behind a pointer), so C libraries must be
//! made to fall back to `clone`, whose flags the allow-list inspects.

use super::ViolationAction;
use super::syscalls::sysno;
use corral_protocol::policy::{BpfInstruction, SeccompProgram};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::{BTreeMap, BTreeSet};

/// How `socket` is shaped by the network permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketRule {
    /// No `socket` at all (socketpair stays allowed for local pipes).
    Deny,
    /// TCP over IPv4 or IPv6 only.
    TcpOnly,
    /// Any socket.
    Any,
}

#[derive(Debug, Clone)]
pub struct SeccompPlan {
    /// System calls allowed whatever their arguments.
    pub allowed: BTreeSet<String>,
    /// New processes (exec permission); otherwise `clone` only for threads.
    pub processes: bool,
    pub socket: SocketRule,
    pub default_action: ViolationAction,
}

const CLONE_THREAD: u64 = libc::CLONE_THREAD as u64;
/// Namespace flags `clone` may never carry: a plugin does not create
/// namespaces (an unprivileged user namespace would hand it capabilities
/// over new kernel surface).
const CLONE_NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

fn target_arch() -> Result<(TargetArch, u32), String> {
    match std::env::consts::ARCH {
        "x86_64" => Ok((TargetArch::x86_64, 0xC000_003E)),
        "aarch64" => Ok((TargetArch::aarch64, 0xC000_00B7)),
        "riscv64" => Ok((TargetArch::riscv64, 0xC000_00F3)),
        other => Err(format!("seccomp filters are not built for {other}")),
    }
}

fn condition(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, len, op, value).map_err(|e| e.to_string())
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conditions).map_err(|e| e.to_string())
}

/// Builds the program for `plan`.
pub fn build(plan: &SeccompPlan) -> Result<SeccompProgram, String> {
    let (arch, audit_arch) = target_arch()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for name in &plan.allowed {
        rules.insert(sysno(name)?.id() as i64, Vec::new());
    }

    // clone: never with namespace flags; without the exec permission, only
    // for threads.
    let no_namespaces = condition(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(CLONE_NAMESPACES),
        0,
    )?;
    let mut clone_conditions = vec![no_namespaces];
    if !plan.processes {
        clone_conditions.push(condition(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(CLONE_THREAD),
            CLONE_THREAD,
        )?);
    }
    rules.insert(sysno("clone")?.id() as i64, vec![rule(clone_conditions)?]);

    match plan.socket {
        SocketRule::Deny => {}
        SocketRule::Any => {
            rules.insert(sysno("socket")?.id() as i64, Vec::new());
        }
        SocketRule::TcpOnly => {
            // The type argument may carry SOCK_NONBLOCK / SOCK_CLOEXEC.
            let stream = || {
                condition(
                    1,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(0xF),
                    libc::SOCK_STREAM as u64,
                )
            };
            let family = |f: i32| condition(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, f as u64);
            rules.insert(
                sysno("socket")?.id() as i64,
                vec![
                    rule(vec![family(libc::AF_INET)?, stream()?])?,
                    rule(vec![family(libc::AF_INET6)?, stream()?])?,
                ],
            );
        }
    }

    let mismatch = match plan.default_action {
        ViolationAction::Kill => SeccompAction::KillProcess,
        ViolationAction::Errno => SeccompAction::Errno(libc::EPERM as u32),
    };
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch)
        .map_err(|e| e.to_string())?;
    let main: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())?;

    let mut instructions = errno_prefix(
        audit_arch,
        &[(sysno("clone3")?.id() as u32, libc::ENOSYS as u32)],
    );
    instructions.extend(main.iter().map(|i| BpfInstruction {
        code: i.code,
        jt: i.jt,
        jf: i.jf,
        k: i.k,
    }));
    let mut allowed: Vec<String> = plan.allowed.iter().cloned().collect();
    allowed.push(if plan.processes {
        "clone".into()
    } else {
        "clone(CLONE_THREAD)".into()
    });
    match plan.socket {
        SocketRule::Deny => {}
        SocketRule::TcpOnly => allowed.push("socket(AF_INET|AF_INET6, SOCK_STREAM)".into()),
        SocketRule::Any => allowed.push("socket".into()),
    }
    allowed.sort();
    Ok(SeccompProgram {
        instructions,
        allowed,
    })
}

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

/// Instructions answering each `(nr, errno)` with that errno on the native
/// architecture, then falling through to the program that follows (which
/// does its own architecture check).
fn errno_prefix(audit_arch: u32, answers: &[(u32, u32)]) -> Vec<BpfInstruction> {
    let n = answers.len();
    // Layout: ld arch; jeq arch; ld nr; n × jeq; ja-equivalent; n × ret.
    let mut out = Vec::with_capacity(3 + 2 * n);
    out.push(BpfInstruction {
        code: BPF_LD_W_ABS,
        jt: 0,
        jf: 0,
        k: DATA_ARCH,
    });
    // Foreign architecture: skip everything up to the main program.
    out.push(BpfInstruction {
        code: BPF_JEQ_K,
        jt: 0,
        jf: (1 + 2 * n) as u8,
        k: audit_arch,
    });
    out.push(BpfInstruction {
        code: BPF_LD_W_ABS,
        jt: 0,
        jf: 0,
        k: DATA_NR,
    });
    for (i, (nr, _)) in answers.iter().enumerate() {
        // On a match jump to this call's return, which sits after the
        // remaining compares and the earlier returns.
        let jt = (n - 1 - i) + i;
        let last = i == n - 1;
        out.push(BpfInstruction {
            code: BPF_JEQ_K,
            jt: jt as u8,
            // The last compare skips over all returns on a mismatch.
            jf: if last { n as u8 } else { 0 },
            k: *nr,
        });
    }
    for (_, errno) in answers {
        out.push(BpfInstruction {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | (errno & 0xFFFF),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal classic-BPF interpreter for seccomp programs, enough to
    /// check what the compiled program answers without installing it.
    fn run(prog: &[BpfInstruction], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend_from_slice(&nr.to_le_bytes());
        data.extend_from_slice(&arch.to_le_bytes());
        data.extend_from_slice(&0u64.to_le_bytes());
        for a in args {
            data.extend_from_slice(&a.to_le_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            let class = u32::from(i.code) & 0x07;
            match class {
                0x00 => {
                    // ld [k]
                    let k = i.k as usize;
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().expect("word"));
                    pc += 1;
                }
                0x04 => {
                    // alu: only and k is used by seccompiler
                    assert_eq!(
                        u32::from(i.code) & 0xF0,
                        0x50,
                        "unexpected alu op {:#x}",
                        i.code
                    );
                    acc &= i.k;
                    pc += 1;
                }
                0x05 => {
                    let op = u32::from(i.code) & 0xF0;
                    let taken = match op {
                        0x00 => {
                            pc += 1 + i.k as usize;
                            continue;
                        }
                        0x10 => acc == i.k,
                        0x20 => acc > i.k,
                        0x30 => acc >= i.k,
                        0x40 => acc & i.k != 0,
                        other => panic!("jump op {other:#x}"),
                    };
                    pc += 1 + if taken { i.jt as usize } else { i.jf as usize };
                }
                0x06 => return i.k,
                other => panic!("class {other:#x}"),
            }
        }
    }

    const X86_64: u32 = 0xC000_003E;
    const ALLOW: u32 = 0x7FFF_0000;
    const KILL_PROCESS: u32 = 0x8000_0000;

    fn nr(name: &str) -> u32 {
        sysno(name).expect("syscall").id() as u32
    }

    fn plan(processes: bool, socket: SocketRule) -> SeccompProgram {
        build(&SeccompPlan {
            allowed: ["read", "write", "exit_group"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            processes,
            socket,
            default_action: ViolationAction::Kill,
        })
        .expect("build")
    }

    #[test]
    fn allow_list_allows_listed_and_kills_the_rest() {
        let p = plan(false, SocketRule::Deny);
        assert_eq!(run(&p.instructions, nr("read"), X86_64, [0; 6]), ALLOW);
        assert_eq!(
            run(&p.instructions, nr("mount"), X86_64, [0; 6]),
            KILL_PROCESS
        );
        assert_eq!(
            run(&p.instructions, nr("socket"), X86_64, [2, 1, 0, 0, 0, 0]),
            KILL_PROCESS
        );
        // A foreign architecture is killed outright.
        assert_eq!(
            run(&p.instructions, nr("read"), 0x4000_0003, [0; 6]),
            KILL_PROCESS
        );
    }

    #[test]
    fn clone3_gets_enosys() {
        let p = plan(true, SocketRule::Any);
        assert_eq!(
            run(&p.instructions, nr("clone3"), X86_64, [0; 6]),
            SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
    }

    #[test]
    fn clone_is_shaped_by_exec_permission() {
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD) as u64;
        let fork = libc::SIGCHLD as u64;
        let newuser = fork | libc::CLONE_NEWUSER as u64;
        let threads_only = plan(false, SocketRule::Deny);
        assert_eq!(
            run(
                &threads_only.instructions,
                nr("clone"),
                X86_64,
                [thread, 0, 0, 0, 0, 0]
            ),
            ALLOW
        );
        assert_eq!(
            run(
                &threads_only.instructions,
                nr("clone"),
                X86_64,
                [fork, 0, 0, 0, 0, 0]
            ),
            KILL_PROCESS
        );
        let processes = plan(true, SocketRule::Deny);
        assert_eq!(
            run(
                &processes.instructions,
                nr("clone"),
                X86_64,
                [fork, 0, 0, 0, 0, 0]
            ),
            ALLOW
        );
        assert_eq!(
            run(
                &processes.instructions,
                nr("clone"),
                X86_64,
                [newuser, 0, 0, 0, 0, 0]
            ),
            KILL_PROCESS
        );
    }

    #[test]
    fn tcp_only_sockets() {
        let p = plan(false, SocketRule::TcpOnly);
        let stream_cloexec = (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64;
        let inet = libc::AF_INET as u64;
        let inet6 = libc::AF_INET6 as u64;
        let unix = libc::AF_UNIX as u64;
        assert_eq!(
            run(
                &p.instructions,
                nr("socket"),
                X86_64,
                [inet, stream_cloexec, 0, 0, 0, 0]
            ),
            ALLOW
        );
        assert_eq!(
            run(
                &p.instructions,
                nr("socket"),
                X86_64,
                [inet6, 1, 0, 0, 0, 0]
            ),
            ALLOW
        );
        assert_eq!(
            run(
                &p.instructions,
                nr("socket"),
                X86_64,
                [inet, libc::SOCK_DGRAM as u64, 0, 0, 0, 0]
            ),
            KILL_PROCESS
        );
        assert_eq!(
            run(&p.instructions, nr("socket"), X86_64, [unix, 1, 0, 0, 0, 0]),
            KILL_PROCESS
        );
    }

    #[test]
    fn errno_action_returns_eperm() {
        let p = build(&SeccompPlan {
            allowed: ["read".to_string()].into_iter().collect(),
            processes: false,
            socket: SocketRule::Deny,
            default_action: ViolationAction::Errno,
        })
        .expect("build");
        assert_eq!(
            run(&p.instructions, nr("mount"), X86_64, [0; 6]),
            SECCOMP_RET_ERRNO | libc::EPERM as u32
        );
    }
}
