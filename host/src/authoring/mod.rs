//! Skill authoring and sandboxed testing.
//!
//! - [`new`]: `host new NAME --task TASK` writes a standalone skill crate
//!   (Cargo.toml, `src/lib.rs` for the task's contract, `tests/cases.jsonl`,
//!   README) that builds for `wasm32-wasip2` outside this repository.
//! - [`test`]: `host test SKILL --model DIR` runs a skill's cases
//!   ([`cases`], compared by [`compare`]) in the sandbox, plus the
//!   [`conformance`] checks every skill must pass (those on a loaded skill
//!   in `checks.rs`), and reports them
//!   ([`report`]: a table, JSON, JUnit XML) with an exit code for CI;
//!   `--record` writes the expectations from a trusted run.
//! - [`cli`]: the command-line arguments of both.

pub mod cases;
mod checks;
pub mod cli;
pub mod compare;
pub mod conformance;
pub mod new;
pub mod report;
pub mod test;

/// Why `host new` or `host test` could not do its job (as opposed to a
/// skill failing its tests, which is a [`report::Report`]).
#[derive(Debug, thiserror::Error)]
pub enum AuthoringError {
    #[error("{path}: {message}")]
    Cases { path: String, message: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Host(Box<crate::HostError>),
    #[error("{0}")]
    Usage(String),
}

impl From<crate::HostError> for AuthoringError {
    fn from(e: crate::HostError) -> Self {
        AuthoringError::Host(Box::new(e))
    }
}

impl AuthoringError {
    pub(crate) fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        AuthoringError::Io {
            what,
            path: path.display().to_string(),
            source,
        }
    }
}
