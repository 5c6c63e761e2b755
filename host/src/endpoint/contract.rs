//! The task contracts' request and response shapes (docs/skills.md, one
//! JSON shape per task): the one place the host names a skill's fields.
//! The HTTP adapters (OpenAI, TEI, form uploads) build skill requests with
//! the typed requests below, read answers by the [`response`] keys and
//! pick a route's behaviour by the endpoint's [`Task`]; the
//! batch cost model reads a request's [`PrimaryInput`]; `host run` names
//! its `--image`/`--audio` requests with [`request`].
//!
//! Nothing here changes a shape: an adapter's request serializes to the
//! object it used to build by hand.

use serde::Serialize;
use serde_json::Value;

/// The tasks an HTTP adapter picks its route's behaviour by (the skill
/// serving an endpoint is named after its task).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    TextEmbedding,
    MultimodalEmbedding,
    TextClassification,
    TextGeneration,
}

impl Task {
    const ALL: [Task; 4] = [
        Task::TextEmbedding,
        Task::MultimodalEmbedding,
        Task::TextClassification,
        Task::TextGeneration,
    ];

    /// The task's (and its skill's) name.
    pub const fn name(self) -> &'static str {
        match self {
            Task::TextEmbedding => "text-embedding",
            Task::MultimodalEmbedding => "multimodal-embedding",
            Task::TextClassification => "text-classification",
            Task::TextGeneration => "text-generation",
        }
    }

    /// The task a skill of this name performs, when it is one of these.
    pub fn of_skill(skill: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.name() == skill)
    }

    /// Whether its answers are `embedding`s.
    pub const fn embeds(self) -> bool {
        matches!(self, Task::TextEmbedding | Task::MultimodalEmbedding)
    }
}

/// Request keys of the task contracts.
pub mod request {
    /// The text of the text tasks (embedding, classification, fill-mask, ...).
    pub const TEXT: &str = "text";
    /// The second text of a sentence pair (text-classification, rerank).
    pub const TEXT_PAIR: &str = "text_pair";
    /// The prompt of text-generation (and image-text-to-text).
    pub const PROMPT: &str = "prompt";
    /// A generic text input, taken as text by the cost model.
    pub const INPUT: &str = "input";
    /// An image, base64 (or a `data:` URL).
    pub const IMAGE: &str = "image";
    /// Video frames, each an image.
    pub const FRAMES: &str = "frames";
    /// An animated GIF/WebP.
    pub const VIDEO: &str = "video";
    /// An audio file, base64.
    pub const AUDIO: &str = "audio";
    /// Audio samples, with [`SAMPLING_RATE`].
    pub const ARRAY: &str = "array";
    /// Samples per second of [`ARRAY`] (16 kHz when absent).
    pub const SAMPLING_RATE: &str = "sampling_rate";
}

/// Response keys of the task contracts.
pub mod response {
    /// The embedding tensor (text-, multimodal-, audio-embedding).
    pub const EMBEDDING: &str = "embedding";
    /// Tokens of an embedded text.
    pub const TOKENS: &str = "tokens";
    /// Labels with scores, best first (the classification tasks).
    pub const LABELS: &str = "labels";
    /// Generated or transcribed text.
    pub const TEXT: &str = "text";
    /// Generated token ids.
    pub const TOKEN_IDS: &str = "token_ids";
    /// The prompt's token count (text-generation).
    pub const PROMPT_TOKENS: &str = "prompt_tokens";
    /// Why generation stopped (`eos`, `stop`, `length`).
    pub const FINISH_REASON: &str = "finish_reason";
    /// Timestamped pieces of a transcription.
    pub const CHUNKS: &str = "chunks";
    /// A chunk's `[start, end]` in seconds (end `null`: open).
    pub const TIMESTAMP: &str = "timestamp";
    /// A transcription's language.
    pub const LANGUAGE: &str = "language";
    /// A transcription's audio duration, seconds.
    pub const DURATION: &str = "duration";
}

/// A text task's request: `{"text", "text_pair"?, "function_to_apply"?}`
/// (text-embedding, text-classification, ...).
#[derive(Clone, Debug, Default, Serialize)]
pub struct TextRequest {
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_pair: Option<String>,
    /// text-classification's score function (`none`: raw logits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_to_apply: Option<&'static str>,
}

impl TextRequest {
    /// `{"text": text}`.
    pub fn new(text: impl Into<String>) -> Self {
        TextRequest {
            text: text.into(),
            ..Default::default()
        }
    }

    /// The request as JSON text.
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

/// A text-generation request (the generation keys; absent ones take the
/// model's generation_config).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GenerationRequest {
    pub prompt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub do_sample: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// Images of a vision-language prompt (one per image token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    /// Videos of a vision-language prompt (one per video token): each a
    /// list of frames, or one animated GIF/WebP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub videos: Option<Vec<Value>>,
    /// `false`: the prompt already has its special tokens (a chat template's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_special_tokens: Option<bool>,
}

impl GenerationRequest {
    /// Sets a pass-through option by its contract name (`top_p`, `top_k`,
    /// `seed`, `repetition_penalty`); false for another name.
    pub fn set_option(&mut self, key: &str, value: Value) -> bool {
        let slot = match key {
            "top_p" => &mut self.top_p,
            "top_k" => &mut self.top_k,
            "seed" => &mut self.seed,
            "repetition_penalty" => &mut self.repetition_penalty,
            _ => return false,
        };
        *slot = Some(value);
        true
    }

    /// The request as JSON text.
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

/// Timestamps an automatic-speech-recognition request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timestamps {
    /// Segment timestamps (`"return_timestamps": true`).
    Segments,
    /// Word timestamps (`"return_timestamps": "word"`).
    Words,
}

impl Serialize for Timestamps {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Timestamps::Segments => s.serialize_bool(true),
            Timestamps::Words => s.serialize_str("word"),
        }
    }
}

/// An automatic-speech-recognition request.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TranscriptionRequest {
    /// The audio file, base64.
    pub audio: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Previous text (Whisper's `prompt_ids`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Absent: greedy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_timestamps: Option<Timestamps>,
}

impl TranscriptionRequest {
    /// The request as JSON text.
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

/// A request struct as JSON text (they hold only strings, numbers and
/// JSON values, which always serialize).
fn to_json(r: &impl Serialize) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

/// What a request carries as its main input: what its cost depends on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PrimaryInput<'a> {
    /// An image (resized to the model's input size by the skill).
    Image,
    /// Video frames or an animated image.
    Video,
    /// Base64 audio of this many characters.
    AudioBase64(usize),
    /// Audio samples at a rate (16 kHz when not given).
    AudioSamples { samples: usize, rate: usize },
    /// A text (`text`, `prompt` or `input`), with a sentence pair's second.
    Text {
        text: &'a str,
        pair: Option<&'a str>,
    },
}

impl<'a> PrimaryInput<'a> {
    /// The primary input of request `v`, in the order image, video, audio,
    /// text; `None` when it has none of them.
    pub fn of(v: &'a Value) -> Option<PrimaryInput<'a>> {
        if v.get(request::IMAGE).is_some() {
            return Some(PrimaryInput::Image);
        }
        if v.get(request::FRAMES).is_some() || v.get(request::VIDEO).is_some() {
            return Some(PrimaryInput::Video);
        }
        if let Some(b64) = v.get(request::AUDIO).and_then(Value::as_str) {
            return Some(PrimaryInput::AudioBase64(b64.len()));
        }
        if let Some(a) = v.get(request::ARRAY).and_then(Value::as_array) {
            let rate = v
                .get(request::SAMPLING_RATE)
                .and_then(Value::as_u64)
                .filter(|r| *r > 0)
                .unwrap_or(16_000) as usize;
            return Some(PrimaryInput::AudioSamples {
                samples: a.len(),
                rate,
            });
        }
        let text = [request::TEXT, request::PROMPT, request::INPUT]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str))?;
        Some(PrimaryInput::Text {
            text,
            pair: v.get(request::TEXT_PAIR).and_then(Value::as_str),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(s: String) -> Value {
        serde_json::from_str(&s).unwrap_or(Value::Null)
    }

    #[test]
    fn requests_have_the_contract_shapes() {
        assert_eq!(
            parsed(TextRequest::new("hi").to_json()),
            json!({"text": "hi"})
        );
        let pair = TextRequest {
            text: "a".into(),
            text_pair: Some("b".into()),
            function_to_apply: Some("none"),
        };
        assert_eq!(
            parsed(pair.to_json()),
            json!({"text": "a", "text_pair": "b", "function_to_apply": "none"})
        );
        let mut g = GenerationRequest {
            prompt: "p".into(),
            do_sample: Some(false),
            stop: Some(vec!["x".into()]),
            ..Default::default()
        };
        assert!(g.set_option("top_k", json!(4)));
        assert!(!g.set_option("logit_bias", json!(1)));
        assert_eq!(
            parsed(g.to_json()),
            json!({"prompt": "p", "do_sample": false, "stop": ["x"], "top_k": 4})
        );
        let t = TranscriptionRequest {
            audio: "AAAA".into(),
            return_timestamps: Some(Timestamps::Words),
            ..Default::default()
        };
        assert_eq!(
            parsed(t.to_json()),
            json!({"audio": "AAAA", "return_timestamps": "word"})
        );
    }

    #[test]
    fn tasks_by_skill_name() {
        for t in Task::ALL {
            assert_eq!(Task::of_skill(t.name()), Some(t));
        }
        assert_eq!(Task::of_skill("fill-mask"), None);
    }

    #[test]
    fn primary_input_by_precedence() {
        let v = json!({"image": "x", "text": "t"});
        assert_eq!(PrimaryInput::of(&v), Some(PrimaryInput::Image));
        let v = json!({"frames": []});
        assert_eq!(PrimaryInput::of(&v), Some(PrimaryInput::Video));
        let v = json!({"audio": "abcd"});
        assert_eq!(PrimaryInput::of(&v), Some(PrimaryInput::AudioBase64(4)));
        let v = json!({"array": [0.0, 1.0], "sampling_rate": 8000});
        assert_eq!(
            PrimaryInput::of(&v),
            Some(PrimaryInput::AudioSamples {
                samples: 2,
                rate: 8000
            })
        );
        let v = json!({"prompt": "p", "text_pair": "q"});
        assert_eq!(
            PrimaryInput::of(&v),
            Some(PrimaryInput::Text {
                text: "p",
                pair: Some("q")
            })
        );
        assert_eq!(PrimaryInput::of(&json!({"n": 1})), None);
    }
}
