//! Resource usage of a skill instance against its limits: the store's
//! limiter wrapped to remember the largest linear memory it granted, and
//! the fuel each export call burnt. `host test` reports these next to the
//! limits.

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// [`StoreLimits`] that remembers the largest memory size it allowed.
pub(crate) struct MeteredLimits {
    inner: StoreLimits,
    /// Largest size, in bytes, one linear memory was allowed to reach.
    pub(crate) peak_memory: usize,
}

impl MeteredLimits {
    /// Limits letting each linear memory grow to `memory_bytes`.
    pub(crate) fn new(memory_bytes: usize) -> MeteredLimits {
        MeteredLimits {
            inner: store_limits(memory_bytes),
            peak_memory: 0,
        }
    }

    /// From now on, memories may grow to `memory_bytes` only (the grant,
    /// known after `describe`). Memory already allocated stays valid: a
    /// memory above the new limit keeps its size, it just cannot grow.
    pub(crate) fn set_memory_limit(&mut self, memory_bytes: usize) {
        self.inner = store_limits(memory_bytes);
    }
}

fn store_limits(memory_bytes: usize) -> StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size(memory_bytes)
        .instances(4)
        .tables(16)
        .memories(4)
        .trap_on_grow_failure(true)
        .build()
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
    /// The memory limit granted to the instance, bytes.
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
