//! `host serve`: the endpoint layer over HTTP (axum).
//!
//! Routes: OpenAI-compatible `POST /v1/embeddings`, `POST /v1/completions`
//! and `POST /v1/chat/completions` (the model's chat template rendered by the
//! host; `stream: true` as server-sent events), TEI-compatible
//! `POST /embed`, `POST /` (by task), `/similarity`, `/tokenize`, `/decode`,
//! `GET /info`, `POST /rerank` and `POST /predict` (on a
//! text-classification endpoint), a generic `POST /v1/endpoints/{name}` (any skill, the CLI's
//! response format), `GET /health`, `GET /metrics` (Prometheus), and admin
//! routes `GET|POST /admin/endpoints`, `DELETE /admin/endpoints/{name}`.
//! Access ([`auth`]): API keys on the inference routes, admin keys on the
//! admin routes (off without one), admin-added models confined to model
//! roots ([`confine`]). Limits: request body size and read time, header
//! read time (idle keep-alive included), concurrent requests (beyond: 429
//! with `Retry-After`), and each endpoint's queue (beyond: 429). Shutdown
//! on SIGINT/SIGTERM stops accepting, gives in-flight requests a deadline,
//! then drains the endpoints ([`listen`]).

mod admin;
mod api;
pub mod auth;
mod chat;
mod chat_template;
mod completions;
pub mod confine;
mod forms;
pub mod listen;
mod model_files;
mod tei;
mod tei_text;
mod transcripts;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{middleware, Router};
use tokio::sync::Semaphore;

use crate::endpoint::Endpoints;
use crate::runner::RequestError;
use crate::ErrorKind;
use auth::Keys;
use confine::ModelRoots;
use listen::Timeouts;

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    /// Requests served at once; more get 429.
    pub max_concurrent_requests: usize,
    /// Largest request body, bytes; larger gets 413.
    pub max_body_bytes: usize,
    /// Endpoint used when a request names none (`model` / `?endpoint=`).
    pub default_endpoint: Option<String>,
    /// API and admin keys.
    pub keys: Keys,
    /// Where admin-added models may come from.
    pub model_roots: ModelRoots,
    pub timeouts: Timeouts,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_concurrent_requests: 512,
            max_body_bytes: 32 << 20,
            default_endpoint: None,
            keys: Keys::default(),
            model_roots: ModelRoots::default(),
            timeouts: Timeouts::default(),
        }
    }
}

/// Shared state of the handlers.
pub struct AppState {
    pub endpoints: Arc<Endpoints>,
    permits: Arc<Semaphore>,
    default_endpoint: Option<String>,
    /// Chat templates and tokenizers of the endpoints' models.
    model_files: model_files::Cache,
    model_roots: ModelRoots,
}

impl AppState {
    /// The endpoint a request means: the one it names, the configured
    /// default, or the only one.
    fn pick(&self, named: Option<&str>) -> Result<crate::endpoint::Handler, ApiError> {
        let name = match named
            .filter(|n| !n.is_empty())
            .or(self.default_endpoint.as_deref())
        {
            Some(n) => n.to_string(),
            None => {
                let names = self.endpoints.names();
                match names.as_slice() {
                    [one] => one.clone(),
                    [] => {
                        return Err(ApiError::new(
                            ErrorKind::Unavailable,
                            "no endpoints are loaded",
                        ))
                    }
                    _ => {
                        return Err(ApiError::new(
                            ErrorKind::InvalidRequest,
                            format!(
                                "several endpoints are loaded ({}); name one with `model`",
                                names.join(", ")
                            ),
                        ))
                    }
                }
            }
        };
        self.endpoints.handler(&name).ok_or_else(|| {
            ApiError::new(
                ErrorKind::UnknownEndpoint,
                format!(
                    "unknown endpoint `{name}`; loaded: {}",
                    self.endpoints.names().join(", ")
                ),
            )
        })
    }

    fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                ErrorKind::Overloaded,
                "too many concurrent requests; retry later",
            )
        })
    }
}

/// An error response in OpenAI's shape: `{"error": {"message", "type",
/// "param", "code"}}` with the kind's OpenAI `type` and the kind itself
/// (`overloaded`, `unsupported`, ...) as `code`; the status is the kind's
/// ([`ErrorKind::http_status`]) unless set otherwise. The TEI routes
/// reshape it to TEI's `{"error", "error_type"}` ([`tei::reshape`]).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: ErrorKind,
    message: String,
}

impl ApiError {
    /// An error of `kind`, with the kind's status.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::with_status(kind.http_status(), kind, message)
    }

    /// An error of `kind` with a status of its own (a body the transport
    /// refused, an admin operation's cause).
    pub fn with_status(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        ApiError::new(e.kind, e.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": {
            "message": self.message, "type": self.kind.openai_type(), "param": null, "code": self.kind,
        } });
        let mut r = (self.status, axum::Json(body)).into_response();
        // Overload and unavailability pass: say when to come back.
        if self.kind.retry_later() {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// The router over `endpoints`.
pub fn router(endpoints: Arc<Endpoints>, opts: &ServeOptions) -> Router {
    let trim_memory = endpoints.config().trim_memory;
    let hub_offline = endpoints.config().hub_offline;
    let state = Arc::new(AppState {
        endpoints,
        permits: Arc::new(Semaphore::new(opts.max_concurrent_requests.max(1))),
        default_endpoint: opts.default_endpoint.clone(),
        model_files: model_files::Cache::new(hub_offline),
        model_roots: opts.model_roots.clone(),
    });
    let keys = Arc::new(opts.keys.clone());
    let tei_routes = Router::new()
        .route("/", post(tei_text::root))
        .route("/embed", post(tei_text::embed))
        .route("/embed_all", post(tei_text::embed_all_route))
        .route("/similarity", post(tei_text::similarity))
        .route("/tokenize", post(tei_text::tokenize))
        .route("/decode", post(tei_text::decode))
        .route("/info", get(tei_text::info))
        .route("/rerank", post(tei::rerank))
        .route("/predict", post(tei::predict))
        .route_layer(middleware::from_fn(tei::reshape));
    let inference = Router::new()
        .merge(tei_routes)
        .route("/v1/embeddings", post(api::openai_embeddings))
        .route("/v1/completions", post(completions::openai_completions))
        .route("/v1/chat/completions", post(chat::openai_chat))
        .route("/v1/models", get(api::openai_models))
        .route("/v1/audio/transcriptions", post(forms::transcriptions))
        .route("/v1/endpoints/{name}", post(api::generic))
        .route_layer(middleware::from_fn_with_state(
            keys.clone(),
            auth::inference,
        ));
    let admin = Router::new()
        .route("/admin/endpoints", get(admin::list).post(admin::add))
        .route("/admin/endpoints/{name}", delete(admin::remove))
        .route_layer(middleware::from_fn_with_state(keys, auth::admin));
    let metrics = state.endpoints.metrics.clone();
    let read = listen::BodyRead {
        timeout: opts.timeouts.body,
        max_bytes: opts.max_body_bytes,
        trim_memory,
    };
    Router::new()
        .merge(inference)
        .merge(admin)
        .route("/health", get(api::health))
        .route("/metrics", get(api::metrics))
        .fallback(|| async { ApiError::new(ErrorKind::NotFound, "no such route") })
        .layer(DefaultBodyLimit::max(opts.max_body_bytes))
        .layer(middleware::from_fn_with_state(read, listen::read_body))
        .layer(middleware::from_fn_with_state(metrics, count_status))
        .layer(middleware::from_fn(trace_http))
        .with_state(state)
}

/// Longest `x-request-id` a span records.
const MAX_REQUEST_ID: usize = 128;

/// Runs each HTTP request in an `http` span (method, path, and the
/// client's `x-request-id` when it sends one): the endpoints' `request`
/// spans open inside it. Its fields are only read when the span is on.
async fn trace_http(req: axum::extract::Request, next: middleware::Next) -> Response {
    let span = tracing::debug_span!(
        "http",
        method = %req.method(),
        path = req.uri().path(),
        request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= MAX_REQUEST_ID),
    );
    tracing::Instrument::instrument(next.run(req), span).await
}

/// Counts every response by status (`host_http_responses_total`).
async fn count_status(
    axum::extract::State(metrics): axum::extract::State<Arc<crate::endpoint::Metrics>>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let r = next.run(req).await;
    metrics
        .http_responses
        .with_label_values(&[r.status().as_str()])
        .inc();
    r
}

/// Serves until SIGINT/SIGTERM, then finishes in-flight requests and drains
/// every endpoint. `ready` receives the bound address.
pub async fn serve(
    endpoints: Arc<Endpoints>,
    opts: ServeOptions,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.addr).await?;
    let addr = listener.local_addr()?;
    tracing::info!(
        "host serve: listening on http://{addr} (endpoints: {})",
        endpoints.names().join(", ")
    );
    if !addr.ip().is_loopback() && !opts.keys.inference_required() {
        tracing::warn!(
            "host serve: WARNING: listening on {addr}, reachable from other machines, WITHOUT an API key: \
             anyone who can reach this port can use every endpoint. Set --api-key-file or HOST_API_KEY."
        );
    }
    if let Some(r) = ready {
        let _ = r.send(addr);
    }
    let app = router(endpoints.clone(), &opts);
    let deadline = listen::serve_connections(listener, app, opts.timeouts, shutdown_signal()).await;
    tracing::info!("host serve: shutting down, draining endpoints");
    // Whatever is left of the deadline, and a second to free the devices.
    let drain = deadline.max(tokio::time::Instant::now() + std::time::Duration::from_secs(1));
    if tokio::time::timeout_at(drain, endpoints.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("host serve: endpoints still busy after the shutdown deadline; exiting");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
