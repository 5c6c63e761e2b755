//! `multipart/form-data` bodies (parsed with `multer`): a form becomes a
//! skill request object, file parts as base64 strings under their field
//! name (`image`, `audio`, `file`), other parts as JSON values when they
//! parse as such (`"3"` -> 3) and strings otherwise; and OpenAI's
//! `POST /v1/audio/transcriptions` on an automatic-speech-recognition
//! endpoint.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value};

use super::transcripts::{self, Format};
use super::{ApiError, AppState};
use crate::endpoint::contract::{response, Timestamps, TranscriptionRequest};
use crate::ErrorKind;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::InvalidRequest, message)
}

/// Whether a request carries a multipart form.
pub(super) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"))
}

/// One form part: its field name, whether it is a file, its bytes.
struct Part {
    name: String,
    file: bool,
    bytes: Vec<u8>,
}

async fn parts(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<Part>, ApiError> {
    let body = body.map_err(|r| {
        ApiError::with_status(
            r.status(),
            ErrorKind::InvalidRequest,
            format!("cannot read the request body: {r}"),
        )
    })?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary =
        multer::parse_boundary(ct).map_err(|e| bad(format!("bad multipart content type: {e}")))?;
    let stream =
        futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut out = Vec::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| bad(format!("malformed form: {e}")))?
    {
        let name = field.name().unwrap_or("").to_string();
        let file = field.file_name().is_some();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| bad(format!("malformed form field `{name}`: {e}")))?;
        out.push(Part {
            name,
            file,
            bytes: bytes.to_vec(),
        });
    }
    Ok(out)
}

/// A form as a skill request object.
pub(super) async fn request(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, ApiError> {
    let mut obj = Map::new();
    for p in parts(headers, body).await? {
        if p.name.is_empty() {
            return Err(bad("a form field has no name"));
        }
        let value = match p.file {
            true => Value::String(base64::engine::general_purpose::STANDARD.encode(&p.bytes)),
            false => {
                let text = String::from_utf8(p.bytes)
                    .map_err(|_| bad(format!("form field `{}` is not UTF-8 text", p.name)))?;
                serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(|v| !v.is_string())
                    .unwrap_or(Value::String(text))
            }
        };
        obj.insert(p.name, value);
    }
    Ok(Value::Object(obj))
}

/// OpenAI `POST /v1/audio/transcriptions`: `file`, `model` (the endpoint),
/// `language`, `temperature` (0: greedy), `response_format` (json, text,
/// verbose_json, srt, vtt: rendered by [`transcripts`]; the subtitles and
/// `timestamp_granularities[]` ask the skill for timestamps; `word` with
/// verbose_json asks for word timestamps too, answered as `words`, with
/// segments only when `segment` is asked as well). `prompt` is
/// refused.
pub(super) async fn transcriptions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let _permit = state.permit()?;
    if !is_form(&headers) {
        return Err(bad("send multipart/form-data with a `file` part"));
    }
    let mut fields = Map::new();
    let mut granularities: Vec<String> = Vec::new();
    let mut audio = None;
    for p in parts(&headers, body).await? {
        match (p.name.as_str(), p.file) {
            ("file", _) => audio = Some(base64::engine::general_purpose::STANDARD.encode(&p.bytes)),
            (name, _) => {
                let text = String::from_utf8(p.bytes)
                    .map_err(|_| bad(format!("form field `{name}` is not UTF-8 text")))?;
                if name.starts_with("timestamp_granularities") {
                    granularities.push(text.clone());
                }
                fields.insert(name.to_string(), Value::String(text));
            }
        }
    }
    let audio = audio.ok_or_else(|| bad("missing the `file` part"))?;
    let text = |k: &str| {
        fields
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let handler = state.pick(text("model"))?;
    let name = text("response_format").unwrap_or("json");
    let format = Format::parse(name).ok_or_else(|| {
        bad(format!(
            "unknown response_format `{name}` (json, text, verbose_json, srt, vtt)"
        ))
    })?;
    let mut req = TranscriptionRequest {
        audio,
        language: text("language").map(str::to_string),
        // Previous text (Whisper's `prompt_ids`); other models refuse it.
        prompt: text("prompt").map(str::to_string),
        ..Default::default()
    };
    if let Some(t) = text("temperature") {
        let t: f64 = t
            .parse()
            .map_err(|_| bad(format!("`temperature` `{t}` is not a number")))?;
        // 0 (OpenAI's default) is greedy: send nothing.
        if t != 0.0 {
            req.temperature = Some(t);
        }
    }
    let timed = format.timed()
        || fields
            .keys()
            .any(|k| k.starts_with("timestamp_granularities"));
    if timed {
        req.return_timestamps = Some(Timestamps::Segments);
    }
    let handler = &handler;
    let call = |req: TranscriptionRequest| async move {
        handler
            .call_many(vec![req.to_json()])
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(crate::runner::RequestError::internal("no answer")))
    };
    let words = format == Format::VerboseJson && granularities.iter().any(|g| g == "word");
    let word_list = match words {
        true => {
            let mut word_req = req.clone();
            word_req.return_timestamps = Some(Timestamps::Words);
            let mut w = call(word_req).await?;
            let list = w
                .json
                .remove(response::CHUNKS)
                .unwrap_or(Value::Array(Vec::new()));
            if !granularities.iter().any(|g| g == "segment") {
                w.json.insert("words".into(), list);
                return Ok(rendered(format, w.json));
            }
            Some(list)
        }
        false => None,
    };
    // verbose_json has segments when the model gives timestamps (OpenAI's
    // default granularity), none from a model that cannot.
    let mut out = match (format, timed) {
        (Format::VerboseJson, false) => {
            let mut timed_req = req.clone();
            timed_req.return_timestamps = Some(Timestamps::Segments);
            match call(timed_req).await {
                Err(e) if e.kind == ErrorKind::Unsupported => call(req).await?,
                other => other?,
            }
        }
        _ => call(req).await?,
    };
    if let Some(list) = word_list {
        out.json.insert("words".into(), list);
    }
    Ok(rendered(format, out.json))
}

/// The transcription answer rendered in `format`.
fn rendered(format: Format, answer: Map<String, Value>) -> Response {
    (
        [(header::CONTENT_TYPE, format.content_type())],
        transcripts::render(format, &Value::Object(answer)),
    )
        .into_response()
}
