//! The library's error types: [`HostError`] (what stops the host from
//! serving) and [`ErrorKind`], the stable kind of one request's failure,
//! mapped here, once, to what clients see of it (HTTP status, OpenAI
//! error `type`).

use axum::http::StatusCode;

use crate::backend::BackendError;
use crate::model::ModelError;
use crate::sandbox::SandboxError;

/// Everything that can stop the host from serving a request.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("skill `{name}` not found; looked for {file} in: {searched}. Build skills with `scripts/setup.sh` or pass a path to a .wasm component")]
    SkillNotFound {
        name: String,
        file: String,
        searched: String,
    },
    #[error("skill `{skill}` failed to load model `{model}`: {kind}: {message}")]
    SkillLoad {
        skill: String,
        model: String,
        kind: ErrorKind,
        message: String,
    },
    #[error("no device in `{devices}` could serve: {reasons}")]
    NoDevice { devices: String, reasons: String },
    #[error("cannot start a worker thread: {source}")]
    WorkerThread {
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Request(String),
}

/// The kind of a failure, as clients see it: `kind` of a `host run` error
/// line, `code` of an HTTP error (`type` on a stream and in the generic
/// route's lists). Serialized as the kebab-case names below, which are part
/// of the wire format.
///
/// | kind | raised by | HTTP status | OpenAI `type` |
/// |---|---|---|---|
/// | `invalid-request` | skill, host | 400 | `invalid_request_error` |
/// | `unsupported` | skill, host | 400 | `invalid_request_error` |
/// | `model` | skill | 500 | `server_error` |
/// | `graph` | skill | 500 | `server_error` |
/// | `backend` | skill, endpoint | 500 | `server_error` |
/// | `resource-exhausted` | skill, sandbox | 500 | `server_error` |
/// | `internal` | skill, host | 500 | `server_error` |
/// | `overloaded` | endpoint, server | 429 | `rate_limit_error` |
/// | `unavailable` | endpoint, server | 503 | `server_error` |
/// | `unauthorized` | server | 401 | `authentication_error` |
/// | `forbidden` | server | 403 | `permission_error` |
/// | `not-found`, `unknown-endpoint` | server | 404 | `invalid_request_error` |
/// | `request-timeout` | server | 408 | `timeout_error` |
/// | `payload-too-large` | server | 413 | `invalid_request_error` |
/// | `endpoint` | admin routes | 400 (409, 404, 422 by cause) | `invalid_request_error` |
///
/// `host run` and `host bench` exit 1 when any request failed, whatever
/// its kind (2 when the command itself failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The request is malformed or out of range (the client's fault).
    InvalidRequest,
    /// The model's files are missing or wrong for the skill.
    Model,
    /// A valid request this skill or model cannot serve.
    Unsupported,
    /// The skill built an invalid graph.
    Graph,
    /// The device or its runtime failed (retried on another replica or
    /// device when the whole batch failed).
    Backend,
    /// The sandbox's memory or CPU budget ran out (the instance is replaced).
    ResourceExhausted,
    /// A bug, in the skill or the host.
    Internal,
    /// The endpoint's queue or the server's concurrency limit is full.
    Overloaded,
    /// No replica can serve now (loading, quarantined, shut down).
    Unavailable,
    /// No or a wrong API key.
    Unauthorized,
    /// The admin routes are off.
    Forbidden,
    /// No such route.
    NotFound,
    /// No endpoint of that name.
    UnknownEndpoint,
    /// The request body did not arrive in time.
    RequestTimeout,
    /// The request body is over the size limit.
    PayloadTooLarge,
    /// An admin operation on endpoints failed (its status says why).
    Endpoint,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 16] = [
        ErrorKind::InvalidRequest,
        ErrorKind::Model,
        ErrorKind::Unsupported,
        ErrorKind::Graph,
        ErrorKind::Backend,
        ErrorKind::ResourceExhausted,
        ErrorKind::Internal,
        ErrorKind::Overloaded,
        ErrorKind::Unavailable,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::UnknownEndpoint,
        ErrorKind::RequestTimeout,
        ErrorKind::PayloadTooLarge,
        ErrorKind::Endpoint,
    ];

    /// The kind's wire name (`invalid-request`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid-request",
            ErrorKind::Model => "model",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Graph => "graph",
            ErrorKind::Backend => "backend",
            ErrorKind::ResourceExhausted => "resource-exhausted",
            ErrorKind::Internal => "internal",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not-found",
            ErrorKind::UnknownEndpoint => "unknown-endpoint",
            ErrorKind::RequestTimeout => "request-timeout",
            ErrorKind::PayloadTooLarge => "payload-too-large",
            ErrorKind::Endpoint => "endpoint",
        }
    }

    /// The HTTP status of an error of this kind.
    pub const fn http_status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::Unsupported | ErrorKind::Endpoint => {
                StatusCode::BAD_REQUEST
            }
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound | ErrorKind::UnknownEndpoint => StatusCode::NOT_FOUND,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Model
            | ErrorKind::Graph
            | ErrorKind::Backend
            | ErrorKind::ResourceExhausted
            | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's error `type` for this kind (clients branch on the status;
    /// the `code` carries the kind itself).
    pub const fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::Unauthorized => "authentication_error",
            ErrorKind::Forbidden => "permission_error",
            ErrorKind::RequestTimeout => "timeout_error",
            ErrorKind::Overloaded => "rate_limit_error",
            ErrorKind::Model
            | ErrorKind::Graph
            | ErrorKind::Backend
            | ErrorKind::ResourceExhausted
            | ErrorKind::Internal
            | ErrorKind::Unavailable => "server_error",
            ErrorKind::InvalidRequest
            | ErrorKind::Unsupported
            | ErrorKind::NotFound
            | ErrorKind::UnknownEndpoint
            | ErrorKind::PayloadTooLarge
            | ErrorKind::Endpoint => "invalid_request_error",
        }
    }

    /// Whether the client should come back later (`Retry-After`).
    pub const fn retry_later(self) -> bool {
        matches!(self, ErrorKind::Overloaded | ErrorKind::Unavailable)
    }

    /// Whether the request itself is at fault: the typed answers a skill
    /// must give to a bad request.
    pub const fn is_bad_request(self) -> bool {
        matches!(self, ErrorKind::InvalidRequest | ErrorKind::Unsupported)
    }

    /// Whether the device, not the skill or the request, failed: loading
    /// tries the next device, a batch failing whole is retried elsewhere.
    pub const fn is_device_failure(self) -> bool {
        matches!(self, ErrorKind::Backend | ErrorKind::ResourceExhausted)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no [`ErrorKind`].
#[derive(Debug, thiserror::Error)]
#[error("unknown error kind `{0}`")]
pub struct UnknownErrorKind(pub String);

impl std::str::FromStr for ErrorKind {
    type Err = UnknownErrorKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownErrorKind(s.to_string()))
    }
}

/// Compares with a wire name (`kind == "unsupported"` in tests).
impl PartialEq<&str> for ErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for ErrorKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_uses_the_wire_names() {
        for k in ErrorKind::ALL {
            let json = serde_json::to_string(&k).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            let back: ErrorKind = serde_json::from_str(&json).unwrap_or(ErrorKind::Internal);
            assert_eq!(back, k);
            assert_eq!(k.as_str().parse::<ErrorKind>().ok(), Some(k));
        }
        assert!("nope".parse::<ErrorKind>().is_err());
    }

    /// The OpenAI type follows the status as OpenAI's clients expect.
    #[test]
    fn openai_type_follows_the_status() {
        for k in ErrorKind::ALL {
            let by_status = match k.http_status().as_u16() {
                401 => "authentication_error",
                403 => "permission_error",
                408 => "timeout_error",
                429 => "rate_limit_error",
                s if s >= 500 => "server_error",
                _ => "invalid_request_error",
            };
            assert_eq!(k.openai_type(), by_status, "{k}");
            assert_eq!(
                k.retry_later(),
                matches!(k.http_status().as_u16(), 429 | 503),
                "{k}"
            );
        }
    }
}
