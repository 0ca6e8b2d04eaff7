//! Step `credentials`: become the plugin's uid and gid with no
//! capability left anywhere.
//!
//! The bounding set is emptied first, while root still may: afterwards no
//! execve can hand a capability back (file capabilities included). Then
//! supplementary groups go (the daemon's groups must not leak), gid before
//! uid (changing gid needs the privilege the uid change gives up).

use crate::caps;
use crate::error::{SandboxError, Step};
use corral_protocol::policy::Credentials;
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};

pub fn apply(creds: &Credentials) -> Result<(), SandboxError> {
    check(creds)?;
    let last_cap = caps::last_cap(Step::Credentials)?;
    caps::drop_bounding_set(Step::Credentials, last_cap)?;
    caps::clear_ambient(Step::Credentials)?;
    setgroups(&[]).map_err(|e| {
        SandboxError::sys(
            Step::Credentials,
            e,
            "drop the supplementary groups (setgroups([]))",
        )
    })?;
    let gid = Gid::from_raw(creds.gid);
    setresgid(gid, gid, gid).map_err(|e| {
        SandboxError::sys(
            Step::Credentials,
            e,
            format_args!("setresgid({0}, {0}, {0})", creds.gid),
        )
    })?;
    let uid = Uid::from_raw(creds.uid);
    setresuid(uid, uid, uid).map_err(|e| {
        SandboxError::sys(
            Step::Credentials,
            e,
            format_args!("setresuid({0}, {0}, {0})", creds.uid),
        )
    })?;
    caps::clear_all(Step::Credentials)?;
    caps::verify_empty(Step::Credentials)
}

/// A plugin never runs as root, whatever the policy says.
pub(crate) fn check(creds: &Credentials) -> Result<(), SandboxError> {
    if creds.uid == 0 {
        return Err(SandboxError::new(
            Step::Credentials,
            "refusing to run a plugin as uid 0",
        ));
    }
    if creds.gid == 0 {
        return Err(SandboxError::new(
            Step::Credentials,
            "refusing to run a plugin as gid 0",
        ));
    }
    // (uid_t)-1 means "leave unchanged" to setresuid: it would silently
    // keep root.
    if creds.uid == u32::MAX || creds.gid == u32::MAX {
        return Err(SandboxError::new(
            Step::Credentials,
            format!(
                "uid {} / gid {}: 4294967295 is not a valid id",
                creds.uid, creds.gid
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_unchanged_marker_are_refused() {
        for (uid, gid, what) in [
            (0, 1000, "uid 0"),
            (1000, 0, "gid 0"),
            (u32::MAX, 1000, "not a valid id"),
            (1000, u32::MAX, "not a valid id"),
        ] {
            let err = check(&Credentials { uid, gid }).expect_err("must be refused");
            assert_eq!(err.step, Step::Credentials);
            assert!(err.message.contains(what), "{}", err.message);
        }
        check(&Credentials {
            uid: 200_000,
            gid: 200_000,
        })
        .expect("an ordinary uid is fine");
    }
}
