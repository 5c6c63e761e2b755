//! The library's top-level error type.

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
        kind: &'static str,
        message: String,
    },
    #[error("no device in `{devices}` could serve: {reasons}")]
    NoDevice { devices: String, reasons: String },
    #[error("{0}")]
    Request(String),
}
