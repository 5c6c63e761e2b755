//! A thin wrapper over `graph.builder` with helpers for Hugging Face weight
//! naming (`prefix.weight`, `prefix.bias`).

use crate::graph::{AttentionOptions, BinaryOp, Builder, Node, ReduceOp, UnaryOp};
use crate::{Dim, Dtype, Error};

/// A graph being built.
pub struct Graph {
    pub b: Builder,
    /// Names of the model's weights, to test for optional tensors.
    names: std::collections::HashSet<String>,
}

impl Graph {
    pub fn new(name: &str) -> Graph {
        let names = crate::model::weights()
            .into_iter()
            .map(|w| w.name)
            .collect();
        Graph {
            b: Builder::new(name),
            names,
        }
    }

    /// Whether the model has a weight of this name.
    pub fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The weight-name prefix of a `model_type` checkpoint: `<model_type>.`
    /// (a task model) or none (a base model), whichever has `probe`.
    pub fn base_prefix(&self, model_type: &str, probe: &str) -> Result<String, Error> {
        [format!("{model_type}."), String::new()]
            .into_iter()
            .find(|b| self.has(&format!("{b}{probe}")))
            .ok_or_else(|| Error::Model(format!("no `{probe}`: not a {model_type} checkpoint")))
    }

    pub fn input(&self, name: &str, dtype: Dtype, shape: &[Dim]) -> Result<Node, Error> {
        self.b.input(name, dtype, shape)
    }

    pub fn weight(&self, name: &str) -> Result<Node, Error> {
        self.b.weight(name)
    }

    /// `prefix.weight` and, when present, `prefix.bias` as a linear layer.
    /// A weight [out, in / groups, 1] is a pointwise `Conv1d` (kernel 1)
    /// over the channels of `x` [..., in], grouped when in / groups < in
    /// (SqueezeBERT).
    pub fn linear(&self, x: Node, prefix: &str) -> Result<Node, Error> {
        let w = self.b.weight(&format!("{prefix}.weight"))?;
        let bias_name = format!("{prefix}.bias");
        let bias = if self.has(&bias_name) {
            Some(self.b.weight(&bias_name)?)
        } else {
            None
        };
        let ws = fixed_shape(&self.b.info(w)?.shape, prefix)?;
        match ws.as_slice() {
            [out, per_group, 1] => self.pointwise_conv(x, w, bias, (*out, *per_group), prefix),
            _ => self.b.linear(x, w, bias),
        }
    }

    /// `x` [b, s, in] through a kernel-1 Conv1d weight [out, in / g, 1].
    fn pointwise_conv(
        &self,
        x: Node,
        w: Node,
        bias: Option<Node>,
        (out, per_group): (u64, u64),
        prefix: &str,
    ) -> Result<Node, Error> {
        let xs = self.b.info(x)?.shape;
        let input = match xs.last() {
            Some(Dim::Fixed(n)) => *n,
            _ => {
                return Err(Error::Graph(format!(
                    "`{prefix}`: the input has no fixed width"
                )))
            }
        };
        if per_group == 0 || input % per_group != 0 || out % (input / per_group) != 0 {
            return Err(Error::Model(format!(
                "`{prefix}.weight` [{out}, {per_group}, 1] does not group {input} input channels"
            )));
        }
        let groups = input / per_group;
        if groups == 1 {
            let w = self.b.reshape(w, &[out as i64, input as i64])?;
            return self.b.linear(x, w, bias);
        }
        let (g, pg, og) = (groups as i64, per_group as i64, (out / groups) as i64);
        // [b, s, g, in/g] -> [b, g, s, in/g] @ [1, g, in/g, out/g] -> [b, s, out]
        let xg = self
            .b
            .permute(self.b.reshape(x, &[0, 0, g, pg])?, &[0, 2, 1, 3])?;
        let wg = self
            .b
            .permute(self.b.reshape(w, &[1, g, og, pg])?, &[0, 1, 3, 2])?;
        let y = self.b.permute(self.b.matmul(xg, wg)?, &[0, 2, 1, 3])?;
        let y = self.b.reshape(y, &[0, 0, out as i64])?;
        match bias {
            Some(b) => self.add(y, b),
            None => Ok(y),
        }
    }

    /// Several linear layers of one input as one: their weights (and
    /// biases, when all have one) concatenated into a single projection
    /// whose output is sliced back. Backends fold the weight concat once
    /// (constant folding), so this is one matrix product instead of several.
    /// Falls back to separate layers when only some have a bias.
    pub fn fused_linear(&self, x: Node, prefixes: &[&str]) -> Result<Vec<Node>, Error> {
        let biased: Vec<bool> = prefixes
            .iter()
            .map(|p| self.has(&format!("{p}.bias")))
            .collect();
        if prefixes.len() < 2 || biased.iter().any(|&b| b != biased[0]) {
            return prefixes.iter().map(|p| self.linear(x, p)).collect();
        }
        let mut weights = Vec::with_capacity(prefixes.len());
        let mut widths = Vec::with_capacity(prefixes.len());
        for p in prefixes {
            let w = self.b.weight(&format!("{p}.weight"))?;
            match self.b.info(w)?.shape.first() {
                Some(Dim::Fixed(n)) => widths.push(*n as i64),
                _ => return Err(Error::Model(format!("`{p}.weight` has no fixed shape"))),
            }
            weights.push(w);
        }
        let bias = if biased[0] {
            let b: Vec<Node> = prefixes
                .iter()
                .map(|p| self.b.weight(&format!("{p}.bias")))
                .collect::<Result<_, _>>()?;
            Some(self.b.concat(&b, 0)?)
        } else {
            None
        };
        let y = self.b.linear(x, self.b.concat(&weights, 0)?, bias)?;
        let mut at = 0;
        let mut out = Vec::with_capacity(widths.len());
        for w in widths {
            out.push(self.b.slice(y, -1, at, at + w)?);
            at += w;
        }
        Ok(out)
    }

    /// Layer norm with `prefix.weight` / `prefix.bias` (or `gamma`/`beta`).
    pub fn layer_norm(&self, x: Node, prefix: &str, eps: f32) -> Result<Node, Error> {
        let (w, b) = if self.has(&format!("{prefix}.weight")) {
            (format!("{prefix}.weight"), format!("{prefix}.bias"))
        } else {
            (format!("{prefix}.gamma"), format!("{prefix}.beta"))
        };
        let scale = self.b.weight(&w)?;
        let bias = if self.has(&b) {
            Some(self.b.weight(&b)?)
        } else {
            None
        };
        self.b.layer_norm(x, scale, bias, eps)
    }

    pub fn add(&self, a: Node, b: Node) -> Result<Node, Error> {
        self.b.binary(BinaryOp::Add, a, b)
    }

    pub fn mul(&self, a: Node, b: Node) -> Result<Node, Error> {
        self.b.binary(BinaryOp::Mul, a, b)
    }

    pub fn div(&self, a: Node, b: Node) -> Result<Node, Error> {
        self.b.binary(BinaryOp::Div, a, b)
    }

    pub fn unary(&self, op: UnaryOp, x: Node) -> Result<Node, Error> {
        self.b.unary(op, x)
    }

    pub fn scalar(&self, v: f64, dtype: Dtype) -> Result<Node, Error> {
        self.b.scalar(v, dtype)
    }

    pub fn reduce(&self, op: ReduceOp, x: Node, axes: &[i32], keep: bool) -> Result<Node, Error> {
        self.b.reduce(op, x, axes, keep)
    }

    /// [batch, seq, heads*dim] -> [batch, heads, seq, dim]
    pub fn split_heads(&self, x: Node, heads: u64, head_dim: u64) -> Result<Node, Error> {
        let r = self.b.reshape(x, &[0, 0, heads as i64, head_dim as i64])?;
        self.b.permute(r, &[0, 2, 1, 3])
    }

    /// [batch, heads, seq, dim] -> [batch, seq, heads*dim]
    pub fn merge_heads(&self, x: Node) -> Result<Node, Error> {
        let p = self.b.permute(x, &[0, 2, 1, 3])?;
        self.b.reshape(p, &[0, 0, -1])
    }

    pub fn attention(
        &self,
        q: Node,
        k: Node,
        v: Node,
        mask: Option<Node>,
        causal: bool,
    ) -> Result<Node, Error> {
        self.b.attention(
            q,
            k,
            v,
            mask,
            AttentionOptions {
                causal,
                scale: None,
            },
        )
    }

    /// Marks outputs and compiles.
    pub fn compile(self, outputs: &[(&str, Node)]) -> Result<crate::runtime::CompiledGraph, Error> {
        for (name, n) in outputs {
            self.b.output(name, *n)?;
        }
        crate::runtime::compile(self.b)
    }
}

/// The lengths of a shape whose dims are all fixed.
fn fixed_shape(shape: &[Dim], name: &str) -> Result<Vec<u64>, Error> {
    shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => Ok(*n),
            _ => Err(Error::Model(format!("`{name}.weight` has no fixed shape"))),
        })
        .collect()
}

/// The activation named by a Hugging Face `hidden_act`.
pub fn activation(name: &str) -> Result<UnaryOp, Error> {
    Ok(match name {
        "gelu" => UnaryOp::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => UnaryOp::GeluTanh,
        "relu" => UnaryOp::Relu,
        "silu" | "swish" => UnaryOp::Silu,
        "tanh" => UnaryOp::Tanh,
        other => {
            return Err(Error::Unsupported(format!(
                "activation `{other}` is not supported"
            )))
        }
    })
}
