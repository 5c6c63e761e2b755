//! The generation loop of encoder-decoder skills (text2text, Whisper):
//! encode a batch once, then decode one token per row per step until every
//! request has stopped, answering each request as soon as it stops.
//!
//! Rows: a greedy or sampled request has one decoder row, a beam search
//! request one per beam (its rows are contiguous). A batch's requests start
//! together, so requests are grouped by the length of their decoder prompt
//! (the start token, then tokens forced before generation: Whisper's
//! language, task and `<|notimestamps|>`). A prompt token may be chosen by
//! the model ([`PromptToken::Best`]: Whisper's language detection reads the
//! logits after the start token).
//!
//! Requests queued meanwhile join the rows of stopped ones ([`joins`]:
//! where the task takes them and the model allows): each row then has its
//! own start step, position and cache entries.
//!
//! A step's graph returns each row's best candidates; enough of them that
//! the tokens the processors ban cannot hide the choice (the graph is
//! chosen per step by that count, in powers of two). Rows whose rules need
//! the whole vocabulary (Whisper's timestamps, and requests that score
//! their tokens) get the raw logits instead and are processed here
//! ([`rows`]).
//!
//! A request may also ask for the sum of its tokens' log-probabilities as
//! transformers' `output_scores` gives them to Whisper's fallback (each
//! token's, renormalised over what the processors leave, along the chosen
//! beam) and for the raw logits after one prompt position (Whisper's
//! no-speech probability after `<|startoftranscript|>`).

use std::cell::{Ref, RefCell};
use std::collections::HashMap;

use super::active::{advance, finished, Active, Decoding};
use super::joins::{self, Placed};
use super::rows::{best_of, full_candidates, log_norm, named, row_tensor, take_one};
use super::{Cache, Seq2Seq, Step};

pub use super::jobs::{Finish, Finished, Job, PromptToken};
use crate::generation::candidates;
use crate::generation::constraints::{self, Step as Verdict};
use crate::runtime::{CompiledGraph, Session};
use crate::tensors::{bool_tensor, f32_values, i64_tensor, i64_values};
use crate::{Error, NamedTensor};

/// Candidates a sampled row asks for (the sampler's `top_k` is capped here).
pub(super) const SAMPLE_CANDIDATES: usize = 100;
/// Fewest cache slots (caches grow in powers of two from here).
const MIN_SLOTS: u64 = 64;
/// Steps between looks at the queue while rows are free.
const JOIN_POLL_STEPS: u64 = 8;
/// Steps after which a loop takes no more queued requests (a `handle`
/// call's CPU time is bounded; the queue's requests then start a batch).
const JOIN_STEPS_MAX: u64 = 2048;

/// A model's decode graphs, built on first use, one per [`Step`].
pub struct Decoder {
    pub model: Seq2Seq,
    steps: RefCell<HashMap<Step, CompiledGraph>>,
    /// Fixed-slot caches (backends that replay repeated shapes).
    pub slots: bool,
}

impl Decoder {
    pub fn new(model: Seq2Seq, slots: bool) -> Decoder {
        Decoder {
            model,
            steps: RefCell::new(HashMap::new()),
            slots,
        }
    }

    /// The decode graph of `step`, built on first use.
    fn step(&self, step: Step) -> Result<Ref<'_, CompiledGraph>, Error> {
        if !self.steps.borrow().contains_key(&step) {
            let g = self.model.decode_graph(step)?;
            self.steps.borrow_mut().insert(step, g);
        }
        Ref::filter_map(self.steps.borrow(), |m| m.get(&step))
            .map_err(|_| crate::internal("decode graph missing"))
    }
}

/// What a skill provides to the loop.
pub trait Task {
    /// What a finished request turns into.
    type Answer;
    /// Runs the encode graph in `session` for `jobs` (job ids: indices into
    /// the jobs given to [`generate`], or joiners' ids from [`Task::poll`]),
    /// `rows[i]` decoder rows for `jobs[i]`; returns the source length it
    /// encoded (the cross-attention state's).
    fn encode(&self, session: &Session, jobs: &[usize], rows: &[usize]) -> Result<usize, Error>;
    /// Requests queued meanwhile, at most `max`, to join the running batch:
    /// each with a job id the task chose (past the batch's: `respond` is
    /// asked by it) and an `index` (they are answered through
    /// [`Task::early`] only). A task answers requests it cannot parse
    /// itself. None by default (no joins).
    fn poll(&self, _max: u32) -> Vec<(usize, Job)> {
        Vec::new()
    }
    /// Runs the model's join graph ([`Seq2Seq::join_graph`]): encodes
    /// `jobs` (joiner ids), their source padded to `source` tokens, into the
    /// decoder rows `take` marks, row `r` from encoder row `from[r]`.
    fn encode_join(
        &self,
        _session: &Session,
        _jobs: &[usize],
        _from: &[i64],
        _take: &[bool],
        _source: usize,
    ) -> Result<(), Error> {
        Err(crate::internal("this task takes no joiners"))
    }
    /// Text of generated tokens (stop strings, streaming).
    fn text(&self, tokens: &[i64]) -> Result<String, Error>;
    /// The answer of job `job`.
    fn respond(&self, job: usize, done: &Finished) -> Result<Self::Answer, Error>;
    /// Called with each answer as soon as its request stops (jobs with an
    /// `index`): a skill answers the host early here.
    fn early(&self, _index: u32, _answer: &Result<Self::Answer, Error>) {}
}

/// Milliseconds since the first call (wasip2 clocks).
pub(super) fn now_ms() -> f64 {
    thread_local! {
        static ORIGIN: std::time::Instant = std::time::Instant::now();
    }
    ORIGIN.with(|o| o.elapsed().as_secs_f64() * 1e3)
}

/// Generates for `jobs`; one result each, in order. Jobs with prompts of
/// different lengths run one group after the other; requests that joined
/// a group but found no room run after it.
pub fn generate<T: Task>(
    dec: &Decoder,
    task: &T,
    jobs: Vec<Job>,
) -> Result<Vec<Result<T::Answer, Error>>, Error> {
    let n = jobs.len();
    let mut out: Vec<Option<Result<T::Answer, Error>>> = (0..n).map(|_| None).collect();
    let mut lengths: Vec<usize> = jobs.iter().map(|j| j.prompt.len()).collect();
    lengths.sort_unstable();
    lengths.dedup();
    let mut groups: Vec<Vec<(usize, Job)>> = lengths.iter().map(|_| Vec::new()).collect();
    for (id, job) in jobs.into_iter().enumerate() {
        let g = lengths
            .iter()
            .position(|&l| l == job.prompt.len())
            .unwrap_or(0);
        groups[g].push((id, job));
    }
    let mut pending: std::collections::VecDeque<Vec<(usize, Job)>> = groups.into();
    while let Some(group) = pending.pop_front() {
        let ids: Vec<(usize, Option<u32>)> = group.iter().map(|(id, j)| (*id, j.index)).collect();
        let mut deferred = Vec::new();
        let results = Loop::new(dec, task, group).and_then(|l| l.run(&mut deferred));
        match results {
            Ok(results) => {
                for (id, r) in results {
                    if let Some(slot) = out.get_mut(id) {
                        *slot = Some(r);
                    }
                }
            }
            Err(e) => {
                for (id, index) in ids {
                    match out.get_mut(id) {
                        Some(slot) => *slot = Some(Err(e.clone())),
                        // A joiner is answered only through `early`.
                        None => {
                            if let Some(i) = index {
                                task.early(i, &Err(e.clone()));
                            }
                        }
                    }
                }
            }
        }
        if !deferred.is_empty() {
            pending.push_back(deferred);
        }
    }
    Ok(out
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(crate::internal("generation ended without an answer"))))
        .collect())
}

/// Answers by job id.
type Answers<A> = Vec<(usize, Result<A, Error>)>;

/// The loop over one group of jobs with prompts of one length.
struct Loop<'a, T: Task> {
    dec: &'a Decoder,
    task: &'a T,
    active: Vec<Active>,
    /// Decoder rows (fixed for the loop; rows of stopped requests are free).
    rows: usize,
    prompt_len: usize,
    session: Session,
    /// Source length of the cross-attention state.
    source: usize,
    /// Each row's start step (the step its request's position 0 ran at).
    starts: Vec<u64>,
    /// Whether a request has joined (decode steps then take per-row
    /// positions and masks).
    joined: bool,
    /// The cache kind, fixed for the loop.
    cache: Cache,
}

impl<'a, T: Task> Loop<'a, T> {
    fn new(dec: &'a Decoder, task: &'a T, group: Vec<(usize, Job)>) -> Result<Loop<'a, T>, Error> {
        let started = now_ms();
        let prompt_len = group.first().map_or(1, |(_, j)| j.prompt.len());
        let mut active = Vec::with_capacity(group.len());
        let mut rows = 0;
        for (id, job) in group {
            let a = Active::new(id, job, rows, 0, started)?;
            rows += a.rows;
            active.push(a);
        }
        let session = Session::new();
        let ids: Vec<usize> = active.iter().map(|a| a.id).collect();
        let rows_of: Vec<usize> = active.iter().map(|a| a.rows).collect();
        let source = task.encode(&session, &ids, &rows_of)?;
        let encoded = now_ms();
        active.iter_mut().for_each(|a| a.encoded = encoded);
        let longest = active
            .iter()
            .map(|a| a.job.settings.max_new_tokens)
            .max()
            .unwrap_or(1);
        let cache = match dec.slots {
            true => Cache::Slots(
                (longest + prompt_len as u64)
                    .max(MIN_SLOTS)
                    .checked_next_power_of_two()
                    .unwrap_or(u64::MAX),
            ),
            false => Cache::Growing,
        };
        Ok(Loop {
            dec,
            task,
            active,
            rows,
            prompt_len,
            session,
            source,
            starts: vec![0; rows],
            joined: false,
            cache,
        })
    }

    /// Runs the loop; requests that asked to join but found no room go to
    /// `deferred`. A failure is also told to the joiners still running.
    fn run(mut self, deferred: &mut Vec<(usize, Job)>) -> Result<Answers<T::Answer>, Error> {
        let mut results = Vec::new();
        match self.steps(&mut results, deferred) {
            Ok(()) => Ok(results),
            Err(e) => {
                for a in &self.active {
                    if let (true, Some(i)) = (a.start > 0, a.job.index) {
                        self.task.early(i, &Err(e.clone()));
                    }
                }
                Err(e)
            }
        }
    }

    /// The last step (exclusive) the running requests may need.
    fn end(&self) -> u64 {
        let p = self.prompt_len as u64;
        self.active
            .iter()
            .map(|a| a.start + p - 1 + a.job.settings.max_new_tokens)
            .max()
            .unwrap_or(0)
    }

    fn steps(
        &mut self,
        results: &mut Answers<T::Answer>,
        deferred: &mut Vec<(usize, Job)>,
    ) -> Result<(), Error> {
        let mut tokens: Vec<i64> = vec![0; self.rows];
        for a in &self.active {
            tokens[a.base..a.base + a.rows].fill(a.prompt[0]);
        }
        let mut beam_idx: Vec<i64> = (0..self.rows as i64).collect();
        let vocab = self.dec.model.dims.vocab;
        let p = self.prompt_len as u64;
        let may_join = self.prompt_len == 1 && self.dec.model.joinable();
        let mut t: u64 = 0;
        while t < self.end() {
            // Per request: position `t - start` is fed; position
            // `t - start + 1` is a prompt token, or generated. Joiners have
            // a one-token prompt, so prompting is the first group's alone.
            let prompting = t + 1 < p;
            let beams = self
                .active
                .iter()
                .any(|a| matches!(a.decoding, Decoding::Beam(_)));
            let mut verdicts: Vec<Verdict> = vec![Verdict::Forced(vec![]); self.rows];
            let mut needed = 1;
            let mut full = false;
            for a in &self.active {
                let at = (t - a.start) as usize;
                let next = at + 1;
                let choose = prompting && matches!(a.job.prompt[next], PromptToken::Best(_));
                full |= choose;
                full |= !prompting && a.job.timestamps.is_some() && !a.done();
                full |= !prompting && a.job.scores && !a.done();
                full |= a.job.logits_at == Some(at);
                full |= !prompting && next == self.prompt_len && a.job.return_logits;
                for r in 0..a.rows {
                    let v = match a.done() || prompting {
                        true => Verdict::Forced(vec![]),
                        false => constraints::step(
                            &a.job.settings,
                            &a.sequence(r),
                            self.prompt_len,
                            &a.job.source,
                        ),
                    };
                    needed = needed.max(v.candidates_needed(a.wanted()));
                    verdicts[a.base + r] = v;
                }
            }
            let top_k = (needed.max(8) as u64)
                .checked_next_power_of_two()
                .unwrap_or(u64::MAX)
                .min(vocab) as u32;
            let step = Step {
                cache: self.cache,
                top_k,
                reorder: beams && t >= p,
                logits: full,
                logprobs: beams,
                joins: self.joined,
            };
            let mut outputs = self.run_step(step, t, &tokens, &beam_idx)?;
            let values = f32_values(&take_one(&mut outputs, "top_values")?)?;
            let indices = i64_values(&take_one(&mut outputs, "top_indices")?)?;
            let logits = match step.logits {
                true => Some(f32_values(&take_one(&mut outputs, "logits")?)?),
                false => None,
            };
            let width = vocab as usize;
            let row_logits = |row: usize| -> Result<&[f32], Error> {
                logits
                    .as_ref()
                    .and_then(|l| l.get(row * width..(row + 1) * width))
                    .ok_or_else(|| crate::internal("logits missing for a row that needs them"))
            };
            for a in &mut self.active {
                if a.job.logits_at == Some((t - a.start) as usize) {
                    a.logits_at = Some(row_logits(a.base)?.to_vec());
                }
            }
            if prompting {
                let next = t as usize + 1;
                for a in &mut self.active {
                    let token = match &a.job.prompt[next] {
                        PromptToken::Fixed(t) => *t,
                        PromptToken::Best(ids) => best_of(row_logits(a.base)?, ids)?,
                    };
                    a.prompt.push(token);
                    tokens[a.base..a.base + a.rows].fill(token);
                }
                t += 1;
                continue;
            }
            let k = top_k as usize;
            let mut stopped = Vec::new();
            for (i, a) in self.active.iter_mut().enumerate() {
                if a.done() {
                    continue;
                }
                let next = (t - a.start) as usize + 1;
                if next == self.prompt_len && a.job.return_logits {
                    a.first_logits = Some(row_tensor(row_logits(a.base)?));
                }
                let mut cands = Vec::with_capacity(a.rows);
                let mut norms = Vec::with_capacity(a.rows);
                let sampled = a.job.settings.sampling.do_sample;
                for r in 0..a.rows {
                    let row = a.base + r;
                    let forced = matches!(verdicts[row], Verdict::Forced(_));
                    let whole = a.job.timestamps.is_some() || a.job.scores;
                    let (c, norm) = match (whole, forced) {
                        // A forced token: log-probability 0, renormalised 0.
                        (_, true) => (verdicts[row].apply(&[]), 0.0),
                        (true, false) => full_candidates(
                            row_logits(row)?,
                            &verdicts[row],
                            a.job.timestamps.as_ref(),
                            a.generated(r),
                            a.wanted(),
                        ),
                        (false, false) => {
                            let c = verdicts[row].apply(&candidates(
                                &values[row * k..(row + 1) * k],
                                &indices[row * k..(row + 1) * k],
                            ));
                            (c, 0.0)
                        }
                    };
                    // Sampling renormalises over the sampler's candidates.
                    let norm = match sampled && !forced {
                        true => log_norm(&c),
                        false => norm,
                    };
                    cands.push(c);
                    norms.push(norm);
                }
                advance(self.task, a, &cands, &norms, &mut tokens, &mut beam_idx);
                if a.done() {
                    stopped.push(i);
                }
            }
            // Stopped requests are answered and leave; their rows are free.
            let mut gone: Vec<Active> = (stopped.into_iter().rev())
                .map(|i| self.active.remove(i))
                .collect();
            gone.reverse();
            for a in gone {
                let done = finished(&a, self.rows);
                let answer = self.task.respond(a.id, &done);
                if let Some(index) = a.job.index {
                    self.task.early(index, &answer);
                }
                results.push((a.id, answer));
            }
            if self.active.is_empty() {
                break;
            }
            // Free rows keep their cache rows and feed padding.
            let pad = self.active[0].job.settings.pad;
            for r in joins::free_rows(&self.active, self.rows) {
                beam_idx[r] = r as i64;
                tokens[r] = pad;
            }
            if !beams {
                beam_idx
                    .iter_mut()
                    .enumerate()
                    .for_each(|(r, b)| *b = r as i64);
            }
            t += 1;
            if may_join && t.is_multiple_of(JOIN_POLL_STEPS) && t < JOIN_STEPS_MAX {
                self.join(t, &mut tokens, &mut beam_idx, deferred)?;
            }
        }
        // Every request stops by its max_new_tokens within `end`.
        for a in std::mem::take(&mut self.active) {
            let answer = Err(crate::internal("generation ended without an answer"));
            if let Some(index) = a.job.index {
                self.task.early(index, &answer);
            }
            results.push((a.id, answer));
        }
        Ok(())
    }

    /// Takes queued requests into free rows before step `t`: each into
    /// enough free rows in a row, if its source fits the state and its
    /// tokens the cache; the others go to `deferred`.
    fn join(
        &mut self,
        t: u64,
        tokens: &mut [i64],
        beam_idx: &mut [i64],
        deferred: &mut Vec<(usize, Job)>,
    ) -> Result<(), Error> {
        let free = joins::free_rows(&self.active, self.rows);
        if free.is_empty() {
            return Ok(());
        }
        let slots = match self.cache {
            Cache::Slots(n) => Some(n),
            Cache::Growing => None,
        };
        let mut taken = vec![false; self.rows];
        let mut placed: Vec<Placed> = Vec::new();
        for (id, job) in self.task.poll(free.len() as u32) {
            match joins::place(
                &job,
                &self.active,
                &placed,
                self.rows,
                self.source,
                t,
                slots,
            ) {
                Some(base) => {
                    let n = job.settings.num_beams.max(1) as usize;
                    taken[base..base + n].fill(true);
                    placed.push(Placed { id, job, base });
                }
                None => deferred.push((id, job)),
            }
        }
        if placed.is_empty() {
            return Ok(());
        }
        let started = now_ms();
        let mut from = vec![0i64; self.rows];
        for (j, p) in placed.iter().enumerate() {
            let n = p.job.settings.num_beams.max(1) as usize;
            from[p.base..p.base + n].fill(j as i64);
        }
        let ids: Vec<usize> = placed.iter().map(|p| p.id).collect();
        self.task
            .encode_join(&self.session, &ids, &from, &taken, self.source)?;
        let encoded = now_ms();
        for p in placed {
            let mut a = Active::new(p.id, p.job, p.base, t, started)?;
            a.encoded = encoded;
            for r in a.base..a.base + a.rows {
                self.starts[r] = t;
                tokens[r] = a.prompt[0];
                beam_idx[r] = r as i64;
            }
            self.active.push(a);
        }
        self.active.sort_by_key(|a| a.base);
        self.joined = true;
        Ok(())
    }

    /// Runs decode step `t`: each row feeds the token at its position
    /// (`t` less its start step).
    fn run_step(
        &self,
        step: Step,
        t: u64,
        tokens: &[i64],
        beam_idx: &[i64],
    ) -> Result<Vec<NamedTensor>, Error> {
        let model = &self.dec.model;
        let rows = tokens.len() as u64;
        let mut inputs = vec![named("input_ids", i64_tensor(vec![rows, 1], tokens))];
        if step.reorder {
            inputs.push(named("beam_idx", i64_tensor(vec![rows], beam_idx)));
        }
        let keys = match step.cache {
            Cache::Growing => t + 1,
            Cache::Slots(n) => {
                inputs.push(named("cache_slot", i64_tensor(vec![1], &[t as i64])));
                n
            }
        };
        // Slot (or cache entry) j holds the token fed at step j.
        match (step.joins, step.cache) {
            (true, _) => {
                let mask: Vec<bool> = (self.starts.iter())
                    .flat_map(|&s| (0..keys).map(move |j| j >= s && j <= t))
                    .collect();
                inputs.push(named("cache_mask", bool_tensor(vec![rows, keys], &mask)));
            }
            (false, Cache::Slots(_)) => {
                let mask: Vec<bool> = (0..keys).map(|j| j <= t).collect();
                inputs.push(named("cache_mask", bool_tensor(vec![1, keys], &mask)));
            }
            (false, Cache::Growing) => {}
        }
        match model.buckets() {
            Some(bk) => {
                let b: Vec<i64> = (0..keys as i64)
                    .map(|j| bk.causal_bucket(j - t as i64))
                    .collect();
                inputs.push(named("buckets", i64_tensor(vec![1, keys], &b)));
            }
            None => {
                let off = model.position_offset();
                match step.joins {
                    true => {
                        let p: Vec<i64> =
                            self.starts.iter().map(|&s| (t - s) as i64 + off).collect();
                        inputs.push(named("position", i64_tensor(vec![rows, 1], &p)));
                    }
                    false => {
                        inputs.push(named("position", i64_tensor(vec![1], &[t as i64 + off])));
                    }
                }
            }
        }
        let graph = self.dec.step(step)?;
        self.session.run(&graph, &inputs)
    }
}
