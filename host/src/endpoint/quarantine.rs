//! Devices of an endpoint taken out of rotation after a failure.
//!
//! When a batch fails on a device and then succeeds on another, the device
//! (not the requests) was at fault: it is quarantined for a backoff that
//! doubles with each failure (5 s up to 60 s), so batches stop paying for a
//! failed attempt first. When the backoff ends the next batch probes the
//! device again; success puts it back in rotation. Failures of batches that
//! were already on the device when it went out count, but do not extend
//! the backoff. `/health` shows the quarantined devices, and each change is
//! logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_secs(5);
const MAX: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
struct Entry {
    until: Instant,
    backoff: Duration,
    failures: u64,
    error: String,
}

/// A quarantined device as `/health` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct QuarantinedDevice {
    pub device: String,
    /// Seconds until the next probe (0: the next batch probes it).
    pub seconds_left: f64,
    /// Failures in a row.
    pub failures: u64,
    pub last_error: String,
}

/// The quarantine of one endpoint, shared by its workers.
#[derive(Debug, Default)]
pub struct Quarantine {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Quarantine {
    /// Whether batches should skip `device` now.
    pub fn is_out(&self, device: &str) -> bool {
        self.entries
            .lock()
            .map(|m| m.get(device).is_some_and(|e| e.until > Instant::now()))
            .unwrap_or(false)
    }

    /// Records a failure of `device`; returns how long it is out.
    pub fn fail(&self, endpoint: &str, device: &str, error: &str) -> Duration {
        let Ok(mut m) = self.entries.lock() else {
            return Duration::ZERO;
        };
        let e = m.entry(device.to_string()).or_insert(Entry {
            until: Instant::now(),
            backoff: Duration::ZERO,
            failures: 0,
            error: String::new(),
        });
        e.failures += 1;
        e.error = error.chars().take(300).collect();
        let now = Instant::now();
        if e.until > now {
            // Already out: a batch it had before it went out.
            return e.until - now;
        }
        e.backoff = if e.backoff.is_zero() {
            FIRST
        } else {
            (e.backoff * 2).min(MAX)
        };
        e.until = now + e.backoff;
        tracing::warn!(
            "endpoint `{endpoint}`: device {device} failed a batch that another device then served \
             ({} in a row: {}); out of rotation for {} s",
            e.failures,
            e.error,
            e.backoff.as_secs()
        );
        e.backoff
    }

    /// Records a success of `device`: back in rotation.
    pub fn ok(&self, endpoint: &str, device: &str) {
        if let Ok(mut m) = self.entries.lock() {
            if m.remove(device).is_some() {
                tracing::info!(
                    "endpoint `{endpoint}`: device {device} served a batch again; back in rotation"
                );
            }
        }
    }

    /// The quarantined devices.
    pub fn snapshot(&self) -> Vec<QuarantinedDevice> {
        let now = Instant::now();
        let Ok(m) = self.entries.lock() else {
            return Vec::new();
        };
        let mut v: Vec<QuarantinedDevice> = m
            .iter()
            .map(|(d, e)| QuarantinedDevice {
                device: d.clone(),
                seconds_left: e.until.saturating_duration_since(now).as_secs_f64(),
                failures: e.failures,
                last_error: e.error.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.device.cmp(&b.device));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_success_clears() {
        let q = Quarantine::default();
        assert!(!q.is_out("cuda"));
        assert_eq!(q.fail("e", "cuda", "boom"), FIRST);
        assert!(q.is_out("cuda") && !q.is_out("cpu"));
        // While out, a failure (a batch it had already) counts only.
        assert!(q.fail("e", "cuda", "boom") <= FIRST);
        assert_eq!(q.snapshot()[0].failures, 2);
        // Failed probes after the backoff double it, up to MAX.
        let probe_fails = |q: &Quarantine| {
            if let Some(e) = q.entries.lock().unwrap().get_mut("cuda") {
                e.until = Instant::now();
            }
            q.fail("e", "cuda", "boom")
        };
        assert_eq!(probe_fails(&q), FIRST * 2);
        for _ in 0..10 {
            probe_fails(&q);
        }
        assert_eq!(q.snapshot()[0].failures, 13);
        assert_eq!(probe_fails(&q), MAX);
        q.ok("e", "cuda");
        assert!(!q.is_out("cuda") && q.snapshot().is_empty());
    }
}
