//! Records a graph op by op, checking operands and inferring the dtype and
//! symbolic shape of every new node.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::shape::{broadcast, fixed_elements, reshape, same_dim, sum_dims};
use super::*;

/// Limits that keep a hostile graph from exhausting the host.
#[derive(Clone, Debug)]
pub struct BuilderLimits {
    /// Most nodes one graph may have.
    pub max_nodes: usize,
    /// Most elements any tensor may have (fixed axes only at build time).
    pub max_elements: u64,
    /// Most bytes of one constant.
    pub max_constant_bytes: usize,
    /// Most axes of a tensor.
    pub max_rank: usize,
}

impl Default for BuilderLimits {
    fn default() -> Self {
        BuilderLimits {
            max_nodes: 200_000,
            max_elements: 1 << 31,
            max_constant_bytes: 1 << 20,
            max_rank: 8,
        }
    }
}

/// Weight name -> (dtype, shape), as the model's safetensors describe them.
pub type WeightTypes = Arc<HashMap<String, (DType, Vec<u64>)>>;

/// Records one graph. Every method validates its operands.
pub struct GraphBuilder {
    name: String,
    nodes: Vec<Node>,
    inputs: Vec<NodeId>,
    outputs: Vec<(String, NodeId)>,
    names: HashSet<String>,
    weights: WeightTypes,
    weight_nodes: HashMap<String, NodeId>,
    limits: BuilderLimits,
    min_lengths: Vec<(Dim, u64)>,
    states: Vec<(String, NodeId)>,
    state_types: HashMap<String, (DType, usize)>,
}

pub(super) type R = Result<NodeId, GraphError>;

impl GraphBuilder {
    pub fn new(name: &str, weights: WeightTypes, limits: BuilderLimits) -> Self {
        GraphBuilder {
            name: name.to_string(),
            nodes: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            names: HashSet::new(),
            weights,
            weight_nodes: HashMap::new(),
            limits,
            min_lengths: Vec::new(),
            states: Vec::new(),
            state_types: HashMap::new(),
        }
    }

    pub(super) fn err(&self, op: &str, message: impl Into<String>) -> GraphError {
        GraphError::Invalid {
            graph: self.name.clone(),
            op: op.to_string(),
            message: message.into(),
        }
    }

    /// The node behind an id.
    pub fn get(&self, id: NodeId) -> Result<&Node, GraphError> {
        self.nodes.get(id as usize).ok_or(GraphError::UnknownNode {
            graph: self.name.clone(),
            id,
            count: self.nodes.len(),
        })
    }

    pub(super) fn push(&mut self, op: Op, dtype: DType, shape: Shape) -> R {
        if self.nodes.len() >= self.limits.max_nodes {
            return Err(GraphError::Structure {
                graph: self.name.clone(),
                message: format!("more than {} nodes", self.limits.max_nodes),
            });
        }
        if shape.len() > self.limits.max_rank {
            return Err(self.err(
                op.kind(),
                format!(
                    "rank {} exceeds the limit of {}",
                    shape.len(),
                    self.limits.max_rank
                ),
            ));
        }
        let elements = fixed_elements(&shape);
        if elements > self.limits.max_elements as u128 {
            return Err(GraphError::TooLarge {
                graph: self.name.clone(),
                what: format!("{} of shape {}", op.kind(), shape_str(&shape)),
                elements,
                limit: self.limits.max_elements,
            });
        }
        self.nodes.push(Node { op, dtype, shape });
        Ok((self.nodes.len() - 1) as NodeId)
    }

    fn axis(&self, op: &str, axis: i32, rank: usize) -> Result<usize, GraphError> {
        let a = if axis < 0 {
            axis as i64 + rank as i64
        } else {
            axis as i64
        };
        if a < 0 || a >= rank as i64 {
            return Err(self.err(op, format!("axis {axis} is out of range for rank {rank}")));
        }
        Ok(a as usize)
    }

    pub(super) fn float(&self, op: &str, id: NodeId) -> Result<&Node, GraphError> {
        let n = self.get(id)?;
        if !n.dtype.is_float() {
            return Err(self.err(
                op,
                format!(
                    "expected a floating-point operand, got {} (node {id})",
                    n.dtype
                ),
            ));
        }
        Ok(n)
    }

    pub(super) fn same_dtype(&self, op: &str, a: &Node, b: &Node) -> Result<(), GraphError> {
        if a.dtype != b.dtype {
            return Err(self.err(
                op,
                format!(
                    "operand dtypes differ: {} vs {} (cast one first)",
                    a.dtype, b.dtype
                ),
            ));
        }
        Ok(())
    }

    pub fn input(&mut self, name: &str, dtype: DType, shape: Shape) -> R {
        if name.is_empty() || !self.names.insert(format!("in:{name}")) {
            return Err(self.err(
                "input",
                format!("input name `{name}` is empty or already used"),
            ));
        }
        self.push_input(
            Op::Input {
                name: name.to_string(),
            },
            dtype,
            shape,
        )
    }

    /// Adds a node fed at run time (an input or a state) to the inputs.
    fn push_input(&mut self, op: Op, dtype: DType, shape: Shape) -> R {
        let id = self.push(op, dtype, shape)?;
        self.inputs.push(id);
        Ok(id)
    }

    /// A session-held tensor.
    pub fn state(&mut self, name: &str, dtype: DType, shape: Shape) -> R {
        if name.is_empty() || name.contains('.') || self.state_types.contains_key(name) {
            return Err(self.err(
                "state",
                format!("state name `{name}` is empty, contains '.', or is already used"),
            ));
        }
        self.state_types
            .insert(name.to_string(), (dtype, shape.len()));
        self.push_input(
            Op::State {
                name: name.to_string(),
            },
            dtype,
            shape,
        )
    }

    /// The next value of state `name`.
    pub fn update_state(&mut self, name: &str, x: NodeId) -> Result<(), GraphError> {
        let n = self.get(x)?.clone();
        let Some(&(dtype, rank)) = self.state_types.get(name) else {
            return Err(self.err("update-state", format!("no state named `{name}`")));
        };
        if n.dtype != dtype || n.shape.len() != rank {
            return Err(self.err(
                "update-state",
                format!(
                    "state `{name}` is {dtype} of rank {rank}, got {} {}",
                    n.dtype,
                    shape_str(&n.shape)
                ),
            ));
        }
        if self.states.iter().any(|(s, _)| s == name) {
            return Err(self.err("update-state", format!("state `{name}` is already updated")));
        }
        self.states.push((name.to_string(), x));
        self.outputs.push((state_output_name(name), x));
        Ok(())
    }

    pub fn gather(&mut self, x: NodeId, indices: NodeId, axis: i32) -> R {
        let (nx, ni) = (self.get(x)?.clone(), self.get(indices)?.clone());
        if !matches!(ni.dtype, DType::I64 | DType::I32) {
            return Err(self.err(
                "gather",
                format!("indices must be i64 or i32, got {}", ni.dtype),
            ));
        }
        let axis = self.axis("gather", axis, nx.shape.len())?;
        let mut shape = nx.shape[..axis].to_vec();
        shape.extend(ni.shape.iter().cloned());
        shape.extend(nx.shape[axis + 1..].iter().cloned());
        self.push(Op::Gather { x, indices, axis }, nx.dtype, shape)
    }

    pub fn argmax(&mut self, x: NodeId, axis: i32, keep_dims: bool) -> R {
        let n = self.get(x)?.clone();
        if n.dtype == DType::Bool {
            return Err(self.err("argmax", "does not accept bool"));
        }
        let axis = self.axis("argmax", axis, n.shape.len())?;
        let mut shape = n.shape.clone();
        if keep_dims {
            shape[axis] = Dim::Fixed(1);
        } else {
            shape.remove(axis);
        }
        self.push(Op::ArgMax { x, axis, keep_dims }, DType::I64, shape)
    }

    /// (values, indices) of the `k` largest along the last axis.
    pub fn top_k(&mut self, x: NodeId, k: u32) -> Result<(NodeId, NodeId), GraphError> {
        let n = self.get(x)?.clone();
        let last = n
            .shape
            .last()
            .cloned()
            .ok_or_else(|| self.err("top-k", "x must have rank >= 1"))?;
        if k == 0 || last.fixed().is_some_and(|l| (k as u64) > l) {
            return Err(self.err("top-k", format!("k = {k} must be in 1..={last}")));
        }
        let mut shape = n.shape.clone();
        *shape.last_mut().expect("rank checked") = Dim::Fixed(k as u64);
        let v = self.push(Op::TopKValues { x, k }, n.dtype, shape.clone())?;
        let i = self.push(Op::TopKIndices { x, k }, DType::I64, shape)?;
        Ok((v, i))
    }

    pub fn weight(&mut self, name: &str) -> R {
        if let Some(&id) = self.weight_nodes.get(name) {
            return Ok(id);
        }
        let Some((dtype, shape)) = self.weights.get(name).cloned() else {
            let mut close: Vec<&String> = self
                .weights
                .keys()
                .filter(|k| k.ends_with(name.rsplit('.').next().unwrap_or(name)))
                .take(3)
                .collect();
            close.sort();
            let hint = if close.is_empty() {
                String::new()
            } else {
                format!(" (similar: {close:?})")
            };
            return Err(GraphError::UnknownWeight {
                graph: self.name.clone(),
                name: name.to_string(),
                available: self.weights.len(),
                hint,
            });
        };
        let id = self.push(
            Op::Weight {
                name: name.to_string(),
            },
            dtype,
            shape.into_iter().map(Dim::Fixed).collect(),
        )?;
        self.weight_nodes.insert(name.to_string(), id);
        Ok(id)
    }

    pub fn constant(&mut self, c: ConstData) -> R {
        if c.bytes.len() > self.limits.max_constant_bytes {
            return Err(self.err(
                "constant",
                format!(
                    "{} bytes exceed the limit of {} (use a weight)",
                    c.bytes.len(),
                    self.limits.max_constant_bytes
                ),
            ));
        }
        let count = c
            .shape
            .iter()
            .fold(1u128, |a, &d| a.saturating_mul(d as u128));
        if count.saturating_mul(c.dtype.size() as u128) != c.bytes.len() as u128 {
            return Err(self.err(
                "constant",
                format!(
                    "shape {:?} of {} needs {} bytes, got {}",
                    c.shape,
                    c.dtype,
                    count * c.dtype.size() as u128,
                    c.bytes.len()
                ),
            ));
        }
        let (dtype, shape) = (c.dtype, c.shape.iter().map(|&d| Dim::Fixed(d)).collect());
        self.push(Op::Constant(c), dtype, shape)
    }

    pub fn scalar(&mut self, value: f64, dtype: DType) -> R {
        let bytes = match dtype {
            DType::F32 => (value as f32).to_le_bytes().to_vec(),
            DType::F16 => half::f16::from_f64(value).to_le_bytes().to_vec(),
            DType::BF16 => half::bf16::from_f64(value).to_le_bytes().to_vec(),
            DType::I64 => (value as i64).to_le_bytes().to_vec(),
            DType::I32 => (value as i32).to_le_bytes().to_vec(),
            DType::U8 => vec![value as u8],
            DType::Bool => vec![(value != 0.0) as u8],
        };
        self.constant(ConstData {
            dtype,
            shape: vec![],
            bytes,
        })
    }

    pub fn unary(&mut self, op: UnaryOp, x: NodeId) -> R {
        let n = self.get(x)?.clone();
        if !op.operands().accepts(n.dtype) {
            return Err(self.err("unary", format!("{op:?} does not accept {}", n.dtype)));
        }
        self.push(Op::Unary(op, x), n.dtype, n.shape)
    }

    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> R {
        let (na, nb) = (self.get(a)?.clone(), self.get(b)?.clone());
        self.same_dtype("binary", &na, &nb)?;
        if na.dtype == DType::Bool {
            return Err(self.err("binary", format!("{op:?} does not accept bool")));
        }
        let shape = broadcast(&na.shape, &nb.shape).map_err(|m| self.err("binary", m))?;
        self.push(Op::Binary(op, a, b), na.dtype, shape)
    }

    pub fn compare(&mut self, op: CompareOp, a: NodeId, b: NodeId) -> R {
        let (na, nb) = (self.get(a)?.clone(), self.get(b)?.clone());
        self.same_dtype("compare", &na, &nb)?;
        let shape = broadcast(&na.shape, &nb.shape).map_err(|m| self.err("compare", m))?;
        self.push(Op::Compare(op, a, b), DType::Bool, shape)
    }

    pub fn and(&mut self, a: NodeId, b: NodeId) -> R {
        let (na, nb) = (self.get(a)?.clone(), self.get(b)?.clone());
        if na.dtype != DType::Bool || nb.dtype != DType::Bool {
            return Err(self.err(
                "logical-and",
                format!("expected bool operands, got {} and {}", na.dtype, nb.dtype),
            ));
        }
        let shape = broadcast(&na.shape, &nb.shape).map_err(|m| self.err("logical-and", m))?;
        self.push(Op::And(a, b), DType::Bool, shape)
    }

    pub fn select(&mut self, cond: NodeId, a: NodeId, b: NodeId) -> R {
        let (nc, na, nb) = (
            self.get(cond)?.clone(),
            self.get(a)?.clone(),
            self.get(b)?.clone(),
        );
        if nc.dtype != DType::Bool {
            return Err(self.err(
                "select",
                format!("condition must be bool, got {}", nc.dtype),
            ));
        }
        self.same_dtype("select", &na, &nb)?;
        let s = broadcast(&na.shape, &nb.shape).map_err(|m| self.err("select", m))?;
        let s = broadcast(&nc.shape, &s).map_err(|m| self.err("select", m))?;
        self.push(Op::Select { cond, a, b }, na.dtype, s)
    }

    pub fn cast(&mut self, x: NodeId, to: DType) -> R {
        let n = self.get(x)?.clone();
        self.push(Op::Cast(x, to), to, n.shape)
    }

    pub fn matmul(&mut self, a: NodeId, b: NodeId) -> R {
        let (na, nb) = (
            self.float("matmul", a)?.clone(),
            self.float("matmul", b)?.clone(),
        );
        self.same_dtype("matmul", &na, &nb)?;
        if na.shape.len() < 2 || nb.shape.len() < 2 {
            return Err(self.err(
                "matmul",
                format!(
                    "operands need rank >= 2, got {} and {}",
                    shape_str(&na.shape),
                    shape_str(&nb.shape)
                ),
            ));
        }
        let (ra, rb) = (na.shape.len(), nb.shape.len());
        if !same_dim(&na.shape[ra - 1], &nb.shape[rb - 2]) {
            return Err(self.err(
                "matmul",
                format!(
                    "inner axes differ: {} x {}",
                    shape_str(&na.shape),
                    shape_str(&nb.shape)
                ),
            ));
        }
        let mut shape = broadcast(&na.shape[..ra - 2], &nb.shape[..rb - 2])
            .map_err(|m| self.err("matmul", m))?;
        shape.push(na.shape[ra - 2].clone());
        shape.push(nb.shape[rb - 1].clone());
        self.push(Op::MatMul(a, b), na.dtype, shape)
    }

    pub fn linear(&mut self, x: NodeId, weight: NodeId, bias: Option<NodeId>) -> R {
        let (nx, nw) = (
            self.float("linear", x)?.clone(),
            self.float("linear", weight)?.clone(),
        );
        self.same_dtype("linear", &nx, &nw)?;
        if nw.shape.len() != 2 || nx.shape.is_empty() {
            return Err(self.err(
                "linear",
                format!(
                    "expected weight [out, in] and x [..., in], got weight {} and x {}",
                    shape_str(&nw.shape),
                    shape_str(&nx.shape)
                ),
            ));
        }
        let last = &nx.shape[nx.shape.len() - 1];
        if !same_dim(last, &nw.shape[1]) {
            return Err(self.err(
                "linear",
                format!(
                    "x {} has {last} input features, weight {} expects {}",
                    shape_str(&nx.shape),
                    shape_str(&nw.shape),
                    nw.shape[1]
                ),
            ));
        }
        if let Some(b) = bias {
            let nb = self.get(b)?.clone();
            self.same_dtype("linear", &nx, &nb)?;
            if nb.shape.len() != 1 || !same_dim(&nb.shape[0], &nw.shape[0]) {
                return Err(self.err(
                    "linear",
                    format!(
                        "bias must be [{}], got {}",
                        nw.shape[0],
                        shape_str(&nb.shape)
                    ),
                ));
            }
        }
        let mut shape = nx.shape.clone();
        *shape.last_mut().expect("rank checked above") = nw.shape[0].clone();
        self.push(Op::Linear { x, weight, bias }, nx.dtype, shape)
    }

    fn norm_param(&self, op: &str, x: &Node, p: NodeId) -> Result<(), GraphError> {
        let np = self.get(p)?;
        self.same_dtype(op, x, np)?;
        let last = x
            .shape
            .last()
            .ok_or_else(|| self.err(op, "x must have rank >= 1"))?;
        if np.shape.len() != 1 || !same_dim(&np.shape[0], last) {
            return Err(self.err(
                op,
                format!("parameter must be [{last}], got {}", shape_str(&np.shape)),
            ));
        }
        Ok(())
    }

    pub fn layer_norm(&mut self, x: NodeId, scale: NodeId, bias: Option<NodeId>, eps: f32) -> R {
        let nx = self.float("layer-norm", x)?.clone();
        self.norm_param("layer-norm", &nx, scale)?;
        if let Some(b) = bias {
            self.norm_param("layer-norm", &nx, b)?;
        }
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(self.err(
                "layer-norm",
                format!("epsilon must be finite and >= 0, got {eps}"),
            ));
        }
        self.push(
            Op::LayerNorm {
                x,
                scale,
                bias,
                eps_bits: eps.to_bits(),
            },
            nx.dtype,
            nx.shape,
        )
    }

    pub fn rms_norm(&mut self, x: NodeId, scale: NodeId, eps: f32) -> R {
        let nx = self.float("rms-norm", x)?.clone();
        self.norm_param("rms-norm", &nx, scale)?;
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(self.err(
                "rms-norm",
                format!("epsilon must be finite and >= 0, got {eps}"),
            ));
        }
        self.push(
            Op::RmsNorm {
                x,
                scale,
                eps_bits: eps.to_bits(),
            },
            nx.dtype,
            nx.shape,
        )
    }

    /// Rotary position embedding: the first `r` elements of x's last axis
    /// (`r`, even, is cos's last axis) become `x * cos + rotate(x) * sin`;
    /// the rest pass through. `rotate` pairs element i with i + r/2 (the
    /// halves, LLaMA) or 2i with 2i+1 (`interleaved`, GPT-J), giving
    /// (-second, first). cos and sin have one shape that broadcasts to x's
    /// leading axes.
    pub fn rotary(&mut self, x: NodeId, cos: NodeId, sin: NodeId, interleaved: bool) -> R {
        let nx = self.float("rotary", x)?.clone();
        let nc = self.float("rotary", cos)?.clone();
        let ns = self.float("rotary", sin)?.clone();
        self.same_dtype("rotary", &nx, &nc)?;
        self.same_dtype("rotary", &nx, &ns)?;
        let (d, r) = match (nx.shape.last(), nc.shape.last()) {
            (Some(Dim::Fixed(d)), Some(Dim::Fixed(r))) => (*d, *r),
            _ => {
                return Err(self.err(
                    "rotary",
                    format!(
                        "x and cos need fixed last axes, got {} and {}",
                        shape_str(&nx.shape),
                        shape_str(&nc.shape)
                    ),
                ))
            }
        };
        let same = nc.shape.len() == ns.shape.len()
            && nc.shape.iter().zip(&ns.shape).all(|(a, b)| same_dim(a, b));
        if !same || r == 0 || r % 2 != 0 || r > d {
            return Err(self.err(
                "rotary",
                format!(
                    "cos and sin need one shape whose last axis is even and at most {d}, got {} and {}",
                    shape_str(&nc.shape),
                    shape_str(&ns.shape)
                ),
            ));
        }
        let lead = |s: &[Dim]| s[..s.len() - 1].to_vec();
        let fits = broadcast(&lead(&nx.shape), &lead(&nc.shape)).is_ok_and(|b| {
            b.len() == nx.shape.len() - 1 && b.iter().zip(&nx.shape).all(|(a, b)| same_dim(a, b))
        });
        if !fits {
            return Err(self.err(
                "rotary",
                format!(
                    "cos {} does not broadcast to x {}",
                    shape_str(&nc.shape),
                    shape_str(&nx.shape)
                ),
            ));
        }
        self.push(
            Op::Rotary {
                x,
                cos,
                sin,
                interleaved,
            },
            nx.dtype,
            nx.shape,
        )
    }

    pub fn softmax(&mut self, x: NodeId, axis: i32) -> R {
        let n = self.float("softmax", x)?.clone();
        let axis = self.axis("softmax", axis, n.shape.len())?;
        self.push(Op::Softmax { x, axis }, n.dtype, n.shape)
    }

    pub fn attention(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        mask: Option<NodeId>,
        causal: bool,
        scale: Option<f32>,
    ) -> R {
        let (nq, nk, nv) = (
            self.float("attention", q)?.clone(),
            self.float("attention", k)?.clone(),
            self.float("attention", v)?.clone(),
        );
        self.same_dtype("attention", &nq, &nk)?;
        self.same_dtype("attention", &nq, &nv)?;
        if nq.shape.len() != 4 || nk.shape.len() != 4 || nv.shape.len() != 4 {
            return Err(self.err(
                "attention",
                format!(
                    "q, k, v must be [batch, heads, seq, head_dim], got {} {} {}",
                    shape_str(&nq.shape),
                    shape_str(&nk.shape),
                    shape_str(&nv.shape)
                ),
            ));
        }
        if !same_dim(&nq.shape[3], &nk.shape[3])
            || !same_dim(&nk.shape[2], &nv.shape[2])
            || !same_dim(&nk.shape[1], &nv.shape[1])
        {
            return Err(self.err(
                "attention",
                format!(
                    "head_dim/seq_k/kv_heads of q {} k {} v {} disagree",
                    shape_str(&nq.shape),
                    shape_str(&nk.shape),
                    shape_str(&nv.shape)
                ),
            ));
        }
        match (nq.shape[1].fixed(), nk.shape[1].fixed()) {
            (Some(h), Some(kv)) if kv > 0 && h % kv == 0 => {}
            _ => {
                return Err(self.err(
                    "attention",
                    format!(
                        "heads ({}) must be a fixed multiple of kv_heads ({})",
                        nq.shape[1], nk.shape[1]
                    ),
                ))
            }
        }
        let head_dim = nq.shape[3]
            .fixed()
            .ok_or_else(|| self.err("attention", "head_dim must be fixed"))?;
        if let Some(m) = mask {
            let nm = self.get(m)?.clone();
            if nm.dtype != DType::Bool && nm.dtype != nq.dtype {
                return Err(self.err(
                    "attention",
                    format!("mask must be bool or {}, got {}", nq.dtype, nm.dtype),
                ));
            }
            let scores = vec![
                nq.shape[0].clone(),
                nq.shape[1].clone(),
                nq.shape[2].clone(),
                nk.shape[2].clone(),
            ];
            let b = broadcast(&nm.shape, &scores)
                .map_err(|e| self.err("attention", format!("mask: {e}")))?;
            if b.len() != 4 || !b.iter().zip(&scores).all(|(x, y)| same_dim(x, y)) {
                return Err(self.err(
                    "attention",
                    format!(
                        "mask {} does not broadcast to scores {}",
                        shape_str(&nm.shape),
                        shape_str(&scores)
                    ),
                ));
            }
        }
        let scale = scale.unwrap_or(1.0 / (head_dim.max(1) as f32).sqrt());
        if !scale.is_finite() {
            return Err(self.err("attention", "scale must be finite"));
        }
        let mut shape = nq.shape.clone();
        shape[3] = nv.shape[3].clone();
        self.push(
            Op::Attention {
                q,
                k,
                v,
                mask,
                causal,
                scale_bits: scale.to_bits(),
            },
            nq.dtype,
            shape,
        )
    }

    pub fn embedding(&mut self, table: NodeId, ids: NodeId) -> R {
        let (nt, ni) = (self.get(table)?.clone(), self.get(ids)?.clone());
        if nt.shape.len() != 2 {
            return Err(self.err(
                "embedding",
                format!("table must be [vocab, width], got {}", shape_str(&nt.shape)),
            ));
        }
        if !matches!(ni.dtype, DType::I64 | DType::I32) {
            return Err(self.err(
                "embedding",
                format!("ids must be i64 or i32, got {}", ni.dtype),
            ));
        }
        let mut shape = ni.shape.clone();
        shape.push(nt.shape[1].clone());
        self.push(Op::Embedding { table, ids }, nt.dtype, shape)
    }

    pub fn reshape(&mut self, x: NodeId, spec: Vec<i64>) -> R {
        let n = self.get(x)?.clone();
        let shape = reshape(&n.shape, &spec).map_err(|m| self.err("reshape", m))?;
        self.push(Op::Reshape { x, shape: spec }, n.dtype, shape)
    }

    pub fn permute(&mut self, x: NodeId, perm: Vec<u32>) -> R {
        let n = self.get(x)?.clone();
        let mut seen = vec![false; n.shape.len()];
        let ok = perm.len() == n.shape.len()
            && perm.iter().all(|&p| {
                (p as usize) < seen.len() && !std::mem::replace(&mut seen[p as usize], true)
            });
        if !ok {
            return Err(self.err(
                "permute",
                format!("{perm:?} is not a permutation of {} axes", n.shape.len()),
            ));
        }
        let perm: Vec<usize> = perm.into_iter().map(|p| p as usize).collect();
        let shape = perm.iter().map(|&p| n.shape[p].clone()).collect();
        self.push(Op::Permute { x, perm }, n.dtype, shape)
    }

    pub fn slice(&mut self, x: NodeId, axis: i32, start: i64, end: i64) -> R {
        let n = self.get(x)?.clone();
        let axis = self.axis("slice", axis, n.shape.len())?;
        if start < 0 || end < start {
            return Err(self.err(
                "slice",
                format!("need 0 <= start <= end, got {start}..{end}"),
            ));
        }
        let mut shape = n.shape.clone();
        shape[axis] = match &n.shape[axis] {
            Dim::Fixed(len) => Dim::Fixed((end.min(*len as i64) - start.min(*len as i64)) as u64),
            sym => {
                // A symbolic axis must be at least `end` long at run time.
                self.min_lengths.push((sym.clone(), end as u64));
                Dim::Fixed((end - start) as u64)
            }
        };
        self.push(
            Op::Slice {
                x,
                axis,
                start,
                end,
            },
            n.dtype,
            shape,
        )
    }

    pub fn concat(&mut self, xs: Vec<NodeId>, axis: i32) -> R {
        let first = self
            .get(
                *xs.first()
                    .ok_or_else(|| self.err("concat", "needs at least one operand"))?,
            )?
            .clone();
        let axis = self.axis("concat", axis, first.shape.len())?;
        let mut total: Vec<Dim> = Vec::new();
        for &x in &xs {
            let n = self.get(x)?;
            self.same_dtype("concat", &first, n)?;
            let same_rest = n.shape.len() == first.shape.len()
                && n.shape
                    .iter()
                    .zip(&first.shape)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || same_dim(a, b));
            if !same_rest {
                return Err(self.err(
                    "concat",
                    format!(
                        "{} and {} differ outside axis {axis}",
                        shape_str(&first.shape),
                        shape_str(&n.shape)
                    ),
                ));
            }
            total.push(n.shape[axis].clone());
        }
        let mut shape = first.shape.clone();
        shape[axis] = sum_dims(&total);
        self.push(Op::Concat { xs, axis }, first.dtype, shape)
    }

    pub fn unsqueeze(&mut self, x: NodeId, axis: i32) -> R {
        let n = self.get(x)?.clone();
        let axis = self.axis("unsqueeze", axis, n.shape.len() + 1)?;
        let mut shape = n.shape.clone();
        shape.insert(axis, Dim::Fixed(1));
        self.push(Op::Unsqueeze { x, axis }, n.dtype, shape)
    }

    pub fn squeeze(&mut self, x: NodeId, axis: i32) -> R {
        let n = self.get(x)?.clone();
        let axis = self.axis("squeeze", axis, n.shape.len())?;
        if n.shape[axis] != Dim::Fixed(1) {
            return Err(self.err(
                "squeeze",
                format!("axis {axis} of {} is not 1", shape_str(&n.shape)),
            ));
        }
        let mut shape = n.shape.clone();
        shape.remove(axis);
        self.push(Op::Squeeze { x, axis }, n.dtype, shape)
    }

    pub fn expand(&mut self, x: NodeId, target: Shape) -> R {
        let n = self.get(x)?.clone();
        let shape = broadcast(&n.shape, &target).map_err(|m| self.err("expand", m))?;
        if shape.len() != target.len() || !shape.iter().zip(&target).all(|(a, b)| same_dim(a, b)) {
            return Err(self.err(
                "expand",
                format!(
                    "{} does not expand to {}",
                    shape_str(&n.shape),
                    shape_str(&target)
                ),
            ));
        }
        self.push(Op::Expand { x, shape: target }, n.dtype, shape)
    }

    pub fn reduce(&mut self, op: ReduceOp, x: NodeId, axes: Vec<i32>, keep_dims: bool) -> R {
        let n = self.get(x)?.clone();
        if n.dtype == DType::Bool {
            return Err(self.err("reduce", "does not accept bool (cast first)"));
        }
        let mut ax: Vec<usize> = axes
            .iter()
            .map(|&a| self.axis("reduce", a, n.shape.len()))
            .collect::<Result<_, _>>()?;
        ax.sort_unstable();
        ax.dedup();
        if ax.is_empty() {
            return Err(self.err("reduce", "needs at least one axis"));
        }
        let shape = n
            .shape
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match (ax.contains(&i), keep_dims) {
                (false, _) => Some(d.clone()),
                (true, true) => Some(Dim::Fixed(1)),
                (true, false) => None,
            })
            .collect();
        self.push(
            Op::Reduce {
                op,
                x,
                axes: ax,
                keep_dims,
            },
            n.dtype,
            shape,
        )
    }

    pub fn l2_normalize(&mut self, x: NodeId, axis: i32, eps: f32) -> R {
        let n = self.float("l2-normalize", x)?.clone();
        let axis = self.axis("l2-normalize", axis, n.shape.len())?;
        self.push(
            Op::L2Normalize {
                x,
                axis,
                eps_bits: eps.to_bits(),
            },
            n.dtype,
            n.shape,
        )
    }

    pub fn output(&mut self, name: &str, x: NodeId) -> Result<(), GraphError> {
        self.get(x)?;
        if name.is_empty() || !self.names.insert(format!("out:{name}")) {
            return Err(self.err(
                "output",
                format!("output name `{name}` is empty or already used"),
            ));
        }
        self.outputs.push((name.to_string(), x));
        Ok(())
    }

    /// Finishes the graph: it must have outputs, and inputs must not be
    /// shadowed by output names.
    pub fn finish(self) -> Result<Graph, GraphError> {
        if self.outputs.is_empty() {
            return Err(GraphError::Structure {
                graph: self.name,
                message: "a graph needs at least one output".into(),
            });
        }
        let mut seen = HashSet::new();
        let shape_firsts = (0..self.nodes.len())
            .filter(|&i| seen.insert(&self.nodes[i].shape))
            .map(|i| i as NodeId)
            .collect();
        Ok(Graph {
            name: self.name,
            shape_firsts,
            nodes: self.nodes,
            inputs: self.inputs,
            outputs: self.outputs,
            min_lengths: self.min_lengths,
            states: self.states,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> GraphBuilder {
        let mut w = HashMap::new();
        w.insert("w".to_string(), (DType::F32, vec![8, 4]));
        w.insert("b".to_string(), (DType::F32, vec![8]));
        GraphBuilder::new("t", Arc::new(w), BuilderLimits::default())
    }

    #[test]
    fn linear_infers_and_checks() {
        let mut g = builder();
        let x = g
            .input("x", DType::F32, vec![Dim::Sym("b".into()), Dim::Fixed(4)])
            .unwrap();
        let (w, b) = (g.weight("w").unwrap(), g.weight("b").unwrap());
        let y = g.linear(x, w, Some(b)).unwrap();
        assert_eq!(
            g.get(y).unwrap().shape,
            vec![Dim::Sym("b".into()), Dim::Fixed(8)]
        );
        let bad = g.linear(y, w, None).unwrap_err();
        assert!(bad.to_string().contains("input features"), "{bad}");
        assert!(matches!(
            g.weight("nope"),
            Err(GraphError::UnknownWeight { .. })
        ));
    }

    #[test]
    fn huge_tensor_is_rejected_before_allocation() {
        let mut g = builder();
        let x = g.input("x", DType::F32, vec![Dim::Fixed(1)]).unwrap();
        let e = g
            .expand(x, vec![Dim::Fixed(1_000_000), Dim::Fixed(1_000_000)])
            .unwrap_err();
        assert!(matches!(e, GraphError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn dtype_mismatch_and_bad_axes() {
        let mut g = builder();
        let x = g.input("x", DType::F32, vec![Dim::Fixed(2)]).unwrap();
        let i = g.input("i", DType::I64, vec![Dim::Fixed(2)]).unwrap();
        assert!(g
            .binary(BinaryOp::Add, x, i)
            .unwrap_err()
            .to_string()
            .contains("dtypes differ"));
        assert!(g.softmax(x, 3).is_err());
        assert!(g.permute(x, vec![0, 0]).is_err());
        assert!(matches!(g.get(999), Err(GraphError::UnknownNode { .. })));
        assert!(g.input("x", DType::F32, vec![]).is_err());
        let empty = builder();
        assert!(empty.finish().is_err());
    }
}
