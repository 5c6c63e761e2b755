//! Whisper: log-mel features of a clip (one 30 s window, or the whole clip
//! for longer audio, decoded window after window as transformers'
//! long-form generation does, with timestamps), the encoder per window,
//! then the decoder on the shared encoder-decoder generation
//! loop (`skill_sdk::seq2seq::run`) with Whisper's decoder prompt
//! (`<|startoftranscript|>`, the language, given or detected from the
//! logits after the start token, the task, `<|notimestamps|>` unless
//! timestamps are asked), its suppressed tokens and timestamp rules, as
//! transformers' `WhisperForConditionalGeneration.generate` resolves them
//! from generation_config.json and the request.
//!
//! Defaults are the transformers ASR pipeline's: beam search with 5 beams
//! and at most 256 new tokens unless the generation config sets them
//! (Whisper's `max_length` 448 counts after the prompt, within the
//! decoder's positions).
//!
//! Request keys (besides the audio): `language` (code, name or token),
//! `task` (`transcribe` / `translate`), `return_timestamps`, and the
//! generation keys `max_new_tokens`, `num_beams`, `length_penalty`,
//! `temperature` (> 0 samples, as Whisper's generate), `top_k`, `top_p`,
//! `seed`; also accepted inside `generate_kwargs` (the pipeline's form).

pub mod chunks;
mod languages;
mod window;

use serde_json::{Map, Value};
use skill_sdk::audio::mel::LogMel;
use skill_sdk::config::Json;
use skill_sdk::generation::settings::{Defaults, Settings};
use skill_sdk::generation::timestamps::TimestampRules;
use skill_sdk::requests::Request;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::seq2seq::run::{Decoder, PromptToken};
use skill_sdk::seq2seq::Seq2Seq;
use skill_sdk::tokenizer::{Tokenizer, TokenizerOptions};
use skill_sdk::{invalid, Error};

pub use window::transcribe;

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
];

/// The ASR pipeline's defaults for what the generation config does not
/// set (transformers' `_default_generation_config`).
const PIPELINE_BEAMS: u64 = 5;
const PIPELINE_MAX_NEW_TOKENS: u64 = 256;
/// transformers' default `max_length` (a config that keeps it sets none).
const DEFAULT_MAX_LENGTH: u64 = 20;

/// Token ids and prompt rules of a checkpoint (generation_config.json).
struct Ids {
    start: i64,
    no_timestamps: Option<i64>,
    /// (language code, token id), when the model is multilingual.
    languages: Vec<(String, i64)>,
    multilingual: bool,
    tasks: Vec<(String, i64)>,
    /// `forced_decoder_ids` of positions 1, 2, ... (a `None` entry: chosen).
    forced: Vec<Option<i64>>,
    rules: Option<TimestampRules>,
    max_target: u64,
    max_length: Option<u64>,
    /// The generation config's `return_timestamps`.
    timestamps_default: Option<bool>,
}

/// A loaded Whisper checkpoint.
pub struct Whisper {
    decoder: Decoder,
    encode: CompiledGraph,
    pub mel: LogMel,
    tokenizer: Tokenizer,
    defaults: Defaults,
    ids: Ids,
}

/// One parsed request.
pub struct Job {
    /// Log-mel features [mels, frames].
    pub features: Vec<f32>,
    frames: usize,
    /// Answer with timed chunks.
    chunks: bool,
    /// Seconds of audio.
    duration: f64,
    settings: Settings,
    prompt: Vec<PromptToken>,
    /// The timestamp rules, when timestamps are asked.
    timestamps: Option<TimestampRules>,
}

fn id_list(v: Option<&Value>) -> Vec<(String, i64)> {
    match v {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| v.as_i64().map(|id| (k.clone(), id)))
            .collect(),
        _ => Vec::new(),
    }
}

impl Whisper {
    pub fn load(config: &Json) -> Result<Whisper, Error> {
        let mut model = Seq2Seq::load(config)?;
        model.fuse = skill_sdk::runtime::device().fixed_shapes;
        let mel = LogMel::read()?;
        if let Some((bins, positions)) = model.dims.mel {
            if bins as usize != mel.n_mels || 2 * positions as usize != mel.frames() {
                return Err(Error::Model(format!(
                    "the feature extractor gives {} mel bins x {} frames; the encoder takes {bins} x {}",
                    mel.n_mels,
                    mel.frames(),
                    2 * positions
                )));
            }
        }
        let defaults = Defaults::load(Json::config()?)?;
        let ids = Ids::read(&defaults, &model)?;
        let encode = model.encode_graph()?;
        let tokenizer = Tokenizer::open(TokenizerOptions {
            max_length: None,
            add_special_tokens: false,
            pad_to_multiple_of: None,
            with_offsets: false,
        })?;
        let slots = skill_sdk::runtime::device().fixed_shapes;
        Ok(Whisper {
            decoder: Decoder::new(model, slots),
            encode,
            mel,
            tokenizer,
            defaults,
            ids,
        })
    }

    /// Text of generated text tokens.
    pub fn text(&self, tokens: &[i64]) -> Result<String, Error> {
        let ids: Vec<u32> = tokens
            .iter()
            .map(|&t| t.clamp(0, u32::MAX as i64) as u32)
            .collect();
        self.tokenizer.decode(&ids, true)
    }

    /// Parses a request whose audio is `samples` (at the model's rate).
    pub fn parse(&self, req: &Request, samples: &[f32]) -> Result<Job, Error> {
        req.only(KEYS)?;
        // Longer than a window: transformers' long-form decoding, which
        // always predicts timestamps.
        let long = samples.len() > self.mel.samples;
        // `generate_kwargs` (the pipeline's form) under the top-level keys.
        let mut opts: Map<String, Value> = match req.0.get("generate_kwargs") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(invalid("`generate_kwargs` must be an object")),
        };
        for (k, v) in req.0.iter().filter(|(k, _)| *k != "generate_kwargs") {
            opts.insert(k.clone(), v.clone());
        }
        let get = |k: &str| opts.get(k).filter(|v| !v.is_null()).cloned();
        let chunks = match get("return_timestamps") {
            // As the pipeline: asked, or the generation config's default.
            None | Some(Value::Bool(false)) => self.ids.timestamps_default.unwrap_or(false),
            Some(Value::Bool(true)) => true,
            Some(Value::String(s)) if s == "word" => {
                return Err(Error::Unsupported(
                    "word-level timestamps are not supported yet".into(),
                ))
            }
            Some(_) => return Err(invalid("`return_timestamps` must be a boolean")),
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
        let language = match get("language") {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(invalid("`language` must be a string")),
        };
        let task = match get("task") {
            None => None,
            Some(Value::String(s)) if s == "transcribe" || s == "translate" => Some(s),
            Some(other) => {
                return Err(invalid(format!(
                    "`task` must be \"transcribe\" or \"translate\", got {other}"
                )))
            }
        };
        let prompt = self
            .ids
            .prompt(language.as_deref(), task.as_deref(), timestamps)?;
        // Whisper's generate samples only with a positive temperature (one
        // beam then), whatever `do_sample` says.
        let temperature = match get("temperature") {
            None => None,
            Some(v) => Some(
                v.as_f64()
                    .ok_or_else(|| invalid("`temperature` must be a number"))?,
            ),
        };
        let sample = temperature.is_some_and(|t| t > 0.0);
        let asked_max = get("max_new_tokens");
        let beams_given = get("num_beams").is_some();
        opts.insert("do_sample".into(), Value::Bool(sample));
        if sample {
            opts.insert("num_beams".into(), Value::from(1));
        } else {
            opts.remove("temperature");
            if !beams_given {
                // The pipeline's default where the model sets none.
                let beams = self
                    .defaults
                    .get("num_beams")
                    .and_then(|v| v.as_u64())
                    .filter(|&n| n != 1)
                    .unwrap_or(PIPELINE_BEAMS);
                opts.insert("num_beams".into(), Value::from(beams));
            }
        }
        let max_new = self.max_new_tokens(asked_max.as_ref(), prompt.len())?;
        opts.insert("max_new_tokens".into(), Value::from(max_new));
        opts.remove("max_length");
        let mut settings = self.defaults.resolve(&Value::Object(opts), None)?;
        settings.decoder_start = self.ids.start;
        Ok(Job {
            features: self.mel.features(samples),
            frames: self.mel.frames_of(samples.len()),
            chunks,
            duration: samples.len() as f64 / self.mel.rate as f64,
            settings,
            prompt,
            timestamps: rules,
        })
    }

    /// New tokens of a request: `max_new_tokens` (the request's, else the
    /// generation config's) must fit the decoder's positions after the
    /// prompt (transformers refuses otherwise); else the generation
    /// config's `max_length` counted after the prompt, within the
    /// positions; else the pipeline's default.
    fn max_new_tokens(&self, asked: Option<&Value>, prompt: usize) -> Result<u64, Error> {
        let room = self.ids.max_target.saturating_sub(prompt as u64);
        let explicit = asked.or_else(|| self.defaults.get("max_new_tokens"));
        let max_length = self.ids.max_length.filter(|&l| l != DEFAULT_MAX_LENGTH);
        match (explicit, max_length) {
            (None, Some(l)) => Ok(l.min(room)),
            (None, None) => Ok(PIPELINE_MAX_NEW_TOKENS.min(room)),
            (Some(v), _) => {
                let n = v
                    .as_u64()
                    .ok_or_else(|| invalid("`max_new_tokens` must be a non-negative integer"))?;
                if n > room {
                    return Err(invalid(format!(
                        "`max_new_tokens` {n} and the {prompt} prompt tokens exceed the decoder's {} positions",
                        self.ids.max_target
                    )));
                }
                Ok(n)
            }
        }
    }
}

impl Ids {
    fn read(d: &Defaults, model: &Seq2Seq) -> Result<Ids, Error> {
        let int = |k: &str| d.get(k).and_then(|v| v.as_i64());
        let start = int("decoder_start_token_id")
            .ok_or_else(|| Error::Model("no `decoder_start_token_id`".into()))?;
        let no_timestamps = int("no_timestamps_token_id");
        let eos = d.eos().first().copied().or(int("bos_token_id"));
        let rules = match (no_timestamps, eos) {
            (Some(n), Some(eos)) => Some(TimestampRules {
                no_timestamps: n,
                begin: n + 1,
                eos,
                max_initial: int("max_initial_timestamp_index"),
            }),
            _ => None,
        };
        let forced = match d.get("forced_decoder_ids") {
            Some(Value::Array(pairs)) => {
                let mut out = Vec::new();
                for (i, p) in pairs.iter().enumerate() {
                    let at = p.get(0).and_then(|v| v.as_u64());
                    if at != Some(i as u64 + 1) {
                        break;
                    }
                    out.push(p.get(1).and_then(|v| v.as_i64()));
                }
                out
            }
            _ => Vec::new(),
        };
        let languages: Vec<(String, i64)> = id_list(d.get("lang_to_id"))
            .into_iter()
            .map(|(tok, id)| {
                let code = tok
                    .trim_start_matches("<|")
                    .trim_end_matches("|>")
                    .to_string();
                (code, id)
            })
            .collect();
        Ok(Ids {
            start,
            no_timestamps,
            multilingual: d
                .get("is_multilingual")
                .and_then(|v| v.as_bool())
                .unwrap_or(true),
            languages,
            tasks: id_list(d.get("task_to_id")),
            forced,
            rules,
            max_target: model.dims.max_positions.unwrap_or(448),
            max_length: d.get("max_length").and_then(|v| v.as_u64()),
            timestamps_default: d.get("return_timestamps").and_then(|v| v.as_bool()),
        })
    }

    /// The decoder prompt, as transformers' `_retrieve_init_tokens`: the
    /// start token; `forced_decoder_ids` when neither language nor task is
    /// given; the language (given, or detected when the model has
    /// languages and none is set); the task (given, or `transcribe` when
    /// only the language is); `<|notimestamps|>` unless timestamps.
    fn prompt(
        &self,
        language: Option<&str>,
        task: Option<&str>,
        timestamps: bool,
    ) -> Result<Vec<PromptToken>, Error> {
        if !self.multilingual && (language.is_some() || task.is_some()) {
            return Err(invalid(
                "this is an English-only Whisper: `language` and `task` cannot be set",
            ));
        }
        let mut init: Vec<Option<PromptToken>> = vec![Some(PromptToken::Fixed(self.start))];
        if language.is_none() && task.is_none() {
            init.extend(self.forced.iter().map(|t| t.map(PromptToken::Fixed)));
        }
        let undefined = init.len() <= 1 || init[1].is_none();
        let lang = match language {
            Some(l) => Some(PromptToken::Fixed(self.language(l)?)),
            None if !self.languages.is_empty() && undefined => Some(PromptToken::Best(
                self.languages.iter().map(|(_, id)| *id).collect(),
            )),
            None => None,
        };
        if let Some(l) = lang {
            match init.len() > 1 {
                true => init[1] = Some(l),
                false => init.push(Some(l)),
            }
        }
        let task_ids: Vec<i64> = self.tasks.iter().map(|(_, id)| *id).collect();
        let has_task = |init: &[Option<PromptToken>]| {
            init.iter()
                .any(|t| matches!(t, Some(PromptToken::Fixed(id)) if task_ids.contains(id)))
        };
        let task_id = |name: &str| -> Result<i64, Error> {
            self.tasks
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, id)| *id)
                .ok_or_else(|| invalid(format!("the model has no `{name}` task token")))
        };
        match (task, language) {
            (Some(t), _) => {
                let id = task_id(t)?;
                for tok in init.iter_mut() {
                    if matches!(tok, Some(PromptToken::Fixed(x)) if task_ids.contains(x)) {
                        *tok = Some(PromptToken::Fixed(id));
                    }
                }
                init.push(Some(PromptToken::Fixed(id)));
            }
            (None, Some(_)) if !self.tasks.is_empty() && !has_task(&init) => {
                init.push(Some(PromptToken::Fixed(task_id("transcribe")?)));
            }
            _ => {}
        }
        let mut prompt: Vec<PromptToken> = init.into_iter().flatten().collect();
        if let Some(n) = self.no_timestamps {
            let last_is = prompt.last() == Some(&PromptToken::Fixed(n));
            match (timestamps, last_is) {
                (false, false) => prompt.push(PromptToken::Fixed(n)),
                (true, true) => {
                    prompt.pop();
                }
                _ => {}
            }
        }
        Ok(prompt)
    }

    fn language(&self, name: &str) -> Result<i64, Error> {
        let code = languages::code(name).ok_or_else(|| {
            invalid(format!(
                "unknown language `{name}` (give a code such as \"en\" or a name such as \"english\")"
            ))
        })?;
        self.languages
            .iter()
            .find(|(c, _)| c == code)
            .map(|(_, id)| *id)
            .ok_or_else(|| invalid(format!("this model has no language token for `{code}`")))
    }
}
