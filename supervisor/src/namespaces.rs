//! One pre-made, empty net/ipc/uts namespace set, joined by every plugin
//! that has no network instead of creating its own: creating a network
//! namespace costs ~0.6 ms and ~95 KiB, and plugins without network cannot
//! open sockets (seccomp) or reach each other's abstract sockets (Landlock
//! scoping), so sharing an empty one gives them nothing to find.

use std::fs::File;
use std::os::fd::OwnedFd;

#[derive(Debug)]
pub struct EmptyNamespaces {
    pub net: OwnedFd,
    pub ipc: OwnedFd,
    pub uts: OwnedFd,
}

impl EmptyNamespaces {
    /// Creates the namespaces on a short-lived thread (net, ipc and uts
    /// namespaces belong to a task, so unsharing on a thread of its own
    /// leaves the daemon's other threads where they are) and keeps them
    /// alive through open fds.
    pub fn create() -> std::io::Result<EmptyNamespaces> {
        std::thread::Builder::new()
            .name("corral-netns".into())
            .spawn(|| -> std::io::Result<EmptyNamespaces> {
                // SAFETY: unshare on this thread only; no pointers involved.
                let r = unsafe {
                    libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS)
                };
                if r != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let name = b"corral";
                // SAFETY: the buffer is valid for its length.
                if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let open =
                    |ns: &str| File::open(format!("/proc/thread-self/ns/{ns}")).map(OwnedFd::from);
                Ok(EmptyNamespaces {
                    net: open("net")?,
                    ipc: open("ipc")?,
                    uts: open("uts")?,
                })
            })?
            .join()
            .map_err(|_| std::io::Error::other("namespace thread panicked"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn ns_id(fd: &OwnedFd) -> std::path::PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("readlink")
    }

    #[test]
    fn namespaces_differ_from_the_hosts() {
        let ns = EmptyNamespaces::create().expect("create");
        let host_net = std::fs::read_link("/proc/self/ns/net").expect("host net");
        let host_uts = std::fs::read_link("/proc/self/ns/uts").expect("host uts");
        assert_ne!(ns_id(&ns.net), host_net);
        assert_ne!(ns_id(&ns.uts), host_uts);
        assert!(ns_id(&ns.ipc).to_string_lossy().starts_with("ipc:["));
        // The daemon's own thread stayed in the host's namespaces.
        assert_eq!(
            std::fs::read_link("/proc/thread-self/ns/net").expect("net"),
            host_net
        );
    }
}
