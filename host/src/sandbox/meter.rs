//! Resource usage of a skill instance against its limits: the store's
//! limiter wrapped to remember the largest linear memory it granted, and
//! the fuel each export call burnt. `host test` reports these next to the
//! limits.

use wasmtime::{ResourceLimiter, StoreLimits};

/// [`StoreLimits`] that remembers the largest memory size it allowed.
pub(crate) struct MeteredLimits {
    pub(crate) inner: StoreLimits,
    /// Largest size, in bytes, one linear memory was allowed to reach.
    pub(crate) peak_memory: usize,
}

impl ResourceLimiter for MeteredLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.inner.memory_growing(current, desired, maximum)?;
        if ok {
            self.peak_memory = self.peak_memory.max(desired);
        }
        Ok(ok)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// What an instance used, and what it was allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    /// Largest linear memory the instance reached, bytes.
    pub peak_memory_bytes: usize,
    /// The memory limit, bytes.
    pub memory_limit_bytes: usize,
    /// Most fuel one export call burnt.
    pub max_fuel_per_call: u64,
    /// The fuel granted per call.
    pub fuel_limit_per_call: u64,
}

impl Usage {
    /// The larger of each measure (limits taken from `other` when set).
    pub fn merge(self, other: Usage) -> Usage {
        Usage {
            peak_memory_bytes: self.peak_memory_bytes.max(other.peak_memory_bytes),
            memory_limit_bytes: self.memory_limit_bytes.max(other.memory_limit_bytes),
            max_fuel_per_call: self.max_fuel_per_call.max(other.max_fuel_per_call),
            fuel_limit_per_call: self.fuel_limit_per_call.max(other.fuel_limit_per_call),
        }
    }
}
