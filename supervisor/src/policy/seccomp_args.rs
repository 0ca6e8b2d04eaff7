//! The seccomp filter's argument checks: the system calls a plugin may make
//! only with some arguments, and why each check is there.
//!
//! A system call number alone says too little for these: `socket` makes a
//! TCP socket or an MPTCP, raw, packet, netlink, vsock or crypto one by its
//! family, type and protocol; `ioctl` on the channel (a socket made in the
//! host's network namespace) would list the host's interfaces and MAC
//! addresses; `mmap` and `mprotect` can make writable memory executable.
//! Every check reads only scalar arguments (seccomp cannot follow a
//! pointer) and only their low 32 bits, which is all the kernel reads of
//! each one checked here (`int`/`unsigned int` arguments, and clone's
//! flags through `lower_32_bits`).
//!
//! The same table names the failing argument when a call is denied, so
//! the supervisor can report `socket(family=AF_NETLINK, ...)` rather than
//! only `socket`.

use super::seccomp::SocketRule;

/// One test on the low 32 bits of argument `arg`: `(value & mask) == equals`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    pub arg: u8,
    pub mask: u32,
    pub equals: u32,
}

impl Cond {
    const fn eq(arg: u8, equals: u32) -> Cond {
        Cond {
            arg,
            mask: u32::MAX,
            equals,
        }
    }

    /// None of `bits` set.
    const fn clear(arg: u8, bits: u32) -> Cond {
        Cond {
            arg,
            mask: bits,
            equals: 0,
        }
    }

    /// All of `bits` set.
    const fn set(arg: u8, bits: u32) -> Cond {
        Cond {
            arg,
            mask: bits,
            equals: bits,
        }
    }
}

/// What a call that matches no alternative of its rule gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Otherwise {
    /// The policy's violation action (kill, errno, or the supervisor's
    /// verdict through user notification).
    Violation,
    /// This errno, silently: for probes runtimes make all the time and
    /// cope with (an `ioctl` a pipe or socket does not support).
    Errno(u32),
}

/// A system call allowed only when every condition of one alternative
/// holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgRule {
    pub syscall: &'static str,
    pub alternatives: Vec<Vec<Cond>>,
    pub otherwise: Otherwise,
    /// How `policy show` lists the allowed shape.
    pub shown: &'static str,
}

/// The `type` argument of socket/socketpair without the two flags it may
/// carry; any other high bit makes the type no longer match.
const SOCK_TYPE_MASK: u32 = !((libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) as u32);

const CLONE_THREAD: u32 = libc::CLONE_THREAD as u32;
/// Namespace flags `clone` may never carry: a plugin does not create
/// namespaces (an unprivileged user namespace would hand it capabilities
/// over new kernel surface). All live in the low 32 bits, the only ones
/// `clone` reads.
pub const CLONE_NAMESPACES: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

/// memfd_create flags (linux/memfd.h, 6.3): a memfd made with NOEXEC_SEAL
/// has no execute bits and can never get them, so `execve` of
/// /proc/self/fd/N fails on it.
pub const MFD_NOEXEC_SEAL: u32 = 0x0008;
pub const MFD_EXEC: u32 = 0x0010;

/// `prctl` options a runtime uses on itself and that grant nothing: names,
/// the parent-death signal, reading its own state, timer slack, THP,
/// speculation controls, memory-deny-write-execute, naming anonymous
/// memory (glibc's malloc does), the auxiliary vector. Left out, among
/// others: PR_SET_DUMPABLE (would let ptrace and /proc/PID/mem in),
/// PR_SET_PTRACER, PR_SET_MM, PR_SET_SECCOMP, PR_CAP_AMBIENT,
/// PR_SET_SECUREBITS, PR_SET_SYSCALL_USER_DISPATCH.
pub const PRCTL_OPTIONS: &[(u32, &str)] = &[
    (libc::PR_SET_PDEATHSIG as u32, "PR_SET_PDEATHSIG"),
    (libc::PR_GET_PDEATHSIG as u32, "PR_GET_PDEATHSIG"),
    (libc::PR_GET_DUMPABLE as u32, "PR_GET_DUMPABLE"),
    (libc::PR_GET_KEEPCAPS as u32, "PR_GET_KEEPCAPS"),
    (libc::PR_SET_NAME as u32, "PR_SET_NAME"),
    (libc::PR_GET_NAME as u32, "PR_GET_NAME"),
    (libc::PR_GET_SECCOMP as u32, "PR_GET_SECCOMP"),
    (libc::PR_CAPBSET_READ as u32, "PR_CAPBSET_READ"),
    (libc::PR_SET_TIMERSLACK as u32, "PR_SET_TIMERSLACK"),
    (libc::PR_GET_TIMERSLACK as u32, "PR_GET_TIMERSLACK"),
    (
        libc::PR_SET_CHILD_SUBREAPER as u32,
        "PR_SET_CHILD_SUBREAPER",
    ),
    (
        libc::PR_GET_CHILD_SUBREAPER as u32,
        "PR_GET_CHILD_SUBREAPER",
    ),
    (libc::PR_SET_NO_NEW_PRIVS as u32, "PR_SET_NO_NEW_PRIVS"),
    (libc::PR_GET_NO_NEW_PRIVS as u32, "PR_GET_NO_NEW_PRIVS"),
    (libc::PR_GET_TID_ADDRESS as u32, "PR_GET_TID_ADDRESS"),
    (libc::PR_SET_THP_DISABLE as u32, "PR_SET_THP_DISABLE"),
    (libc::PR_GET_THP_DISABLE as u32, "PR_GET_THP_DISABLE"),
    (
        libc::PR_GET_SPECULATION_CTRL as u32,
        "PR_GET_SPECULATION_CTRL",
    ),
    (
        libc::PR_SET_SPECULATION_CTRL as u32,
        "PR_SET_SPECULATION_CTRL",
    ),
    (libc::PR_SET_MDWE as u32, "PR_SET_MDWE"),
    (libc::PR_GET_MDWE as u32, "PR_GET_MDWE"),
    (0x5356_4d41, "PR_SET_VMA"),
    (0x4155_5856, "PR_GET_AUXV"),
];

/// `ioctl` requests a runtime needs on the fds it has (pipes, sockets,
/// files): bytes readable, non-blocking mode, close-on-exec. Every other
/// request fails with ENOTTY, what the kernel answers for a request the
/// file does not support, so terminal probes (TCGETS, TIOCGWINSZ) behave
/// as on a pipe, and the socket ioctls (SIOCGIFCONF, SIOCGIFHWADDR, ...)
/// cannot read the host's interfaces through the channel.
pub const IOCTL_REQUESTS: &[(u32, &str)] = &[
    (libc::FIONREAD as u32, "FIONREAD"),
    (libc::FIONBIO as u32, "FIONBIO"),
    (libc::FIOCLEX as u32, "FIOCLEX"),
    (libc::FIONCLEX as u32, "FIONCLEX"),
];

/// System calls a policy may never allow, whatever it lists: each opens
/// kernel surface that the sandbox's other layers do not confine (BPF
/// programs, the kernel keyring, userfaultfd's page-fault control, perf
/// counters, io_uring's system calls that seccomp never sees).
pub const NEVER_ALLOWED: &[&str] = &[
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "perf_event_open",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "kexec_file_load",
];

/// `clone`: never with namespace flags; without the exec permission, only
/// for threads.
pub fn clone_rule(processes: bool) -> ArgRule {
    let mut conds = vec![Cond::clear(0, CLONE_NAMESPACES)];
    if !processes {
        conds.push(Cond::set(0, CLONE_THREAD));
    }
    ArgRule {
        syscall: "clone",
        alternatives: vec![conds],
        otherwise: Otherwise::Violation,
        // Namespace flags are refused whatever the permission, as
        // syscalls.toml says.
        shown: if processes {
            "clone"
        } else {
            "clone(CLONE_THREAD)"
        },
    }
}

fn socket_alt(family: i32, ty: i32, protocol: i32) -> Vec<Cond> {
    vec![
        Cond::eq(0, family as u32),
        Cond {
            arg: 1,
            mask: SOCK_TYPE_MASK,
            equals: ty as u32,
        },
        Cond::eq(2, protocol as u32),
    ]
}

/// `socket` as the network permission shapes it; `None` when no socket
/// may be made at all.
///
/// `connect`: TCP over IPv4 or IPv6, protocol 0 or IPPROTO_TCP only, since
/// Landlock's port rules cover TCP alone (an MPTCP socket would reach any
/// port). `host`: TCP and UDP over IPv4 and IPv6, local stream and
/// seqpacket sockets, and route netlink (address lookups); never raw,
/// packet, MPTCP, SCTP, vsock, crypto (AF_ALG) or other netlink families,
/// nor local datagram sockets (which can write to /dev/log and other
/// path-named host sockets).
pub fn socket_rule(rule: SocketRule) -> Option<ArgRule> {
    let (inet, inet6, unix, netlink) = (
        libc::AF_INET,
        libc::AF_INET6,
        libc::AF_UNIX,
        libc::AF_NETLINK,
    );
    let (stream, dgram, seqpacket, raw) = (
        libc::SOCK_STREAM,
        libc::SOCK_DGRAM,
        libc::SOCK_SEQPACKET,
        libc::SOCK_RAW,
    );
    let (tcp, udp) = (libc::IPPROTO_TCP, libc::IPPROTO_UDP);
    match rule {
        SocketRule::Deny => None,
        SocketRule::TcpOnly => Some(ArgRule {
            syscall: "socket",
            alternatives: [inet, inet6]
                .into_iter()
                .flat_map(|f| [socket_alt(f, stream, 0), socket_alt(f, stream, tcp)])
                .collect(),
            otherwise: Otherwise::Violation,
            shown: "socket(AF_INET|AF_INET6, SOCK_STREAM, 0|IPPROTO_TCP)",
        }),
        SocketRule::Any => {
            let mut alternatives: Vec<Vec<Cond>> = [inet, inet6]
                .into_iter()
                .flat_map(|f| {
                    [
                        socket_alt(f, stream, 0),
                        socket_alt(f, stream, tcp),
                        socket_alt(f, dgram, 0),
                        socket_alt(f, dgram, udp),
                    ]
                })
                .collect();
            alternatives.push(socket_alt(unix, stream, 0));
            alternatives.push(socket_alt(unix, seqpacket, 0));
            alternatives.push(socket_alt(netlink, raw, libc::NETLINK_ROUTE));
            alternatives.push(socket_alt(netlink, dgram, libc::NETLINK_ROUTE));
            Some(ArgRule {
                syscall: "socket",
                alternatives,
                otherwise: Otherwise::Violation,
                shown: "socket(AF_INET|AF_INET6 TCP or UDP; AF_UNIX SOCK_STREAM|SOCK_SEQPACKET; \
                        AF_NETLINK NETLINK_ROUTE)",
            })
        }
    }
}

/// The argument check of a system call a policy lists by name, if it has
/// one.
pub fn listed_rule(syscall: &str) -> Option<ArgRule> {
    let rule = match syscall {
        // A connected pair for local pipes: stream or seqpacket only. A
        // datagram end could `sendto` any path-named socket it can reach.
        "socketpair" => ArgRule {
            syscall: "socketpair",
            alternatives: vec![
                socket_alt(libc::AF_UNIX, libc::SOCK_STREAM, 0),
                socket_alt(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0),
            ],
            otherwise: Otherwise::Violation,
            shown: "socketpair(AF_UNIX, SOCK_STREAM|SOCK_SEQPACKET, 0)",
        },
        "ioctl" => ArgRule {
            syscall: "ioctl",
            alternatives: IOCTL_REQUESTS
                .iter()
                .map(|(request, _)| vec![Cond::eq(1, *request)])
                .collect(),
            otherwise: Otherwise::Errno(libc::ENOTTY as u32),
            shown: "ioctl(FIONREAD|FIONBIO|FIOCLEX|FIONCLEX; others ENOTTY)",
        },
        "prctl" => ArgRule {
            syscall: "prctl",
            alternatives: PRCTL_OPTIONS
                .iter()
                .map(|(option, _)| vec![Cond::eq(0, *option)])
                .collect(),
            otherwise: Otherwise::Violation,
            shown: "prctl(options that act on the caller only)",
        },
        // Reading the persona, or asking for the plain Linux one; never
        // READ_IMPLIES_EXEC (every readable mapping executable) or
        // ADDR_NO_RANDOMIZE.
        "personality" => ArgRule {
            syscall: "personality",
            alternatives: vec![vec![Cond::eq(0, u32::MAX)], vec![Cond::eq(0, 0)]],
            otherwise: Otherwise::Violation,
            shown: "personality(0xffffffff|PER_LINUX)",
        },
        // Nothing writable is executable: no executable anonymous memory,
        // and no making memory executable afterwards. Files are mapped
        // executable by the loader with their own protections.
        "mmap" => ArgRule {
            syscall: "mmap",
            alternatives: vec![
                vec![Cond::clear(2, libc::PROT_EXEC as u32)],
                vec![Cond::clear(3, libc::MAP_ANONYMOUS as u32)],
            ],
            otherwise: Otherwise::Violation,
            shown: "mmap(no PROT_EXEC with MAP_ANONYMOUS)",
        },
        "mprotect" => ArgRule {
            syscall: "mprotect",
            alternatives: vec![vec![Cond::clear(2, libc::PROT_EXEC as u32)]],
            otherwise: Otherwise::Violation,
            shown: "mprotect(no PROT_EXEC)",
        },
        "memfd_create" => ArgRule {
            syscall: "memfd_create",
            alternatives: vec![vec![
                Cond::set(1, MFD_NOEXEC_SEAL),
                Cond::clear(1, MFD_EXEC),
            ]],
            otherwise: Otherwise::Violation,
            shown: "memfd_create(MFD_NOEXEC_SEAL)",
        },
        _ => return None,
    };
    Some(rule)
}

fn name_of(table: &[(u32, &'static str)], value: u32) -> Option<&'static str> {
    table.iter().find(|(v, _)| *v == value).map(|(_, n)| *n)
}

fn family_name(family: u32) -> String {
    let known: &[(i32, &str)] = &[
        (libc::AF_UNIX, "AF_UNIX"),
        (libc::AF_INET, "AF_INET"),
        (libc::AF_INET6, "AF_INET6"),
        (libc::AF_NETLINK, "AF_NETLINK"),
        (libc::AF_PACKET, "AF_PACKET"),
        (libc::AF_ALG, "AF_ALG"),
        (40, "AF_VSOCK"),
        (libc::AF_BLUETOOTH, "AF_BLUETOOTH"),
        (libc::AF_KEY, "AF_KEY"),
        (libc::AF_CAN, "AF_CAN"),
        (libc::AF_TIPC, "AF_TIPC"),
        (libc::AF_RDS, "AF_RDS"),
        (44, "AF_XDP"),
    ];
    known
        .iter()
        .find(|(f, _)| *f as u32 == family)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| family.to_string())
}

fn type_name(ty: u32) -> String {
    let base = ty & 0xF;
    let mut name = match base as i32 {
        libc::SOCK_STREAM => "SOCK_STREAM".to_string(),
        libc::SOCK_DGRAM => "SOCK_DGRAM".to_string(),
        libc::SOCK_RAW => "SOCK_RAW".to_string(),
        libc::SOCK_SEQPACKET => "SOCK_SEQPACKET".to_string(),
        10 => "SOCK_PACKET".to_string(),
        libc::SOCK_RDM => "SOCK_RDM".to_string(),
        other => other.to_string(),
    };
    if ty & libc::SOCK_CLOEXEC as u32 != 0 {
        name.push_str("|SOCK_CLOEXEC");
    }
    if ty & libc::SOCK_NONBLOCK as u32 != 0 {
        name.push_str("|SOCK_NONBLOCK");
    }
    let rest = ty & !(0xF | (libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) as u32);
    if rest != 0 {
        name.push_str(&format!("|{rest:#x}"));
    }
    name
}

fn protocol_name(family: u32, protocol: u32) -> String {
    let named = match (family as i32, protocol as i32) {
        (_, 0) => Some("0"),
        (libc::AF_INET | libc::AF_INET6, libc::IPPROTO_TCP) => Some("IPPROTO_TCP"),
        (libc::AF_INET | libc::AF_INET6, libc::IPPROTO_UDP) => Some("IPPROTO_UDP"),
        (libc::AF_INET | libc::AF_INET6, libc::IPPROTO_MPTCP) => Some("IPPROTO_MPTCP"),
        (libc::AF_INET | libc::AF_INET6, libc::IPPROTO_SCTP) => Some("IPPROTO_SCTP"),
        (libc::AF_INET | libc::AF_INET6, libc::IPPROTO_ICMP) => Some("IPPROTO_ICMP"),
        (libc::AF_INET | libc::AF_INET6, libc::IPPROTO_UDPLITE) => Some("IPPROTO_UDPLITE"),
        _ => None,
    };
    named
        .map(str::to_string)
        .unwrap_or_else(|| protocol.to_string())
}

fn clone_flags(flags: u32) -> String {
    let names: &[(i32, &str)] = &[
        (libc::CLONE_NEWNS, "CLONE_NEWNS"),
        (libc::CLONE_NEWCGROUP, "CLONE_NEWCGROUP"),
        (libc::CLONE_NEWUTS, "CLONE_NEWUTS"),
        (libc::CLONE_NEWIPC, "CLONE_NEWIPC"),
        (libc::CLONE_NEWUSER, "CLONE_NEWUSER"),
        (libc::CLONE_NEWPID, "CLONE_NEWPID"),
        (libc::CLONE_NEWNET, "CLONE_NEWNET"),
        (libc::CLONE_THREAD, "CLONE_THREAD"),
        (libc::CLONE_VM, "CLONE_VM"),
        (libc::CLONE_VFORK, "CLONE_VFORK"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| flags & *bit as u32 != 0)
        .map(|(_, n)| *n)
        .collect();
    if set.is_empty() {
        format!("flags={flags:#x}")
    } else {
        format!("flags={flags:#x} ({})", set.join("|"))
    }
}

/// The arguments of a denied call that its check looked at, decoded, e.g.
/// `family=AF_INET type=SOCK_STREAM protocol=IPPROTO_MPTCP`; `None` for a
/// call denied by number alone.
pub fn describe_arguments(syscall: &str, args: &[u64; 6]) -> Option<String> {
    let low = |i: usize| args[i] as u32;
    Some(match syscall {
        "socket" | "socketpair" => format!(
            "family={} type={} protocol={}",
            family_name(low(0)),
            type_name(low(1)),
            protocol_name(low(0), low(2))
        ),
        "clone" => clone_flags(low(0)),
        "ioctl" => format!("request={:#x}", low(1)),
        "prctl" => match name_of(PRCTL_OPTIONS, low(0)) {
            Some(name) => format!("option={name}"),
            None => format!("option={}", low(0)),
        },
        "personality" => format!("persona={:#x}", low(0)),
        "mmap" => format!("prot={:#x} flags={:#x}", low(2), low(3)),
        "mprotect" => format!("prot={:#x}", low(2)),
        "memfd_create" => format!("flags={:#x}", low(1)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_arguments_are_named() {
        let mptcp = [
            libc::AF_INET as u64,
            (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64,
            libc::IPPROTO_MPTCP as u64,
            0,
            0,
            0,
        ];
        assert_eq!(
            describe_arguments("socket", &mptcp).as_deref(),
            Some("family=AF_INET type=SOCK_STREAM|SOCK_CLOEXEC protocol=IPPROTO_MPTCP")
        );
        let newuser = [(libc::CLONE_NEWUSER | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0];
        assert!(
            describe_arguments("clone", &newuser)
                .expect("clone")
                .contains("CLONE_NEWUSER")
        );
        assert_eq!(describe_arguments("ptrace", &[0; 6]), None);
    }

    #[test]
    fn every_listed_rule_fits_a_conditional_jump() {
        for name in [
            "socketpair",
            "ioctl",
            "prctl",
            "personality",
            "mmap",
            "mprotect",
            "memfd_create",
        ] {
            let rule = listed_rule(name).expect(name);
            assert_eq!(rule.syscall, name);
            for alt in &rule.alternatives {
                assert!(alt.len() * 3 < 255, "{name}");
            }
        }
        assert!(listed_rule("read").is_none());
    }
}
