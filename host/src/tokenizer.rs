//! The host tokenizer: `tokenizer.json` through the `tokenizers` crate,
//! configured per skill (truncation, padding) and returning padded tensors.

use std::path::Path;

use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::tensor::Tensor;

/// Tokenizer failures.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer {path}: {message}")]
    Load { path: String, message: String },
    #[error("tokenizer: {0}")]
    Encode(String),
    #[error("tokenizer: an empty batch has nothing to encode")]
    EmptyBatch,
}

/// Options fixed when a skill opens the tokenizer.
#[derive(Clone, Debug, Default)]
pub struct TokenizerOptions {
    pub max_length: Option<u32>,
    pub add_special_tokens: bool,
    pub pad_to_multiple_of: Option<u32>,
}

/// A tokenized, right-padded batch.
pub struct EncodedBatch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub token_type_ids: Tensor,
    pub lengths: Vec<u32>,
    pub truncated: Vec<bool>,
}

/// A configured tokenizer.
pub struct HostTokenizer {
    inner: Tokenizer,
    add_special: bool,
}

impl HostTokenizer {
    pub fn open(path: &Path, opts: &TokenizerOptions) -> Result<Self, TokenizerError> {
        let load = |message: String| TokenizerError::Load {
            path: path.display().to_string(),
            message,
        };
        if !path.is_file() {
            return Err(load(
                "file not found (the model has no tokenizer.json)".into(),
            ));
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| load(e.to_string()))?;
        if let Some(max) = opts.max_length {
            let params = TruncationParams {
                max_length: max as usize,
                ..Default::default()
            };
            inner
                .with_truncation(Some(params))
                .map_err(|e| load(e.to_string()))?;
        }
        let mut pad = inner.get_padding().cloned().unwrap_or_else(|| {
            let id = ["[PAD]", "<pad>", "<|endoftext|>", "</s>"]
                .iter()
                .find_map(|t| inner.token_to_id(t).map(|i| (t, i)));
            let (tok, id) = id
                .map(|(t, i)| (t.to_string(), i))
                .unwrap_or(("[PAD]".into(), 0));
            PaddingParams {
                pad_id: id,
                pad_token: tok,
                ..Default::default()
            }
        });
        pad.strategy = PaddingStrategy::BatchLongest;
        pad.pad_to_multiple_of = opts.pad_to_multiple_of.map(|m| m as usize);
        inner.with_padding(Some(pad));
        Ok(HostTokenizer {
            inner,
            add_special: opts.add_special_tokens,
        })
    }

    pub fn encode_batch(&self, texts: Vec<String>) -> Result<EncodedBatch, TokenizerError> {
        if texts.is_empty() {
            return Err(TokenizerError::EmptyBatch);
        }
        let encs = self
            .inner
            .encode_batch(texts, self.add_special)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let rows = encs.len();
        let cols = encs.first().map(|e| e.get_ids().len()).unwrap_or(0);
        let mut ids = Vec::with_capacity(rows * cols);
        let mut mask = Vec::with_capacity(rows * cols);
        let mut types = Vec::with_capacity(rows * cols);
        let mut lengths = Vec::with_capacity(rows);
        let mut truncated = Vec::with_capacity(rows);
        for e in &encs {
            if e.get_ids().len() != cols {
                return Err(TokenizerError::Encode(
                    "rows of a padded batch differ in length".into(),
                ));
            }
            ids.extend(e.get_ids().iter().map(|&x| x as i64));
            mask.extend(e.get_attention_mask().iter().map(|&x| x as i64));
            types.extend(e.get_type_ids().iter().map(|&x| x as i64));
            lengths.push(e.get_attention_mask().iter().filter(|&&m| m != 0).count() as u32);
            truncated.push(!e.get_overflowing().is_empty());
        }
        let shape = vec![rows as u64, cols as u64];
        Ok(EncodedBatch {
            input_ids: Tensor::from_i64(shape.clone(), &ids),
            attention_mask: Tensor::from_i64(shape.clone(), &mask),
            token_type_ids: Tensor::from_i64(shape, &types),
            lengths,
            truncated,
        })
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    pub fn token_to_id(&self, t: &str) -> Option<u32> {
        self.inner.token_to_id(t)
    }

    pub fn vocab_size(&self) -> u32 {
        self.inner.get_vocab_size(true) as u32
    }

    /// Number of tokens of one text (special tokens included, after truncation).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.inner
            .encode(text, self.add_special)
            .map(|e| e.get_ids().len())
            .unwrap_or(0)
    }
}
