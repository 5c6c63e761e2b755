//! Admin routes: list, add and remove endpoints at run time (behind the
//! admin key; models and skills admitted by [`super::confine`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::api::json_body;
use super::{ApiError, AppState};
use crate::endpoint::{EndpointConfig, EndpointError};
use crate::ErrorKind;

fn map(e: EndpointError, roots: &super::confine::ModelRoots) -> ApiError {
    let status = match &e {
        EndpointError::Exists(_) => StatusCode::CONFLICT,
        EndpointError::Unknown(_) => StatusCode::NOT_FOUND,
        EndpointError::Config { .. } => StatusCode::BAD_REQUEST,
        EndpointError::Load { .. } => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::with_status(status, ErrorKind::Endpoint, roots.redact(&e.to_string()))
}

/// `GET /admin/endpoints`.
pub(super) async fn list(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(super::api::public_status(&state)).into_response()
}

/// `POST /admin/endpoints` with one endpoint config.
pub(super) async fn add(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let v = json_body(body)?;
    let config: EndpointConfig = serde_json::from_value(v).map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidRequest,
            format!("invalid endpoint config: {e}"),
        )
    })?;
    let config = state
        .model_roots
        .admit(config)
        .map_err(|e| ApiError::new(ErrorKind::InvalidRequest, e.to_string()))?;
    let name = config.name.clone();
    state
        .endpoints
        .add(config)
        .await
        .map_err(|e| map(e, &state.model_roots))?;
    let status = super::api::public_status(&state)
        .into_iter()
        .find(|s| s.name == name);
    Ok((StatusCode::CREATED, axum::Json(status)).into_response())
}

/// `DELETE /admin/endpoints/{name}`: drains, then frees the endpoint.
pub(super) async fn remove(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state
        .endpoints
        .remove(&name)
        .await
        .map_err(|e| map(e, &state.model_roots))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
