//! The `write-rows` op: rows of a tensor replaced at a run-time index (a
//! decode step's keys written into a fixed-slot KV cache without copying
//! the cache).

use super::builder::{GraphBuilder, R};
use super::shape::same_dim;
use super::{shape_str, DType, Dim, NodeId, Op};

impl GraphBuilder {
    /// `x` with rows `start..start + rows(update)` of axis 0 replaced by
    /// `update` (same dtype, rank and trailing axes; never more rows than
    /// `x`). `start` is an i64 `[1]`, clamped at run time to
    /// `[0, rows(x) - rows(update)]`.
    pub fn write_rows(&mut self, x: NodeId, update: NodeId, start: NodeId) -> R {
        const OP: &str = "write-rows";
        let (nx, nu, ns) = (
            self.get(x)?.clone(),
            self.get(update)?.clone(),
            self.get(start)?.clone(),
        );
        if ns.dtype != DType::I64 || ns.shape != [Dim::Fixed(1)] {
            return Err(self.err(
                OP,
                format!(
                    "start must be i64 [1], got {} {}",
                    ns.dtype,
                    shape_str(&ns.shape)
                ),
            ));
        }
        let same_rest = nx.shape.len() == nu.shape.len()
            && nx
                .shape
                .iter()
                .zip(&nu.shape)
                .skip(1)
                .all(|(a, b)| same_dim(a, b));
        if nx.dtype != nu.dtype || nx.shape.is_empty() || !same_rest {
            return Err(self.err(
                OP,
                format!(
                    "update must match x ({} {}) outside axis 0, got {} {}",
                    nx.dtype,
                    shape_str(&nx.shape),
                    nu.dtype,
                    shape_str(&nu.shape)
                ),
            ));
        }
        if let (Dim::Fixed(rx), Dim::Fixed(ru)) = (&nx.shape[0], &nu.shape[0]) {
            if ru > rx {
                return Err(self.err(OP, format!("update has {ru} rows, more than x's {rx}")));
            }
        }
        self.push(Op::WriteRows { x, update, start }, nx.dtype, nx.shape)
    }
}
