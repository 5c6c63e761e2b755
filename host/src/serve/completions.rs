//! OpenAI `POST /v1/completions` on `text-generation` endpoints, and what it
//! shares with chat completions: the mapping of OpenAI's sampling options
//! onto the skill's request, usage, finish reasons, and the server-sent
//! event stream (`text_completion` or `chat.completion.chunk` events,
//! `stream_options.include_usage`, then `data: [DONE]`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::api::{json_body, json_response};
use super::{ApiError, AppState};
use crate::endpoint::contract::{response, GenerationRequest};
use crate::runner::{Output, RequestError};
use crate::ErrorKind;

fn bad(kind: ErrorKind, m: impl Into<String>) -> ApiError {
    ApiError::new(kind, m)
}

/// The skill request for `prompt` with the OpenAI options of body `v`.
pub(super) fn generation_request(v: &Value, prompt: &str) -> Result<GenerationRequest, ApiError> {
    let mut req = GenerationRequest {
        prompt: prompt.to_string(),
        ..Default::default()
    };
    // Chat's `max_completion_tokens` replaced `max_tokens`; both are read.
    let max = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| v.get(*k).filter(|x| !x.is_null()));
    if let Some(n) = max {
        req.max_new_tokens = Some(n.clone());
    }
    // OpenAI: temperature 0 is greedy. Absent: the model's generation_config.
    match v.get("temperature").filter(|x| !x.is_null()) {
        None => {}
        Some(t) => match t.as_f64() {
            Some(0.0) => req.do_sample = Some(false),
            Some(t) => {
                req.do_sample = Some(true);
                req.temperature = Some(t);
            }
            None => {
                return Err(bad(
                    ErrorKind::InvalidRequest,
                    "`temperature` must be a number",
                ))
            }
        },
    }
    for k in ["frequency_penalty", "presence_penalty"] {
        if v.get(k).and_then(Value::as_f64).is_some_and(|x| x != 0.0) {
            return Err(bad(
                ErrorKind::Unsupported,
                format!("`{k}` is not supported; use `repetition_penalty`"),
            ));
        }
    }
    for k in [
        "logprobs",
        "top_logprobs",
        "echo",
        "suffix",
        "best_of",
        "logit_bias",
    ] {
        if v.get(k)
            .is_some_and(|x| !x.is_null() && x != &Value::Bool(false))
        {
            return Err(bad(
                ErrorKind::Unsupported,
                format!("`{k}` is not supported"),
            ));
        }
    }
    for k in ["top_p", "top_k", "seed", "repetition_penalty"] {
        if let Some(x) = v.get(k).filter(|x| !x.is_null()) {
            req.set_option(k, x.clone());
        }
    }
    match v.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => req.stop = Some(vec![s.clone()]),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            req.stop = Some(
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect(),
            )
        }
        Some(_) => {
            return Err(bad(
                ErrorKind::InvalidRequest,
                "`stop` must be a string or a list of strings",
            ))
        }
    }
    match v.get("n") {
        None | Some(Value::Null) => {}
        Some(n) if n.as_u64() == Some(1) => {}
        Some(n) => {
            return Err(bad(
                ErrorKind::Unsupported,
                format!("only `n: 1` is supported (got {n}); send the request again for more"),
            ))
        }
    }
    Ok(req)
}

/// `stream` and `stream_options.include_usage` of a body.
pub(super) fn stream_flags(v: &Value) -> Result<(bool, bool), ApiError> {
    let stream = match v.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(bad(
                ErrorKind::InvalidRequest,
                "`stream` must be true or false",
            ))
        }
    };
    let usage = match v.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(o) if !stream => {
            return Err(bad(
                ErrorKind::InvalidRequest,
                format!("`stream_options` ({o}) is only allowed with `stream: true`"),
            ))
        }
        Some(o) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(bad(
                    ErrorKind::InvalidRequest,
                    "`stream_options.include_usage` must be true or false",
                ))
            }
        },
    };
    Ok((stream, usage))
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh response id with `prefix` (`cmpl`, `chatcmpl`).
pub(super) fn response_id(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        unix_now(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// (prompt tokens, completion tokens) of an answer.
pub(super) fn token_counts(o: &Output) -> (u64, u64) {
    let prompt = o
        .json
        .get(response::PROMPT_TOKENS)
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let completion = o
        .json
        .get(response::TOKEN_IDS)
        .and_then(Value::as_array)
        .map(|a| a.len() as u64)
        .unwrap_or(0);
    (prompt, completion)
}

pub(super) fn usage(prompt: u64, completion: u64) -> Value {
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
}

/// OpenAI's finish reason of an answer: `stop` (eos or a stop string) or
/// `length`.
pub(super) fn finish_reason(o: &Output) -> Value {
    match o.json.get(response::FINISH_REASON).and_then(Value::as_str) {
        Some("eos") | Some("stop") => json!("stop"),
        Some(other) => json!(other),
        None => Value::Null,
    }
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
            return Err(bad(
                ErrorKind::InvalidRequest,
                "`prompt` must be a string or a list of strings",
            ))
        }
    };
    let requests = prompts
        .iter()
        .map(|p| generation_request(&v, p).map(|r| r.to_json()))
        .collect::<Result<Vec<_>, _>>()?;
    let (stream, include_usage) = stream_flags(&v)?;
    let spec = StreamSpec {
        id: response_id("cmpl"),
        model: handler.name().to_string(),
        created: unix_now(),
        chat: false,
        include_usage,
        prompt_tokens: None,
    };
    if stream {
        let [request] = <[String; 1]>::try_from(requests)
            .map_err(|_| bad(ErrorKind::Unsupported, "streaming takes one prompt"))?;
        let (chunks, done) = handler.call_streaming(request)?;
        return Ok(sse(chunks, done, spec, permit));
    }
    let mut choices = Vec::new();
    let (mut prompt_tokens, mut completion_tokens) = (0u64, 0u64);
    for (i, r) in handler.call_many(requests).await.into_iter().enumerate() {
        let o = r?;
        let (p, c) = token_counts(&o);
        prompt_tokens += p;
        completion_tokens += c;
        choices.push(json!({
            "text": o.json.get(response::TEXT).cloned().unwrap_or(Value::String(String::new())),
            "index": i, "logprobs": null, "finish_reason": finish_reason(&o),
        }));
    }
    let body = json!({
        "id": spec.id, "object": "text_completion", "created": spec.created, "model": spec.model,
        "choices": choices, "usage": usage(prompt_tokens, completion_tokens),
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// What a stream's events say besides the text.
pub(super) struct StreamSpec {
    pub id: String,
    pub model: String,
    pub created: u64,
    /// `chat.completion.chunk` events (else `text_completion`).
    pub chat: bool,
    /// A last event with `usage` and no choices.
    pub include_usage: bool,
    /// The prompt's token count as the template's tokenization gives it;
    /// an answer that counted otherwise fails (see `chat::check_prompt`).
    pub prompt_tokens: Option<u64>,
}

impl StreamSpec {
    /// One event: `text` (the role comes with the first chat event).
    fn event(&self, text: &str, finish: Value, first: bool) -> Event {
        let choice = match self.chat {
            true => {
                let delta = match (first, finish.is_null()) {
                    (true, _) => json!({ "role": "assistant", "content": text }),
                    (false, true) => json!({ "content": text }),
                    (false, false) if text.is_empty() => json!({}),
                    (false, false) => json!({ "content": text }),
                };
                json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish })
            }
            false => json!({ "text": text, "index": 0, "logprobs": null, "finish_reason": finish }),
        };
        let object = if self.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let mut v = json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [choice],
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        Event::default().data(v.to_string())
    }

    fn usage_event(&self, o: &Output) -> Event {
        let (p, c) = token_counts(o);
        let object = if self.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let v = json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [], "usage": usage(p, c),
        });
        Event::default().data(v.to_string())
    }
}

fn error_event(kind: ErrorKind, message: &str) -> Event {
    Event::default().data(json!({ "error": { "message": message, "type": kind } }).to_string())
}

/// Server-sent events of one streamed generation.
pub(super) fn sse(
    chunks: tokio::sync::mpsc::UnboundedReceiver<String>,
    done: tokio::sync::oneshot::Receiver<Result<Output, RequestError>>,
    spec: StreamSpec,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Response {
    struct St {
        chunks: tokio::sync::mpsc::UnboundedReceiver<String>,
        done: Option<tokio::sync::oneshot::Receiver<Result<Output, RequestError>>>,
        sent: String,
        first: bool,
        spec: StreamSpec,
        /// Events left to send after the final answer.
        tail: Vec<Event>,
        _permit: tokio::sync::OwnedSemaphorePermit,
    }
    let st = St {
        chunks,
        done: Some(done),
        sent: String::new(),
        first: true,
        spec,
        tail: Vec::new(),
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if let Some(ev) = st.tail.pop() {
            return Some((Ok::<Event, std::convert::Infallible>(ev), st));
        }
        st.done.as_ref()?;
        if let Some(chunk) = st.chunks.recv().await {
            let v: Value = serde_json::from_str(&chunk).unwrap_or(Value::Null);
            let text = v
                .get(response::TEXT)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            st.sent.push_str(&text);
            let ev = st.spec.event(&text, Value::Null, st.first);
            st.first = false;
            return Some((Ok(ev), st));
        }
        // The sender is gone: the request finished (or failed).
        let result = match st.done.take()?.await {
            Ok(r) => r,
            Err(_) => Err(RequestError::internal("request lost")),
        };
        let result = result.map_err(ApiError::from).and_then(|o| {
            if let Some(n) = st.spec.prompt_tokens {
                super::chat::check_prompt(&o, n)?;
            }
            Ok(o)
        });
        let ev = match result {
            Ok(o) => {
                let full = o
                    .json
                    .get(response::TEXT)
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let rest = full.strip_prefix(st.sent.as_str()).unwrap_or("");
                if st.spec.include_usage {
                    st.tail.push(st.spec.usage_event(&o));
                }
                st.spec.event(rest, finish_reason(&o), st.first)
            }
            Err(e) => error_event(e.kind, &e.message),
        };
        Some((Ok(ev), st))
    });
    let done_marker = futures_util::stream::once(async { Ok(Event::default().data("[DONE]")) });
    Sse::new(futures_util::StreamExt::chain(stream, done_marker)).into_response()
}
