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
