//! The host's graph intermediate representation.
//!
//! A skill records a [`Graph`] through the WIT `graph.builder`; every op is
//! checked when it is added ([`builder::GraphBuilder`]), so a finished graph
//! carries the inferred dtype and symbolic shape of every node. Backends
//! compile a finished graph; [`shape::bind`] evaluates concrete shapes for a
//! run so absurd sizes fail before any allocation.

pub mod builder;
pub mod conv;
pub mod eval;
mod kind;
pub mod ops;
pub mod shape;
mod write_rows;

use std::fmt;

pub use builder::GraphBuilder;
pub use kind::OpKind;
pub(crate) use ops::op_table;
pub use ops::{BinaryOp, CompareOp, ReduceOp, UnaryOp};

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    BF16,
    I64,
    I32,
    U8,
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
            DType::U8 | DType::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    pub fn is_int(self) -> bool {
        matches!(self, DType::I64 | DType::I32 | DType::U8)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::U8 => "u8",
            DType::Bool => "bool",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One axis of a symbolic shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Dim {
    /// A known length.
    Fixed(u64),
    /// A named axis bound at run time (`batch`, `sequence`).
    Sym(String),
    /// A length computed from others that is only known at run time
    /// (for example the `-1` of a reshape over symbolic axes). The
    /// expression is kept so that concrete shapes can be evaluated.
    Expr(Box<DimExpr>),
    /// The output length of a strided window over a symbolic length (a
    /// convolution): `(input + pad - span) / stride + 1`, rounded down.
    Window(Box<WindowDim>),
}

/// See [`Dim::Window`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct WindowDim {
    pub input: Dim,
    /// Zeros added in all.
    pub pad: u64,
    /// The kernel's extent, dilation included.
    pub span: u64,
    pub stride: u64,
}

/// Product/quotient of dims: `num[0] * num[1] * ... / den` with `den` fixed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct DimExpr {
    pub num: Vec<Dim>,
    pub den: u64,
}

impl Dim {
    pub fn fixed(&self) -> Option<u64> {
        match self {
            Dim::Fixed(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
            Dim::Expr(e) => {
                let parts: Vec<String> = e.num.iter().map(|d| d.to_string()).collect();
                write!(f, "({})", parts.join("*"))?;
                if e.den != 1 {
                    write!(f, "/{}", e.den)?;
                }
                Ok(())
            }
            Dim::Window(w) => write!(f, "win({},{},{},{})", w.input, w.pad, w.span, w.stride),
        }
    }
}

/// A symbolic shape.
pub type Shape = Vec<Dim>;

/// Formats a shape as `[batch, sequence, 384]`.
pub fn shape_str(shape: &[Dim]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Index of a node in its graph.
pub type NodeId = u32;

/// A constant tensor embedded in the graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ConstData {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub bytes: Vec<u8>,
}

/// An operation. Operands are [`NodeId`]s of earlier nodes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Op {
    Input {
        name: String,
    },
    /// A session-held tensor (see [`Graph::states`]).
    State {
        name: String,
    },
    Weight {
        name: String,
    },
    Constant(ConstData),
    Unary(UnaryOp, NodeId),
    Binary(BinaryOp, NodeId, NodeId),
    Compare(CompareOp, NodeId, NodeId),
    And(NodeId, NodeId),
    Select {
        cond: NodeId,
        a: NodeId,
        b: NodeId,
    },
    Cast(NodeId, DType),
    MatMul(NodeId, NodeId),
    Linear {
        x: NodeId,
        weight: NodeId,
        bias: Option<NodeId>,
    },
    LayerNorm {
        x: NodeId,
        scale: NodeId,
        bias: Option<NodeId>,
        eps_bits: u32,
    },
    RmsNorm {
        x: NodeId,
        scale: NodeId,
        eps_bits: u32,
    },
    Softmax {
        x: NodeId,
        axis: usize,
    },
    /// Rotary position embedding over the last axis (see the builder).
    Rotary {
        x: NodeId,
        cos: NodeId,
        sin: NodeId,
        interleaved: bool,
    },
    Attention {
        q: NodeId,
        k: NodeId,
        v: NodeId,
        mask: Option<NodeId>,
        causal: bool,
        scale_bits: u32,
    },
    Embedding {
        table: NodeId,
        ids: NodeId,
    },
    Reshape {
        x: NodeId,
        shape: Vec<i64>,
    },
    Permute {
        x: NodeId,
        perm: Vec<usize>,
    },
    Slice {
        x: NodeId,
        axis: usize,
        start: i64,
        end: i64,
    },
    Concat {
        xs: Vec<NodeId>,
        axis: usize,
    },
    Unsqueeze {
        x: NodeId,
        axis: usize,
    },
    Squeeze {
        x: NodeId,
        axis: usize,
    },
    Expand {
        x: NodeId,
        shape: Shape,
    },
    Reduce {
        op: ReduceOp,
        x: NodeId,
        axes: Vec<usize>,
        keep_dims: bool,
    },
    L2Normalize {
        x: NodeId,
        axis: usize,
        eps_bits: u32,
    },
    Gather {
        x: NodeId,
        indices: NodeId,
        axis: usize,
    },
    /// A 1-D or 2-D convolution ([`conv::ConvAttrs`]).
    Conv {
        x: NodeId,
        weight: NodeId,
        bias: Option<NodeId>,
        attrs: conv::ConvAttrs,
    },
    /// `x` with rows `start..start + rows(update)` of axis 0 replaced by
    /// `update`; `start` (an i64 `[1]`) is clamped to `[0, rows(x) -
    /// rows(update)]`. Writes a decode step's keys into a fixed-slot cache.
    WriteRows {
        x: NodeId,
        update: NodeId,
        start: NodeId,
    },
    ArgMax {
        x: NodeId,
        axis: usize,
        keep_dims: bool,
    },
    /// The values of a top-k along the last axis.
    TopKValues {
        x: NodeId,
        k: u32,
    },
    /// The indices of a top-k along the last axis.
    TopKIndices {
        x: NodeId,
        k: u32,
    },
}

impl Op {
    /// The nodes this op reads.
    pub fn operands(&self) -> Vec<NodeId> {
        match self {
            Op::Input { .. } | Op::State { .. } | Op::Weight { .. } | Op::Constant(_) => vec![],
            Op::Unary(_, x)
            | Op::Cast(x, _)
            | Op::Softmax { x, .. }
            | Op::Reshape { x, .. }
            | Op::Permute { x, .. }
            | Op::Slice { x, .. }
            | Op::Unsqueeze { x, .. }
            | Op::Squeeze { x, .. }
            | Op::Expand { x, .. }
            | Op::Reduce { x, .. }
            | Op::L2Normalize { x, .. }
            | Op::ArgMax { x, .. }
            | Op::TopKValues { x, .. }
            | Op::TopKIndices { x, .. } => vec![*x],
            Op::Binary(_, a, b) | Op::Compare(_, a, b) | Op::And(a, b) | Op::MatMul(a, b) => {
                vec![*a, *b]
            }
            Op::Select { cond, a, b } => vec![*cond, *a, *b],
            Op::Conv {
                x, weight, bias, ..
            } => [Some(*x), Some(*weight), *bias]
                .into_iter()
                .flatten()
                .collect(),
            Op::Linear { x, weight, bias } => [Some(*x), Some(*weight), *bias]
                .into_iter()
                .flatten()
                .collect(),
            Op::LayerNorm { x, scale, bias, .. } => [Some(*x), Some(*scale), *bias]
                .into_iter()
                .flatten()
                .collect(),
            Op::RmsNorm { x, scale, .. } => vec![*x, *scale],
            Op::Rotary { x, cos, sin, .. } => vec![*x, *cos, *sin],
            Op::Attention { q, k, v, mask, .. } => [Some(*q), Some(*k), Some(*v), *mask]
                .into_iter()
                .flatten()
                .collect(),
            Op::Embedding { table, ids } => vec![*table, *ids],
            Op::Gather { x, indices, .. } => vec![*x, *indices],
            Op::WriteRows { x, update, start } => vec![*x, *update, *start],
            Op::Concat { xs, .. } => xs.clone(),
        }
    }
}

/// A node: its op and its inferred type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Node {
    pub op: Op,
    pub dtype: DType,
    pub shape: Shape,
}

/// A finished, validated graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    /// Input node ids in declaration order.
    pub inputs: Vec<NodeId>,
    /// (name, node) in declaration order.
    pub outputs: Vec<(String, NodeId)>,
    /// Minimum run-time lengths of symbolic axes (from slices of them).
    pub min_lengths: Vec<(Dim, u64)>,
    /// State updates: (state name, node whose value the state takes next).
    /// Their values are also outputs, named by [`state_output_name`].
    pub states: Vec<(String, NodeId)>,
    /// The first node of each distinct shape (run-time size checks evaluate
    /// each shape once, not once per node).
    #[serde(skip)]
    pub shape_firsts: Vec<NodeId>,
}

/// The graph input name of state `name`.
pub fn state_input_name(name: &str) -> String {
    format!("state.{name}")
}

/// The graph output name of the next value of state `name`.
pub fn state_output_name(name: &str) -> String {
    format!("state.{name}.next")
}

impl Graph {
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    /// The run-time input name of an input or state node.
    pub fn input_name(&self, id: NodeId) -> String {
        match &self.node(id).op {
            Op::Input { name } => name.clone(),
            Op::State { name } => state_input_name(name),
            _ => String::new(),
        }
    }

    /// A stable content hash, used as the compile-cache key.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let text = serde_json::to_string(self).unwrap_or_default();
        let digest = Sha256::digest(text.as_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}

/// Graph construction and validation failures. Messages carry the op, the
/// expected and the got types/shapes.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum GraphError {
    #[error("graph `{graph}`: {op}: {message}")]
    Invalid {
        graph: String,
        op: String,
        message: String,
    },
    #[error("graph `{graph}`: unknown node id {id} (the builder has {count} nodes)")]
    UnknownNode {
        graph: String,
        id: u32,
        count: usize,
    },
    #[error("graph `{graph}`: unknown weight `{name}`; the model has {available} weights{hint}")]
    UnknownWeight {
        graph: String,
        name: String,
        available: usize,
        hint: String,
    },
    #[error("graph `{graph}`: {what} would hold {elements} elements, over the limit of {limit}")]
    TooLarge {
        graph: String,
        what: String,
        elements: u128,
        limit: u64,
    },
    #[error("graph `{graph}`: {message}")]
    Structure { graph: String, message: String },
    #[error("graph run: {0}")]
    Binding(String),
}
