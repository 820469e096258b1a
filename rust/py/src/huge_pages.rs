//! The extension's allocator: the system's, except that a block of at least [`HUGE_PAGE`]
//! bytes is aligned to [`HUGE_PAGE`] and advised to the kernel as huge-page memory before its
//! first use.
//!
//! Why: a keyed limiter holding a million keys has 64 MB of tables (`admission_core::keyed`),
//! and a call finds its key at a random place of them. On 4 KiB pages that random read also
//! misses the TLB, and on a virtual machine the page walk it costs is two-dimensional; on
//! 2 MiB pages the tables need 32 TLB entries instead of 16,384. Linux gives huge pages to an
//! anonymous mapping that asks for them (`MADV_HUGEPAGE`) when transparent huge pages are in
//! `madvise` mode (the common default) or `always`; in `never` mode the advice is taken and
//! no huge page is given. The core allocates through `Vec` (it has no `unsafe`), so the advice
//! is given here, for every large allocation of this library. Smaller blocks (anything under
//! 2 MiB: every other allocation here) go to the system allocator untouched.

use std::alloc::{GlobalAlloc, Layout, System};

/// The size of a huge page on x86-64 and arm64 with 4 KiB base pages.
pub const HUGE_PAGE: usize = 2 << 20;

/// See the module's documentation.
pub struct HugePageAlloc;

/// The layout a block of `layout` is allocated with: the same, aligned to a huge page when it
/// is at least that large (`None`: too large to align, which `alloc` reports as a failure).
#[inline]
fn placed(layout: Layout) -> Option<Layout> {
    if layout.size() < HUGE_PAGE {
        Some(layout)
    } else {
        Layout::from_size_align(layout.size(), layout.align().max(HUGE_PAGE)).ok()
    }
}

/// Asks the kernel to back `[ptr, ptr + size)` with huge pages. Only advice: it changes
/// neither the memory's contents nor whether it is mapped; a kernel without transparent huge
/// pages refuses it (`EINVAL`), which is ignored.
fn advise(ptr: *mut u8, size: usize) {
    // SAFETY: `ptr` starts a live allocation of `size` bytes aligned to HUGE_PAGE (a multiple
    // of the page size, as madvise requires). MADV_HUGEPAGE only sets a flag on the mapping:
    // no byte of it, nor any other memory, is read, written, unmapped or made inaccessible.
    unsafe {
        libc::madvise(ptr.cast(), size, libc::MADV_HUGEPAGE);
    }
}

// SAFETY: every block comes from `System` with a layout of the caller's size and an alignment
// at least the caller's (`placed`), so it fits the caller's layout; `dealloc` and `realloc`
// recompute that layout from the caller's, which GlobalAlloc's contract makes the same as at
// allocation, so `System` always frees a block with the layout it allocated it with.
unsafe impl GlobalAlloc for HugePageAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() < HUGE_PAGE {
            // SAFETY: the caller's contract (a non-zero size) is passed on unchanged.
            return unsafe { System.alloc(layout) };
        }
        let Some(huge) = placed(layout) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `huge` has the caller's non-zero size.
        let ptr = unsafe { System.alloc(huge) };
        if !ptr.is_null() {
            advise(ptr, huge.size());
        }
        ptr
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() < HUGE_PAGE {
            // SAFETY: as in `alloc`.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // Advised before the zeroing touches it, so that its first faults take huge pages.
        // SAFETY: as in `alloc`.
        let ptr = unsafe { self.alloc(layout) };
        if !ptr.is_null() {
            // SAFETY: `ptr` is a fresh block of `layout.size()` writable bytes.
            unsafe { std::ptr::write_bytes(ptr, 0, layout.size()) };
        }
        ptr
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // `placed` cannot fail here: it succeeded when the block was allocated.
        let huge = placed(layout).unwrap_or(layout);
        // SAFETY: `ptr` was allocated by `System` with `huge` (see the impl's comment).
        unsafe { System.dealloc(ptr, huge) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < HUGE_PAGE && new_size < HUGE_PAGE {
            // SAFETY: small before and after: `System` allocated the block with `layout`
            // and the new one keeps its alignment, as `System.realloc` requires.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Crossing or above the threshold: a new block placed by `alloc`, the bytes copied,
        // the old block freed by `dealloc` (each with the layout rule of its size).
        // SAFETY: the caller guarantees `new_size` is non-zero and, rounded up to
        // `layout.align()`, does not overflow isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as in `alloc`.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this many bytes long.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
