//! What installing the plugin's seccomp filter costs, alone: the policy's
//! compiled program against a binary-search tree over the same system
//! calls. The kernel checks, converts and JIT-compiles a filter at
//! install time, so the cost grows with the program's length, and every
//! start pays it.
//!
//! Each install runs in a fresh helper process (filters stack and cannot
//! be removed), which times the one `seccomp()` call and reports it.

use crate::bare::{self, Program};
use anyhow::{Context, Result, bail};
use corral_protocol::policy::{BpfInstruction, SeccompProgram};
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::str::FromStr;
use std::time::{Duration, Instant};

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> BpfInstruction {
    BpfInstruction { code, jt, jf, k }
}

/// A block deciding membership of the syscall number (in the accumulator)
/// in `keys` (sorted): a binary search down to runs of up to four, each
/// ending in its own return so no jump goes far.
fn tree(keys: &[u32]) -> Result<Vec<BpfInstruction>> {
    if keys.len() <= 4 {
        let n = keys.len();
        let mut block: Vec<BpfInstruction> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| insn(BPF_JEQ_K, (n - i) as u8, 0, *k))
            .collect();
        block.push(insn(BPF_RET_K, 0, 0, RET_KILL_PROCESS));
        block.push(insn(BPF_RET_K, 0, 0, RET_ALLOW));
        return Ok(block);
    }
    let mid = keys.len() / 2;
    let left = tree(&keys[..mid])?;
    let right = tree(&keys[mid..])?;
    let jump = u8::try_from(left.len()).context("tree too deep for an 8-bit jump")?;
    let mut block = vec![insn(BPF_JGE_K, jump, 0, keys[mid])];
    block.extend(left);
    block.extend(right);
    Ok(block)
}

/// The architecture check and a binary search over `program`'s allowed
/// system calls (without its argument checks: a size reference).
pub fn binary_tree_of(program: &SeccompProgram) -> Result<Vec<BpfInstruction>> {
    let mut numbers: Vec<u32> = program
        .allowed
        .iter()
        .filter_map(|name| {
            let bare = name.split('(').next().unwrap_or(name).trim();
            syscalls::Sysno::from_str(bare).ok().map(|s| s.id() as u32)
        })
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    if numbers.is_empty() {
        bail!("the program names no system call this build knows");
    }
    let mut out = vec![
        insn(BPF_LD_W_ABS, 0, 0, 4),
        insn(BPF_JEQ_K, 1, 0, 0xC000_003E),
        insn(BPF_RET_K, 0, 0, RET_KILL_PROCESS),
        insn(BPF_LD_W_ABS, 0, 0, 0),
    ];
    out.extend(tree(&numbers)?);
    Ok(out)
}

/// Times installing `program` in `reps` fresh helper processes.
pub fn time_installs(
    self_exe: &std::path::Path,
    program: &[BpfInstruction],
    reps: usize,
) -> Result<Vec<Duration>> {
    let helper = Program::new(self_exe, &["__seccomp-install"])?;
    let mut bytes = Vec::with_capacity(4 + program.len() * 8);
    bytes.extend_from_slice(&(program.len() as u32).to_le_bytes());
    for i in program {
        bytes.extend_from_slice(&i.code.to_le_bytes());
        bytes.push(i.jt);
        bytes.push(i.jf);
        bytes.extend_from_slice(&i.k.to_le_bytes());
    }
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let (mut ours, theirs) = UnixStream::pair()?;
        let pid = bare::spawn(&helper, Some(std::os::fd::AsFd::as_fd(&theirs)), false)?;
        drop(theirs);
        ours.write_all(&bytes)?;
        let mut ns = [0u8; 8];
        let read = ours.read_exact(&mut ns);
        bare::reap(pid, Duration::from_secs(2));
        read.context("the seccomp helper gave no answer")?;
        let ns = u64::from_le_bytes(ns);
        if ns == u64::MAX {
            bail!("the kernel refused the seccomp program");
        }
        samples.push(Duration::from_nanos(ns));
    }
    Ok(samples)
}

/// `__seccomp-install`: reads a program from fd 3, installs it, writes
/// the nanoseconds the `seccomp()` call took (or u64::MAX on failure).
pub fn install_helper() -> Result<()> {
    // SAFETY: fd 3 was handed to us for this purpose.
    let mut channel = unsafe { UnixStream::from_raw_fd(3) };
    let mut len = [0u8; 4];
    channel.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    let mut raw = vec![0u8; len * 8];
    channel.read_exact(&mut raw)?;
    let filter: Vec<libc::sock_filter> = raw
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_le_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len()).context("program too long")?,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with constant arguments; seccomp reads `prog`, which
    // points at `filter`, alive across the call.
    let (rc, elapsed) = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        let t = Instant::now();
        let rc = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        );
        (rc, t.elapsed())
    };
    let ns = if rc == 0 {
        elapsed.as_nanos() as u64
    } else {
        u64::MAX
    };
    // The filter may forbid what comes after; the answer goes first.
    channel.write_all(&ns.to_le_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(names: &[&str]) -> SeccompProgram {
        SeccompProgram {
            instructions: Vec::new(),
            allowed: names.iter().map(|s| s.to_string()).collect(),
            notify: None,
        }
    }

    /// Runs the tree on a syscall number with a tiny BPF interpreter.
    fn verdict(prog: &[BpfInstruction], nr: u32) -> u32 {
        let mut pc = 0usize;
        let mut acc = 0u32;
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                BPF_LD_W_ABS => acc = if i.k == 4 { 0xC000_003E } else { nr },
                BPF_JEQ_K => pc += if acc == i.k { i.jt } else { i.jf } as usize,
                BPF_JGE_K => pc += if acc >= i.k { i.jt } else { i.jf } as usize,
                BPF_RET_K => return i.k,
                other => panic!("unexpected code {other:#x}"),
            }
        }
    }

    #[test]
    fn tree_allows_exactly_the_set() {
        let names: Vec<String> = (0..200u32)
            .filter(|n| n % 3 != 0)
            .filter_map(|n| syscalls::Sysno::new(n as usize).map(|s| s.name().to_string()))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let prog = binary_tree_of(&program(&refs)).expect("tree");
        for nr in 0..220u32 {
            let allowed = names
                .iter()
                .any(|n| syscalls::Sysno::from_str(n).map(|s| s.id() as u32) == Ok(nr));
            let expect = if allowed { RET_ALLOW } else { RET_KILL_PROCESS };
            assert_eq!(verdict(&prog, nr), expect, "syscall {nr}");
        }
        assert!(prog.len() < names.len() * 2, "{} instructions", prog.len());
    }

    #[test]
    fn annotated_names_count_by_their_syscall() {
        let prog =
            binary_tree_of(&program(&["read", "socket(AF_INET, SOCK_STREAM)"])).expect("tree");
        assert_eq!(verdict(&prog, libc::SYS_read as u32), RET_ALLOW);
        assert_eq!(verdict(&prog, libc::SYS_socket as u32), RET_ALLOW);
        assert_eq!(verdict(&prog, libc::SYS_write as u32), RET_KILL_PROCESS);
    }
}
