//! Plugin uids: every running instance gets a uid (and gid) of its own
//! from the policy's range, so no two plugins share an identity the kernel
//! would let them use against each other (signals, /proc, files).
//!
//! Uniqueness holds across processes too (`corral run` beside `corrald`,
//! or two daemons): a uid is claimed with an OFD byte-range lock at offset
//! `uid` in one lock file, which the kernel drops by itself when the
//! process that held it dies.

use crate::policy::UidRange;
use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Where uid claims are recorded, host-wide.
pub const UID_LOCK_FILE: &str = "/run/corral/uids.lock";

#[derive(Debug, Clone)]
pub struct UidAllocator {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    range: UidRange,
    used: BTreeSet<u32>,
    next: u32,
    /// The shared lock file, when cross-process claims are possible.
    lock: Option<File>,
}

/// A uid held by one instance; returned to the pool when dropped.
#[derive(Debug)]
pub struct UidLease {
    pub uid: u32,
    owner: Arc<Mutex<Inner>>,
}

impl Drop for UidLease {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.owner.lock() {
            if let Some(lock) = &inner.lock {
                set_lock(lock, self.uid, libc::F_UNLCK as libc::c_short);
            }
            inner.used.remove(&self.uid);
        }
    }
}

/// Takes (`F_WRLCK`) or releases (`F_UNLCK`) the byte at offset `uid`;
/// false when another process holds it.
fn set_lock(file: &File, uid: u32, kind: libc::c_short) -> bool {
    // SAFETY: flock is plain data; zeroed is a valid starting value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = libc::off_t::from(uid);
    fl.l_len = 1;
    // SAFETY: F_OFD_SETLK with a valid flock on an fd we own.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) == 0 }
}

impl UidAllocator {
    /// An allocator that only keeps its own leases apart.
    pub fn new(range: UidRange) -> UidAllocator {
        UidAllocator::build(range, None)
    }

    /// An allocator whose claims also exclude other processes using the
    /// same lock file.
    pub fn shared(range: UidRange, lock_file: &Path) -> std::io::Result<UidAllocator> {
        if let Some(dir) = lock_file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(lock_file)?;
        Ok(UidAllocator::build(range, Some(file)))
    }

    fn build(range: UidRange, lock: Option<File>) -> UidAllocator {
        UidAllocator {
            inner: Arc::new(Mutex::new(Inner {
                range,
                used: BTreeSet::new(),
                next: range.first,
                lock,
            })),
        }
    }

    /// The next free uid, round-robin through the range so a uid is not
    /// reused right after its last owner exited.
    pub fn lease(&self) -> Option<UidLease> {
        let mut inner = self.inner.lock().ok()?;
        let len = inner.range.len();
        for _ in 0..len {
            let uid = inner.next;
            inner.next = if uid >= inner.range.last {
                inner.range.first
            } else {
                uid + 1
            };
            if inner.used.contains(&uid) {
                continue;
            }
            if let Some(lock) = &inner.lock
                && !set_lock(lock, uid, libc::F_WRLCK as libc::c_short)
            {
                // Another process runs a plugin as this uid.
                continue;
            }
            inner.used.insert(uid);
            return Some(UidLease {
                uid,
                owner: self.inner.clone(),
            });
        }
        None
    }

    pub fn in_use(&self) -> usize {
        self.inner.lock().map(|i| i.used.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_unique_and_returned() {
        let alloc = UidAllocator::new(UidRange {
            first: 1000,
            last: 1002,
        });
        let a = alloc.lease().expect("a");
        let b = alloc.lease().expect("b");
        let c = alloc.lease().expect("c");
        assert_eq!([a.uid, b.uid, c.uid], [1000, 1001, 1002]);
        assert!(alloc.lease().is_none(), "range exhausted");
        drop(b);
        let reused = alloc.lease().expect("reused");
        assert_eq!(reused.uid, 1001);
        assert_eq!(alloc.in_use(), 3);
    }

    #[test]
    fn allocators_sharing_a_lock_file_never_hand_out_the_same_uid() {
        // OFD locks conflict between open file descriptions, so two
        // allocators in one process behave like two processes.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("uids.lock");
        let range = UidRange {
            first: 300_000,
            last: 300_003,
        };
        let one = UidAllocator::shared(range, &path).expect("one");
        let two = UidAllocator::shared(range, &path).expect("two");
        let a = one.lease().expect("a");
        let b = two.lease().expect("b");
        assert_ne!(a.uid, b.uid);
        let rest: Vec<UidLease> = [one.lease(), two.lease()].into_iter().flatten().collect();
        assert_eq!(rest.len(), 2);
        assert!(
            one.lease().is_none() && two.lease().is_none(),
            "all four are taken"
        );
        let freed = a.uid;
        drop(a);
        assert_eq!(two.lease().expect("freed by the other").uid, freed);
    }
}
