//! Makes the C allocator give large buffers back to the operating system when they are freed,
//! so the memory a burst of multi-megabyte bodies took is returned once they are gone.
//!
//! glibc's `malloc` serves blocks above its mmap threshold (128 KiB) with their own mappings,
//! returned on `free`, but it raises the threshold to the size of every such block freed. After
//! the first 2 MB body is freed, later ones come from the heap, and a heap with a live block
//! above the freed ones cannot shrink: three peers holding 2 MB answers left the proxy at 35 MiB
//! after they closed, for good (issue 11, item 2). Setting the threshold explicitly turns that
//! adjustment off. musl (the static release binary) maps large blocks itself and needs nothing;
//! elsewhere this does nothing.
//!
//! The only `unsafe` of the crate: one call into the C library, once, at start-up.

/// Blocks at least this large get their own mapping, returned to the system when freed:
/// glibc's own initial threshold, kept instead of growing to the largest body seen. Bodies of
/// 128 KiB and more are few per slot, so the extra `mmap`/`munmap` calls cost nothing
/// measurable.
pub const MMAP_THRESHOLD_BYTES: i32 = 128 * 1024;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD_BYTES`]; returns whether it was set (false
/// on other C libraries, where there is nothing to do).
pub fn return_large_blocks_when_freed() -> bool {
    set_mmap_threshold(MMAP_THRESHOLD_BYTES)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_mmap_threshold(bytes: i32) -> bool {
    use std::ffi::c_int;

    /// `M_MMAP_THRESHOLD` in glibc's `<malloc.h>`.
    const M_MMAP_THRESHOLD: c_int = -3;

    unsafe extern "C" {
        /// glibc's `mallopt(3)`: sets a tunable of `malloc`, returns 1 on success.
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }
    // SAFETY: `mallopt` takes two integers and only changes a tunable of the allocator; glibc
    // serialises it with the allocator's own lock, so it is sound at any time and from any
    // thread. `M_MMAP_THRESHOLD` accepts any value up to 32 MiB.
    unsafe { mallopt(M_MMAP_THRESHOLD, bytes) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold(_bytes: i32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_accepted_where_it_applies() {
        let applies = cfg!(all(target_os = "linux", target_env = "gnu"));
        assert_eq!(return_large_blocks_when_freed(), applies);
    }
}
