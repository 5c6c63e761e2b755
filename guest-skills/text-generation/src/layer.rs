//! One decoder block, read from its [`DecoderSpec`]: the attention norm,
//! the q/k/v projection in the spec's layout, rotary positions, the KV
//! cache (state `k<i>`, `v<i>`), attention, the output projection and the
//! MLP, sequential or in parallel with the attention.

use skill_sdk::graph::{AttentionOptions, Node};
use skill_sdk::{Dim, Dtype, Error, Graph};

use crate::arch::{DecoderSpec, Linear, Mlp, NormKind, Positions, Qkv, Residual};
use crate::decoder::{sym, Cache, Keys};
use crate::dims::Dims;

/// The norm of kind `kind` with weights `{prefix}.weight` (and, for a
/// layer norm, `{prefix}.bias`).
pub(crate) fn norm(
    g: &Graph,
    kind: NormKind,
    x: Node,
    prefix: &str,
    eps: f32,
) -> Result<Node, Error> {
    match kind {
        NormKind::Layer => g.layer_norm(x, prefix, eps),
        NormKind::Rms => g.b.rms_norm(x, g.weight(&format!("{prefix}.weight"))?, eps),
    }
}

/// The linear layer `prefix` in the spec's weight layout.
fn linear(g: &Graph, spec: &DecoderSpec, x: Node, prefix: &str) -> Result<Node, Error> {
    match spec.linear {
        Linear::Standard => g.linear(x, prefix),
        // x @ W + b with GPT-2's Conv1D layout (W is [in, out]).
        Linear::Conv1d => {
            let y = g.b.matmul(x, g.weight(&format!("{prefix}.weight"))?)?;
            g.add(y, g.weight(&format!("{prefix}.bias"))?)
        }
    }
}

/// Linear layers of one input, as one product when `fuse` (and the
/// weights are `nn.Linear`'s).
fn linears(
    g: &Graph,
    spec: &DecoderSpec,
    d: &Dims,
    x: Node,
    names: &[&str],
) -> Result<Vec<Node>, Error> {
    match d.fuse && spec.linear == Linear::Standard {
        true => g.fused_linear(x, names),
        false => names.iter().map(|n| linear(g, spec, x, n)).collect(),
    }
}

/// Block `i` of the decoder whose weights are under `root`: `h` through
/// attention to `keys` (a mask) with the cache, and the MLP.
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer(
    g: &Graph,
    spec: &DecoderSpec,
    d: &Dims,
    (root, i): (&str, u64),
    h: Node,
    keys: Node,
    rope: Option<(Node, Node)>,
    cache: Cache,
    order: Keys,
) -> Result<Node, Error> {
    let p = format!("{root}{}{i}", spec.layers);
    let name = |n: &str| format!("{p}.{n}");
    let b = &spec.block;
    let x = norm(g, spec.norm, h, &name(b.attn_norm), d.eps)?;
    let (q, k, v) = qkv(g, spec, d, x, &p)?;
    let mut q = g.split_heads(q, d.heads, d.head_dim)?;
    let mut k = g.split_heads(k, d.kv_heads, d.head_dim)?;
    let v = g.split_heads(v, d.kv_heads, d.head_dim)?;
    if let Some(r) = rope {
        let interleaved = matches!(
            spec.positions,
            Positions::Rotary {
                interleaved: true,
                ..
            }
        );
        q = g.b.rotary(q, r.0, r.1, interleaved)?;
        k = g.b.rotary(k, r.0, r.1, interleaved)?;
    }
    let (k_all, v_all) = cached(g, d, i, (k, v), cache, order)?;
    let options = AttentionOptions {
        // Slot caches mask by slot (and by position in extend steps).
        causal: !matches!(order, Keys::Written(_)),
        scale: d.scale,
    };
    let a = g.merge_heads(g.b.attention(q, k_all, v_all, Some(keys), options)?)?;
    let a = linear(g, spec, a, &name(b.out))?;
    match b.residual {
        // Attention and MLP both read the attention norm's output and add
        // to the residual.
        Residual::Parallel => {
            let m = mlp(g, spec, d, x, &p)?;
            g.add(g.add(h, a)?, m)
        }
        Residual::Sequential { mlp_norm } => {
            let h = g.add(h, a)?;
            let x = norm(g, spec.norm, h, &name(mlp_norm), d.eps)?;
            let m = mlp(g, spec, d, x, &p)?;
            g.add(h, m)
        }
    }
}

/// Queries, keys and values [batch, seq, heads x head_dim] of block `p`.
fn qkv(
    g: &Graph,
    spec: &DecoderSpec,
    d: &Dims,
    x: Node,
    p: &str,
) -> Result<(Node, Node, Node), Error> {
    let name = |n: &str| format!("{p}.{n}");
    Ok(match spec.block.qkv {
        Qkv::Separate { q, k, v } => {
            let parts = linears(g, spec, d, x, &[&name(q), &name(k), &name(v)])?;
            match parts[..] {
                [q, k, v] => (q, k, v),
                _ => return Err(skill_sdk::internal("fused q/k/v projection")),
            }
        }
        Qkv::Concatenated(proj) => {
            let qkv = linear(g, spec, x, &name(proj))?;
            let qw = (d.heads * d.head_dim) as i64;
            let kw = (d.kv_heads * d.head_dim) as i64;
            (
                g.b.slice(qkv, -1, 0, qw)?,
                g.b.slice(qkv, -1, qw, qw + kw)?,
                g.b.slice(qkv, -1, qw + kw, qw + 2 * kw)?,
            )
        }
        Qkv::PerHead(proj) => {
            // [batch, seq, heads, 3, head_dim].
            let qkv = linear(g, spec, x, &name(proj))?;
            let r =
                g.b.reshape(qkv, &[0, 0, d.heads as i64, 3, d.head_dim as i64])?;
            let part = |j: i64| -> Result<Node, Error> {
                let one = g.b.squeeze(g.b.slice(r, 3, j, j + 1)?, 3)?;
                g.b.reshape(one, &[0, 0, -1])
            };
            (part(0)?, part(1)?, part(2)?)
        }
        Qkv::QvkShards { proj, shards } => {
            // `shards` shards, each [q | v | k] of width hidden / shards.
            let qkv = linear(g, spec, x, &name(proj))?;
            let w = (d.hidden / shards) as i64;
            let r = g.b.reshape(qkv, &[0, 0, shards as i64, 3 * w])?;
            let part = |j: i64| {
                g.b.reshape(g.b.slice(r, 3, j * w, (j + 1) * w)?, &[0, 0, -1])
            };
            (part(0)?, part(2)?, part(1)?)
        }
    })
}

/// The block's MLP on `x`.
fn mlp(g: &Graph, spec: &DecoderSpec, d: &Dims, x: Node, p: &str) -> Result<Node, Error> {
    let name = |n: &str| format!("{p}.{n}");
    match spec.block.mlp {
        Mlp::Plain { up, down } => {
            let up = g.unary(d.act, linear(g, spec, x, &name(up))?)?;
            linear(g, spec, up, &name(down))
        }
        Mlp::Gated { gate, up, down } => {
            let (gate, up) = match linears(g, spec, d, x, &[&name(gate), &name(up)])?[..] {
                [gate, up] => (gate, up),
                _ => return Err(skill_sdk::internal("fused gate/up projection")),
            };
            let gate = g.unary(d.act, gate)?;
            linear(g, spec, g.mul(gate, up)?, &name(down))
        }
    }
}

/// Layer `i`'s keys and values to attend to, with the cache kept as state:
/// growing caches are batch-major [batch, kv_heads, past, head_dim] (the
/// attention layout: no transposes), slot caches slot-major.
fn cached(
    g: &Graph,
    d: &Dims,
    i: u64,
    (k, v): (Node, Node),
    cache: Cache,
    order: Keys,
) -> Result<(Node, Node), Error> {
    let (shape, axis) = match cache {
        Cache::Growing => (
            [
                sym("batch"),
                Dim::Fixed(d.kv_heads),
                cache.dim(),
                Dim::Fixed(d.head_dim),
            ],
            2,
        ),
        Cache::Slots(_) => (
            [
                cache.dim(),
                sym("batch"),
                Dim::Fixed(d.kv_heads),
                Dim::Fixed(d.head_dim),
            ],
            0,
        ),
    };
    let mut kv = Vec::with_capacity(2);
    for (name, new) in [(format!("k{i}"), k), (format!("v{i}"), v)] {
        let old = g.b.state(&name, Dtype::F32, &shape)?;
        let keys = match cache {
            Cache::Growing => {
                let appended = g.b.concat(&[old, new], axis)?;
                g.b.update_state(&name, appended)?;
                match order {
                    Keys::New => new,
                    _ => appended,
                }
            }
            Cache::Slots(n) => {
                // [batch, kv_heads, seq, head_dim] -> [seq, batch, ...].
                let slot_major = g.b.permute(new, &[2, 0, 1, 3])?;
                match order {
                    // A decode step writes its slot where the cache lies.
                    Keys::Written(slot) => {
                        let written = g.b.write_rows(old, slot_major, slot)?;
                        g.b.update_state(&name, written)?;
                        g.b.permute(written, &[1, 2, 0, 3])?
                    }
                    // A prefill fills the first slots (the cache is empty).
                    _ => {
                        let filled = g.b.concat(&[slot_major, old], axis)?;
                        g.b.update_state(&name, g.b.slice(filled, axis, 0, n as i64)?)?;
                        new
                    }
                }
            }
        };
        kv.push(keys);
    }
    Ok((kv[0], kv[1]))
}
