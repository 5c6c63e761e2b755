//! `host`: a sandboxed WebAssembly skill runner for ML inference.
//!
//! Skills are WebAssembly components (see `wit/`) that build a model's graph
//! from host-provided ops and do their task's pre- and post-processing. The
//! host loads them in a sandbox ([`sandbox`]), validates their graphs
//! ([`ir`]), compiles them for a backend ([`backend`]) and serves requests
//! ([`runner`]).

pub mod authoring;
pub mod backend;
pub mod config;
pub mod digest;
pub mod disk_cache;
pub mod endpoint;
pub mod error;
pub mod ir;
pub mod memory;
pub mod model;
pub mod onnx;
pub mod runner;
pub mod runtime_libs;
pub mod sandbox;
pub mod serve;
pub mod skills;
pub mod tensor;
pub mod tokenizer;

pub use error::{ErrorKind, HostError};
