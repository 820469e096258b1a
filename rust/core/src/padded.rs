//! Cache-line padding, so that a hot word written by one thread does not share its line with
//! another hot word (false sharing turns independent atomics into a contended one).

use core::ops::Deref;

/// Aligns `T` to 128 bytes: two 64-byte lines, because adjacent-line prefetching on x86 pulls
/// pairs of lines, and Apple silicon uses 128-byte lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CachePadded<T>(pub T);

impl<T> CachePadded<T> {
    pub const fn new(value: T) -> Self {
        Self(value)
    }
}

impl<T> Deref for CachePadded<T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}
