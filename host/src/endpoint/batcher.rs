//! The per-endpoint batcher: takes queued requests, groups them by
//! estimated length and cuts batches under the size and padded-token
//! budgets. It never holds a request back while a worker is idle; while all
//! workers are busy it gathers companions until one frees up, the batch is
//! full, or `max_wait` has passed. Each batch goes to the least-loaded
//! replica ([`super::replicas`]); batches a replica failed come back here
//! and go to another one first.

use std::sync::Arc;

use std::sync::atomic::Ordering;
use tokio::sync::mpsc;

use tokio::time::{sleep_until, Instant};

use super::replicas::{Job, Router};
use super::Batch;
use super::{EndpointConfig, Metrics, Pending};

/// Cuts a length-sorted window into batches: at most `max_size` requests and
/// at most `max_tokens` padded tokens (longest x count) each; a single
/// request over the budget still gets its own batch.
pub(crate) fn cut(mut window: Vec<Pending>, max_size: usize, max_tokens: usize) -> Vec<Batch> {
    window.sort_by_key(|p| p.cost);
    let mut out = Vec::new();
    let mut cur: Batch = Vec::new();
    for p in window {
        let longest = cur
            .last()
            .map(|q: &Pending| q.cost)
            .unwrap_or(0)
            .max(p.cost);
        if !cur.is_empty() && (cur.len() == max_size || longest * (cur.len() + 1) > max_tokens) {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(p);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

pub(crate) async fn run(
    config: EndpointConfig,
    mut rx: mpsc::Receiver<Pending>,
    mut router: Router,
    metrics: Arc<Metrics>,
) {
    let policy = config.batching.clone();
    let depth = metrics.queue_depth.with_label_values(&[&config.name]);
    loop {
        // Batches a replica failed go to another one before new work.
        let first = tokio::select! {
            biased;
            Some(job) = router.retries.recv() => {
                router.dispatch(job).await;
                continue;
            }
            p = rx.recv() => match p {
                Some(p) => p,
                None => break,
            },
        };
        let mut window = vec![first];
        let deadline = Instant::now() + policy.max_wait();
        while window.len() < policy.max_batch_size {
            if let Ok(p) = rx.try_recv() {
                window.push(p);
                continue;
            }
            if policy.max_wait_ms == 0
                || (policy.dispatch_when_idle && router.idle.load(Ordering::SeqCst) > 0)
            {
                break;
            }
            tokio::select! {
                r = rx.recv() => match r {
                    Some(p) => window.push(p),
                    None => break,
                },
                _ = router.freed.notified(), if policy.dispatch_when_idle => break,
                _ = sleep_until(deadline) => break,
            }
        }
        // Whatever else is already queued joins the window, so that length
        // grouping has more to choose from.
        while window.len() < policy.max_batch_size * 4 {
            match rx.try_recv() {
                Ok(p) => window.push(p),
                Err(_) => break,
            }
        }
        depth.sub(window.len() as i64);
        for batch in cut(window, policy.max_batch_size, policy.max_batch_tokens) {
            router.dispatch(Job::new(batch)).await;
        }
    }
    // Queue closed and drained: dropping `router` ends the workers after
    // the batches already handed to them.
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(cost: usize) -> Pending {
        let (reply, _rx) = tokio::sync::oneshot::channel();
        Pending {
            request: String::new(),
            cost,
            enqueued: std::time::Instant::now(),
            reply,
            stream: None,
            span: tracing::Span::none(),
        }
    }

    #[test]
    fn cuts_by_size_and_token_budget() {
        let w: Vec<Pending> = [5, 1, 3, 100, 2, 4].into_iter().map(pending).collect();
        let b = cut(w, 4, 12);
        let costs: Vec<Vec<usize>> = b
            .iter()
            .map(|x| x.iter().map(|p| p.cost).collect())
            .collect();
        // sorted 1 2 3 (3x3=9) | 4 5 (5x2=10) | 100 (alone, over budget)
        assert_eq!(costs, vec![vec![1, 2, 3], vec![4, 5], vec![100]]);
        let b = cut((0..10).map(|_| pending(1)).collect(), 4, 1000);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
    }
}
