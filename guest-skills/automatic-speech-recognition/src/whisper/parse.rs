//! A Whisper request: its keys (top level or inside `generate_kwargs`, the
//! pipeline's form) resolved as transformers' Whisper `generate` and the
//! ASR pipeline resolve them.
//!
//! - `return_timestamps`: `true` (timed chunks), `"word"` (timed words:
//!   decoded as `true`, then aligned; needs the generation config's
//!   `alignment_heads`), or the generation config's default.
//! - `prompt`: previous text, as `WhisperProcessor.get_prompt_ids` makes
//!   `prompt_ids` (`<|startofprev|>`, then `" " + text.strip()` encoded
//!   without special tokens; special tokens in the text are refused).
//!   `prompt_condition_type` (`first-segment`, the default, or
//!   `all-segments`, which needs `condition_on_prev_tokens`) and
//!   `condition_on_prev_tokens` shape later windows' prompts
//!   ([`super::context`]).
//! - `temperature`: a number or a list; each window is decoded at the
//!   first, then again at the next while the thresholds
//!   (`compression_ratio_threshold`, `logprob_threshold`,
//!   `no_speech_threshold`, the request's or the generation config's)
//!   reject the attempt. Temperature 0 decodes with the pipeline's beams, a
//!   positive one samples with one beam (and, as transformers' generation
//!   config keeps it, every later attempt of the request then uses one
//!   beam too). `no_speech_threshold` needs `logprob_threshold` (transformers
//!   reads the log-probability for it).
//! - `max_new_tokens` (the request's, else the generation config's) must fit
//!   the decoder's positions after each window's prompt; else the
//!   generation config's `max_length` counts after the prompt ([`Limit`]).

use serde_json::{Map, Value};
use skill_sdk::generation::fallback::Thresholds;
use skill_sdk::requests::Request;
use skill_sdk::tensors::i64_values;
use skill_sdk::{invalid, Error};

use super::{Job, Whisper};

/// Request keys understood besides the audio.
const KEYS: &[&str] = &[
    "audio",
    "array",
    "sampling_rate",
    "language",
    "task",
    "return_timestamps",
    "generate_kwargs",
    "max_new_tokens",
    "num_beams",
    "length_penalty",
    "temperature",
    "top_k",
    "top_p",
    "seed",
    "no_repeat_ngram_size",
    "prompt",
    "prompt_condition_type",
    "condition_on_prev_tokens",
    "compression_ratio_threshold",
    "logprob_threshold",
    "no_speech_threshold",
];

/// The ASR pipeline's defaults for what the generation config does not
/// set (transformers' `_default_generation_config`).
const PIPELINE_BEAMS: u64 = 5;
const PIPELINE_MAX_NEW_TOKENS: u64 = 256;
/// transformers' default `max_length` (a config that keeps it sets none).
const DEFAULT_MAX_LENGTH: u64 = 20;

/// How many new tokens a pass may make.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// `max_new_tokens`: the prompt and these must fit the positions.
    Exact(u64),
    /// `max_length` counted after the prompt (at most half the positions
    /// of it, as `_set_max_new_tokens_and_length`), within the positions.
    Length(u64),
}

impl Limit {
    /// New tokens after a decoder prompt of `prompt` tokens, of a decoder
    /// with `positions`.
    pub fn new_tokens(self, prompt: usize, positions: u64) -> Result<u64, Error> {
        let p = prompt as u64;
        match self {
            Limit::Exact(n) if n + p > positions => Err(invalid(format!(
                "`max_new_tokens` {n} and the {p} prompt tokens exceed the decoder's {positions} positions"
            ))),
            Limit::Exact(n) => Ok(n),
            Limit::Length(l) => {
                let initial = p.min((positions / 2).saturating_sub(1));
                match (l + initial).min(positions).saturating_sub(p) {
                    0 => Err(invalid(format!(
                        "the {p} prompt tokens leave no room in the decoder's {positions} positions (shorten the `prompt`)"
                    ))),
                    n => Ok(n),
                }
            }
        }
    }
}

fn float(v: &Value, key: &str) -> Result<f64, Error> {
    v.as_f64()
        .ok_or_else(|| invalid(format!("`{key}` must be a number")))
}

impl Whisper {
    /// Parses a request whose audio is `samples` (at the model's rate).
    pub fn parse(&self, req: &Request, samples: &[f32]) -> Result<Job, Error> {
        req.only(KEYS)?;
        // Longer than a window: transformers' long-form decoding, which
        // always predicts timestamps.
        let long = samples.len() > self.mel.samples;
        let mut opts: Map<String, Value> = match req.0.get("generate_kwargs") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(invalid("`generate_kwargs` must be an object")),
        };
        for (k, v) in req.0.iter().filter(|(k, _)| *k != "generate_kwargs") {
            opts.insert(k.clone(), v.clone());
        }
        let get = |k: &str| opts.get(k).filter(|v| !v.is_null()).cloned();
        let mut words = false;
        let chunks = match get("return_timestamps") {
            // As the pipeline: asked, or the generation config's default.
            None | Some(Value::Bool(false)) => self.ids.timestamps_default.unwrap_or(false),
            Some(Value::Bool(true)) => true,
            Some(Value::String(s)) if s == "word" => {
                if self.alignment.is_none() {
                    return Err(Error::Unsupported(
                        "word-level timestamps need the generation config's `alignment_heads` \
                         (this checkpoint has none; transformers refuses the same)"
                            .into(),
                    ));
                }
                words = true;
                true
            }
            Some(_) => return Err(invalid("`return_timestamps` must be a boolean or \"word\"")),
        };
        if long && !chunks && self.ids.timestamps_default == Some(false) {
            return Err(invalid(
                "audio longer than a window is decoded with timestamps: pass `return_timestamps`: true \
                 (the model's generation config sets it false, and transformers refuses the same)",
            ));
        }
        let timestamps = chunks || long;
        let rules = match (timestamps, self.ids.rules) {
            (false, _) => None,
            (true, Some(r)) => Some(r),
            (true, None) => {
                return Err(Error::Unsupported(
                    "this checkpoint's generation config has no `no_timestamps_token_id`: it cannot give timestamps (nor transcribe audio longer than a window)".into(),
                ))
            }
        };
        let string = |k: &str| -> Result<Option<String>, Error> {
            match get(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(invalid(format!("`{k}` must be a string"))),
            }
        };
        let language = string("language")?;
        let task = match string("task")? {
            None => None,
            Some(s) if s == "transcribe" || s == "translate" => Some(s),
            Some(other) => {
                return Err(invalid(format!(
                    "`task` must be \"transcribe\" or \"translate\", got \"{other}\""
                )))
            }
        };
        let prompt = self
            .ids
            .prompt(language.as_deref(), task.as_deref(), timestamps)?;
        let prompt_ids = match string("prompt")? {
            None => Vec::new(),
            Some(text) => self.prompt_ids(&text)?,
        };
        let (condition, all_segments) = self.conditioning(&get)?;
        let temperatures = temperatures(get("temperature"))?;
        let thresholds = self.thresholds(&get)?;
        let beams_given = get("num_beams");
        for k in ["temperature", "do_sample", "max_length", "prompt"] {
            opts.remove(k);
        }
        opts.insert("do_sample".into(), Value::Bool(false));
        if beams_given.is_none() {
            // The pipeline's default where the model sets none.
            let beams = self
                .defaults
                .get("num_beams")
                .and_then(|v| v.as_u64())
                .filter(|&n| n != 1)
                .unwrap_or(PIPELINE_BEAMS);
            opts.insert("num_beams".into(), Value::from(beams));
        }
        let limit = self.limit(opts.get("max_new_tokens").filter(|v| !v.is_null()))?;
        let positions = self.ids.max_target;
        let first = limit.new_tokens(prompt_ids.len() + prompt.len(), positions)?;
        opts.insert("max_new_tokens".into(), Value::from(first));
        let mut settings = self.defaults.resolve(&Value::Object(opts), None)?;
        settings.decoder_start = self.ids.start;
        let beams = settings.num_beams.max(1);
        Ok(Job {
            features: self.mel.features(samples),
            frames: self.mel.frames_of(samples.len()),
            chunks,
            words,
            audio_frames: samples
                .len()
                .div_ceil(self.mel.hop.max(1))
                .min(self.mel.frames_of(samples.len())),
            duration: samples.len() as f64 / self.mel.rate as f64,
            settings,
            prompt,
            timestamps: rules,
            prompt_ids,
            all_segments,
            condition,
            temperatures,
            thresholds,
            limit,
            beams,
        })
    }

    /// `get_prompt_ids`: `<|startofprev|>` and `" " + text.strip()`.
    fn prompt_ids(&self, text: &str) -> Result<Vec<i64>, Error> {
        let start = self.ids.startofprev.ok_or_else(|| {
            Error::Unsupported(
                "this checkpoint has no `<|startofprev|>` token: it cannot take a `prompt`".into(),
            )
        })?;
        let enc = self
            .tokenizer
            .encode_batch(&[format!(" {}", text.trim())])?;
        let ids = i64_values(&enc.input_ids)?;
        let n = enc.lengths.first().copied().unwrap_or(0) as usize;
        let ids = ids.get(..n).unwrap_or(&[]);
        if let Some(&special) = ids.iter().find(|&&t| t >= self.ids.text_end) {
            return Err(invalid(format!(
                "the prompt's text contains a special token (id {special}); transformers refuses it too"
            )));
        }
        Ok(std::iter::once(start).chain(ids.iter().copied()).collect())
    }

    /// `condition_on_prev_tokens` and whether `prompt_condition_type` is
    /// "all-segments".
    fn conditioning(&self, get: &dyn Fn(&str) -> Option<Value>) -> Result<(bool, bool), Error> {
        let condition = match get("condition_on_prev_tokens")
            .or_else(|| self.defaults.get("condition_on_prev_tokens").cloned())
        {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(invalid("`condition_on_prev_tokens` must be a boolean")),
        };
        let all = match get("prompt_condition_type") {
            None => false,
            Some(Value::String(s)) if s == "first-segment" => false,
            Some(Value::String(s)) if s == "all-segments" => true,
            Some(other) => {
                return Err(invalid(format!(
                    "`prompt_condition_type` must be \"first-segment\" or \"all-segments\", got {other}"
                )))
            }
        };
        if all && !condition {
            return Err(invalid(
                "`prompt_condition_type` \"all-segments\" needs `condition_on_prev_tokens`: true",
            ));
        }
        Ok((condition, all))
    }

    /// The fallback thresholds: the request's, else the generation config's.
    fn thresholds(&self, get: &dyn Fn(&str) -> Option<Value>) -> Result<Thresholds, Error> {
        let pick = |k: &str| -> Result<Option<f64>, Error> {
            match get(k).or_else(|| self.defaults.get(k).filter(|v| !v.is_null()).cloned()) {
                None => Ok(None),
                Some(v) => float(&v, k).map(Some),
            }
        };
        let t = Thresholds {
            compression_ratio: pick("compression_ratio_threshold")?,
            logprob: pick("logprob_threshold")?,
            no_speech: pick("no_speech_threshold")?,
        };
        if t.no_speech.is_some() && t.logprob.is_none() {
            return Err(invalid(
                "`no_speech_threshold` needs `logprob_threshold` (a window is skipped as silent when both say so)",
            ));
        }
        Ok(t)
    }

    /// The request's `max_new_tokens`, else the generation config's; else
    /// its `max_length` (not transformers' default 20); else the pipeline's
    /// default.
    fn limit(&self, asked: Option<&Value>) -> Result<Limit, Error> {
        let explicit = asked.or_else(|| self.defaults.get("max_new_tokens"));
        let max_length = self.ids.max_length.filter(|&l| l != DEFAULT_MAX_LENGTH);
        match (explicit, max_length) {
            (None, Some(l)) => Ok(Limit::Length(l)),
            (None, None) => Ok(Limit::Length(PIPELINE_MAX_NEW_TOKENS)),
            (Some(v), _) => v
                .as_u64()
                .map(Limit::Exact)
                .ok_or_else(|| invalid("`max_new_tokens` must be a non-negative integer")),
        }
    }
}

/// `temperature`: a number or a non-empty list of them (none: 0).
fn temperatures(v: Option<Value>) -> Result<Vec<f64>, Error> {
    let list = match v {
        None => return Ok(vec![0.0]),
        Some(Value::Array(a)) if a.is_empty() => {
            return Err(invalid("`temperature` must not be an empty list"))
        }
        Some(Value::Array(a)) => a,
        Some(one) => vec![one],
    };
    list.iter()
        .map(|t| match float(t, "temperature")? {
            t if t.is_finite() && t >= 0.0 => Ok(t),
            t => Err(invalid(format!(
                "`temperature` must be finite and not negative, got {t}"
            ))),
        })
        .collect()
}
