//! The previous text a window's decoder prompt starts with, as
//! transformers' `_prepare_decoder_input_ids` builds it:
//!
//! - conditioning on previous tokens (`condition_on_prev_tokens`, and the
//!   last attempt of the previous window at a temperature below 0.5), once
//!   there is something to condition on: the previous segments' tokens (a
//!   segment ending on two timestamps drops its last one), the last
//!   `positions / 2 - 1` of them, after `<|startofprev|>` ("first-segment":
//!   the `prompt` text counts as the first segment) or after the whole
//!   `prompt` ("all-segments");
//! - otherwise the `prompt` (`<|startofprev|>` and its text), every window;
//! - otherwise nothing.
//!
//! Segments are cut from a window's tokens as `_retrieve_segment` cuts them
//! ([`split`]).

/// Where a window's tokens split into segments (end indices), given the
/// first timestamp id `begin`: after each pair of timestamps, the last pair
/// kept whole (one segment ends with both), or at the end when the tokens
/// end on a single timestamp; all of them when no pair.
pub fn split(tokens: &[i64], begin: i64) -> Vec<usize> {
    let ts: Vec<bool> = tokens.iter().map(|&t| t >= begin).collect();
    let single_ending = ts.len() >= 2 && !ts[ts.len() - 2] && ts[ts.len() - 1];
    let mut cuts: Vec<usize> = (0..ts.len().saturating_sub(1))
        .filter(|&i| ts[i] && ts[i + 1])
        .map(|i| i + 1)
        .collect();
    match cuts.last_mut() {
        None => return vec![tokens.len()],
        Some(last) if !single_ending => *last += 1,
        Some(_) => cuts.push(tokens.len()),
    }
    cuts
}

/// What a request conditions on.
pub struct Context<'a> {
    /// `<|startofprev|>` and the prompt's text (empty: no prompt).
    pub prompt_ids: &'a [i64],
    pub all_segments: bool,
    /// The token that starts previous text (`prev_sot_token_id`).
    pub prev_sot: Option<i64>,
    pub begin: i64,
    /// At most this many previous tokens (`max_target_positions / 2 - 1`).
    pub cut_off: usize,
}

impl Context<'_> {
    /// The previous-text tokens of a window, given the segments decoded so
    /// far and whether this window conditions on them.
    pub fn previous(&self, segments: &[Vec<i64>], condition: bool) -> Vec<i64> {
        // "first-segment": the prompt's text is the first segment.
        let prompt_segment = match (self.prompt_ids.is_empty(), self.all_segments) {
            (false, false) => Some(&self.prompt_ids[1..]),
            _ => None,
        };
        let any = prompt_segment.is_some() || !segments.is_empty();
        if condition && any {
            let mut tokens: Vec<i64> = Vec::new();
            for s in prompt_segment
                .into_iter()
                .chain(segments.iter().map(Vec::as_slice))
            {
                let double = s.len() > 2 && s[s.len() - 2] >= self.begin;
                tokens.extend_from_slice(if double { &s[..s.len() - 1] } else { s });
            }
            let tail = &tokens[tokens.len().saturating_sub(self.cut_off)..];
            let head: Vec<i64> = match self.all_segments {
                true => self.prompt_ids.to_vec(),
                false => self.prev_sot.into_iter().collect(),
            };
            return head.into_iter().chain(tail.iter().copied()).collect();
        }
        self.prompt_ids.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_as_transformers() {
        // begin 100: pairs cut; the last pair stays whole.
        assert_eq!(split(&[100, 5, 120, 120, 6, 130, 130], 100), vec![3, 7]);
        // A single closing timestamp: the rest is one more segment.
        assert_eq!(split(&[100, 5, 120, 120, 6, 130], 100), vec![3, 6]);
        assert_eq!(split(&[5, 6], 100), vec![2]);
    }

    #[test]
    fn conditions_on_the_last_segments() {
        let prompt = [50, 1, 2];
        let c = Context {
            prompt_ids: &prompt,
            all_segments: false,
            prev_sot: Some(50),
            begin: 100,
            cut_off: 4,
        };
        // Not conditioning: the prompt every window.
        assert_eq!(c.previous(&[vec![100, 7, 110, 110]], false), vec![50, 1, 2]);
        // Conditioning: prompt text then segments (a double ending drops
        // its last timestamp), the last 4, after <|startofprev|>.
        let got = c.previous(&[vec![100, 7, 110, 110]], true);
        assert_eq!(got, vec![50, 2, 100, 7, 110]);
        let all = Context {
            all_segments: true,
            ..c
        };
        assert_eq!(all.previous(&[], true), vec![50, 1, 2]);
        assert_eq!(all.previous(&[vec![9]], true), vec![50, 1, 2, 9]);
    }
}
