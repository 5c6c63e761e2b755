//! The host tokenizer: `tokenizer.json` through the `tokenizers` crate,
//! configured per skill (truncation, padding) and returning padded tensors,
//! for single texts and sentence pairs, with character offsets on request.

use std::path::Path;

use tokenizers::{
    EncodeInput, Encoding, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams,
};

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
    /// Fill [`EncodedBatch::tokens`].
    pub with_offsets: bool,
}

/// One real token of an encoded text.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenInfo {
    /// Character offsets into its text (end exclusive); 0, 0 for specials.
    pub start: u32,
    pub end: u32,
    pub special: bool,
    /// Which text of a pair (0 or 1); none for special tokens.
    pub sequence: Option<u32>,
    /// The pre-tokenized word it belongs to; none for special tokens.
    pub word: Option<u32>,
}

/// A tokenized, right-padded batch.
pub struct EncodedBatch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub token_type_ids: Tensor,
    pub lengths: Vec<u32>,
    pub truncated: Vec<bool>,
    /// Per row, its real tokens (when opened `with_offsets`; else empty).
    pub tokens: Vec<Vec<TokenInfo>>,
}

/// A configured tokenizer.
pub struct HostTokenizer {
    inner: Tokenizer,
    add_special: bool,
    with_offsets: bool,
    /// transformers' `clean_up_tokenization_spaces` on decode.
    clean_up: bool,
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
        let clean_up = clean_up_spaces(path, &inner);
        Ok(HostTokenizer {
            inner,
            add_special: opts.add_special_tokens,
            with_offsets: opts.with_offsets,
            clean_up,
        })
    }

    pub fn encode_batch(&self, texts: Vec<String>) -> Result<EncodedBatch, TokenizerError> {
        self.encode_inputs(texts.into_iter().map(EncodeInput::from).collect())
    }

    /// Encodes sentence pairs with the tokenizer's pair template.
    pub fn encode_pairs(
        &self,
        pairs: Vec<(String, String)>,
    ) -> Result<EncodedBatch, TokenizerError> {
        self.encode_inputs(pairs.into_iter().map(EncodeInput::from).collect())
    }

    fn encode_inputs(&self, inputs: Vec<EncodeInput>) -> Result<EncodedBatch, TokenizerError> {
        if inputs.is_empty() {
            return Err(TokenizerError::EmptyBatch);
        }
        let encs = if self.with_offsets {
            self.inner
                .encode_batch_char_offsets(inputs, self.add_special)
        } else {
            self.inner.encode_batch(inputs, self.add_special)
        }
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
        let tokens = match self.with_offsets {
            true => encs.iter().map(token_infos).collect(),
            false => Vec::new(),
        };
        let shape = vec![rows as u64, cols as u64];
        Ok(EncodedBatch {
            input_ids: Tensor::from_i64(shape.clone(), &ids),
            attention_mask: Tensor::from_i64(shape.clone(), &mask),
            token_type_ids: Tensor::from_i64(shape, &types),
            lengths,
            truncated,
            tokens,
        })
    }

    /// Decodes ids as transformers does, `clean_up_tokenization_spaces`
    /// included.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        let text = self
            .inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(match self.clean_up {
            true => clean_up_tokenization(&text),
            false => text,
        })
    }

    /// Joins token strings with the tokenizer's decoder (spaces without one).
    pub fn decode_tokens(&self, tokens: Vec<String>) -> Result<String, TokenizerError> {
        use tokenizers::Decoder;
        match self.inner.get_decoder() {
            Some(d) => d
                .decode(tokens)
                .map_err(|e| TokenizerError::Encode(e.to_string())),
            None => Ok(tokens.join(" ")),
        }
    }

    pub fn token_to_id(&self, t: &str) -> Option<u32> {
        self.inner.token_to_id(t)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The model's word-continuation prefix (`##` for WordPiece; BPE
    /// models may set one too).
    pub fn continuing_subword_prefix(&self) -> Option<String> {
        use tokenizers::models::ModelWrapper;
        match self.inner.get_model() {
            ModelWrapper::WordPiece(w) => Some(w.continuing_subword_prefix.clone()),
            ModelWrapper::BPE(b) => b.continuing_subword_prefix.clone(),
            _ => None,
        }
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

/// Whether decoding cleans up spaces before punctuation, as transformers
/// does: `clean_up_tokenization_spaces` in the tokenizer_config.json beside
/// tokenizer.json (default off), never for BPE models unless
/// `clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output`.
fn clean_up_spaces(tokenizer_json: &Path, t: &Tokenizer) -> bool {
    let Some(config) = tokenizer_json
        .parent()
        .map(|d| d.join("tokenizer_config.json"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return false;
    };
    let flag = |k: &str| config.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    let bpe = matches!(t.get_model(), tokenizers::models::ModelWrapper::BPE(_));
    flag("clean_up_tokenization_spaces")
        && (!bpe || flag("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"))
}

/// transformers' `clean_up_tokenization`: no space before punctuation and
/// English contractions.
fn clean_up_tokenization(text: &str) -> String {
    [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ]
    .iter()
    .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}

/// The real (unpadded) tokens of one encoding.
fn token_infos(e: &Encoding) -> Vec<TokenInfo> {
    let mask = e.get_attention_mask();
    let special = e.get_special_tokens_mask();
    let offsets = e.get_offsets();
    let words = e.get_word_ids();
    let seqs = e.get_sequence_ids();
    (0..e.get_ids().len())
        .filter(|&i| mask.get(i).is_some_and(|&m| m != 0))
        .map(|i| {
            let is_special = special.get(i).is_some_and(|&s| s != 0);
            let (start, end) = offsets.get(i).copied().unwrap_or((0, 0));
            TokenInfo {
                start: start as u32,
                end: end as u32,
                special: is_special,
                sequence: seqs.get(i).copied().flatten().map(|s| s as u32),
                word: words.get(i).copied().flatten(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_bert(with_offsets: bool, max_length: Option<u32>) -> HostTokenizer {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tiny-bert/tokenizer.json");
        let opts = TokenizerOptions {
            max_length,
            add_special_tokens: true,
            pad_to_multiple_of: None,
            with_offsets,
        };
        HostTokenizer::open(&path, &opts).unwrap()
    }

    #[test]
    fn pairs_get_segment_ids_and_offsets_into_each_text() {
        let tok = tiny_bert(true, None);
        let b = tok
            .encode_pairs(vec![("Hello world".into(), "the cat".into())])
            .unwrap();
        let types = b.token_type_ids.to_i64("types").unwrap();
        // [CLS] hello world [SEP] the cat [SEP]
        assert_eq!(types, vec![0, 0, 0, 0, 1, 1, 1]);
        let t = &b.tokens[0];
        assert_eq!(t.len(), 7);
        assert!(t[0].special && t[3].special && t[6].special);
        assert_eq!((t[2].start, t[2].end, t[2].sequence), (6, 11, Some(0)));
        assert_eq!((t[5].start, t[5].end, t[5].sequence), (4, 7, Some(1)));
        assert_eq!(t[1].word, Some(0));
        assert_eq!(t[0].word, None);
    }

    #[test]
    fn offsets_count_characters_not_bytes() {
        let tok = tiny_bert(true, None);
        let b = tok.encode_batch(vec!["日本 cat".into()]).unwrap();
        let t = &b.tokens[0];
        // 日 本 ' ' c a t: characters 3..6 (bytes 7..10).
        let cat = t.iter().find(|x| x.end == 6).expect("`cat` ends at char 6");
        assert_eq!(cat.start, 3);
    }

    #[test]
    fn tokens_are_left_empty_unless_asked_and_padding_is_excluded() {
        let tok = tiny_bert(false, None);
        let b = tok.encode_batch(vec!["cat".into()]).unwrap();
        assert!(b.tokens.is_empty());
        let tok = tiny_bert(true, None);
        let b = tok
            .encode_batch(vec!["cat".into(), "the big cat".into()])
            .unwrap();
        assert_eq!(b.tokens[0].len(), 3);
        assert_eq!(b.tokens[1].len(), 5);
    }

    #[test]
    fn pairs_are_truncated_longest_first() {
        let tok = tiny_bert(false, Some(8));
        let b = tok
            .encode_pairs(vec![("the big red dog and the cat".into(), "a cat".into())])
            .unwrap();
        let types = b.token_type_ids.to_i64("types").unwrap();
        assert_eq!(types.len(), 8);
        assert_eq!(types.iter().filter(|&&t| t == 1).count(), 3);
        assert!(b.truncated[0]);
        assert_eq!(tok.continuing_subword_prefix().as_deref(), Some("##"));
        assert_eq!(tok.id_to_token(0).as_deref(), Some("[PAD]"));
    }
}
