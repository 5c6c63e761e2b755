//! Prometheus metrics of all endpoints (rendered by `GET /metrics`).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Metric families, labelled by endpoint.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub errors: IntCounterVec,
    pub fallbacks: IntCounterVec,
    pub queue_depth: IntGaugeVec,
    pub batch_size: HistogramVec,
    pub latency: HistogramVec,
    /// HTTP responses by status (`host serve`): every rejection (401,
    /// 403, 408, 413, 429, ...) is counted here.
    pub http_responses: IntCounterVec,
    /// Per replica (`endpoint`, `replica` index, `device`): batches queued
    /// for or running on it, whether it is in rotation, batches finished.
    pub replica_load: IntGaugeVec,
    pub replica_up: IntGaugeVec,
    pub replica_batches: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "host_requests_total",
                "Requests answered, by endpoint and device",
            ),
            &["endpoint", "device"],
        )
        .expect("static metric definition");
        let errors = IntCounterVec::new(
            Opts::new(
                "host_errors_total",
                "Failed requests, by endpoint and error kind",
            ),
            &["endpoint", "kind"],
        )
        .expect("static metric definition");
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "host_fallbacks_total",
                "Batches retried on another device or a fresh instance",
            ),
            &["endpoint", "from", "to"],
        )
        .expect("static metric definition");
        let queue_depth = IntGaugeVec::new(
            Opts::new("host_queue_depth", "Requests waiting in the endpoint queue"),
            &["endpoint"],
        )
        .expect("static metric definition");
        let batch_size = HistogramVec::new(
            HistogramOpts::new("host_batch_size", "Requests per executed batch")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            &["endpoint"],
        )
        .expect("static metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "host_request_duration_seconds",
                "Time from enqueue to answer",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).expect("static buckets")),
            &["endpoint"],
        )
        .expect("static metric definition");
        let http_responses = IntCounterVec::new(
            Opts::new(
                "host_http_responses_total",
                "HTTP responses of host serve, by status code",
            ),
            &["status"],
        )
        .expect("static metric definition");
        let replica = ["endpoint", "replica", "device"];
        let replica_load = IntGaugeVec::new(
            Opts::new(
                "host_replica_load",
                "Batches queued for or running on a replica",
            ),
            &replica,
        )
        .expect("static metric definition");
        let replica_up = IntGaugeVec::new(
            Opts::new(
                "host_replica_in_rotation",
                "1 while a replica's device is in rotation, 0 while quarantined",
            ),
            &replica,
        )
        .expect("static metric definition");
        let replica_batches = IntCounterVec::new(
            Opts::new(
                "host_replica_batches_total",
                "Batches a replica finished (served, failed or handed to another replica)",
            ),
            &replica,
        )
        .expect("static metric definition");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(replica_load.clone()),
            Box::new(replica_up.clone()),
            Box::new(replica_batches.clone()),
            Box::new(http_responses.clone()),
            Box::new(errors.clone()),
            Box::new(fallbacks.clone()),
            Box::new(queue_depth.clone()),
            Box::new(batch_size.clone()),
            Box::new(latency.clone()),
        ] {
            registry.register(m).expect("unique metric names");
        }
        Metrics {
            registry,
            requests,
            errors,
            fallbacks,
            queue_depth,
            batch_size,
            latency,
            http_responses,
            replica_load,
            replica_up,
            replica_batches,
        }
    }

    /// Text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = prometheus::TextEncoder::new();
        let _ = prometheus::Encoder::encode(&enc, &self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Mean batch size of an endpoint so far.
    pub fn mean_batch_size(&self, endpoint: &str) -> f64 {
        let h = self.batch_size.with_label_values(&[endpoint]);
        let n = h.get_sample_count();
        if n == 0 {
            0.0
        } else {
            h.get_sample_sum() / n as f64
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
