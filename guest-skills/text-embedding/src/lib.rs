//! Skill `text-embedding`: sentence embeddings with sentence-transformers
//! semantics for every encoder family of `skill_sdk::encoder`.
//!
//! Request: `{"text": "..."}`. Response: `{"embedding": [...], "tokens": N,
//! "truncated": bool}` (the host adds `device` and `precision`).
//!
//! Semantics follow sentence-transformers: texts are stripped, tokenized with
//! truncation to `max_seq_length` (sentence_bert_config.json), the encoder's
//! last hidden state is pooled as `1_Pooling/config.json` says (mean, cls,
//! max, mean-sqrt-len), and L2-normalised when modules.json lists a
//! `Normalize` module. Pooling and normalisation are part of the graph, so
//! only the pooled vectors cross the sandbox boundary. A plain transformers
//! model without sentence-transformers files gets its family's pooled output
//! where transformers defines one as the embedding (DPR), else mean pooling,
//! and no normalisation. Texts longer than the model's positions are
//! truncated and flagged `truncated`.

mod pooling;

use std::cell::RefCell;

use skill_sdk::config::Json;
use skill_sdk::encoder::heads::Pooling;
use skill_sdk::encoder::{spec, Encoder};
use skill_sdk::requests::Request;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::tensors::{split_rows, take};
use skill_sdk::tokenizer::{Tokenizer, TokenizerOptions};
use skill_sdk::{invalid, Error, Graph, Guest, NamedTensor, Response, SkillInfo};

struct Loaded {
    tokenizer: Tokenizer,
    /// Strip texts (sentence-transformers does; transformers does not).
    strip: bool,
    encoder: Encoder,
    graph: CompiledGraph,
}

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

struct TextEmbedding;

impl Guest for TextEmbedding {
    fn describe() -> SkillInfo {
        SkillInfo {
            name: "text-embedding".into(),
            task: "feature-extraction".into(),
            architectures: spec::model_types().iter().map(|s| s.to_string()).collect(),
            request_schema: r#"{"type":"object","required":["text"],"properties":{"text":{"type":"string"}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"embedding":{"type":"array","items":{"type":"number"}},"tokens":{"type":"integer"},"truncated":{"type":"boolean"}}}"#.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // Peak 1.1 MiB on its cases, about 9 MiB for 64 requests of
            // 2.3 MB of text (docs/skills.md): 256 MiB; default fuel.
            limits: Some(skill_sdk::ResourceNeeds {
                memory_mib: Some(256),
                fuel_per_call: None,
            }),
        }
    }

    fn load() -> Result<(), Error> {
        let config = Json::config()?;
        let probe = Graph::new("probe");
        let encoder = Encoder::load(&config, &probe)?;
        let st = pooling::SentenceTransformersConfig::read()?;
        let max_len = st
            .max_seq_length
            .map_or(encoder.max_tokens(), |m| m.min(encoder.max_tokens()));
        let tokenizer = Tokenizer::open(TokenizerOptions {
            max_length: Some(max_len as u32),
            add_special_tokens: true,
            pad_to_multiple_of: encoder.pad_multiple(),
            with_offsets: false,
        })?;
        let pooling = st.pooling.unwrap_or(match encoder.spec.embed_with_pooler {
            true => Pooling::Pooler,
            false => Pooling::Mean,
        });
        let e = encoder.build(&format!("{}-embedding", encoder.model_type))?;
        let pooled = encoder.pool(&e.g, e.hidden, e.mask, e.keep, pooling)?;
        let out = match st.normalize {
            true => e.g.b.l2_normalize(pooled, -1, 1e-12)?,
            false => pooled,
        };
        let graph = e.g.compile(&[("embedding", out)])?;
        skill_sdk::state::set(
            &STATE,
            Loaded {
                tokenizer,
                strip: st.present,
                encoder,
                graph,
            },
        );
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        skill_sdk::requests::serve(batch, parse_request, embed)
    }
}

fn parse_request(req: Request) -> Result<String, Error> {
    match req.0.get("text") {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(invalid("`text` must be a string")),
        None => Err(invalid("missing `text`: expected {\"text\": \"...\"}")),
    }
}

fn embed(texts: Vec<String>) -> Result<Vec<Result<Response, Error>>, Error> {
    skill_sdk::state::with(&STATE, |loaded| {
        let texts: Vec<String> = match loaded.strip {
            true => texts.iter().map(|t| t.trim().to_string()).collect(),
            false => texts,
        };
        let enc = loaded.tokenizer.encode_batch(&texts)?;
        let inputs = loaded.encoder.inputs(&enc);
        let out = take(loaded.graph.run(&inputs)?, "embedding")?;
        let rows = split_rows(&out)?;
        Ok(rows
            .into_iter()
            .zip(enc.lengths.iter().zip(&enc.truncated))
            .map(|(row, (len, cut))| {
                Ok(Response {
                    json: format!(r#"{{"tokens":{len},"truncated":{cut}}}"#),
                    tensors: vec![NamedTensor {
                        name: "embedding".into(),
                        value: row,
                    }],
                })
            })
            .collect())
    })
}

skill_sdk::export_skill!(TextEmbedding);
