//! Token-level helpers of fill-mask: the mask and padding ids, and the
//! candidate ids of `targets`.

use skill_sdk::config::Json;
use skill_sdk::special_tokens;
use skill_sdk::tokenizer::Tokenizer;
use skill_sdk::{invalid, Error};

pub use skill_sdk::tensors::{f32_values as f32s, i64_values as i64s};

/// The tokenizer's mask token and its id.
pub fn mask_token(tok: &Tokenizer) -> Result<(String, i64), Error> {
    special_tokens::find(tok, "mask_token", &["[MASK]", "<mask>"])?
        .map(|(t, id)| (t, id as i64))
        .ok_or_else(|| Error::Model("the tokenizer has no mask token".into()))
}

/// The padding id (transformers drops it from filled sequences).
pub fn pad_id(tok: &Tokenizer, config: &Json) -> Result<i64, Error> {
    Ok(
        match special_tokens::find(tok, "pad_token", &["[PAD]", "<pad>"])? {
            Some((_, id)) => id as i64,
            None => config.u64_or("pad_token_id", 0)? as i64,
        },
    )
}

/// Candidate ids of `targets`: a target in the vocabulary is its id, any
/// other its first token (as transformers does); duplicates are dropped.
pub fn target_ids(
    tok: &Tokenizer,
    plain: &Tokenizer,
    targets: &[String],
    vocab: usize,
) -> Result<Vec<u32>, Error> {
    let mut ids: Vec<u32> = Vec::new();
    for t in targets {
        let id = match tok.token_to_id(t) {
            Some(id) => Some(id),
            None if t.is_empty() => None,
            None => {
                let enc = plain.encode_batch(std::slice::from_ref(t))?;
                let first = i64s(&enc.input_ids)?;
                first
                    .first()
                    .copied()
                    .filter(|_| enc.lengths[0] > 0)
                    .map(|i| i as u32)
            }
        };
        if let Some(id) = id.filter(|&i| (i as usize) < vocab) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    if ids.is_empty() {
        return Err(invalid("`targets` has no token of the vocabulary"));
    }
    Ok(ids)
}
