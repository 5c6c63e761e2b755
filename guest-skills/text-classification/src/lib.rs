//! Skill `text-classification`: labels of a text or a sentence pair, with
//! the semantics of transformers' `text-classification` pipeline (and so
//! of cross-encoder rerankers, which are this skill on pairs).
//!
//! Request: `{"text": "...", "text_pair": "...", "top_k": 2,
//! "function_to_apply": "softmax" | "sigmoid" | "none"}`; `text_pair`,
//! `top_k` (default: every label) and `function_to_apply` are optional.
//! Response: `{"labels": [{"label", "score"}]}`, best first (ties keep the
//! label order).
//!
//! The default function is the pipeline's: none for `problem_type`
//! regression, sigmoid for multi-label models and single-output models,
//! softmax otherwise. Pairs are encoded with the tokenizer's pair template;
//! segment ids reach the model only where it has a segment table (BERT,
//! ALBERT, ...), as in transformers. Texts longer than the model's
//! positions are truncated (the longer text of a pair first) and flagged
//! `truncated`.

use std::cell::RefCell;

use skill_sdk::config::Json;
use skill_sdk::encoder::{spec, Encoder};
use skill_sdk::requests::Request;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::scores::Function;
use skill_sdk::tensors::{f32_values, take};
use skill_sdk::tokenizer::{EncodedBatch, Tokenizer, TokenizerOptions};
use skill_sdk::{invalid, Error, Graph, Guest, Response, SkillInfo};

struct Loaded {
    tokenizer: Tokenizer,
    encoder: Encoder,
    graph: CompiledGraph,
    labels: Vec<String>,
    default_function: Function,
}

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

struct ClassifyRequest {
    text: String,
    pair: Option<String>,
    top_k: Option<usize>,
    function: Option<Function>,
}

struct TextClassification;

impl Guest for TextClassification {
    fn describe() -> SkillInfo {
        SkillInfo {
            name: "text-classification".into(),
            task: "text-classification".into(),
            architectures: spec::model_types().iter().map(|s| s.to_string()).collect(),
            request_schema: r#"{"type":"object","required":["text"],"properties":{"text":{"type":"string"},"text_pair":{"type":"string"},"top_k":{"type":"integer","minimum":1},"function_to_apply":{"enum":["softmax","sigmoid","none"]}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"labels":{"type":"array","items":{"type":"object","properties":{"label":{"type":"string"},"score":{"type":"number"}}}},"tokens":{"type":"integer"},"truncated":{"type":"boolean"}}}"#.into(),
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
        let mut encoder = Encoder::load(&config, &Graph::new("probe"))?;
        // Longformer's classifier gives the first token global attention.
        encoder.global_first_token();
        let tokenizer = Tokenizer::open(TokenizerOptions {
            max_length: Some(encoder.max_tokens() as u32),
            add_special_tokens: true,
            pad_to_multiple_of: encoder.pad_multiple(),
            with_offsets: false,
        })?;
        let e = encoder.build(&format!("{}-classification", encoder.model_type))?;
        let logits = encoder.class_logits(&e.g, e.hidden)?;
        let out = encoder
            .spec
            .classifier
            .as_ref()
            .map(|c| c.out)
            .unwrap_or("classifier");
        let labels = config.labels(encoder.out_width(&e.g, out)?)?;
        let default_function = Function::default_for(&config, labels.len())?;
        let graph = e.g.compile(&[("logits", logits)])?;
        skill_sdk::state::set(
            &STATE,
            Loaded {
                tokenizer,
                encoder,
                graph,
                labels,
                default_function,
            },
        );
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        skill_sdk::requests::serve(batch, parse_request, classify)
    }
}

fn parse_request(req: Request) -> Result<ClassifyRequest, Error> {
    req.only(&["text", "text_pair", "top_k", "function_to_apply"])?;
    let top_k = match req.opt_u64("top_k")? {
        Some(0) => return Err(invalid("`top_k` must be at least 1")),
        k => k.map(|k| k as usize),
    };
    Ok(ClassifyRequest {
        text: req.str("text")?.to_string(),
        pair: req.opt_str("text_pair")?.map(str::to_string),
        top_k,
        function: req
            .opt_str("function_to_apply")?
            .map(Function::parse)
            .transpose()?,
    })
}

fn classify(reqs: Vec<ClassifyRequest>) -> Result<Vec<Result<Response, Error>>, Error> {
    skill_sdk::state::with(&STATE, |l| {
        // Single texts and pairs are encoded (and run) apart.
        let (pairs, singles): (Vec<usize>, Vec<usize>) =
            (0..reqs.len()).partition(|&i| reqs[i].pair.is_some());
        let mut out: Vec<Option<Result<Response, Error>>> = (0..reqs.len()).map(|_| None).collect();
        if !singles.is_empty() {
            let texts: Vec<String> = singles.iter().map(|&i| reqs[i].text.clone()).collect();
            let enc = l.tokenizer.encode_batch(&texts)?;
            answer(l, &reqs, &singles, &enc, &mut out)?;
        }
        if !pairs.is_empty() {
            let texts: Vec<(String, String)> = pairs
                .iter()
                .map(|&i| {
                    (
                        reqs[i].text.clone(),
                        reqs[i].pair.clone().unwrap_or_default(),
                    )
                })
                .collect();
            let enc = l.tokenizer.encode_pairs(&texts)?;
            answer(l, &reqs, &pairs, &enc, &mut out)?;
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(skill_sdk::internal("request lost"))))
            .collect())
    })
}

/// Runs one encoded group and answers its requests (`which` indexes `reqs`).
fn answer(
    l: &Loaded,
    reqs: &[ClassifyRequest],
    which: &[usize],
    enc: &EncodedBatch,
    out: &mut [Option<Result<Response, Error>>],
) -> Result<(), Error> {
    let logits = f32_values(&take(l.graph.run(&l.encoder.inputs(enc))?, "logits")?)?;
    let n = l.labels.len();
    if logits.len() != which.len() * n {
        return Err(skill_sdk::internal(format!(
            "{} logits for {} texts of {n} labels",
            logits.len(),
            which.len()
        )));
    }
    for (row, &i) in which.iter().enumerate() {
        let r = &reqs[i];
        let scores = r
            .function
            .unwrap_or(l.default_function)
            .apply(&logits[row * n..(row + 1) * n]);
        let order = skill_sdk::scores::ranked(&scores, r.top_k.unwrap_or(n));
        let labels: Vec<serde_json::Value> = order
            .iter()
            .map(|&k| serde_json::json!({"label": l.labels[k], "score": scores[k]}))
            .collect();
        out[i] = Some(Ok(Response {
            json: serde_json::json!({
                "labels": labels,
                "tokens": enc.lengths[row],
                "truncated": enc.truncated[row],
            })
            .to_string(),
            tensors: Vec::new(),
        }));
    }
    Ok(())
}

skill_sdk::export_skill!(TextClassification);
