//! Guest-side SDK for skills.
//!
//! It generates the bindings of the `skill` world (`wit/`) once, re-exports
//! the host interfaces, and adds small helpers: reading config values with
//! typed errors, tensor packing, and a [`Graph`] wrapper that names weights
//! by safetensors prefix.
//!
//! A skill crate implements [`Guest`] and exports it:
//!
//! ```ignore
//! struct MySkill;
//! impl skill_sdk::Guest for MySkill { /* describe, load, handle */ }
//! skill_sdk::export_skill!(MySkill);
//! ```

#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "skill",
        // The WIT is vendored in the crate (a copy of the workspace's `wit/`,
        // kept identical by tests/authoring.rs), so the SDK builds on its own.
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_skill",
        default_bindings_module: "skill_sdk::bindings",
    });
}

#[cfg(feature = "audio")]
pub mod audio;
#[cfg(any(feature = "image", feature = "audio"))]
pub mod binary;
pub mod config;
pub mod encoder;
#[cfg(feature = "generation")]
pub mod generation;
pub mod graph_ext;
#[cfg(feature = "image")]
pub mod image;
pub mod requests;
pub mod scores;
pub mod seq2seq;
pub mod special_tokens;
pub mod state;
pub mod tensors;
pub mod vision;

pub use bindings::accel::skill::api::{ResourceNeeds, Response, SkillInfo};
pub use bindings::accel::skill::types::{Dim, Dtype, Error, NamedTensor, Tensor};
pub use bindings::accel::skill::{graph, log, model, partial, runtime, tokenizer};
pub use bindings::export_skill;
pub use bindings::Guest;
pub use graph_ext::Graph;

/// Logs at info level.
pub fn info(msg: &str) {
    log::log(log::Level::Info, msg);
}

/// An `invalid-request` error.
pub fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidRequest(msg.into())
}

/// An `internal` error.
pub fn internal(msg: impl Into<String>) -> Error {
    Error::Internal(msg.into())
}
