//! Who may call what: API keys for the inference routes, admin keys for
//! the admin routes (`Authorization: Bearer KEY`, as OpenAI clients, TEI
//! and vLLM send it).
//!
//! - Inference routes (`/v1/*`, the TEI routes, `/v1/endpoints/{name}`) are
//!   open when no API key is configured; otherwise they need one of the API
//!   keys (an admin key is accepted too).
//! - Admin routes (`/admin/*`) are off (403) unless an admin key is
//!   configured, and then need an admin key: an API key is not enough.
//! - `/health` and `/metrics` stay open for probes and scrapers; they show
//!   no filesystem paths.
//!
//! Keys are compared in constant time (SHA-256 digests compared with
//! `subtle`), every configured key checked, so neither timing nor length
//! tells an attacker how close a guess was.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::ErrorKind;

/// A configured key set is unusable.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{what} #{index} is empty")]
    Empty { what: &'static str, index: usize },
    #[error("{what} #{index} contains whitespace or control characters (it could not be sent in an Authorization header)")]
    Unprintable { what: &'static str, index: usize },
    #[error("{what} #{index} is shorter than {min} characters")]
    Short {
        what: &'static str,
        index: usize,
        min: usize,
    },
}

/// Shortest key accepted: guessing must not be practical.
pub const MIN_KEY_CHARS: usize = 16;

/// The keys of a server: digests only, never the keys themselves.
#[derive(Clone, Default)]
pub struct Keys {
    inference: Vec<[u8; 32]>,
    admin: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("inference", &self.inference.len())
            .field("admin", &self.admin.len())
            .finish()
    }
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

fn checked(what: &'static str, keys: &[String]) -> Result<Vec<[u8; 32]>, KeyError> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let index = i + 1;
            if k.is_empty() {
                return Err(KeyError::Empty { what, index });
            }
            if k.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(KeyError::Unprintable { what, index });
            }
            if k.chars().count() < MIN_KEY_CHARS {
                return Err(KeyError::Short {
                    what,
                    index,
                    min: MIN_KEY_CHARS,
                });
            }
            Ok(digest(k.as_bytes()))
        })
        .collect()
}

impl Keys {
    /// Validated key sets (each key printable, at least [`MIN_KEY_CHARS`]).
    pub fn new(inference: &[String], admin: &[String]) -> Result<Keys, KeyError> {
        Ok(Keys {
            inference: checked("API key", inference)?,
            admin: checked("admin key", admin)?,
        })
    }

    /// Whether inference routes need a key.
    pub fn inference_required(&self) -> bool {
        !self.inference.is_empty()
    }

    /// Whether the admin routes are on.
    pub fn admin_enabled(&self) -> bool {
        !self.admin.is_empty()
    }

    fn matches(set: &[[u8; 32]], presented: &[u8]) -> bool {
        let d = digest(presented);
        // Check every key: the time does not depend on which one matched.
        set.iter()
            .fold(subtle::Choice::from(0u8), |acc, k| acc | k.ct_eq(&d))
            .into()
    }
}

/// The bearer token of a request, if it sent one.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn unauthorized(message: &str) -> Response {
    let mut r = ApiError::new(ErrorKind::Unauthorized, message).into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Middleware of the inference routes.
pub(super) async fn inference(State(keys): State<Arc<Keys>>, req: Request, next: Next) -> Response {
    if !keys.inference_required() {
        return next.run(req).await;
    }
    match bearer(req.headers()) {
        Some(t) if Keys::matches(&keys.inference, t) || Keys::matches(&keys.admin, t) => {
            next.run(req).await
        }
        Some(_) => unauthorized("invalid API key"),
        None => unauthorized("this server needs an API key: send `Authorization: Bearer KEY`"),
    }
}

/// Middleware of the admin routes.
pub(super) async fn admin(State(keys): State<Arc<Keys>>, req: Request, next: Next) -> Response {
    if !keys.admin_enabled() {
        return ApiError::new(ErrorKind::Forbidden, "the admin routes are off: start `host serve` with an admin key (--admin-key-file or HOST_ADMIN_KEY) to use them",
        )
        .into_response();
    }
    match bearer(req.headers()) {
        Some(t) if Keys::matches(&keys.admin, t) => next.run(req).await,
        Some(_) => unauthorized("invalid admin key (API keys do not open the admin routes)"),
        None => {
            unauthorized("the admin routes need an admin key: send `Authorization: Bearer KEY`")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        assert!(Keys::new(&["short".into()], &[]).is_err());
        assert!(Keys::new(&["has a space in it ok".into()], &[]).is_err());
        assert!(Keys::new(&[String::new()], &[]).is_err());
        let k = Keys::new(&["0123456789abcdef".into()], &[]).unwrap();
        assert!(k.inference_required() && !k.admin_enabled());
    }

    #[test]
    fn only_configured_keys_match() {
        let k = Keys::new(
            &["inference-key-0001".into()],
            &["admin-key-000000001".into()],
        )
        .unwrap();
        assert!(Keys::matches(&k.inference, b"inference-key-0001"));
        assert!(!Keys::matches(&k.inference, b"inference-key-0002"));
        assert!(!Keys::matches(&k.admin, b"inference-key-0001"));
        assert!(Keys::matches(&k.admin, b"admin-key-000000001"));
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert_eq!(bearer(&h), None);
    }
}
