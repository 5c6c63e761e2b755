//! Skill `token-classification`: named entities (or any per-token labels)
//! with character offsets, with the semantics of transformers'
//! `token-classification` pipeline.
//!
//! Request: `{"text": "...", "aggregation_strategy": "none" | "simple" |
//! "first" | "average" | "max", "ignore_labels": ["O"]}` (defaults `none`
//! and `["O"]`). Response: `{"entities": [...]}`: with `none`, one entry per
//! token `{"entity", "score", "index", "word", "start", "end"}`; otherwise
//! grouped entries `{"entity_group", "score", "word", "start", "end"}`.
//! `start`/`end` are character offsets into `text`.
//!
//! Word boundaries come from the tokenizer: a token is a word's
//! continuation when the tokenizer marks continuations (WordPiece's `##`)
//! and its vocabulary entry is longer or shorter than its text; otherwise,
//! as transformers does, when no space precedes it. Texts longer than the
//! model's positions are truncated (entities come from the first part) and
//! flagged `truncated`.

mod aggregate;

use std::cell::RefCell;

use skill_sdk::config::Json;
use skill_sdk::encoder::{spec, Encoder};
use skill_sdk::requests::Request;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::special_tokens;
use skill_sdk::tensors::{f32_values, i64_values, take};
use skill_sdk::tokenizer::{Tokenizer, TokenizerOptions};
use skill_sdk::{invalid, Error, Graph, Guest, Response, SkillInfo};

use aggregate::{PreEntity, Strategy};

struct Loaded {
    tokenizer: Tokenizer,
    encoder: Encoder,
    graph: CompiledGraph,
    labels: Vec<String>,
    /// Whether the tokenizer marks word continuations (WordPiece `##`).
    word_aware: bool,
    unk_id: Option<i64>,
}

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

struct NerRequest {
    text: String,
    strategy: Strategy,
    ignore: Vec<String>,
}

struct TokenClassification;

impl Guest for TokenClassification {
    fn describe() -> SkillInfo {
        SkillInfo {
            name: "token-classification".into(),
            task: "token-classification".into(),
            architectures: spec::model_types().iter().map(|s| s.to_string()).collect(),
            request_schema: r#"{"type":"object","required":["text"],"properties":{"text":{"type":"string"},"aggregation_strategy":{"enum":["none","simple","first","average","max"]},"ignore_labels":{"type":"array","items":{"type":"string"}}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"entities":{"type":"array","items":{"type":"object","properties":{"entity":{"type":"string"},"entity_group":{"type":"string"},"score":{"type":"number"},"index":{"type":"integer"},"word":{"type":"string"},"start":{"type":"integer"},"end":{"type":"integer"}}}},"tokens":{"type":"integer"},"truncated":{"type":"boolean"}}}"#.into(),
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
        let encoder = Encoder::load(&config, &Graph::new("probe"))?;
        let tokenizer = Tokenizer::open(TokenizerOptions {
            max_length: Some(encoder.max_tokens() as u32),
            add_special_tokens: true,
            pad_to_multiple_of: encoder.pad_multiple(),
            with_offsets: true,
        })?;
        let e = encoder.build(&format!("{}-token-classification", encoder.model_type))?;
        let logits = encoder.token_logits(&e.g, e.hidden)?;
        let out = encoder.spec.token_classifier.unwrap_or("classifier");
        let labels = config.labels(encoder.out_width(&e.g, out)?)?;
        let graph = e.g.compile(&[("logits", logits)])?;
        let word_aware = tokenizer
            .continuing_subword_prefix()
            .is_some_and(|p| !p.is_empty());
        let unk_id = special_tokens::find(&tokenizer, "unk_token", &["[UNK]", "<unk>"])?
            .map(|(_, id)| id as i64);
        skill_sdk::state::set(
            &STATE,
            Loaded {
                tokenizer,
                encoder,
                graph,
                labels,
                word_aware,
                unk_id,
            },
        );
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        skill_sdk::requests::serve(batch, parse_request, classify)
    }
}

fn parse_request(req: Request) -> Result<NerRequest, Error> {
    req.only(&["text", "aggregation_strategy", "ignore_labels"])?;
    let strategy = match req.opt_str("aggregation_strategy")? {
        None => Strategy::None,
        Some(s) => Strategy::parse(s).ok_or_else(|| {
            invalid(format!(
                "`aggregation_strategy` must be none, simple, first, average or max, not `{s}`"
            ))
        })?,
    };
    Ok(NerRequest {
        text: req.str("text")?.to_string(),
        strategy,
        ignore: req
            .opt_strings("ignore_labels")?
            .unwrap_or_else(|| vec!["O".into()]),
    })
}

fn classify(reqs: Vec<NerRequest>) -> Result<Vec<Result<Response, Error>>, Error> {
    skill_sdk::state::with(&STATE, |l| {
        let texts: Vec<String> = reqs.iter().map(|r| r.text.clone()).collect();
        let enc = l.tokenizer.encode_batch(&texts)?;
        let ids = i64_values(&enc.input_ids)?;
        let seq = enc.input_ids.shape.get(1).copied().unwrap_or(0) as usize;
        let logits = f32_values(&take(l.graph.run(&l.encoder.inputs(&enc))?, "logits")?)?;
        let n = l.labels.len();
        if logits.len() != reqs.len() * seq * n || enc.tokens.len() != reqs.len() {
            return Err(skill_sdk::internal(
                "logits or tokens do not match the batch",
            ));
        }
        let mut out = Vec::with_capacity(reqs.len());
        for (r, req) in reqs.iter().enumerate() {
            let row_ids = &ids[r * seq..(r + 1) * seq];
            let row_logits = &logits[r * seq * n..(r + 1) * seq * n];
            out.push(
                answer(l, req, &enc.tokens[r], row_ids, row_logits).map(|entities| Response {
                    json: serde_json::json!({
                        "entities": entities,
                        "tokens": enc.lengths[r],
                        "truncated": enc.truncated[r],
                    })
                    .to_string(),
                    tensors: Vec::new(),
                }),
            );
        }
        Ok(out)
    })
}

/// The entities of one text from its tokens and their logits [seq, labels].
fn answer(
    l: &Loaded,
    req: &NerRequest,
    tokens: &[skill_sdk::tokenizer::TokenInfo],
    ids: &[i64],
    logits: &[f32],
) -> Result<Vec<serde_json::Value>, Error> {
    let n = l.labels.len();
    let chars: Vec<char> = req.text.chars().collect();
    let slice = |a: u32, b: u32| -> String {
        let (a, b) = (a as usize, (b as usize).min(chars.len()));
        chars
            .get(a..b)
            .map(|c| c.iter().collect())
            .unwrap_or_default()
    };
    let mut pre = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if t.special {
            continue;
        }
        let id = ids[i];
        let word_ref = slice(t.start, t.end);
        let mut word = l.tokenizer.id_to_token(id as u32).unwrap_or_default();
        let mut is_subword = match l.word_aware {
            true => word.chars().count() != word_ref.chars().count(),
            false => t.start > 0 && !slice(t.start - 1, t.start + 1).contains(' '),
        };
        if Some(id) == l.unk_id {
            word = word_ref;
            is_subword = false;
        }
        pre.push(PreEntity {
            word,
            scores: softmax(&logits[i * n..(i + 1) * n]),
            start: t.start,
            end: t.end,
            index: i,
            is_subword,
        });
    }
    let join = |t: Vec<String>| l.tokenizer.decode_tokens(&t);
    let all = aggregate::entities(pre, req.strategy, &l.labels, &join)?;
    Ok(all
        .into_iter()
        .filter(|e| {
            let label = e
                .get("entity")
                .or_else(|| e.get("entity_group"))
                .and_then(|v| v.as_str())
                .unwrap_or("");
            !req.ignore.iter().any(|i| i == label)
        })
        .collect())
}

/// Softmax in f32, as numpy computes it.
fn softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|&v| (v - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().map(|&v| v / sum).collect()
}

skill_sdk::export_skill!(TokenClassification);
