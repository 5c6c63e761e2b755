//! Inference routes: OpenAI embeddings and models, generic, health, metrics;
//! body helpers the other route modules share.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;
use serde_json::Value;

use super::{ApiError, AppState};
use crate::endpoint::contract::{response, TextRequest};
use crate::runner::Output;
use crate::ErrorKind;

/// Reads a body, mapping size and transport problems to clear 4xx errors.
pub(super) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        let status = r.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body exceeds the server's size limit".to_string()
        } else {
            format!("cannot read the request body: {r}")
        };
        ApiError::with_status(status, ErrorKind::InvalidRequest, msg)
    })
}

/// Reads a JSON body, mapping size and syntax problems to clear 4xx errors.
pub(super) fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body_bytes(body)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidRequest,
            format!("body is not valid JSON: {e}"),
        )
    })
}

/// Most inputs one request may carry (OpenAI's limit for embeddings);
/// larger requests are refused before any work, smaller ones are served
/// whatever the queue size.
pub const MAX_INPUTS: usize = 2048;

/// `input`/`inputs` as a list of strings.
pub(super) fn texts(v: &Value, key: &str) -> Result<Vec<String>, ApiError> {
    let bad = |m: String| ApiError::new(ErrorKind::InvalidRequest, m);
    match v.get(key) {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) if a.len() > MAX_INPUTS => Err(bad(format!(
            "`{key}` has {} inputs; at most {MAX_INPUTS} per request",
            a.len()
        ))),
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("`{key}` must be a string or a list of strings")))
            })
            .collect(),
        Some(Value::Array(_)) => Err(bad(format!("`{key}` is empty"))),
        Some(_) => Err(bad(format!(
            "`{key}` must be a string or a list of strings"
        ))),
        None => Err(bad(format!("missing `{key}`"))),
    }
}

pub(super) async fn embed_all(
    state: &AppState,
    endpoint: Option<&str>,
    inputs: Vec<String>,
) -> Result<(String, Vec<Output>), ApiError> {
    let handler = state.pick(endpoint)?;
    let requests = inputs
        .into_iter()
        .map(|t| TextRequest::new(t).to_json())
        .collect();
    let mut outs = Vec::new();
    for r in handler.call_many(requests).await {
        outs.push(r?);
    }
    Ok((handler.name().to_string(), outs))
}

fn embedding_json(o: &Output) -> Result<Box<RawValue>, ApiError> {
    let internal = |m: String| ApiError::new(ErrorKind::Internal, m);
    let t = o
        .tensor(response::EMBEDDING)
        .ok_or_else(|| internal("the endpoint's skill returned no `embedding`".into()))?;
    let text = t
        .to_json(response::EMBEDDING)
        .map_err(|e| internal(e.to_string()))?;
    RawValue::from_string(text).map_err(|e| internal(e.to_string()))
}

pub(super) fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// OpenAI `POST /v1/embeddings`: `{"input": str | [str], "model": endpoint}`.
pub(super) async fn openai_embeddings(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let _permit = state.permit()?;
    let v = json_body(body)?;
    let base64 = match v.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(f) => {
            return Err(ApiError::new(
                ErrorKind::Unsupported,
                format!("encoding_format {f} is not supported; use `float` or `base64`"),
            ))
        }
    };
    if v.get("dimensions").is_some_and(|d| !d.is_null()) {
        return Err(ApiError::new(
            ErrorKind::Unsupported,
            "`dimensions` is not supported",
        ));
    }
    if is_token_ids(v.get("input")) {
        return Err(ApiError::new(ErrorKind::Unsupported, "`input` as token ids is not supported: the endpoint's skill tokenizes texts with the \
             model's own tokenizer (ids from another tokenizer, such as tiktoken's, would be another \
             text); send strings (LangChain: `check_embedding_ctx_length=False`)",
        ));
    }
    let inputs = texts(&v, "input")?;
    let (name, outs) = embed_all(&state, v.get("model").and_then(Value::as_str), inputs).await?;
    let mut data = Vec::with_capacity(outs.len());
    let mut tokens = 0u64;
    for (i, o) in outs.iter().enumerate() {
        tokens += o
            .json
            .get(response::TOKENS)
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let embedding = match base64 {
            true => Value::String(embedding_base64(o)?),
            false => serde_json::to_value(embedding_json(o)?)
                .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?,
        };
        data.push(serde_json::json!({ "object": "embedding", "index": i, "embedding": embedding }));
    }
    let body = serde_json::json!({
        "object": "list", "data": data, "model": name,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// Whether `input` is token ids: a list of integers or of lists of them.
fn is_token_ids(input: Option<&Value>) -> bool {
    let ids = |a: &Vec<Value>| !a.is_empty() && a.iter().all(Value::is_number);
    match input {
        Some(Value::Array(a)) => {
            ids(a) || (!a.is_empty() && a.iter().all(|x| x.as_array().is_some_and(ids)))
        }
        _ => false,
    }
}

/// An embedding as OpenAI's `base64`: its f32 values, little endian.
fn embedding_base64(o: &Output) -> Result<String, ApiError> {
    use base64::Engine;
    let internal = |m: String| ApiError::new(ErrorKind::Internal, m);
    let t = o
        .tensor(response::EMBEDDING)
        .ok_or_else(|| internal("the endpoint's skill returned no `embedding`".into()))?;
    let values = t
        .to_f32(response::EMBEDDING)
        .map_err(|e| internal(e.to_string()))?;
    let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// `POST /v1/endpoints/{name}`: one request object, or a list of them; the
/// answer has the CLI's format (a list when a list was sent).
pub(super) async fn generic(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let _permit = state.permit()?;
    // A multipart form (file uploads) is one request object.
    let v = match super::forms::is_form(&headers) {
        true => super::forms::request(&headers, body).await?,
        false => json_body(body)?,
    };
    let handler = state.pick(Some(&name))?;
    let (list, requests) = match v {
        Value::Array(a) if a.len() > MAX_INPUTS => {
            return Err(ApiError::new(
                ErrorKind::InvalidRequest,
                format!("{} requests in one list; at most {MAX_INPUTS}", a.len()),
            ))
        }
        Value::Array(a) if !a.is_empty() => (true, a.iter().map(Value::to_string).collect()),
        Value::Object(_) => (false, vec![v.to_string()]),
        _ => {
            return Err(ApiError::new(
                ErrorKind::InvalidRequest,
                "send a request object or a non-empty list of them",
            ))
        }
    };
    let mut lines = Vec::new();
    for r in handler.call_many(requests).await {
        let line = match r.and_then(|o| o.to_json_line()) {
            Ok(l) => l,
            Err(e) if !list => return Err(e.into()),
            Err(e) => {
                serde_json::json!({ "error": { "type": e.kind, "message": e.message } }).to_string()
            }
        };
        lines.push(line);
    }
    let body = if list {
        format!("[{}]", lines.join(","))
    } else {
        lines.pop().unwrap_or_default()
    };
    Ok(json_response(StatusCode::OK, body))
}

/// The endpoints' status without filesystem paths: models and skills by
/// name ([`super::confine::display_name`]).
pub(super) fn public_status(state: &AppState) -> Vec<crate::endpoint::EndpointStatus> {
    let mut status = state.endpoints.status();
    for s in &mut status {
        s.model = super::confine::display_name(&s.model);
        s.skill = super::confine::display_name(&s.skill);
    }
    status
}

/// `GET /health`.
pub(super) async fn health(State(state): State<Arc<AppState>>) -> Response {
    let status = public_status(&state);
    let code = if status.is_empty() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, axum::Json(serde_json::json!({ "status": if status.is_empty() { "no endpoints" } else { "ok" }, "endpoints": status })))
        .into_response()
}

/// `GET /metrics` (Prometheus text format).
pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.endpoints.refresh_metrics();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.endpoints.metrics.render(),
    )
        .into_response()
}

/// OpenAI `GET /v1/models`: one entry per endpoint (its name is the model
/// id clients send), with the skill that serves it.
pub(super) async fn openai_models(State(state): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = state
        .endpoints
        .status()
        .into_iter()
        .map(|s| serde_json::json!({ "id": s.name, "object": "model", "created": 0, "owned_by": "host", "skill": s.skill }))
        .collect();
    json_response(
        StatusCode::OK,
        serde_json::json!({ "object": "list", "data": data }).to_string(),
    )
}
