//! The process's allocator: jemalloc, with two arenas and memory handed back
//! within about a second.
//!
//! Why not glibc's malloc: at saturation its arena locks and bin
//! bookkeeping were a third of the server's samples (`perf`: `_int_malloc`,
//! `_int_free`, `malloc_consolidate` and the futex waits of its private
//! locks), and it needed `M_ARENA_MAX = 2` to keep the resident size from
//! creeping under a steady load, which made those locks hotter. With
//! jemalloc the same machine delivers ~45 % more per second for ~30 % less
//! CPU per delivery, and a million pending deliveries are ingested twice as
//! fast in less memory (BENCHMARKS.md, "The allocator").
//!
//! The settings, compiled in (`_RJEM_MALLOC_CONF` in the environment still
//! overrides them):
//! - `background_thread:true`, `dirty_decay_ms:1000`, `muzzy_decay_ms:0`:
//!   freed pages go back to the system from a thread of jemalloc's own
//!   about a second after a burst, not on some later allocation (sled's open
//!   frees hundreds of MB at once on a large store).
//! - `narenas:2`: jemalloc's default is four per core. With 400,000 pending
//!   deliveries ingested, the peak was 300 MiB with the defaults, 247 MiB
//!   with the decay settings above and 208 MiB with two arenas as well;
//!   throughput was the same within the spread.

use std::ffi::c_char;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Read by jemalloc before `main`, under the name its Rust build gives it.
/// `Option<&c_char>` is a nullable C string pointer: the type
/// `tikv-jemalloc-sys` declares for this symbol.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: Option<&'static c_char> = Some(
    // SAFETY: a pointer to the first byte of a static NUL-terminated string.
    unsafe { &*c"narenas:2,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr() },
);

#[cfg(test)]
mod tests {
    use std::ffi::{CStr, c_void};

    /// One of jemalloc's `opt.*` values as it took effect.
    fn opt<T: Default>(name: &CStr) -> T {
        let mut value = T::default();
        let mut len = std::mem::size_of::<T>();
        // SAFETY: `value` is a `T` of `len` bytes, the type jemalloc
        // documents for the names read below; nothing is written.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                (&raw mut value).cast::<c_void>(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(rc, 0, "mallctl {name:?}");
        value
    }

    #[test]
    fn jemalloc_runs_with_the_compiled_in_settings() {
        // Without the symbol it would be four arenas per core, no thread
        // and 10 s of decay; unless the environment overrides them.
        if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
            return;
        }
        assert_eq!(opt::<u32>(c"opt.narenas"), 2);
        assert!(opt::<bool>(c"opt.background_thread"));
        assert_eq!(opt::<isize>(c"opt.dirty_decay_ms"), 1000);
        assert_eq!(opt::<isize>(c"opt.muzzy_decay_ms"), 0);
    }
}
