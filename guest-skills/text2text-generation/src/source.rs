//! The encoder's input ids of a request: the model's tokenizer, truncated
//! to the positions the encoder has, and mBART's language codes
//! (`src_lang` framing the input, `tgt_lang` forced as the first token).

use skill_sdk::config::Json;
use skill_sdk::seq2seq::Seq2Seq;
use skill_sdk::tensors::i64_values;
use skill_sdk::tokenizer::{Tokenizer, TokenizerOptions};
use skill_sdk::{invalid, Error};

/// Source length when nothing else bounds it (T5's relative positions).
const DEFAULT_LIMIT: u64 = 512;

/// Where mBART tokenizers put the source language code.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    /// mBART-50: `[src_lang] tokens </s>`.
    Prefix,
    /// mBART (cc25): `tokens </s> [src_lang]`.
    Suffix,
}

/// Tokenization of encoder inputs.
pub struct Source {
    tokenizer: Tokenizer,
    /// Without special tokens, for inputs framed by a language code.
    plain: Option<Tokenizer>,
    framing: Framing,
    /// Language codes the model knows (`en_XX`, ...).
    languages: Vec<String>,
    eos: Option<i64>,
    limit: u64,
}

/// A request's encoder ids.
pub struct Encoded {
    pub ids: Vec<i64>,
    pub truncated: bool,
}

fn options(max_length: u64, specials: bool) -> TokenizerOptions {
    TokenizerOptions {
        max_length: Some(max_length.min(u32::MAX as u64) as u32),
        add_special_tokens: specials,
        pad_to_multiple_of: None,
        with_offsets: false,
    }
}

/// A string that looks like a language code (`en_XX`, `zh_CN`, `ast_ES`).
fn is_language_code(s: &str) -> bool {
    match s.split_once('_') {
        Some((lang, region)) => {
            (2..=3).contains(&lang.len())
                && lang.chars().all(|c| c.is_ascii_lowercase())
                && region.len() == 2
                && region.chars().all(|c| c.is_ascii_uppercase())
        }
        None => false,
    }
}

impl Source {
    pub fn open(model: &Seq2Seq) -> Result<Source, Error> {
        let tc = Json::asset("tokenizer_config.json")?;
        let limit = match model.dims.max_positions {
            Some(p) => p,
            None => tc
                .as_ref()
                .and_then(|t| t.value.get("model_max_length"))
                .and_then(|v| v.as_u64())
                .filter(|&n| n > 0 && n <= 1 << 20)
                .unwrap_or(DEFAULT_LIMIT),
        };
        let tokenizer = Tokenizer::open(options(limit, true))?;
        let class = tc
            .as_ref()
            .and_then(|t| t.value.get("tokenizer_class"))
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let framing = match class.trim_end_matches("Fast") {
            "MBartTokenizer" => Framing::Suffix,
            _ => Framing::Prefix,
        };
        let mut languages = Vec::new();
        if model.spec.languages {
            for key in ["extra_special_tokens", "additional_special_tokens"] {
                if let Some(list) = tc
                    .as_ref()
                    .and_then(|t| t.value.get(key))
                    .and_then(|v| v.as_array())
                {
                    for s in list.iter().filter_map(|v| v.as_str()) {
                        if is_language_code(s) && !languages.iter().any(|l| l == s) {
                            languages.push(s.to_string());
                        }
                    }
                }
            }
        }
        let plain = match model.spec.languages {
            true => Some(Tokenizer::open(options(
                limit.saturating_sub(2).max(1),
                false,
            ))?),
            false => None,
        };
        let eos = tc
            .as_ref()
            .and_then(|t| t.value.get("eos_token"))
            .and_then(|v| v.as_str())
            .and_then(|t| tokenizer.token_to_id(t))
            .map(|id| id as i64);
        Ok(Source {
            tokenizer,
            plain,
            framing,
            languages,
            eos,
            limit,
        })
    }

    /// The id of language code `code`.
    pub fn language(&self, code: &str) -> Result<i64, Error> {
        if self.plain.is_none() {
            return Err(invalid(format!(
                "this model has no language codes (got `{code}`)"
            )));
        }
        let known = self.languages.iter().any(|l| l == code)
            || (self.languages.is_empty() && is_language_code(code));
        match self.tokenizer.token_to_id(code) {
            Some(id) if known => Ok(id as i64),
            _ => Err(invalid(format!(
                "unknown language code `{code}`{}",
                match self.languages.is_empty() {
                    true => String::new(),
                    false => format!(" (known: {})", self.languages.join(", ")),
                }
            ))),
        }
    }

    /// The encoder ids of `text`, framed by `src_lang` when given.
    pub fn encode(&self, text: &str, src_lang: Option<&str>) -> Result<Encoded, Error> {
        let (tok, lang) = match (src_lang, &self.plain) {
            (Some(code), Some(plain)) => (plain, Some(self.language(code)?)),
            (Some(code), None) => {
                return Err(invalid(format!(
                    "this model has no language codes (got src_lang `{code}`)"
                )))
            }
            (None, _) => (&self.tokenizer, None),
        };
        let enc = tok.encode_batch(&[text.to_string()])?;
        let mut ids = i64_values(&enc.input_ids)?;
        ids.truncate(enc.lengths.first().copied().unwrap_or(0) as usize);
        let truncated = enc.truncated.first().copied().unwrap_or(false);
        if let Some(lang) = lang {
            let eos = self
                .eos
                .ok_or_else(|| Error::Model("tokenizer_config.json names no eos_token".into()))?;
            ids = match self.framing {
                Framing::Prefix => [vec![lang], ids, vec![eos]].concat(),
                Framing::Suffix => [ids, vec![eos, lang]].concat(),
            };
        }
        if ids.is_empty() {
            return Err(invalid("the text tokenizes to nothing"));
        }
        if ids.len() as u64 > self.limit {
            return Err(invalid(format!(
                "the text has {} tokens; the encoder takes at most {}",
                ids.len(),
                self.limit
            )));
        }
        Ok(Encoded { ids, truncated })
    }

    /// Decodes generated ids (special tokens skipped).
    pub fn decode(&self, ids: &[i64]) -> Result<String, Error> {
        let toks: Vec<u32> = ids
            .iter()
            .map(|&t| t.clamp(0, u32::MAX as i64) as u32)
            .collect();
        self.tokenizer.decode(&toks, true)
    }
}
