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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::super::builder::{BuilderLimits, GraphBuilder};
    use super::super::eval::evaluate;
    use super::*;
    use crate::tensor::Tensor;

    fn fixed(s: &[u64]) -> Vec<Dim> {
        s.iter().map(|&d| Dim::Fixed(d)).collect()
    }

    /// Operands that do not fit are refused where the op is written, naming
    /// what was expected.
    #[test]
    fn mismatched_operands_are_refused() {
        let mut g = GraphBuilder::new("t", Arc::new(HashMap::new()), BuilderLimits::default());
        let x = g.input("x", DType::F32, fixed(&[4, 3])).unwrap();
        let u = g.input("u", DType::F32, fixed(&[1, 3])).unwrap();
        let at = g.input("at", DType::I64, fixed(&[1])).unwrap();
        let wide = g.input("wide", DType::F32, fixed(&[1, 5])).unwrap();
        let tall = g.input("tall", DType::F32, fixed(&[5, 3])).unwrap();
        let ints = g.input("ints", DType::I64, fixed(&[1, 3])).unwrap();
        let at32 = g.input("at32", DType::I32, fixed(&[1])).unwrap();
        let at2 = g.input("at2", DType::I64, fixed(&[2])).unwrap();
        for (update, start, want) in [
            (wide, at, "outside axis 0"),
            (ints, at, "outside axis 0"),
            (tall, at, "more than x's 4"),
            (u, at32, "start must be i64 [1]"),
            (u, at2, "start must be i64 [1]"),
        ] {
            let e = g.write_rows(x, update, start).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let y = g.write_rows(x, u, at).unwrap();
        assert_eq!(g.get(y).unwrap().shape, fixed(&[4, 3]));
    }

    /// The reference clamps the start so that the rows fit.
    #[test]
    fn start_is_clamped() {
        let mut g = GraphBuilder::new("t", Arc::new(HashMap::new()), BuilderLimits::default());
        let x = g.input("x", DType::F32, fixed(&[4, 1])).unwrap();
        let u = g.input("u", DType::F32, fixed(&[2, 1])).unwrap();
        let at = g.input("at", DType::I64, fixed(&[1])).unwrap();
        let y = g.write_rows(x, u, at).unwrap();
        g.output("y", y).unwrap();
        let g = g.finish().unwrap();
        for (start, want) in [
            (-5i64, [7., 8., 2., 3.]),
            (1, [0., 7., 8., 3.]),
            (9, [0., 1., 7., 8.]),
        ] {
            let inputs = [
                (
                    "x".to_string(),
                    Tensor::from_f32(vec![4, 1], &[0., 1., 2., 3.]),
                ),
                ("u".to_string(), Tensor::from_f32(vec![2, 1], &[7., 8.])),
                ("at".to_string(), Tensor::from_i64(vec![1], &[start])),
            ];
            let out = evaluate(&g, &inputs, &|_| None).unwrap();
            assert_eq!(out[0].1.to_f32("y").unwrap(), want, "start {start}");
        }
    }
}
