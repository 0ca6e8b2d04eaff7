//! Who is on the other end of a connection, and what they may do.
//!
//! The kernel tells us the peer's uid, gid and pid (SO_PEERCRED) and its
//! supplementary groups (SO_PEERGROUPS), both as they were when it
//! connected; nothing the client sends is trusted for identity. Admins are
//! root, the daemon's own uid, and members of the admin groups; callers are
//! admins and members of the caller groups; a plugin's `allowed_callers`
//! narrows who may call that plugin.

use std::os::fd::{AsRawFd, BorrowedFd};

/// The credentials of a connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    /// Primary and supplementary groups.
    pub groups: Vec<u32>,
}

impl Peer {
    /// Reads the peer's credentials from a connected Unix socket.
    pub fn of(socket: BorrowedFd<'_>) -> std::io::Result<Peer> {
        let fd = socket.as_raw_fd();
        // SAFETY: ucred is plain data; getsockopt writes at most `len`.
        let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut groups = vec![0u32; 64];
        loop {
            let mut len = (groups.len() * std::mem::size_of::<u32>()) as libc::socklen_t;
            // SAFETY: the buffer holds `len` bytes.
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_PEERGROUPS,
                    groups.as_mut_ptr().cast(),
                    &mut len,
                )
            };
            if r == 0 {
                groups.truncate(len as usize / std::mem::size_of::<u32>());
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) && groups.len() < 65536 {
                // `len` now holds the size needed.
                groups.resize(
                    (len as usize / std::mem::size_of::<u32>()).max(groups.len() * 2),
                    0,
                );
                continue;
            }
            // Kernels without SO_PEERGROUPS: the primary group only.
            groups.clear();
            break;
        }
        if !groups.contains(&cred.gid) {
            groups.push(cred.gid);
        }
        Ok(Peer {
            uid: cred.uid,
            gid: cred.gid,
            pid: cred.pid,
            groups,
        })
    }

    pub fn in_any(&self, gids: &[u32]) -> bool {
        gids.iter().any(|g| self.groups.contains(g))
    }
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Health and metrics: anyone who can connect.
    Connect,
    /// Listing, reading, calling, events.
    Caller,
    /// Install, remove, load, unload, reload, policy.
    Admin,
}

/// The access rules with group names resolved to gids.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub daemon_uid: u32,
    pub admin_gids: Vec<u32>,
    pub caller_gids: Vec<u32>,
}

/// Resolves group names (or numeric gids); unknown names are logged and
/// skipped (a missing group grants nothing, which is the safe reading).
pub fn resolve_groups(names: &[String]) -> Vec<u32> {
    names
        .iter()
        .filter_map(|name| {
            if let Ok(gid) = name.parse::<u32>() {
                return Some(gid);
            }
            match nix::unistd::Group::from_name(name) {
                Ok(Some(g)) => Some(g.gid.as_raw()),
                Ok(None) => {
                    tracing::warn!(group = %name, "group in the configuration does not exist; it grants nothing");
                    None
                }
                Err(e) => {
                    tracing::warn!(group = %name, error = %e, "cannot look up group");
                    None
                }
            }
        })
        .collect()
}

impl Access {
    pub fn new(admin_groups: &[String], caller_groups: &[String]) -> Access {
        Access {
            // SAFETY: getuid cannot fail.
            daemon_uid: unsafe { libc::getuid() },
            admin_gids: resolve_groups(admin_groups),
            caller_gids: resolve_groups(caller_groups),
        }
    }

    pub fn is_admin(&self, peer: &Peer) -> bool {
        peer.uid == 0 || peer.uid == self.daemon_uid || peer.in_any(&self.admin_gids)
    }

    pub fn allows(&self, peer: &Peer, need: Need) -> bool {
        match need {
            Need::Connect => true,
            Need::Caller => self.is_admin(peer) || peer.in_any(&self.caller_gids),
            Need::Admin => self.is_admin(peer),
        }
    }

    /// A plugin's `allowed_callers`: group names, `uid:N`, `gid:N`, or
    /// `user:NAME`. Admins pass regardless, so operators can test.
    pub fn may_call(&self, peer: &Peer, allowed: Option<&[String]>) -> bool {
        let Some(allowed) = allowed else {
            return true;
        };
        if self.is_admin(peer) {
            return true;
        }
        allowed.iter().any(|rule| {
            if let Some(n) = rule.strip_prefix("uid:") {
                return n.parse::<u32>().is_ok_and(|u| u == peer.uid);
            }
            if let Some(n) = rule.strip_prefix("gid:") {
                return n.parse::<u32>().is_ok_and(|g| peer.groups.contains(&g));
            }
            if let Some(name) = rule.strip_prefix("user:") {
                return matches!(nix::unistd::User::from_name(name), Ok(Some(u)) if u.uid.as_raw() == peer.uid);
            }
            matches!(nix::unistd::Group::from_name(rule), Ok(Some(g)) if peer.groups.contains(&g.gid.as_raw()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn peer(uid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid: groups.first().copied().unwrap_or(uid),
            pid: 1,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn roles() {
        let access = Access {
            daemon_uid: 999,
            admin_gids: vec![50],
            caller_gids: vec![60],
        };
        assert!(access.allows(&peer(0, &[0]), Need::Admin));
        assert!(
            access.allows(&peer(999, &[999]), Need::Admin),
            "the daemon's own uid"
        );
        assert!(access.allows(&peer(1000, &[1000, 50]), Need::Admin));
        assert!(!access.allows(&peer(1000, &[1000, 60]), Need::Admin));
        assert!(access.allows(&peer(1000, &[1000, 60]), Need::Caller));
        assert!(!access.allows(&peer(1001, &[1001]), Need::Caller));
        assert!(access.allows(&peer(1001, &[1001]), Need::Connect));
    }

    #[test]
    fn allowed_callers_narrow_calls() {
        let access = Access {
            daemon_uid: 999,
            admin_gids: vec![],
            caller_gids: vec![60],
        };
        let rules = vec!["uid:1000".to_string(), "gid:70".to_string()];
        assert!(access.may_call(&peer(1000, &[60]), Some(&rules)));
        assert!(access.may_call(&peer(1002, &[60, 70]), Some(&rules)));
        assert!(!access.may_call(&peer(1001, &[60]), Some(&rules)));
        assert!(access.may_call(&peer(1001, &[60]), None));
        assert!(
            access.may_call(&peer(0, &[0]), Some(&rules)),
            "root may always"
        );
    }

    #[test]
    fn groups_resolve_by_name_or_number() {
        assert_eq!(
            resolve_groups(&["root".into(), "4242".into(), "no-such-group-here".into()]),
            vec![0, 4242]
        );
    }

    #[test]
    fn credentials_come_from_the_kernel() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let p = Peer::of(a.as_fd()).expect("peercred");
        assert_eq!(p.uid, unsafe { libc::getuid() });
        assert_eq!(p.pid, std::process::id() as i32);
        assert!(p.groups.contains(&p.gid));
    }
}
