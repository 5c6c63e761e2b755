//! The response of one generated sequence, built when the sequence stops:
//! it is handed to the host at once (`partial.complete`), so a short
//! sequence's caller does not wait for the rest of its batch, and again
//! as `handle`'s result (hosts without early answers use that one).

use skill_sdk::{Error, NamedTensor, Response, Tensor};

use crate::{Loaded, Request};

/// Timings of one sequence, milliseconds.
pub struct Timings {
    pub prefill_ms: f64,
    /// From the end of the prefill to this sequence's last token.
    pub decode_ms: f64,
    pub batch_size: usize,
}

/// The response for `req` with generated `out` that stopped for `finish`
/// (`eos`, `stop` or `length`); `logits` are the prefill's, when asked for.
pub fn response(
    m: &Loaded,
    req: &Request,
    out: &[i64],
    finish: &str,
    t: &Timings,
    logits: Option<&Tensor>,
) -> Result<Response, Error> {
    let toks: Vec<u32> = out.iter().map(|&t| t as u32).collect();
    let mut text = m.tokenizer.decode(&toks, true)?;
    if finish == "stop" {
        if let Some(cut) = req.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            text.truncate(cut);
        }
    }
    let decoded = out.len().saturating_sub(1) as f64;
    let mut json = serde_json::json!({
        "text": text,
        "token_ids": out,
        "prompt_tokens": req.ids.len(),
        "finish_reason": finish,
        "timings": {
            "prefill_ms": t.prefill_ms, "decode_ms": t.decode_ms,
            "tokens_per_second": if t.decode_ms > 0.0 { decoded / (t.decode_ms / 1e3) } else { 0.0 },
            "batch_size": t.batch_size,
        },
    });
    if !req.warnings.is_empty() {
        json["warnings"] = serde_json::json!(req.warnings);
    }
    let tensors = match logits {
        Some(t) if req.return_logits => vec![NamedTensor {
            name: "prefill_logits".into(),
            value: t.clone(),
        }],
        _ => vec![],
    };
    Ok(Response {
        json: json.to_string(),
        tensors,
    })
}
