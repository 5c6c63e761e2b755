//! Op codes the kernels switch on, as explicit discriminants: each equals
//! a `#define` in `kernels/base.cu` (`UN_*`, `BIN_*`, `CMP_*`, `RED_*`,
//! `ACT_NONE`), which `source_tests.rs` checks, so reordering the IR's
//! enums changes nothing on the device.

use crate::ir::{BinaryOp, CompareOp, ReduceOp, UnaryOp};

/// "No activation" for the kernels that take an optional unary epilogue
/// (`bias_add`, `gemv*`).
pub const ACT_NONE: i32 = -1;

/// A float or integer unary op (`un_f` / `un_i` in kernels/base.cu). The
/// IR's `Not` has no code: it runs as its own kernel (`not_bool`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryCode {
    Neg = 0,
    Abs = 1,
    Exp = 2,
    Log = 3,
    Sqrt = 4,
    Rsqrt = 5,
    Reciprocal = 6,
    Tanh = 7,
    Sigmoid = 8,
    Relu = 9,
    Gelu = 10,
    GeluTanh = 11,
    Silu = 12,
    Erf = 13,
    Sin = 15,
    Cos = 16,
}

impl UnaryCode {
    /// Every code with its `#define` in kernels/base.cu.
    pub const ALL: [(UnaryCode, &'static str); 16] = [
        (UnaryCode::Neg, "UN_NEG"),
        (UnaryCode::Abs, "UN_ABS"),
        (UnaryCode::Exp, "UN_EXP"),
        (UnaryCode::Log, "UN_LOG"),
        (UnaryCode::Sqrt, "UN_SQRT"),
        (UnaryCode::Rsqrt, "UN_RSQRT"),
        (UnaryCode::Reciprocal, "UN_RECIPROCAL"),
        (UnaryCode::Tanh, "UN_TANH"),
        (UnaryCode::Sigmoid, "UN_SIGMOID"),
        (UnaryCode::Relu, "UN_RELU"),
        (UnaryCode::Gelu, "UN_GELU"),
        (UnaryCode::GeluTanh, "UN_GELU_TANH"),
        (UnaryCode::Silu, "UN_SILU"),
        (UnaryCode::Erf, "UN_ERF"),
        (UnaryCode::Sin, "UN_SIN"),
        (UnaryCode::Cos, "UN_COS"),
    ];

    /// The code of `op`; `None` for `Not` (see [`UnaryCode`]).
    pub fn of(op: UnaryOp) -> Option<UnaryCode> {
        Some(match op {
            UnaryOp::Neg => UnaryCode::Neg,
            UnaryOp::Abs => UnaryCode::Abs,
            UnaryOp::Exp => UnaryCode::Exp,
            UnaryOp::Log => UnaryCode::Log,
            UnaryOp::Sqrt => UnaryCode::Sqrt,
            UnaryOp::Rsqrt => UnaryCode::Rsqrt,
            UnaryOp::Reciprocal => UnaryCode::Reciprocal,
            UnaryOp::Tanh => UnaryCode::Tanh,
            UnaryOp::Sigmoid => UnaryCode::Sigmoid,
            UnaryOp::Relu => UnaryCode::Relu,
            UnaryOp::Gelu => UnaryCode::Gelu,
            UnaryOp::GeluTanh => UnaryCode::GeluTanh,
            UnaryOp::Silu => UnaryCode::Silu,
            UnaryOp::Erf => UnaryCode::Erf,
            UnaryOp::Not => return None,
            UnaryOp::Sin => UnaryCode::Sin,
            UnaryOp::Cos => UnaryCode::Cos,
        })
    }
}

/// A binary op (`bin` in kernels/base.cu).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryCode {
    Add = 0,
    Sub = 1,
    Mul = 2,
    Div = 3,
    Pow = 4,
    Max = 5,
    Min = 6,
}

impl BinaryCode {
    /// Every code with its `#define` in kernels/base.cu.
    pub const ALL: [(BinaryCode, &'static str); 7] = [
        (BinaryCode::Add, "BIN_ADD"),
        (BinaryCode::Sub, "BIN_SUB"),
        (BinaryCode::Mul, "BIN_MUL"),
        (BinaryCode::Div, "BIN_DIV"),
        (BinaryCode::Pow, "BIN_POW"),
        (BinaryCode::Max, "BIN_MAX"),
        (BinaryCode::Min, "BIN_MIN"),
    ];
}

impl From<BinaryOp> for BinaryCode {
    fn from(op: BinaryOp) -> Self {
        match op {
            BinaryOp::Add => BinaryCode::Add,
            BinaryOp::Sub => BinaryCode::Sub,
            BinaryOp::Mul => BinaryCode::Mul,
            BinaryOp::Div => BinaryCode::Div,
            BinaryOp::Pow => BinaryCode::Pow,
            BinaryOp::Maximum => BinaryCode::Max,
            BinaryOp::Minimum => BinaryCode::Min,
        }
    }
}

/// A comparison (`cmp` in kernels/base.cu).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareCode {
    Eq = 0,
    Lt = 1,
    Le = 2,
    Gt = 3,
    Ge = 4,
}

impl CompareCode {
    /// Every code with its `#define` in kernels/base.cu.
    pub const ALL: [(CompareCode, &'static str); 5] = [
        (CompareCode::Eq, "CMP_EQ"),
        (CompareCode::Lt, "CMP_LT"),
        (CompareCode::Le, "CMP_LE"),
        (CompareCode::Gt, "CMP_GT"),
        (CompareCode::Ge, "CMP_GE"),
    ];
}

impl From<CompareOp> for CompareCode {
    fn from(op: CompareOp) -> Self {
        match op {
            CompareOp::Equal => CompareCode::Eq,
            CompareOp::Less => CompareCode::Lt,
            CompareOp::LessOrEqual => CompareCode::Le,
            CompareOp::Greater => CompareCode::Gt,
            CompareOp::GreaterOrEqual => CompareCode::Ge,
        }
    }
}

/// A reduction (`reduce_float_t` / `reduce_int_t` in kernels/norm.cu).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceCode {
    Sum = 0,
    Mean = 1,
    Max = 2,
    Min = 3,
}

impl ReduceCode {
    /// Every code with its `#define` in kernels/base.cu.
    pub const ALL: [(ReduceCode, &'static str); 4] = [
        (ReduceCode::Sum, "RED_SUM"),
        (ReduceCode::Mean, "RED_MEAN"),
        (ReduceCode::Max, "RED_MAX"),
        (ReduceCode::Min, "RED_MIN"),
    ];
}

impl From<ReduceOp> for ReduceCode {
    fn from(op: ReduceOp) -> Self {
        match op {
            ReduceOp::Sum => ReduceCode::Sum,
            ReduceOp::Mean => ReduceCode::Mean,
            ReduceOp::Max => ReduceCode::Max,
            ReduceOp::Min => ReduceCode::Min,
        }
    }
}

/// The `int act` argument of an optional activation.
pub fn act_arg(act: Option<UnaryCode>) -> i32 {
    act.map_or(ACT_NONE, |c| c as i32)
}
