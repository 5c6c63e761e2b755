//! The op table of the element-wise and reduction families: unary, binary,
//! compare and reduce.
//!
//! [`op_table!`] holds one row per op: its IR variant, its WIT case, the
//! dtypes it takes, its ONNX lowering, the reference evaluator's function
//! and its CUDA op code. Everything else is derived from it: the IR enums
//! ([`UnaryOp`], [`BinaryOp`], [`CompareOp`], [`ReduceOp`]) with their
//! `ALL` lists and accessors (here), the WIT-to-IR conversion
//! (`sandbox/imports.rs`), the builder's dtype check, the evaluator
//! (`eval/kernels.rs`, `eval/nn.rs`), the ONNX nodes (`onnx/lower.rs`) and
//! the CUDA codes (`backend/cuda/launch/codes.rs`).
//!
//! What stays hand-written is checked against the table by tests:
//! `wit/graph.wit`'s enum cases (the skill author's manual; same cases in
//! the same order, `ops/tests.rs`, and the WIT conversion does not compile
//! without them), the `#define`s and `case`s of `kernels/base.cu`
//! (`backend/cuda/launch/source_tests.rs`), and an op case per op
//! (`tests/backend_ops.rs`).
//!
//! A row's fields, in this order:
//! - `wit`: the WIT case name.
//! - `operands` (unary): [`Operands`]; the others take any non-bool dtype
//!   (compare also bool).
//! - `onnx`: the ONNX op type, or (unary) an [`OnnxUnary`].
//! - `float` / `int`: the reference function over f64 / i64 values (bool
//!   is 0/1 in i64); a missing one is an error the builder's checks make
//!   unreachable. `holds` (compare): whether the ordering of the two
//!   operands satisfies the comparison.
//! - `empty_axis` (reduce): whether a reduction over no elements is
//!   defined (the sum's 0) or an error.
//! - `cuda`: `DEFINE = code` in kernels/base.cu, or (unary) `not_bool` for
//!   an op with a kernel of its own.

use std::cmp::Ordering;

use super::DType;

/// The op table. `op_table!(family, callback)` calls `callback! { Enum;
/// rows }` with the rows of `family` (`unary`, `binary`, `compare`,
/// `reduce`); a callback that needs only the variants matches each row as
/// `$v:ident { $($field:tt)* }`.
macro_rules! op_table {
    (unary, $cb:ident) => {
        $cb! {
            /// Element-wise functions of one operand.
            UnaryOp;
            Neg { wit: "neg", operands: Number, onnx: Node("Neg"),
                float: |a| -a, int: |a| a.wrapping_neg(), cuda: UN_NEG = 0 },
            Abs { wit: "abs", operands: Number, onnx: Node("Abs"),
                float: f64::abs, int: |a| a.wrapping_abs(), cuda: UN_ABS = 1 },
            Exp { wit: "exp", operands: Float, onnx: Node("Exp"),
                float: f64::exp, cuda: UN_EXP = 2 },
            Log { wit: "log", operands: Float, onnx: Node("Log"),
                float: f64::ln, cuda: UN_LOG = 3 },
            Sqrt { wit: "sqrt", operands: Float, onnx: Node("Sqrt"),
                float: f64::sqrt, cuda: UN_SQRT = 4 },
            /// 1 / sqrt(x)
            Rsqrt { wit: "rsqrt", operands: Float, onnx: Decomposed(SqrtReciprocal),
                float: |a| 1.0 / a.sqrt(), cuda: UN_RSQRT = 5 },
            /// 1 / x
            Reciprocal { wit: "reciprocal", operands: Float, onnx: Node("Reciprocal"),
                float: |a| 1.0 / a, cuda: UN_RECIPROCAL = 6 },
            Tanh { wit: "tanh", operands: Float, onnx: Node("Tanh"),
                float: f64::tanh, cuda: UN_TANH = 7 },
            Sigmoid { wit: "sigmoid", operands: Float, onnx: Node("Sigmoid"),
                float: |a| 1.0 / (1.0 + (-a).exp()), cuda: UN_SIGMOID = 8 },
            Relu { wit: "relu", operands: Number, onnx: Node("Relu"),
                float: |a| if a > 0.0 { a } else { 0.0 }, int: |a| a.max(0), cuda: UN_RELU = 9 },
            /// x * Phi(x) with the exact error function.
            Gelu { wit: "gelu", operands: Float, onnx: Decomposed(ErfGelu),
                float: |a| 0.5 * a * (1.0 + erf(a / std::f64::consts::SQRT_2)),
                cuda: UN_GELU = 10 },
            /// The tanh approximation of GELU.
            GeluTanh { wit: "gelu-tanh", operands: Float, onnx: Decomposed(TanhGelu),
                float: |a| {
                    let c = (2.0 / std::f64::consts::PI).sqrt();
                    0.5 * a * (1.0 + (c * (a + 0.044715 * a * a * a)).tanh())
                },
                cuda: UN_GELU_TANH = 11 },
            /// x * sigmoid(x)
            Silu { wit: "silu", operands: Float, onnx: Decomposed(SigmoidMul),
                float: |a| a / (1.0 + (-a).exp()), cuda: UN_SILU = 12 },
            Erf { wit: "erf", operands: Float, onnx: Node("Erf"),
                float: erf, cuda: UN_ERF = 13 },
            /// Logical not of a bool.
            Not { wit: "not", operands: Bool, onnx: Node("Not"),
                int: |a| (a == 0) as i64, cuda: not_bool },
            Sin { wit: "sin", operands: Float, onnx: Node("Sin"),
                float: f64::sin, cuda: UN_SIN = 15 },
            Cos { wit: "cos", operands: Float, onnx: Node("Cos"),
                float: f64::cos, cuda: UN_COS = 16 },
        }
    };
    (binary, $cb:ident) => {
        $cb! {
            /// Element-wise functions of two broadcast operands of one dtype.
            BinaryOp;
            Add { wit: "add", onnx: "Add",
                float: |p, q| p + q, int: |p, q| Ok(p.wrapping_add(q)), cuda: BIN_ADD = 0 },
            Sub { wit: "sub", onnx: "Sub",
                float: |p, q| p - q, int: |p, q| Ok(p.wrapping_sub(q)), cuda: BIN_SUB = 1 },
            Mul { wit: "mul", onnx: "Mul",
                float: |p, q| p * q, int: |p, q| Ok(p.wrapping_mul(q)), cuda: BIN_MUL = 2 },
            Div { wit: "div", onnx: "Div",
                float: |p, q| p / q,
                int: |p, q| match q {
                    0 => Err("integer division by zero".to_string()),
                    _ => Ok(p.wrapping_div(q)),
                },
                cuda: BIN_DIV = 3 },
            Pow { wit: "pow", onnx: "Pow",
                float: f64::powf,
                int: |p, q| u32::try_from(q)
                    .map(|e| p.wrapping_pow(e))
                    .map_err(|_| format!("integer exponent {q} is out of range")),
                cuda: BIN_POW = 4 },
            Maximum { wit: "maximum", onnx: "Max",
                float: f64::max, int: |p, q| Ok(p.max(q)), cuda: BIN_MAX = 5 },
            Minimum { wit: "minimum", onnx: "Min",
                float: f64::min, int: |p, q| Ok(p.min(q)), cuda: BIN_MIN = 6 },
        }
    };
    (compare, $cb:ident) => {
        $cb! {
            /// Element-wise comparisons with a bool result.
            CompareOp;
            Equal { wit: "equal", onnx: "Equal",
                holds: |o| o == Some(Equal), cuda: CMP_EQ = 0 },
            Less { wit: "less", onnx: "Less",
                holds: |o| o == Some(Less), cuda: CMP_LT = 1 },
            LessOrEqual { wit: "less-or-equal", onnx: "LessOrEqual",
                holds: |o| matches!(o, Some(Less | Equal)), cuda: CMP_LE = 2 },
            Greater { wit: "greater", onnx: "Greater",
                holds: |o| o == Some(Greater), cuda: CMP_GT = 3 },
            GreaterOrEqual { wit: "greater-or-equal", onnx: "GreaterOrEqual",
                holds: |o| matches!(o, Some(Greater | Equal)), cuda: CMP_GE = 4 },
        }
    };
    (reduce, $cb:ident) => {
        $cb! {
            /// Reductions over a set of axes.
            ReduceOp;
            Sum { wit: "sum", onnx: "ReduceSum", empty_axis: true,
                float: |c| c.iter().sum(),
                int: |c| c.iter().fold(0i64, |a, &b| a.wrapping_add(b)),
                cuda: RED_SUM = 0 },
            Mean { wit: "mean", onnx: "ReduceMean", empty_axis: false,
                float: |c| c.iter().sum::<f64>() / c.len() as f64,
                int: |c| c.iter().fold(0i64, |a, &b| a.wrapping_add(b)) / c.len() as i64,
                cuda: RED_MEAN = 1 },
            Max { wit: "max", onnx: "ReduceMax", empty_axis: false,
                float: |c| c.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                int: |c| c.iter().copied().max().unwrap_or(0),
                cuda: RED_MAX = 2 },
            Min { wit: "min", onnx: "ReduceMin", empty_axis: false,
                float: |c| c.iter().copied().fold(f64::INFINITY, f64::min),
                int: |c| c.iter().copied().min().unwrap_or(0),
                cuda: RED_MIN = 3 },
        }
    };
}
pub(crate) use op_table;

use super::eval::erf;

/// The dtypes a unary op takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operands {
    /// Floating point only.
    Float,
    /// Floating point or integer (not bool).
    Number,
    /// Bool only.
    Bool,
}

impl Operands {
    pub fn accepts(self, dtype: DType) -> bool {
        match self {
            Operands::Float => dtype.is_float(),
            Operands::Number => dtype != DType::Bool,
            Operands::Bool => dtype == DType::Bool,
        }
    }
}

/// How a unary op is emitted as ONNX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnnxUnary {
    /// One node of this ONNX op type.
    Node(&'static str),
    /// Several nodes (`onnx/lower/unary.rs`).
    Decomposed(OnnxDecomposition),
}

/// The multi-node ONNX forms of unary ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnnxDecomposition {
    /// `Reciprocal(Sqrt(x))`.
    SqrtReciprocal,
    /// `x * 0.5 * (1 + Erf(x / sqrt(2)))`, the pattern ORT fuses into Gelu.
    ErfGelu,
    /// `0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`.
    TanhGelu,
    /// `x * Sigmoid(x)`.
    SigmoidMul,
}

/// An op code of the CUDA kernels: `#define define value` in
/// `backend/cuda/kernels/base.cu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaCode {
    pub define: &'static str,
    pub value: i32,
}

/// How the CUDA backend runs a unary op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CudaUnary {
    /// A case of `un_f` / `un_i` (also an activation epilogue).
    Code(CudaCode),
    /// The `not_bool` kernel.
    NotBool,
}

/// `Some` of an optional field, or `None`.
macro_rules! optional {
    () => {
        None
    };
    ($e:expr) => {
        Some($e)
    };
}

/// `CudaUnary` from a row's `cuda` field.
macro_rules! cuda_unary {
    (not_bool) => {
        CudaUnary::NotBool
    };
    ($define:ident = $value:literal) => {
        CudaUnary::Code(cuda_code!($define = $value))
    };
}

/// `CudaCode` from a row's `cuda` field.
macro_rules! cuda_code {
    ($define:ident = $value:literal) => {
        CudaCode {
            define: stringify!($define),
            value: $value,
        }
    };
}

/// The enum of a family with its `ALL` list and WIT names.
macro_rules! family_enum {
    ($(#[$m:meta])* $name:ident; $($v:ident => $wit:literal $(#[$vm:meta])*),* $(,)?) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
        pub enum $name {
            $($(#[$vm])* $v,)*
        }

        impl $name {
            /// Every op of the family, in the WIT's order.
            pub const ALL: &'static [$name] = &[$($name::$v),*];

            /// The WIT case (`wit/graph.wit`).
            pub fn wit_name(self) -> &'static str {
                match self {
                    $($name::$v => $wit,)*
                }
            }
        }
    };
}

macro_rules! define_unary {
    ($(#[$m:meta])* $name:ident; $(
        $(#[$vm:meta])* $v:ident { wit: $wit:literal, operands: $ops:ident, onnx: $onnx:expr,
            $(float: $float:expr,)? $(int: $int:expr,)? cuda: $($cuda:tt)+ }
    ),* $(,)?) => {
        family_enum!($(#[$m])* $name; $($v => $wit $(#[$vm])*),*);

        impl $name {
            /// The dtypes the op takes.
            pub fn operands(self) -> Operands {
                match self {
                    $($name::$v => Operands::$ops,)*
                }
            }

            /// Its ONNX form.
            pub fn onnx(self) -> OnnxUnary {
                use OnnxDecomposition::*;
                use OnnxUnary::*;
                match self {
                    $($name::$v => $onnx,)*
                }
            }

            /// How the CUDA backend runs it.
            pub fn cuda(self) -> CudaUnary {
                match self {
                    $($name::$v => cuda_unary!($($cuda)+),)*
                }
            }

            /// The reference function over floats (`None`: not a float op).
            pub(crate) fn eval_float(self) -> Option<fn(f64) -> f64> {
                match self {
                    $($name::$v => optional!($($float)?),)*
                }
            }

            /// The reference function over integers and bools.
            pub(crate) fn eval_int(self) -> Option<fn(i64) -> i64> {
                match self {
                    $($name::$v => optional!($($int)?),)*
                }
            }
        }
    };
}

/// A binary op's reference function over integers (may fail: division by
/// zero, a negative exponent).
pub(crate) type IntBinary = fn(i64, i64) -> Result<i64, String>;

macro_rules! define_binary {
    ($(#[$m:meta])* $name:ident; $(
        $(#[$vm:meta])* $v:ident { wit: $wit:literal, onnx: $onnx:literal,
            float: $float:expr, int: $int:expr, cuda: $($cuda:tt)+ }
    ),* $(,)?) => {
        family_enum!($(#[$m])* $name; $($v => $wit $(#[$vm])*),*);

        impl $name {
            /// Its ONNX op type.
            pub fn onnx(self) -> &'static str {
                match self {
                    $($name::$v => $onnx,)*
                }
            }

            /// Its CUDA op code.
            pub fn cuda(self) -> CudaCode {
                match self {
                    $($name::$v => cuda_code!($($cuda)+),)*
                }
            }

            pub(crate) fn eval_float(self) -> fn(f64, f64) -> f64 {
                match self {
                    $($name::$v => $float,)*
                }
            }

            pub(crate) fn eval_int(self) -> IntBinary {
                match self {
                    $($name::$v => $int,)*
                }
            }
        }
    };
}

macro_rules! define_compare {
    ($(#[$m:meta])* $name:ident; $(
        $(#[$vm:meta])* $v:ident { wit: $wit:literal, onnx: $onnx:literal,
            holds: $holds:expr, cuda: $($cuda:tt)+ }
    ),* $(,)?) => {
        family_enum!($(#[$m])* $name; $($v => $wit $(#[$vm])*),*);

        impl $name {
            /// Its ONNX op type.
            pub fn onnx(self) -> &'static str {
                match self {
                    $($name::$v => $onnx,)*
                }
            }

            /// Its CUDA op code.
            pub fn cuda(self) -> CudaCode {
                match self {
                    $($name::$v => cuda_code!($($cuda)+),)*
                }
            }

            /// Whether operands ordered `o` (`None`: unordered, a NaN)
            /// satisfy the comparison.
            pub(crate) fn holds(self, o: Option<Ordering>) -> bool {
                use Ordering::*;
                let f: fn(Option<Ordering>) -> bool = match self {
                    $($name::$v => $holds,)*
                };
                f(o)
            }
        }
    };
}

macro_rules! define_reduce {
    ($(#[$m:meta])* $name:ident; $(
        $(#[$vm:meta])* $v:ident { wit: $wit:literal, onnx: $onnx:literal, empty_axis: $empty:literal,
            float: $float:expr, int: $int:expr, cuda: $($cuda:tt)+ }
    ),* $(,)?) => {
        family_enum!($(#[$m])* $name; $($v => $wit $(#[$vm])*),*);

        impl $name {
            /// Its ONNX op type.
            pub fn onnx(self) -> &'static str {
                match self {
                    $($name::$v => $onnx,)*
                }
            }

            /// Its CUDA op code.
            pub fn cuda(self) -> CudaCode {
                match self {
                    $($name::$v => cuda_code!($($cuda)+),)*
                }
            }

            /// Whether a reduction over no elements is defined.
            pub fn empty_axis(self) -> bool {
                match self {
                    $($name::$v => $empty,)*
                }
            }

            /// The reference function of one group of floats.
            pub(crate) fn eval_float(self) -> fn(&[f64]) -> f64 {
                match self {
                    $($name::$v => $float,)*
                }
            }

            /// The reference function of one group of integers.
            pub(crate) fn eval_int(self) -> fn(&[i64]) -> i64 {
                match self {
                    $($name::$v => $int,)*
                }
            }
        }
    };
}

op_table!(unary, define_unary);
op_table!(binary, define_binary);
op_table!(compare, define_compare);
op_table!(reduce, define_reduce);

#[cfg(test)]
mod tests;
