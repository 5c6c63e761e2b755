//! Beam search for one request, step for step as transformers'
//! `_beam_search` runs it for a batch of one (f32 scores, the same
//! candidate counts, stopping rules and length penalty), so that tokens
//! match whether a request runs alone or next to others.
//!
//! A request owns `num_beams` decoder rows; each step the skill gives the
//! processed candidates of every beam ([`BeamSearch::advance`]) and gets
//! back, per beam, the beam it continues (whose cache the row must take)
//! and its next token. Each hypothesis also sums a second score of its
//! tokens given with the candidates ([`BeamSearch::advance_scored`]):
//! Whisper's fallback reads the average log-probability of the best one.

use super::settings::{EarlyStopping, Settings};
use super::Candidate;

/// A score that keeps a hypothesis out of every choice (transformers' -1e9).
const OUT: f32 = -1.0e9;

#[derive(Clone, Debug)]
struct Hypothesis {
    tokens: Vec<i64>,
    score: f32,
    /// Sum of the tokens' second scores.
    sum: f64,
}

/// A finished hypothesis slot (`finished` false while it holds none).
#[derive(Clone, Debug)]
struct Slot {
    tokens: Vec<i64>,
    score: f32,
    sum: f64,
    finished: bool,
}

/// Where each beam goes next: `parent[j]` is the beam whose cache beam `j`
/// continues, `tokens[j]` its next input token.
#[derive(Clone, Debug, PartialEq)]
pub struct Moves {
    pub parent: Vec<usize>,
    pub tokens: Vec<i64>,
}

/// The beam search state of one request.
pub struct BeamSearch {
    beams: usize,
    keep: usize,
    length_penalty: f32,
    early_stopping: EarlyStopping,
    max_new: u64,
    eos: Vec<i64>,
    running: Vec<Hypothesis>,
    finished: Vec<Slot>,
    improvable: bool,
    generated: u64,
    done: bool,
}

/// One scored continuation: (score, beam, token, second score), in
/// selection order.
type Scored = (f32, usize, i64, f64);

/// The `k` best by score, ties in order of first appearance (as a stable
/// sort; torch.topk leaves ties unspecified).
fn top(mut v: Vec<Scored>, k: usize) -> Vec<Scored> {
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    v.truncate(k);
    v
}

impl BeamSearch {
    pub fn new(s: &Settings) -> BeamSearch {
        let beams = s.num_beams.max(1) as usize;
        let keep = (1 + s.eos.len()).max(2) * beams;
        BeamSearch {
            beams,
            keep,
            length_penalty: s.length_penalty,
            early_stopping: s.early_stopping,
            max_new: s.max_new_tokens,
            eos: s.eos.clone(),
            running: (0..beams)
                .map(|b| Hypothesis {
                    tokens: Vec::new(),
                    score: if b == 0 { 0.0 } else { OUT },
                    sum: 0.0,
                })
                .collect(),
            finished: vec![
                Slot {
                    tokens: Vec::new(),
                    score: OUT,
                    sum: 0.0,
                    finished: false,
                };
                beams
            ],
            improvable: true,
            generated: 0,
            done: false,
        }
    }

    /// Candidates each beam's step must show (before bans).
    pub fn wanted(&self) -> usize {
        self.keep
    }

    pub fn done(&self) -> bool {
        self.done
    }

    /// The running beams' tokens (for the processors).
    pub fn sequences(&self) -> impl Iterator<Item = &[i64]> {
        self.running.iter().map(|h| h.tokens.as_slice())
    }

    /// One step: `cands[b]` are beam b's processed candidates, best first
    /// (at least [`Self::wanted`] of them unless the processors left
    /// fewer). Returns the moves of the beams for the next step.
    pub fn advance(&mut self, cands: &[Vec<Candidate>]) -> Moves {
        self.advance_scored(cands, &[])
    }

    /// [`Self::advance`], where a candidate's second score is its
    /// log-probability minus `norms[b]` (its beam's; 0 when missing).
    pub fn advance_scored(&mut self, cands: &[Vec<Candidate>], norms: &[f64]) -> Moves {
        let mut all = Vec::new();
        for (b, row) in cands.iter().enumerate().take(self.beams) {
            let base = self.running[b].score;
            let norm = norms.get(b).copied().unwrap_or(0.0);
            for c in row.iter().take(self.keep) {
                all.push((c.logprob + base, b, c.token, c.logprob as f64 - norm));
            }
        }
        let mut topk = top(all, self.keep);
        while topk.len() < self.keep {
            let eos = self.eos.first().copied().unwrap_or(0);
            topk.push((f32::NEG_INFINITY, 0, eos, f64::NEG_INFINITY));
        }
        let length = self.generated + 1;
        let hits: Vec<bool> = topk
            .iter()
            .map(|&(_, _, t, _)| self.eos.contains(&t) || length >= self.max_new)
            .collect();
        // Running beams: the best that did not stop.
        let running: Vec<Scored> = topk
            .iter()
            .zip(&hits)
            .map(|(&(s, b, t, l), &hit)| (if hit { s + OUT } else { s }, b, t, l))
            .collect();
        let next = top(running, self.beams);
        // Finished: the stopped among the first `beams` candidates.
        let penalty = (length as f64).powf(self.length_penalty as f64) as f32;
        let full =
            self.finished.iter().all(|s| s.finished) && self.early_stopping == EarlyStopping::True;
        let mut merged: Vec<Slot> = self.finished.clone();
        for (i, (&(s, b, t, l), &hit)) in topk.iter().zip(&hits).enumerate() {
            let mut score = s / penalty;
            if full {
                score += OUT;
            }
            if !self.improvable {
                score += OUT;
            }
            let did = hit && i < self.beams;
            if !did {
                score += OUT;
            }
            let mut tokens = self.running[b].tokens.clone();
            tokens.push(t);
            merged.push(Slot {
                tokens,
                score,
                sum: self.running[b].sum + l,
                finished: did,
            });
        }
        let order = top(
            merged
                .iter()
                .enumerate()
                .map(|(i, s)| (s.score, i, 0, 0.0))
                .collect(),
            self.beams,
        );
        self.finished = order
            .iter()
            .map(|&(_, i, _, _)| merged[i].clone())
            .collect();
        let moves = Moves {
            parent: next.iter().map(|&(_, b, _, _)| b).collect(),
            tokens: next.iter().map(|&(_, _, t, _)| t).collect(),
        };
        self.running = next
            .iter()
            .map(|&(s, b, t, l)| {
                let mut tokens = self.running[b].tokens.clone();
                tokens.push(t);
                let sum = self.running[b].sum + l;
                Hypothesis {
                    tokens,
                    score: s,
                    sum,
                }
            })
            .collect();
        self.generated = length;
        self.check_stop(&hits);
        moves
    }

    /// transformers' early-stop heuristic and stopping condition.
    fn check_stop(&mut self, hits: &[bool]) {
        let best_length = match (self.early_stopping, self.length_penalty > 0.0) {
            (EarlyStopping::Never, true) => self.max_new,
            _ => self.generated,
        };
        let best =
            self.running[0].score / (best_length as f64).powf(self.length_penalty as f64) as f32;
        let worst = self
            .finished
            .iter()
            .map(|s| s.score)
            .fold(f32::INFINITY, f32::min);
        let can_improve = self
            .finished
            .iter()
            .any(|s| best > if s.finished { worst } else { OUT });
        self.improvable = self.improvable && can_improve;
        let all_finished = self.finished.iter().all(|s| s.finished);
        self.done = !self.improvable
            || (all_finished && self.early_stopping == EarlyStopping::True)
            || hits.iter().all(|&h| h);
    }

    /// The best finished hypothesis (generated tokens).
    pub fn best(&self) -> &[i64] {
        &self.finished[0].tokens
    }

    /// The sum of the best finished hypothesis's second scores.
    pub fn best_sum(&self) -> f64 {
        self.finished[0].sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::settings::test_settings;

    fn settings(beams: u32, max_new: u64) -> Settings {
        Settings {
            num_beams: beams,
            max_new_tokens: max_new,
            ..test_settings()
        }
    }

    fn c(token: i64, logprob: f32) -> Candidate {
        Candidate { token, logprob }
    }

    #[test]
    fn first_step_expands_only_the_first_beam_and_max_length_ends() {
        let mut b = BeamSearch::new(&settings(2, 2));
        let row = vec![c(5, -0.1), c(6, -0.5), c(7, -1.0), c(2, -2.0)];
        let m = b.advance(&[row.clone(), row.clone()]);
        assert_eq!(m.parent, vec![0, 0]);
        assert_eq!(m.tokens, vec![5, 6]);
        assert!(!b.done());
        let m = b.advance(&[vec![c(8, -0.2), c(2, -0.3), c(9, -3.0), c(3, -4.0)], row]);
        assert_eq!(m.parent.len(), 2);
        assert!(b.done());
        // [5, 8]: -0.3 / 2 beats [6, 5]: -0.6 / 2.
        assert_eq!(b.best(), &[5, 8]);
    }
}
