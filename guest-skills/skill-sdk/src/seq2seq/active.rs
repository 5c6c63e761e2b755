//! One request in the generation loop ([`super::run`]): how it decodes
//! (one row, or beams), how a step's candidates advance it, and what it
//! answers with when it stops.

use super::joins;
use super::rows::{stop_hit, stream};
use super::run::{now_ms, Task, SAMPLE_CANDIDATES};
use crate::generation::beam::BeamSearch;
use crate::generation::sample::Sampler;
use crate::generation::Candidate;
use crate::Error;
use crate::Tensor;

pub use super::jobs::{Finish, Finished, Job, PromptToken};

/// How one request decodes.
pub(super) enum Decoding {
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
pub(super) struct Active {
    pub(super) job: Job,
    /// Its job id ([`Task::respond`]).
    pub(super) id: usize,
    /// The prompt so far (chosen tokens filled in as they are chosen).
    pub(super) prompt: Vec<i64>,
    /// First decoder row.
    pub(super) base: usize,
    pub(super) rows: usize,
    /// The loop step at which its rows started (position 0).
    pub(super) start: u64,
    pub(super) decoding: Decoding,
    pub(super) first_logits: Option<Tensor>,
    pub(super) logits_at: Option<Vec<f32>>,
    /// When it arrived, and when its encoding was done (milliseconds).
    pub(super) started: f64,
    pub(super) encoded: f64,
}

impl joins::Holds for Active {
    fn held(&self) -> (usize, usize) {
        (self.base, self.rows)
    }
}

impl Active {
    pub(super) fn new(
        id: usize,
        job: Job,
        base: usize,
        start: u64,
        started: f64,
    ) -> Result<Active, Error> {
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
            _ => Decoding::Beam(BeamSearch::new(&job.settings)),
        };
        let first = match job.prompt.first() {
            Some(PromptToken::Fixed(t)) => *t,
            _ => {
                return Err(crate::internal(
                    "a decoder prompt starts with a fixed token",
                ))
            }
        };
        Ok(Active {
            job,
            id,
            prompt: vec![first],
            base,
            rows: n,
            start,
            decoding,
            first_logits: None,
            logits_at: None,
            started,
            encoded: started,
        })
    }

    pub(super) fn done(&self) -> bool {
        match &self.decoding {
            Decoding::Single { finish, .. } => finish.is_some(),
            Decoding::Beam(b) => b.done(),
        }
    }

    pub(super) fn generated(&self, r: usize) -> &[i64] {
        match &self.decoding {
            Decoding::Single { tokens, .. } => tokens,
            Decoding::Beam(b) => b.sequences().nth(r).unwrap_or(&[]),
        }
    }

    /// The decoder sequence (prompt included) of row `r` of this request.
    pub(super) fn sequence(&self, r: usize) -> Vec<i64> {
        self.prompt
            .iter()
            .chain(self.generated(r))
            .copied()
            .collect()
    }

    /// How many candidates a row needs before bans.
    pub(super) fn wanted(&self) -> usize {
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

/// Applies one step's processed candidates `cands` (one list per row) to
/// request `a`: its next tokens, its beams' parents.
pub(super) fn advance<T: Task>(
    task: &T,
    a: &mut Active,
    cands: &[Vec<Candidate>],
    norms: &[f64],
    tokens: &mut [i64],
    beam_idx: &mut [i64],
) {
    let s = &a.job.settings;
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
pub(super) fn finished(a: &Active, rows: usize) -> Finished {
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
        encode_ms: a.encoded - a.started,
        decode_ms: now_ms() - a.encoded,
        rows,
    }
}
