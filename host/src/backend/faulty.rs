//! A fault-injection device for testing fallback: it loads like `cpu` but
//! every run fails with a backend error. Only recognised where the
//! configuration enables it (`HOST_FAULT_INJECTION=1`:
//! [`crate::config::HostConfig::fault_injection`]), so it cannot be
//! selected by accident.

use std::sync::Arc;

use super::{cpu::CpuBackend, Backend, BackendError, Executable, NamedTensors, Precision};
use crate::config::BackendOptions;
use crate::ir::Graph;
use crate::model::Model;

/// Whether the environment lets the `faulty` device be named
/// (`HOST_FAULT_INJECTION`, read by
/// [`crate::config::HostConfig::from_env_lenient`]). For the one place no
/// configuration can reach: `Device`'s `FromStr`, which endpoint configs
/// (files, the admin API) deserialize with; the setting has no flag, so
/// this is what the binary's configuration says too. Everything else is
/// handed the setting ([`super::registry::parse_list_with`]).
pub fn enabled_by_env() -> bool {
    crate::config::HostConfig::from_env_lenient().fault_injection
}

/// Compiles like the CPU backend; runs always fail.
pub struct FaultyBackend {
    inner: CpuBackend,
}

impl FaultyBackend {
    pub fn new(precision: Precision, options: &BackendOptions) -> Result<Self, BackendError> {
        Ok(FaultyBackend {
            inner: CpuBackend::new(precision, options)?,
        })
    }
}

struct FaultyExecutable {
    graph: String,
}

impl Backend for FaultyBackend {
    fn device(&self) -> String {
        "faulty".into()
    }

    fn precision(&self) -> Precision {
        self.inner.precision()
    }

    fn compile(
        &self,
        graph: Arc<Graph>,
        model: &Model,
    ) -> Result<Arc<dyn Executable>, BackendError> {
        self.inner.compile(graph.clone(), model)?;
        Ok(Arc::new(FaultyExecutable {
            graph: graph.name.clone(),
        }))
    }
}

impl Executable for FaultyExecutable {
    fn run(&self, _inputs: NamedTensors) -> Result<NamedTensors, BackendError> {
        Err(BackendError::Run {
            device: "faulty".into(),
            graph: self.graph.clone(),
            message: "injected failure".into(),
        })
    }
}
