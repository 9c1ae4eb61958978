//! Giving memory back to the system after many streams close.
//!
//! glibc's malloc keeps what freed streams used in its per-thread arenas, so after a burst of
//! streams closes (clients leave, a deploy moves them elsewhere) the process keeps its peak
//! memory indefinitely. `malloc_trim(0)` hands every arena's free pages back (glibc 2.8+). It
//! walks the heap under the arena locks, so it is called rarely: from one watcher, when the
//! number of open streams has fallen well below its peak since the last trim, never per stream.
//! Other allocators (musl, jemalloc, mimalloc) return memory by themselves; this is a no-op there.

use std::time::Duration;

use crate::admission::Admission;
use sse_notify_broker::Broker;

/// How often the watcher looks at the stream count.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How far below its peak the count must fall before a trim is worth its cost.
const TRIM_AFTER_CLOSED: usize = 500;

/// Watches the streams `admission` counts until `broker` closes, trimming the heap after large
/// drops.
pub(crate) fn spawn_trimmer(broker: &Broker, admission: Admission) {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    let mut closing = broker.closing();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = closing.wait_for(|c| *c) => return,
            }
            let open = admission.connections();
            let peak = admission.connection_peak();
            if peak >= open + TRIM_AFTER_CLOSED {
                let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
                tracing::debug!(peak, open, released, "heap trimmed after streams closed");
                admission.reset_connection_peak(open);
            }
        }
    });
}

/// Returns free heap pages to the system; whether any were.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free memory; it takes the arena locks itself.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
