//! The allocator of phonefleet's binaries: jemalloc on Linux with glibc (see Cargo.toml: peak
//! RSS at scale), with the options below. One definition for every binary that serves, so
//! the `phonefleet` binary and the provisioning-server bench binary that
//! `scripts/measure-scale.sh` compares it with differ only in what the script compares.

/// jemalloc's options, read from the exported `_rjem_malloc_conf` when it starts
/// (`_RJEM_MALLOC_CONF` in the environment still overrides them). A decision over a million
/// phones frees ~100 MB within a second; with jemalloc's defaults (freed pages kept 10 s,
/// returned only when some thread allocates) every reconcile's garbage stayed resident on top
/// of the next one. Freed pages go back after 1 s, from a background thread: peak RSS at
/// 1,000,000 phones 660 → 542 MiB after Ready (docs/controller.md).
pub const MALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[cfg(all(feature = "jemalloc", target_os = "linux", target_env = "gnu"))]
pub use tikv_jemallocator::Jemalloc;

/// Makes jemalloc, with [`MALLOC_CONF`], the global allocator of the binary it is used in
/// (nothing without the `jemalloc` feature or off Linux with glibc).
#[cfg(all(feature = "jemalloc", target_os = "linux", target_env = "gnu"))]
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::Jemalloc = $crate::allocator::Jemalloc;

        #[allow(non_upper_case_globals)]
        #[unsafe(export_name = "_rjem_malloc_conf")]
        static malloc_conf: &[u8; 60] = $crate::allocator::MALLOC_CONF;
    };
}

/// Makes jemalloc the global allocator: not in this build (the system allocator stays).
#[cfg(not(all(feature = "jemalloc", target_os = "linux", target_env = "gnu")))]
#[macro_export]
macro_rules! global_allocator {
    () => {};
}
