//! Weights on the device: uploaded once per (model, weight, precision) and
//! shared by every graph; concats of weights only (fused QKV or gate/up
//! projections) folded on the host at compile time and cached the same way.

use std::sync::Arc;

use super::{convert, CudaBackend, DeviceBuffer};
use crate::ir::{DType, Graph, NodeId, Op};
use crate::model::Model;

impl CudaBackend {
    /// Uploads weight-only value `id` (a weight or a folded concat of
    /// weights, cache `key` from [`foldable`]) as `dtype`, once per model.
    pub(super) fn stored(
        &self,
        model: &Model,
        g: &Graph,
        id: NodeId,
        key: &str,
        dtype: DType,
    ) -> Result<Arc<DeviceBuffer>, String> {
        let cache = (model.root.display().to_string(), key.to_string(), dtype);
        let mut map = self
            .gpu
            .weights
            .lock()
            .map_err(|_| "weight table poisoned".to_string())?;
        if let Some(b) = map.get(&cache) {
            return Ok(b.clone());
        }
        let bytes = host_value(model, g, id, dtype)?;
        let b = Arc::new(DeviceBuffer::upload(&self.gpu.ctx, &bytes)?);
        map.insert(cache, b.clone());
        Ok(b)
    }
}

/// For each node, a cache key when it is a weight or a concat of weights
/// only (folded once on the host at compile time: fused QKV or gate/up
/// projections).
pub(super) fn foldable(g: &Graph) -> Vec<Option<String>> {
    let mut keys: Vec<Option<String>> = vec![None; g.nodes.len()];
    for (id, node) in g.nodes.iter().enumerate() {
        keys[id] = match &node.op {
            Op::Weight { name } => Some(name.clone()),
            Op::Concat { xs, axis } => xs
                .iter()
                .map(|&x| keys[x as usize].clone())
                .collect::<Option<Vec<String>>>()
                .map(|parts| format!("concat{axis}({})", parts.join(","))),
            _ => None,
        };
    }
    keys
}

/// Bytes of weight `name` as `dtype`.
fn weight_bytes(model: &Model, name: &str, dtype: DType) -> Result<Vec<u8>, String> {
    let entry = model
        .weights
        .index
        .get(name)
        .ok_or_else(|| format!("weight `{name}` is not in the model"))?;
    let bytes = model
        .weights
        .bytes(name)
        .ok_or_else(|| format!("weight `{name}` has no bytes"))?;
    Ok(convert(bytes, entry.dtype, dtype))
}

/// Bytes (as `dtype`) of a weight or a concat of weights.
fn host_value(model: &Model, g: &Graph, id: NodeId, dtype: DType) -> Result<Vec<u8>, String> {
    let node = g.node(id);
    match &node.op {
        Op::Weight { name } => weight_bytes(model, name, dtype),
        Op::Concat { xs, axis } => {
            let parts = xs
                .iter()
                .map(|&x| host_value(model, g, x, dtype))
                .collect::<Result<Vec<_>, _>>()?;
            let outer: usize = node.shape[..*axis]
                .iter()
                .map(|d| d.fixed().map(|n| n as usize))
                .product::<Option<usize>>()
                .ok_or("a folded concat needs fixed shapes")?;
            let total: usize = parts.iter().map(Vec::len).sum();
            let mut out = Vec::with_capacity(total);
            for o in 0..outer {
                for p in &parts {
                    let chunk = p.len() / outer.max(1);
                    out.extend_from_slice(&p[o * chunk..(o + 1) * chunk]);
                }
            }
            Ok(out)
        }
        other => Err(format!("cannot fold a {} node", other.kind())),
    }
}
