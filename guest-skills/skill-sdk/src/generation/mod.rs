//! Decoding shared by the generation skills: settings resolved from
//! `generation_config.json` and the request as transformers resolves them
//! ([`settings`]), the logits processors that ban or force tokens
//! ([`constraints`]), Whisper's timestamp rules ([`timestamps`]) and its
//! temperature fallback ([`fallback`]), beam search ([`beam`]) and sampling
//! ([`sample`]).
//!
//! The graphs return each row's best candidates (log-probabilities and
//! token ids, best first) instead of the whole vocabulary; the skill asks
//! for enough of them that every banned token could be among them
//! ([`constraints::Step::candidates_needed`]), so what the processors leave
//! is exactly transformers' choice.

pub mod beam;
pub mod constraints;
pub mod fallback;
pub mod sample;
pub mod settings;
pub mod timestamps;

/// One candidate next token of a row: its id and (processed) log-probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub token: i64,
    pub logprob: f32,
}

/// Candidates of one row from a graph's `top_values` / `top_indices`
/// (best first).
pub fn candidates(values: &[f32], indices: &[i64]) -> Vec<Candidate> {
    values
        .iter()
        .zip(indices)
        .map(|(&logprob, &token)| Candidate { token, logprob })
        .collect()
}
