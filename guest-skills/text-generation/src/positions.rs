//! Position encodings of the decoder graphs: rotary tables (LLaMA,
//! GPT-J), ALiBi biases (BLOOM) and sliding-window key masks (GPT-Neo's
//! local attention layers).

use skill_sdk::config::Json;
use skill_sdk::graph::{BinaryOp, CompareOp, Node, UnaryOp};
use skill_sdk::tensors::f32_tensor;
use skill_sdk::{Dtype, Error, Graph};

/// ALiBi slopes of `heads` heads, as transformers computes them.
fn alibi_slopes(heads: u64) -> Vec<f32> {
    let closest = 1u64 << (63 - heads.leading_zeros()); // largest power of 2 <= heads
    let base = 2f32.powf(-(2f32.powf(-((closest as f32).log2() - 3.0))));
    let mut slopes: Vec<f32> = (1..=closest).map(|p| base.powi(p as i32)).collect();
    if closest != heads {
        let extra = 2f32.powf(-(2f32.powf(-((2 * closest) as f32).log2() + 3.0)));
        let n = (heads - closest).min(closest);
        slopes.extend((0..n).map(|i| extra.powi((1 + 2 * i) as i32)));
    }
    slopes
}

/// [batch, heads, 1, keys] additive mask: slope x key position where
/// attending, the masked score elsewhere. `key_pos` [batch, keys] holds each
/// key's token position; masked keys count as position 0, as transformers'
/// `(cumsum(mask) - 1) * mask` has it.
pub fn alibi_mask(
    g: &Graph,
    heads: u64,
    keys: Node,
    keep: Node,
    key_pos: Node,
) -> Result<Node, Error> {
    let zero_pos = g.scalar(0.0, Dtype::I64)?;
    let kp = g.b.select(keep, key_pos, zero_pos)?;
    let kp =
        g.b.unsqueeze(g.b.unsqueeze(g.b.cast(kp, Dtype::F32)?, 1)?, 1)?;
    let slopes =
        g.b.constant(&f32_tensor(vec![heads, 1, 1], &alibi_slopes(heads)))?;
    let alibi = g.mul(slopes, kp)?;
    let (zero, low) = (g.scalar(0.0, Dtype::F32)?, g.scalar(-65504.0, Dtype::F32)?);
    let pad = g.b.select(keys, zero, low)?;
    g.add(alibi, pad)
}

/// cos and sin tables [batch, 1, seq, dim] of rotary embeddings over the
/// first `dim` dims of a head: the frequencies repeated as two halves
/// (LLaMA's rotate-half) or each twice in a row (`interleaved`, GPT-J).
pub fn rope_tables(
    g: &Graph,
    c: &Json,
    pos: Node,
    dim: u64,
    interleaved: bool,
) -> Result<(Node, Node), Error> {
    // transformers 5 saves `rope_parameters` {rope_theta, rope_type}.
    let params = c.value.get("rope_parameters").filter(|v| !v.is_null());
    let theta = match (c.value.get("rope_theta"), params) {
        (Some(t), _) if !t.is_null() => c.f64_or("rope_theta", 10000.0)?,
        (_, Some(p)) => match p.get("rope_theta") {
            None => 10000.0,
            Some(t) => t.as_f64().ok_or_else(|| {
                Error::Model(format!(
                    "{}: `rope_parameters.rope_theta` must be a number",
                    c.file
                ))
            })?,
        },
        _ => 10000.0,
    } as f32;
    let rope_type = params
        .and_then(|p| p.get("rope_type"))
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    if c.value.get("rope_scaling").is_some_and(|v| !v.is_null()) || rope_type != "default" {
        return Err(Error::Unsupported(format!(
            "{}: rope scaling (`rope_scaling`, rope_type `{rope_type}`) is not supported yet",
            c.file
        )));
    }
    if dim == 0 || !dim.is_multiple_of(2) {
        return Err(Error::Model(format!(
            "config.json: rotary dim {dim} is not a positive even number"
        )));
    }
    let half = dim / 2;
    let freq = |i: u64| 1.0 / theta.powf((2 * i) as f32 / dim as f32);
    let inv: Vec<f32> = if interleaved {
        (0..dim).map(|j| freq(j / 2)).collect()
    } else {
        (0..dim).map(|j| freq(j % half)).collect()
    };
    let inv = g.b.constant(&f32_tensor(vec![dim], &inv))?;
    let p = g.b.unsqueeze(g.b.cast(pos, Dtype::F32)?, -1)?;
    let emb = g.mul(p, inv)?;
    let cos = g.b.unsqueeze(g.unary(UnaryOp::Cos, emb)?, 1)?;
    let sin = g.b.unsqueeze(g.unary(UnaryOp::Sin, emb)?, 1)?;
    Ok((cos, sin))
}

/// Keys within `window` positions of each query, and allowed by `keys`:
/// bool [batch, 1, seq, keys] from query positions `pos` [batch, seq], key
/// positions `key_pos` [batch, keys] and the key mask `keys` [batch, 1, 1,
/// keys] (GPT-Neo: a query attends to the keys at most `window - 1`
/// positions back).
pub fn window_mask(
    g: &Graph,
    pos: Node,
    key_pos: Node,
    keys: Node,
    window: u64,
) -> Result<Node, Error> {
    let q = g.b.unsqueeze(g.b.unsqueeze(pos, 1)?, -1)?;
    let k = g.b.unsqueeze(g.b.unsqueeze(key_pos, 1)?, 1)?;
    let back = g.b.binary(BinaryOp::Sub, q, k)?;
    let w = g.scalar(window as f64, Dtype::I64)?;
    let near = g.b.compare(CompareOp::Less, back, w)?;
    g.b.logical_and(near, keys)
}
