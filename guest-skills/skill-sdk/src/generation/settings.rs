//! Generation settings of one request: the request's keys over
//! `generation_config.json` (then config.json's legacy keys), resolved as
//! transformers' `generate` does.

use serde_json::Value;

use super::sample::Sampling;
use crate::config::Json;
use crate::{invalid, Error};

/// Most beams a request may ask for.
pub const MAX_BEAMS: u64 = 16;
/// Largest `max_new_tokens` a request may ask for.
pub const MAX_NEW_TOKENS: u64 = 4096;

/// transformers' `early_stopping`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EarlyStopping {
    /// Stop a request once it has `num_beams` finished hypotheses.
    True,
    /// Stop when no running beam can beat the worst finished one (at the
    /// current length).
    False,
    /// Stop only when no running beam can beat it at any length.
    Never,
}

/// Resolved settings of one request.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Tokens generated at most (the decoder start token not counted).
    pub max_new_tokens: u64,
    /// End of sequence is banned until this many tokens were generated.
    pub min_new_tokens: u64,
    pub num_beams: u32,
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
    pub no_repeat_ngram_size: usize,
    pub encoder_no_repeat_ngram_size: usize,
    pub forced_bos: Option<i64>,
    pub forced_eos: Vec<i64>,
    pub suppress: Vec<i64>,
    pub begin_suppress: Vec<i64>,
    pub bad_words: Vec<Vec<i64>>,
    pub eos: Vec<i64>,
    pub pad: i64,
    pub decoder_start: i64,
    pub sampling: Sampling,
    pub stop: Vec<String>,
}

/// Model-level defaults: generation_config.json, then config.json.
pub struct Defaults {
    generation: Option<Json>,
    config: Json,
}

fn ids(v: Option<&Value>) -> Vec<i64> {
    match v {
        Some(Value::Number(n)) => n.as_i64().into_iter().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_i64()).collect(),
        _ => Vec::new(),
    }
}

impl Defaults {
    pub fn load(config: Json) -> Result<Defaults, Error> {
        Ok(Defaults {
            generation: Json::asset("generation_config.json")?,
            config,
        })
    }

    /// A default by key: generation_config.json first, then config.json.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.generation
            .as_ref()
            .and_then(|g| g.value.get(key))
            .filter(|v| !v.is_null())
            .or_else(|| self.config.value.get(key).filter(|v| !v.is_null()))
    }

    /// The model's end-of-sequence ids.
    pub fn eos(&self) -> Vec<i64> {
        ids(self.get("eos_token_id"))
    }

    /// The decoder's start token (`decoder_start_token_id`, else BOS).
    pub fn decoder_start(&self) -> Option<i64> {
        ids(self.get("decoder_start_token_id"))
            .first()
            .copied()
            .or_else(|| ids(self.get("bos_token_id")).first().copied())
    }

    /// Settings of a request (a JSON object); `forced_bos` overrides the
    /// model's forced first token (a target language).
    pub fn resolve(&self, req: &Value, forced_bos: Option<i64>) -> Result<Settings, Error> {
        let pick = |k: &str| req.get(k).filter(|v| !v.is_null()).or_else(|| self.get(k));
        let uint = |k: &str, default: u64| -> Result<u64, Error> {
            match pick(k) {
                None => Ok(default),
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| invalid(format!("`{k}` must be a non-negative integer"))),
            }
        };
        let float = |k: &str, default: f64| -> Result<f64, Error> {
            match pick(k) {
                None => Ok(default),
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| invalid(format!("`{k}` must be a number"))),
            }
        };
        // max_new_tokens wins over max_length (which counts the decoder
        // start token).
        // Neither set: 20 new tokens (transformers' default), within the
        // model's positions.
        let max_new_tokens = match (pick("max_new_tokens"), pick("max_length")) {
            (Some(_), _) => uint("max_new_tokens", 0)?,
            (None, Some(_)) => uint("max_length", 21)?.saturating_sub(1),
            (None, None) => match self
                .config
                .value
                .get("max_position_embeddings")
                .and_then(|v| v.as_u64())
            {
                Some(p) => 20.min(p.saturating_sub(1)),
                None => 20,
            },
        };
        if max_new_tokens == 0 {
            return Err(invalid("`max_new_tokens` must be at least 1"));
        }
        if max_new_tokens > MAX_NEW_TOKENS {
            return Err(invalid(format!(
                "`max_new_tokens` {max_new_tokens} is over the limit of {MAX_NEW_TOKENS}"
            )));
        }
        // min_new_tokens wins over min_length (which counts the start token).
        let min_new_tokens = match pick("min_new_tokens") {
            Some(_) => uint("min_new_tokens", 0)?,
            None => uint("min_length", 0)?.saturating_sub(1),
        };
        let num_beams = uint("num_beams", 1)?;
        if num_beams == 0 || num_beams > MAX_BEAMS {
            return Err(invalid(format!(
                "`num_beams` must be between 1 and {MAX_BEAMS}, got {num_beams}"
            )));
        }
        let early_stopping = match pick("early_stopping") {
            None | Some(Value::Bool(false)) => EarlyStopping::False,
            Some(Value::Bool(true)) => EarlyStopping::True,
            Some(Value::String(s)) if s == "never" => EarlyStopping::Never,
            Some(other) => {
                return Err(invalid(format!(
                    "`early_stopping` must be true, false or \"never\", got {other}"
                )))
            }
        };
        let do_sample = match pick("do_sample") {
            None => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| invalid("`do_sample` must be a boolean"))?,
        };
        if do_sample && num_beams > 1 {
            return Err(Error::Unsupported(
                "beam sampling (`do_sample` with `num_beams` > 1) is not supported".into(),
            ));
        }
        let repetition = float("repetition_penalty", 1.0)?;
        if repetition != 1.0 {
            return Err(Error::Unsupported(
                "`repetition_penalty` is not supported by encoder-decoder generation".into(),
            ));
        }
        let temperature = float("temperature", 1.0)? as f32;
        if do_sample && temperature <= 0.0 {
            return Err(invalid("`temperature` must be positive"));
        }
        let stop = match req.get("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid("`stop` must be a string or a list of strings"))?,
            Some(_) => return Err(invalid("`stop` must be a string or a list of strings")),
        };
        if !stop.is_empty() && num_beams > 1 {
            return Err(invalid("`stop` strings need `num_beams` 1"));
        }
        let bad_words = match pick("bad_words_ids") {
            Some(Value::Array(a)) => a.iter().map(|s| ids(Some(s))).collect(),
            _ => Vec::new(),
        };
        let eos = self.eos();
        let pad = ids(pick("pad_token_id"))
            .first()
            .copied()
            .or(eos.first().copied())
            .unwrap_or(0);
        let decoder_start = self
            .decoder_start()
            .ok_or_else(|| Error::Model("no `decoder_start_token_id` or `bos_token_id`".into()))?;
        Ok(Settings {
            max_new_tokens,
            min_new_tokens,
            num_beams: num_beams as u32,
            length_penalty: float("length_penalty", 1.0)? as f32,
            early_stopping,
            no_repeat_ngram_size: uint("no_repeat_ngram_size", 0)? as usize,
            encoder_no_repeat_ngram_size: uint("encoder_no_repeat_ngram_size", 0)? as usize,
            forced_bos: forced_bos.or_else(|| ids(pick("forced_bos_token_id")).first().copied()),
            forced_eos: ids(pick("forced_eos_token_id")),
            suppress: ids(pick("suppress_tokens")),
            begin_suppress: ids(pick("begin_suppress_tokens")),
            bad_words,
            eos,
            pad,
            decoder_start,
            sampling: Sampling {
                do_sample,
                temperature,
                top_k: uint("top_k", 50)?.min(u32::MAX as u64) as u32,
                top_p: float("top_p", 1.0)? as f32,
                seed: uint("seed", 0)?,
            },
            stop,
        })
    }
}

/// Greedy settings for the module's unit tests: 5 new tokens, eos 2,
/// start 2, pad 1, nothing banned or forced.
#[cfg(test)]
pub(crate) fn test_settings() -> Settings {
    Settings {
        max_new_tokens: 5,
        min_new_tokens: 0,
        num_beams: 1,
        length_penalty: 1.0,
        early_stopping: EarlyStopping::False,
        no_repeat_ngram_size: 0,
        encoder_no_repeat_ngram_size: 0,
        forced_bos: None,
        forced_eos: Vec::new(),
        suppress: Vec::new(),
        begin_suppress: Vec::new(),
        bad_words: Vec::new(),
        eos: vec![2],
        pad: 1,
        decoder_start: 2,
        sampling: Sampling {
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            seed: 0,
        },
        stop: Vec::new(),
    }
}
