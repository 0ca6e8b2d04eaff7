//! Step `landlock`: filesystem rules, TCP port rules and scopes.
//!
//! Every filesystem right the kernel knows is handled, so anything not
//! granted by a rule is denied (newer rights a kernel adds are denied by
//! default as well). Each part of the policy (fs, net, scopes) carries its
//! own requirement: `required` makes this step fail on a kernel that cannot
//! enforce that part; `best_effort` applies what the kernel supports and
//! prints a warning line on stderr (the supervisor logs it) for the rest.
//!
//! What "can enforce" means per part is the Landlock ABI that introduced
//! what the policy vocabulary relies on: ABI 3 for the filesystem
//! (`read_write` promises control over renames across directories, ABI 2,
//! and truncation, ABI 3), ABI 4 for TCP ports, ABI 6 for scopes.

use crate::error::{SandboxError, Step};
use ::landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, LandlockStatus, NetPort,
    PathBeneath, PathFd, RestrictionStatus, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError,
    RulesetStatus, Scope,
};
use corral_protocol::policy::{FsAccess, FsRule, LandlockSpec, Requirement};
use std::os::fd::AsFd;

/// The newest ABI this build knows; rights beyond the kernel's are dropped
/// by the crate (best effort), never guessed.
const BEST_ABI: ABI = ABI::V9;
/// Oldest ABI that enforces everything [`FsAccess`] promises.
pub const FS_REQUIRED_ABI: ABI = ABI::V3;
/// Oldest ABI with TCP port rules.
pub const NET_REQUIRED_ABI: ABI = ABI::V4;
/// Oldest ABI with signal and abstract-socket scoping.
pub const SCOPE_REQUIRED_ABI: ABI = ABI::V6;

/// The rights a rule grants beneath (or on) its path. A non-directory can
/// only carry the file rights: the kernel rejects directory rights on it.
pub fn fs_rights(access: FsAccess, is_dir: bool) -> BitFlags<AccessFs> {
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let rights = match access {
        FsAccess::Read => read,
        FsAccess::ReadExec => read | AccessFs::Execute,
        // Everything but two rights. Execute: a writable place is not an
        // executable one, or a plugin could download a program and run it;
        // a policy that wants both grants read_exec on the path as well.
        // Device ioctls: the scratch space holds no devices, and granted
        // device files (/dev/null) do not need them.
        FsAccess::ReadWrite => {
            AccessFs::from_all(BEST_ABI) & !(AccessFs::Execute | AccessFs::IoctlDev)
        }
    };
    if is_dir {
        rights
    } else {
        rights & AccessFs::from_file(BEST_ABI)
    }
}

/// The TCP rights the policy confines.
pub fn net_rights(spec: &LandlockSpec) -> BitFlags<AccessNet> {
    let mut rights = BitFlags::EMPTY;
    if spec.tcp_connect.is_some() {
        rights |= AccessNet::ConnectTcp;
    }
    if spec.tcp_bind.is_some() {
        rights |= AccessNet::BindTcp;
    }
    rights
}

pub fn scopes(spec: &LandlockSpec) -> BitFlags<Scope> {
    let mut scopes = BitFlags::EMPTY;
    if spec.scope_signals {
        scopes |= Scope::Signal;
    }
    if spec.scope_abstract_unix {
        scopes |= Scope::AbstractUnixSocket;
    }
    scopes
}

fn compat_level(requirement: Requirement) -> CompatLevel {
    match requirement {
        Requirement::Required => CompatLevel::HardRequirement,
        Requirement::BestEffort => CompatLevel::BestEffort,
    }
}

pub fn apply(spec: Option<&LandlockSpec>) -> Result<(), SandboxError> {
    let Some(spec) = spec else {
        return Ok(());
    };
    let status = restrict(spec)?;
    let abi = match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => effective_abi,
        LandlockStatus::NotEnabled | LandlockStatus::NotImplemented => ABI::Unsupported,
    };
    let any_required = [
        spec.fs_requirement,
        spec.net_requirement,
        spec.scope_requirement,
    ]
    .contains(&Requirement::Required);
    if status.ruleset == RulesetStatus::NotEnforced && any_required {
        // Hard requirements fail while building; this is a second guard.
        return Err(SandboxError::new(
            Step::Landlock,
            format!(
                "the Landlock ruleset is not enforced ({:?})",
                status.landlock
            ),
        ));
    }
    for line in best_effort_warnings(spec, abi) {
        eprintln!("corral-sandbox: warning: landlock: {line}");
    }
    Ok(())
}

/// What a best-effort policy asked for that a kernel with `abi` does not
/// enforce, one line each.
pub fn best_effort_warnings(spec: &LandlockSpec, abi: ABI) -> Vec<String> {
    let mut lines = Vec::new();
    let mut check = |wanted: bool, requirement: Requirement, needs: ABI, what: &str| {
        if wanted && requirement == Requirement::BestEffort && abi < needs {
            lines.push(format!(
                "{what} not fully enforced: the kernel's Landlock ABI is {abi}, {what} need ABI \
                 {needs}"
            ));
        }
    };
    check(
        true,
        spec.fs_requirement,
        FS_REQUIRED_ABI,
        "filesystem rules",
    );
    check(
        !net_rights(spec).is_empty(),
        spec.net_requirement,
        NET_REQUIRED_ABI,
        "TCP port rules",
    );
    check(
        !scopes(spec).is_empty(),
        spec.scope_requirement,
        SCOPE_REQUIRED_ABI,
        "signal and abstract socket scopes",
    );
    lines
}

fn restrict(spec: &LandlockSpec) -> Result<RestrictionStatus, SandboxError> {
    let err = |what: &str| {
        let what = what.to_owned();
        move |e: RulesetError| ruleset_error(e, &what)
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(compat_level(spec.fs_requirement))
        .handle_access(AccessFs::from_all(FS_REQUIRED_ABI))
        .map_err(err("handle the filesystem access rights"))?
        // Rights newer than the requirement: whatever this kernel has.
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(BEST_ABI))
        .map_err(err("handle the newer filesystem access rights"))?;
    let net = net_rights(spec);
    if !net.is_empty() {
        ruleset = ruleset
            .set_compatibility(compat_level(spec.net_requirement))
            .handle_access(net)
            .map_err(err("handle TCP connect/bind"))?;
    }
    let scopes = scopes(spec);
    if !scopes.is_empty() {
        ruleset = ruleset
            .set_compatibility(compat_level(spec.scope_requirement))
            .scope(scopes)
            .map_err(err("scope signals and abstract unix sockets"))?;
    }
    // Rules only ever narrow further what the handled rights deny; a
    // right a rule names that this kernel lacks is simply not granted.
    let mut created = ruleset
        .set_compatibility(CompatLevel::BestEffort)
        .create()
        .map_err(err("create the Landlock ruleset"))?;
    for rule in &spec.fs {
        created = created
            .add_rule(path_rule(rule)?)
            .map_err(err(&format!("add the rule for {}", rule.path)))?;
    }
    let ports = [
        (spec.tcp_connect.as_deref(), AccessNet::ConnectTcp),
        (spec.tcp_bind.as_deref(), AccessNet::BindTcp),
    ];
    for (list, right) in ports {
        for &port in list.unwrap_or_default() {
            created = created
                .add_rule(NetPort::new(port, right))
                .map_err(err(&format!("allow TCP port {port} ({right:?})")))?;
        }
    }
    created
        .restrict_self()
        .map_err(err("enforce the Landlock ruleset"))
}

fn path_rule(rule: &FsRule) -> Result<PathBeneath<PathFd>, SandboxError> {
    let fd = PathFd::new(&rule.path).map_err(|e| {
        let errno = errno_in_chain(&e);
        SandboxError {
            step: Step::Landlock,
            errno,
            message: format!(
                "rule path {} cannot be opened: {}",
                rule.path,
                std::io::Error::from_raw_os_error(errno)
            ),
        }
    })?;
    let stat = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| {
        SandboxError::sys(
            Step::Landlock,
            e,
            format_args!("stat rule path {}", rule.path),
        )
    })?;
    let is_dir = stat.st_mode & libc::S_IFMT == libc::S_IFDIR;
    Ok(PathBeneath::new(fd, fs_rights(rule.access, is_dir)))
}

fn ruleset_error(e: RulesetError, what: &str) -> SandboxError {
    SandboxError {
        step: Step::Landlock,
        errno: errno_in_chain(&e),
        message: format!("{what}: {e}"),
    }
}

/// The errno of the first `io::Error` in an error's source chain, 0 if none.
fn errno_in_chain(e: &(dyn std::error::Error + 'static)) -> i32 {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.raw_os_error().unwrap_or(0);
        }
        current = err.source();
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LandlockSpec {
        LandlockSpec {
            fs: vec![],
            tcp_connect: None,
            tcp_bind: None,
            scope_signals: false,
            scope_abstract_unix: false,
            fs_requirement: Requirement::BestEffort,
            net_requirement: Requirement::BestEffort,
            scope_requirement: Requirement::BestEffort,
        }
    }

    #[test]
    fn read_grants_reading_and_listing_only() {
        assert_eq!(
            fs_rights(FsAccess::Read, true),
            AccessFs::ReadFile | AccessFs::ReadDir
        );
        assert_eq!(fs_rights(FsAccess::Read, false), AccessFs::ReadFile);
    }

    #[test]
    fn read_exec_adds_execute() {
        assert_eq!(
            fs_rights(FsAccess::ReadExec, true),
            AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::Execute
        );
        assert_eq!(
            fs_rights(FsAccess::ReadExec, false),
            AccessFs::ReadFile | AccessFs::Execute
        );
    }

    #[test]
    fn read_write_is_everything_but_execute_and_device_ioctls() {
        let dir = fs_rights(FsAccess::ReadWrite, true);
        for right in [
            AccessFs::WriteFile,
            AccessFs::MakeReg,
            AccessFs::MakeDir,
            AccessFs::RemoveFile,
            AccessFs::RemoveDir,
            AccessFs::Refer,
            AccessFs::Truncate,
            AccessFs::ReadFile,
            AccessFs::ReadDir,
        ] {
            assert!(dir.contains(right), "{right:?} missing");
        }
        assert!(!dir.contains(AccessFs::IoctlDev));
        assert!(
            !dir.contains(AccessFs::Execute),
            "writable is not executable"
        );
        assert_eq!(
            dir | AccessFs::IoctlDev | AccessFs::Execute,
            AccessFs::from_all(BEST_ABI)
        );
    }

    #[test]
    fn read_write_on_a_file_keeps_only_file_rights() {
        let file = fs_rights(FsAccess::ReadWrite, false);
        assert!(file.contains(AccessFs::WriteFile | AccessFs::Truncate | AccessFs::ReadFile));
        assert!(!file.contains(AccessFs::Execute));
        assert!(!file.contains(AccessFs::MakeReg));
        assert!(!file.contains(AccessFs::RemoveFile));
        assert!(!file.contains(AccessFs::Refer));
        assert_eq!(file & !AccessFs::from_file(BEST_ABI), BitFlags::EMPTY);
    }

    #[test]
    fn net_and_scope_rights_follow_the_spec() {
        let mut s = spec();
        assert!(net_rights(&s).is_empty());
        assert!(scopes(&s).is_empty());
        s.tcp_connect = Some(vec![]);
        assert_eq!(net_rights(&s), AccessNet::ConnectTcp);
        s.tcp_bind = Some(vec![8080]);
        assert_eq!(net_rights(&s), AccessNet::ConnectTcp | AccessNet::BindTcp);
        s.scope_signals = true;
        assert_eq!(scopes(&s), Scope::Signal);
        s.scope_abstract_unix = true;
        assert_eq!(scopes(&s), Scope::Signal | Scope::AbstractUnixSocket);
    }

    #[test]
    fn best_effort_warns_about_each_part_an_old_kernel_lacks() {
        let mut s = spec();
        s.tcp_connect = Some(vec![443]);
        s.scope_signals = true;
        assert!(best_effort_warnings(&s, ABI::V6).is_empty());
        let v5 = best_effort_warnings(&s, ABI::V5);
        assert_eq!(v5.len(), 1, "{v5:?}");
        assert!(v5[0].contains("scopes"), "{v5:?}");
        assert_eq!(best_effort_warnings(&s, ABI::V3).len(), 2);
        let none = best_effort_warnings(&s, ABI::Unsupported);
        assert_eq!(none.len(), 3, "{none:?}");
        assert!(none[0].contains("filesystem"), "{none:?}");
    }

    #[test]
    fn required_parts_never_warn() {
        let mut s = spec();
        s.fs_requirement = Requirement::Required;
        s.tcp_bind = Some(vec![]);
        s.net_requirement = Requirement::Required;
        assert!(best_effort_warnings(&s, ABI::Unsupported).is_empty());
    }

    #[test]
    fn errno_is_found_below_wrappers() {
        let err = PathFd::new("/corral-test-no-such-path").expect_err("must not exist");
        assert_eq!(errno_in_chain(&err), libc::ENOENT);
    }
}
