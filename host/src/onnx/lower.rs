//! Lowering of IR ops to ONNX nodes.

mod unary;

use onnx_protobuf::{attribute_proto::AttributeType, AttributeProto, NodeProto, TensorProto};

use super::{raw_initializer, EmitError};
use crate::ir::{DType, Dim, Graph, NodeId, Op};

/// Builds ONNX nodes for one graph.
pub(super) struct Lowering<'g> {
    g: &'g Graph,
    names: Vec<String>,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    temp: usize,
}

pub(super) enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

fn attribute(name: &str, a: Attr) -> AttributeProto {
    let mut p = AttributeProto::new();
    p.name = name.to_string();
    match a {
        Attr::Int(i) => {
            p.type_ = protobuf::EnumOrUnknown::new(AttributeType::INT);
            p.i = i;
        }
        Attr::Ints(v) => {
            p.type_ = protobuf::EnumOrUnknown::new(AttributeType::INTS);
            p.ints = v;
        }
        Attr::Float(f) => {
            p.type_ = protobuf::EnumOrUnknown::new(AttributeType::FLOAT);
            p.f = f;
        }
    }
    p
}

fn scalar_bytes(dtype: DType, v: f64) -> Vec<u8> {
    match dtype {
        DType::F32 => (v as f32).to_le_bytes().to_vec(),
        DType::F16 => half::f16::from_f64(v).to_le_bytes().to_vec(),
        DType::BF16 => half::bf16::from_f64(v).to_le_bytes().to_vec(),
        DType::I64 => (v as i64).to_le_bytes().to_vec(),
        DType::I32 => (v as i32).to_le_bytes().to_vec(),
        DType::U8 => vec![v as u8],
        DType::Bool => vec![(v != 0.0) as u8],
    }
}

/// The score given to masked attention positions. It is finite in every
/// float dtype (f16's lowest, which bf16 and f32 also hold), so backends that
/// compute in reduced precision never see -inf, and exp() of it underflows
/// to exactly 0 in all of them, as the finfo.min of transformers does.
fn masked_score(_dtype: DType) -> f64 {
    -65504.0
}

impl<'g> Lowering<'g> {
    pub(super) fn new(g: &'g Graph) -> Self {
        let names = (0..g.nodes.len()).map(|i| format!("v{i}")).collect();
        Lowering {
            g,
            names,
            nodes: Vec::new(),
            inits: Vec::new(),
            temp: 0,
        }
    }

    pub(super) fn name_value(&mut self, id: NodeId, name: String) {
        self.names[id as usize] = name;
    }

    pub(super) fn finish(self) -> (Vec<NodeProto>, Vec<TensorProto>) {
        (self.nodes, self.inits)
    }

    pub(super) fn v(&self, id: NodeId) -> String {
        self.names[id as usize].clone()
    }

    pub(super) fn fresh(&mut self, hint: &str) -> String {
        self.temp += 1;
        format!("t{}_{hint}", self.temp)
    }

    pub(super) fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attrs: Vec<(&str, Attr)>,
    ) {
        let mut n = NodeProto::new();
        n.op_type = op.to_string();
        n.name = format!("{op}_{}", self.nodes.len());
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![output.to_string()];
        n.attribute = attrs.into_iter().map(|(k, a)| attribute(k, a)).collect();
        self.nodes.push(n);
    }

    /// A fresh temp computed by `op`.
    pub(super) fn tmp(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node(op, inputs, &out, attrs);
        out
    }

    fn scalar(&mut self, dtype: DType, v: f64) -> String {
        let name = self.fresh("c");
        self.inits
            .push(raw_initializer(&name, dtype, &[], scalar_bytes(dtype, v)));
        name
    }

    pub(super) fn ints(&mut self, v: &[i64]) -> String {
        let name = self.fresh("i");
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.inits
            .push(raw_initializer(&name, DType::I64, &[v.len() as i64], bytes));
        name
    }

    pub(super) fn identity(&mut self, id: NodeId, output: &str) {
        let x = self.v(id);
        self.node("Identity", &[&x], output, vec![]);
    }

    /// `output` = value `id` (a scalar) as a one-element vector.
    pub(super) fn scalar_out(&mut self, id: NodeId, output: &str) {
        let x = self.v(id);
        let one = self.ints(&[1]);
        self.node("Reshape", &[&x, &one], output, vec![]);
    }

    /// Names value `id` the scalar in graph input `input` (a one-element
    /// vector).
    pub(super) fn scalar_in(&mut self, id: NodeId, input: &str) {
        let none = self.ints(&[]);
        let x = self.tmp("Reshape", &[input, &none], vec![]);
        self.name_value(id, x);
    }

    fn unsupported(&self, message: String) -> EmitError {
        EmitError::Unsupported {
            graph: self.g.name.clone(),
            message,
        }
    }

    /// A 1-element i64 tensor holding the run-time length of symbolic `dim`,
    /// read from the first graph input that has it.
    fn dim_value(&mut self, dim: &Dim) -> Result<String, EmitError> {
        match dim {
            Dim::Fixed(n) => Ok(self.ints(&[*n as i64])),
            Dim::Sym(s) => {
                for &inp in &self.g.inputs {
                    if let Some(axis) = self.g.node(inp).shape.iter().position(|d| d == dim) {
                        // By its graph-input name: it may be declared after
                        // the node that asks.
                        let shape = self.tmp("Shape", &[&self.g.input_name(inp)], vec![]);
                        let (st, en) = (self.ints(&[axis as i64]), self.ints(&[axis as i64 + 1]));
                        return Ok(self.tmp("Slice", &[&shape, &st, &en], vec![]));
                    }
                }
                Err(self.unsupported(format!(
                    "symbolic axis `{s}` is not an axis of any graph input"
                )))
            }
            Dim::Expr(_) | Dim::Window(_) => Err(self.unsupported(format!(
                "computed axis {dim} cannot be used as a target length"
            ))),
        }
    }

    pub(super) fn lower(&mut self, id: NodeId) -> Result<(), EmitError> {
        let node = self.g.node(id).clone();
        let out = self.v(id);
        let dt = node.dtype;
        match &node.op {
            Op::Input { .. } | Op::State { .. } | Op::Weight { .. } => {}
            Op::Gather { x, indices, axis } => self.node(
                "Gather",
                &[&self.v(*x), &self.v(*indices)],
                &out,
                vec![("axis", Attr::Int(*axis as i64))],
            ),
            Op::WriteRows { x, update, start } => self.write_rows(*x, *update, *start, &out),
            Op::ArgMax { x, axis, keep_dims } => self.node(
                "ArgMax",
                &[&self.v(*x)],
                &out,
                vec![
                    ("axis", Attr::Int(*axis as i64)),
                    ("keepdims", Attr::Int(*keep_dims as i64)),
                ],
            ),
            Op::TopKValues { x, k } => {
                // The builder always places the indices node right after the
                // values node: one TopK node yields both.
                let k = self.ints(&[*k as i64]);
                let mut n = NodeProto::new();
                n.op_type = "TopK".into();
                n.name = format!("TopK_{}", self.nodes.len());
                n.input = vec![self.v(*x), k];
                n.output = vec![out.clone(), self.v(id + 1)];
                n.attribute = vec![
                    attribute("axis", Attr::Int(-1)),
                    attribute("largest", Attr::Int(1)),
                    attribute("sorted", Attr::Int(1)),
                ];
                self.nodes.push(n);
            }
            Op::TopKIndices { .. } => {}
            Op::Constant(c) => {
                let dims: Vec<i64> = c.shape.iter().map(|&d| d as i64).collect();
                self.inits
                    .push(raw_initializer(&out, c.dtype, &dims, c.bytes.clone()));
            }
            Op::Unary(op, x) => self.unary(*op, &self.v(*x), &out, dt),
            Op::Binary(op, a, b) => self.node(op.onnx(), &[&self.v(*a), &self.v(*b)], &out, vec![]),
            Op::Compare(op, a, b) => {
                self.node(op.onnx(), &[&self.v(*a), &self.v(*b)], &out, vec![])
            }
            Op::And(a, b) => self.node("And", &[&self.v(*a), &self.v(*b)], &out, vec![]),
            Op::Select { cond, a, b } => self.node(
                "Where",
                &[&self.v(*cond), &self.v(*a), &self.v(*b)],
                &out,
                vec![],
            ),
            Op::Cast(x, to) => self.node(
                "Cast",
                &[&self.v(*x)],
                &out,
                vec![("to", Attr::Int(super::onnx_type(*to) as i64))],
            ),
            Op::MatMul(a, b) => self.node("MatMul", &[&self.v(*a), &self.v(*b)], &out, vec![]),
            Op::Linear { x, weight, bias } => {
                let wt = self.tmp(
                    "Transpose",
                    &[&self.v(*weight)],
                    vec![("perm", Attr::Ints(vec![1, 0]))],
                );
                match bias {
                    Some(b) => {
                        let mm = self.tmp("MatMul", &[&self.v(*x), &wt], vec![]);
                        self.node("Add", &[&mm, &self.v(*b)], &out, vec![]);
                    }
                    None => self.node("MatMul", &[&self.v(*x), &wt], &out, vec![]),
                }
            }
            Op::LayerNorm {
                x,
                scale,
                bias,
                eps_bits,
            } => {
                let mut ins = vec![self.v(*x), self.v(*scale)];
                if let Some(b) = bias {
                    ins.push(self.v(*b));
                }
                let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
                let attrs = vec![
                    ("axis", Attr::Int(-1)),
                    ("epsilon", Attr::Float(f32::from_bits(*eps_bits))),
                ];
                self.node("LayerNormalization", &refs, &out, attrs);
            }
            Op::RmsNorm { x, scale, eps_bits } => {
                let x = self.v(*x);
                let sq = self.tmp("Mul", &[&x, &x], vec![]);
                let axes = self.ints(&[-1]);
                let ms = self.tmp(
                    "ReduceMean",
                    &[&sq, &axes],
                    vec![("keepdims", Attr::Int(1))],
                );
                let eps = self.scalar(dt, f32::from_bits(*eps_bits) as f64);
                let var = self.tmp("Add", &[&ms, &eps], vec![]);
                let rt = self.tmp("Sqrt", &[&var], vec![]);
                let normed = self.tmp("Div", &[&x, &rt], vec![]);
                self.node("Mul", &[&normed, &self.v(*scale)], &out, vec![]);
            }
            Op::Rotary {
                x,
                cos,
                sin,
                interleaved,
            } => self.rotary(*x, *cos, *sin, *interleaved, &out)?,
            Op::Softmax { x, axis } => self.node(
                "Softmax",
                &[&self.v(*x)],
                &out,
                vec![("axis", Attr::Int(*axis as i64))],
            ),
            Op::Attention {
                q,
                k,
                v,
                mask,
                causal,
                scale_bits,
            } => self.attention(
                *q,
                *k,
                *v,
                *mask,
                *causal,
                f32::from_bits(*scale_bits),
                &out,
                dt,
            )?,
            Op::Embedding { table, ids } => self.node(
                "Gather",
                &[&self.v(*table), &self.v(*ids)],
                &out,
                vec![("axis", Attr::Int(0))],
            ),
            Op::Reshape { x, shape } => {
                let s = self.ints(shape);
                self.node("Reshape", &[&self.v(*x), &s], &out, vec![]);
            }
            Op::Permute { x, perm } => {
                let perm = perm.iter().map(|&p| p as i64).collect();
                self.node(
                    "Transpose",
                    &[&self.v(*x)],
                    &out,
                    vec![("perm", Attr::Ints(perm))],
                );
            }
            Op::Slice {
                x,
                axis,
                start,
                end,
            } => {
                let (s, e, a) = (
                    self.ints(&[*start]),
                    self.ints(&[*end]),
                    self.ints(&[*axis as i64]),
                );
                self.node("Slice", &[&self.v(*x), &s, &e, &a], &out, vec![]);
            }
            Op::Concat { xs, axis } => {
                let ins: Vec<String> = xs.iter().map(|&x| self.v(x)).collect();
                let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
                self.node(
                    "Concat",
                    &refs,
                    &out,
                    vec![("axis", Attr::Int(*axis as i64))],
                );
            }
            Op::Unsqueeze { x, axis } => {
                let a = self.ints(&[*axis as i64]);
                self.node("Unsqueeze", &[&self.v(*x), &a], &out, vec![]);
            }
            Op::Squeeze { x, axis } => {
                let a = self.ints(&[*axis as i64]);
                self.node("Squeeze", &[&self.v(*x), &a], &out, vec![]);
            }
            Op::Expand { x, shape } => {
                let xs = self.g.node(*x).shape.clone();
                let offset = shape.len() - xs.len();
                let mut parts = Vec::new();
                for (i, d) in shape.iter().enumerate() {
                    let keep = i >= offset && xs[i - offset] == *d;
                    parts.push(if keep {
                        self.ints(&[1])
                    } else {
                        self.dim_value(d)?
                    });
                }
                let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                let target = self.tmp("Concat", &refs, vec![("axis", Attr::Int(0))]);
                self.node("Expand", &[&self.v(*x), &target], &out, vec![]);
            }
            Op::Reduce {
                op,
                x,
                axes,
                keep_dims,
            } => {
                let name = op.onnx();
                let axes: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
                let a = self.ints(&axes);
                self.node(
                    name,
                    &[&self.v(*x), &a],
                    &out,
                    vec![("keepdims", Attr::Int(*keep_dims as i64))],
                );
            }
            Op::Conv {
                x,
                weight,
                bias,
                attrs,
            } => {
                let kernel: Vec<i64> = self.g.node(*weight).shape[2..]
                    .iter()
                    .map(|d| d.fixed().unwrap_or(1) as i64)
                    .collect();
                let pads: Vec<i64> = (attrs.pad.iter().map(|p| p.0 as i64))
                    .chain(attrs.pad.iter().map(|p| p.1 as i64))
                    .collect();
                let ints = |v: &[u64]| Attr::Ints(v.iter().map(|&x| x as i64).collect());
                let mut inputs = vec![self.v(*x), self.v(*weight)];
                if let Some(b) = bias {
                    inputs.push(self.v(*b));
                }
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                self.node(
                    "Conv",
                    &refs,
                    &out,
                    vec![
                        ("kernel_shape", Attr::Ints(kernel)),
                        ("strides", ints(&attrs.stride)),
                        ("pads", Attr::Ints(pads)),
                        ("dilations", ints(&attrs.dilation)),
                        ("group", Attr::Int(attrs.groups as i64)),
                    ],
                );
            }
            Op::L2Normalize { x, axis, eps_bits } => {
                let x = self.v(*x);
                let a = self.ints(&[*axis as i64]);
                let norm = self.tmp("ReduceL2", &[&x, &a], vec![("keepdims", Attr::Int(1))]);
                let eps = self.scalar(dt, f32::from_bits(*eps_bits) as f64);
                let den = self.tmp("Max", &[&norm, &eps], vec![]);
                self.node("Div", &[&x, &den], &out, vec![]);
            }
        }
        Ok(())
    }

    /// Rotary embedding from Slice, Neg, Concat, Mul and Add (and Reshape
    /// to pair neighbours when `interleaved`).
    fn rotary(
        &mut self,
        x: NodeId,
        cos: NodeId,
        sin: NodeId,
        interleaved: bool,
        out: &str,
    ) -> Result<(), EmitError> {
        let fixed_last = |id: NodeId| match self.g.node(id).shape.last() {
            Some(Dim::Fixed(n)) => Some(*n as i64),
            _ => None,
        };
        let (Some(d), Some(r)) = (fixed_last(x), fixed_last(cos)) else {
            return Err(self.unsupported("rotary needs fixed last axes".into()));
        };
        let rank = self.g.node(x).shape.len();
        let xv = self.v(x);
        let slice = |this: &mut Self, v: &str, a: i64, b: i64| {
            let (st, en, ax) = (this.ints(&[a]), this.ints(&[b]), this.ints(&[-1]));
            this.tmp("Slice", &[v, &st, &en, &ax], vec![])
        };
        let xr = if r < d {
            slice(self, &xv, 0, r)
        } else {
            xv.clone()
        };
        let concat_last = || vec![("axis", Attr::Int(-1))];
        let rot = if interleaved {
            let mut pairs = vec![0i64; rank - 1];
            pairs.extend([r / 2, 2]);
            let pairs = self.ints(&pairs);
            let p = self.tmp("Reshape", &[&xr, &pairs], vec![]);
            let (even, odd) = (slice(self, &p, 0, 1), slice(self, &p, 1, 2));
            let neg = self.tmp("Neg", &[&odd], vec![]);
            let rot = self.tmp("Concat", &[&neg, &even], concat_last());
            let mut back = vec![0i64; rank - 1];
            back.push(r);
            let back = self.ints(&back);
            self.tmp("Reshape", &[&rot, &back], vec![])
        } else {
            let (first, second) = (slice(self, &xr, 0, r / 2), slice(self, &xr, r / 2, r));
            let neg = self.tmp("Neg", &[&second], vec![]);
            self.tmp("Concat", &[&neg, &first], concat_last())
        };
        let a = self.tmp("Mul", &[&xr, &self.v(cos)], vec![]);
        let b = self.tmp("Mul", &[&rot, &self.v(sin)], vec![]);
        if r < d {
            let y = self.tmp("Add", &[&a, &b], vec![]);
            let rest = slice(self, &xv, r, d);
            self.node("Concat", &[&y, &rest], out, concat_last());
        } else {
            self.node("Add", &[&a, &b], out, vec![]);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        mask: Option<NodeId>,
        causal: bool,
        scale: f32,
        out: &str,
        dt: DType,
    ) -> Result<(), EmitError> {
        let (heads, kv_heads) = (
            self.g.node(q).shape[1].fixed().unwrap_or(1),
            self.g.node(k).shape[1].fixed().unwrap_or(1),
        );
        let head_dim = self.g.node(q).shape[3].fixed().unwrap_or(1) as i64;
        let (mut kn, mut vn) = (self.v(k), self.v(v));
        if heads != kv_heads {
            // Grouped-query attention: repeat each kv head heads/kv_heads times.
            let rep = (heads / kv_heads.max(1)) as i64;
            for t in [&mut kn, &mut vn] {
                let ax = self.ints(&[2]);
                let u = self.tmp("Unsqueeze", &[t.as_str(), &ax], vec![]);
                let reps = self.ints(&[1, 1, rep, 1, 1]);
                let tiled = self.tmp("Tile", &[&u, &reps], vec![]);
                let shape = self.ints(&[0, heads as i64, -1, head_dim]);
                *t = self.tmp("Reshape", &[&tiled, &shape], vec![]);
            }
        }
        let kt = self.tmp(
            "Transpose",
            &[&kn],
            vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))],
        );
        let qk = self.tmp("MatMul", &[&self.v(q), &kt], vec![]);
        let sc = self.scalar(dt, scale as f64);
        let mut scores = self.tmp("Mul", &[&qk, &sc], vec![]);
        let mut allowed: Option<String> = None;
        if let Some(m) = mask {
            if self.g.node(m).dtype == DType::Bool {
                allowed = Some(self.v(m));
            } else {
                scores = self.tmp("Add", &[&scores, &self.v(m)], vec![]);
            }
        }
        if causal {
            let shape = self.tmp("Shape", &[&scores], vec![]);
            let (s2, s3, s4) = (self.ints(&[2]), self.ints(&[3]), self.ints(&[4]));
            let sq = self.tmp("Slice", &[&shape, &s2, &s3], vec![]);
            let sk = self.tmp("Slice", &[&shape, &s3, &s4], vec![]);
            let both = self.tmp("Concat", &[&sq, &sk], vec![("axis", Attr::Int(0))]);
            let ones = {
                let mut n = NodeProto::new();
                let o = self.fresh("ones");
                n.op_type = "ConstantOfShape".into();
                n.name = format!("ConstantOfShape_{}", self.nodes.len());
                n.input = vec![both];
                n.output = vec![o.clone()];
                let mut a = AttributeProto::new();
                a.name = "value".into();
                a.type_ = protobuf::EnumOrUnknown::new(AttributeType::TENSOR);
                a.t = protobuf::MessageField::some(raw_initializer(
                    "",
                    DType::F32,
                    &[1],
                    1f32.to_le_bytes().to_vec(),
                ));
                n.attribute = vec![a];
                self.nodes.push(n);
                o
            };
            let diff = self.tmp("Sub", &[&sk, &sq], vec![]);
            let zero_ax = self.ints(&[0]);
            let kdiag = self.tmp("Squeeze", &[&diff, &zero_ax], vec![]);
            let tri = self.tmp("Trilu", &[&ones, &kdiag], vec![("upper", Attr::Int(0))]);
            let zero = self.scalar(DType::F32, 0.0);
            let c = self.tmp("Greater", &[&tri, &zero], vec![]);
            allowed = Some(match allowed {
                Some(a) => self.tmp("And", &[&a, &c], vec![]),
                None => c,
            });
        }
        if let Some(a) = allowed {
            // An additive bias (0 or the masked score) built on the small mask
            // tensor, then added: the MatMul-Add-Softmax-MatMul shape that
            // ONNX Runtime and OpenVINO recognise as attention.
            let (zero, low) = (self.scalar(dt, 0.0), self.scalar(dt, masked_score(dt)));
            let bias = self.tmp("Where", &[&a, &zero, &low], vec![]);
            scores = self.tmp("Add", &[&scores, &bias], vec![]);
        }
        let probs = self.tmp("Softmax", &[&scores], vec![("axis", Attr::Int(-1))]);
        self.node("MatMul", &[&probs, &vn], out, vec![]);
        Ok(())
    }
}
