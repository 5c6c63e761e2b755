//! [`OpKind`]: the variants of [`Op`] without their operands, listed once
//! ([`OpKind::ALL`]) so that tests can require something of every op (an
//! op case per op, `tests/backend_ops.rs`). [`Op::op_kind`] is an
//! exhaustive match: a new `Op` variant does not compile without its kind.

use super::Op;

macro_rules! op_kinds {
    ($($k:ident => $name:literal),* $(,)?) => {
        /// The variant of an [`Op`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum OpKind {
            $($k,)*
        }

        impl OpKind {
            /// Every kind, in `Op`'s order.
            pub const ALL: &'static [OpKind] = &[$(OpKind::$k),*];

            /// Short name used in errors.
            pub fn name(self) -> &'static str {
                match self {
                    $(OpKind::$k => $name,)*
                }
            }
        }
    };
}

op_kinds! {
    Input => "input",
    State => "state",
    Weight => "weight",
    Constant => "constant",
    Unary => "unary",
    Binary => "binary",
    Compare => "compare",
    And => "logical-and",
    Select => "select",
    Cast => "cast",
    MatMul => "matmul",
    Linear => "linear",
    LayerNorm => "layer-norm",
    RmsNorm => "rms-norm",
    Softmax => "softmax",
    Rotary => "rotary",
    Attention => "attention",
    Embedding => "embedding",
    Reshape => "reshape",
    Permute => "permute",
    Slice => "slice",
    Concat => "concat",
    Unsqueeze => "unsqueeze",
    Squeeze => "squeeze",
    Expand => "expand",
    Reduce => "reduce",
    L2Normalize => "l2-normalize",
    Gather => "gather",
    Conv => "conv",
    WriteRows => "write-rows",
    ArgMax => "argmax",
    TopKValues => "top-k",
    TopKIndices => "top-k",
}

impl Op {
    /// The op's variant.
    pub fn op_kind(&self) -> OpKind {
        match self {
            Op::Input { .. } => OpKind::Input,
            Op::State { .. } => OpKind::State,
            Op::Weight { .. } => OpKind::Weight,
            Op::Constant(_) => OpKind::Constant,
            Op::Unary(..) => OpKind::Unary,
            Op::Binary(..) => OpKind::Binary,
            Op::Compare(..) => OpKind::Compare,
            Op::And(..) => OpKind::And,
            Op::Select { .. } => OpKind::Select,
            Op::Cast(..) => OpKind::Cast,
            Op::MatMul(..) => OpKind::MatMul,
            Op::Linear { .. } => OpKind::Linear,
            Op::LayerNorm { .. } => OpKind::LayerNorm,
            Op::RmsNorm { .. } => OpKind::RmsNorm,
            Op::Softmax { .. } => OpKind::Softmax,
            Op::Rotary { .. } => OpKind::Rotary,
            Op::Attention { .. } => OpKind::Attention,
            Op::Embedding { .. } => OpKind::Embedding,
            Op::Reshape { .. } => OpKind::Reshape,
            Op::Permute { .. } => OpKind::Permute,
            Op::Slice { .. } => OpKind::Slice,
            Op::Concat { .. } => OpKind::Concat,
            Op::Unsqueeze { .. } => OpKind::Unsqueeze,
            Op::Squeeze { .. } => OpKind::Squeeze,
            Op::Expand { .. } => OpKind::Expand,
            Op::Reduce { .. } => OpKind::Reduce,
            Op::L2Normalize { .. } => OpKind::L2Normalize,
            Op::Gather { .. } => OpKind::Gather,
            Op::Conv { .. } => OpKind::Conv,
            Op::WriteRows { .. } => OpKind::WriteRows,
            Op::ArgMax { .. } => OpKind::ArgMax,
            Op::TopKValues { .. } => OpKind::TopKValues,
            Op::TopKIndices { .. } => OpKind::TopKIndices,
        }
    }

    /// Short name used in errors.
    pub fn kind(&self) -> &'static str {
        self.op_kind().name()
    }
}
