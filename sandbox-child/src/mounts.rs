//! Step `mounts`: a private mount tree, a /proc for the plugin's pid
//! namespace, and its tmpfs scratch space.
//!
//! Everything is mounted while still root of the initial user namespace:
//! proc and tmpfs mounts need it, and the user namespace created later
//! could not mount them. The mount namespace came from `clone` and was
//! checked by the `namespaces` step; this step also refuses to run without
//! one, so that a policy that forgot it cannot mount over the host's /proc.

use crate::error::{SandboxError, Step};
use corral_protocol::policy::{Credentials, Mounts, Namespaces, TmpfsSpec};
use nix::mount::{MsFlags, mount};

pub fn apply(mounts: &Mounts, ns: &Namespaces, creds: &Credentials) -> Result<(), SandboxError> {
    let wants_mounts = mounts.proc || mounts.scratch.is_some();
    if !ns.mount {
        if wants_mounts {
            return Err(SandboxError::new(
                Step::Mounts,
                "the policy mounts /proc or a scratch tmpfs but has no private mount namespace",
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

    if mounts.proc {
        if !ns.pid {
            return Err(SandboxError::new(
                Step::Mounts,
                "a fresh /proc needs a private pid namespace; without one it would list the \
                 host's processes",
            ));
        }
        mount(
            Some("proc"),
            "/proc",
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| SandboxError::sys(Step::Mounts, e, "mount a new proc on /proc"))?;
    }
    if let Some(scratch) = &mounts.scratch {
        let options = tmpfs_options(scratch, creds)?;
        mount(
            Some("tmpfs"),
            scratch.path.as_str(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(|e| {
            SandboxError::sys(
                Step::Mounts,
                e,
                format_args!("mount the scratch tmpfs on {} ({options})", scratch.path),
            )
        })?;
    }
    Ok(())
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
