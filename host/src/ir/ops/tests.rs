//! The op table against what stays hand-written: `wit/graph.wit`'s enum
//! cases, and the table's own consistency (dtypes against the evaluator's
//! functions). The CUDA `#define`s are checked in
//! `backend/cuda/launch/source_tests.rs`.

use super::*;

/// `wit/graph.wit`: the skill author's manual and the ABI.
const WIT: &str = include_str!("../../../../wit/graph.wit");

/// The cases of `enum <name> { ... }` in `WIT`, in order.
fn wit_cases(name: &str) -> Vec<String> {
    let head = format!("enum {name} {{");
    let start = WIT
        .find(&head)
        .unwrap_or_else(|| panic!("wit/graph.wit has no `{head}`"));
    let body = &WIT[start + head.len()..];
    let end = body
        .find('}')
        .unwrap_or_else(|| panic!("`{head}` is not closed"));
    body[..end]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .map(|l| l.trim_end_matches(',').to_string())
        .collect()
}

fn assert_same(wit_enum: &str, table: Vec<&str>) {
    let wit = wit_cases(wit_enum);
    assert_eq!(
        table, wit,
        "the op table's `{wit_enum}` rows (ir/ops.rs) and wit/graph.wit's cases differ: \
         add the missing WIT case or table row, in the same order"
    );
}

#[test]
fn table_rows_are_the_wit_cases_in_order() {
    assert_same(
        "unary-op",
        UnaryOp::ALL.iter().map(|o| o.wit_name()).collect(),
    );
    assert_same(
        "binary-op",
        BinaryOp::ALL.iter().map(|o| o.wit_name()).collect(),
    );
    assert_same(
        "compare-op",
        CompareOp::ALL.iter().map(|o| o.wit_name()).collect(),
    );
    assert_same(
        "reduce-op",
        ReduceOp::ALL.iter().map(|o| o.wit_name()).collect(),
    );
}

#[test]
fn wit_case_parser_reads_doc_commented_cases() {
    let cases = wit_cases("unary-op");
    assert!(cases.contains(&"gelu-tanh".to_string()), "{cases:?}");
    assert!(cases.iter().all(|c| !c.contains(' ')), "{cases:?}");
}

/// A unary op's evaluator functions match the dtypes it takes.
#[test]
fn unary_reference_functions_match_operands() {
    for &op in UnaryOp::ALL {
        let (float, int) = (op.eval_float().is_some(), op.eval_int().is_some());
        let want = match op.operands() {
            Operands::Float => (true, false),
            Operands::Number => (true, true),
            Operands::Bool => (false, true),
        };
        assert_eq!((float, int), want, "{op:?}");
    }
}

/// Codes are distinct within a family, and `not_bool` is only for bool ops.
#[test]
fn cuda_codes_are_distinct() {
    fn distinct(codes: Vec<CudaCode>) {
        for (i, a) in codes.iter().enumerate() {
            for b in &codes[i + 1..] {
                assert!(a.value != b.value && a.define != b.define, "{a:?} {b:?}");
            }
        }
    }
    let unary = UnaryOp::ALL
        .iter()
        .filter_map(|o| match o.cuda() {
            CudaUnary::Code(c) => Some(c),
            CudaUnary::NotBool => {
                assert_eq!(o.operands(), Operands::Bool, "{o:?}");
                None
            }
        })
        .collect();
    distinct(unary);
    distinct(BinaryOp::ALL.iter().map(|o| o.cuda()).collect());
    distinct(CompareOp::ALL.iter().map(|o| o.cuda()).collect());
    distinct(ReduceOp::ALL.iter().map(|o| o.cuda()).collect());
}

#[test]
fn reference_functions() {
    let gelu = UnaryOp::Gelu.eval_float().map(|f| f(1.0));
    assert!((gelu.unwrap_or(0.0) - 0.841_344_746).abs() < 1e-6);
    assert_eq!(UnaryOp::Not.eval_int().map(|f| f(0)), Some(1));
    assert!(BinaryOp::Div.eval_int()(1, 0).is_err());
    assert!(BinaryOp::Pow.eval_int()(2, -1).is_err());
    assert_eq!(BinaryOp::Pow.eval_int()(2, 10), Ok(1024));
    assert!(CompareOp::LessOrEqual.holds(Some(Ordering::Equal)));
    assert!(!CompareOp::Equal.holds(None));
    assert_eq!(ReduceOp::Mean.eval_float()(&[1.0, 2.0]), 1.5);
    assert_eq!(ReduceOp::Min.eval_int()(&[3, -2]), -2);
    assert!(ReduceOp::Sum.empty_axis() && !ReduceOp::Max.empty_axis());
}
