//! Logits to scores as transformers' classification pipelines do
//! (`function_to_apply`: softmax, sigmoid or none; the default from the
//! config's `problem_type` and label count), in f32 as numpy computes them.

use crate::config::Json;
use crate::{invalid, Error};

/// What turns logits into scores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Function {
    Softmax,
    Sigmoid,
    None,
}

impl Function {
    pub fn parse(s: &str) -> Result<Function, Error> {
        match s.to_ascii_lowercase().as_str() {
            "softmax" => Ok(Function::Softmax),
            "sigmoid" => Ok(Function::Sigmoid),
            "none" => Ok(Function::None),
            other => Err(invalid(format!(
                "`function_to_apply` must be softmax, sigmoid or none, not `{other}`"
            ))),
        }
    }

    /// The pipeline's default for a model.
    pub fn default_for(config: &Json, labels: usize) -> Result<Function, Error> {
        Ok(match config.str_or("problem_type", "")? {
            "regression" => Function::None,
            "multi_label_classification" => Function::Sigmoid,
            _ if labels == 1 => Function::Sigmoid,
            _ => Function::Softmax,
        })
    }

    /// Scores of one row of logits, computed in f32 as numpy does.
    pub fn apply(self, logits: &[f32]) -> Vec<f32> {
        match self {
            Function::None => logits.to_vec(),
            Function::Sigmoid => logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect(),
            Function::Softmax => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                e.iter().map(|&x| x / sum).collect()
            }
        }
    }
}

/// Label indices ordered best first (a stable sort: equal scores keep the
/// label order), at most `top_k`.
pub fn ranked(scores: &[f32], top_k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order.truncate(top_k);
    order
}

/// The `{"labels": [{"label", "score"}]}` answer of one row of logits:
/// `function` applied, the `top_k` best (capped at the label count).
pub fn labels_answer(
    logits: &[f32],
    labels: &[String],
    function: Function,
    top_k: usize,
) -> crate::Response {
    let scores = function.apply(logits);
    let ranked: Vec<serde_json::Value> = ranked(&scores, top_k.min(labels.len()))
        .into_iter()
        .map(|k| serde_json::json!({"label": labels[k], "score": scores[k]}))
        .collect();
    crate::Response {
        json: serde_json::json!({ "labels": ranked }).to_string(),
        tensors: Vec::new(),
    }
}

/// [`labels_answer`] for each row of a batch's logits [rows, labels]:
/// row i with `functions[i]` and `top_ks[i]`.
pub fn labels_answers(
    logits: &[f32],
    labels: &[String],
    choices: &[(Function, usize)],
) -> Result<Vec<Result<crate::Response, crate::Error>>, crate::Error> {
    let n = labels.len();
    if logits.len() != choices.len() * n {
        return Err(crate::internal("logits do not match the batch"));
    }
    Ok(choices
        .iter()
        .enumerate()
        .map(|(i, &(f, k))| Ok(labels_answer(&logits[i * n..(i + 1) * n], labels, f, k)))
        .collect())
}

/// A zero-shot request's candidates: `candidate_labels` and, for each, its
/// hypothesis (`hypothesis_template` with `{}` replaced by the label).
#[derive(Clone, Debug)]
pub struct Candidates {
    pub labels: Vec<String>,
    pub hypotheses: Vec<String>,
}

impl Candidates {
    /// Reads `candidate_labels` (a non-empty list) and
    /// `hypothesis_template` (else `default_template`).
    pub fn read(req: &crate::requests::Request, default_template: &str) -> Result<Self, Error> {
        let labels = req
            .opt_strings("candidate_labels")?
            .filter(|l| !l.is_empty())
            .ok_or_else(|| invalid("`candidate_labels` must be a non-empty list of strings"))?;
        let template = req
            .opt_str("hypothesis_template")?
            .unwrap_or(default_template);
        Ok(Candidates {
            hypotheses: labels.iter().map(|l| template.replace("{}", l)).collect(),
            labels,
        })
    }
}

/// Every distinct hypothesis of a batch once, in first-seen order (the
/// texts to embed), and where each one is in that list.
pub fn distinct_hypotheses<'a>(
    batch: impl IntoIterator<Item = &'a Candidates>,
) -> (Vec<String>, std::collections::HashMap<&'a str, usize>) {
    let mut index = std::collections::HashMap::new();
    let mut texts = Vec::new();
    for h in batch.into_iter().flat_map(|c| &c.hypotheses) {
        if !index.contains_key(h.as_str()) {
            index.insert(h.as_str(), texts.len());
            texts.push(h.clone());
        }
    }
    (texts, index)
}

/// Embeddings of hypothesis texts kept between calls: a zero-shot endpoint
/// is usually asked about the same candidate labels again and again, and a
/// hypothesis's embedding does not depend on the image (audio) it is
/// compared with, so the text tower runs only for texts it has not seen.
/// Bounded: past [`TextCache::CAPACITY`] texts it starts over.
#[derive(Default)]
pub struct TextCache {
    rows: std::collections::HashMap<String, Vec<f32>>,
}

impl TextCache {
    /// Most texts kept (a few MiB at CLIP's widths).
    pub const CAPACITY: usize = 4096;

    /// The embeddings of `texts` [texts.len(), d], in order: cached ones
    /// as they are, the others from `embed` (given those texts, returning
    /// their embeddings in order, flattened), then cached.
    pub fn embed(
        &mut self,
        texts: &[String],
        embed: impl FnOnce(&[String]) -> Result<Vec<f32>, Error>,
    ) -> Result<Vec<f32>, Error> {
        let missing: Vec<String> = {
            let mut seen = std::collections::HashSet::new();
            (texts.iter())
                .filter(|t| !self.rows.contains_key(*t) && seen.insert(t.as_str()))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let flat = embed(&missing)?;
            let d = flat.len() / missing.len();
            if d == 0 || flat.len() != d * missing.len() {
                return Err(crate::internal("text embeddings of an unexpected size"));
            }
            if self.rows.len() + missing.len() > Self::CAPACITY {
                self.rows.clear();
            }
            for (t, row) in missing.into_iter().zip(flat.chunks_exact(d)) {
                self.rows.insert(t, row.to_vec());
            }
        }
        let mut out = Vec::new();
        for t in texts {
            let row =
                (self.rows.get(t)).ok_or_else(|| crate::internal("a text was not embedded"))?;
            out.extend_from_slice(row);
        }
        Ok(out)
    }
}

/// The zero-shot answers of a batch: item i's embedding `items[i]` [d]
/// against the embeddings `text` [distinct texts, d] of its hypotheses
/// (found by `index`), dot products (the logit scale already in the
/// embeddings) softmaxed over its labels, best first.
pub fn zero_shot_answers(
    items: &[f32],
    text: &[f32],
    index: &std::collections::HashMap<&str, usize>,
    batch: &[&Candidates],
) -> Result<Vec<Result<crate::Response, Error>>, Error> {
    let d = items.len() / batch.len().max(1);
    if d == 0 || items.len() != batch.len() * d || text.len() != index.len() * d {
        return Err(crate::internal("embedding sizes do not match"));
    }
    let row = |k: usize| &text[k * d..(k + 1) * d];
    let mut out = Vec::with_capacity(batch.len());
    for (i, c) in batch.iter().enumerate() {
        let v = &items[i * d..(i + 1) * d];
        let mut logits = Vec::with_capacity(c.hypotheses.len());
        for h in &c.hypotheses {
            let k = *index
                .get(h.as_str())
                .ok_or_else(|| crate::internal("a hypothesis was not embedded"))?;
            logits.push(v.iter().zip(row(k)).map(|(a, b)| a * b).sum());
        }
        out.push(Ok(labels_answer(
            &logits,
            &c.labels,
            Function::Softmax,
            c.labels.len(),
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::TextCache;

    #[test]
    fn the_text_cache_embeds_each_text_once() {
        let mut cache = TextCache::default();
        let texts = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut calls: Vec<Vec<String>> = Vec::new();
        let rows = |t: &[String]| t.iter().flat_map(|s| [s.len() as f32, 1.0]).collect();
        let got = (cache.embed(&texts(&["ab", "c"]), |t| {
            calls.push(t.to_vec());
            Ok(rows(t))
        }))
        .unwrap();
        assert_eq!(got, [2.0, 1.0, 1.0, 1.0]);
        let got = (cache.embed(&texts(&["c", "def", "ab"]), |t| {
            calls.push(t.to_vec());
            Ok(rows(t))
        }))
        .unwrap();
        assert_eq!(got, [1.0, 1.0, 3.0, 1.0, 2.0, 1.0]);
        assert_eq!(calls, [texts(&["ab", "c"]), texts(&["def"])]);
        // Embeddings of the wrong size are an error, not a panic.
        let bad = cache.embed(&texts(&["xyz"]), |_| Ok(vec![]));
        assert!(bad.is_err());
    }
}
