//! OpenAI `POST /v1/chat/completions` on `text-generation` endpoints.
//!
//! The host renders the conversation with the model's chat template (as
//! transformers' `apply_chat_template(..., add_generation_prompt=True)`) and
//! sends the text to the skill as a `text-generation` prompt. transformers'
//! chat pipeline tokenizes that text without adding special tokens, while
//! the skill's tokenizer adds the model's own (Llama's `<s>`): so the host
//! compares both tokenizations of the rendered text and, where they differ
//! only by a BOS that the template rendered itself, hands the skill the text
//! without that BOS. Otherwise it asks for `add_special_tokens: false`, and an
//! answer whose prompt token count is not the template's is an error, never
//! a silently different prompt.
//!
//! Image parts (`image_url` with a data URL) reach the template as
//! `{"type": "image"}` parts, where a vision-language template (LLaVA)
//! writes its image token; the images go to the skill as `images`, in
//! message order, which splices their features in (URLs to fetch are
//! refused: the server fetches nothing). Video parts, as transformers'
//! chat messages write them (`{"type": "video", "video": [frame, ...]}`,
//! each frame a data URL; or one animated GIF/WebP, also as `video_url`),
//! reach the template as `{"type": "video"}` and the skill as `videos`
//! (Qwen2-VL).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::Value as JValue;
use serde_json::{json, Value};

use super::api::{body_bytes, json_response};
use super::chat_template::Ordered;
use super::completions::{
    finish_reason, generation_request, response_id, sse, stream_flags, token_counts, unix_now,
    usage, StreamSpec,
};
use super::model_files::ModelFiles;
use super::{ApiError, AppState};
use crate::endpoint::contract::{response, Task};
use crate::runner::Output;
use crate::ErrorKind;

fn bad(kind: ErrorKind, m: impl Into<String>) -> ApiError {
    ApiError::new(kind, m)
}

fn internal(m: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::Internal, m)
}

/// The parts of a chat body that keep their key order for the template.
#[derive(serde::Deserialize)]
struct Conversation {
    messages: Option<Ordered>,
    tools: Option<Ordered>,
}

/// Images and videos of a conversation, in message order.
#[derive(Default)]
struct Media {
    images: Vec<String>,
    videos: Vec<Value>,
}

/// Checks one message and returns it for the template: `content` parts of
/// type `text` joined by newlines (templates expect a string) unless the
/// message has images or videos: then its parts go to the template in
/// order, each `image_url` part as `{"type": "image"}` (where multimodal
/// templates write their image token) and its URL (a data URL or base64)
/// appended to `media.images`, each video part as `{"type": "video"}` and
/// its frames appended to `media.videos`; `developer` read as `system`.
fn message(i: usize, m: &Value, ordered: &JValue, media: &mut Media) -> Result<JValue, ApiError> {
    let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
        bad(
            ErrorKind::InvalidRequest,
            format!("messages[{i}] needs a string `role`"),
        )
    })?;
    let content = match m.get("content") {
        None | Some(Value::Null) if role == "assistant" => None,
        Some(Value::String(_)) => None,
        Some(Value::Array(parts)) => Some(content_parts(i, parts, media)?),
        _ => {
            return Err(bad(
                ErrorKind::InvalidRequest,
                format!(
                    "messages[{i}].content must be a string or a list of text, image_url and video parts"
                ),
            ))
        }
    };
    let keys: Vec<JValue> = ordered
        .try_iter()
        .map_err(|e| internal(e.to_string()))?
        .collect();
    let mut pairs = Vec::with_capacity(keys.len());
    for k in keys {
        let key = k.as_str().unwrap_or_default().to_string();
        let value = match (key.as_str(), &content) {
            ("role", _) if role == "developer" => JValue::from("system"),
            ("content", Some(c)) => c.clone(),
            _ => ordered.get_item(&k).map_err(|e| internal(e.to_string()))?,
        };
        pairs.push((key, value));
    }
    Ok(JValue::from_pairs(pairs))
}

/// A data URL (or base64) of part `j` of message `i`: URLs to fetch are
/// refused.
fn data_url<'a>(i: usize, j: usize, url: Option<&'a str>, what: &str) -> Result<&'a str, ApiError> {
    match url {
        Some(u) if !u.is_empty() && !u.starts_with("http://") && !u.starts_with("https://") => {
            Ok(u)
        }
        _ => Err(bad(
            ErrorKind::InvalidRequest,
            format!("messages[{i}].content[{j}]: give the {what} as a data URL (`data:image/png;base64,...`); the server fetches nothing"),
        )),
    }
}

/// A part's URL: the value itself, or its `url`.
fn url_of(v: &Value) -> Option<&str> {
    match v {
        Value::String(u) => Some(u.as_str()),
        o => o.get("url").and_then(Value::as_str),
    }
}

/// A video part's frames: `video` (a list of frame data URLs, or one
/// animated GIF/WebP) or `video_url` (`{"url": ...}` or a string: one
/// animated image).
fn video_part(i: usize, j: usize, p: &Value) -> Result<Value, ApiError> {
    match (p.get("video"), p.get("video_url")) {
        (Some(Value::Array(frames)), _) if !frames.is_empty() => {
            let mut out = Vec::with_capacity(frames.len());
            for f in frames {
                out.push(Value::from(data_url(i, j, url_of(f), "video frame")?));
            }
            Ok(Value::Array(out))
        }
        (Some(v), _) if !v.is_array() => Ok(Value::from(data_url(i, j, url_of(v), "video")?)),
        (None, Some(v)) => Ok(Value::from(data_url(i, j, url_of(v), "video")?)),
        _ => Err(bad(
            ErrorKind::InvalidRequest,
            format!("messages[{i}].content[{j}]: a video part needs `video`, a non-empty list of frames (data URLs) or one animated GIF/WebP"),
        )),
    }
}

/// A message's content parts for the template: the texts joined into one
/// string, or (with images or videos) the parts in order, images as
/// `{"type": "image"}`, videos as `{"type": "video"}`, their data collected.
fn content_parts(i: usize, parts: &[Value], media: &mut Media) -> Result<JValue, ApiError> {
    let mut texts = Vec::with_capacity(parts.len());
    let mut items = Vec::with_capacity(parts.len());
    let mut has_media = false;
    for (j, p) in parts.iter().enumerate() {
        match (p.get("type").and_then(Value::as_str), p.get("text")) {
            (Some("text"), Some(Value::String(t))) => {
                texts.push(t.as_str());
                items.push(JValue::from_pairs(vec![
                    ("type", JValue::from("text")),
                    ("text", JValue::from(t.as_str())),
                ]));
            }
            (Some("image_url"), _) => {
                let url = match p.get("image_url") {
                    Some(Value::String(u)) => Some(u.as_str()),
                    Some(o) => o.get("url").and_then(Value::as_str),
                    None => None,
                };
                media.images.push(data_url(i, j, url, "image")?.to_string());
                has_media = true;
                items.push(JValue::from_pairs(vec![("type", JValue::from("image"))]));
            }
            (Some("video" | "video_url"), _) => {
                media.videos.push(video_part(i, j, p)?);
                has_media = true;
                items.push(JValue::from_pairs(vec![("type", JValue::from("video"))]));
            }
            (Some(other), _) if other != "text" => {
                return Err(bad(
                    ErrorKind::Unsupported,
                    format!("messages[{i}].content[{j}]: `{other}` parts are not supported"),
                ))
            }
            _ => {
                return Err(bad(
                    ErrorKind::InvalidRequest,
                    format!(
                    "messages[{i}].content[{j}] must be {{\"type\": \"text\", \"text\": string}}"
                ),
                ))
            }
        }
    }
    Ok(match has_media {
        true => JValue::from(items),
        false => JValue::from(texts.join("\n")),
    })
}

/// The prompt text for the skill, whether it must ask the skill not to add
/// special tokens, and the prompt's token count as transformers' chat
/// pipeline has it.
struct Prompt {
    text: String,
    no_special_tokens: bool,
    tokens: Option<u64>,
}

fn prepare(files: &ModelFiles, rendered: String) -> Result<Prompt, ApiError> {
    let Some(tok) = &files.tokenizer else {
        return Ok(Prompt {
            text: rendered,
            no_special_tokens: false,
            tokens: None,
        });
    };
    let encode = |t: &str, special: bool| {
        tok.encode(t, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| internal(format!("tokenizing the chat prompt: {e}")))
    };
    let want = encode(&rendered, false)?;
    let tokens = Some(want.len() as u64);
    if encode(&rendered, true)? == want {
        return Ok(Prompt {
            text: rendered,
            no_special_tokens: false,
            tokens,
        });
    }
    let bos = files
        .chat_template
        .as_ref()
        .ok()
        .and_then(Option::as_ref)
        .and_then(|t| t.token("bos_token"));
    if let Some(rest) = bos
        .filter(|b| !b.is_empty())
        .and_then(|b| rendered.strip_prefix(b))
    {
        if !rest.is_empty() && encode(rest, true)? == want {
            return Ok(Prompt {
                text: rest.to_string(),
                no_special_tokens: false,
                tokens,
            });
        }
    }
    Ok(Prompt {
        text: rendered,
        no_special_tokens: true,
        tokens,
    })
}

/// An answer whose prompt is not the template's tokenization is refused:
/// the skill added special tokens the template did not render.
pub(super) fn check_prompt(o: &Output, want: u64) -> Result<(), ApiError> {
    match o.json.get("prompt_tokens").and_then(Value::as_u64) {
        Some(got) if got != want => Err(internal(format!(
            "the skill tokenized the chat prompt to {got} tokens, the chat template's text has {want} \
             without added special tokens (as transformers' chat pipeline tokenizes it): this \
             skill adds special tokens that the model's template does not render, so its answer \
             would not be the model's; serve a skill that honours `add_special_tokens: false`"
        ))),
        _ => Ok(()),
    }
}

/// The rendered prompt of a chat body, checked against the endpoint, and
/// its images in message order.
fn render(files: &ModelFiles, v: &Value, conv: Conversation) -> Result<(Prompt, Media), ApiError> {
    let template = match &files.chat_template {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(bad(
                ErrorKind::InvalidRequest,
                "the endpoint's model has no chat template (no `chat_template` in \
                 tokenizer_config.json, no chat_template.jinja); use /v1/completions with a prompt",
            ))
        }
        Err(e) => return Err(internal(format!("the model's chat template: {e}"))),
    };
    let list = match v.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => {
            return Err(bad(
                ErrorKind::InvalidRequest,
                "`messages` must be a non-empty list of {\"role\", \"content\"} objects",
            ))
        }
    };
    let ordered = conv.messages.map(|o| o.0).unwrap_or_default();
    let mut messages = Vec::with_capacity(list.len());
    let mut media = Media::default();
    for (i, m) in list.iter().enumerate() {
        let o = ordered
            .get_item_by_index(i)
            .map_err(|e| internal(e.to_string()))?;
        messages.push(message(i, m, &o, &mut media)?);
    }
    let tools = match (v.get("tools"), conv.tools) {
        (Some(Value::Array(a)), Some(t)) if !a.is_empty() => Some(t.0),
        (None | Some(Value::Null), _) => None,
        (Some(Value::Array(_)), _) => None,
        _ => return Err(bad(ErrorKind::InvalidRequest, "`tools` must be a list")),
    };
    let add_generation_prompt = match v.get("add_generation_prompt") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(bad(
                ErrorKind::InvalidRequest,
                "`add_generation_prompt` must be true or false",
            ))
        }
    };
    let rendered = template
        .render(JValue::from(messages), tools, add_generation_prompt)
        .map_err(|e| bad(ErrorKind::InvalidRequest, e.to_string()))?;
    if rendered.is_empty() {
        return Err(bad(
            ErrorKind::InvalidRequest,
            "the chat template rendered an empty prompt",
        ));
    }
    let mut prompt = prepare(files, rendered)?;
    if !media.images.is_empty() || !media.videos.is_empty() {
        // The skill expands each image (video) token into its features:
        // its prompt count is not the text's.
        prompt.tokens = None;
    }
    Ok((prompt, media))
}

/// OpenAI `POST /v1/chat/completions` (see the module docs).
pub(super) async fn openai_chat(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let permit = state.permit()?;
    let bytes = body_bytes(body)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        bad(
            ErrorKind::InvalidRequest,
            format!("body is not valid JSON: {e}"),
        )
    })?;
    let conv: Conversation = serde_json::from_slice(&bytes).map_err(|e| {
        bad(
            ErrorKind::InvalidRequest,
            format!("invalid chat request: {e}"),
        )
    })?;
    let handler = state.pick(v.get("model").and_then(Value::as_str))?;
    let status = state
        .endpoints
        .status()
        .into_iter()
        .find(|s| s.name == handler.name())
        .ok_or_else(|| ApiError::new(ErrorKind::Unavailable, "the endpoint was removed"))?;
    let files = state.model_files.get(&status).await?;
    if Task::of_skill(&files.skill) != Some(Task::TextGeneration) {
        return Err(bad(
            ErrorKind::InvalidRequest,
            format!(
                "endpoint `{}` serves `{}`; chat completions need a text-generation endpoint",
                status.name, files.skill
            ),
        ));
    }
    match v.get("response_format").and_then(|f| f.get("type")) {
        None | Some(Value::Null) => {}
        Some(t) if t == "text" => {}
        Some(t) => {
            return Err(bad(
                ErrorKind::Unsupported,
                format!("`response_format` {t} is not supported"),
            ))
        }
    }
    let mut request = generation_request(&v, "")?;
    let (stream, include_usage) = stream_flags(&v)?;
    let (f, body) = (files.clone(), v.clone());
    let (prompt, media) = tokio::task::spawn_blocking(move || render(&f, &body, conv))
        .await
        .map_err(|e| internal(format!("rendering the chat template failed: {e}")))??;
    request.prompt = prompt.text;
    if !media.images.is_empty() {
        request.images = Some(media.images);
    }
    if !media.videos.is_empty() {
        request.videos = Some(media.videos);
    }
    if prompt.no_special_tokens {
        request.add_special_tokens = Some(false);
    }
    let spec = StreamSpec {
        id: response_id("chatcmpl"),
        model: handler.name().to_string(),
        created: unix_now(),
        chat: true,
        include_usage,
        prompt_tokens: prompt.tokens,
    };
    if stream {
        let (chunks, done) = handler.call_streaming(request.to_json())?;
        return Ok(sse(chunks, done, spec, permit));
    }
    let o = handler.call(request.to_json()).await?;
    if let Some(n) = prompt.tokens {
        check_prompt(&o, n)?;
    }
    let (p, c) = token_counts(&o);
    let text = o.json.get(response::TEXT).cloned().unwrap_or(json!(""));
    let body = json!({
        "id": spec.id, "object": "chat.completion", "created": spec.created, "model": spec.model,
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": text },
                      "logprobs": null, "finish_reason": finish_reason(&o) }],
        "usage": usage(p, c),
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}
