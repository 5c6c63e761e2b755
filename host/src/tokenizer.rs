//! The host tokenizer: `tokenizer.json` through the `tokenizers` crate,
//! configured per skill (truncation, padding) and returning padded tensors,
//! for single texts and sentence pairs, with character offsets on request.
//! Checkpoints without a tokenizer.json whose tokenizer_config.json names
//! `FlaubertTokenizer` get the port in [`xlm`] (Moses + XLM BPE), behind the
//! same interface: its encodings go through the same truncation, pair
//! template (`<s> A </s> [B </s>]`) and padding.

mod bounded;
mod moses;
#[rustfmt::skip]
mod moses_tables;
pub mod xlm;

use std::path::Path;

use tokenizers::{
    EncodeInput, Encoding, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams,
};

use xlm::XlmTokenizer;

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
    #[error("tokenizer: {0}")]
    Xlm(#[from] xlm::XlmError),
    #[error("a text of {bytes} bytes is longer than the {max} bytes the host tokenizes per text")]
    TooLong { bytes: usize, max: usize },
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
    /// FlauBERT's tokenizer, when the model has no tokenizer.json.
    xlm: Option<XlmTokenizer>,
    /// How truncated texts are tokenized without tokenizing all of them.
    bounds: Option<bounded::Bounds>,
}

impl HostTokenizer {
    pub fn open(path: &Path, opts: &TokenizerOptions) -> Result<Self, TokenizerError> {
        let load = |message: String| TokenizerError::Load {
            path: path.display().to_string(),
            message,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let xlm = match path.is_file() {
            true => None,
            false => XlmTokenizer::open(dir).map_err(|e| load(e.to_string()))?,
        };
        if !path.is_file() && xlm.is_none() {
            return Err(load(
                "file not found (the model has no tokenizer.json, and its tokenizer_config.json \
                 names no FlaubertTokenizer)"
                    .into(),
            ));
        }
        let mut inner = match &xlm {
            Some(x) => xlm_frame(x).map_err(load)?,
            None => Tokenizer::from_file(path).map_err(|e| load(e.to_string()))?,
        };
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
        let bounds = match xlm {
            Some(_) => None,
            None => bounded::Bounds::new(&inner, opts.add_special_tokens, opts.with_offsets),
        };
        Ok(HostTokenizer {
            bounds,
            inner,
            add_special: opts.add_special_tokens,
            with_offsets: opts.with_offsets,
            clean_up,
            xlm,
        })
    }

    pub fn encode_batch(&self, texts: Vec<String>) -> Result<EncodedBatch, TokenizerError> {
        if self.xlm.is_some() {
            return self.xlm_batch(texts.into_iter().map(|t| (t, None)).collect());
        }
        self.encode_inputs(texts.into_iter().map(EncodeInput::from).collect())
    }

    /// Encodes sentence pairs with the tokenizer's pair template.
    pub fn encode_pairs(
        &self,
        pairs: Vec<(String, String)>,
    ) -> Result<EncodedBatch, TokenizerError> {
        if self.xlm.is_some() {
            return self.xlm_batch(pairs.into_iter().map(|(a, b)| (a, Some(b))).collect());
        }
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
        self.batch(encs)
    }

    /// One encoding through the XLM port, then truncation and the template.
    fn xlm_encode(&self, a: &str, b: Option<&str>) -> Result<Encoding, TokenizerError> {
        let x = self
            .xlm
            .as_ref()
            .ok_or_else(|| TokenizerError::Encode("not an XLM tokenizer".into()))?;
        let ea = x.encode(a)?;
        let eb = b.map(|b| x.encode(b)).transpose()?;
        self.inner
            .post_process(ea, eb, self.add_special)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    fn xlm_batch(
        &self,
        inputs: Vec<(String, Option<String>)>,
    ) -> Result<EncodedBatch, TokenizerError> {
        if inputs.is_empty() {
            return Err(TokenizerError::EmptyBatch);
        }
        let mut encs = inputs
            .iter()
            .map(|(a, b)| self.xlm_encode(a, b.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(p) = self.inner.get_padding() {
            tokenizers::utils::padding::pad_encodings(&mut encs, p)
                .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        }
        self.batch(encs)
    }

    /// Padded encodings as tensors.
    fn batch(&self, encs: Vec<Encoding>) -> Result<EncodedBatch, TokenizerError> {
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
        if let Some(x) = &self.xlm {
            let tokens: Vec<String> = ids
                .iter()
                .filter(|&&i| !(skip_special && x.is_special(i)))
                .map(|&i| {
                    self.inner
                        .id_to_token(i)
                        .unwrap_or_else(|| x.roles["unk_token"].clone())
                })
                .collect();
            let text = XlmTokenizer::tokens_to_string(&tokens);
            return Ok(match self.clean_up {
                true => clean_up_tokenization(&text),
                false => text,
            });
        }
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
        if self.xlm.is_some() {
            return Ok(XlmTokenizer::tokens_to_string(&tokens));
        }
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
        if self.xlm.is_some() {
            // XLM's BPE marks word ends (`</w>`), not continuations.
            return None;
        }
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
        if self.xlm.is_some() {
            return self
                .xlm_encode(text, None)
                .map(|e| e.get_ids().len())
                .unwrap_or(0);
        }
        self.inner
            .encode(text, self.add_special)
            .map(|e| e.get_ids().len())
            .unwrap_or(0)
    }
}

/// The `tokenizers` frame of an XLM tokenizer: its vocabulary (for id and
/// token lookups), the `<s> A </s> [B </s>]` template (token types all 0:
/// FlauBERT's tokenizer makes none) and its padding token.
fn xlm_frame(x: &XlmTokenizer) -> Result<Tokenizer, String> {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::processors::template::TemplateProcessing;
    let unk = x.roles["unk_token"].clone();
    let model = WordLevel::builder()
        .vocab(x.vocab().iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unk_token(unk)
        .build()
        .map_err(|e| e.to_string())?;
    let mut t = Tokenizer::new(model);
    let (bos, sep) = (x.roles["bos_token"].clone(), x.roles["sep_token"].clone());
    let id = |s: &str| {
        x.vocab()
            .get(s)
            .copied()
            .ok_or_else(|| format!("`{s}` is not in vocab.json"))
    };
    let template = TemplateProcessing::builder()
        .try_single(format!("{bos} $A {sep}"))
        .and_then(|b| b.try_pair(format!("{bos} $A {sep} $B {sep}")))
        .map_err(|e| e.to_string())?
        .special_tokens(vec![(bos.clone(), id(&bos)?), (sep.clone(), id(&sep)?)])
        .build()
        .map_err(|e| e.to_string())?;
    t.with_post_processor(Some(template));
    let pad = x.roles["pad_token"].clone();
    t.with_padding(Some(PaddingParams {
        pad_id: id(&pad)?,
        pad_token: pad,
        ..Default::default()
    }));
    Ok(t)
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

    fn flaubert(with_offsets: bool, max_length: Option<u32>) -> HostTokenizer {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tiny-enc-flaubert/tokenizer.json");
        let opts = TokenizerOptions {
            max_length,
            add_special_tokens: true,
            pad_to_multiple_of: None,
            with_offsets,
        };
        HostTokenizer::open(&path, &opts).unwrap()
    }

    fn reference() -> serde_json::Value {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tiny-enc-flaubert/reference.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn ids_of(v: &serde_json::Value) -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    }

    #[test]
    fn flaubert_ids_equal_transformers_slow_tokenizer() {
        let tok = flaubert(false, None);
        let r = reference();
        let texts = r["texts"].as_array().unwrap();
        for (t, want) in texts.iter().zip(r["input_ids"].as_array().unwrap()) {
            let b = tok.encode_batch(vec![t.as_str().unwrap().into()]).unwrap();
            assert_eq!(b.input_ids.to_i64("ids").unwrap(), ids_of(want), "{t}");
        }
        for case in r["tokenizations"].as_array().unwrap() {
            let a = case["text"].as_str().unwrap().to_string();
            let b = match case.get("text_pair").and_then(|p| p.as_str()) {
                Some(p) => tok.encode_pairs(vec![(a.clone(), p.into())]).unwrap(),
                None => tok.encode_batch(vec![a.clone()]).unwrap(),
            };
            assert_eq!(
                b.input_ids.to_i64("ids").unwrap(),
                ids_of(&case["input_ids"]),
                "{a}"
            );
        }
    }

    #[test]
    fn flaubert_offsets_map_pieces_to_the_original_characters() {
        let tok = flaubert(true, None);
        let text = "  Café, NAÏVE résumé -- déjà vu!";
        let b = tok.encode_batch(vec![text.into()]).unwrap();
        let ids = b.input_ids.to_i64("ids").unwrap();
        let chars: Vec<char> = text.chars().collect();
        let pieces: Vec<(String, String)> = b.tokens[0]
            .iter()
            .zip(&ids)
            .filter(|(t, _)| !t.special)
            .map(|(t, &id)| {
                let piece = tok.id_to_token(id as u32).unwrap().replace("</w>", "");
                let span: String = chars[t.start as usize..t.end as usize].iter().collect();
                (piece, span.to_lowercase())
            })
            .collect();
        // Every piece is the (lower-cased) text it points at.
        for (piece, span) in &pieces {
            assert_eq!(piece, span, "{pieces:?}");
        }
        assert_eq!(b.tokens[0][1].start, 2);
        assert!(b.tokens[0][0].special && b.tokens[0].last().unwrap().special);
        // Pieces of one Moses word share a word id.
        assert_eq!(b.tokens[0][1].word, b.tokens[0][2].word);
    }

    #[test]
    fn flaubert_pairs_truncation_and_decoding() {
        let tok = flaubert(false, Some(8));
        let b = tok
            .encode_pairs(vec![("the big red dog and the cat".into(), "a cat".into())])
            .unwrap();
        let ids = b.input_ids.to_i64("ids").unwrap();
        assert_eq!(ids.len(), 8);
        assert_eq!((ids[0], ids[7]), (0, 1));
        assert!(b.truncated[0]);
        assert_eq!(b.token_type_ids.to_i64("types").unwrap(), vec![0; 8]);
        let tok = flaubert(false, None);
        assert_eq!(tok.continuing_subword_prefix(), None);
        let ids: Vec<u32> = tok
            .encode_batch(vec!["The <special1> sat.".into()])
            .unwrap()
            .input_ids
            .to_i64("ids")
            .unwrap()
            .iter()
            .map(|&i| i as u32)
            .collect();
        assert_eq!(
            tok.decode(&ids, false).unwrap(),
            "<s>the <special1>sat . </s>"
        );
        assert_eq!(tok.decode(&ids, true).unwrap(), "the sat .");
        assert_eq!(tok.count_tokens("The cat."), 5);
    }

    #[test]
    fn a_directory_without_any_tokenizer_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = HostTokenizer::open(
            &dir.path().join("tokenizer.json"),
            &TokenizerOptions::default(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("FlaubertTokenizer"), "{e}");
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
