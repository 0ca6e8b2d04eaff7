//! Step `mounts`, with a minimal root: the plugin's `/` becomes a fresh
//! tmpfs holding only what its policy grants, and the host's tree is
//! detached, the way bubblewrap and nsjail build theirs.
//!
//! Landlock decides what the plugin may open, but a path it may not open
//! can still be named: stat, readlink, `user.*` xattrs, inotify and
//! `utimensat` work on host paths without Landlock asking, `sendto` reaches
//! any path-named socket, and /proc/self/mountinfo lists the host's mount
//! table. In a root that holds only the granted paths there is nothing else
//! to name. Landlock stays on top, as the rule for what is readable.
//!
//! The order:
//!
//! 1. Open (O_PATH) every host path to show and every remap source while
//!    the host's tree is still there, so that nothing mounted later (the
//!    staging tmpfs, the scratch) can hide one of them.
//! 2. Mount the new root, a small tmpfs, on a staging directory of the
//!    host's tree (only this private mount namespace sees it).
//! 3. Fill it, parents before children: bind mounts of the host paths
//!    (read-only unless granted for writing, `noexec` unless they hold the
//!    package or the loader, never setuid), character devices made afresh
//!    with the host's device numbers (the host's /dev/null inode stays out
//!    of reach), a fresh /proc for the pid namespace, the scratch tmpfs
//!    (`noexec`), and the operator's remaps. Mount points are made inside
//!    the new root only.
//! 4. `pivot_root` into it and detach the old root (`MNT_DETACH`), then
//!    remount `/` read-only: the plugin can create nothing outside its
//!    scratch and granted paths.

use crate::error::{SandboxError, Step};
use crate::mounts::{bind, mount_scratch, open_remap_sources};
use corral_protocol::policy::{Credentials, MinimalRoot, Mounts};
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// Where the new root is assembled: a directory every Linux host has, in
/// a mount namespace only the plugin will ever use.
pub const STAGING: &str = "/tmp";

/// Size of the root tmpfs: it holds only directories, empty mount points
/// and device nodes.
const ROOT_TMPFS: &str = "size=1m,nr_inodes=4096,mode=0755";

/// One thing to put in the new root.
enum Entry {
    Bind {
        fd: OwnedFd,
        writable: bool,
        exec: bool,
    },
    /// A character device node with the host's numbers and mode bits.
    Device {
        rdev: libc::dev_t,
        perm: u32,
    },
    Proc,
    Scratch,
}

pub fn build(mounts: &Mounts, root: &MinimalRoot, creds: &Credentials) -> Result<(), SandboxError> {
    let mut entries = open_entries(mounts, root)?;
    // Parents first: a path's components sort before its children's, so a
    // bind of /usr never covers the /usr/lib mounted beneath it.
    entries.sort_by(|(a, _), (b, _)| a.components().cmp(b.components()));
    // Mount points and device nodes get exactly the modes asked for.
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    mount(
        Some("tmpfs"),
        STAGING,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some(ROOT_TMPFS),
    )
    .map_err(|e| {
        SandboxError::sys(
            Step::Mounts,
            e,
            format_args!("mount the new root's tmpfs on {STAGING}"),
        )
    })?;
    for (path, entry) in &entries {
        let at = inside(path);
        place(mounts, creds, path, &at, entry)?;
    }
    drop(entries);
    enter(STAGING)
}

/// Step 1: every host path opened, every target checked.
fn open_entries(
    mounts: &Mounts,
    root: &MinimalRoot,
) -> Result<Vec<(PathBuf, Entry)>, SandboxError> {
    let mut entries = Vec::with_capacity(root.paths.len() + mounts.remaps.len() + 2);
    for p in &root.paths {
        let path = plugin_path(&p.path)?;
        let fd = nix::fcntl::open(&path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(
            |e| {
                SandboxError::sys(
                    Step::Mounts,
                    e,
                    format_args!("open {} to show it in the plugin's root", p.path),
                )
            },
        )?;
        let st = nix::sys::stat::fstat(fd.as_fd())
            .map_err(|e| SandboxError::sys(Step::Mounts, e, format_args!("stat {}", p.path)))?;
        let entry = if st.st_mode & libc::S_IFMT == libc::S_IFCHR {
            Entry::Device {
                rdev: st.st_rdev,
                perm: st.st_mode & 0o777,
            }
        } else {
            Entry::Bind {
                fd,
                writable: p.writable,
                exec: p.exec && !p.writable,
            }
        };
        entries.push((path, entry));
    }
    for (fd, remap) in open_remap_sources(&mounts.remaps)? {
        entries.push((
            plugin_path(&remap.target)?,
            Entry::Bind {
                fd,
                writable: remap.writable,
                exec: !remap.writable,
            },
        ));
    }
    if mounts.proc {
        entries.push((PathBuf::from("/proc"), Entry::Proc));
    }
    if let Some(scratch) = &mounts.scratch {
        entries.push((plugin_path(&scratch.path)?, Entry::Scratch));
    }
    Ok(entries)
}

/// An absolute path without `.`, `..` or a trailing `/` alone, as the
/// plugin will see it.
fn plugin_path(path: &str) -> Result<PathBuf, SandboxError> {
    let p = Path::new(path);
    let plain = p.is_absolute()
        && p.components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)))
        && p.components().count() > 1;
    if !plain {
        return Err(SandboxError::new(
            Step::Mounts,
            format!(
                "{path:?} is not an absolute path below / without . or .. in the plugin's root"
            ),
        ));
    }
    Ok(p.to_path_buf())
}

/// Where `path` of the plugin's view is while the root is being built.
fn inside(path: &Path) -> PathBuf {
    let rest = path.strip_prefix("/").unwrap_or(path);
    Path::new(STAGING).join(rest)
}

/// Step 3, for one entry.
fn place(
    mounts: &Mounts,
    creds: &Credentials,
    path: &Path,
    at: &Path,
    entry: &Entry,
) -> Result<(), SandboxError> {
    match entry {
        Entry::Bind { fd, writable, exec } => bind(fd, at, *writable, *exec, true),
        Entry::Device { rdev, perm } => make_device(path, at, *rdev, *perm),
        Entry::Proc => {
            make_dir(path, at)?;
            mount(
                Some("proc"),
                at,
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(|e| SandboxError::sys(Step::Mounts, e, "mount a new proc on /proc"))
        }
        Entry::Scratch => {
            make_dir(path, at)?;
            match &mounts.scratch {
                Some(scratch) => mount_scratch(scratch, at, creds),
                None => Ok(()),
            }
        }
    }
}

fn make_dir(path: &Path, at: &Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(at).map_err(|e| {
        SandboxError::io(
            Step::Mounts,
            &e,
            format_args!("make {} in the plugin's root", path.display()),
        )
    })
}

/// A fresh device node: the same driver as the host's, not the host's
/// inode, so its times and owner are the sandbox's own.
fn make_device(path: &Path, at: &Path, rdev: libc::dev_t, perm: u32) -> Result<(), SandboxError> {
    if let Some(parent) = at.parent() {
        make_dir(path, parent)?;
    }
    let mode = Mode::from_bits_truncate(perm);
    nix::sys::stat::mknod(at, SFlag::S_IFCHR, mode, rdev)
        .and_then(|()| {
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                at,
                mode,
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
        })
        .map_err(|e| {
            SandboxError::sys(
                Step::Mounts,
                e,
                format_args!("make the device {} in the plugin's root", path.display()),
            )
        })
}

/// Step 4: the staged tree becomes `/`, the host's tree is detached, and
/// `/` is made read-only.
fn enter(new_root: &str) -> Result<(), SandboxError> {
    nix::unistd::chdir(new_root).map_err(|e| {
        SandboxError::sys(
            Step::Mounts,
            e,
            format_args!("chdir to the new root {new_root}"),
        )
    })?;
    // pivot_root(".", "."): the old root is stacked on top of the new one
    // at "/", so unmounting "." detaches it without a directory for it.
    nix::unistd::pivot_root(".", ".")
        .map_err(|e| SandboxError::sys(Step::Mounts, e, "pivot_root into the new root"))?;
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| SandboxError::sys(Step::Mounts, e, "detach the host's root"))?;
    nix::unistd::chdir("/")
        .map_err(|e| SandboxError::sys(Step::Mounts, e, "chdir to the new /"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| SandboxError::sys(Step::Mounts, e, "remount the new / read-only"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_paths_must_be_plain_and_absolute() {
        for bad in ["", "/", "relative", "/a/../b"] {
            assert!(plugin_path(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            plugin_path("/usr/lib").expect("plain"),
            Path::new("/usr/lib")
        );
    }

    #[test]
    fn staged_paths_stay_under_the_staging_directory() {
        assert_eq!(inside(Path::new("/usr/lib")), Path::new("/tmp/usr/lib"));
        assert_eq!(inside(Path::new("/tmp")), Path::new("/tmp/tmp"));
    }
}
