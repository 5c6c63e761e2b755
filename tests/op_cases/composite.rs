//! Composite cases: a small BERT-like encoder layer with mean pooling, and
//! a small Llama-like causal decoder block with RoPE, GQA and a KV cache.

use super::{count, sym, Built, Case, WeightSpec};
use host::ir::{BinaryOp, ConstData, DType, Dim, GraphError, NodeId, ReduceOp, UnaryOp};
use host::tensor::Tensor;

pub fn cases() -> Vec<Built> {
    vec![encoder_layer(), decoder_block()]
}

const H: u64 = 32;

/// `linear` with weight `{p}.weight` and, when asked, bias `{p}.bias`.
fn linear(c: &mut Case, x: NodeId, p: &str, bias: bool) -> Result<NodeId, GraphError> {
    let w = c.weight(&format!("{p}.weight"))?;
    let b = if bias {
        Some(c.weight(&format!("{p}.bias"))?)
    } else {
        None
    };
    c.b.linear(x, w, b)
}

/// `[b, s, heads*hd]` -> `[b, heads, s, hd]`.
fn split_heads(c: &mut Case, x: NodeId, heads: i64) -> Result<NodeId, GraphError> {
    let r = c.b.reshape(x, vec![0, 0, heads, -1])?;
    c.b.permute(r, vec![0, 2, 1, 3])
}

fn merge_heads(c: &mut Case, x: NodeId) -> Result<NodeId, GraphError> {
    let p = c.b.permute(x, vec![0, 2, 1, 3])?;
    c.b.reshape(p, vec![0, 0, -1])
}

fn add(c: &mut Case, a: NodeId, b: NodeId) -> Result<NodeId, GraphError> {
    c.b.binary(BinaryOp::Add, a, b)
}

fn mul(c: &mut Case, a: NodeId, b: NodeId) -> Result<NodeId, GraphError> {
    c.b.binary(BinaryOp::Mul, a, b)
}

/// Weight specs of a linear layer `[out, in]` (+ bias) with the usual
/// 1/sqrt(in) range.
fn lin_spec<'a>(name: &'a str, bias: &'a str, shape: &'a [u64]) -> [WeightSpec<'a>; 2] {
    let r = 1.0 / (shape[1] as f32).sqrt();
    [
        WeightSpec(name, shape, -r, r),
        WeightSpec(bias, &shape[..1], -0.1, 0.1),
    ]
}

/// Embeddings + one post-norm encoder layer (BERT) + masked mean pooling
/// and l2-normalisation (sentence-transformers), over symbolic batch/seq.
fn encoder_layer() -> Built {
    let mut specs = vec![
        WeightSpec("emb.word.weight", &[100, H], -1., 1.),
        WeightSpec("emb.pos.weight", &[16, H], -0.5, 0.5),
        WeightSpec("emb.ln.weight", &[H], 0.8, 1.2),
        WeightSpec("emb.ln.bias", &[H], -0.1, 0.1),
        WeightSpec("attn.ln.weight", &[H], 0.8, 1.2),
        WeightSpec("attn.ln.bias", &[H], -0.1, 0.1),
        WeightSpec("out.ln.weight", &[H], 0.8, 1.2),
        WeightSpec("out.ln.bias", &[H], -0.1, 0.1),
    ];
    specs.extend(lin_spec("q.weight", "q.bias", &[H, H]));
    specs.extend(lin_spec("k.weight", "k.bias", &[H, H]));
    specs.extend(lin_spec("v.weight", "v.bias", &[H, H]));
    specs.extend(lin_spec("o.weight", "o.bias", &[H, H]));
    specs.extend(lin_spec("up.weight", "up.bias", &[64, H]));
    specs.extend(lin_spec("down.weight", "down.bias", &[H, 64]));
    let mut c = Case::with_weights("composite/bert-encoder-layer", &specs);
    let (batch, seq) = (2u64, 7u64);
    let dims = vec![sym("batch"), sym("seq")];
    let ids = c.rng.ints((batch * seq) as usize, 0, 99);
    let ids = c.input(
        "input_ids",
        dims.clone(),
        Tensor::from_i64(vec![batch, seq], &ids),
    )?;
    let pos: Vec<i64> = (0..batch).flat_map(|_| 0..seq as i64).collect();
    let pos = c.input(
        "position_ids",
        dims.clone(),
        Tensor::from_i64(vec![batch, seq], &pos),
    )?;
    // The second sequence is padded after 4 tokens.
    let keep: Vec<i64> = (0..batch * seq)
        .map(|i| (i < seq || i % seq < 4) as i64)
        .collect();
    let mask = c.input(
        "attention_mask",
        dims,
        Tensor::from_i64(vec![batch, seq], &keep),
    )?;

    let (wt, pt) = (c.weight("emb.word.weight")?, c.weight("emb.pos.weight")?);
    let (we, pe) = (c.b.embedding(wt, ids)?, c.b.embedding(pt, pos)?);
    let e = add(&mut c, we, pe)?;
    let (s, b) = (c.weight("emb.ln.weight")?, c.weight("emb.ln.bias")?);
    let x = c.b.layer_norm(e, s, Some(b), 1e-12)?;

    // Additive mask (1 - m) * -10000 as [batch, 1, 1, seq].
    let mf = c.b.cast(mask, DType::F32)?;
    let one = c.b.scalar(1.0, DType::F32)?;
    let inv = c.b.binary(BinaryOp::Sub, one, mf)?;
    let big = c.b.scalar(-10000.0, DType::F32)?;
    let add_mask = mul(&mut c, inv, big)?;
    let m1 = c.b.unsqueeze(add_mask, 1)?;
    let m2 = c.b.unsqueeze(m1, 1)?;

    let q = linear(&mut c, x, "q", true)?;
    let k = linear(&mut c, x, "k", true)?;
    let v = linear(&mut c, x, "v", true)?;
    let (q, k, v) = (
        split_heads(&mut c, q, 4)?,
        split_heads(&mut c, k, 4)?,
        split_heads(&mut c, v, 4)?,
    );
    let a = c.b.attention(q, k, v, Some(m2), false, None)?;
    let a = merge_heads(&mut c, a)?;
    let o = linear(&mut c, a, "o", true)?;
    let r = add(&mut c, o, x)?;
    let (s, b) = (c.weight("attn.ln.weight")?, c.weight("attn.ln.bias")?);
    let h = c.b.layer_norm(r, s, Some(b), 1e-12)?;
    let up = linear(&mut c, h, "up", true)?;
    let act = c.b.unary(UnaryOp::Gelu, up)?;
    let down = linear(&mut c, act, "down", true)?;
    let r2 = add(&mut c, down, h)?;
    let (s, b) = (c.weight("out.ln.weight")?, c.weight("out.ln.bias")?);
    let out = c.b.layer_norm(r2, s, Some(b), 1e-12)?;
    c.output("last_hidden_state", out)?;

    // Masked mean pooling and l2-normalisation.
    let mcol = c.b.unsqueeze(mf, -1)?;
    let masked = mul(&mut c, out, mcol)?;
    let sum = c.b.reduce(ReduceOp::Sum, masked, vec![1], false)?;
    let n = c.b.reduce(ReduceOp::Sum, mcol, vec![1], false)?;
    let tiny = c.b.scalar(1e-9, DType::F32)?;
    let n = c.b.binary(BinaryOp::Maximum, n, tiny)?;
    let mean = c.b.binary(BinaryOp::Div, sum, n)?;
    let emb = c.b.l2_normalize(mean, -1, 1e-12)?;
    c.output("embedding", emb)?;
    c.finish()
}

/// `x * cos + rotate_half(x) * sin` over the last axis (8 wide).
fn rope(c: &mut Case, x: NodeId, cos: NodeId, sin: NodeId) -> Result<NodeId, GraphError> {
    let x1 = c.b.slice(x, -1, 0, 4)?;
    let x2 = c.b.slice(x, -1, 4, 8)?;
    let n2 = c.b.unary(UnaryOp::Neg, x2)?;
    let rot = c.b.concat(vec![n2, x1], -1)?;
    let a = mul(c, x, cos)?;
    let b = mul(c, rot, sin)?;
    add(c, a, b)
}

/// One pre-norm Llama-style block (RMSNorm, RoPE, GQA 4/2 heads with a KV
/// cache, key padding, SwiGLU), a final norm, an lm-head, and greedy/top-k
/// selection on the last position.
fn decoder_block() -> Built {
    let kvw = 16u64;
    let mut specs = vec![
        WeightSpec("embed.weight", &[64, H], -1., 1.),
        WeightSpec("ln1.weight", &[H], 0.8, 1.2),
        WeightSpec("ln2.weight", &[H], 0.8, 1.2),
        WeightSpec("norm.weight", &[H], 0.8, 1.2),
    ];
    let (qs, kvs, gs, ds, hs) = ([H, H], [kvw, H], [48, H], [H, 48], [64, H]);
    specs.extend(lin_spec("q.weight", "q.bias", &qs));
    specs.extend(lin_spec("k.weight", "k.bias", &kvs));
    specs.extend(lin_spec("v.weight", "v.bias", &kvs));
    specs.extend(lin_spec("o.weight", "o.bias", &qs));
    specs.extend(lin_spec("gate.weight", "gate.bias", &gs));
    specs.extend(lin_spec("up.weight", "up.bias", &gs));
    specs.extend(lin_spec("down.weight", "down.bias", &ds));
    specs.extend(lin_spec("lm_head.weight", "lm_head.bias", &hs));
    let mut c = Case::with_weights("composite/llama-decoder-block", &specs);
    let (batch, past, seq) = (2u64, 3u64, 4u64);
    let ids = c.rng.ints((batch * seq) as usize, 0, 63);
    let ids = c.input(
        "input_ids",
        vec![sym("batch"), sym("seq")],
        Tensor::from_i64(vec![batch, seq], &ids),
    )?;
    // RoPE tables for positions past..past+seq, as [batch, 1, seq, 8].
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for _ in 0..batch {
        for p in past..past + seq {
            for i in 0..8u64 {
                let freq = 1.0 / 10000f64.powf((i % 4) as f64 * 2.0 / 8.0);
                cos.push((p as f64 * freq).cos() as f32);
                sin.push((p as f64 * freq).sin() as f32);
            }
        }
    }
    let rdims = vec![sym("batch"), Dim::Fixed(1), sym("seq"), Dim::Fixed(8)];
    let rshape = vec![batch, 1, seq, 8];
    let cos = c.input("cos", rdims.clone(), Tensor::from_f32(rshape.clone(), &cos))?;
    let sin = c.input("sin", rdims, Tensor::from_f32(rshape, &sin))?;
    // Key padding over past+seq: the second sequence is left-padded by 2.
    let total = past + seq;
    let keep: Vec<i64> = (0..batch * total)
        .map(|i| (i < total || i % total >= 2) as i64)
        .collect();
    let kdims = vec![sym("batch"), Dim::Fixed(1), Dim::Fixed(1), sym("past+seq")];
    let keys = c.input(
        "key_mask",
        kdims,
        super::tensor_bool(vec![batch, 1, 1, total], &keep),
    )?;
    let cache = vec![sym("batch"), Dim::Fixed(2), sym("past"), Dim::Fixed(8)];
    let cshape = [batch, 2, past, 8];
    let kc = c.rng.floats(count(&cshape), -2., 2.);
    let vc = c.rng.floats(count(&cshape), -2., 2.);
    let kst = c.state("k0", cache.clone(), Tensor::from_f32(cshape.to_vec(), &kc))?;
    let vst = c.state("v0", cache, Tensor::from_f32(cshape.to_vec(), &vc))?;

    let table = c.weight("embed.weight")?;
    let x = c.b.embedding(table, ids)?;
    let s1 = c.weight("ln1.weight")?;
    let h = c.b.rms_norm(x, s1, 1e-6)?;
    let q = linear(&mut c, h, "q", false)?;
    let k = linear(&mut c, h, "k", false)?;
    let v = linear(&mut c, h, "v", false)?;
    let (q, k, v) = (
        split_heads(&mut c, q, 4)?,
        split_heads(&mut c, k, 2)?,
        split_heads(&mut c, v, 2)?,
    );
    let q = rope(&mut c, q, cos, sin)?;
    let k = rope(&mut c, k, cos, sin)?;
    let k_all = c.b.concat(vec![kst, k], 2)?;
    let v_all = c.b.concat(vec![vst, v], 2)?;
    c.b.update_state("k0", k_all)?;
    c.b.update_state("v0", v_all)?;
    let a = c.b.attention(q, k_all, v_all, Some(keys), true, None)?;
    let a = merge_heads(&mut c, a)?;
    let o = linear(&mut c, a, "o", false)?;
    let r = add(&mut c, x, o)?;
    let s2 = c.weight("ln2.weight")?;
    let h2 = c.b.rms_norm(r, s2, 1e-6)?;
    let g = linear(&mut c, h2, "gate", false)?;
    let g = c.b.unary(UnaryOp::Silu, g)?;
    let u = linear(&mut c, h2, "up", false)?;
    let gu = mul(&mut c, g, u)?;
    let d = linear(&mut c, gu, "down", false)?;
    let r2 = add(&mut c, r, d)?;
    let sn = c.weight("norm.weight")?;
    let hn = c.b.rms_norm(r2, sn, 1e-6)?;
    let logits = linear(&mut c, hn, "lm_head", true)?;
    let last = c.b.constant(ConstData {
        dtype: DType::I64,
        shape: vec![],
        bytes: (-1i64).to_le_bytes().to_vec(),
    })?;
    let last = c.b.gather(logits, last, 1)?;
    c.output("last_logits", last)?;
    let (tv, ti) = c.b.top_k(last, 5)?;
    c.output("top_values", tv)?;
    c.output("top_indices", ti)?;
    let am = c.b.argmax(last, -1, false)?;
    c.output("next_token", am)?;
    c.finish()
}
