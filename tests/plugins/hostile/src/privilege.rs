//! Privilege attacks: mounting, new namespaces, changing uid, chroot,
//! loading a kernel module, raising a hard rlimit.

use crate::attempt::{Attempt, c_path};
use serde::Deserialize;
use std::io;

#[derive(Deserialize, Default)]
pub struct MountInput {
    /// Where to mount a tmpfs (default `/tmp`).
    pub target: Option<String>,
}

pub fn mount(input: Option<MountInput>) -> Attempt {
    let target = input
        .unwrap_or_default()
        .target
        .unwrap_or_else(|| "/tmp".into());
    let attempted = format!("mount(\"none\", {target:?}, \"tmpfs\", 0, NULL)");
    let ctarget = match c_path(&target) {
        Ok(t) => t,
        Err(e) => return Attempt::failed(attempted, &e),
    };
    // SAFETY: valid C strings and a null data pointer.
    let ret = unsafe {
        libc::mount(
            c"none".as_ptr(),
            ctarget.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    let attempt = Attempt::from_ret(attempted, ret.into());
    if ret == 0 {
        // SAFETY: undoing the mount made above.
        unsafe { libc::umount2(ctarget.as_ptr(), libc::MNT_DETACH) };
    }
    attempt
}

/// Namespace flags by name, or as the raw `CLONE_*` bits.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Flags {
    Bits(i32),
    Names(Vec<String>),
}

#[derive(Deserialize, Default)]
pub struct UnshareInput {
    /// Default: every namespace kind.
    pub flags: Option<Flags>,
}

const NAMESPACES: &[(&str, i32)] = &[
    ("user", libc::CLONE_NEWUSER),
    ("mount", libc::CLONE_NEWNS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("time", libc::CLONE_NEWTIME),
];

pub fn unshare(input: Option<UnshareInput>) -> Result<Attempt, corral_sdk::Error> {
    let flags = match input.unwrap_or_default().flags {
        None => NAMESPACES.iter().fold(0, |acc, (_, bit)| acc | bit),
        Some(Flags::Bits(bits)) => bits,
        Some(Flags::Names(names)) => {
            let mut bits = 0;
            for name in names {
                let bit = NAMESPACES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, b)| *b)
                    .ok_or_else(|| {
                        corral_sdk::Error::invalid_input(format!(
                            "unknown namespace `{name}`: use user, mount, net, pid, ipc, uts, cgroup or time"
                        ))
                    })?;
                bits |= bit;
            }
            bits
        }
    };
    let names: Vec<&str> = NAMESPACES
        .iter()
        .filter(|(_, b)| flags & b != 0)
        .map(|(n, _)| *n)
        .collect();
    // SAFETY: unshare(2) takes an integer.
    let ret = unsafe { libc::unshare(flags) };
    Ok(Attempt::from_ret(
        format!("unshare({:#x}: {})", flags, names.join("|")),
        ret.into(),
    ))
}

#[derive(Deserialize, Default)]
pub struct SetuidInput {
    #[serde(default)]
    pub uid: u32,
}

pub fn setuid(input: Option<SetuidInput>) -> Attempt {
    let uid = input.unwrap_or_default().uid;
    // SAFETY: setuid(2) takes an integer.
    let ret = unsafe { libc::setuid(uid) };
    // SAFETY: getuid cannot fail.
    let now = unsafe { libc::getuid() };
    let attempt = Attempt::from_ret(format!("setuid({uid})"), ret.into());
    let detail = format!("{}; uid is now {now}", attempt.detail);
    attempt.with_detail(detail)
}

#[derive(Deserialize, Default)]
pub struct ChrootInput {
    pub path: Option<String>,
}

pub fn chroot(input: Option<ChrootInput>) -> Attempt {
    let path = input
        .unwrap_or_default()
        .path
        .unwrap_or_else(|| "/tmp".into());
    let attempted = format!("chroot({path:?})");
    match c_path(&path) {
        // SAFETY: a valid C string.
        Ok(p) => Attempt::from_ret(attempted, unsafe { libc::chroot(p.as_ptr()) }.into()),
        Err(e) => Attempt::failed(attempted, &e),
    }
}

/// init_module with a bogus image: without CAP_SYS_MODULE the kernel says
/// EPERM before it looks at the image (or seccomp kills the process).
pub fn init_module() -> Attempt {
    let image = [0u8; 64];
    // SAFETY: a valid buffer and an empty parameter string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            image.as_ptr(),
            image.len(),
            c"".as_ptr(),
        )
    };
    Attempt::from_ret("init_module(<64 zero bytes>, 64, \"\")", ret)
}

#[derive(Deserialize, Default)]
pub struct RlimitInput {
    /// `nofile` (default), `nproc`, `as`, `fsize`, `core`, `cpu`,
    /// `memlock`, `stack` or `data`.
    pub resource: Option<String>,
}

/// Raises the hard limit above its current value: needs CAP_SYS_RESOURCE.
pub fn raise_rlimit(input: Option<RlimitInput>) -> Result<Attempt, corral_sdk::Error> {
    let name = input
        .unwrap_or_default()
        .resource
        .unwrap_or_else(|| "nofile".into());
    let resource = match name.as_str() {
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "as" => libc::RLIMIT_AS,
        "fsize" => libc::RLIMIT_FSIZE,
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "stack" => libc::RLIMIT_STACK,
        "data" => libc::RLIMIT_DATA,
        other => {
            return Err(corral_sdk::Error::invalid_input(format!(
                "unknown resource `{other}`: use nofile, nproc, as, fsize, core, cpu, memlock, stack or data"
            )));
        }
    };
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: old is valid for writing.
    if unsafe { libc::getrlimit(resource, &mut old) } != 0 {
        return Ok(Attempt::failed(
            format!("getrlimit({name})"),
            &io::Error::last_os_error(),
        ));
    }
    let attempted = format!("setrlimit({name}) above the hard limit {}", old.rlim_max);
    if old.rlim_max == libc::RLIM_INFINITY {
        return Ok(Attempt::succeeded(
            attempted,
            "the hard limit is already unlimited: nothing to raise",
        ));
    }
    let raised = libc::rlimit {
        rlim_cur: old.rlim_max + 1,
        rlim_max: old.rlim_max + 1,
    };
    // SAFETY: raised is a valid rlimit.
    let ret = unsafe { libc::setrlimit(resource, &raised) };
    let attempt = Attempt::from_ret(attempted, ret.into());
    let detail = format!(
        "{} (soft {}, hard {} -> {})",
        attempt.detail, old.rlim_cur, old.rlim_max, raised.rlim_max
    );
    Ok(attempt.with_detail(detail))
}
