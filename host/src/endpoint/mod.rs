//! Endpoints: the seed's endpoint API in Rust form.
//!
//! An endpoint is (name, skill, model, ordered device list, precision,
//! batching policy, instances). [`Endpoints`] holds them (`add`, `remove`,
//! `handler`, `status`); a [`Handler`] is the async callable that serves one
//! request. Each endpoint has a bounded queue (full means an immediate
//! `overloaded` error), a batcher task that groups queued requests by length
//! into batches under a size and token budget, and worker threads, each
//! owning a skill instance per device. A batch that fails as a whole (device
//! error, trapped instance) is retried on the next device of the list and
//! counted; every response names the device and precision that produced it.
//! With `replicas`, the workers are grouped per device ([`replicas`]) and
//! batches go to the least-loaded replica in rotation. The task contracts'
//! request and response shapes, which the HTTP adapters and the cost model
//! share, are in [`contract`].

mod batcher;
mod config;
pub mod contract;
mod metrics;
pub mod quarantine;
mod replicas;
mod running;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot};

pub use config::{BatchPolicy, EndpointConfig, EndpointsFile};
pub use metrics::Metrics;
pub use replicas::{parse_replicas, ReplicaStatus};
pub use worker::wait_for_workers;

use crate::runner::{Output, RequestError};
use crate::sandbox::Sandbox;
use crate::{ErrorKind, HostError};

/// A batch of queued requests.
pub(crate) type Batch = Vec<Pending>;

/// One queued request and where its answer goes.
pub(crate) struct Pending {
    pub request: String,
    /// Estimated tokens (for grouping and the token budget).
    pub cost: usize,
    pub enqueued: std::time::Instant,
    pub reply: oneshot::Sender<Result<Output, RequestError>>,
    /// Partial results, when the caller streams.
    pub stream: Option<crate::sandbox::StreamSender>,
    /// The request's `request` span (disabled unless the subscriber wants
    /// it): the parent of the batch it runs in.
    pub span: tracing::Span,
}

/// Numbers the `request` spans of this process.
static REQUEST_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The async callable of one endpoint.
#[derive(Clone)]
pub struct Handler {
    name: String,
    tx: mpsc::Sender<Pending>,
    cost: Arc<worker::CostModel>,
    metrics: Arc<Metrics>,
}

impl Handler {
    fn overloaded(&self) -> RequestError {
        RequestError::new(
            ErrorKind::Overloaded,
            format!("endpoint `{}`: queue is full, retry later", self.name),
        )
    }

    fn closed(&self) -> RequestError {
        RequestError::new(
            ErrorKind::Unavailable,
            format!("endpoint `{}` was removed", self.name),
        )
    }

    fn enqueue(
        &self,
        request: String,
    ) -> Result<oneshot::Receiver<Result<Output, RequestError>>, RequestError> {
        self.enqueue_with(request, None)
    }

    /// A queue entry for `request` and the receiver of its answer.
    fn pending(
        &self,
        request: String,
        stream: Option<crate::sandbox::StreamSender>,
    ) -> (Pending, oneshot::Receiver<Result<Output, RequestError>>) {
        let (reply, rx) = oneshot::channel();
        let cost = self.cost.estimate(&request);
        // Fields are only computed when the span is enabled.
        let span = tracing::debug_span!(
            "request",
            endpoint = %self.name,
            id = REQUEST_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            cost,
        );
        let p = Pending {
            request,
            cost,
            enqueued: std::time::Instant::now(),
            reply,
            stream,
            span,
        };
        (p, rx)
    }

    fn enqueue_with(
        &self,
        request: String,
        stream: Option<crate::sandbox::StreamSender>,
    ) -> Result<oneshot::Receiver<Result<Output, RequestError>>, RequestError> {
        let (p, rx) = self.pending(request, stream);
        match self.tx.try_send(p) {
            Ok(()) => {
                self.metrics
                    .queue_depth
                    .with_label_values(&[&self.name])
                    .inc();
                Ok(rx)
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics
                    .errors
                    .with_label_values(&[&self.name, "overloaded"])
                    .inc();
                Err(self.overloaded())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(self.closed()),
        }
    }

    /// Serves one request (a JSON object as text). A full queue fails at once
    /// with kind `overloaded`.
    pub async fn call(&self, request: String) -> Result<Output, RequestError> {
        let rx = self.enqueue(request)?;
        rx.await.unwrap_or_else(|_| Err(self.closed()))
    }

    /// Serves one request, streaming its partial results (JSON texts) to the
    /// returned receiver; the final answer comes through the oneshot.
    #[allow(clippy::type_complexity)]
    pub fn call_streaming(
        &self,
        request: String,
    ) -> Result<
        (
            mpsc::UnboundedReceiver<String>,
            oneshot::Receiver<Result<Output, RequestError>>,
        ),
        RequestError,
    > {
        let (tx, rx) = mpsc::unbounded_channel();
        let done = self.enqueue_with(request, Some(tx))?;
        Ok((rx, done))
    }

    /// Serves several requests, answers in order. They are queued in
    /// chunks of up to half the queue's capacity, each chunk before any of
    /// it is awaited so they share batches: a request larger than the queue
    /// is served, not refused for its size; a queue full with other
    /// clients' work fails the excess (kind `overloaded`).
    pub async fn call_many(&self, requests: Vec<String>) -> Vec<Result<Output, RequestError>> {
        let chunk = (self.tx.max_capacity() / 2).max(1);
        let mut out = Vec::with_capacity(requests.len());
        let mut rest = requests.into_iter().peekable();
        while rest.peek().is_some() {
            let pending: Vec<_> = rest.by_ref().take(chunk).map(|r| self.enqueue(r)).collect();
            for p in pending {
                out.push(match p {
                    Ok(rx) => rx.await.unwrap_or_else(|_| Err(self.closed())),
                    Err(e) => Err(e),
                });
            }
        }
        out
    }

    /// Queues a request, waiting for room instead of failing when the queue
    /// is full (for batch jobs such as `host run`).
    pub async fn call_waiting(
        &self,
        request: String,
    ) -> oneshot::Receiver<Result<Output, RequestError>> {
        let (p, rx) = self.pending(request, None);
        if self.tx.send(p).await.is_ok() {
            self.metrics
                .queue_depth
                .with_label_values(&[&self.name])
                .inc();
        }
        rx
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The estimated token count the batcher uses for a request.
    pub fn estimate(&self, request: &str) -> usize {
        self.cost.estimate(request)
    }
}

/// A running endpoint.
struct Endpoint {
    config: EndpointConfig,
    handler: Handler,
    device: String,
    precision: String,
    batcher: tokio::task::JoinHandle<()>,
    quarantine: Arc<quarantine::Quarantine>,
    groups: Vec<Arc<replicas::Group>>,
    /// The sandbox limits the skill was granted.
    limits: Option<crate::sandbox::Granted>,
}

/// What `status` reports per endpoint.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EndpointStatus {
    pub name: String,
    pub skill: String,
    pub model: String,
    pub devices: Vec<String>,
    /// The device the endpoint loaded on (the first of the list that could).
    pub device: String,
    pub precision: String,
    pub instances: usize,
    pub queue_depth: i64,
    pub max_batch_size: usize,
    /// Devices out of rotation after failures ([`quarantine`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<quarantine::QuarantinedDevice>,
    /// Per replica, for an endpoint with a `replicas` setting.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaStatus>,
    /// The sandbox limits the skill's instances were granted (what it
    /// declared, capped by the operator's ceiling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::sandbox::Granted>,
}

/// Endpoint failures.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint `{0}` already exists")]
    Exists(String),
    #[error("unknown endpoint `{0}`")]
    Unknown(String),
    #[error("endpoint `{name}`: {message}")]
    Config { name: String, message: String },
    #[error("endpoint `{name}` failed to load: {source}")]
    Load { name: String, source: HostError },
}

/// The set of endpoints of one process.
pub struct Endpoints {
    sandbox: Arc<Sandbox>,
    map: RwLock<HashMap<String, Endpoint>>,
    pub metrics: Arc<Metrics>,
}

impl Endpoints {
    /// Endpoints whose skills run in `sandbox`, configured as its
    /// configuration says ([`Sandbox::config`]).
    pub fn new(sandbox: Arc<Sandbox>) -> Self {
        Endpoints {
            sandbox,
            map: RwLock::new(HashMap::new()),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// The host configuration the endpoints run with (their sandbox's).
    pub fn config(&self) -> &crate::config::HostConfig {
        self.sandbox.config()
    }

    /// The seed's `init_endpoints`: adds every endpoint of a config list.
    pub async fn init(&self, configs: Vec<EndpointConfig>) -> Result<(), EndpointError> {
        for c in configs {
            self.add(c).await?;
        }
        Ok(())
    }

    /// Loads an endpoint (every instance, falling through its device list)
    /// and starts serving it.
    pub async fn add(&self, config: EndpointConfig) -> Result<(), EndpointError> {
        config.validate()?;
        if self
            .map
            .read()
            .map(|m| m.contains_key(&config.name))
            .unwrap_or(false)
        {
            return Err(EndpointError::Exists(config.name.clone()));
        }
        let sandbox = self.sandbox.clone();
        let mut c = config.clone();
        c.skill = config.pinned_skill();
        let metrics = self.metrics.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            // The sandbox keeps each component's grant by digest.
            let digest = crate::skills::resolve_pinned(&c.skill, &sandbox.config().skills_dirs)
                .ok()
                .and_then(|(_, path, pin)| pin.or(crate::digest::Digest::of_file(&path).ok()));
            let started = worker::start(sandbox.clone(), &c, metrics);
            started.map(|s| (s, digest.and_then(|d| sandbox.granted(&d))))
        })
        .await
        .map_err(|e| EndpointError::Config {
            name: config.name.clone(),
            message: format!("loader panicked: {e}"),
        })?
        .map_err(|source| EndpointError::Load {
            name: config.name.clone(),
            source,
        })?;
        let (started, limits) = loaded;
        let (tx, rx) = mpsc::channel(config.batching.queue_capacity);
        let handler = Handler {
            name: config.name.clone(),
            tx,
            cost: started.cost.clone(),
            metrics: self.metrics.clone(),
        };
        let batcher = tokio::spawn(batcher::run(
            config.clone(),
            rx,
            started.router,
            self.metrics.clone(),
        ));
        let ep = Endpoint {
            handler,
            device: started.device,
            precision: started.precision,
            config: config.clone(),
            batcher,
            quarantine: started.quarantine,
            groups: started.groups,
            limits,
        };
        let mut map = self.map.write().map_err(|_| EndpointError::Config {
            name: config.name.clone(),
            message: "registry lock poisoned".into(),
        })?;
        if map.contains_key(&config.name) {
            return Err(EndpointError::Exists(config.name));
        }
        map.insert(config.name.clone(), ep);
        Ok(())
    }

    /// Removes an endpoint: new calls fail with `unknown endpoint`, queued and
    /// in-flight requests are still answered, then its instances (and their
    /// device memory) are dropped. Returns once it is drained.
    pub async fn remove(&self, name: &str) -> Result<(), EndpointError> {
        let ep = self
            .map
            .write()
            .ok()
            .and_then(|mut m| m.remove(name))
            .ok_or_else(|| EndpointError::Unknown(name.to_string()))?;
        // Dropping our sender closes the queue once in-flight callers drop
        // their handler clones; the batcher drains what is queued, hands it
        // to the workers and ends, which ends them and frees their instances.
        let Endpoint {
            handler, batcher, ..
        } = ep;
        drop(handler);
        let _ = batcher.await;
        Ok(())
    }

    /// The handler of an endpoint.
    pub fn handler(&self, name: &str) -> Option<Handler> {
        self.map.read().ok()?.get(name).map(|e| e.handler.clone())
    }

    /// Names of all endpoints.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .map
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Status of every endpoint.
    pub fn status(&self) -> Vec<EndpointStatus> {
        let map = match self.map.read() {
            Ok(m) => m,
            Err(_) => return Vec::new(),
        };
        let mut v: Vec<EndpointStatus> = map
            .values()
            .map(|e| EndpointStatus {
                name: e.config.name.clone(),
                skill: e.config.skill.clone(),
                model: e.config.model.clone(),
                devices: (if e.config.replicas.is_empty() {
                    &e.config.devices
                } else {
                    &e.config.replicas
                })
                .iter()
                .map(|d| d.to_string())
                .collect(),
                device: e.device.clone(),
                precision: e.precision.clone(),
                instances: e.config.instances,
                queue_depth: self
                    .metrics
                    .queue_depth
                    .with_label_values(&[&e.config.name])
                    .get(),
                max_batch_size: e.config.batching.max_batch_size,
                quarantined: e.quarantine.snapshot(),
                replicas: if e.config.replicas.is_empty() {
                    Vec::new()
                } else {
                    replicas::status(&e.groups, &e.quarantine)
                },
                limits: e.limits,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Brings the per-replica gauges of `/metrics` up to date (whether
    /// each replica is in rotation changes with time).
    pub fn refresh_metrics(&self) {
        if let Ok(map) = self.map.read() {
            for e in map.values() {
                replicas::refresh(&e.groups, &e.quarantine);
            }
        }
    }

    /// Removes every endpoint, draining each.
    pub async fn shutdown(&self) {
        for name in self.names() {
            let _ = self.remove(&name).await;
        }
    }
}
