//! A batch while a worker runs it: one reply slot per request (answered
//! once, early through `partial.complete` or by the batch's result), and
//! queued requests joining it (`partial.take-queued`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::replicas::Group;
use super::Batch;
use super::{Metrics, Pending};
use crate::runner::{JoinQueue, Output, RequestError};

/// The replica's queue of batches, shared by its workers.
pub(crate) type Shared = Arc<Group>;

type Reply = tokio::sync::oneshot::Sender<Result<Output, RequestError>>;

/// Where the answers of one running batch go, by request index (joiners
/// get the next indices).
pub(crate) struct Replies {
    slots: Mutex<Vec<Option<(Reply, Instant)>>>,
    metrics: Arc<Metrics>,
    endpoint: String,
}

impl Replies {
    pub fn new(batch: Batch, metrics: Arc<Metrics>, endpoint: String) -> Replies {
        Replies {
            slots: Mutex::new(
                batch
                    .into_iter()
                    .map(|p| Some((p.reply, p.enqueued)))
                    .collect(),
            ),
            metrics,
            endpoint,
        }
    }

    /// Adds a joining request's reply; returns its index.
    fn push(&self, p: Pending) -> Option<(usize, String, Option<crate::sandbox::StreamSender>)> {
        let mut s = self.slots.lock().ok()?;
        s.push(Some((p.reply, p.enqueued)));
        Some((s.len() - 1, p.request, p.stream))
    }

    /// Answers request `i` unless it was answered already.
    pub fn answer(&self, i: usize, a: Result<Output, RequestError>) {
        let slot = match self.slots.lock() {
            Ok(mut s) => s.get_mut(i).and_then(Option::take),
            Err(_) => None,
        };
        let Some((reply, enqueued)) = slot else {
            return;
        };
        match &a {
            Ok(o) => self
                .metrics
                .requests
                .with_label_values(&[&self.endpoint, &o.device])
                .inc(),
            Err(e) => self
                .metrics
                .errors
                .with_label_values(&[&self.endpoint, e.kind.as_str()])
                .inc(),
        }
        self.metrics
            .latency
            .with_label_values(&[&self.endpoint])
            .observe(enqueued.elapsed().as_secs_f64());
        let _ = reply.send(a);
    }

    /// Takes back every reply of a batch of `n` requests when none was
    /// answered and none joined it (so the batch can run elsewhere).
    pub fn reclaim(&self, n: usize) -> Option<Vec<(Reply, Instant)>> {
        let mut s = self.slots.lock().ok()?;
        if s.len() != n || s.iter().any(Option::is_none) {
            return None;
        }
        Some(s.drain(..).flatten().collect())
    }

    /// Answers every request not answered yet with `e`.
    pub fn answer_rest(&self, e: RequestError) {
        let n = self.slots.lock().map(|s| s.len()).unwrap_or(0);
        for i in 0..n {
            self.answer(i, Err(e.clone()));
        }
    }
}

/// Requests taken off the queue for a running batch that did not fit it;
/// the worker runs them next.
#[derive(Clone, Default)]
pub(crate) struct Stash(Arc<Mutex<Vec<Pending>>>);

impl Stash {
    /// Everything stashed, as one batch (`None` when empty).
    pub fn take_all(&self) -> Option<Batch> {
        let taken: Batch = self.0.lock().map(|mut s| s.drain(..).collect()).ok()?;
        (!taken.is_empty()).then_some(taken)
    }
}

/// The `take-queued` source of a running batch: stashed requests first, then
/// a batch from the endpoint's queue when no idle worker is waiting on it
/// (one that is would take it anyway); what does not fit is stashed.
pub(crate) fn joiners(rx: Shared, replies: Arc<Replies>, stash: Stash) -> JoinQueue {
    Box::new(move |max: usize| {
        let mut taken: Vec<Pending> = match stash.0.lock() {
            Ok(mut s) => {
                let n = max.min(s.len());
                s.drain(..n).collect()
            }
            Err(_) => Vec::new(),
        };
        if taken.len() < max {
            if let Some(mut batch) = rx.try_take().map(|job| job.batch) {
                let n = (max - taken.len()).min(batch.len());
                let rest = batch.split_off(n);
                taken.extend(batch);
                if !rest.is_empty() {
                    if let Ok(mut s) = stash.0.lock() {
                        s.extend(rest);
                    }
                }
            }
        }
        taken.into_iter().filter_map(|p| replies.push(p)).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    type Answer = oneshot::Receiver<Result<Output, RequestError>>;

    fn pending(request: &str) -> (Pending, Answer) {
        let (reply, rx) = oneshot::channel();
        let p = Pending {
            request: request.to_string(),
            cost: 1,
            enqueued: Instant::now(),
            reply,
            stream: None,
            span: tracing::Span::none(),
        };
        (p, rx)
    }

    fn error(message: &str) -> RequestError {
        RequestError::internal(message)
    }

    /// Joiners get the next indices, what does not fit is stashed for the
    /// next batch, and every request is answered exactly once.
    #[test]
    fn joiners_are_numbered_stashed_and_answered_once() {
        let (first, mut a0) = pending("a");
        let replies = Arc::new(Replies::new(
            vec![first],
            Arc::new(Metrics::new()),
            "e".into(),
        ));
        let metrics = Metrics::new();
        let built =
            super::super::replicas::build("e", &["cpu".into()], 1, Arc::default(), &metrics);
        let (b, mut a1) = pending("b");
        let (c, mut a2) = pending("c");
        let (d, _a3) = pending("d");
        let job = super::super::replicas::Job::new(vec![b, c, d]);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(built.router.dispatch(job));
        let stash = Stash::default();
        let mut queue = joiners(built.groups[0].clone(), replies.clone(), stash.clone());
        let got: Vec<(usize, String)> = queue(2).into_iter().map(|(i, r, _)| (i, r)).collect();
        assert_eq!(got, [(1, "b".to_string()), (2, "c".to_string())]);
        let rest = stash.take_all().expect("the third is stashed");
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].request, "d");
        assert!(queue(4).is_empty(), "nothing left to join");
        replies.answer(1, Err(error("first")));
        replies.answer(1, Err(error("second")));
        replies.answer_rest(error("rest"));
        let kind = |rx: &mut Answer| rx.try_recv().unwrap().unwrap_err().message;
        assert_eq!(kind(&mut a1), "first");
        assert_eq!(kind(&mut a0), "rest");
        assert_eq!(kind(&mut a2), "rest");
    }
}
