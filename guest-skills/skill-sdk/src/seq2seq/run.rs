//! The generation loop of encoder-decoder skills (text2text, Whisper):
//! encode a batch once, then decode one token per row per step until every
//! request has stopped, answering each request as soon as it stops.
//!
//! Rows: a greedy or sampled request has one decoder row, a beam search
//! request one per beam (its rows are contiguous). Every row of a loop is
//! at the same decoder position, so requests are grouped by the length of
//! their decoder prompt (the start token, then tokens forced before
//! generation: Whisper's language, task and `<|notimestamps|>`). A prompt
//! token may be chosen by the model ([`PromptToken::Best`]: Whisper's
//! language detection reads the logits after the start token).
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

use super::rows::{
    best_of, full_candidates, log_norm, named, row_tensor, stop_hit, stream, take_one,
};
use super::{Cache, Seq2Seq, Step};

pub use super::jobs::{Finish, Finished, Job, PromptToken};
use crate::generation::beam::BeamSearch;
use crate::generation::constraints::{self, Step as Verdict};
use crate::generation::sample::Sampler;
use crate::generation::{candidates, Candidate};
use crate::runtime::{CompiledGraph, Session};
use crate::tensors::{bool_tensor, f32_values, i64_tensor, i64_values};
use crate::{Error, NamedTensor, Tensor};

/// Candidates a sampled row asks for (the sampler's `top_k` is capped here).
const SAMPLE_CANDIDATES: usize = 100;
/// Fewest cache slots (caches grow in powers of two from here).
const MIN_SLOTS: u64 = 64;

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
    /// Runs the encode graph in `session` for `jobs` (indices into the
    /// jobs given to [`generate`]), `rows[i]` decoder rows for `jobs[i]`.
    fn encode(&self, session: &Session, jobs: &[usize], rows: &[usize]) -> Result<(), Error>;
    /// Text of generated tokens (stop strings, streaming).
    fn text(&self, tokens: &[i64]) -> Result<String, Error>;
    /// The answer of job `job`.
    fn respond(&self, job: usize, done: &Finished) -> Result<Self::Answer, Error>;
    /// Called with each answer as soon as its request stops (jobs with an
    /// `index`): a skill answers the host early here.
    fn early(&self, _index: u32, _answer: &Result<Self::Answer, Error>) {}
}

/// Milliseconds since the first call (wasip2 clocks).
fn now_ms() -> f64 {
    thread_local! {
        static ORIGIN: std::time::Instant = std::time::Instant::now();
    }
    ORIGIN.with(|o| o.elapsed().as_secs_f64() * 1e3)
}

/// Generates for `jobs`; one result each, in order. Jobs with prompts of
/// different lengths run one group after the other.
pub fn generate<T: Task>(
    dec: &Decoder,
    task: &T,
    jobs: &[Job],
) -> Result<Vec<Result<T::Answer, Error>>, Error> {
    let mut out: Vec<Option<Result<T::Answer, Error>>> = (0..jobs.len()).map(|_| None).collect();
    let mut lengths: Vec<usize> = jobs.iter().map(|j| j.prompt.len()).collect();
    lengths.sort_unstable();
    lengths.dedup();
    for len in lengths {
        let group: Vec<usize> = (0..jobs.len())
            .filter(|&j| jobs[j].prompt.len() == len)
            .collect();
        match Loop::new(dec, task, jobs, &group).and_then(|l| l.run()) {
            Ok(results) => {
                for (j, r) in group.iter().zip(results) {
                    out[*j] = Some(r);
                }
            }
            Err(e) => group.iter().for_each(|&j| out[j] = Some(Err(e.clone()))),
        }
    }
    Ok(out
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(crate::internal("generation ended without an answer"))))
        .collect())
}

/// How one request decodes.
enum Decoding {
    /// Greedy or sampled: one row.
    Single {
        tokens: Vec<i64>,
        sampler: Sampler,
        finish: Option<Finish>,
        /// Text streamed so far (when the caller streams).
        streamed: Option<String>,
        /// Sum of the chosen tokens' renormalised log-probabilities.
        sum: f64,
    },
    Beam(BeamSearch),
}

/// One request in the loop.
struct Active<'a> {
    job: &'a Job<'a>,
    /// Its index in the jobs given to [`generate`].
    at: usize,
    /// The prompt so far (chosen tokens filled in as they are chosen).
    prompt: Vec<i64>,
    /// First decoder row.
    base: usize,
    rows: usize,
    decoding: Decoding,
    answered: bool,
    first_logits: Option<Tensor>,
    logits_at: Option<Vec<f32>>,
}

impl Active<'_> {
    fn done(&self) -> bool {
        match &self.decoding {
            Decoding::Single { finish, .. } => finish.is_some(),
            Decoding::Beam(b) => b.done(),
        }
    }

    fn generated(&self, r: usize) -> &[i64] {
        match &self.decoding {
            Decoding::Single { tokens, .. } => tokens,
            Decoding::Beam(b) => b.sequences().nth(r).unwrap_or(&[]),
        }
    }

    /// The decoder sequence (prompt included) of row `r` of this request.
    fn sequence(&self, r: usize) -> Vec<i64> {
        self.prompt
            .iter()
            .chain(self.generated(r))
            .copied()
            .collect()
    }

    /// How many candidates a row needs before bans.
    fn wanted(&self) -> usize {
        let s = &self.job.settings;
        match &self.decoding {
            Decoding::Beam(b) => b.wanted(),
            Decoding::Single { .. } if s.sampling.do_sample => {
                (s.sampling.top_k as usize).clamp(1, SAMPLE_CANDIDATES)
            }
            Decoding::Single { .. } => 1,
        }
    }
}

/// The loop over one group of jobs with prompts of one length.
struct Loop<'a, T: Task> {
    dec: &'a Decoder,
    task: &'a T,
    active: Vec<Active<'a>>,
    rows: usize,
    prompt_len: usize,
    session: Session,
    started: f64,
    encoded: f64,
}

impl<'a, T: Task> Loop<'a, T> {
    fn new(
        dec: &'a Decoder,
        task: &'a T,
        jobs: &'a [Job<'a>],
        group: &[usize],
    ) -> Result<Loop<'a, T>, Error> {
        let started = now_ms();
        let mut active = Vec::with_capacity(group.len());
        let mut rows = 0;
        for &at in group {
            let job = &jobs[at];
            let n = job.settings.num_beams.max(1) as usize;
            let decoding = match n {
                1 => Decoding::Single {
                    tokens: Vec::new(),
                    sampler: Sampler::new(job.settings.sampling.clone()),
                    finish: None,
                    streamed: job
                        .index
                        .is_some_and(crate::partial::wanted)
                        .then(String::new),
                    sum: 0.0,
                },
                _ => Decoding::Beam(BeamSearch::new(job.settings)),
            };
            let first = match job.prompt.first() {
                Some(PromptToken::Fixed(t)) => *t,
                _ => {
                    return Err(crate::internal(
                        "a decoder prompt starts with a fixed token",
                    ))
                }
            };
            active.push(Active {
                job,
                at,
                prompt: vec![first],
                base: rows,
                rows: n,
                decoding,
                answered: false,
                first_logits: None,
                logits_at: None,
            });
            rows += n;
        }
        let session = Session::new();
        let rows_of: Vec<usize> = active.iter().map(|a| a.rows).collect();
        task.encode(&session, group, &rows_of)?;
        let prompt_len = jobs[group[0]].prompt.len();
        Ok(Loop {
            dec,
            task,
            active,
            rows,
            prompt_len,
            session,
            started,
            encoded: now_ms(),
        })
    }

    fn run(mut self) -> Result<Vec<Result<T::Answer, Error>>, Error> {
        let longest = self
            .active
            .iter()
            .map(|a| a.job.settings.max_new_tokens)
            .max()
            .unwrap_or(1);
        let p = self.prompt_len as u64;
        let cache = match self.dec.slots {
            true => Cache::Slots(
                (longest + p)
                    .max(MIN_SLOTS)
                    .checked_next_power_of_two()
                    .unwrap_or(u64::MAX),
            ),
            false => Cache::Growing,
        };
        let mut tokens: Vec<i64> = self
            .active
            .iter()
            .flat_map(|a| std::iter::repeat_n(a.prompt[0], a.rows))
            .collect();
        let mut beam_idx: Vec<i64> = (0..self.rows as i64).collect();
        let beams = self
            .active
            .iter()
            .any(|a| matches!(a.decoding, Decoding::Beam(_)));
        let mut results: Vec<Option<Result<T::Answer, Error>>> =
            (0..self.active.len()).map(|_| None).collect();
        let vocab = self.dec.model.dims.vocab;
        for t in 0..p - 1 + longest {
            // Position t + 1 is a prompt token, or generated.
            let next = t as usize + 1;
            let prompting = next < self.prompt_len;
            let mut verdicts: Vec<Verdict> = Vec::with_capacity(self.rows);
            let mut needed = 1;
            let mut full = false;
            for a in &self.active {
                let choose = prompting && matches!(a.job.prompt[next], PromptToken::Best(_));
                full |= choose;
                full |= !prompting && a.job.timestamps.is_some() && !a.done();
                full |= !prompting && a.job.scores && !a.done();
                full |= a.job.logits_at == Some(t as usize);
                full |= !prompting && next == self.prompt_len && a.job.return_logits;
                for r in 0..a.rows {
                    let v = match a.done() || prompting {
                        true => Verdict::Forced(vec![]),
                        false => constraints::step(
                            a.job.settings,
                            &a.sequence(r),
                            self.prompt_len,
                            a.job.source,
                        ),
                    };
                    needed = needed.max(v.candidates_needed(a.wanted()));
                    verdicts.push(v);
                }
            }
            let top_k = (needed.max(8) as u64)
                .checked_next_power_of_two()
                .unwrap_or(u64::MAX)
                .min(vocab) as u32;
            let step = Step {
                cache,
                top_k,
                reorder: beams && t >= p,
                logits: full,
                logprobs: beams,
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
                if a.job.logits_at == Some(t as usize) {
                    a.logits_at = Some(row_logits(a.base)?.to_vec());
                }
            }
            if prompting {
                for a in &mut self.active {
                    let token = match &a.job.prompt[next] {
                        PromptToken::Fixed(t) => *t,
                        PromptToken::Best(ids) => best_of(row_logits(a.base)?, ids)?,
                    };
                    a.prompt.push(token);
                    (a.base..a.base + a.rows).for_each(|r| tokens[r] = token);
                }
                continue;
            }
            let k = top_k as usize;
            for (i, a) in self.active.iter_mut().enumerate() {
                if a.done() {
                    continue;
                }
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
                if a.done() && !a.answered {
                    let done = finished(a, self.started, self.encoded, self.rows);
                    let answer = self.task.respond(a.at, &done);
                    if let Some(index) = a.job.index {
                        self.task.early(index, &answer);
                    }
                    results[i] = Some(answer);
                    a.answered = true;
                }
            }
            // Rows of stopped requests keep their cache rows and feed padding.
            for a in &self.active {
                if a.done() {
                    for r in a.base..a.base + a.rows {
                        beam_idx[r] = r as i64;
                        tokens[r] = a.job.settings.pad;
                    }
                }
            }
            if self.active.iter().all(|a| a.done()) {
                break;
            }
            if !beams {
                beam_idx
                    .iter_mut()
                    .enumerate()
                    .for_each(|(r, b)| *b = r as i64);
            }
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(crate::internal("generation ended without an answer")))
            })
            .collect())
    }

    /// Runs decode step `t` (the token at decoder position `t` per row).
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
                let mask: Vec<bool> = (0..n).map(|j| j <= t).collect();
                inputs.push(named("cache_slot", i64_tensor(vec![1], &[t as i64])));
                inputs.push(named("cache_mask", bool_tensor(vec![1, n], &mask)));
                n
            }
        };
        match model.buckets() {
            Some(bk) => {
                let b: Vec<i64> = (0..keys as i64)
                    .map(|j| bk.causal_bucket(j - t as i64))
                    .collect();
                inputs.push(named("buckets", i64_tensor(vec![1, keys], &b)));
            }
            None => {
                let p = t as i64 + model.position_offset();
                inputs.push(named("position", i64_tensor(vec![1], &[p])));
            }
        }
        let graph = self.dec.step(step)?;
        self.session.run(&graph, &inputs)
    }
}

/// Applies one step's processed candidates `cands` (one list per row) to
/// request `a`: its next tokens, its beams' parents.
fn advance<T: Task>(
    task: &T,
    a: &mut Active,
    cands: &[Vec<Candidate>],
    norms: &[f64],
    tokens: &mut [i64],
    beam_idx: &mut [i64],
) {
    let s = a.job.settings;
    match &mut a.decoding {
        Decoding::Single {
            tokens: out,
            sampler,
            finish,
            streamed,
            sum,
        } => {
            let row = cands.first().map(Vec::as_slice).unwrap_or(&[]);
            let next = match row.first() {
                None => 0,
                Some(best) => {
                    let vals: Vec<f32> = row.iter().map(|c| c.logprob).collect();
                    let ids: Vec<i64> = row.iter().map(|c| c.token).collect();
                    sampler.pick(best.token, &vals, &ids)
                }
            };
            let norm = norms.first().copied().unwrap_or(0.0);
            *sum += row
                .iter()
                .find(|c| c.token == next)
                .map_or(f64::NEG_INFINITY, |c| c.logprob as f64 - norm);
            out.push(next);
            tokens[a.base] = next;
            if s.eos.contains(&next) {
                *finish = Some(Finish::Eos);
            } else if !s.stop.is_empty() && stop_hit(task, out, &s.stop) {
                *finish = Some(Finish::Stop);
            } else if out.len() as u64 >= s.max_new_tokens {
                *finish = Some(Finish::Length);
            }
            if let (Some(sent), None, Some(index)) = (streamed.as_mut(), *finish, a.job.index) {
                stream(task, index, out, sent);
            }
        }
        Decoding::Beam(b) => {
            let moves = b.advance_scored(cands, norms);
            for (j, (&p, &tok)) in moves.parent.iter().zip(&moves.tokens).enumerate() {
                beam_idx[a.base + j] = (a.base + p) as i64;
                tokens[a.base + j] = tok;
            }
        }
    }
}

/// The answer material of a request that stopped.
fn finished(a: &Active, started: f64, encoded: f64, rows: usize) -> Finished {
    let (tokens, finish, sum) = match &a.decoding {
        Decoding::Single {
            tokens,
            finish,
            sum,
            ..
        } => (tokens.clone(), finish.unwrap_or(Finish::Length), *sum),
        Decoding::Beam(b) => {
            let best = b.best().to_vec();
            let eos = best.last().is_some_and(|t| a.job.settings.eos.contains(t));
            let finish = if eos { Finish::Eos } else { Finish::Length };
            (best, finish, b.best_sum())
        }
    };
    Finished {
        prompt: a.prompt.clone(),
        tokens,
        finish,
        first_logits: a.first_logits.clone(),
        logprob_sum: a.job.scores.then_some(sum),
        logits_at: a.logits_at.clone(),
        encode_ms: encoded - started,
        decode_ms: now_ms() - encoded,
        rows,
    }
}
