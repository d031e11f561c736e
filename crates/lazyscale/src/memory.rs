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

/// jemalloc's index for "every arena" in `arena.<i>.*` names (`MALLCTL_ARENAS_ALL`).
const ARENAS_ALL: &str = "4096";

/// Returns the free pages of every jemalloc arena to the system now (`arena.<all>.purge`), instead of
/// over the decay time. The stack calls it once it stopped and dropped its state: what the last
/// autoscaler's stack freed leaves the RSS at once, not as the decay allows. `false` when jemalloc
/// refused.
#[allow(unsafe_code)]
pub fn purge_now() -> bool {
    let Ok(name) = std::ffi::CString::new(format!("arena.{ARENAS_ALL}.purge")) else {
        return false;
    };
    // SAFETY: `arena.<i>.purge` is a void control: it reads and writes no value, so every pointer
    // passed is null and the length is 0, as jemalloc's mallctl(3) requires for it; `name` is a valid
    // NUL-terminated string for the call's duration.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    rc == 0
}

#[cfg(test)]
mod tests {
    /// jemalloc knows the control and accepts the call without values (a wrong name or a non-null
    /// pointer is refused). What it returns to the system is measured by `cargo xtask bench lazy`
    /// (after_teardown), with jemalloc as the agent's allocator.
    #[test]
    fn purging_every_arena_is_a_control_jemalloc_accepts() {
        assert!(super::purge_now());
    }
}
