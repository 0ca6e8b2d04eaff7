//! The engine's heap: every allocation QuickJS makes goes through
//! [`CountingAllocator`], which refuses to grow past a limit and remembers
//! that it did. QuickJS turns a refused allocation into an "out of memory"
//! exception; the flag tells that apart from a script that merely throws
//! something with those words in it (or catches the exception and throws
//! another), so the reply can say `memory_limit_exceeded` with confidence.
//!
//! The limit sits under the plugin's cgroup limit by a margin for what is
//! not the script's heap: this binary, the stack, the channel buffers and
//! the copy of a reply on its way out. Hitting the engine's limit fails one
//! call; hitting the cgroup's would kill the whole child.

use rquickjs::allocator::Allocator;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Margin kept below the cgroup limit, at least.
const MIN_HEADROOM: u64 = 6 << 20;
/// The engine never gets less than this share of the limit (1/2), so a
/// small limit still leaves the script room to run.
const MIN_SHARE_DIVISOR: u64 = 2;

/// The heap limit for a plugin whose memory limit is `memory_bytes` (0:
/// unlimited) and whose frames may be `max_frame` bytes: the limit less
/// room for two frames (the reply's JSON is copied out of the heap) and
/// [`MIN_HEADROOM`], or an eighth of the limit when that is more.
pub fn engine_limit(memory_bytes: u64, max_frame: u32) -> Option<usize> {
    if memory_bytes == 0 {
        return None;
    }
    let headroom = (MIN_HEADROOM + 2 * u64::from(max_frame)).max(memory_bytes / 8);
    let limit = memory_bytes
        .saturating_sub(headroom)
        .max(memory_bytes / MIN_SHARE_DIVISOR);
    Some(usize::try_from(limit).unwrap_or(usize::MAX))
}

/// What the allocator shares with the engine: bytes in use, the limit,
/// and whether an allocation was refused since the flag was last cleared.
#[derive(Debug, Default)]
pub struct HeapState {
    used: AtomicUsize,
    limit: AtomicUsize,
    refused: AtomicBool,
}

impl HeapState {
    pub fn new(limit: Option<usize>) -> Arc<HeapState> {
        Arc::new(HeapState {
            used: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit.unwrap_or(usize::MAX)),
            refused: AtomicBool::new(false),
        })
    }

    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> Option<usize> {
        Some(self.limit.load(Ordering::Relaxed)).filter(|l| *l != usize::MAX)
    }

    /// True when an allocation was refused since the last call; clears it.
    pub fn take_refused(&self) -> bool {
        self.refused.swap(false, Ordering::Relaxed)
    }

    /// Counts `add` more bytes in use unless that passes the limit.
    fn reserve(&self, add: usize) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        let fits = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(add).filter(|total| *total <= limit)
            })
            .is_ok();
        if !fits {
            self.refused.store(true, Ordering::Relaxed);
        }
        fits
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// libc's allocator with a byte budget. Sizes are counted as
/// `malloc_usable_size` reports them, which is what the process pays.
pub struct CountingAllocator {
    pub state: Arc<HeapState>,
}

/// What an allocation of `size` bytes is counted as before it exists:
/// glibc rounds up to 16 bytes and adds an 8-byte header.
fn estimate(size: usize) -> usize {
    size.saturating_add(8).next_multiple_of(16)
}

// SAFETY: every pointer comes from libc's malloc family and goes back to it;
// libc returns memory aligned for any type (at least usize) or null.
unsafe impl Allocator for CountingAllocator {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        if !self.state.reserve(estimate(size)) {
            return std::ptr::null_mut();
        }
        // SAFETY: plain malloc; null is handled by the caller.
        let ptr = unsafe { libc::malloc(size.max(1)) }.cast::<u8>();
        self.settle(ptr, estimate(size));
        ptr
    }

    fn calloc(&mut self, count: usize, size: usize) -> *mut u8 {
        let Some(total) = count.checked_mul(size) else {
            return std::ptr::null_mut();
        };
        if !self.state.reserve(estimate(total)) {
            return std::ptr::null_mut();
        }
        // SAFETY: plain calloc; null is handled by the caller.
        let ptr = unsafe { libc::calloc(count.max(1), size.max(1)) }.cast::<u8>();
        self.settle(ptr, estimate(total));
        ptr
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8) {
        if ptr.is_null() {
            return;
        }
        // SAFETY: the caller passes a pointer this allocator returned.
        let size = unsafe { Self::usable_size(ptr) };
        self.state.release(size);
        // SAFETY: as above; it is freed once.
        unsafe { libc::free(ptr.cast()) };
    }

    unsafe fn realloc(&mut self, ptr: *mut u8, new_size: usize) -> *mut u8 {
        if ptr.is_null() {
            return self.alloc(new_size);
        }
        // SAFETY: the caller passes a pointer this allocator returned.
        let old = unsafe { Self::usable_size(ptr) };
        let wanted = estimate(new_size);
        if wanted > old && !self.state.reserve(wanted - old) {
            return std::ptr::null_mut();
        }
        // SAFETY: as above; on failure the old block stays valid.
        let new = unsafe { libc::realloc(ptr.cast(), new_size.max(1)) }.cast::<u8>();
        if new.is_null() {
            if wanted > old {
                self.state.release(wanted - old);
            }
            return new;
        }
        // SAFETY: `new` was just returned by realloc.
        let actual = unsafe { Self::usable_size(new) };
        let reserved = wanted.max(old);
        self.adjust(reserved, actual);
        new
    }

    unsafe fn usable_size(ptr: *mut u8) -> usize {
        // SAFETY: the caller passes a live pointer from libc's malloc.
        unsafe { libc::malloc_usable_size(ptr.cast()) }
    }
}

impl CountingAllocator {
    /// Replaces the estimate reserved for a new block with its real size.
    fn settle(&self, ptr: *mut u8, reserved: usize) {
        if ptr.is_null() {
            self.state.release(reserved);
            return;
        }
        // SAFETY: `ptr` was just returned by malloc or calloc.
        let actual = unsafe { Self::usable_size(ptr) };
        self.adjust(reserved, actual);
    }

    fn adjust(&self, reserved: usize, actual: usize) {
        if actual > reserved {
            // Already allocated: count it even past the limit (by a few
            // bytes at most), so the books stay right.
            self.state
                .used
                .fetch_add(actual - reserved, Ordering::Relaxed);
        } else {
            self.state.release(reserved - actual);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_leaves_headroom_but_never_less_than_half() {
        assert_eq!(engine_limit(0, 1 << 20), None);
        let limit = engine_limit(64 << 20, 4 << 20).expect("limited");
        assert_eq!(limit, (64 << 20) - (6 << 20) - (8 << 20));
        // A large limit keeps an eighth back.
        assert_eq!(engine_limit(1 << 30, 4 << 20), Some((1 << 30) - (1 << 27)));
        // A small one still gives the engine half.
        assert_eq!(engine_limit(8 << 20, 4 << 20), Some(4 << 20));
    }

    #[test]
    fn allocations_past_the_limit_are_refused_and_remembered() {
        let state = HeapState::new(Some(64 * 1024));
        let mut a = CountingAllocator {
            state: Arc::clone(&state),
        };
        let small = a.alloc(1000);
        assert!(!small.is_null());
        assert!(state.used() >= 1000);
        assert!(!state.take_refused());
        let big = a.alloc(1 << 20);
        assert!(big.is_null(), "a megabyte does not fit in 64 KiB");
        assert!(state.take_refused());
        assert!(!state.take_refused(), "taking the flag clears it");
        // SAFETY: `small` came from this allocator.
        let grown = unsafe { a.realloc(small, 2000) };
        assert!(!grown.is_null());
        // SAFETY: `grown` came from this allocator.
        unsafe { a.dealloc(grown) };
        assert_eq!(state.used(), 0, "everything freed is given back");
    }
}
