//! Inference routes: OpenAI embeddings, TEI embed, generic, health, metrics.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;
use serde_json::Value;

use super::{ApiError, AppState};
use crate::runner::Output;

/// Reads a JSON body, mapping size and syntax problems to clear 4xx errors.
pub(super) fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|r| {
        let status = r.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body exceeds the server's size limit".to_string()
        } else {
            format!("cannot read the request body: {r}")
        };
        ApiError::new(status, "invalid-request", msg)
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            format!("body is not valid JSON: {e}"),
        )
    })
}

/// `input`/`inputs` as a list of strings.
fn texts(v: &Value, key: &str) -> Result<Vec<String>, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid-request", m);
    match v.get(key) {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
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

async fn embed_all(
    state: &AppState,
    endpoint: Option<&str>,
    inputs: Vec<String>,
) -> Result<(String, Vec<Output>), ApiError> {
    let handler = state.pick(endpoint)?;
    let requests = inputs
        .into_iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    let mut outs = Vec::new();
    for r in handler.call_many(requests).await {
        outs.push(r?);
    }
    Ok((handler.name().to_string(), outs))
}

fn embedding_json(o: &Output) -> Result<Box<RawValue>, ApiError> {
    let internal = |m: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m);
    let t = o
        .tensor("embedding")
        .ok_or_else(|| internal("the endpoint's skill returned no `embedding`".into()))?;
    let text = t
        .to_json("embedding")
        .map_err(|e| internal(e.to_string()))?;
    RawValue::from_string(text).map_err(|e| internal(e.to_string()))
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// OpenAI `POST /v1/embeddings`: `{"input": str | [str], "model": endpoint}`.
pub(super) async fn openai_embeddings(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let _permit = state.permit()?;
    let v = json_body(body)?;
    if let Some(f) = v.get("encoding_format").and_then(Value::as_str) {
        if f != "float" {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported",
                format!("encoding_format `{f}` is not supported; use `float`"),
            ));
        }
    }
    if v.get("dimensions").is_some_and(|d| !d.is_null()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported",
            "`dimensions` is not supported",
        ));
    }
    let inputs = texts(&v, "input")?;
    let (name, outs) = embed_all(&state, v.get("model").and_then(Value::as_str), inputs).await?;
    let mut data = Vec::with_capacity(outs.len());
    let mut tokens = 0u64;
    for (i, o) in outs.iter().enumerate() {
        tokens += o.json.get("tokens").and_then(Value::as_u64).unwrap_or(0);
        data.push(serde_json::json!({ "object": "embedding", "index": i, "embedding": embedding_json(o)? }));
    }
    let body = serde_json::json!({
        "object": "list", "data": data, "model": name,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// TEI `POST /embed`: `{"inputs": str | [str], "normalize": true}` -> `[[...]]`.
pub(super) async fn tei_embed(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let _permit = state.permit()?;
    let v = json_body(body)?;
    if v.get("normalize").and_then(Value::as_bool) == Some(false) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported",
            "`normalize: false` is not supported: normalisation follows the model's sentence-transformers modules",
        ));
    }
    let inputs = texts(&v, "inputs")?;
    let (_, outs) = embed_all(&state, v.get("model").and_then(Value::as_str), inputs).await?;
    let rows = outs
        .iter()
        .map(embedding_json)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_string(&rows).unwrap_or_default(),
    ))
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
        Value::Array(a) if !a.is_empty() => (true, a.iter().map(Value::to_string).collect()),
        Value::Object(_) => (false, vec![v.to_string()]),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid-request",
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

/// `GET /health`.
pub(super) async fn health(State(state): State<Arc<AppState>>) -> Response {
    let status = state.endpoints.status();
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
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.endpoints.metrics.render(),
    )
        .into_response()
}

/// The skill request of an OpenAI completions body.
fn completion_request(v: &Value, prompt: &str) -> Result<String, ApiError> {
    let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid-request", m);
    let mut req = serde_json::json!({ "prompt": prompt });
    if let Some(n) = v.get("max_tokens").filter(|x| !x.is_null()) {
        req["max_new_tokens"] = n.clone();
    }
    // OpenAI: temperature 0 is greedy. Absent: the model's generation_config.
    match v.get("temperature").and_then(Value::as_f64) {
        Some(0.0) => req["do_sample"] = Value::Bool(false),
        Some(t) => {
            req["do_sample"] = Value::Bool(true);
            req["temperature"] = serde_json::json!(t);
        }
        None => {}
    }
    for k in ["frequency_penalty", "presence_penalty"] {
        if v.get(k).and_then(Value::as_f64).is_some_and(|x| x != 0.0) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported",
                format!("`{k}` is not supported; use `repetition_penalty`"),
            ));
        }
    }
    for k in ["logprobs", "echo", "suffix", "best_of", "logit_bias"] {
        if v.get(k)
            .is_some_and(|x| !x.is_null() && x != &Value::Bool(false))
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported",
                format!("`{k}` is not supported"),
            ));
        }
    }
    for k in ["top_p", "top_k", "seed", "stop", "repetition_penalty"] {
        if let Some(x) = v.get(k).filter(|x| !x.is_null()) {
            req[k] = x.clone();
        }
    }
    if v.get("n").and_then(Value::as_u64).is_some_and(|n| n != 1) {
        return Err(bad("only `n: 1` is supported"));
    }
    Ok(req.to_string())
}

fn completion_choice(o: &Output, index: usize) -> Value {
    serde_json::json!({
        "text": o.json.get("text").cloned().unwrap_or(Value::String(String::new())),
        "index": index,
        "finish_reason": o.json.get("finish_reason").cloned().unwrap_or(Value::Null),
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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

/// OpenAI `POST /v1/completions`, with `stream: true` as server-sent events
/// (one event per generated token, then `[DONE]`).
pub(super) async fn openai_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let permit = state.permit()?;
    let v = json_body(body)?;
    let handler = state.pick(v.get("model").and_then(Value::as_str))?;
    let prompts: Vec<String> = match v.get("prompt") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "`prompt` must be a string or a list of strings",
            ))
        }
    };
    let requests = prompts
        .iter()
        .map(|p| completion_request(&v, p))
        .collect::<Result<Vec<_>, _>>()?;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = format!(
        "cmpl-{}-{}",
        unix_now(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let model = handler.name().to_string();
    if v.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        if requests.len() != 1 {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported",
                "streaming takes one prompt",
            ));
        }
        let request = requests.into_iter().next().unwrap_or_default();
        let (chunks, done) = handler.call_streaming(request)?;
        return Ok(sse(chunks, done, id, model, permit));
    }
    let mut choices = Vec::new();
    let (mut prompt_tokens, mut completion_tokens) = (0u64, 0u64);
    for (i, r) in handler.call_many(requests).await.into_iter().enumerate() {
        let o = r?;
        prompt_tokens += o
            .json
            .get("prompt_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        completion_tokens += o
            .json
            .get("token_ids")
            .and_then(Value::as_array)
            .map(|a| a.len() as u64)
            .unwrap_or(0);
        choices.push(completion_choice(&o, i));
    }
    let body = serde_json::json!({
        "id": id, "object": "text_completion", "created": unix_now(), "model": model, "choices": choices,
        "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                   "total_tokens": prompt_tokens + completion_tokens },
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// Server-sent events of one streamed completion.
fn sse(
    chunks: tokio::sync::mpsc::UnboundedReceiver<String>,
    done: tokio::sync::oneshot::Receiver<Result<Output, crate::runner::RequestError>>,
    id: String,
    model: String,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Response {
    use axum::response::sse::{Event, Sse};
    let event = move |text: &str, finish: Value| {
        let v = serde_json::json!({
            "id": id, "object": "text_completion", "created": unix_now(), "model": model,
            "choices": [{ "text": text, "index": 0, "finish_reason": finish }],
        });
        Event::default().data(v.to_string())
    };
    struct St<F> {
        chunks: tokio::sync::mpsc::UnboundedReceiver<String>,
        done: Option<tokio::sync::oneshot::Receiver<Result<Output, crate::runner::RequestError>>>,
        sent: String,
        event: F,
        finished: bool,
        _permit: tokio::sync::OwnedSemaphorePermit,
    }
    let st = St {
        chunks,
        done: Some(done),
        sent: String::new(),
        event,
        finished: false,
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if st.finished {
            return None;
        }
        if let Some(chunk) = st.chunks.recv().await {
            let v: Value = serde_json::from_str(&chunk).unwrap_or(Value::Null);
            let text = v
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            st.sent.push_str(&text);
            let ev = (st.event)(&text, Value::Null);
            return Some((Ok::<Event, std::convert::Infallible>(ev), st));
        }
        // The sender is gone: the request finished (or failed).
        st.finished = true;
        let result = match st.done.take() {
            Some(rx) => rx.await.unwrap_or_else(|_| {
                Err(crate::runner::RequestError {
                    kind: "internal",
                    message: "request lost".into(),
                })
            }),
            None => return None,
        };
        let ev = match result {
            Ok(o) => {
                let full = o.json.get("text").and_then(Value::as_str).unwrap_or("");
                let rest = full.strip_prefix(st.sent.as_str()).unwrap_or("");
                (st.event)(
                    rest,
                    o.json.get("finish_reason").cloned().unwrap_or(Value::Null),
                )
            }
            Err(e) => Event::default().data(
                serde_json::json!({ "error": { "message": e.message, "type": e.kind } })
                    .to_string(),
            ),
        };
        Some((Ok(ev), st))
    });
    let done_marker = futures_util::stream::once(async { Ok(Event::default().data("[DONE]")) });
    Sse::new(futures_util::StreamExt::chain(stream, done_marker)).into_response()
}
