//! Op codes the kernels switch on, from the op table (`ir::ops`): each
//! equals a `#define` in `kernels/base.cu` (`UN_*`, `BIN_*`, `CMP_*`,
//! `RED_*`, `ACT_NONE`), which `source_tests.rs` checks, so reordering the
//! IR's enums changes nothing on the device.

use crate::ir::ops::{CudaCode, CudaUnary};
use crate::ir::{BinaryOp, CompareOp, ReduceOp, UnaryOp};

/// "No activation" for the kernels that take an optional unary epilogue
/// (`bias_add`, `gemv*`).
pub const ACT_NONE: i32 = -1;

/// A float or integer unary op (`un_f` / `un_i` in kernels/base.cu). The
/// IR's `Not` has no code: it runs as its own kernel (`not_bool`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnaryCode {
    op: UnaryOp,
    code: CudaCode,
}

impl UnaryCode {
    /// The code of `op`; `None` for an op with a kernel of its own (`Not`).
    pub fn of(op: UnaryOp) -> Option<UnaryCode> {
        match op.cuda() {
            CudaUnary::Code(code) => Some(UnaryCode { op, code }),
            CudaUnary::NotBool => None,
        }
    }

    /// Every code.
    pub fn all() -> impl Iterator<Item = UnaryCode> {
        UnaryOp::ALL.iter().filter_map(|&op| UnaryCode::of(op))
    }

    pub fn op(self) -> UnaryOp {
        self.op
    }

    /// The `int op` argument.
    pub fn code(self) -> i32 {
        self.code.value
    }

    /// Its `#define` in kernels/base.cu.
    pub fn define(self) -> &'static str {
        self.code.define
    }
}

/// Code types of the families where every op has one.
macro_rules! family_code {
    ($(#[$m:meta])* $code:ident($op:ident)) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $code($op);

        impl $code {
            /// Every code.
            pub fn all() -> impl Iterator<Item = $code> {
                $op::ALL.iter().map(|&op| $code(op))
            }

            pub fn op(self) -> $op {
                self.0
            }

            /// The `int op` argument.
            pub fn code(self) -> i32 {
                self.0.cuda().value
            }

            /// Its `#define` in kernels/base.cu.
            pub fn define(self) -> &'static str {
                self.0.cuda().define
            }
        }

        impl From<$op> for $code {
            fn from(op: $op) -> Self {
                $code(op)
            }
        }
    };
}

family_code!(
    /// A binary op (`bin` in kernels/base.cu).
    BinaryCode(BinaryOp)
);
family_code!(
    /// A comparison (`cmp` in kernels/base.cu).
    CompareCode(CompareOp)
);
family_code!(
    /// A reduction (`reduce_float_t` / `reduce_int_t` in kernels/norm.cu).
    ReduceCode(ReduceOp)
);

/// The `int act` argument of an optional activation.
pub fn act_arg(act: Option<UnaryCode>) -> i32 {
    act.map_or(ACT_NONE, UnaryCode::code)
}
