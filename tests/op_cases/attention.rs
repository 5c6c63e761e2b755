//! Fused attention cases: plain, padded (float and bool masks), causal with
//! a KV-cache offset, grouped-query heads, long key ranges, random bool
//! masks, a custom scale, and decode rows (one query) over contiguous and
//! slot-major caches, which CUDA runs with its decode kernels, and many
//! rows of head dim 64 or 128 (CUDA's tensor-core kernel in f16 and bf16).

use super::{count, fixed, int_tensor, Built, Case};
use host::ir::{DType, NodeId};

/// Mask kinds of an attention case.
#[derive(Clone, Copy, PartialEq)]
enum Mask {
    None,
    /// `[b, 1, 1, sk]` with 0 or -10000 (padding at the end of later rows).
    PadFloat,
    /// `[b, 1, 1, sk]` bool padding mask.
    PadBool,
    /// `[b, h, sq, sk]` random float bias (ALiBi-like).
    Bias,
    /// `[b, 1, sq, sk]` random bool mask that keeps the diagonal allowed.
    RandomBool,
    /// `[b, 1, 1, sk]` bool: row r allows keys `< 3 + r` and `150..170 + r`
    /// (whole 32-key chunks without an allowed key: free slots, padding).
    Gaps,
}

struct Attn {
    name: &'static str,
    b: u64,
    h: u64,
    kvh: u64,
    sq: u64,
    sk: u64,
    d: u64,
    mask: Mask,
    causal: bool,
    scale: Option<f32>,
    /// Keys and values stored slot-major, `[sk, b, kvh, d]`, and read as a
    /// permuted view (text-generation's CUDA caches).
    slot_major: bool,
}

pub fn cases() -> Vec<Built> {
    let a = |name, b, h, kvh, sq, sk, d, mask, causal| Attn {
        name,
        b,
        h,
        kvh,
        sq,
        sk,
        d,
        mask,
        causal,
        scale: None,
        slot_major: false,
    };
    let list = [
        a("attention/plain/d8", 2, 4, 4, 7, 7, 8, Mask::None, false),
        a(
            "attention/pad-float/d32",
            2,
            2,
            2,
            9,
            9,
            32,
            Mask::PadFloat,
            false,
        ),
        a(
            "attention/pad-bool/d32",
            3,
            2,
            2,
            6,
            6,
            32,
            Mask::PadBool,
            false,
        ),
        a(
            "attention/causal/sq3-sk10/d16",
            2,
            2,
            2,
            3,
            10,
            16,
            Mask::None,
            true,
        ),
        a(
            "attention/gqa-causal/h4-kv2/d64",
            1,
            4,
            2,
            5,
            5,
            64,
            Mask::None,
            true,
        ),
        a(
            "attention/gqa-pad-bool/h4-kv2/d8",
            2,
            4,
            2,
            6,
            6,
            8,
            Mask::PadBool,
            false,
        ),
        a(
            "attention/causal-pad-float/d32",
            2,
            2,
            2,
            8,
            8,
            32,
            Mask::PadFloat,
            true,
        ),
        a(
            "attention/long/sk300/d64",
            1,
            2,
            2,
            4,
            300,
            64,
            Mask::Bias,
            true,
        ),
        a(
            "attention/long-prefill/sk256/d32",
            1,
            2,
            1,
            256,
            256,
            32,
            Mask::None,
            true,
        ),
        a(
            "attention/bool-and-causal/d16",
            2,
            2,
            2,
            6,
            6,
            16,
            Mask::RandomBool,
            true,
        ),
        // Decode rows (one query): the vector-load path on CUDA.
        a(
            "attention/decode-gqa/h8-kv2/sk128/d64",
            2,
            8,
            2,
            1,
            128,
            64,
            Mask::PadBool,
            false,
        ),
        // Decode of 16 batch rows with groups of 4 heads (a shape where a
        // block per kv head was tried on CUDA and dropped).
        a(
            "attention/decode-gqa/b16-h8-kv2/sk96/d64",
            16,
            8,
            2,
            1,
            96,
            64,
            Mask::PadBool,
            false,
        ),
        a(
            "attention/decode/sk77/d32",
            1,
            4,
            4,
            1,
            77,
            32,
            Mask::PadFloat,
            false,
        ),
        Attn {
            scale: Some(0.3),
            ..a("attention/scale/d8", 1, 2, 2, 4, 6, 8, Mask::Bias, false)
        },
        // Decode over slot-major caches longer than one chunk per warp
        // (the CUDA decode kernel's warps loop), random bool mask, causal.
        Attn {
            slot_major: true,
            ..a(
                "attention/decode-slots/b3-h4-kv2/sk300/d64",
                3,
                4,
                2,
                1,
                300,
                64,
                Mask::RandomBool,
                true,
            )
        },
        Attn {
            slot_major: true,
            ..a(
                "attention/decode-slots/b4-h3/sk300/d64",
                4,
                3,
                3,
                1,
                300,
                64,
                Mask::PadBool,
                false,
            )
        },
        // The largest group the grouped-query decode kernel takes (8).
        a(
            "attention/decode-gqa/b2-h16-kv2/sk70/d64",
            2,
            16,
            2,
            1,
            70,
            64,
            Mask::PadFloat,
            false,
        ),
        Attn {
            slot_major: true,
            ..a(
                "attention/decode-slots/b2-h2-kv1/sk33/d32",
                2,
                2,
                1,
                1,
                33,
                32,
                Mask::PadFloat,
                false,
            )
        },
        // Decode over whole chunks of 32 keys with no allowed key.
        Attn {
            slot_major: true,
            ..a(
                "attention/decode-gaps/b3-h4-kv2/sk300/d64",
                3,
                4,
                2,
                1,
                300,
                64,
                Mask::Gaps,
                false,
            )
        },
        Attn {
            slot_major: true,
            ..a(
                "attention/decode-gaps/b3-h2/sk1100/d32",
                3,
                2,
                2,
                1,
                1100,
                32,
                Mask::Gaps,
                false,
            )
        },
        // Grouped-query decode on CUDA's tensor-core kernel (f16, bf16;
        // 64 or more batch rows x kv heads): 16 heads per kv head with a
        // per-head float bias at head dim 128, 7 per kv head (qwen2-like)
        // over slot-major caches, 8 per kv head past a chunk of keys.
        a(
            "attention/decode-gqa/b64-h16-kv1/sk50/d128",
            64,
            16,
            1,
            1,
            50,
            128,
            Mask::Bias,
            false,
        ),
        Attn {
            slot_major: true,
            ..a(
                "attention/decode-gqa-slots/b32-h14-kv2/sk90/d64",
                32,
                14,
                2,
                1,
                90,
                64,
                Mask::PadBool,
                true,
            )
        },
        Attn {
            slot_major: true,
            ..a(
                "attention/decode-gqa-slots/b16-h32-kv4/sk300/d64",
                16,
                32,
                4,
                1,
                300,
                64,
                Mask::Gaps,
                false,
            )
        },
        // 64 batch rows of ungrouped heads (one head per kv head).
        a(
            "attention/decode/b64-h2/sk70/d64",
            64,
            2,
            2,
            1,
            70,
            64,
            Mask::PadBool,
            false,
        ),
        // Many rows of head dim 64 or 128: CUDA's tensor-core kernel in
        // f16 and bf16 (two 128-row tiles, a key chunk tail, causal with an
        // offset, float and bool masks, grouped-query heads).
        a(
            "attention/rows-mma/b2-h4-kv2/sq150/d64",
            2,
            4,
            2,
            150,
            150,
            64,
            Mask::PadBool,
            true,
        ),
        a(
            "attention/rows-mma/sq40-sk70/d64",
            1,
            3,
            3,
            40,
            70,
            64,
            Mask::Bias,
            true,
        ),
        a(
            "attention/rows-mma/b3-sq33/d64",
            3,
            2,
            1,
            33,
            33,
            64,
            Mask::PadFloat,
            false,
        ),
        a(
            "attention/rows-mma/sq20-sk45/d128",
            2,
            2,
            2,
            20,
            45,
            128,
            Mask::RandomBool,
            false,
        ),
    ];
    list.iter().map(attention_case).collect()
}

fn attention_case(t: &Attn) -> Built {
    let mut c = Case::new(t.name);
    let q = c.uniform("q", &[t.b, t.h, t.sq, t.d], -2., 2.)?;
    let (k, v) = if t.slot_major {
        let k = c.uniform("k", &[t.sk, t.b, t.kvh, t.d], -2., 2.)?;
        let v = c.uniform("v", &[t.sk, t.b, t.kvh, t.d], -2., 2.)?;
        (
            c.b.permute(k, vec![1, 2, 0, 3])?,
            c.b.permute(v, vec![1, 2, 0, 3])?,
        )
    } else {
        (
            c.uniform("k", &[t.b, t.kvh, t.sk, t.d], -2., 2.)?,
            c.uniform("v", &[t.b, t.kvh, t.sk, t.d], -2., 2.)?,
        )
    };
    // Row r of the batch keeps its first sk - 2r keys (at least one).
    let pad = |bi: u64, j: u64| j + 2 * bi < t.sk || j == 0;
    let mask: Option<NodeId> = match t.mask {
        Mask::None => None,
        Mask::Gaps => {
            let keep: Vec<i64> = (0..t.b)
                .flat_map(|bi| {
                    (0..t.sk).map(move |j| (j < 3 + bi || (150..170 + bi).contains(&j)) as i64)
                })
                .collect();
            let shape = [t.b, 1, 1, t.sk];
            Some(c.input(
                "mask",
                fixed(&shape),
                int_tensor(DType::Bool, shape.to_vec(), &keep),
            )?)
        }
        Mask::PadFloat | Mask::PadBool => {
            let keep: Vec<i64> = (0..t.b)
                .flat_map(|bi| (0..t.sk).map(move |j| pad(bi, j) as i64))
                .collect();
            let shape = [t.b, 1, 1, t.sk];
            Some(if t.mask == Mask::PadBool {
                c.input(
                    "mask",
                    fixed(&shape),
                    int_tensor(DType::Bool, shape.to_vec(), &keep),
                )?
            } else {
                let vals: Vec<f32> = keep
                    .iter()
                    .map(|&k| if k == 1 { 0.0 } else { -10000.0 })
                    .collect();
                c.values("mask", &shape, &vals)?
            })
        }
        Mask::Bias => Some(c.uniform("mask", &[t.b, t.h, t.sq, t.sk], -3., 3.)?),
        Mask::RandomBool => {
            let shape = [t.b, 1, t.sq, t.sk];
            let mut keep = c.rng.ints(count(&shape), 0, 1);
            for (n, k) in keep.iter_mut().enumerate() {
                if (n as u64 % t.sk) == (n as u64 / t.sk) % t.sq {
                    *k = 1;
                }
            }
            Some(c.input(
                "mask",
                fixed(&shape),
                int_tensor(DType::Bool, shape.to_vec(), &keep),
            )?)
        }
    };
    let y = c.b.attention(q, k, v, mask, t.causal, t.scale)?;
    c.output("y", y)?;
    c.finish()
}
