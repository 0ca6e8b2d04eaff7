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
//! Calls whose arguments matter get argument checks (`seccomp_args`):
//! `clone` never with namespace flags, and only for threads without the
//! exec permission; `socket` by family, type and protocol as the network
//! permission allows; `socketpair`, `ioctl`, `prctl`, `personality`,
//! `mmap`, `mprotect` and `memfd_create` only with harmless arguments.
//! `clone3` always fails with ENOSYS: seccomp cannot read its flags (they
//! are behind a pointer), so C libraries must be made to fall back to
//! `clone`. Some calls are never allowed, whatever the policy lists
//! ([`seccomp_args::NEVER_ALLOWED`]).

use super::ViolationAction;
use super::seccomp_args::{self, ArgRule, Otherwise};
use super::syscalls::sysno;
use corral_protocol::policy::{BpfInstruction, SeccompAction, SeccompNotify, SeccompProgram};
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

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JMP_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JMP_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JMP_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const ALU_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const RET_ALLOW: u32 = 0x7FFF_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_USER_NOTIF: u32 = 0x7FC0_0000;

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

/// The block of instructions for one argument rule: each alternative
/// loads and tests its conditions in turn, a failed test jumping to the
/// next alternative; an alternative whose every test passed allows the
/// call; when none did, `deny` decides.
fn rule_block(rule: &ArgRule, violation: u32) -> Result<Vec<BpfInstruction>, String> {
    let otherwise = match rule.otherwise {
        Otherwise::Violation => violation,
        Otherwise::Errno(e) => RET_ERRNO | (e & 0xFFFF),
    };
    if let Some(block) = one_of_block(rule, otherwise) {
        return Ok(block);
    }
    let mut out = Vec::new();
    for alternative in &rule.alternatives {
        let cond_len = |c: &seccomp_args::Cond| if c.mask == u32::MAX { 2 } else { 3 };
        let mut remaining: usize = alternative.iter().map(cond_len).sum::<usize>() + 1;
        for cond in alternative {
            remaining -= cond_len(cond);
            let skip = u8::try_from(remaining)
                .map_err(|_| format!("the argument check of `{}` is too long", rule.syscall))?;
            out.push(insn(LD_W_ABS, 0, 0, DATA_ARGS + 8 * u32::from(cond.arg)));
            if cond.mask != u32::MAX {
                out.push(insn(ALU_AND_K, 0, 0, cond.mask));
            }
            // Passing falls through to the next test; failing skips the
            // rest of this alternative, its final `ret allow` included.
            out.push(insn(JMP_JEQ_K, 0, skip, cond.equals));
        }
        out.push(insn(RET_K, 0, 0, RET_ALLOW));
    }
    out.push(insn(RET_K, 0, 0, otherwise));
    Ok(out)
}

/// The short form of a rule whose alternatives each test one value of the
/// same argument (ioctl requests, prctl options): one load, then a
/// comparison per value, all jumping to one `ret allow`.
fn one_of_block(rule: &ArgRule, otherwise: u32) -> Option<Vec<BpfInstruction>> {
    let first = *rule.alternatives.first()?.first()?;
    let same = rule
        .alternatives
        .iter()
        .all(|alt| alt.len() == 1 && alt[0].arg == first.arg && alt[0].mask == first.mask);
    let n = rule.alternatives.len();
    if !same || n > 200 {
        return None;
    }
    let mut out = vec![insn(LD_W_ABS, 0, 0, DATA_ARGS + 8 * u32::from(first.arg))];
    if first.mask != u32::MAX {
        out.push(insn(ALU_AND_K, 0, 0, first.mask));
    }
    for (i, alt) in rule.alternatives.iter().enumerate() {
        // Bounded by `n <= 200` above.
        out.push(insn(JMP_JEQ_K, (n - i) as u8, 0, alt[0].equals));
    }
    out.push(insn(RET_K, 0, 0, otherwise));
    out.push(insn(RET_K, 0, 0, RET_ALLOW));
    Some(out)
}

/// Builds the program for `plan`.
pub fn build(plan: &SeccompPlan) -> Result<SeccompProgram, String> {
    let arch = audit_arch()?;
    // Every refused call is referred to the supervisor, which names it and
    // answers as the policy says; where no listener can be made the
    // trampoline puts the fallback in its place.
    let (action, fallback) = match plan.default_action {
        ViolationAction::Kill => (SeccompAction::Kill, RET_KILL_PROCESS),
        ViolationAction::Errno => (
            SeccompAction::Errno { errno: libc::EPERM },
            RET_ERRNO | libc::EPERM as u32,
        ),
        ViolationAction::Enosys => (
            SeccompAction::Errno {
                errno: libc::ENOSYS,
            },
            RET_ERRNO | libc::ENOSYS as u32,
        ),
    };
    let violation = RET_USER_NOTIF;
    if let Some(never) = seccomp_args::NEVER_ALLOWED
        .iter()
        .find(|n| plan.allowed.contains(**n))
    {
        return Err(format!(
            "`{never}` is never allowed: it opens kernel surface the sandbox does not confine"
        ));
    }
    let mut rules: Vec<ArgRule> = vec![seccomp_args::clone_rule(plan.processes)];
    rules.extend(seccomp_args::socket_rule(plan.socket));
    let mut shown: Vec<String> = Vec::new();
    let mut entries: BTreeMap<u32, Action> = BTreeMap::new();
    for name in &plan.allowed {
        match seccomp_args::listed_rule(name) {
            Some(rule) => rules.push(rule),
            None => {
                entries.insert(sysno(name)?.id() as u32, Action::Allow);
                shown.push(name.clone());
            }
        }
    }
    entries.insert(
        sysno("clone3")?.id() as u32,
        Action::Errno(libc::ENOSYS as u32),
    );
    let mut checks: Vec<Vec<BpfInstruction>> = Vec::with_capacity(rules.len());
    for rule in &rules {
        entries.insert(
            sysno(rule.syscall)?.id() as u32,
            Action::Check(checks.len()),
        );
        checks.push(rule_block(rule, violation)?);
        shown.push(rule.shown.to_string());
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
    program.append(tree(&entries, violation));
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
    shown.sort();
    Ok(SeccompProgram {
        instructions: program.insns,
        allowed: shown,
        notify: Some(SeccompNotify { action, fallback }),
    })
}

/// Calls a learning run refers to the supervisor even where the program
/// allows them, for the paths and addresses they name.
pub const LEARNED_CALLS: &[&str] = &[
    "open", "openat", "openat2", "creat", "execve", "execveat", "connect", "bind",
];

/// `program` for a learning run (`corral learn`): [`LEARNED_CALLS`] are
/// referred to the supervisor first, then the program decides as before
/// (its own jumps are relative, so a prefix leaves them intact), and the
/// supervisor records and lets through whatever it refers.
pub fn with_learning(program: &SeccompProgram) -> Result<SeccompProgram, String> {
    let arch = audit_arch()?;
    let n = LEARNED_CALLS.len();
    let mut insns = vec![
        insn(LD_W_ABS, 0, 0, DATA_ARCH),
        insn(JMP_JEQ_K, 0, (n + 3) as u8, arch),
        insn(LD_W_ABS, 0, 0, DATA_NR),
    ];
    for (i, name) in LEARNED_CALLS.iter().enumerate() {
        insns.push(insn(JMP_JEQ_K, (n - i) as u8, 0, sysno(name)?.id() as u32));
    }
    insns.push(insn(JMP_JA, 0, 0, 1));
    insns.push(insn(RET_K, 0, 0, RET_USER_NOTIF));
    insns.extend(program.instructions.iter().copied());
    if insns.len() > 4096 {
        return Err("the learning program is longer than the kernel's 4096".into());
    }
    Ok(SeccompProgram {
        instructions: insns,
        allowed: program.allowed.clone(),
        notify: Some(SeccompNotify {
            action: SeccompAction::Learn,
            // Nothing can be learned without a listener: stop at once.
            fallback: RET_KILL_PROCESS,
        }),
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

    /// The program as the kernel runs it where no listener can be made:
    /// referred calls get the fallback. The verdicts below are read off
    /// this view; `refused_calls_are_referred_to_the_supervisor` checks
    /// the referral itself.
    fn decided(mut p: SeccompProgram) -> SeccompProgram {
        let fallback = p.notify.expect("notify").fallback;
        for i in &mut p.instructions {
            if i.code == RET_K && i.k == RET_USER_NOTIF {
                i.k = fallback;
            }
        }
        p
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
        .map(decided)
        .expect("build")
    }

    #[test]
    fn refused_calls_are_referred_to_the_supervisor() {
        let p = build(&SeccompPlan {
            allowed: ["read".to_string()].into_iter().collect(),
            processes: false,
            socket: SocketRule::TcpOnly,
            default_action: ViolationAction::Errno,
        })
        .expect("build");
        let notify = p.notify.expect("notify");
        assert_eq!(notify.action, SeccompAction::Errno { errno: libc::EPERM });
        assert_eq!(notify.fallback, RET_ERRNO | libc::EPERM as u32);
        let mptcp = [2, 1, libc::IPPROTO_MPTCP as u64, 0, 0, 0];
        assert_eq!(
            run(&p.instructions, nr("mount"), X86_64, [0; 6]),
            RET_USER_NOTIF
        );
        assert_eq!(
            run(&p.instructions, nr("socket"), X86_64, mptcp),
            RET_USER_NOTIF
        );
        assert_eq!(run(&p.instructions, nr("read"), X86_64, [0; 6]), ALLOW);
        // A foreign architecture never reaches the supervisor.
        assert_eq!(
            run(&p.instructions, nr("read"), 0x4000_0003, [0; 6]),
            KILL_PROCESS
        );
    }

    #[test]
    fn learning_refers_paths_and_addresses_and_keeps_the_rest() {
        let base = plan(false, SocketRule::Deny);
        let p = with_learning(&base).expect("learning");
        assert_eq!(p.notify.map(|n| n.action), Some(SeccompAction::Learn));
        for name in ["openat", "execve", "connect"] {
            assert_eq!(
                run(&p.instructions, nr(name), X86_64, [0; 6]),
                RET_USER_NOTIF
            );
        }
        assert_eq!(run(&p.instructions, nr("read"), X86_64, [0; 6]), ALLOW);
        assert_eq!(
            run(&p.instructions, nr("mount"), X86_64, [0; 6]),
            KILL_PROCESS,
            "the base program's verdict (here its fallback view)"
        );
        assert_eq!(
            run(&p.instructions, nr("openat"), 0x4000_0003, [0; 6]),
            KILL_PROCESS
        );
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

    /// A plan with the listed calls that carry argument checks.
    fn shaped_plan(socket: SocketRule) -> SeccompProgram {
        build(&SeccompPlan {
            allowed: [
                "read",
                "ioctl",
                "prctl",
                "personality",
                "mmap",
                "mprotect",
                "memfd_create",
                "socketpair",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            processes: false,
            socket,
            default_action: ViolationAction::Kill,
        })
        .map(decided)
        .expect("build")
    }

    fn verdict(p: &SeccompProgram, name: &str, args: [u64; 6]) -> u32 {
        run(&p.instructions, nr(name), X86_64, args)
    }

    #[test]
    fn sockets_check_the_protocol_and_the_exact_type() {
        let tcp = shaped_plan(SocketRule::TcpOnly);
        let (inet, inet6) = (libc::AF_INET as u64, libc::AF_INET6 as u64);
        let stream = libc::SOCK_STREAM as u64;
        let flags = (libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) as u64;
        let (ip_tcp, mptcp) = (libc::IPPROTO_TCP as u64, libc::IPPROTO_MPTCP as u64);
        assert_eq!(
            verdict(&tcp, "socket", [inet, stream, ip_tcp, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            verdict(&tcp, "socket", [inet6, stream | flags, 0, 0, 0, 0]),
            ALLOW
        );
        // MPTCP is not covered by Landlock's TCP port rules.
        for family in [inet, inet6] {
            assert_eq!(
                verdict(&tcp, "socket", [family, stream, mptcp, 0, 0, 0]),
                KILL_PROCESS
            );
        }
        // SOCK_PACKET (10) and SOCK_RAW share no bits with the mask trick
        // the old check used; an unknown high flag is not stripped.
        for ty in [
            libc::SOCK_RAW as u64,
            10, /* SOCK_PACKET */
            stream | 0x100,
        ] {
            assert_eq!(
                verdict(&tcp, "socket", [inet, ty, 0, 0, 0, 0]),
                KILL_PROCESS
            );
        }
        let host = shaped_plan(SocketRule::Any);
        let udp = libc::IPPROTO_UDP as u64;
        let dgram = libc::SOCK_DGRAM as u64;
        assert_eq!(verdict(&host, "socket", [inet, dgram, udp, 0, 0, 0]), ALLOW);
        assert_eq!(
            verdict(&host, "socket", [inet, stream, mptcp, 0, 0, 0]),
            KILL_PROCESS
        );
        for (family, ty, protocol) in [
            (libc::AF_PACKET, libc::SOCK_RAW, 0),
            (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
            (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT),
            (libc::AF_ALG, libc::SOCK_SEQPACKET, 0),
            (40, libc::SOCK_STREAM, 0),
            (libc::AF_UNIX, libc::SOCK_DGRAM, 0),
        ] {
            assert_eq!(
                verdict(
                    &host,
                    "socket",
                    [family as u64, ty as u64, protocol as u64, 0, 0, 0]
                ),
                KILL_PROCESS,
                "socket({family}, {ty}, {protocol})"
            );
        }
    }

    #[test]
    fn socketpair_is_local_and_connected_only() {
        let p = shaped_plan(SocketRule::Deny);
        let unix = libc::AF_UNIX as u64;
        let cloexec = libc::SOCK_CLOEXEC as u64;
        assert_eq!(
            verdict(
                &p,
                "socketpair",
                [unix, libc::SOCK_STREAM as u64 | cloexec, 0, 0, 0, 0]
            ),
            ALLOW
        );
        assert_eq!(
            verdict(
                &p,
                "socketpair",
                [unix, libc::SOCK_SEQPACKET as u64, 0, 0, 0, 0]
            ),
            ALLOW
        );
        for ty in [libc::SOCK_DGRAM, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC] {
            assert_eq!(
                verdict(&p, "socketpair", [unix, ty as u64, 0, 0, 0, 0]),
                KILL_PROCESS
            );
        }
        assert_eq!(
            verdict(&p, "socketpair", [libc::AF_INET as u64, 1, 0, 0, 0, 0]),
            KILL_PROCESS
        );
    }

    #[test]
    fn ioctl_allows_a_short_list_and_answers_enotty_to_the_rest() {
        let p = shaped_plan(SocketRule::Deny);
        // FIONREAD, FIONBIO, FIOCLEX, FIONCLEX.
        for request in [0x541Bu64, 0x5421, 0x5451, 0x5450] {
            assert_eq!(verdict(&p, "ioctl", [3, request, 0, 0, 0, 0]), ALLOW);
        }
        let enotty = RET_ERRNO | libc::ENOTTY as u32;
        // SIOCGIFCONF, SIOCGIFHWADDR, TCGETS, TIOCSTI.
        for request in [0x8912u64, 0x8927, 0x5401, 0x5412] {
            assert_eq!(verdict(&p, "ioctl", [3, request, 0, 0, 0, 0]), enotty);
        }
        // High bits of the request are not part of it (unsigned int).
        assert_eq!(verdict(&p, "ioctl", [3, 0x1_0000_8912, 0, 0, 0, 0]), enotty);
    }

    #[test]
    fn prctl_personality_memory_and_memfd_are_shaped() {
        let p = shaped_plan(SocketRule::Deny);
        let option = |o: i32| [o as u64, 0, 0, 0, 0, 0];
        assert_eq!(verdict(&p, "prctl", option(libc::PR_SET_NAME)), ALLOW);
        for o in [
            libc::PR_SET_DUMPABLE,
            libc::PR_SET_MM,
            libc::PR_SET_SECCOMP,
            libc::PR_CAP_AMBIENT,
            0x5961_6d61, // PR_SET_PTRACER
        ] {
            assert_eq!(verdict(&p, "prctl", option(o)), KILL_PROCESS, "prctl {o}");
        }
        assert_eq!(
            verdict(&p, "personality", [0xFFFF_FFFF, 0, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            verdict(&p, "personality", [0x0040_0000, 0, 0, 0, 0, 0]),
            KILL_PROCESS,
            "READ_IMPLIES_EXEC"
        );
        let exec = (libc::PROT_READ | libc::PROT_EXEC) as u64;
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let file = libc::MAP_PRIVATE as u64;
        assert_eq!(verdict(&p, "mmap", [0, 4096, rw, anon, u64::MAX, 0]), ALLOW);
        assert_eq!(verdict(&p, "mmap", [0, 4096, exec, file, 3, 0]), ALLOW);
        assert_eq!(
            verdict(&p, "mmap", [0, 4096, exec, anon, u64::MAX, 0]),
            KILL_PROCESS
        );
        assert_eq!(verdict(&p, "mprotect", [0, 4096, rw, 0, 0, 0]), ALLOW);
        assert_eq!(
            verdict(&p, "mprotect", [0, 4096, exec, 0, 0, 0]),
            KILL_PROCESS
        );
        let seal = u64::from(seccomp_args::MFD_NOEXEC_SEAL);
        let cloexec = libc::MFD_CLOEXEC as u64;
        assert_eq!(
            verdict(&p, "memfd_create", [0, seal | cloexec, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            verdict(&p, "memfd_create", [0, cloexec, 0, 0, 0, 0]),
            KILL_PROCESS
        );
        assert_eq!(
            verdict(
                &p,
                "memfd_create",
                [0, u64::from(seccomp_args::MFD_EXEC), 0, 0, 0, 0]
            ),
            KILL_PROCESS
        );
    }

    #[test]
    fn some_calls_are_never_allowed() {
        for never in [
            "bpf",
            "keyctl",
            "userfaultfd",
            "perf_event_open",
            "io_uring_setup",
        ] {
            let err = build(&SeccompPlan {
                allowed: ["read", never].iter().map(|s| s.to_string()).collect(),
                processes: false,
                socket: SocketRule::Deny,
                default_action: ViolationAction::Kill,
            })
            .expect_err(never);
            assert!(
                err.contains(never) && err.contains("never allowed"),
                "{err}"
            );
        }
    }

    #[test]
    fn errno_action_returns_eperm() {
        let p = build(&SeccompPlan {
            allowed: ["read".to_string()].into_iter().collect(),
            processes: false,
            socket: SocketRule::Deny,
            default_action: ViolationAction::Errno,
        })
        .map(decided)
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
        // A rule from the argument table, condition by condition.
        let from_table = |rule: &ArgRule| -> Vec<SeccompRule> {
            rule.alternatives
                .iter()
                .map(|alt| {
                    SeccompRule::new(
                        alt.iter()
                            .map(|c| {
                                let op = if c.mask == u32::MAX {
                                    SeccompCmpOp::Eq
                                } else {
                                    SeccompCmpOp::MaskedEq(u64::from(c.mask))
                                };
                                cond(c.arg, SeccompCmpArgLen::Dword, op, u64::from(c.equals))
                            })
                            .collect(),
                    )
                    .expect("rule")
                })
                .collect()
        };
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        let mut ioctl_allowed = false;
        for name in &plan.allowed {
            if name == "ioctl" {
                // Answered ENOTTY ahead of the chain (below).
                ioctl_allowed = true;
                continue;
            }
            let rule = seccomp_args::listed_rule(name);
            rules.insert(
                i64::from(nr(name)),
                rule.as_ref().map(from_table).unwrap_or_default(),
            );
        }
        // clone and TCP sockets written out by hand, independently of the
        // table.
        let mut clone = vec![cond(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(u64::from(seccomp_args::CLONE_NAMESPACES)),
            0,
        )];
        if !plan.processes {
            let thread = libc::CLONE_THREAD as u64;
            clone.push(cond(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(thread),
                thread,
            ));
        }
        rules.insert(
            i64::from(nr("clone")),
            vec![SeccompRule::new(clone).expect("rule")],
        );
        match plan.socket {
            SocketRule::Deny => {}
            SocketRule::Any => {
                let rule = seccomp_args::socket_rule(SocketRule::Any).expect("rule");
                rules.insert(i64::from(nr("socket")), from_table(&rule));
            }
            SocketRule::TcpOnly => {
                let eq =
                    |arg, v: i32| cond(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v as u64);
                let stream = || {
                    cond(
                        1,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::MaskedEq(u64::from(
                            !((libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) as u32),
                        )),
                        libc::SOCK_STREAM as u64,
                    )
                };
                let mut alternatives = Vec::new();
                for family in [libc::AF_INET, libc::AF_INET6] {
                    for protocol in [0, libc::IPPROTO_TCP] {
                        alternatives.push(
                            SeccompRule::new(vec![eq(0, family), stream(), eq(2, protocol)])
                                .expect("rule"),
                        );
                    }
                }
                rules.insert(i64::from(nr("socket")), alternatives);
            }
        }
        let mismatch = match plan.default_action {
            ViolationAction::Kill => SeccompAction::KillProcess,
            ViolationAction::Errno => SeccompAction::Errno(libc::EPERM as u32),
            ViolationAction::Enosys => SeccompAction::Errno(libc::ENOSYS as u32),
        };
        let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)
            .expect("filter");
        let linear: BpfProgram = filter.try_into().expect("compile");
        // clone3 answered ENOSYS ahead of the chain, and ioctl checked
        // there: requests off the list get ENOTTY.
        let mut out = vec![
            insn(LD_W_ABS, 0, 0, DATA_ARCH),
            insn(JMP_JEQ_K, 0, 3, X86_64),
            insn(LD_W_ABS, 0, 0, DATA_NR),
            insn(JMP_JEQ_K, 0, 1, nr("clone3")),
            insn(RET_K, 0, 0, RET_ERRNO | libc::ENOSYS as u32),
        ];
        if ioctl_allowed {
            let requests = seccomp_args::IOCTL_REQUESTS;
            let n = requests.len() as u8;
            out.push(insn(LD_W_ABS, 0, 0, DATA_ARCH));
            out.push(insn(JMP_JEQ_K, 0, n + 5, X86_64));
            out.push(insn(LD_W_ABS, 0, 0, DATA_NR));
            out.push(insn(JMP_JEQ_K, 0, n + 3, nr("ioctl")));
            out.push(insn(LD_W_ABS, 0, 0, DATA_ARGS + 8));
            for (i, (request, _)) in requests.iter().enumerate() {
                out.push(insn(JMP_JEQ_K, n - i as u8, 0, *request));
            }
            out.push(insn(RET_K, 0, 0, RET_ERRNO | libc::ENOTTY as u32));
            out.push(insn(RET_K, 0, 0, RET_ALLOW));
        }
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
                libc::SOCK_SEQPACKET,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::SOCK_STREAM | 0x100,
            ] {
                for protocol in [0, libc::IPPROTO_TCP, libc::IPPROTO_UDP, libc::IPPROTO_MPTCP] {
                    out.push([family as u64, ty as u64, protocol as u64, 0, 0, 0]);
                }
            }
        }
        // ioctl requests, prctl options and personas, mmap/mprotect
        // protections, memfd flags.
        for request in [
            0x541B, /* FIONREAD */
            0x5451, /* FIOCLEX */
            0x8912, 0x5401,
        ] {
            out.push([3, request, 0, 0, 0, 0]);
        }
        for option in [libc::PR_SET_NAME, libc::PR_SET_DUMPABLE, 0x5356_4d41] {
            out.push([option as u64, 0, 0, 0, 0, 0]);
        }
        out.push([u64::from(u32::MAX), 0, 0, 0, 0, 0]);
        let (exec, rw) = (
            libc::PROT_EXEC as u64,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
        );
        let (anon, private) = (
            (libc::MAP_ANONYMOUS | libc::MAP_PRIVATE) as u64,
            libc::MAP_PRIVATE as u64,
        );
        for (prot, flags) in [(exec, anon), (exec, private), (rw, anon)] {
            out.push([0, 4096, prot, flags, 0, 0]);
        }
        for flags in [MFD_NOEXEC_SEAL_U64, MFD_NOEXEC_SEAL_U64 | 0x10, 1] {
            out.push([0, flags, 0, 0, 0, 0]);
        }
        out
    }

    const MFD_NOEXEC_SEAL_U64: u64 = seccomp_args::MFD_NOEXEC_SEAL as u64;

    #[test]
    fn the_tree_agrees_with_seccompiler_on_every_system_call() {
        let base: BTreeSet<String> = crate::policy::SyscallGroups::builtin()
            .resolve("@default")
            .expect("group")
            .into_iter()
            .chain(
                [
                    "read",
                    "write",
                    "openat",
                    "close",
                    "futex",
                    "epoll_wait",
                    "ioctl",
                    "socketpair",
                    "memfd_create",
                    "personality",
                ]
                .map(String::from),
            )
            .collect();
        for processes in [false, true] {
            for socket in [SocketRule::Deny, SocketRule::TcpOnly, SocketRule::Any] {
                for default_action in [
                    ViolationAction::Kill,
                    ViolationAction::Errno,
                    ViolationAction::Enosys,
                ] {
                    let plan = SeccompPlan {
                        allowed: base.clone(),
                        processes,
                        socket,
                        default_action,
                    };
                    let tree = build(&plan).map(decided).expect("build").instructions;
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
            .filter(|n| !seccomp_args::NEVER_ALLOWED.contains(&n.as_str()))
            .filter(|n| seccomp_args::listed_rule(n).is_none())
            .collect();
        let plan = SeccompPlan {
            allowed: all.clone(),
            processes: true,
            socket: SocketRule::Any,
            default_action: ViolationAction::Kill,
        };
        let program = build(&plan).map(decided).expect("build").instructions;
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
