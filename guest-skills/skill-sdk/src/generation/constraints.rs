//! transformers' banning and forcing logits processors for one row at one
//! step: n-gram blocking (of the output and of the encoder input), bad
//! words, minimum length, forced first / last tokens, suppressed tokens.
//!
//! Their order in transformers matters only where forcing meets a ban: the
//! bans before the forcing processors are overwritten by it (every token but
//! the forced one gets -inf, the forced one 0), the suppressions after it
//! still apply.

use std::collections::BTreeSet;

use super::settings::Settings;
use super::Candidate;

/// What the processors leave of one row's next-token distribution.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The model's scores, with these tokens at -inf.
    Banned(BTreeSet<i64>),
    /// Only these tokens, each with score 0 (every other one -inf).
    Forced(Vec<i64>),
}

impl Step {
    /// How many of the model's best candidates a choice of `wanted`
    /// tokens needs to see (every banned token could be among the best).
    pub fn candidates_needed(&self, wanted: usize) -> usize {
        match self {
            Step::Banned(b) => wanted + b.len(),
            Step::Forced(_) => 0,
        }
    }

    /// The row's candidates after processing, best first: the model's
    /// minus the banned ones, or the forced tokens at log-probability 0.
    pub fn apply(&self, model: &[Candidate]) -> Vec<Candidate> {
        match self {
            Step::Banned(b) => model
                .iter()
                .filter(|c| !b.contains(&c.token))
                .copied()
                .collect(),
            Step::Forced(tokens) => tokens
                .iter()
                .map(|&token| Candidate {
                    token,
                    logprob: 0.0,
                })
                .collect(),
        }
    }
}

/// The tokens that would repeat an n-gram of `source` after `seq`: the
/// continuations of every occurrence in `source` of `seq`'s last n-1
/// tokens (transformers' `_get_generated_ngrams`).
fn ngram_bans(source: &[i64], seq: &[i64], n: usize, out: &mut BTreeSet<i64>) {
    if n == 0 || seq.len() + 1 < n || source.len() < n {
        return;
    }
    let prefix = &seq[seq.len() + 1 - n..];
    for w in source.windows(n) {
        if &w[..n - 1] == prefix {
            out.insert(w[n - 1]);
        }
    }
}

/// The processors' verdict for a row whose decoder sequence so far is
/// `seq` (its first `prompt` tokens the decoder prompt: the start token,
/// and Whisper's language and task) of a request with `settings` and
/// encoder input `encoder_ids`.
pub fn step(settings: &Settings, seq: &[i64], prompt: usize, encoder_ids: &[i64]) -> Step {
    let generated = seq.len().saturating_sub(prompt) as u64;
    let mut banned = BTreeSet::new();
    ngram_bans(seq, seq, settings.no_repeat_ngram_size, &mut banned);
    ngram_bans(
        encoder_ids,
        seq,
        settings.encoder_no_repeat_ngram_size,
        &mut banned,
    );
    for words in &settings.bad_words {
        match words.as_slice() {
            [] => {}
            [one] if settings.eos.contains(one) => {}
            [prefix @ .., last] if seq.ends_with(prefix) => {
                banned.insert(*last);
            }
            _ => {}
        }
    }
    if generated < settings.min_new_tokens {
        banned.extend(settings.eos.iter().copied());
    }
    let mut forced = None;
    if let (0, Some(bos)) = (generated, settings.forced_bos) {
        forced = Some(vec![bos]);
    }
    if generated + 1 == settings.max_new_tokens && !settings.forced_eos.is_empty() {
        let mut eos = settings.forced_eos.clone();
        eos.sort_unstable();
        eos.dedup();
        forced = Some(eos);
    }
    // Suppressions come after the forcing processors.
    let mut after: BTreeSet<i64> = settings.suppress.iter().copied().collect();
    let begin = if settings.forced_bos.is_some() { 1 } else { 0 };
    if generated == begin {
        after.extend(settings.begin_suppress.iter().copied());
    }
    match forced {
        Some(tokens) => Step::Forced(tokens.into_iter().filter(|t| !after.contains(t)).collect()),
        None => {
            banned.extend(after);
            Step::Banned(banned)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::settings::test_settings as settings;

    #[test]
    fn ngrams_ban_the_continuations_of_the_last_tokens() {
        let s = Settings {
            no_repeat_ngram_size: 2,
            ..settings()
        };
        // 2 5 7 5 -> "5" was followed by 7.
        assert_eq!(step(&s, &[2, 5, 7, 5], 1, &[]), Step::Banned([7].into()));
        let s = Settings {
            encoder_no_repeat_ngram_size: 3,
            ..settings()
        };
        assert_eq!(
            step(&s, &[2, 4, 9], 1, &[4, 9, 11, 4, 9, 12]),
            Step::Banned([11, 12].into())
        );
        // Too short for a trigram.
        assert_eq!(step(&s, &[2], 1, &[2, 4, 9]), Step::Banned(BTreeSet::new()));
    }

    #[test]
    fn forcing_overrides_bans_and_suppression_follows_it() {
        let s = Settings {
            forced_bos: Some(0),
            forced_eos: vec![2],
            min_new_tokens: 10,
            ..settings()
        };
        assert_eq!(step(&s, &[2], 1, &[]), Step::Forced(vec![0]));
        assert_eq!(step(&s, &[2, 0, 3, 4, 5], 1, &[]), Step::Forced(vec![2]));
        assert_eq!(step(&s, &[2, 0, 3], 1, &[]), Step::Banned([2].into()));
        let s = Settings {
            forced_bos: Some(0),
            suppress: vec![0],
            ..settings()
        };
        assert_eq!(step(&s, &[2], 1, &[]), Step::Forced(vec![]));
    }
}
