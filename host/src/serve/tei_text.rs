//! Text Embeddings Inference's text routes: `POST /embed` (`normalize`,
//! `truncation_direction`), `POST /` (dispatched by the endpoint's task, as
//! TEI and `huggingface_hub.InferenceClient(model=URL)` use it),
//! `POST /similarity`, `POST /tokenize`, `POST /decode`, `GET /info`, and
//! `POST /embed_all` refused clearly (skills return pooled embeddings only).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::api::{embed_all, json_body, json_response, texts};
use super::model_files::ModelFiles;
use super::{ApiError, AppState};
use crate::endpoint::contract::{response, Task};
use crate::endpoint::EndpointStatus;
use crate::runner::Output;
use crate::ErrorKind;

fn bad(kind: ErrorKind, m: impl Into<String>) -> ApiError {
    ApiError::new(kind, m)
}

fn internal(m: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::Internal, m)
}

/// The endpoint a TEI body means, its status and its model files.
async fn endpoint(
    state: &AppState,
    v: &Value,
) -> Result<(EndpointStatus, Arc<ModelFiles>), ApiError> {
    let handler = state.pick(v.get("model").and_then(Value::as_str))?;
    let status = state
        .endpoints
        .status()
        .into_iter()
        .find(|s| s.name == handler.name())
        .ok_or_else(|| ApiError::new(ErrorKind::Unavailable, "the endpoint was removed"))?;
    let files = state.model_files.get(&status).await?;
    Ok((status, files))
}

fn flag(v: &Value, key: &str, default: bool) -> Result<bool, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(
            ErrorKind::InvalidRequest,
            format!("`{key}` must be true or false"),
        )),
    }
}

fn embedding(o: &Output) -> Result<Vec<f32>, ApiError> {
    o.tensor(response::EMBEDDING)
        .ok_or_else(|| internal("the endpoint's skill returned no `embedding`"))?
        .to_f32(response::EMBEDDING)
        .map_err(|e| internal(e.to_string()))
}

fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// Embeddings of `inputs` as TEI's `/embed` gives them.
async fn embed_texts(state: &AppState, v: &Value) -> Result<Vec<Vec<f32>>, ApiError> {
    match v.get("truncation_direction").and_then(Value::as_str) {
        None => {}
        Some(d) if d.eq_ignore_ascii_case("right") => {}
        Some(d) => {
            return Err(bad(
                ErrorKind::Unsupported,
                format!("truncation_direction `{d}` is not supported: the skill keeps the start of a text (`Right`)"),
            ))
        }
    }
    let normalize = flag(v, "normalize", true)?;
    let (status, files) = endpoint(state, v).await?;
    if !normalize && files.normalizes {
        return Err(bad(
            ErrorKind::Unsupported,
            "`normalize: false` is not available on this model: its sentence-transformers modules end in Normalize",
        ));
    }
    let inputs = texts(v, "inputs")?;
    let (_, outs) = embed_all(state, Some(&status.name), inputs).await?;
    let mut rows = Vec::with_capacity(outs.len());
    for o in &outs {
        let mut e = embedding(o)?;
        if normalize && !files.normalizes {
            l2_normalize(&mut e);
        }
        rows.push(e);
    }
    Ok(rows)
}

fn floats_json(rows: &[Vec<f32>]) -> String {
    serde_json::to_string(rows).unwrap_or_default()
}

/// TEI `POST /embed`: `{"inputs": str | [str], "normalize": true,
/// "truncation_direction": "Right"}` -> `[[...]]`. `normalize` L2-normalises
/// on the host unless the model's modules already do; `false` returns the
/// pooled vector, which a model that normalises in its modules cannot give.
pub(super) async fn embed(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let _permit = state.permit()?;
    let v = json_body(body)?;
    let rows = embed_texts(&state, &v).await?;
    Ok(json_response(StatusCode::OK, floats_json(&rows)))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}

async fn similarity_of(state: &AppState, v: &Value) -> Result<Response, ApiError> {
    let inputs = v.get("inputs").unwrap_or(&Value::Null);
    let source = inputs
        .get("source_sentence")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            bad(
                ErrorKind::InvalidRequest,
                "`inputs.source_sentence` must be a string",
            )
        })?;
    let sentences = texts(inputs, "sentences")?;
    let mut all = vec![source.to_string()];
    all.extend(sentences);
    let mut body = json!({ "inputs": all });
    if let Some(m) = v.get("model") {
        body["model"] = m.clone();
    }
    let rows = embed_texts(state, &body).await?;
    let scores: Vec<f32> = rows[1..].iter().map(|r| cosine(&rows[0], r)).collect();
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_string(&scores).unwrap_or_default(),
    ))
}

/// TEI `POST /similarity`: `{"inputs": {"source_sentence", "sentences"}}` ->
/// the cosine similarity of each sentence's embedding to the source's.
pub(super) async fn similarity(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let _permit = state.permit()?;
    let v = json_body(body)?;
    similarity_of(&state, &v).await
}

/// TEI `POST /`: similarity for `{"inputs": {"source_sentence", ...}}`,
/// else by the endpoint's task: embeddings, or `/predict` on a
/// text-classification endpoint.
pub(super) async fn root(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = super::api::body_bytes(body)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        bad(
            ErrorKind::InvalidRequest,
            format!("body is not valid JSON: {e}"),
        )
    })?;
    if v.get("inputs")
        .is_some_and(|i| i.get("source_sentence").is_some())
    {
        let _permit = state.permit()?;
        return similarity_of(&state, &v).await;
    }
    let (_, files) = endpoint(&state, &v).await?;
    match Task::of_skill(&files.skill) {
        Some(t) if t.embeds() => embed(State(state), Ok(bytes)).await,
        Some(Task::TextClassification) => super::tei::predict(State(state), Ok(bytes)).await,
        _ => Err(bad(
            ErrorKind::InvalidRequest,
            format!(
                "`POST /` serves embedding and classification endpoints; this one serves `{}`",
                files.skill
            ),
        )),
    }
}

/// `POST /embed_all`: refused (skills return pooled embeddings only).
pub(super) async fn embed_all_route() -> ApiError {
    bad(
        ErrorKind::Unsupported,
        "/embed_all is not supported: skills return pooled embeddings, not per-token ones",
    )
}

fn tokenizer(files: &ModelFiles) -> Result<&tokenizers::Tokenizer, ApiError> {
    files.tokenizer.as_ref().ok_or_else(|| {
        bad(
            ErrorKind::Unsupported,
            "the endpoint's model has no tokenizer.json",
        )
    })
}

/// TEI `POST /tokenize`: `{"inputs": str | [str], "add_special_tokens": true}`
/// -> per input `[{"id", "text", "special", "start", "stop"}]` (byte offsets;
/// none for special tokens).
pub(super) async fn tokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let _permit = state.permit()?;
    let v = json_body(body)?;
    let special = flag(&v, "add_special_tokens", true)?;
    let inputs = texts(&v, "inputs")?;
    let (_, files) = endpoint(&state, &v).await?;
    let out = tokio::task::spawn_blocking(move || {
        let tok = tokenizer(&files)?;
        let mut all = Vec::with_capacity(inputs.len());
        for text in &inputs {
            let enc = tok
                .encode(text.as_str(), special)
                .map_err(|e| bad(ErrorKind::InvalidRequest, format!("cannot tokenize: {e}")))?;
            let mask = enc.get_special_tokens_mask();
            let tokens: Vec<Value> = (0..enc.len())
                .map(|i| {
                    let id = enc.get_ids()[i];
                    let (start, stop) = enc.get_offsets()[i];
                    match mask.get(i) == Some(&1) {
                        true => json!({ "id": id, "text": enc.get_tokens()[i], "special": true,
                                        "start": null, "stop": null }),
                        false => json!({ "id": id, "text": text.get(start..stop).unwrap_or(""),
                                         "special": false, "start": start, "stop": stop }),
                    }
                })
                .collect();
            all.push(Value::Array(tokens));
        }
        Ok::<_, ApiError>(all)
    })
    .await
    .map_err(|e| internal(format!("tokenizing failed: {e}")))??;
    Ok(json_response(StatusCode::OK, Value::Array(out).to_string()))
}

/// TEI `POST /decode`: `{"ids": [int] | [[int]], "skip_special_tokens": true}`
/// -> a list of texts.
pub(super) async fn decode(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let _permit = state.permit()?;
    let v = json_body(body)?;
    let skip = flag(&v, "skip_special_tokens", true)?;
    let ids = |a: &Vec<Value>| -> Option<Vec<u32>> {
        a.iter()
            .map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect()
    };
    let rows: Vec<Vec<u32>> = match v.get("ids") {
        Some(Value::Array(a)) if a.iter().all(Value::is_array) && !a.is_empty() => a
            .iter()
            .map(|r| r.as_array().and_then(ids))
            .collect::<Option<_>>(),
        Some(Value::Array(a)) => ids(a).map(|r| vec![r]),
        _ => None,
    }
    .ok_or_else(|| {
        bad(
            ErrorKind::InvalidRequest,
            "`ids` must be a list of token ids or a list of such lists",
        )
    })?;
    let (_, files) = endpoint(&state, &v).await?;
    let tok = tokenizer(&files)?;
    let vocab = tok.get_vocab_size(true) as u32;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        if let Some(bad_id) = r.iter().find(|&&i| i >= vocab) {
            return Err(bad(
                ErrorKind::InvalidRequest,
                format!("token id {bad_id} is outside the vocabulary ({vocab})"),
            ));
        }
        let text = tok
            .decode(r, skip)
            .map_err(|e| bad(ErrorKind::InvalidRequest, format!("cannot decode: {e}")))?;
        out.push(Value::String(text));
    }
    Ok(json_response(StatusCode::OK, Value::Array(out).to_string()))
}

/// TEI `GET /info` of the endpoint (the one loaded, the default, or
/// `?model=`).
pub(super) async fn info(
    State(state): State<Arc<AppState>>,
    query: axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let v = match query.get("model") {
        Some(m) => json!({ "model": m }),
        None => json!({}),
    };
    let (status, files) = endpoint(&state, &v).await?;
    let model_type = match Task::of_skill(&files.skill) {
        Some(Task::TextClassification) => json!({ "classifier": {} }),
        Some(t) if t.embeds() => json!({ "embedding": {} }),
        _ => json!({ files.skill.as_str(): {} }),
    };
    let body = json!({
        "model_id": status.name, "model_sha": null, "model_dtype": status.precision,
        "model_type": model_type, "skill": files.skill, "device": status.device,
        "max_input_length": files.max_positions,
        "max_batch_requests": status.max_batch_size,
        "version": env!("CARGO_PKG_VERSION"),
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}
