//! Qwen2-VL's vision tower (`Qwen2VisionTransformerPretrainedModel`) and
//! patch merger, for images cut into patches by
//! [`crate::image::patches`] (enabled with the `image` feature).
//!
//! - Patch embedding: the Conv3d whose stride is its kernel (temporal x
//!   patch x patch, no bias) is a linear layer over each flattened patch.
//! - 2-D rotary embedding: each patch's (row, column) in its image's grid
//!   ([`Qwen2VlVision::positions`], merge-window order); frequencies over a
//!   quarter of the head (theta from `rope_parameters`, 10000 by default),
//!   the first half of the rotated dims from the row, the second from the
//!   column, both halves repeated (rotate-half pairs).
//! - Blocks: pre-norm (LayerNorm, eps 1e-6), fused `qkv`, attention within
//!   each image only (transformers' `cu_seqlens`: a block-diagonal mask from
//!   each patch's image index), `proj`, then `fc1`, `hidden_act`
//!   (quick_gelu), `fc2`.
//! - Merger: `ln_q` (eps 1e-6), each merge x merge window's patches
//!   concatenated, `mlp.0`, exact GELU, `mlp.2` into the decoder's width.
//!
//! Graph inputs (images of any sizes in one step, `windows` merge windows
//! in all): `pixel_patches` f32 [windows, merge^2, channels * temporal *
//! patch * patch], `patch_positions` i64 [windows, merge^2, 2] and
//! `window_image` i64 [windows] (the image each window belongs to). The
//! features are [windows, width]: one row per image token.

use super::clip::{act, Act};
use crate::config::Json;
use crate::graph::{CompareOp, Node, UnaryOp};
use crate::tensors::f32_tensor;
use crate::{Dim, Dtype, Error, Graph};

/// Where a checkpoint keeps the tower: the hub's layout (which
/// transformers 5 also writes) or transformers 5's module names.
const BASES: &[&str] = &["visual.", "model.visual."];

/// The tower's LayerNorm epsilon (fixed in transformers).
const EPS: f32 = 1e-6;

/// A Qwen2-VL vision tower resolved against its config and weights.
#[derive(Clone, Debug)]
pub struct Qwen2VlVision {
    /// Weight-name prefix (`visual.` or `model.visual.`).
    pub base: String,
    pub embed: u64,
    pub heads: u64,
    pub depth: u64,
    pub act: Act,
    pub patch: u64,
    pub temporal: u64,
    pub merge: u64,
    pub channels: u64,
    /// The merger's output width (the decoder's hidden size).
    pub width: u64,
    pub theta: f32,
}

impl Qwen2VlVision {
    /// Reads `vision_config` of a `qwen2_vl` config and finds the tower in
    /// `g`'s checkpoint.
    pub fn load(config: &Json, g: &Graph) -> Result<Qwen2VlVision, Error> {
        let v = config
            .value
            .get("vision_config")
            .cloned()
            .ok_or_else(|| Error::Model("config.json: `vision_config` is missing".into()))?;
        let j = Json {
            file: "config.json vision_config".into(),
            value: v,
        };
        // Hub configs spell some keys the original way.
        let either = |a: &str, b: &str, default: u64| -> Result<u64, Error> {
            match j.value.get(a).filter(|x| !x.is_null()) {
                Some(_) => j.u64(a),
                None => j.u64_or(b, default),
            }
        };
        let embed = j.u64_or("embed_dim", 1280)?;
        let heads = either("num_heads", "num_attention_heads", 16)?;
        if heads == 0 || !embed.is_multiple_of(heads) || !(embed / heads).is_multiple_of(4) {
            return Err(Error::Model(format!(
                "{}: embed_dim {embed} over {heads} heads is not a head size divisible by 4",
                j.file
            )));
        }
        let theta = j
            .value
            .get("rope_parameters")
            .and_then(|p| p.get("rope_theta"))
            .and_then(|t| t.as_f64())
            .unwrap_or(10000.0) as f32;
        let probe = "patch_embed.proj.weight";
        let base = BASES
            .iter()
            .find(|b| g.has(&format!("{b}{probe}")))
            .ok_or_else(|| {
                Error::Model(format!(
                    "no Qwen2-VL vision tower in the checkpoint (looked for `{probe}` under {})",
                    BASES.join(", ")
                ))
            })?
            .to_string();
        let out = g.weight(&format!("{base}merger.mlp.2.weight"))?;
        let width = match g.b.info(out)?.shape.first() {
            Some(Dim::Fixed(w)) => *w,
            _ => {
                return Err(Error::Model(
                    "`merger.mlp.2.weight` has no fixed shape".into(),
                ))
            }
        };
        let merge = j.u64_or("spatial_merge_size", 2)?;
        let patch = either("patch_size", "spatial_patch_size", 14)?;
        let temporal = j.u64_or("temporal_patch_size", 2)?;
        if merge == 0 || patch == 0 || temporal == 0 {
            return Err(Error::Model(format!(
                "{}: patch, temporal patch and merge sizes must be positive",
                j.file
            )));
        }
        Ok(Qwen2VlVision {
            base,
            embed,
            heads,
            depth: j.u64_or("depth", 32)?,
            act: Act::named(j.str_or("hidden_act", "quick_gelu")?)?,
            patch,
            temporal,
            merge,
            channels: either("in_channels", "in_chans", 3)?,
            width,
            theta,
        })
    }

    /// Values per patch: channels * temporal * patch * patch.
    pub fn patch_width(&self) -> u64 {
        self.channels * self.temporal * self.patch * self.patch
    }

    /// (row, column) of each patch of a (t, h, w) grid in merge-window
    /// order, flattened: [t * h * w * 2].
    pub fn positions(&self, [t, h, w]: [u64; 3]) -> Vec<i64> {
        let m = self.merge;
        let mut out = Vec::with_capacity((t * h * w * 2) as usize);
        for _ in 0..t {
            for wy in 0..h / m {
                for wx in 0..w / m {
                    for my in 0..m {
                        for mx in 0..m {
                            out.push((wy * m + my) as i64);
                            out.push((wx * m + mx) as i64);
                        }
                    }
                }
            }
        }
        out
    }

    /// The graph inputs (see the module docs) and the merged image
    /// features [windows, width].
    pub fn features(&self, g: &Graph) -> Result<Node, Error> {
        let windows = Dim::Symbolic("windows".into());
        let m2 = self.merge * self.merge;
        let pixels = g.input(
            "pixel_patches",
            Dtype::F32,
            &[
                windows.clone(),
                Dim::Fixed(m2),
                Dim::Fixed(self.patch_width()),
            ],
        )?;
        let pos = g.input(
            "patch_positions",
            Dtype::I64,
            &[windows.clone(), Dim::Fixed(m2), Dim::Fixed(2)],
        )?;
        let image = g.input("window_image", Dtype::I64, std::slice::from_ref(&windows))?;
        let b = &self.base;
        let e = self.embed as i64;
        // [1, patches, patch_width] through the flattened Conv3d weight.
        let x = g.b.reshape(pixels, &[1, -1, self.patch_width() as i64])?;
        let w = g.weight(&format!("{b}patch_embed.proj.weight"))?;
        let w = g.b.reshape(w, &[e, -1])?;
        let mut x = g.b.linear(x, w, None)?;
        let (cos, sin) = self.rotary(g, pos)?;
        // Patches attend within their image: [1, 1, patches, patches].
        let seg =
            g.b.expand(g.b.unsqueeze(image, -1)?, &[windows, Dim::Fixed(m2)])?;
        let seg = g.b.reshape(seg, &[-1])?;
        let same = g.b.compare(
            CompareOp::Equal,
            g.b.unsqueeze(seg, -1)?,
            g.b.unsqueeze(seg, 0)?,
        )?;
        let mask = g.b.unsqueeze(g.b.unsqueeze(same, 0)?, 0)?;
        for i in 0..self.depth {
            x = self.block(g, x, &format!("{b}blocks.{i}."), (cos, sin), mask)?;
        }
        let x = g.layer_norm(x, &format!("{b}merger.ln_q"), EPS)?;
        let x = g.b.reshape(x, &[-1, e * m2 as i64])?;
        let x = g.unary(UnaryOp::Gelu, g.linear(x, &format!("{b}merger.mlp.0"))?)?;
        g.linear(x, &format!("{b}merger.mlp.2"))
    }

    /// cos and sin [patches, head_dim] from positions [windows, m^2, 2].
    fn rotary(&self, g: &Graph, pos: Node) -> Result<(Node, Node), Error> {
        let hd = self.embed / self.heads;
        let quarter = hd / 4;
        let freq = |i: u64| 1.0 / self.theta.powf((2 * i) as f32 / (hd / 2) as f32);
        // Half a head: the row's frequencies, then the column's.
        let inv: Vec<f32> = (0..hd / 2).map(|j| freq(j % quarter)).collect();
        let axis: Vec<i64> = (0..hd / 2).map(|j| (j / quarter) as i64).collect();
        let pos = g.b.cast(g.b.reshape(pos, &[-1, 2])?, Dtype::F32)?;
        let axis =
            g.b.constant(&crate::tensors::i64_tensor(vec![hd / 2], &axis))?;
        let picked = g.b.gather(pos, axis, 1)?;
        let half = g.mul(picked, g.b.constant(&f32_tensor(vec![hd / 2], &inv))?)?;
        let angles = g.b.concat(&[half, half], -1)?;
        Ok((
            g.unary(UnaryOp::Cos, angles)?,
            g.unary(UnaryOp::Sin, angles)?,
        ))
    }

    /// One block on `x` [1, patches, embed].
    fn block(
        &self,
        g: &Graph,
        x: Node,
        at: &str,
        (cos, sin): (Node, Node),
        mask: Node,
    ) -> Result<Node, Error> {
        let (e, hd) = (self.embed as i64, self.embed / self.heads);
        let n = g.layer_norm(x, &format!("{at}norm1"), EPS)?;
        let qkv = g.linear(n, &format!("{at}attn.qkv"))?;
        let part = |k: i64| -> Result<Node, Error> {
            g.split_heads(g.b.slice(qkv, -1, k * e, (k + 1) * e)?, self.heads, hd)
        };
        let q = g.b.rotary(part(0)?, cos, sin, false)?;
        let k = g.b.rotary(part(1)?, cos, sin, false)?;
        let a = g.attention(q, k, part(2)?, Some(mask), false)?;
        let a = g.linear(g.merge_heads(a)?, &format!("{at}attn.proj"))?;
        let x = g.add(x, a)?;
        let n = g.layer_norm(x, &format!("{at}norm2"), EPS)?;
        let h = act(g, self.act, g.linear(n, &format!("{at}mlp.fc1"))?)?;
        g.add(x, g.linear(h, &format!("{at}mlp.fc2"))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_merge_windows() {
        let v = Qwen2VlVision {
            base: "visual.".into(),
            embed: 32,
            heads: 4,
            depth: 1,
            act: Act::QuickGelu,
            patch: 8,
            temporal: 2,
            merge: 2,
            channels: 3,
            width: 64,
            theta: 10000.0,
        };
        // transformers' get_vision_position_ids for a (1, 2, 4) grid.
        let rows_cols: Vec<(i64, i64)> = v
            .positions([1, 2, 4])
            .chunks(2)
            .map(|p| (p[0], p[1]))
            .collect();
        assert_eq!(
            rows_cols,
            vec![
                (0, 0),
                (0, 1),
                (1, 0),
                (1, 1),
                (0, 2),
                (0, 3),
                (1, 2),
                (1, 3)
            ]
        );
        assert_eq!(v.patch_width(), 384);
    }
}
