//! Rows of a decode step that the generation loop ([`super::run`])
//! processes from their whole logits rather than the graph's top
//! candidates: Whisper's timestamp rules need the vocabulary, and a
//! request that scores its tokens needs each step's normaliser over the
//! tokens the processors leave (transformers' `log_softmax` of the
//! processed scores, as Whisper's `_retrieve_avg_logprobs` takes it).
//! Also the loop's small helpers: graph outputs, streaming, stop strings.

use super::run::Task;
use crate::generation::constraints::Step as Verdict;
use crate::generation::timestamps::{log_sum_exp, TimestampRules};
use crate::generation::Candidate;
use crate::{Error, NamedTensor, Tensor};

/// A row's candidates from its whole logits: log-probabilities, the
/// verdict's bans, then the timestamp rules (when given); the `wanted`
/// best, best first. Also the log of the probability mass the processors
/// leave: a candidate's log-probability minus it is its log-probability
/// renormalised over the allowed tokens.
pub(super) fn full_candidates(
    logits: &[f32],
    verdict: &Verdict,
    rules: Option<&TimestampRules>,
    generated: &[i64],
    wanted: usize,
) -> (Vec<Candidate>, f64) {
    let norm = log_sum_exp(logits);
    let mut scores: Vec<f32> = logits.iter().map(|&v| (v as f64 - norm) as f32).collect();
    if let Verdict::Banned(banned) = verdict {
        for &t in banned {
            if let Some(s) = scores.get_mut(t as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
    }
    if let Some(rules) = rules {
        rules.apply(generated, &mut scores);
    }
    let left = log_sum_exp(&scores);
    let mut order: Vec<usize> = (0..scores.len())
        .filter(|&i| scores[i] > f32::NEG_INFINITY)
        .collect();
    // Best first; ties keep the lower id first (argmax's choice).
    let cmp = |x: &usize, y: &usize| scores[*y].total_cmp(&scores[*x]).then(x.cmp(y));
    let keep = wanted.max(1);
    if order.len() > keep {
        order.select_nth_unstable_by(keep - 1, cmp);
        order.truncate(keep);
    }
    order.sort_by(cmp);
    let cands = order
        .into_iter()
        .map(|i| Candidate {
            token: i as i64,
            logprob: scores[i],
        })
        .collect();
    (cands, left)
}

/// The log of the total probability of `cands` (a sampler's candidates).
pub(super) fn log_norm(cands: &[Candidate]) -> f64 {
    let v: Vec<f32> = cands.iter().map(|c| c.logprob).collect();
    log_sum_exp(&v)
}

/// The likeliest of `ids` in a row of logits.
pub(super) fn best_of(logits: &[f32], ids: &[i64]) -> Result<i64, Error> {
    ids.iter()
        .filter_map(|&id| logits.get(id as usize).map(|&v| (v, id)))
        .fold(None, |best: Option<(f32, i64)>, (v, id)| match best {
            Some((bv, _)) if bv >= v => best,
            _ => Some((v, id)),
        })
        .map(|(_, id)| id)
        .ok_or_else(|| {
            Error::Model("none of the prompt's candidate tokens is in the vocabulary".into())
        })
}

/// One row of logits as a [vocab] f32 tensor.
pub(super) fn row_tensor(row: &[f32]) -> Tensor {
    Tensor {
        dtype: crate::Dtype::F32,
        shape: vec![row.len() as u64],
        data: row.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Removes output `name` (no copy of the others).
pub(super) fn take_one(outputs: &mut Vec<NamedTensor>, name: &str) -> Result<Tensor, Error> {
    let at = outputs
        .iter()
        .position(|n| n.name == name)
        .ok_or_else(|| crate::internal(format!("graph output `{name}` missing")))?;
    Ok(outputs.swap_remove(at).value)
}

pub(super) fn named(name: &str, value: Tensor) -> NamedTensor {
    NamedTensor {
        name: name.into(),
        value,
    }
}

/// Streams the text `out` added since `sent` (a whole decoded suffix only:
/// a token that ends inside a character waits for the next one).
pub(super) fn stream<T: Task>(task: &T, index: u32, out: &[i64], sent: &mut String) {
    let Ok(text) = task.text(out) else {
        return;
    };
    if let Some(new) = text
        .strip_prefix(sent.as_str())
        .filter(|n| !n.is_empty() && !n.ends_with('\u{fffd}'))
    {
        let token = out.last().copied().unwrap_or(0);
        let chunk = serde_json::json!({ "token_id": token, "text": new });
        crate::partial::emit(index, &chunk.to_string());
        *sent = text;
    }
}

pub(super) fn stop_hit<T: Task>(task: &T, out: &[i64], stop: &[String]) -> bool {
    task.text(out)
        .is_ok_and(|t| stop.iter().any(|s| t.contains(s.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn renormalises_over_what_the_bans_leave() {
        let logits = [0.0f32, 1.0, 2.0, 3.0];
        let banned: BTreeSet<i64> = [3].into_iter().collect();
        let (c, left) = full_candidates(&logits, &Verdict::Banned(banned), None, &[], 2);
        assert_eq!(c.iter().map(|c| c.token).collect::<Vec<_>>(), vec![2, 1]);
        // Renormalised over tokens 0..3: softmax of [0, 1, 2].
        let p2 = (c[0].logprob as f64 - left).exp();
        let want = 2f64.exp() / (1.0 + 1f64.exp() + 2f64.exp());
        assert!((p2 - want).abs() < 1e-6, "{p2} {want}");
    }
}
