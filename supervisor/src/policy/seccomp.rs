//! Compiles a plugin's system call allow-list to a classic-BPF program,
//! once per policy, in the supervisor; the trampoline only installs the
//! bytes.
//!
//! The program is a binary search over system call numbers: the kernel
//! verifies and JIT-compiles a filter when it is installed, so the start of
//! every plugin pays for the program's length, and every system call it
//! makes pays for the path through it. `seccompiler` emits one linear chain
//! (932 instructions for the built-in policy, ~0.5 ms to install, up to 182
//! comparisons per system call); the tree is ~4 times shorter and decides
//! in about eight comparisons. `seccompiler` remains the reference: the
//! tests check both give the same verdict for every system call.
//!
//! Shaped calls get argument checks: `clone` never with namespace flags,
//! and only for threads without the exec permission; `socket` only for TCP
//! under `net = connect`. `clone3` always fails with ENOSYS: seccomp cannot
//! read its flags (they are behind a pointer), so C libraries must be made
//! to fall back to `clone`.

use super::ViolationAction;
use super::syscalls::sysno;
use corral_protocol::policy::{BpfInstruction, SeccompProgram};
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

const CLONE_THREAD: u32 = libc::CLONE_THREAD as u32;
/// Namespace flags `clone` may never carry: a plugin does not create
/// namespaces (an unprivileged user namespace would hand it capabilities
/// over new kernel surface). All live in the low 32 bits, the only ones
/// `clone` reads.
const CLONE_NAMESPACES: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JMP_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JMP_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JMP_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JMP_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const ALU_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const RET_ALLOW: u32 = 0x7FFF_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;

/// Offsets in `struct seccomp_data`; the low 32 bits of argument `i` are at
/// `ARGS + 8 * i` on the little-endian architectures supported.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARGS: u32 = 16;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> BpfInstruction {
    BpfInstruction { code, jt, jf, k }
}

fn audit_arch() -> Result<u32, String> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(0xC000_003E),
        "aarch64" => Ok(0xC000_00B7),
        "riscv64" => Ok(0xC000_00F3),
        other => Err(format!("seccomp filters are not built for {other}")),
    }
}

/// What a system call number leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    Errno(u32),
    /// Jump to argument-check block `n`.
    Check(usize),
}

/// Code with jumps to argument-check blocks still to be patched:
/// `(index of a JA instruction, block)`.
struct Code {
    insns: Vec<BpfInstruction>,
    patches: Vec<(usize, usize)>,
}

impl Code {
    fn append(&mut self, other: Code) {
        let base = self.insns.len();
        self.insns.extend(other.insns);
        self.patches.extend(
            other
                .patches
                .into_iter()
                .map(|(at, block)| (at + base, block)),
        );
    }
}

/// Searches `entries` (sorted by number) with the number in the
/// accumulator; `default` ends every miss.
fn tree(entries: &[(u32, Action)], default: u32) -> Code {
    if entries.len() <= 4 && entries.iter().all(|(_, a)| *a == Action::Allow) {
        // [jeq k0 .. jeq kn-1, ret default, ret allow]: most leaves.
        let n = entries.len();
        let mut insns: Vec<BpfInstruction> = entries
            .iter()
            .enumerate()
            .map(|(i, (k, _))| insn(JMP_JEQ_K, (n - i) as u8, 0, *k))
            .collect();
        insns.push(insn(RET_K, 0, 0, default));
        insns.push(insn(RET_K, 0, 0, RET_ALLOW));
        return Code {
            insns,
            patches: Vec::new(),
        };
    }
    if entries.len() <= 4 {
        // [jeq k0 .. jeq kn-1, ret default, action0 .. actionn-1]: the
        // action of compare i sits exactly n instructions past it.
        let n = entries.len();
        let mut code = Code {
            insns: entries
                .iter()
                .map(|(k, _)| insn(JMP_JEQ_K, n as u8, 0, *k))
                .collect(),
            patches: Vec::new(),
        };
        code.insns.push(insn(RET_K, 0, 0, default));
        for (_, action) in entries {
            let at = code.insns.len();
            code.insns.push(match action {
                Action::Allow => insn(RET_K, 0, 0, RET_ALLOW),
                Action::Errno(e) => insn(RET_K, 0, 0, RET_ERRNO | (e & 0xFFFF)),
                Action::Check(block) => {
                    code.patches.push((at, *block));
                    insn(JMP_JA, 0, 0, 0)
                }
            });
        }
        return code;
    }
    let mid = entries.len() / 2;
    let left = tree(&entries[..mid], default);
    let right = tree(&entries[mid..], default);
    let pivot = entries[mid].0;
    let mut code = Code {
        insns: Vec::new(),
        patches: Vec::new(),
    };
    match u8::try_from(left.insns.len()) {
        Ok(skip) => code.insns.push(insn(JMP_JGE_K, skip, 0, pivot)),
        Err(_) => {
            // Conditional jumps reach 255 instructions; a long left half
            // is jumped over with an unconditional (32-bit) jump instead.
            code.insns.push(insn(JMP_JGE_K, 0, 1, pivot));
            code.insns.push(insn(JMP_JA, 0, 0, left.insns.len() as u32));
        }
    }
    code.append(left);
    code.append(right);
    code
}

/// `clone`: never with namespace flags; without the exec permission, only
/// for threads.
fn clone_check(processes: bool, default: u32) -> Vec<BpfInstruction> {
    let load = insn(LD_W_ABS, 0, 0, DATA_ARGS);
    if processes {
        vec![
            load,
            insn(JMP_JSET_K, 1, 0, CLONE_NAMESPACES),
            insn(RET_K, 0, 0, RET_ALLOW),
            insn(RET_K, 0, 0, default),
        ]
    } else {
        vec![
            load,
            insn(JMP_JSET_K, 2, 0, CLONE_NAMESPACES),
            insn(JMP_JSET_K, 0, 1, CLONE_THREAD),
            insn(RET_K, 0, 0, RET_ALLOW),
            insn(RET_K, 0, 0, default),
        ]
    }
}

/// `socket` under `net = connect`: TCP over IPv4 or IPv6 (the type may
/// carry SOCK_NONBLOCK / SOCK_CLOEXEC).
fn tcp_socket_check(default: u32) -> Vec<BpfInstruction> {
    vec![
        insn(LD_W_ABS, 0, 0, DATA_ARGS),
        insn(JMP_JEQ_K, 1, 0, libc::AF_INET as u32),
        insn(JMP_JEQ_K, 0, 4, libc::AF_INET6 as u32),
        insn(LD_W_ABS, 0, 0, DATA_ARGS + 8),
        insn(ALU_AND_K, 0, 0, 0xF),
        insn(JMP_JEQ_K, 0, 1, libc::SOCK_STREAM as u32),
        insn(RET_K, 0, 0, RET_ALLOW),
        insn(RET_K, 0, 0, default),
    ]
}

/// Builds the program for `plan`.
pub fn build(plan: &SeccompPlan) -> Result<SeccompProgram, String> {
    let arch = audit_arch()?;
    let default = match plan.default_action {
        ViolationAction::Kill => RET_KILL_PROCESS,
        ViolationAction::Errno => RET_ERRNO | libc::EPERM as u32,
    };
    let mut entries: BTreeMap<u32, Action> = BTreeMap::new();
    for name in &plan.allowed {
        entries.insert(sysno(name)?.id() as u32, Action::Allow);
    }
    let mut checks: Vec<Vec<BpfInstruction>> = vec![clone_check(plan.processes, default)];
    entries.insert(sysno("clone")?.id() as u32, Action::Check(0));
    entries.insert(
        sysno("clone3")?.id() as u32,
        Action::Errno(libc::ENOSYS as u32),
    );
    match plan.socket {
        SocketRule::Deny => {}
        SocketRule::Any => {
            entries.insert(sysno("socket")?.id() as u32, Action::Allow);
        }
        SocketRule::TcpOnly => {
            checks.push(tcp_socket_check(default));
            entries.insert(
                sysno("socket")?.id() as u32,
                Action::Check(checks.len() - 1),
            );
        }
    }
    let entries: Vec<(u32, Action)> = entries.into_iter().collect();

    // A foreign architecture (including a 32-bit entry on a 64-bit
    // kernel) is killed outright: its numbers mean other calls.
    let mut program = Code {
        insns: vec![
            insn(LD_W_ABS, 0, 0, DATA_ARCH),
            insn(JMP_JEQ_K, 1, 0, arch),
            insn(RET_K, 0, 0, RET_KILL_PROCESS),
            insn(LD_W_ABS, 0, 0, DATA_NR),
        ],
        patches: Vec::new(),
    };
    program.append(tree(&entries, default));
    let mut block_start = Vec::with_capacity(checks.len());
    for block in checks {
        block_start.push(program.insns.len());
        program.insns.extend(block);
    }
    for (at, block) in std::mem::take(&mut program.patches) {
        // Forward only: blocks follow the whole tree.
        program.insns[at].k = (block_start[block] - at - 1) as u32;
    }
    if program.insns.len() > 4096 {
        return Err(format!(
            "the program has {} instructions, more than the kernel's 4096",
            program.insns.len()
        ));
    }

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
        instructions: program.insns,
        allowed,
    })
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
                    // alu: only `and k` is used (by both compilers)
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
            RET_ERRNO | libc::ENOSYS as u32
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
            RET_ERRNO | libc::EPERM as u32
        );
    }

    /// The same plan compiled by seccompiler's linear chains, plus the
    /// clone3 prefix: the reference the tree must agree with.
    fn reference(plan: &SeccompPlan) -> Vec<BpfInstruction> {
        use seccompiler::{
            BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
            SeccompFilter, SeccompRule, TargetArch,
        };
        let cond = |arg, len, op, v| SeccompCondition::new(arg, len, op, v).expect("condition");
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for name in &plan.allowed {
            rules.insert(i64::from(nr(name)), Vec::new());
        }
        let mut clone = vec![cond(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(u64::from(CLONE_NAMESPACES)),
            0,
        )];
        if !plan.processes {
            clone.push(cond(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(u64::from(CLONE_THREAD)),
                u64::from(CLONE_THREAD),
            ));
        }
        rules.insert(
            i64::from(nr("clone")),
            vec![SeccompRule::new(clone).expect("rule")],
        );
        match plan.socket {
            SocketRule::Deny => {}
            SocketRule::Any => {
                rules.insert(i64::from(nr("socket")), Vec::new());
            }
            SocketRule::TcpOnly => {
                let family = |f: i32| cond(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, f as u64);
                let stream = || {
                    cond(
                        1,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::MaskedEq(0xF),
                        libc::SOCK_STREAM as u64,
                    )
                };
                rules.insert(
                    i64::from(nr("socket")),
                    vec![
                        SeccompRule::new(vec![family(libc::AF_INET), stream()]).expect("rule"),
                        SeccompRule::new(vec![family(libc::AF_INET6), stream()]).expect("rule"),
                    ],
                );
            }
        }
        let mismatch = match plan.default_action {
            ViolationAction::Kill => SeccompAction::KillProcess,
            ViolationAction::Errno => SeccompAction::Errno(libc::EPERM as u32),
        };
        let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)
            .expect("filter");
        let linear: BpfProgram = filter.try_into().expect("compile");
        // clone3 answered ENOSYS ahead of the chain.
        let mut out = vec![
            insn(LD_W_ABS, 0, 0, DATA_ARCH),
            insn(JMP_JEQ_K, 0, 3, X86_64),
            insn(LD_W_ABS, 0, 0, DATA_NR),
            insn(JMP_JEQ_K, 0, 1, nr("clone3")),
            insn(RET_K, 0, 0, RET_ERRNO | libc::ENOSYS as u32),
        ];
        out.extend(linear.iter().map(|i| insn(i.code, i.jt, i.jf, i.k)));
        out
    }

    /// Arguments that exercise every check: thread and process clones with
    /// and without namespace flags, sockets of every family and type.
    fn probe_args() -> Vec<[u64; 6]> {
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD) as u64;
        let mut out = vec![[0; 6]];
        for flags in [
            thread,
            libc::SIGCHLD as u64,
            thread | libc::CLONE_NEWUSER as u64,
            libc::CLONE_NEWNET as u64,
        ] {
            out.push([flags, 0, 0, 0, 0, 0]);
        }
        for family in [
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_UNIX,
            libc::AF_NETLINK,
            libc::AF_PACKET,
        ] {
            for ty in [
                libc::SOCK_STREAM,
                libc::SOCK_DGRAM,
                libc::SOCK_RAW,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            ] {
                out.push([family as u64, ty as u64, 0, 0, 0, 0]);
            }
        }
        out
    }

    #[test]
    fn the_tree_agrees_with_seccompiler_on_every_system_call() {
        let base: BTreeSet<String> = crate::policy::SyscallGroups::builtin()
            .resolve("@default")
            .expect("group")
            .into_iter()
            .chain(["read", "write", "openat", "close", "futex", "epoll_wait"].map(String::from))
            .collect();
        for processes in [false, true] {
            for socket in [SocketRule::Deny, SocketRule::TcpOnly, SocketRule::Any] {
                for default_action in [ViolationAction::Kill, ViolationAction::Errno] {
                    let plan = SeccompPlan {
                        allowed: base.clone(),
                        processes,
                        socket,
                        default_action,
                    };
                    let tree = build(&plan).expect("build").instructions;
                    let linear = reference(&plan);
                    assert!(
                        tree.len() < linear.len(),
                        "tree {} vs linear {}",
                        tree.len(),
                        linear.len()
                    );
                    for number in (0..=460u32).chain([0x4000_0000, 0x4000_0001, u32::MAX]) {
                        for args in probe_args() {
                            assert_eq!(
                                run(&tree, number, X86_64, args),
                                run(&linear, number, X86_64, args),
                                "syscall {number} args {args:?} ({plan:?})"
                            );
                        }
                    }
                    assert_eq!(
                        run(&tree, nr("read"), 0x4000_0003, [0; 6]),
                        KILL_PROCESS,
                        "i386 entry"
                    );
                }
            }
        }
    }

    #[test]
    fn long_allow_lists_use_far_jumps_and_still_decide_right() {
        // Every system call of the build arch: left halves longer than a
        // conditional jump can skip.
        let all: BTreeSet<String> = (0..460u32)
            .filter_map(|n| syscalls::Sysno::new(n as usize).map(|s| s.name().to_string()))
            .filter(|n| !["clone", "clone3", "socket"].contains(&n.as_str()))
            .collect();
        let plan = SeccompPlan {
            allowed: all.clone(),
            processes: true,
            socket: SocketRule::Any,
            default_action: ViolationAction::Kill,
        };
        let program = build(&plan).expect("build").instructions;
        assert!(
            program.iter().any(|i| i.code == JMP_JA && i.k > 255),
            "a far jump is used"
        );
        for name in &all {
            assert_eq!(run(&program, nr(name), X86_64, [0; 6]), ALLOW, "{name}");
        }
        assert_eq!(run(&program, 10_000, X86_64, [0; 6]), KILL_PROCESS);
    }
}
