//! Whose permissions a package is read with. corrald runs as root; a
//! client that asks it to install a path must not get root's reading of
//! that path (a confused deputy): the files are opened with the client's
//! filesystem uid, gid and groups, as if the client opened them.
//!
//! Linux keeps these per thread (setfsuid, setfsgid, and the raw setgroups
//! system call, unlike glibc's wrapper which changes every thread), so an
//! install runs on a thread of its own that switches to the client's
//! credentials to open what it reads and back to root's to write the
//! store; the thread ends with the install, credentials and all. Moving
//! the filesystem uid away from 0 drops the capabilities that bypass file
//! permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, ...)
//! from the effective set, and moving it back restores them.

use std::io;

/// Whose permissions apply when a package is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eyes {
    /// corrald's own: source folders the operator configured.
    Daemon,
    /// A client's, from its connection's credentials.
    Peer {
        uid: u32,
        gid: u32,
        groups: Vec<u32>,
    },
}

/// The calling thread's filesystem credentials, switchable between the
/// daemon's and a peer's. Only for a thread that ends with its task.
pub(super) struct Switch {
    peer: Option<(u32, u32, Vec<u32>)>,
    daemon: (u32, u32, Vec<u32>),
    as_peer: bool,
}

fn set_groups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: the raw system call (this thread only) reads `len` gids.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// setfsuid/setfsgid report no error; asking again tells whether the
/// change held.
fn set_fs_ids(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain system calls on integers.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
        let now_gid = libc::syscall(libc::SYS_setfsgid, gid) as u32;
        let now_uid = libc::syscall(libc::SYS_setfsuid, uid) as u32;
        if now_uid != uid || now_gid != gid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("cannot take the filesystem ids {uid}:{gid}"),
            ));
        }
    }
    Ok(())
}

impl Switch {
    /// Starts with the daemon's credentials. A peer that is root reads
    /// as root, so needs no switch.
    pub fn new(eyes: &Eyes) -> io::Result<Switch> {
        let daemon_groups = nix::unistd::getgroups()
            .map_err(io::Error::from)?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let daemon = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
            daemon_groups,
        );
        let peer = match eyes {
            Eyes::Peer { uid, gid, groups } if *uid != daemon.0 && *uid != 0 => {
                Some((*uid, *gid, groups.clone()))
            }
            _ => None,
        };
        Ok(Switch {
            peer,
            daemon,
            as_peer: false,
        })
    }

    /// From here on, opens see what the peer would see.
    pub fn peer(&mut self) -> io::Result<()> {
        let Some((uid, gid, groups)) = &self.peer else {
            return Ok(());
        };
        if !self.as_peer {
            set_groups(groups)?;
            set_fs_ids(*uid, *gid)?;
            self.as_peer = true;
        }
        Ok(())
    }

    /// Back to the daemon's credentials (for writing the store).
    pub fn daemon(&mut self) -> io::Result<()> {
        if self.as_peer {
            let (uid, gid, groups) = &self.daemon;
            set_fs_ids(*uid, *gid)?;
            set_groups(groups)?;
            self.as_peer = false;
        }
        Ok(())
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = self.daemon();
    }
}

/// Runs `task` on a thread of its own (never a pooled one: its
/// credentials change) and waits for it.
pub(super) fn on_own_thread<T: Send + 'static>(
    task: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    std::thread::Builder::new()
        .name("corrald-read".into())
        .spawn(task)?
        .join()
        .map_err(|_| io::Error::other("the reading thread panicked"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_peer_switch_reads_with_the_peers_permissions_only() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root only").expect("write");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let path = secret.clone();
        let (as_peer, as_daemon) = on_own_thread(move || {
            let mut s = Switch::new(&Eyes::Peer {
                uid: 4242,
                gid: 4242,
                groups: vec![4242],
            })
            .expect("switch");
            s.peer().expect("to the peer");
            let as_peer = std::fs::read(&path).map_err(|e| e.kind());
            s.daemon().expect("back");
            let as_daemon = std::fs::read(&path).map_err(|e| e.kind());
            (as_peer, as_daemon)
        })
        .expect("thread");
        assert_eq!(as_peer, Err(io::ErrorKind::PermissionDenied));
        assert_eq!(as_daemon.as_deref().ok(), Some(&b"root only"[..]));
        // This thread never changed.
        assert!(std::fs::read(&secret).is_ok());
    }
}
