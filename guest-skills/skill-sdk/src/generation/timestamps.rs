//! Whisper's timestamp rules (transformers' `WhisperTimeStampLogitsProcessor`)
//! on one row's scores over the whole vocabulary: timestamps come in pairs
//! (except right before the end of text), never decrease, the first token
//! is a timestamp no later than `max_initial_timestamp_index`, and when the
//! timestamps together are likelier than any text token, a timestamp is
//! chosen.
//!
//! Timestamp tokens are the ids from `begin` (`<|0.00|>`, right after
//! `<|notimestamps|>`) up, one per 0.02 s.

/// The rules of a model, from its generation config.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimestampRules {
    /// `<|notimestamps|>`: never generated when timestamps are asked.
    pub no_timestamps: i64,
    /// The first timestamp token (`<|0.00|>`).
    pub begin: i64,
    /// End of text: tokens below it are text.
    pub eos: i64,
    /// The latest first timestamp, in timestamp steps.
    pub max_initial: Option<i64>,
}

/// Sets `scores[from..to]` (clamped to the row) to -inf.
fn ban(scores: &mut [f32], from: i64, to: i64) {
    let n = scores.len() as i64;
    let (from, to) = (from.clamp(0, n) as usize, to.clamp(0, n) as usize);
    if from < to {
        scores[from..to].fill(f32::NEG_INFINITY);
    }
}

impl TimestampRules {
    /// Applies the rules to `scores` (logits or log-probabilities of one
    /// row, every earlier processor applied), given the tokens generated
    /// after the decoder prompt.
    pub fn apply(&self, generated: &[i64], scores: &mut [f32]) {
        let n = scores.len() as i64;
        ban(scores, self.no_timestamps, self.no_timestamps + 1);
        let is_ts = |t: &i64| *t >= self.begin;
        let last = generated.last().is_some_and(is_ts);
        let penultimate = generated.len() < 2 || is_ts(&generated[generated.len() - 2]);
        if last {
            match penultimate {
                true => ban(scores, self.begin, n),
                false => ban(scores, 0, self.eos),
            }
        }
        let floor = match generated.iter().rev().find(|t| is_ts(t)) {
            None => self.begin,
            Some(&t) if last && !penultimate => t,
            Some(&t) => t + 1,
        };
        ban(scores, self.begin, floor);
        if generated.is_empty() {
            ban(scores, 0, self.begin);
            if let Some(m) = self.max_initial {
                ban(scores, self.begin + m + 1, n);
            }
        }
        // Timestamps' total probability against the best text token: the
        // softmax normaliser cancels, so compare in score space.
        let split = self.begin.clamp(0, n) as usize;
        let (text, stamps) = scores.split_at(split);
        let max_text = text.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if log_sum_exp(stamps) > max_text as f64 {
            scores[..split].fill(f32::NEG_INFINITY);
        }
    }
}

/// log(sum(exp(x))) in f64 (-inf for an empty or all -inf slice).
pub fn log_sum_exp(x: &[f32]) -> f64 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: TimestampRules = TimestampRules {
        no_timestamps: 5,
        begin: 6,
        eos: 3,
        max_initial: Some(2),
    };

    fn allowed(scores: &[f32]) -> Vec<usize> {
        (0..scores.len())
            .filter(|&i| scores[i].is_finite())
            .collect()
    }

    #[test]
    fn first_token_is_an_early_timestamp() {
        let mut s = vec![0.0; 12];
        RULES.apply(&[], &mut s);
        assert_eq!(allowed(&s), vec![6, 7, 8]);
    }

    #[test]
    fn timestamps_pair_and_never_decrease() {
        // After a lone timestamp: another timestamp (not earlier) or eos.
        let mut s = vec![0.0; 12];
        s[3] = 9.0; // a likely end of text
        RULES.apply(&[1, 8], &mut s);
        assert_eq!(allowed(&s), vec![3, 4, 8, 9, 10, 11]);
        // After a pair: text, or a later timestamp... not right after.
        let mut s = vec![0.0; 12];
        s[1] = 9.0;
        RULES.apply(&[7, 1, 8, 8], &mut s);
        assert_eq!(allowed(&s), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn likely_timestamps_win_over_text() {
        let mut s = vec![0.0; 12];
        s[1] = 1.0;
        // Five timestamps at 0 outweigh one text token at 1.
        RULES.apply(&[6, 1], &mut s);
        assert_eq!(allowed(&s), vec![7, 8, 9, 10, 11]);
    }
}
