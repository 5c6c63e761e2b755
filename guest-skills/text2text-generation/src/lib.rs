//! Skill `text2text-generation`: encoder-decoder models (t5, mt5, bart,
//! mbart, pegasus, blenderbot, blenderbot-small, led) for text2text,
//! summarization, translation and conversation.
//!
//! Request: `{"text": "...", "max_new_tokens", "num_beams", "length_penalty",
//! "early_stopping", "no_repeat_ngram_size", "min_new_tokens", "do_sample",
//! "temperature", "top_k", "top_p", "seed", "stop", "src_lang", "tgt_lang"}`
//! (`prompt` is accepted for `text`; unset keys come from
//! generation_config.json as transformers applies them). Response:
//! `{"text", "token_ids", "finish_reason": "eos"|"length"|"stop",
//! "input_tokens", "truncated", "timings"}`; `token_ids` are the generated
//! decoder tokens without the decoder start token. `"return_logits": true`
//! adds the first decoder step's logits (`first_step_logits`).
//!
//! The encoder runs once per batch and leaves the cross-attention keys and
//! values in the session; each decode step sends one token per row (a
//! request has one row, or one per beam) and gets each row's best
//! candidates back (`skill_sdk::seq2seq`). Requests queued meanwhile join
//! the rows of stopped ones (`partial.take-queued`; not for LED's windowed
//! encoder): their encoder runs alone and writes their cross-attention
//! state into those rows. Decoding itself (processors,
//! beams, sampling) is `skill_sdk::generation`.

mod run;
mod source;

use skill_sdk::config::Json;
use skill_sdk::generation::settings::{Defaults, Settings};
use skill_sdk::requests::Request as Json_;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::seq2seq::run::Decoder;
use skill_sdk::seq2seq::{model_types, Seq2Seq};
use skill_sdk::state;
use skill_sdk::{invalid, Error, Guest, Response, SkillInfo};

/// Request keys understood.
const KEYS: &[&str] = &[
    "text",
    "prompt",
    "max_new_tokens",
    "max_length",
    "min_new_tokens",
    "min_length",
    "num_beams",
    "length_penalty",
    "early_stopping",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "seed",
    "stop",
    "src_lang",
    "tgt_lang",
    "return_logits",
    "repetition_penalty",
    "stream",
];

/// The loaded model.
pub struct Loaded {
    decoder: Decoder,
    source: source::Source,
    defaults: Defaults,
    encode: CompiledGraph,
    /// The join graph, built when a request first joins a running batch.
    join: std::cell::OnceCell<CompiledGraph>,
}

impl Loaded {
    /// The join graph (`Seq2Seq::join_graph`), built on first use.
    fn join_graph(&self) -> Result<&CompiledGraph, Error> {
        if let Some(g) = self.join.get() {
            return Ok(g);
        }
        let g = self.decoder.model.join_graph()?;
        Ok(self.join.get_or_init(|| g))
    }
}

/// One parsed request.
pub struct Request {
    /// Encoder input ids (special tokens included).
    ids: Vec<i64>,
    truncated: bool,
    settings: Settings,
    return_logits: bool,
}

thread_local! {
    static STATE: std::cell::RefCell<Option<Loaded>> = const { std::cell::RefCell::new(None) };
}

struct Text2Text;

impl Guest for Text2Text {
    fn describe() -> SkillInfo {
        SkillInfo {
            name: "text2text-generation".into(),
            task: "text2text-generation".into(),
            architectures: model_types().iter().map(|s| s.to_string()).collect(),
            request_schema: r#"{"type":"object","properties":{"text":{"type":"string"},"max_new_tokens":{"type":"integer"},"num_beams":{"type":"integer"},"length_penalty":{"type":"number"},"early_stopping":{},"no_repeat_ngram_size":{"type":"integer"},"min_new_tokens":{"type":"integer"},"do_sample":{"type":"boolean"},"src_lang":{"type":"string"},"tgt_lang":{"type":"string"}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"text":{"type":"string"},"token_ids":{"type":"array"},"finish_reason":{"type":"string"}}}"#.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // Peak 1.1 MiB on its cases, about 3.5 MiB for 64 requests of
            // 2.3 MB of text (docs/skills.md): 256 MiB; default fuel.
            limits: Some(skill_sdk::ResourceNeeds {
                memory_mib: Some(256),
                fuel_per_call: None,
            }),
        }
    }

    fn load() -> Result<(), Error> {
        let config = Json::config()?;
        let mut model = Seq2Seq::load(&config)?;
        // Where shapes replay (cuda), fused projections: fewer launches.
        model.fuse = skill_sdk::runtime::device().fixed_shapes;
        let source = source::Source::open(&model)?;
        let defaults = Defaults::load(config)?;
        // A model without a start token cannot decode: fail at load.
        defaults
            .decoder_start()
            .ok_or_else(|| Error::Model("no `decoder_start_token_id` or `bos_token_id`".into()))?;
        let encode = model.encode_graph()?;
        let slots = skill_sdk::runtime::device().fixed_shapes;
        state::set(
            &STATE,
            Loaded {
                decoder: Decoder::new(model, slots),
                source,
                defaults,
                encode,
                join: std::cell::OnceCell::new(),
            },
        );
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        state::with(&STATE, |m: &Loaded| {
            let parsed: Vec<Result<Request, Error>> = batch.iter().map(|r| parse(m, r)).collect();
            // Bad requests are answered at once, not after the batch.
            for (i, p) in parsed.iter().enumerate() {
                if let Err(e) = p {
                    skill_sdk::partial::complete(i as u32, Err(e));
                }
            }
            let ok: Vec<usize> = (0..parsed.len()).filter(|&i| parsed[i].is_ok()).collect();
            let reqs: Vec<&Request> = ok.iter().filter_map(|&i| parsed[i].as_ref().ok()).collect();
            let mut out: Vec<Result<Response, Error>> = parsed
                .iter()
                .map(|p| match p {
                    Err(e) => Err(e.clone()),
                    Ok(_) => Err(skill_sdk::internal("not generated")),
                })
                .collect();
            if !reqs.is_empty() {
                let index: Vec<u32> = ok.iter().map(|&i| i as u32).collect();
                match run::generate(m, &reqs, &index, batch.len() as u32) {
                    Ok(responses) => ok.iter().zip(responses).for_each(|(&i, r)| out[i] = r),
                    Err(e) => ok.iter().for_each(|&i| out[i] = Err(e.clone())),
                }
            }
            Ok(out)
        })
        .unwrap_or_else(|e| batch.iter().map(|_| Err(e.clone())).collect())
    }
}

fn parse(m: &Loaded, text: &str) -> Result<Request, Error> {
    let req = Json_::parse(text)?;
    req.only(KEYS)?;
    let input = match (req.opt_str("text")?, req.opt_str("prompt")?) {
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => return Err(invalid("missing `text` (a string)")),
    };
    if input.is_empty() {
        return Err(invalid("`text` is empty"));
    }
    let src_lang = req.opt_str("src_lang")?;
    let tgt_lang = req.opt_str("tgt_lang")?;
    let encoded = m.source.encode(input, src_lang)?;
    let forced_bos = match tgt_lang {
        Some(l) => Some(m.source.language(l)?),
        None => None,
    };
    let value = serde_json::Value::Object(req.0.clone());
    let settings = m.defaults.resolve(&value, forced_bos)?;
    let return_logits = match value.get("return_logits") {
        None | Some(serde_json::Value::Null) => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| invalid("`return_logits` must be a boolean"))?,
    };
    Ok(Request {
        ids: encoded.ids,
        truncated: encoded.truncated,
        settings,
        return_logits,
    })
}

skill_sdk::export_skill!(Text2Text);
