//! Process memory as the allocator and the kernel see it: jemalloc's own accounting (what is allocated,
//! what its pages hold, its metadata, what it keeps mapped) beside the kernel's resident set and thread
//! count, so that memory the agent keeps after its stack stopped can be attributed (live heap,
//! fragmentation of partly used pages, allocator metadata, thread stacks, code pages).

/// One reading.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct MemorySample {
    /// Bytes allocated by the program (jemalloc `stats.allocated`).
    pub heap_bytes: u64,
    /// Bytes in the pages of active allocations (`stats.active`): at least `heap_bytes`; the
    /// difference is the free space of partly used pages (fragmentation).
    pub active_bytes: u64,
    /// Bytes of the allocator's own metadata (`stats.metadata`): extent and radix-tree nodes, the
    /// thread caches' bookkeeping.
    pub metadata_bytes: u64,
    /// Bytes in physically resident pages the allocator maps (`stats.resident`): active pages,
    /// metadata and the dirty pages not purged yet.
    pub allocator_resident_bytes: u64,
    /// Bytes in the allocator's active extents (`stats.mapped`).
    pub mapped_bytes: u64,
    /// Bytes of virtual memory the allocator retained, not resident (`stats.retained`).
    pub retained_bytes: u64,
    /// Resident set size.
    pub resident_bytes: u64,
    /// Threads of the process.
    pub threads: u64,
}

/// Reads the allocator statistics (after advancing jemalloc's epoch, which refreshes them), the RSS and
/// the thread count. The allocator's figures are 0 in a build with the C allocator.
pub fn sample() -> MemorySample {
    let resident_bytes = memory_stats::memory_stats()
        .map(|m| m.physical_mem as u64)
        .unwrap_or(0);
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count() as u64);
    MemorySample {
        resident_bytes,
        threads,
        ..allocator()
    }
}

#[cfg(not(feature = "system-allocator"))]
fn allocator() -> MemorySample {
    use tikv_jemalloc_ctl::stats;
    let _ = tikv_jemalloc_ctl::epoch::advance();
    let read = |r: tikv_jemalloc_ctl::Result<usize>| r.map_or(0, |v| v as u64);
    MemorySample {
        heap_bytes: read(stats::allocated::read()),
        active_bytes: read(stats::active::read()),
        metadata_bytes: read(stats::metadata::read()),
        allocator_resident_bytes: read(stats::resident::read()),
        mapped_bytes: read(stats::mapped::read()),
        retained_bytes: read(stats::retained::read()),
        ..MemorySample::default()
    }
}

#[cfg(feature = "system-allocator")]
fn allocator() -> MemorySample {
    MemorySample::default()
}

/// Starts jemalloc's background threads, which return freed pages to the system as they age (after
/// jemalloc's decay time, 10 s by default) instead of only when the program next allocates. Without
/// them an agent that went quiet (the stack stopped, a relist's peak over) keeps the freed pages of
/// its last busy moment resident. `false` when the allocator refused (a build without them).
pub fn purge_in_background() -> bool {
    tikv_jemalloc_ctl::background_thread::write(true).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The agent's allocator in this crate's tests too, so that its statistics see the test's allocations.
    #[cfg(not(feature = "system-allocator"))]
    #[global_allocator]
    static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

    #[test]
    fn a_sample_sees_this_process() {
        let s = sample();
        assert!(s.resident_bytes > 0);
        assert!(s.threads >= 1);
    }

    #[cfg(not(feature = "system-allocator"))]
    #[test]
    fn the_allocator_figures_nest() {
        // Something live so that the heap is not empty.
        let held: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 4096]).collect();
        let s = sample();
        assert!(s.heap_bytes >= 64 * 4096, "{s:?}");
        assert!(s.active_bytes >= s.heap_bytes, "{s:?}");
        assert!(s.mapped_bytes >= s.active_bytes, "{s:?}");
        assert!(s.metadata_bytes > 0, "{s:?}");
        drop(held);
    }
}
