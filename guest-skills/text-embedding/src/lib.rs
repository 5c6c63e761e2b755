//! Skill `text-embedding`: sentence embeddings with sentence-transformers
//! semantics for BERT-family encoders.
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
//! model without sentence-transformers files gets mean pooling and no
//! normalisation.

mod bert;
mod pooling;

use std::cell::RefCell;

use skill_sdk::config::Json;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::tensors::{i64_tensor, split_rows, take};
use skill_sdk::tokenizer::{Tokenizer, TokenizerOptions};
use skill_sdk::{invalid, Error, Guest, NamedTensor, Response, SkillInfo};

use pooling::Pooling;

/// Architectures (`model_type`) served.
const ARCHITECTURES: &[&str] = &["bert"];

struct Loaded {
    tokenizer: Tokenizer,
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
            architectures: ARCHITECTURES.iter().map(|s| s.to_string()).collect(),
            request_schema: r#"{"type":"object","required":["text"],"properties":{"text":{"type":"string"}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"embedding":{"type":"array","items":{"type":"number"}},"tokens":{"type":"integer"},"truncated":{"type":"boolean"}}}"#.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn load() -> Result<(), Error> {
        let config = Json::config()?;
        let model_type = config.str_or("model_type", "")?.to_string();
        if !ARCHITECTURES.contains(&model_type.as_str()) {
            return Err(Error::Unsupported(format!(
                "model_type `{model_type}` is not served by text-embedding (supported: {})",
                ARCHITECTURES.join(", ")
            )));
        }
        let st = pooling::SentenceTransformersConfig::read()?;
        let max_len = st
            .max_seq_length
            .unwrap_or(config.u64_or("max_position_embeddings", 512)?);
        let tokenizer = Tokenizer::open(TokenizerOptions {
            max_length: Some(max_len as u32),
            add_special_tokens: true,
            pad_to_multiple_of: None,
        })?;
        let graph = bert::build(&config, st.pooling, st.normalize)?;
        STATE.with(|s| *s.borrow_mut() = Some(Loaded { tokenizer, graph }));
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        let mut results: Vec<Option<Result<Response, Error>>> =
            (0..batch.len()).map(|_| None).collect();
        let mut texts = Vec::new();
        let mut idx = Vec::new();
        for (i, req) in batch.iter().enumerate() {
            match parse_request(req) {
                Ok(t) => {
                    texts.push(t);
                    idx.push(i);
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if !texts.is_empty() {
            match embed(texts) {
                Ok(responses) => {
                    for (i, r) in idx.into_iter().zip(responses) {
                        results[i] = Some(Ok(r));
                    }
                }
                Err(e) => {
                    for i in idx {
                        results[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(skill_sdk::internal("request lost"))))
            .collect()
    }
}

fn parse_request(req: &str) -> Result<String, Error> {
    let v: serde_json::Value =
        serde_json::from_str(req).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    match v.get("text") {
        Some(serde_json::Value::String(s)) => Ok(s.trim().to_string()),
        Some(_) => Err(invalid("`text` must be a string")),
        None => Err(invalid("missing `text`: expected {\"text\": \"...\"}")),
    }
}

fn embed(texts: Vec<String>) -> Result<Vec<Response>, Error> {
    STATE.with(|s| {
        let state = s.borrow();
        let loaded = state
            .as_ref()
            .ok_or_else(|| skill_sdk::internal("handle called before load"))?;
        let enc = loaded.tokenizer.encode_batch(&texts)?;
        let seq = enc.input_ids.shape.get(1).copied().unwrap_or(0);
        let positions: Vec<i64> = (0..seq as i64).collect();
        let inputs = vec![
            NamedTensor {
                name: "input_ids".into(),
                value: enc.input_ids,
            },
            NamedTensor {
                name: "attention_mask".into(),
                value: enc.attention_mask,
            },
            NamedTensor {
                name: "token_type_ids".into(),
                value: enc.token_type_ids,
            },
            NamedTensor {
                name: "position_ids".into(),
                value: i64_tensor(vec![1, seq], &positions),
            },
        ];
        let out = take(loaded.graph.run(&inputs)?, "embedding")?;
        let rows = split_rows(&out)?;
        Ok(rows
            .into_iter()
            .zip(enc.lengths.iter().zip(&enc.truncated))
            .map(|(row, (len, cut))| Response {
                json: format!(r#"{{"tokens":{len},"truncated":{cut}}}"#),
                tensors: vec![NamedTensor {
                    name: "embedding".into(),
                    value: row,
                }],
            })
            .collect())
    })
}

skill_sdk::export_skill!(TextEmbedding);
