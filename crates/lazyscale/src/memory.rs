//! Process memory as the allocator and the kernel see it.

/// One reading.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MemorySample {
    /// Bytes allocated by the program (jemalloc `stats.allocated`).
    pub heap_bytes: u64,
    /// Resident set size.
    pub resident_bytes: u64,
}

/// Reads the allocator statistics (after advancing jemalloc's epoch, which refreshes them) and the RSS.
pub fn sample() -> MemorySample {
    let _ = tikv_jemalloc_ctl::epoch::advance();
    let heap_bytes = tikv_jemalloc_ctl::stats::allocated::read().unwrap_or(0) as u64;
    let resident_bytes = memory_stats::memory_stats()
        .map(|m| m.physical_mem as u64)
        .unwrap_or(0);
    MemorySample {
        heap_bytes,
        resident_bytes,
    }
}

/// Starts jemalloc's background threads, which return freed pages to the system as they age (after
/// jemalloc's decay time, 10 s by default) instead of only when the program next allocates. Without
/// them an agent that went quiet (the stack stopped, a relist's peak over) keeps the freed pages of
/// its last busy moment resident. `false` when the allocator refused (a build without them).
pub fn purge_in_background() -> bool {
    tikv_jemalloc_ctl::background_thread::write(true).is_ok()
}
