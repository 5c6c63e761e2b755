//! Latency histograms and the run's summary (text and JSON).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// What one request came to.
pub struct Outcome {
    pub status: u16,
    pub latency: Duration,
    /// Time to the first server-sent event (streams only).
    pub first_event: Option<Duration>,
    /// `data:` events read (streams only).
    pub events: u64,
    /// Completion tokens the stream's usage event reported.
    pub tokens: Option<u64>,
    pub transport_error: Option<String>,
}

impl Outcome {
    pub fn transport(error: String) -> Outcome {
        Outcome {
            status: 0,
            latency: Duration::ZERO,
            first_event: None,
            events: 0,
            tokens: None,
            transport_error: Some(error),
        }
    }
}

/// Microsecond histograms, 3 significant digits, up to an hour.
fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).context("creating a latency histogram")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// One connection's (or, merged, all connections') statistics.
pub struct WorkerStats {
    latency: Histogram<u64>,
    first_event: Histogram<u64>,
    events: u64,
    tokens: u64,
    ok: u64,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    last_error: Option<String>,
}

impl WorkerStats {
    pub fn new() -> Result<WorkerStats> {
        Ok(WorkerStats {
            latency: histogram()?,
            first_event: histogram()?,
            events: 0,
            tokens: 0,
            ok: 0,
            statuses: BTreeMap::new(),
            transport_errors: 0,
            last_error: None,
        })
    }

    pub fn record(&mut self, o: &Outcome) -> Result<()> {
        if let Some(e) = &o.transport_error {
            self.transport_errors += 1;
            self.last_error = Some(e.clone());
            return Ok(());
        }
        *self.statuses.entry(o.status).or_default() += 1;
        if !(200..300).contains(&o.status) {
            return Ok(());
        }
        self.ok += 1;
        self.latency.record(micros(o.latency))?;
        if let Some(f) = o.first_event {
            self.first_event.record(micros(f))?;
        }
        self.events += o.events;
        self.tokens += o.tokens.unwrap_or(0);
        Ok(())
    }

    pub fn merge(&mut self, other: &WorkerStats) -> Result<()> {
        self.latency.add(&other.latency)?;
        self.first_event.add(&other.first_event)?;
        self.events += other.events;
        self.tokens += other.tokens;
        self.ok += other.ok;
        for (s, n) in &other.statuses {
            *self.statuses.entry(*s).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        if other.last_error.is_some() {
            self.last_error = other.last_error.clone();
        }
        Ok(())
    }
}

/// The whole run.
pub struct Summary {
    stats: WorkerStats,
    pub ok: u64,
    duration_s: f64,
    concurrency: usize,
    rate: Option<f64>,
    target: String,
}

const PERCENTILES: [f64; 5] = [50.0, 90.0, 99.0, 99.9, 100.0];

fn ms(h: &Histogram<u64>, p: f64) -> f64 {
    h.value_at_percentile(p) as f64 / 1e3
}

impl Summary {
    pub fn new(
        stats: WorkerStats,
        duration_s: f64,
        concurrency: usize,
        rate: Option<f64>,
        target: String,
    ) -> Summary {
        Summary {
            ok: stats.ok,
            stats,
            duration_s,
            concurrency,
            rate,
            target,
        }
    }

    /// Requests that did not succeed (non-2xx or transport errors).
    pub fn failed(&self) -> u64 {
        let non_2xx: u64 = self
            .stats
            .statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum();
        non_2xx + self.stats.transport_errors
    }

    fn latency_json(h: &Histogram<u64>) -> Value {
        if h.is_empty() {
            return Value::Null;
        }
        json!({
            "p50_ms": ms(h, 50.0), "p90_ms": ms(h, 90.0), "p99_ms": ms(h, 99.0),
            "p999_ms": ms(h, 99.9), "max_ms": ms(h, 100.0), "mean_ms": h.mean() / 1e3,
        })
    }

    pub fn to_json(&self) -> Value {
        let s = &self.stats;
        json!({
            "target": self.target,
            "mode": if self.rate.is_some() { "open" } else { "closed" },
            "rate": self.rate,
            "concurrency": self.concurrency,
            "duration_s": self.duration_s,
            "ok": s.ok,
            "failed": self.failed(),
            "requests_per_s": s.ok as f64 / self.duration_s,
            "events": s.events,
            "events_per_s": s.events as f64 / self.duration_s,
            "completion_tokens": s.tokens,
            "completion_tokens_per_s": s.tokens as f64 / self.duration_s,
            "latency": Self::latency_json(&s.latency),
            "first_event": Self::latency_json(&s.first_event),
            "statuses": s.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "transport_errors": s.transport_errors,
            "last_transport_error": s.last_error,
        })
    }

    pub fn text(&self) -> String {
        let s = &self.stats;
        let mode = match self.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".to_string(),
        };
        let mut out = format!(
            "{} | {} connections, {mode}, {} s\n{} ok, {} failed: {:.1} req/s",
            self.target,
            self.concurrency,
            self.duration_s,
            s.ok,
            self.failed(),
            s.ok as f64 / self.duration_s
        );
        let pct = |h: &Histogram<u64>| {
            PERCENTILES
                .iter()
                .map(|&p| format!("p{p}={:.2}", ms(h, p)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        if !s.latency.is_empty() {
            out += &format!("\nlatency ms: {}", pct(&s.latency));
        }
        if !s.first_event.is_empty() {
            out += &format!(
                "\nfirst event ms: {}\nevents: {} ({:.1}/s); completion tokens (usage): {} ({:.1}/s)",
                pct(&s.first_event),
                s.events,
                s.events as f64 / self.duration_s,
                s.tokens,
                s.tokens as f64 / self.duration_s
            );
        }
        if let Some(e) = &s.last_error {
            out += &format!("\nlast transport error: {e}");
        }
        out
    }
}
