//! The BERT encoder graph with pooling and normalisation.

use skill_sdk::config::Json;
use skill_sdk::graph::{CompareOp, ReduceOp};
use skill_sdk::graph_ext::activation;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::{Dim, Dtype, Error, Graph};

use crate::Pooling;

/// Builds and compiles `input_ids, attention_mask, token_type_ids,
/// position_ids -> embedding [batch, hidden]`.
pub fn build(config: &Json, pooling: Pooling, normalize: bool) -> Result<CompiledGraph, Error> {
    let hidden = config.u64("hidden_size")?;
    let heads = config.u64("num_attention_heads")?;
    let layers = config.u64("num_hidden_layers")?;
    let eps = config.f64_or("layer_norm_eps", 1e-12)? as f32;
    let act = activation(config.str_or("hidden_act", "gelu")?)?;
    if heads == 0 || hidden % heads != 0 {
        return Err(Error::Model(format!(
            "config.json: hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
        )));
    }
    let head_dim = hidden / heads;

    let g = Graph::new("bert-embedding");
    let p = if g.has("bert.embeddings.word_embeddings.weight") {
        "bert."
    } else {
        ""
    };
    let bs = [
        Dim::Symbolic("batch".into()),
        Dim::Symbolic("sequence".into()),
    ];
    let ids = g.input("input_ids", Dtype::I64, &bs)?;
    let mask = g.input("attention_mask", Dtype::I64, &bs)?;
    let types = g.input("token_type_ids", Dtype::I64, &bs)?;
    let pos = g.input(
        "position_ids",
        Dtype::I64,
        &[Dim::Fixed(1), Dim::Symbolic("sequence".into())],
    )?;

    let emb = |name: &str, idx| -> Result<_, Error> {
        let table = g.weight(&format!("{p}embeddings.{name}.weight"))?;
        g.b.embedding(table, idx)
    };
    let mut h = g.add(
        emb("word_embeddings", ids)?,
        emb("position_embeddings", pos)?,
    )?;
    if g.has(&format!("{p}embeddings.token_type_embeddings.weight")) {
        h = g.add(h, emb("token_type_embeddings", types)?)?;
    }
    h = g.layer_norm(h, &format!("{p}embeddings.LayerNorm"), eps)?;

    // [batch, 1, 1, seq] boolean: which keys each query may attend to.
    let zero = g.scalar(0.0, Dtype::I64)?;
    let keep = g.b.compare(CompareOp::Greater, mask, zero)?;
    let keys = g.b.unsqueeze(g.b.unsqueeze(keep, 1)?, 1)?;

    for l in 0..layers {
        let lp = format!("{p}encoder.layer.{l}");
        let q = g.split_heads(
            g.linear(h, &format!("{lp}.attention.self.query"))?,
            heads,
            head_dim,
        )?;
        let k = g.split_heads(
            g.linear(h, &format!("{lp}.attention.self.key"))?,
            heads,
            head_dim,
        )?;
        let v = g.split_heads(
            g.linear(h, &format!("{lp}.attention.self.value"))?,
            heads,
            head_dim,
        )?;
        let a = g.merge_heads(g.attention(q, k, v, Some(keys), false)?)?;
        let a = g.linear(a, &format!("{lp}.attention.output.dense"))?;
        h = g.layer_norm(
            g.add(a, h)?,
            &format!("{lp}.attention.output.LayerNorm"),
            eps,
        )?;
        let i = g.unary(act, g.linear(h, &format!("{lp}.intermediate.dense"))?)?;
        let o = g.linear(i, &format!("{lp}.output.dense"))?;
        h = g.layer_norm(g.add(o, h)?, &format!("{lp}.output.LayerNorm"), eps)?;
    }

    let pooled = pool(&g, h, mask, keep, pooling)?;
    let out = if normalize {
        g.b.l2_normalize(pooled, -1, 1e-12)?
    } else {
        pooled
    };
    g.compile(&[("embedding", out)])
}

/// Pools [batch, seq, hidden] to [batch, hidden] over real tokens.
fn pool(g: &Graph, h: u32, mask: u32, keep: u32, pooling: Pooling) -> Result<u32, Error> {
    match pooling {
        Pooling::Cls => {
            let first = g.b.slice(h, 1, 0, 1)?;
            g.b.squeeze(first, 1)
        }
        Pooling::Max => {
            let keep3 = g.b.unsqueeze(keep, -1)?;
            let floor = g.scalar(-1e9, Dtype::F32)?;
            let masked = g.b.select(keep3, h, floor)?;
            g.reduce(ReduceOp::Max, masked, &[1], false)
        }
        Pooling::Mean | Pooling::MeanSqrtLen => {
            let m = g.b.unsqueeze(g.b.cast(mask, Dtype::F32)?, -1)?;
            let sum = g.reduce(ReduceOp::Sum, g.mul(h, m)?, &[1], false)?;
            let count = g.reduce(ReduceOp::Sum, m, &[1], false)?;
            let floor = g.scalar(1e-9, Dtype::F32)?;
            let count =
                g.b.binary(skill_sdk::graph::BinaryOp::Maximum, count, floor)?;
            let den = if pooling == Pooling::MeanSqrtLen {
                g.unary(skill_sdk::graph::UnaryOp::Sqrt, count)?
            } else {
                count
            };
            g.div(sum, den)
        }
    }
}
