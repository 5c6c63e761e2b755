//! A naive reference interpreter for the graph IR: the test oracle that every
//! backend is compared against.
//!
//! Each op means what its ONNX lowering ([`crate::onnx`]) computes: `Linear`
//! is `x @ W^T + b` with `W` `[out, in]`; attention repeats each kv head
//! `heads / kv_heads` times, scales `q @ k^T`, adds a float mask, and adds
//! `-65504` (not a replacement) where a bool mask or the causal rule
//! (`j <= i + sk - sq`) forbids a position; `Gelu` is erf-based, `GeluTanh`
//! the tanh approximation; `Gather` and `Embedding` wrap negative indices;
//! top-k is sorted descending with ties to the lower index; argmax takes the
//! first maximum; binary, compare, select and `and` broadcast like NumPy.
//!
//! Float math runs in f64 and integer math in i64 (wrapping); every node's
//! value is rounded to the node's dtype (f16/bf16 through `half`) before later
//! nodes read it. Only nodes that an output depends on are computed. Clarity
//! comes before speed, but a small encoder still evaluates in milliseconds.
//! Bad input (missing tensors, wrong dtypes or shapes, indices out of range)
//! is an [`EvalError`], never a panic.

mod conv;
mod kernels;
mod nn;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use super::shape::{check_sizes, eval_dim, eval_shape, is_sum, Bindings};
use super::{DType, Dim, Graph, GraphError, Node, NodeId, Op};
use crate::tensor::Tensor;

pub(crate) use kernels::erf;
use kernels::{Data, Value};

/// Largest tensor an evaluation may create, in elements (as for backend runs).
pub const MAX_EVAL_ELEMENTS: u64 = 1 << 31;

/// Evaluation failures, each naming the graph and, for ops, the node and
/// its kind.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum EvalError {
    #[error("graph `{graph}`: missing input `{name}`")]
    MissingInput { graph: String, name: String },
    #[error("graph `{graph}`: unknown input `{name}` (the graph has no such input)")]
    UnknownInput { graph: String, name: String },
    #[error("graph `{graph}`: weight `{name}` is not available")]
    MissingWeight { graph: String, name: String },
    #[error("graph `{graph}`: {what} `{name}`: expected {expected}, got {got}")]
    Mismatch {
        graph: String,
        what: &'static str,
        name: String,
        expected: String,
        got: String,
    },
    #[error("graph `{graph}`: node {id} ({op}): {message}")]
    Op {
        graph: String,
        id: NodeId,
        op: &'static str,
        message: String,
    },
    #[error("graph `{graph}`: node {id} ({op}): computed shape {got:?}, the graph declares {expected:?}")]
    Shape {
        graph: String,
        id: NodeId,
        op: &'static str,
        expected: Vec<u64>,
        got: Vec<u64>,
    },
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// Evaluates `g` on `inputs` (by run-time input name, states as
/// `state.<name>`), reading weights through `weight`. Returns the graph's
/// outputs (state updates included) in order, each in its node's dtype.
pub fn evaluate(
    g: &Graph,
    inputs: &[(String, Tensor)],
    weight: &dyn Fn(&str) -> Option<Tensor>,
) -> Result<Vec<(String, Tensor)>, EvalError> {
    let (fed, bindings) = bind_inputs(g, inputs)?;
    check_sizes(g, &bindings, MAX_EVAL_ELEMENTS)?;
    let needed = reachable(g)?;
    let mut ev = Eval {
        g,
        bindings,
        fed,
        weight,
        vals: vec![None; g.nodes.len()],
    };
    for (i, node) in g.nodes.iter().enumerate() {
        if !needed[i] {
            continue;
        }
        let id = i as NodeId;
        let v = ev.compute(id, node)?;
        let expected = eval_shape(&node.shape, &ev.bindings)?;
        let got: Vec<u64> = v.shape.iter().map(|&d| d as u64).collect();
        if expected != got {
            return Err(EvalError::Shape {
                graph: g.name.clone(),
                id,
                op: node.op.kind(),
                expected,
                got,
            });
        }
        let data = round(node.dtype, v.data).map_err(|message| ev.op_err(id, node, message))?;
        ev.vals[i] = Some(Value {
            shape: v.shape,
            data,
        });
    }
    let mut out = Vec::with_capacity(g.outputs.len());
    for (name, id) in &g.outputs {
        let node = node_of(g, *id)?;
        let v = ev.arg(*id)?;
        out.push((name.clone(), to_tensor(node.dtype, v)));
    }
    Ok(out)
}

struct Eval<'a> {
    g: &'a Graph,
    bindings: Bindings,
    fed: HashMap<NodeId, Value>,
    weight: &'a dyn Fn(&str) -> Option<Tensor>,
    vals: Vec<Option<Value>>,
}

fn node_of(g: &Graph, id: NodeId) -> Result<&Node, EvalError> {
    g.nodes.get(id as usize).ok_or_else(|| {
        GraphError::UnknownNode {
            graph: g.name.clone(),
            id,
            count: g.nodes.len(),
        }
        .into()
    })
}

impl Eval<'_> {
    fn op_err(&self, id: NodeId, node: &Node, message: String) -> EvalError {
        EvalError::Op {
            graph: self.g.name.clone(),
            id,
            op: node.op.kind(),
            message,
        }
    }

    /// The value of an operand computed earlier.
    fn arg(&self, id: NodeId) -> Result<&Value, EvalError> {
        match self.vals.get(id as usize) {
            Some(Some(v)) => Ok(v),
            _ => Err(GraphError::Structure {
                graph: self.g.name.clone(),
                message: format!("node {id} is used before it is computed"),
            }
            .into()),
        }
    }

    fn compute(&mut self, id: NodeId, node: &Node) -> Result<Value, EvalError> {
        match &node.op {
            Op::Input { .. } | Op::State { .. } => {
                let name = self.g.input_name(id);
                return self.fed.remove(&id).ok_or(EvalError::MissingInput {
                    graph: self.g.name.clone(),
                    name,
                });
            }
            Op::Weight { name } => return self.load_weight(node, name),
            _ => {}
        }
        self.kernel(&node.op)?
            .map_err(|message| self.op_err(id, node, message))
    }

    /// Runs the kernel of a computed op: operand errors are the outer
    /// result, the op's own failure the inner one.
    fn kernel(&self, op: &Op) -> Result<Result<Value, String>, EvalError> {
        Ok(match op {
            Op::Input { .. } | Op::State { .. } | Op::Weight { .. } => {
                Err("run-time fed node reached the kernel dispatch".into())
            }
            Op::Constant(c) => from_bytes(c.dtype, &c.shape, &c.bytes),
            Op::Unary(op, x) => kernels::unary(*op, self.arg(*x)?),
            Op::Binary(op, a, b) => kernels::binary(*op, self.arg(*a)?, self.arg(*b)?),
            Op::Compare(op, a, b) => kernels::compare(*op, self.arg(*a)?, self.arg(*b)?),
            Op::And(a, b) => kernels::and(self.arg(*a)?, self.arg(*b)?),
            Op::Select { cond, a, b } => {
                kernels::select(self.arg(*cond)?, self.arg(*a)?, self.arg(*b)?)
            }
            Op::Cast(x, to) => kernels::cast(self.arg(*x)?, *to),
            Op::MatMul(a, b) => nn::matmul(self.arg(*a)?, self.arg(*b)?),
            Op::Linear { x, weight, bias } => {
                let bias = bias.map(|b| self.arg(b)).transpose()?;
                nn::linear(self.arg(*x)?, self.arg(*weight)?, bias)
            }
            Op::LayerNorm {
                x,
                scale,
                bias,
                eps_bits,
            } => {
                let bias = bias.map(|b| self.arg(b)).transpose()?;
                let eps = f32::from_bits(*eps_bits) as f64;
                nn::layer_norm(self.arg(*x)?, self.arg(*scale)?, bias, eps)
            }
            Op::RmsNorm { x, scale, eps_bits } => {
                let eps = f32::from_bits(*eps_bits) as f64;
                nn::rms_norm(self.arg(*x)?, self.arg(*scale)?, eps)
            }
            Op::Softmax { x, axis } => nn::softmax(self.arg(*x)?, *axis),
            Op::Rotary {
                x,
                cos,
                sin,
                interleaved,
            } => nn::rotary(
                self.arg(*x)?,
                self.arg(*cos)?,
                self.arg(*sin)?,
                *interleaved,
            ),
            Op::Attention {
                q,
                k,
                v,
                mask,
                causal,
                scale_bits,
            } => {
                let mask = mask.map(|m| self.arg(m)).transpose()?;
                let scale = f32::from_bits(*scale_bits) as f64;
                let (q, k, v) = (self.arg(*q)?, self.arg(*k)?, self.arg(*v)?);
                nn::attention(q, k, v, mask, *causal, scale)
            }
            Op::Embedding { table, ids } => {
                let table = self.arg(*table)?;
                if table.shape.len() != 2 {
                    Err(format!("table must be rank 2, got {:?}", table.shape))
                } else {
                    kernels::gather(table, self.arg(*ids)?, 0)
                }
            }
            Op::Gather { x, indices, axis } => {
                kernels::gather(self.arg(*x)?, self.arg(*indices)?, *axis)
            }
            Op::Conv {
                x,
                weight,
                bias,
                attrs,
            } => {
                let bias = bias.map(|b| self.arg(b)).transpose()?;
                conv::conv(self.arg(*x)?, self.arg(*weight)?, bias, attrs)
            }
            Op::WriteRows { x, update, start } => {
                kernels::write_rows(self.arg(*x)?, self.arg(*update)?, self.arg(*start)?)
            }
            Op::Reshape { x, shape } => kernels::reshape(self.arg(*x)?, shape),
            Op::Permute { x, perm } => kernels::permute(self.arg(*x)?, perm),
            Op::Slice {
                x,
                axis,
                start,
                end,
            } => kernels::slice(self.arg(*x)?, *axis, *start, *end),
            Op::Concat { xs, axis } => {
                let parts = xs
                    .iter()
                    .map(|&x| self.arg(x))
                    .collect::<Result<Vec<_>, _>>()?;
                kernels::concat(&parts, *axis)
            }
            Op::Unsqueeze { x, axis } => kernels::unsqueeze(self.arg(*x)?, *axis),
            Op::Squeeze { x, axis } => kernels::squeeze(self.arg(*x)?, *axis),
            Op::Expand { x, shape } => {
                let target = eval_shape(shape, &self.bindings)?;
                let target: Vec<usize> = target.iter().map(|&d| d as usize).collect();
                kernels::expand(self.arg(*x)?, &target)
            }
            Op::Reduce {
                op,
                x,
                axes,
                keep_dims,
            } => nn::reduce(*op, self.arg(*x)?, axes, *keep_dims),
            Op::L2Normalize { x, axis, eps_bits } => {
                let eps = f32::from_bits(*eps_bits) as f64;
                nn::l2_normalize(self.arg(*x)?, *axis, eps)
            }
            Op::ArgMax { x, axis, keep_dims } => nn::argmax(self.arg(*x)?, *axis, *keep_dims),
            Op::TopKValues { x, k } => nn::top_k(self.arg(*x)?, *k as usize).map(|(v, _)| v),
            Op::TopKIndices { x, k } => nn::top_k(self.arg(*x)?, *k as usize).map(|(_, i)| i),
        })
    }

    fn load_weight(&self, node: &Node, name: &str) -> Result<Value, EvalError> {
        let t = (self.weight)(name).ok_or_else(|| EvalError::MissingWeight {
            graph: self.g.name.clone(),
            name: name.to_string(),
        })?;
        let mismatch = |expected: String, got: String| EvalError::Mismatch {
            graph: self.g.name.clone(),
            what: "weight",
            name: name.to_string(),
            expected,
            got,
        };
        if t.dtype != node.dtype {
            return Err(mismatch(node.dtype.to_string(), t.dtype.to_string()));
        }
        let want = eval_shape(&node.shape, &self.bindings)?;
        if t.shape != want {
            return Err(mismatch(
                format!("shape {want:?}"),
                format!("{:?}", t.shape),
            ));
        }
        tensor_value(&t, name).map_err(|got| mismatch("a well-formed tensor".into(), got))
    }
}

/// Marks the nodes the outputs depend on; operands must precede their users.
fn reachable(g: &Graph) -> Result<Vec<bool>, EvalError> {
    let mut needed = vec![false; g.nodes.len()];
    for (_, id) in &g.outputs {
        node_of(g, *id)?;
        needed[*id as usize] = true;
    }
    for i in (0..g.nodes.len()).rev() {
        if !needed[i] {
            continue;
        }
        for x in g.nodes[i].op.operands() {
            if x as usize >= i {
                return Err(GraphError::Structure {
                    graph: g.name.clone(),
                    message: format!("node {i} uses node {x}, which does not precede it"),
                }
                .into());
            }
            needed[x as usize] = true;
        }
    }
    Ok(needed)
}

/// The operand node ids of an op.
/// Checks the fed tensors against the graph's inputs and binds the symbolic
/// axes, as a backend run does.
fn bind_inputs(
    g: &Graph,
    inputs: &[(String, Tensor)],
) -> Result<(HashMap<NodeId, Value>, Bindings), EvalError> {
    let mismatch = |name: &str, expected: String, got: String| EvalError::Mismatch {
        graph: g.name.clone(),
        what: "input",
        name: name.to_string(),
        expected,
        got,
    };
    let names: Vec<String> = g.inputs.iter().map(|&id| g.input_name(id)).collect();
    if let Some((extra, _)) = inputs.iter().find(|(n, _)| !names.contains(n)) {
        return Err(EvalError::UnknownInput {
            graph: g.name.clone(),
            name: extra.clone(),
        });
    }
    let mut bindings = Bindings::new();
    let mut fed = HashMap::new();
    for (&id, name) in g.inputs.iter().zip(&names) {
        let node = node_of(g, id)?;
        let t = inputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| EvalError::MissingInput {
                graph: g.name.clone(),
                name: name.clone(),
            })?;
        if t.dtype != node.dtype {
            return Err(mismatch(name, node.dtype.to_string(), t.dtype.to_string()));
        }
        let bad_shape = || {
            mismatch(
                name,
                format!("shape {}", super::shape_str(&node.shape)),
                format!("{:?}", t.shape),
            )
        };
        if t.shape.len() != node.shape.len() {
            return Err(bad_shape());
        }
        for (d, &got) in node.shape.iter().zip(&t.shape) {
            match d {
                Dim::Fixed(n) if *n != got => return Err(bad_shape()),
                Dim::Sym(s) if !is_sum(d) => match bindings.insert(s.clone(), got) {
                    Some(prev) if prev != got => {
                        return Err(mismatch(
                            name,
                            format!("axis `{s}` = {prev} (as bound by an earlier input)"),
                            got.to_string(),
                        ));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        let v = tensor_value(t, name)
            .map_err(|got| mismatch(name, "a well-formed tensor".into(), got))?;
        fed.insert(id, v);
    }
    // Sums such as `past+seq` are checked once every plain axis is bound.
    for (&id, name) in g.inputs.iter().zip(&names) {
        let node = node_of(g, id)?;
        let Some(t) = inputs.iter().find(|(n, _)| n == name).map(|(_, t)| t) else {
            continue;
        };
        for (d, &got) in node.shape.iter().zip(&t.shape) {
            if is_sum(d) {
                let want = eval_dim(d, &bindings)?;
                if want != got {
                    return Err(mismatch(
                        name,
                        format!("axis {d} = {want}"),
                        got.to_string(),
                    ));
                }
            }
        }
    }
    Ok((fed, bindings))
}

/// Decodes a tensor into a value; the error says what is wrong with it.
fn tensor_value(t: &Tensor, name: &str) -> Result<Value, String> {
    t.check(name).map_err(|e| e.to_string())?;
    from_bytes(t.dtype, &t.shape, &t.data)
}

/// Decodes little-endian bytes of `dtype` and `shape`.
fn from_bytes(dtype: DType, shape: &[u64], bytes: &[u8]) -> Result<Value, String> {
    let t = Tensor {
        dtype,
        shape: shape.to_vec(),
        data: bytes.to_vec(),
    };
    t.check("constant").map_err(|e| e.to_string())?;
    let data = if dtype.is_float() {
        let v = t.to_f32("constant").map_err(|e| e.to_string())?;
        Data::F(v.into_iter().map(f64::from).collect())
    } else {
        let v = t.to_i64("constant").map_err(|e| e.to_string())?;
        Data::I(v)
    };
    let data = round(dtype, data)?;
    Ok(Value {
        shape: shape.iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// Rounds values to what `dtype` can hold: floats to the nearest
/// representable value, integers wrapped to their width, bools to 0/1.
fn round(dtype: DType, data: Data) -> Result<Data, String> {
    Ok(match (dtype, data) {
        (DType::F32, Data::F(v)) => Data::F(v.into_iter().map(|x| x as f32 as f64).collect()),
        (DType::F16, Data::F(v)) => Data::F(
            v.into_iter()
                .map(|x| half::f16::from_f64(x).to_f64())
                .collect(),
        ),
        (DType::BF16, Data::F(v)) => Data::F(
            v.into_iter()
                .map(|x| half::bf16::from_f64(x).to_f64())
                .collect(),
        ),
        (DType::I64, Data::I(v)) => Data::I(v),
        (DType::I32, Data::I(v)) => Data::I(v.into_iter().map(|x| x as i32 as i64).collect()),
        (DType::U8, Data::I(v)) => Data::I(v.into_iter().map(|x| x as u8 as i64).collect()),
        (DType::Bool, Data::I(v)) => Data::I(v.into_iter().map(|x| (x != 0) as i64).collect()),
        (dtype, d) => {
            return Err(format!(
                "computed {} values for a node of dtype {dtype}",
                if matches!(d, Data::F(_)) {
                    "float"
                } else {
                    "integer"
                }
            ))
        }
    })
}

/// Encodes a (rounded) value as a tensor of `dtype`.
fn to_tensor(dtype: DType, v: &Value) -> Tensor {
    let data: Vec<u8> = match &v.data {
        Data::F(x) => match dtype {
            DType::F16 => x
                .iter()
                .flat_map(|&a| half::f16::from_f64(a).to_le_bytes())
                .collect(),
            DType::BF16 => x
                .iter()
                .flat_map(|&a| half::bf16::from_f64(a).to_le_bytes())
                .collect(),
            _ => x.iter().flat_map(|&a| (a as f32).to_le_bytes()).collect(),
        },
        Data::I(x) => match dtype {
            DType::I64 => x.iter().flat_map(|&a| a.to_le_bytes()).collect(),
            DType::I32 => x.iter().flat_map(|&a| (a as i32).to_le_bytes()).collect(),
            _ => x.iter().map(|&a| a as u8).collect(),
        },
    };
    Tensor {
        dtype,
        shape: v.shape.iter().map(|&d| d as u64).collect(),
        data,
    }
}
