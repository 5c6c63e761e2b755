//! Which IR ops the op cases exercise: every `Op` variant
//! (`OpKind::ALL`, kept complete by an exhaustive match in the host), and
//! the element-wise and reduction families op by op (the `ALL` lists of
//! the op table, `host/src/ir/ops.rs`).

use super::OpCase;
use host::ir::{BinaryOp, CompareOp, Op, OpKind, ReduceOp, UnaryOp};

/// What a node exercises: the op of a table family (`unary/gelu`), else
/// its kind (`Attention`).
pub fn op_key(op: &Op) -> String {
    match op {
        Op::Unary(o, _) => format!("unary/{}", o.wit_name()),
        Op::Binary(o, ..) => format!("binary/{}", o.wit_name()),
        Op::Compare(o, ..) => format!("compare/{}", o.wit_name()),
        Op::Reduce { op: o, .. } => format!("reduce/{}", o.wit_name()),
        other => format!("{:?}", other.op_kind()),
    }
}

/// Every key an op case must exercise.
pub fn required() -> Vec<String> {
    fn each<T: Copy>(family: &str, all: &[T], wit: fn(T) -> &'static str) -> Vec<String> {
        all.iter()
            .map(|&o| format!("{family}/{}", wit(o)))
            .collect()
    }
    OpKind::ALL
        .iter()
        .flat_map(|&k| match k {
            OpKind::Unary => each("unary", UnaryOp::ALL, UnaryOp::wit_name),
            OpKind::Binary => each("binary", BinaryOp::ALL, BinaryOp::wit_name),
            OpKind::Compare => each("compare", CompareOp::ALL, CompareOp::wit_name),
            OpKind::Reduce => each("reduce", ReduceOp::ALL, ReduceOp::wit_name),
            other => vec![format!("{other:?}")],
        })
        .collect()
}

/// The required keys that none of `cases` exercises.
pub fn uncovered(cases: &[&OpCase]) -> Vec<String> {
    let covered: std::collections::HashSet<String> = cases
        .iter()
        .flat_map(|c| c.graph.nodes.iter().map(|n| op_key(&n.op)))
        .collect();
    required()
        .into_iter()
        .filter(|k| !covered.contains(k))
        .collect()
}
