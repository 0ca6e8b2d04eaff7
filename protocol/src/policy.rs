//! The compiled sandbox policy: what one plugin instance runs under, after
//! its manifest has been checked against the operator's policy.
//!
//! [`SandboxPolicy`] is what `corral policy show` prints and the API
//! returns. Its [`Confinement`] part is what the supervisor sends to the
//! trampoline (`corral-sandbox`) over the channel before the plugin runs;
//! the rest (cgroup limits, timeouts, restart policy) the supervisor
//! applies itself.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where a kernel feature the policy relies on is missing: fail the load,
/// or run without it and log a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    Required,
    BestEffort,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxPolicy {
    pub plugin: String,
    pub version: String,
    pub confinement: Confinement,
    pub resources: ResourceLimits,
    pub timeouts: Timeouts,
    pub restart: RestartPolicy,
    /// Largest frame either side may send.
    pub max_frame: u32,
    /// Children kept running for this plugin.
    pub instances: u32,
    /// Unix groups (or `uid:N`) allowed to call the plugin; `None` means
    /// whoever the daemon-wide caller rule admits.
    pub allowed_callers: Option<Vec<String>>,
    /// The method a call that names none is served by (the manifest's
    /// `default_method`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_method: Option<String>,
    /// The host services it may use (`crate::services`).
    #[serde(default)]
    pub services: crate::services::ServiceGrants,
    /// Methods the manifest marks idempotent: retried after `crashed` or
    /// `timeout` under the policy's retry rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub idempotent: Vec<String>,
    /// Where each rule came from, in the order the compiler applied them.
    pub provenance: Vec<Provenance>,
    /// Features the kernel lacks that the policy marked `best_effort`.
    pub warnings: Vec<String>,
}

/// One line of "why": a rule, its value, and the file and key it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub rule: String,
    pub value: String,
    pub source: String,
}

/// Everything the trampoline needs to confine itself and exec the plugin.
/// The trampoline applies: fds, namespaces (join), mounts, credentials,
/// user namespace, rlimits, parent-death signal, no_new_privs, Landlock,
/// seccomp, then exec (`corral-sandbox`'s docs give the reasons).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confinement {
    /// Absolute path of the executable to run.
    pub entry: String,
    pub argv: Vec<String>,
    /// The complete environment; nothing else is inherited.
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    pub workdir: String,
    pub namespaces: Namespaces,
    pub mounts: Mounts,
    pub credentials: Credentials,
    pub rlimits: Vec<RlimitSpec>,
    /// Kill the plugin when the supervisor dies.
    pub die_with_parent: bool,
    pub landlock: Option<LandlockSpec>,
    pub seccomp: Option<SeccompProgram>,
}

/// How each namespace is provided. `pid` and `mount` are created by the
/// supervisor when it clones the trampoline (they cannot be entered later);
/// `net`, `ipc` and `uts` are either created at clone time or joined from a
/// pre-made empty namespace whose fd the trampoline inherits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    /// A user namespace mapping only the plugin's uid/gid, created by the
    /// trampoline after it drops to that uid.
    pub user: bool,
    pub pid: bool,
    pub mount: bool,
    pub net: NamespaceSource,
    pub ipc: NamespaceSource,
    pub uts: NamespaceSource,
    /// A new cgroup namespace, made by the trampoline once the supervisor
    /// has put it in the plugin's cgroup, so that `/proc/self/cgroup`
    /// shows `/` and not the host's cgroup tree.
    #[serde(default)]
    pub cgroup: bool,
    /// Set `vm.memfd_noexec = 2` in the plugin's pid namespace (Linux
    /// 6.3): no memfd can ever be executed, so code written to memory
    /// cannot be run as a new program image.
    #[serde(default)]
    pub memfd_noexec: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceSource {
    /// Share the host's.
    Host,
    /// A new one, created when the trampoline is cloned.
    Fresh,
    /// Join the namespace open on this fd in the trampoline (setns).
    Join { fd: i32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mounts {
    /// Mount a fresh /proc for the plugin's pid namespace.
    pub proc: bool,
    /// Private writable scratch space (tmpfs), the plugin's only writable
    /// place unless fs.write grants more.
    pub scratch: Option<TmpfsSpec>,
    /// Host paths shown at other paths inside the sandbox (the operator's
    /// `remap`), mounted after the scratch space, parents before children.
    #[serde(default)]
    pub remaps: Vec<Remap>,
    /// When set, the plugin's `/` is a fresh read-only tmpfs holding only
    /// these host paths, /proc, the scratch space and the remaps; the
    /// trampoline pivots into it and detaches the host's tree, so nothing
    /// else of the host can be named, stat'ed or watched. When unset, the
    /// plugin sees the host's tree and Landlock alone rules access.
    #[serde(default)]
    pub root: Option<MinimalRoot>,
}

/// The host paths shown in a minimal root, each at its own path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinimalRoot {
    pub paths: Vec<RootPath>,
}

/// One host path in the minimal root: bind-mounted at the same path
/// (symlinks followed), read-only unless `writable`, never setuid, and
/// executable only when `exec`. A character device (`/dev/null`) is made
/// afresh as a node of the same kind instead, so that its host inode is
/// out of reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootPath {
    pub path: String,
    pub writable: bool,
    pub exec: bool,
}

/// A bind mount of host path `source` at `target` in the plugin's mount
/// namespace. A target beneath the scratch mount point gets its mount
/// point made there; any other target must already exist on the host, as
/// the same kind of file as the source (nothing is created on the host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remap {
    pub source: String,
    pub target: String,
    /// Read-write when the plugin is granted writing beneath the target;
    /// read-only otherwise.
    pub writable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsSpec {
    pub path: String,
    /// Above 0 (tmpfs reads 0 as unlimited, so the trampoline refuses it).
    pub size_bytes: u64,
    /// Maximum inodes, bounding file-count floods; above 0.
    pub inodes: u64,
    /// Host paths beneath `path` that must stay visible inside (the
    /// plugin's own package, granted paths): bind-mounted back over the
    /// fresh tmpfs at the same place.
    pub keep: Vec<KeptPath>,
}

/// A host path kept visible under the scratch mount point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptPath {
    pub path: String,
    /// Mounted read-write (a granted `fs.write` path); read-only otherwise.
    pub writable: bool,
}

/// The plugin's uid and gid: never 0 (root) and never `u32::MAX` (the
/// kernel's "no id"); the trampoline refuses both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rlimit {
    Nofile,
    Nproc,
    Core,
    Fsize,
    Memlock,
    Msgqueue,
    Stack,
    Nice,
    Rtprio,
    Rttime,
    Sigpending,
    Cpu,
    As,
    Data,
}

impl Rlimit {
    pub fn name(self) -> &'static str {
        match self {
            Rlimit::Nofile => "RLIMIT_NOFILE",
            Rlimit::Nproc => "RLIMIT_NPROC",
            Rlimit::Core => "RLIMIT_CORE",
            Rlimit::Fsize => "RLIMIT_FSIZE",
            Rlimit::Memlock => "RLIMIT_MEMLOCK",
            Rlimit::Msgqueue => "RLIMIT_MSGQUEUE",
            Rlimit::Stack => "RLIMIT_STACK",
            Rlimit::Nice => "RLIMIT_NICE",
            Rlimit::Rtprio => "RLIMIT_RTPRIO",
            Rlimit::Rttime => "RLIMIT_RTTIME",
            Rlimit::Sigpending => "RLIMIT_SIGPENDING",
            Rlimit::Cpu => "RLIMIT_CPU",
            Rlimit::As => "RLIMIT_AS",
            Rlimit::Data => "RLIMIT_DATA",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RlimitSpec {
    pub resource: Rlimit,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockSpec {
    /// Filesystem rules; everything not listed is denied.
    pub fs: Vec<FsRule>,
    /// When set, TCP connect is confined to these ports (Landlock ABI 4).
    pub tcp_connect: Option<Vec<u16>>,
    /// When set, TCP bind is confined to these ports (empty: no bind).
    pub tcp_bind: Option<Vec<u16>>,
    /// Deny signals to processes outside the sandbox (ABI 6).
    pub scope_signals: bool,
    /// Deny connecting to abstract Unix sockets outside the sandbox (ABI 6).
    pub scope_abstract_unix: bool,
    /// `Required` fails the start unless the kernel enforces the
    /// filesystem rules at Landlock ABI 3 or later (refer and truncate).
    pub fs_requirement: Requirement,
    /// `Required` fails the start without ABI 4 (TCP port rules).
    pub net_requirement: Requirement,
    /// `Required` fails the start without ABI 6 (scopes).
    pub scope_requirement: Requirement,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsRule {
    pub path: String,
    pub access: FsAccess,
}

/// Access granted beneath a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsAccess {
    /// Read files and list directories.
    Read,
    /// Read, and execute files.
    ReadExec,
    /// Read, create, write, rename, remove and truncate; not execute (a
    /// plugin must not run what it wrote). Grant `read_exec` on the same
    /// path for both.
    ReadWrite,
}

impl FsAccess {
    /// The name used in policy output, matching the JSON form.
    pub fn name(self) -> &'static str {
        match self {
            FsAccess::Read => "read",
            FsAccess::ReadExec => "read_exec",
            FsAccess::ReadWrite => "read_write",
        }
    }
}

/// A compiled classic-BPF seccomp program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompProgram {
    /// Instructions in kernel order.
    pub instructions: Vec<BpfInstruction>,
    /// Names of allowed syscalls, for display only.
    pub allowed: Vec<String>,
    /// Set when the program refers refused calls to the supervisor
    /// (`SECCOMP_RET_USER_NOTIF`) instead of deciding them itself.
    pub notify: Option<SeccompNotify>,
}

/// How refused system calls reach the supervisor: the trampoline installs
/// the filter with `SECCOMP_FILTER_FLAG_NEW_LISTENER` and hands the
/// listener over the channel before the plugin runs (PROTOCOL.md, "System
/// calls").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompNotify {
    /// What the supervisor does with a refused call.
    pub action: SeccompAction,
    /// The `SECCOMP_RET_*` value every `SECCOMP_RET_USER_NOTIF` return of
    /// the program becomes where the kernel will not create a listener
    /// (before 5.0, or under a filter that already has one): the kill or
    /// errno the action stands for.
    pub fallback: u32,
}

/// The supervisor's answer to a refused system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompAction {
    /// Kill the plugin; its death is `seccomp_violation` naming the call.
    Kill,
    /// Fail the call with this errno and let the plugin go on.
    Errno { errno: i32 },
    /// Learning mode (`corral learn`, operators only): record the call and
    /// let it proceed. Never compiled from a manifest or policy file.
    Learn,
}

/// The first four bytes the trampoline writes on the channel after
/// installing a filter with `notify`, in place of a frame length (no frame
/// is this long): the listener fd rides with them as `SCM_RIGHTS`.
pub const SECCOMP_LISTENER_ATTACHED: u32 = 0xFFFF_FF5A;
/// As [`SECCOMP_LISTENER_ATTACHED`] when no listener could be made and the
/// fallback returns are installed instead.
pub const SECCOMP_LISTENER_NONE: u32 = 0xFFFF_FF50;

/// One `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfInstruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// Limits the supervisor applies through the plugin's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    pub memory_max: Option<u64>,
    /// Swap on top of `memory_max`; 0 forbids swapping.
    pub swap_max: Option<u64>,
    pub pids_max: Option<u64>,
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: u64,
    pub memory_requirement: Option<Requirement>,
    pub swap_requirement: Option<Requirement>,
    pub pids_requirement: Option<Requirement>,
    pub cpu_requirement: Option<Requirement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// Per call.
    #[serde(with = "duration_ms")]
    pub call: Duration,
    /// From spawn to Ready.
    #[serde(with = "duration_ms")]
    pub start: Duration,
    /// After Cancel (or Shutdown) before the child is killed.
    #[serde(with = "duration_ms")]
    pub grace: Duration,
    /// Ping interval while idle; a missed Pong within the same interval
    /// counts as a hang.
    #[serde(with = "duration_ms")]
    pub heartbeat: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    #[serde(with = "duration_ms")]
    pub backoff_initial: Duration,
    #[serde(with = "duration_ms")]
    pub backoff_max: Duration,
    /// Fraction of the delay randomised, 0.0 to 1.0.
    pub jitter: f64,
    /// This many failures within `crash_loop_window` quarantine the plugin.
    pub crash_loop_failures: u32,
    #[serde(with = "duration_ms")]
    pub crash_loop_window: Duration,
}

/// Durations as integer milliseconds, readable in JSON and compact in
/// bincode.
pub mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
