//! Where requests that join a running generation loop ([`super::run`])
//! go: the rows no running request holds, and whether a joiner fits them,
//! the cross-attention state and the self-attention cache.

use super::run::Job;

/// A joiner given rows, not yet encoded.
pub(super) struct Placed {
    pub id: usize,
    pub job: Job,
    /// Its first row (its beams' rows follow).
    pub base: usize,
}

/// Rows, of `rows`, that no request in `active` holds.
pub(super) fn free_rows<A: Holds>(active: &[A], rows: usize) -> Vec<usize> {
    let mut held = vec![false; rows];
    for a in active {
        let (base, n) = a.held();
        held.iter_mut().skip(base).take(n).for_each(|h| *h = true);
    }
    (0..rows).filter(|&r| !held[r]).collect()
}

/// Anything holding a range of rows.
pub(super) trait Holds {
    /// First row and row count.
    fn held(&self) -> (usize, usize);
}

impl Holds for Placed {
    fn held(&self) -> (usize, usize) {
        (self.base, self.job.settings.num_beams.max(1) as usize)
    }
}

/// The first row of a run of free rows (held by neither `active` nor
/// `placed`) long enough for `job`'s beams, if its source fits the
/// cross-attention state (`source` tokens) and, with `slots`, the tokens
/// it may feed from step `t` fit the cache; `None`: it must wait.
pub(super) fn place<A: Holds>(
    job: &Job,
    active: &[A],
    placed: &[Placed],
    rows: usize,
    source: usize,
    t: u64,
    slots: Option<u64>,
) -> Option<usize> {
    let n = job.settings.num_beams.max(1) as usize;
    if job.source.len() > source || job.prompt.len() != 1 {
        return None;
    }
    if slots.is_some_and(|s| t.saturating_add(job.settings.max_new_tokens) > s) {
        return None;
    }
    let mut held = vec![false; rows];
    let spans = active.iter().map(Holds::held);
    for (base, k) in spans.chain(placed.iter().map(Holds::held)) {
        held.iter_mut().skip(base).take(k).for_each(|h| *h = true);
    }
    let mut run = 0;
    for (r, h) in held.iter().enumerate() {
        run = if *h { 0 } else { run + 1 };
        if run == n {
            return Some(r + 1 - n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Span(usize, usize);
    impl Holds for Span {
        fn held(&self) -> (usize, usize) {
            (self.0, self.1)
        }
    }

    #[test]
    fn free_rows_are_those_no_request_holds() {
        assert_eq!(free_rows(&[Span(0, 2), Span(4, 1)], 6), vec![2, 3, 5]);
        assert_eq!(free_rows::<Span>(&[], 2), vec![0, 1]);
    }
}
