//! Plugin uids: every running instance gets a uid (and gid) of its own
//! from the policy's range, so no two plugins share an identity the kernel
//! would let them use against each other (signals, /proc, files).

use crate::policy::UidRange;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct UidAllocator {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    range: UidRange,
    used: BTreeSet<u32>,
    next: u32,
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
            inner.used.remove(&self.uid);
        }
    }
}

impl UidAllocator {
    pub fn new(range: UidRange) -> UidAllocator {
        UidAllocator {
            inner: Arc::new(Mutex::new(Inner {
                range,
                used: BTreeSet::new(),
                next: range.first,
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
            if inner.used.insert(uid) {
                return Some(UidLease {
                    uid,
                    owner: self.inner.clone(),
                });
            }
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
}
