//! The memory allocator every service binary declares: mimalloc, with its
//! eager commit turned off.
//!
//! mimalloc because under load glibc's malloc was a large share of each
//! service's CPU profile; eager commit off because mimalloc otherwise
//! commits its arenas up front, which more than doubles a service's idle
//! memory (BENCHMARKS.md has both measurements). The option is set by the
//! first allocation of the process, before mimalloc has reserved any
//! memory, so no environment variable is needed; it also means
//! `MIMALLOC_ARENA_EAGER_COMMIT` is overridden (other `MIMALLOC_*`
//! variables still apply).
//!
//! Linking this crate does not install it: each binary says so itself,
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: common::allocator::TunedMiMalloc = common::allocator::TunedMiMalloc;
//! ```

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Once;

use mimalloc::MiMalloc;

/// mimalloc, configured on first use.
pub struct TunedMiMalloc;

static TUNED: Once = Once::new();

/// `mi_option_arena_eager_commit` of mimalloc.h, the same in its v2 and v3;
/// libmimalloc-sys has no constant for it.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Sets mimalloc's options; runs once, before the first allocation.
fn tune() {
    TUNED.call_once(|| {
        // SAFETY: mi_option_set only writes mimalloc's option table; the
        // option is read when an arena is next reserved.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
    });
}

// SAFETY: every call is forwarded to mimalloc's own GlobalAlloc, unchanged;
// `tune` neither allocates nor frees.
unsafe impl GlobalAlloc for TunedMiMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        tune();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        tune();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}
