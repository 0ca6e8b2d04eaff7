//! Step `mounts`: a private mount tree, a /proc for the plugin's pid
//! namespace, and its tmpfs scratch space. Host paths the plugin needs that
//! lie beneath the scratch mount point (its package in a checkout under
//! /tmp, say) are bind-mounted back over the tmpfs, read-only unless
//! granted for writing. Then the operator's remaps: host paths shown at
//! other paths, mount points made only inside the tmpfs, never on the host.
//!
//! With a minimal root in the policy, [`crate::root`] builds the plugin's
//! whole tree instead (the scratch, /proc and the remaps included), and
//! the host's tree is detached.
//!
//! Nothing writable is executable: the scratch tmpfs is `noexec`, and so
//! is every writable bind mount.
//!
//! Everything is mounted while still root of the initial user namespace:
//! proc and tmpfs mounts need it, and the user namespace created later
//! could not mount them. The mount namespace came from `clone` and was
//! checked by the `namespaces` step; this step also refuses to run without
//! one, so that a policy that forgot it cannot mount over the host's /proc.

use crate::error::{SandboxError, Step};
use corral_protocol::policy::{Credentials, KeptPath, Mounts, Namespaces, Remap, TmpfsSpec};
use nix::fcntl::OFlag;
use nix::mount::{MsFlags, mount};
use nix::sys::stat::Mode;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

pub fn apply(mounts: &Mounts, ns: &Namespaces, creds: &Credentials) -> Result<(), SandboxError> {
    let wants_mounts = mounts.proc || mounts.scratch.is_some() || !mounts.remaps.is_empty();
    if !ns.mount {
        if wants_mounts {
            return Err(SandboxError::new(
                Step::Mounts,
                "the policy mounts /proc, a scratch tmpfs or remaps but has no private mount \
                 namespace",
            ));
        }
        return Ok(());
    }
    // Without this, mounts made here would propagate back into the host's
    // shared mount trees (the namespace copy keeps peer groups).
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| SandboxError::sys(Step::Mounts, e, "make / recursively private"))?;

    if mounts.proc && !ns.pid {
        return Err(SandboxError::new(
            Step::Mounts,
            "a fresh /proc needs a private pid namespace; without one it would list the \
             host's processes",
        ));
    }
    if let Some(root) = &mounts.root {
        return crate::root::build(mounts, root, creds);
    }
    if mounts.proc {
        mount(
            Some("proc"),
            "/proc",
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| SandboxError::sys(Step::Mounts, e, "mount a new proc on /proc"))?;
    }
    // Sources are opened before the tmpfs could hide one of them.
    let remaps = open_remap_sources(&mounts.remaps)?;
    if let Some(scratch) = &mounts.scratch {
        // Paths to keep must be reached before the tmpfs hides them.
        let kept = open_kept(scratch)?;
        mount_scratch(scratch, Path::new(&scratch.path), creds)?;
        for (fd, kept_path) in kept {
            // The package is kept read-only and must stay executable.
            bind(
                &fd,
                &kept_path.path,
                kept_path.writable,
                !kept_path.writable,
                true,
            )?;
        }
    }
    let scratch_root = mounts.scratch.as_ref().map(|s| Path::new(&s.path));
    for (fd, remap) in remaps {
        let target = Path::new(&remap.target);
        // Only the plugin's own tmpfs may get new mount points.
        let in_scratch =
            scratch_root.is_some_and(|root| target.starts_with(root) && target != root);
        bind(
            &fd,
            &remap.target,
            remap.writable,
            !remap.writable,
            in_scratch,
        )?;
    }
    Ok(())
}

/// Mounts the scratch tmpfs described by `scratch` at `at` (its own path,
/// or that path inside a root being built): bounded, owned by the plugin,
/// and `noexec`, so that nothing the plugin writes can run.
pub(crate) fn mount_scratch(
    scratch: &TmpfsSpec,
    at: &Path,
    creds: &Credentials,
) -> Result<(), SandboxError> {
    let options = tmpfs_options(scratch, creds)?;
    mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(options.as_str()),
    )
    .map_err(|e| {
        SandboxError::sys(
            Step::Mounts,
            e,
            format_args!("mount the scratch tmpfs on {} ({options})", scratch.path),
        )
    })
}

/// Opens (O_PATH) every remap's source, checking both paths are absolute.
pub(crate) fn open_remap_sources(remaps: &[Remap]) -> Result<Vec<(OwnedFd, &Remap)>, SandboxError> {
    remaps
        .iter()
        .map(|r| {
            if !r.source.starts_with('/') || !r.target.starts_with('/') || r.target == "/" {
                return Err(SandboxError::new(
                    Step::Mounts,
                    format!(
                        "remap {} -> {}: both must be absolute, and the target not /",
                        r.source, r.target
                    ),
                ));
            }
            let fd = nix::fcntl::open(
                Path::new(&r.source),
                OFlag::O_PATH | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| {
                SandboxError::sys(
                    Step::Mounts,
                    e,
                    format_args!("open {} to show it at {}", r.source, r.target),
                )
            })?;
            Ok((fd, r))
        })
        .collect()
}

/// Opens (O_PATH) every path to keep, checking it lies strictly beneath
/// the scratch mount point.
fn open_kept(scratch: &TmpfsSpec) -> Result<Vec<(OwnedFd, &KeptPath)>, SandboxError> {
    let root = Path::new(&scratch.path);
    scratch
        .keep
        .iter()
        .map(|k| {
            let path = Path::new(&k.path);
            if !path.is_absolute() || !path.starts_with(root) || path == root {
                return Err(SandboxError::new(
                    Step::Mounts,
                    format!(
                        "{} is not a path beneath the scratch mount point {}",
                        k.path, scratch.path
                    ),
                ));
            }
            let fd = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| {
                    SandboxError::sys(
                        Step::Mounts,
                        e,
                        format_args!("open {} to keep it visible", k.path),
                    )
                })?;
            Ok((fd, k))
        })
        .collect()
}

/// Bind-mounts the file or directory held by `fd` onto `target`:
/// read-only unless `writable`, executable only when `exec` (and when its
/// host mount is), never setuid or device files. With `make_mount_point`
/// the target is created first (inside a tmpfs of ours); otherwise it must
/// exist and be the same kind of file.
pub(crate) fn bind(
    fd: &OwnedFd,
    target: impl AsRef<Path>,
    writable: bool,
    exec: bool,
    make_mount_point: bool,
) -> Result<(), SandboxError> {
    let target_path = target.as_ref();
    let target = target_path.display();
    let is_dir = |st: nix::sys::stat::FileStat| st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let source_is_dir = nix::sys::stat::fstat(fd.as_fd()).map(is_dir).map_err(|e| {
        SandboxError::sys(Step::Mounts, e, format_args!("stat the source of {target}"))
    })?;
    let exists = target_path.symlink_metadata().is_ok();
    if make_mount_point && !exists {
        let made = if source_is_dir {
            std::fs::create_dir_all(target_path)
        } else {
            target_path
                .parent()
                .map(std::fs::create_dir_all)
                .unwrap_or(Ok(()))
                .and_then(|()| std::fs::File::create(target_path).map(drop))
        };
        made.map_err(|e| {
            SandboxError::io(
                Step::Mounts,
                &e,
                format_args!("create the mount point {target}"),
            )
        })?;
    } else {
        let target_is_dir = nix::sys::stat::stat(target_path).map(is_dir).map_err(|e| {
            SandboxError::sys(Step::Mounts, e, format_args!("mount point {target}"))
        })?;
        if target_is_dir != source_is_dir {
            return Err(SandboxError::new(
                Step::Mounts,
                format!(
                    "cannot mount a {} on {target}, which is a {}",
                    if source_is_dir { "directory" } else { "file" },
                    if target_is_dir { "directory" } else { "file" },
                ),
            ));
        }
    }
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    mount(
        Some(source.as_str()),
        target_path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| SandboxError::sys(Step::Mounts, e, format_args!("bind-mount onto {target}")))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if !writable {
        flags |= MsFlags::MS_RDONLY;
    }
    // A host mount that is noexec stays so: the operator's choice wins.
    let host_noexec = nix::sys::statvfs::fstatvfs(fd.as_fd())
        .map(|st| st.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC))
        .unwrap_or(true);
    if !exec || host_noexec {
        flags |= MsFlags::MS_NOEXEC;
    }
    mount(None::<&str>, target_path, None::<&str>, flags, None::<&str>)
        .map_err(|e| SandboxError::sys(Step::Mounts, e, format_args!("remount {target}")))
}

/// The tmpfs mount options for the plugin's scratch space: bounded size
/// and inode count, private to the plugin's uid.
pub(crate) fn tmpfs_options(
    scratch: &TmpfsSpec,
    creds: &Credentials,
) -> Result<String, SandboxError> {
    if !scratch.path.starts_with('/') {
        return Err(SandboxError::new(
            Step::Mounts,
            format!("scratch path {:?} is not absolute", scratch.path),
        ));
    }
    // tmpfs reads 0 as "no limit": a zero here is a policy bug, never a wish.
    if scratch.size_bytes == 0 {
        return Err(SandboxError::new(
            Step::Mounts,
            format!(
                "scratch size for {} is 0, which tmpfs would take as unlimited",
                scratch.path
            ),
        ));
    }
    if scratch.inodes == 0 {
        return Err(SandboxError::new(
            Step::Mounts,
            format!(
                "scratch inode limit for {} is 0, which tmpfs would take as unlimited",
                scratch.path
            ),
        ));
    }
    Ok(format!(
        "size={},nr_inodes={},mode=0700,uid={},gid={}",
        scratch.size_bytes, scratch.inodes, creds.uid, creds.gid
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str, size_bytes: u64, inodes: u64) -> TmpfsSpec {
        TmpfsSpec {
            path: path.into(),
            size_bytes,
            inodes,
            keep: Vec::new(),
        }
    }

    const CREDS: Credentials = Credentials {
        uid: 200_001,
        gid: 200_002,
    };

    #[test]
    fn tmpfs_options_bound_size_inodes_and_owner() {
        assert_eq!(
            tmpfs_options(&spec("/tmp", 1 << 20, 64), &CREDS).expect("valid"),
            "size=1048576,nr_inodes=64,mode=0700,uid=200001,gid=200002"
        );
    }

    #[test]
    fn zero_limits_and_relative_paths_are_refused() {
        for (bad, what) in [
            (spec("/tmp", 0, 64), "size"),
            (spec("/tmp", 1024, 0), "inode"),
            (spec("tmp", 1024, 64), "absolute"),
        ] {
            let err = tmpfs_options(&bad, &CREDS).expect_err("must be refused");
            assert_eq!(err.step, Step::Mounts);
            assert!(err.message.contains(what), "{}", err.message);
        }
    }
}
