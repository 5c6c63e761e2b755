//! Replicas: an endpoint's instances grouped by the device they serve on.
//!
//! Every endpoint has one or more replica groups, each a device and the
//! worker threads (instances) that serve on it, fed by its own bounded
//! channel of batches. An endpoint without a `replicas` setting is one group
//! that falls through its device list as before; with `replicas =
//! ["cuda:0", "cuda:1"]` (or `cuda:*`, every visible CUDA device) there is
//! one group per entry, `instances` workers each.
//!
//! The batcher hands each batch to the least-loaded replica in rotation
//! ([`Router::dispatch`]): load is the batches queued for and running on a
//! replica, per instance. A batch that fails as a whole on a replica is
//! handed back to the batcher ([`Handoff`]) and dispatched to a replica it
//! has not tried yet; the replica that serves it puts the failed devices in
//! the endpoint's [`Quarantine`] (out of rotation with backoff, then probed
//! back in by the next batch), so no new batches go to them meanwhile.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use tokio::sync::{mpsc, Notify};

use super::quarantine::Quarantine;
use super::Batch;
use super::Metrics;
use crate::backend::{BackendError, Device};
use crate::runner::RequestError;
use crate::ErrorKind;

/// A batch on its way to a replica, with the replicas that failed it.
pub(crate) struct Job {
    pub batch: Batch,
    /// Replica indices that already tried the batch.
    pub tried: Vec<usize>,
    /// (device, error) of each failed attempt, for the quarantine.
    pub failed: Vec<(String, String)>,
}

impl Job {
    pub fn new(batch: Batch) -> Job {
        Job {
            batch,
            tried: Vec::new(),
            failed: Vec::new(),
        }
    }

    /// Answers every request of the job with `e`.
    pub fn fail(self, e: RequestError) {
        for p in self.batch {
            let _ = p.reply.send(Err(e.clone()));
        }
    }
}

/// One replica: a device and the workers serving on it.
pub(crate) struct Group {
    pub index: usize,
    pub device: String,
    pub instances: usize,
    rx: Mutex<mpsc::Receiver<Job>>,
    /// Batches sent to this replica and not yet taken by a worker.
    queued: AtomicUsize,
    /// Workers of this replica running a batch.
    busy: AtomicUsize,
    load_gauge: IntGauge,
    up_gauge: IntGauge,
    batches: IntCounter,
}

impl Group {
    fn load(&self) -> usize {
        self.queued.load(Ordering::SeqCst) + self.busy.load(Ordering::SeqCst)
    }

    fn show_load(&self) {
        self.load_gauge.set(self.load() as i64);
    }

    /// Waits for the next batch (blocking: worker threads only); `None`
    /// once the endpoint is gone. The caller runs it, then calls [`done`].
    ///
    /// [`done`]: Group::done
    pub fn recv(&self) -> Option<Job> {
        let job = self.rx.lock().ok()?.blocking_recv()?;
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.queued.fetch_sub(1, Ordering::SeqCst);
        // Counted when taken: a client answered by this batch then sees it
        // in `/health` and `/metrics` alike.
        self.batches.inc();
        Some(job)
    }

    /// A worker finished the batch it took with [`Group::recv`].
    pub fn done(&self) {
        self.busy.fetch_sub(1, Ordering::SeqCst);
        self.show_load();
    }

    /// A queued batch, if one is waiting and no idle worker is waiting
    /// for it (an idle worker holds the lock while it waits, and would
    /// take it anyway): for requests joining a running batch.
    pub fn try_take(&self) -> Option<Job> {
        let job = self.rx.try_lock().ok()?.try_recv().ok()?;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        self.show_load();
        Some(job)
    }
}

/// What `/health` shows per replica.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReplicaStatus {
    pub replica: usize,
    pub device: String,
    pub instances: usize,
    /// False while the device is quarantined.
    pub in_rotation: bool,
    /// Batches queued for or running on it.
    pub load: usize,
    /// Batches it finished (served, failed or handed on).
    pub batches: u64,
}

/// The worker side: hands a failed batch back for another replica.
#[derive(Clone)]
pub(crate) struct Handoff {
    retry: mpsc::UnboundedSender<Job>,
    replicas: usize,
}

impl Handoff {
    /// Whether a batch that tried `tried` can go to another replica.
    pub fn possible(&self, tried: &[usize]) -> bool {
        (0..self.replicas).any(|i| !tried.contains(&i)) && !self.retry.is_closed()
    }

    /// Sends `job` to the batcher for another replica; gives it back when
    /// the batcher is gone (the endpoint is shutting down).
    pub fn send(&self, job: Job) -> Result<(), Job> {
        self.retry.send(job).map_err(|e| e.0)
    }
}

/// The batcher side: the replicas' channels and the pick.
pub(crate) struct Router {
    endpoint: String,
    groups: Vec<Arc<Group>>,
    senders: Vec<mpsc::Sender<Job>>,
    quarantine: Arc<Quarantine>,
    /// Workers waiting for a batch, over all replicas.
    pub idle: Arc<AtomicUsize>,
    /// Signalled whenever a worker becomes idle.
    pub freed: Arc<Notify>,
    /// Batches handed back by workers.
    pub retries: mpsc::UnboundedReceiver<Job>,
    next: AtomicUsize,
}

/// A router, its groups (for the workers and the status) and the handoff.
pub(crate) struct Built {
    pub router: Router,
    pub groups: Vec<Arc<Group>>,
    pub handoff: Handoff,
}

/// Builds the replica groups of an endpoint: one per entry of `devices`
/// (each entry's display name), `instances` workers each.
pub(crate) fn build(
    endpoint: &str,
    devices: &[String],
    instances: usize,
    quarantine: Arc<Quarantine>,
    metrics: &Metrics,
) -> Built {
    let mut groups = Vec::new();
    let mut senders = Vec::new();
    for (index, device) in devices.iter().enumerate() {
        let (tx, rx) = mpsc::channel::<Job>(instances.max(1));
        let labels = [endpoint, &index.to_string(), device.as_str()];
        groups.push(Arc::new(Group {
            index,
            device: device.clone(),
            instances,
            rx: Mutex::new(rx),
            queued: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            load_gauge: metrics.replica_load.with_label_values(&labels),
            up_gauge: metrics.replica_up.with_label_values(&labels),
            batches: metrics.replica_batches.with_label_values(&labels),
        }));
        senders.push(tx);
    }
    let (retry, retries) = mpsc::unbounded_channel();
    let router = Router {
        endpoint: endpoint.to_string(),
        groups: groups.clone(),
        senders,
        quarantine,
        idle: Arc::new(AtomicUsize::new(0)),
        freed: Arc::new(Notify::new()),
        retries,
        next: AtomicUsize::new(0),
    };
    let handoff = Handoff {
        retry,
        replicas: groups.len(),
    };
    refresh(&groups, &router.quarantine);
    Built {
        router,
        groups,
        handoff,
    }
}

/// Updates the per-replica gauges (in rotation, load).
pub(crate) fn refresh(groups: &[Arc<Group>], quarantine: &Quarantine) {
    for g in groups {
        g.up_gauge.set(i64::from(!quarantine.is_out(&g.device)));
        g.show_load();
    }
}

/// The status of each replica.
pub(crate) fn status(groups: &[Arc<Group>], quarantine: &Quarantine) -> Vec<ReplicaStatus> {
    refresh(groups, quarantine);
    groups
        .iter()
        .map(|g| ReplicaStatus {
            replica: g.index,
            device: g.device.clone(),
            instances: g.instances,
            in_rotation: !quarantine.is_out(&g.device),
            load: g.load(),
            batches: g.batches.get(),
        })
        .collect()
}

impl Router {
    /// The replicas a job may go to, best first: those it has not tried,
    /// in rotation before quarantined ones (a quarantined replica gets
    /// batches only when no other is left), then by load per instance;
    /// ties rotate.
    fn ranked(&self, tried: &[usize]) -> Vec<usize> {
        let n = self.groups.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let mut order: Vec<usize> = (0..n)
            .map(|k| (start + k) % n)
            .filter(|i| !tried.contains(i))
            .collect();
        let out: Vec<bool> = (0..n)
            .map(|i| self.quarantine.is_out(&self.groups[i].device))
            .collect();
        if order.iter().any(|&i| !out[i]) {
            order.retain(|&i| !out[i]);
        }
        // Stable: equal loads keep the rotated order.
        order.sort_by(|&a, &b| {
            let (ga, gb) = (&self.groups[a], &self.groups[b]);
            (ga.load() * gb.instances.max(1)).cmp(&(gb.load() * ga.instances.max(1)))
        });
        order
    }

    /// Sends `job` to the best replica with room, waiting for room when
    /// every candidate is full; a job no replica can take is answered with
    /// an error.
    pub async fn dispatch(&self, mut job: Job) {
        loop {
            let order = self.ranked(&job.tried);
            if order.is_empty() {
                let (device, error) = job.failed.last().cloned().unwrap_or_default();
                return job.fail(RequestError::new(
                    ErrorKind::Backend,
                    format!(
                        "endpoint `{}`: every replica failed the batch (last {device}: {error})",
                        self.endpoint
                    ),
                ));
            }
            let mut open = false;
            for i in order {
                self.groups[i].queued.fetch_add(1, Ordering::SeqCst);
                match self.senders[i].try_send(job) {
                    Ok(()) => {
                        self.groups[i].show_load();
                        return;
                    }
                    Err(e) => {
                        self.groups[i].queued.fetch_sub(1, Ordering::SeqCst);
                        open |= matches!(e, mpsc::error::TrySendError::Full(_));
                        job = e.into_inner();
                    }
                }
            }
            if !open {
                return job.fail(RequestError::new(
                    ErrorKind::Unavailable,
                    format!("endpoint `{}` has no running workers", self.endpoint),
                ));
            }
            // Every candidate is full: wait for a worker to free up (the
            // timeout covers a wake-up taken by the batcher's own wait).
            let _ = tokio::time::timeout(Duration::from_millis(5), self.freed.notified()).await;
        }
    }
}

/// Parses a replica list: comma-separated devices, where `cuda:*` stands
/// for every visible CUDA device (an error when there is none). The same
/// device may appear more than once (two replicas on one GPU).
pub fn parse_replicas(text: &str) -> Result<Vec<Device>, BackendError> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part.eq_ignore_ascii_case("cuda:*") {
            let gpus = visible_cuda();
            if gpus.is_empty() {
                return Err(BackendError::UnknownDevice(
                    "cuda:* (no CUDA device is visible; `host devices` says why)".into(),
                ));
            }
            out.extend(gpus);
        } else {
            out.push(part.parse()?);
        }
    }
    Ok(out)
}

/// The CUDA devices that can serve (their probe takes no configuration).
fn visible_cuda() -> Vec<Device> {
    crate::backend::cuda::probe()
        .into_iter()
        .filter(|s| s.available)
        .filter_map(|s| s.device.parse::<Device>().ok())
        .filter(|d| matches!(d, Device::Cuda(_)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(devices: &[&str], instances: usize) -> Built {
        let devices: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
        let metrics = Metrics::new();
        build("e", &devices, instances, Arc::default(), &metrics)
    }

    #[test]
    fn picks_the_least_loaded_replica_in_rotation() {
        let b = router(&["cpu", "openvino", "faulty"], 2);
        let g = &b.groups;
        g[0].busy.store(2, Ordering::SeqCst);
        g[1].queued.store(1, Ordering::SeqCst);
        assert_eq!(b.router.ranked(&[]), vec![2, 1, 0]);
        b.router.quarantine.fail("e", "faulty", "boom");
        assert_eq!(b.router.ranked(&[]), vec![1, 0], "quarantined goes out");
        assert_eq!(b.router.ranked(&[1]), vec![0], "tried replicas are skipped");
        assert_eq!(
            b.router.ranked(&[0, 1]),
            vec![2],
            "a quarantined one is the last resort"
        );
        assert!(b.router.ranked(&[0, 1, 2]).is_empty());
        let s = status(g, &b.router.quarantine);
        assert!(s[0].in_rotation && !s[2].in_rotation);
        assert_eq!((s[0].load, s[1].load), (2, 1));
    }

    #[test]
    fn equal_loads_rotate() {
        let b = router(&["cpu", "cpu", "cpu"], 1);
        let firsts: Vec<usize> = (0..3).map(|_| b.router.ranked(&[])[0]).collect();
        assert_eq!(firsts, vec![0, 1, 2]);
    }

    #[test]
    fn handoff_needs_an_untried_replica() {
        let b = router(&["cpu", "cpu"], 1);
        assert!(b.handoff.possible(&[0]));
        assert!(!b.handoff.possible(&[0, 1]));
        drop(b.router);
        assert!(!b.handoff.possible(&[]), "the batcher is gone");
    }

    #[test]
    fn parses_replica_lists() {
        let l = parse_replicas("cpu, openvino,cpu").unwrap();
        assert_eq!(
            l,
            vec![Device::Cpu, Device::OpenVino("CPU".into()), Device::Cpu]
        );
        assert!(parse_replicas("tpu").is_err());
        assert!(parse_replicas("").unwrap().is_empty());
    }
}
