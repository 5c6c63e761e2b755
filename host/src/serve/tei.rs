//! Text Embeddings Inference's classification routes on a
//! `text-classification` endpoint: `POST /rerank` (a query against texts,
//! best first) and `POST /predict` (labels of texts or sentence pairs).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::api::json_body;
use super::{ApiError, AppState};
use crate::endpoint::contract::{response, TextRequest};
use crate::runner::Output;
use crate::ErrorKind;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::InvalidRequest, msg)
}

fn json_response(body: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A text or a sentence pair.
enum Sequence {
    Single(String),
    Pair(String, String),
}

impl Sequence {
    /// TEI's reading: a string, or a list of exactly two strings (a pair).
    fn parse(v: &Value) -> Option<Sequence> {
        match v {
            Value::String(s) => Some(Sequence::Single(s.clone())),
            Value::Array(a) => match a.as_slice() {
                [Value::String(x), Value::String(y)] => Some(Sequence::Pair(x.clone(), y.clone())),
                _ => None,
            },
            _ => None,
        }
    }

    fn request(&self, raw: bool) -> String {
        let mut r = match self {
            Sequence::Single(t) => TextRequest::new(t.as_str()),
            Sequence::Pair(a, b) => TextRequest {
                text: a.clone(),
                text_pair: Some(b.clone()),
                function_to_apply: None,
            },
        };
        if raw {
            r.function_to_apply = Some("none");
        }
        r.to_json()
    }
}

/// The `labels` of a text-classification answer.
fn labels(o: &Output) -> Result<&Vec<Value>, ApiError> {
    o.json.get(response::LABELS).and_then(Value::as_array).ok_or_else(|| {
        bad("the endpoint does not classify texts: serve a text-classification skill for this route")
    })
}

async fn classify(
    state: &AppState,
    endpoint: Option<&str>,
    requests: Vec<String>,
) -> Result<Vec<Output>, ApiError> {
    let handler = state.pick(endpoint)?;
    let mut outs = Vec::with_capacity(requests.len());
    for r in handler.call_many(requests).await {
        outs.push(r?);
    }
    Ok(outs)
}

fn flag(v: &Value, key: &str) -> Result<bool, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(format!("`{key}` must be true or false"))),
    }
}

/// TEI `POST /rerank`: `{"query", "texts": [str], "raw_scores", "return_text"}`
/// -> `[{"index", "score", "text"?}]`, best first. The model must give one
/// score per pair (a cross-encoder reranker).
pub(super) async fn rerank(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let _permit = state.permit()?;
    let v = json_body(body)?;
    let query = v
        .get("query")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing `query` (a string)"))?;
    let texts: Vec<&str> = match v.get("texts") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|t| {
                t.as_str()
                    .ok_or_else(|| bad("`texts` must be a list of strings"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("`texts` must be a non-empty list of strings")),
    };
    let (raw, return_text) = (flag(&v, "raw_scores")?, flag(&v, "return_text")?);
    let requests = texts
        .iter()
        .map(|t| Sequence::Pair(query.to_string(), t.to_string()).request(raw))
        .collect();
    let outs = classify(&state, v.get("model").and_then(Value::as_str), requests).await?;
    let mut ranked = Vec::with_capacity(outs.len());
    for (i, o) in outs.iter().enumerate() {
        let l = labels(o)?;
        let [only] = l.as_slice() else {
            return Err(bad(format!(
                "the endpoint's model has {} labels; /rerank needs a reranker (one score per pair)",
                l.len()
            )));
        };
        let score = only
            .get("score")
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN);
        ranked.push((i, score));
    }
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let body: Vec<Value> = ranked
        .into_iter()
        .map(|(i, score)| {
            let mut r = json!({ "index": i, "score": score });
            if return_text {
                r["text"] = json!(texts[i]);
            }
            r
        })
        .collect();
    Ok(json_response(Value::Array(body)))
}

/// TEI `POST /predict`: `{"inputs": text | [a, b] | [text or pair, ...],
/// "raw_scores"}` -> `[{"label", "score"}]` (every label, best first) for
/// one input, a list of those for a batch.
pub(super) async fn predict(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let _permit = state.permit()?;
    let v = json_body(body)?;
    let inputs = v.get("inputs").ok_or_else(|| bad("missing `inputs`"))?;
    let (batch, seqs) = match Sequence::parse(inputs) {
        Some(one) => (false, vec![one]),
        None => match inputs {
            Value::Array(a) if !a.is_empty() => (
                true,
                a.iter()
                    .map(|x| {
                        Sequence::parse(x).ok_or_else(|| {
                            bad("each input must be a string or a pair [a, b] of strings")
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => {
                return Err(bad(
                    "`inputs` must be a string, a pair [a, b], or a non-empty list of them",
                ))
            }
        },
    };
    let raw = flag(&v, "raw_scores")?;
    let requests = seqs.iter().map(|s| s.request(raw)).collect();
    let outs = classify(&state, v.get("model").and_then(Value::as_str), requests).await?;
    let mut answers = Vec::with_capacity(outs.len());
    for o in &outs {
        answers.push(Value::Array(labels(o)?.clone()));
    }
    Ok(json_response(match batch {
        true => Value::Array(answers),
        false => answers.pop().unwrap_or(Value::Array(Vec::new())),
    }))
}

/// TEI's error shape on the TEI routes: `{"error": message, "error_type"}`
/// with TEI's statuses (validation errors are 422, overload 429, an
/// unavailable model 503, backend failures 424/500), from this server's
/// OpenAI-shaped errors.
pub(super) async fn reshape(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let r = next.run(req).await;
    if r.status().is_success() {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let bytes = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(b) => b,
        Err(_) => return (parts.status, "error body unreadable").into_response(),
    };
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let Some(message) = v["error"]["message"].as_str() else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    let (status, error_type) = match parts.status.as_u16() {
        400 | 404 | 409 | 422 => (StatusCode::UNPROCESSABLE_ENTITY, "Validation"),
        413 => (StatusCode::PAYLOAD_TOO_LARGE, "Validation"),
        429 => (StatusCode::TOO_MANY_REQUESTS, "Overloaded"),
        503 => (StatusCode::SERVICE_UNAVAILABLE, "Unhealthy"),
        s if s >= 500 => (parts.status, "Backend"),
        _ => (parts.status, "Validation"),
    };
    parts.status = status;
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = json!({ "error": message, "error_type": error_type }).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}
