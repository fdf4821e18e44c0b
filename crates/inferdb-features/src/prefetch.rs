//! Software prefetch: asks the CPU to start loading a cache line that code
//! will read or write a little later, without waiting for it.
//!
//! The apply of a batch (`inferdb-engine`'s `OnlineState`) walks entities
//! spread over gigabytes of heap: each step of the state it updates (the
//! table's bucket, the state, its ring of events, its accumulators) is a
//! cache miss that depends on the one before. A load issued early to pull a
//! line in stalls the CPU as soon as its reorder window is full; a prefetch
//! instruction retires at once, so the misses of the next rows are served
//! while the current one is applied.
//!
//! This is one of the two modules of inferdb with `unsafe` code (the other
//! is the dense kernels' `gemm.rs`): the intrinsic is `unsafe` only because
//! it is a `target_feature` function, and SSE is part of every x86-64 CPU.
//! A prefetch never faults and changes no memory, whatever the address, so
//! these functions are safe for any pointer, dangling or null.

#![allow(unsafe_code)]

/// Bytes per cache line.
pub const LINE: usize = 64;

/// Prefetches the line holding `p`, to be written soon (read for
/// ownership where the CPU can: `prefetchw`; a plain prefetch otherwise).
#[inline(always)]
pub fn write<T: ?Sized>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
        // SAFETY: SSE is in the x86-64 baseline, and a prefetch neither
        // faults nor accesses memory architecturally, whatever `p` is.
        unsafe { _mm_prefetch::<_MM_HINT_ET0>(p.cast::<i8>()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches the lines of the `bytes` bytes from `p`, to be written soon
/// (none for 0 bytes: an empty vector's pointer is dangling).
#[inline(always)]
pub fn write_range<T: ?Sized>(p: *const T, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let p = p.cast::<u8>();
    let lines = (p as usize % LINE + bytes).div_ceil(LINE);
    for k in 0..lines {
        write(p.wrapping_add(k * LINE));
    }
}

/// Prefetches an `Arc`'s counts (which a clone or `Arc::make_mut` reads
/// or writes) and the first `bytes` bytes of its value, to be written soon.
#[inline(always)]
pub fn write_arc<T: ?Sized>(a: &std::sync::Arc<T>, bytes: usize) {
    // The counts are the two words before the value (`ArcInner` is
    // `repr(C)`); for a value aligned to more, a line early is fetched.
    let counts = 2 * size_of::<usize>();
    write_range(
        std::sync::Arc::as_ptr(a).cast::<u8>().wrapping_sub(counts),
        counts + bytes,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetching_any_address_is_harmless() {
        let v = vec![7u64; 1000];
        write(v.as_ptr());
        write_range(v.as_ptr(), v.len() * 8);
        // Past the end, null and dangling: hints, never faults.
        write(v.as_ptr().wrapping_add(1 << 30));
        write(std::ptr::null::<u8>());
        write_range(std::ptr::dangling::<u64>(), 4096);
        let a = std::sync::Arc::new([1u8; 300]);
        write_arc(&a, 300);
        assert_eq!(a[299], 1);
        assert!(v.iter().all(|&x| x == 7));
    }
}
