//! Memory returned to the system after large requests.
//!
//! glibc's malloc keeps freed heap memory, and after a large buffer is
//! freed it raises its mmap threshold, so later large buffers come from the
//! heap too: after a request of many megabytes (long texts, thousands of
//! inputs) the process's resident memory stays grown. [`release_soon`] asks
//! a background thread to trim every malloc arena (`malloc_trim(0)`) a
//! moment later, once the request's buffers are dropped; the requests of a
//! burst share one trim, and no request waits for it.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::Duration;

/// A request (body or batch) this large is followed by a trim.
pub const LARGE_REQUEST_BYTES: usize = 1 << 20;

/// How long after a large request the trim runs (its buffers are freed
/// when its answer is written).
const DELAY: Duration = Duration::from_millis(250);

static TRIMMER: OnceLock<Option<SyncSender<()>>> = OnceLock::new();

/// Schedules a trim of the malloc heaps (a no-op where the allocator is not
/// glibc's). Callers ask only where the configuration says so
/// ([`crate::config::HostConfig::trim_memory`], `HOST_TRIM_MEMORY`).
pub fn release_soon() {
    let tx = TRIMMER.get_or_init(|| {
        let (tx, rx) = sync_channel(1);
        std::thread::Builder::new()
            .name("memory-trim".into())
            .spawn(move || trim_loop(rx))
            .ok()
            .map(|_| tx)
    });
    if let Some(tx) = tx {
        // A full channel: a trim is already due.
        if let Err(TrySendError::Disconnected(())) = tx.try_send(()) {
            trim();
        }
    }
}

fn trim_loop(rx: Receiver<()>) {
    while rx.recv().is_ok() {
        std::thread::sleep(DELAY);
        while rx.try_recv().is_ok() {}
        trim();
    }
}

/// Returns free heap memory of every malloc arena to the system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases the allocator's own free
    // memory, taking each arena's lock; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The process's resident memory in bytes (`VmRSS` of /proc/self/status),
/// where the system reports it.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
