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
//! `task` (`transcribe` / `translate`), `return_timestamps`, `prompt`
//! (previous text, [`context`]), `prompt_condition_type`,
//! `condition_on_prev_tokens`, the fallback keys `temperature` (a number or
//! a list), `compression_ratio_threshold`, `logprob_threshold`,
//! `no_speech_threshold` ([`skill_sdk::generation::fallback`]), and the
//! generation keys `max_new_tokens`, `num_beams`, `length_penalty`,
//! `top_k`, `top_p`, `seed`; also accepted inside `generate_kwargs` (the
//! pipeline's form). See [`parse`].
//!
//! `return_timestamps: "word"` decodes as `true` does, then times each
//! generated token from the cross-attention of the checkpoint's
//! `alignment_heads` ([`align`]) and answers words ([`words`]) instead of
//! segments, as the pipeline does.

mod align;
pub mod chunks;
mod context;
mod languages;
mod parse;
mod passes;
mod window;
mod words;

use serde_json::Value;
use skill_sdk::audio::mel::LogMel;
use skill_sdk::config::Json;
use skill_sdk::generation::fallback::Thresholds;
use skill_sdk::generation::settings::{Defaults, Settings};
use skill_sdk::generation::timestamps::TimestampRules;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::seq2seq::run::{Decoder, PromptToken};
use skill_sdk::seq2seq::Seq2Seq;
use skill_sdk::tokenizer::{Tokenizer, TokenizerOptions};
use skill_sdk::{invalid, Error};

pub use passes::transcribe;

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
    /// `<|startofprev|>` as the previous-text prompt's first token.
    startofprev: Option<i64>,
    /// The first token of the previous text when conditioning on it
    /// (`prev_sot_token_id`, else the second-last suppressed token).
    prev_sot: Option<i64>,
    /// `<|nospeech|>` (the token before `<|notimestamps|>`).
    no_speech: Option<i64>,
    /// The first special token: a prompt's text must stay below it.
    text_end: i64,
}

/// A loaded Whisper checkpoint.
pub struct Whisper {
    decoder: Decoder,
    encode: CompiledGraph,
    pub mel: LogMel,
    tokenizer: Tokenizer,
    defaults: Defaults,
    ids: Ids,
    /// `alignment_heads` of the generation config (none: no word times).
    alignment: Option<align::Alignment>,
}

/// One parsed request.
pub struct Job {
    /// Log-mel features [mels, frames].
    pub features: Vec<f32>,
    frames: usize,
    /// Answer with timed chunks.
    chunks: bool,
    /// Timed words instead of segments (`return_timestamps: "word"`).
    words: bool,
    /// Feature frames of the audio itself (the extractor's attention mask).
    audio_frames: usize,
    /// Seconds of audio.
    duration: f64,
    /// Settings at temperature 0 (each attempt sets its own sampling).
    settings: Settings,
    /// The decoder prompt from `<|startoftranscript|>` on.
    prompt: Vec<PromptToken>,
    /// The timestamp rules, when timestamps are asked.
    timestamps: Option<TimestampRules>,
    /// `<|startofprev|>` and the `prompt` text's tokens (empty: none).
    prompt_ids: Vec<i64>,
    /// `prompt_condition_type` "all-segments".
    all_segments: bool,
    /// `condition_on_prev_tokens`.
    condition: bool,
    /// The attempts' temperatures (at least one).
    temperatures: Vec<f64>,
    thresholds: Thresholds,
    /// New tokens of a pass, given its decoder prompt's length.
    limit: parse::Limit,
    /// Beams at temperature 0.
    beams: u32,
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
        let mut ids = ids;
        ids.startofprev = tokenizer
            .token_to_id("<|startofprev|>")
            .map(i64::from)
            .or(ids.prev_sot);
        let slots = skill_sdk::runtime::device().fixed_shapes;
        let alignment = alignment(&defaults, config)?;
        Ok(Whisper {
            decoder: Decoder::new(model, slots),
            encode,
            mel,
            tokenizer,
            defaults,
            ids,
            alignment,
        })
    }

    /// The first timestamp token (none: above every id).
    fn begin(&self) -> i64 {
        self.ids.rules.map_or(i64::MAX, |r| r.begin)
    }

    /// Text of generated text tokens.
    pub fn text(&self, tokens: &[i64]) -> Result<String, Error> {
        let ids: Vec<u32> = tokens
            .iter()
            .map(|&t| t.clamp(0, u32::MAX as i64) as u32)
            .collect();
        self.tokenizer.decode(&ids, true)
    }
}

/// `alignment_heads` ([layer, head] pairs) of the generation config and
/// config.json's `median_filter_width` (7).
fn alignment(d: &Defaults, config: &Json) -> Result<Option<align::Alignment>, Error> {
    let Some(list) = d.get("alignment_heads").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let bad = || {
        Error::Model("generation_config.json: `alignment_heads` must be [layer, head] pairs".into())
    };
    let pairs = list
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|p| match p.as_array().map(Vec::as_slice) {
            Some([l, h]) => match (l.as_u64(), h.as_u64()) {
                (Some(l), Some(h)) => Ok((l, h)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        })
        .collect::<Result<Vec<_>, Error>>()?;
    if pairs.is_empty() {
        return Ok(None);
    }
    let width = config.u64_or("median_filter_width", 7)?;
    if width % 2 == 0 {
        return Err(Error::Model(format!(
            "config.json: `median_filter_width` must be odd, got {width}"
        )));
    }
    Ok(Some(align::Alignment::new(pairs, width as usize)))
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
        let suppress: Vec<i64> = match d.get("suppress_tokens") {
            Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_i64()).collect(),
            _ => Vec::new(),
        };
        let prev_sot = int("prev_sot_token_id").or(match suppress.len() {
            n if n >= 2 => Some(suppress[n - 2]),
            _ => None,
        });
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
            startofprev: None,
            prev_sot,
            no_speech: no_timestamps.map(|n| n - 1),
            text_end: eos.unwrap_or(i64::MAX),
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
