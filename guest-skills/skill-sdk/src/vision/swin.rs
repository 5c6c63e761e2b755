//! Swin Transformer (image classification): attention inside windows of
//! the patch grid, shifted by half a window in every other block, patch
//! merging between stages, mean-pooled and classified.
//!
//! Everything is generic ops at fixed shapes (the image size is fixed):
//! the patch embedding is a reshape and a linear layer, the cyclic shift a
//! gather along each spatial axis, windows are reshapes, and each window's
//! attention gets its relative position bias (the checkpoint's table read
//! at indices the skill computes) plus, in shifted blocks, transformers'
//! -100 between tokens of different regions. Heads of all windows of an
//! image share one attention call: [batch, windows * heads, tokens, dim].
//!
//! [`Swin::stages`] and [`Swin::encode`] are the stages alone, for models
//! that embed their own input (CLAP's HTSAT audio tower, whose patches come
//! from a spectrogram folded into an image).

use crate::config::Json;
use crate::graph::{Node, ReduceOp, UnaryOp};
use crate::graph_ext::activation;
use crate::tensors::{f32_tensor, i64_tensor};
use crate::{Dim, Dtype, Error, Graph};

/// transformers' score between tokens of different shifted regions.
const OTHER_REGION: f32 = -100.0;

/// A Swin model resolved against its config.
pub struct Swin {
    pub base: String,
    /// Prefix of the stages (`{layers}{s}.blocks.{b}.`, `{layers}{s}.downsample`).
    layers: String,
    embed_dim: u64,
    depths: Vec<u64>,
    heads: Vec<u64>,
    window: u64,
    patch: u64,
    channels: u64,
    eps: f32,
    act: UnaryOp,
}

/// Positions `(i + shift) mod n` of a cyclic shift by `-shift` (torch.roll).
fn roll(n: u64, shift: i64) -> Vec<i64> {
    (0..n as i64)
        .map(|i| (i + shift).rem_euclid(n as i64))
        .collect()
}

/// Swin's relative position index of a `w` x `w` window, [w^2 * w^2].
fn relative_index(w: i64) -> Vec<i64> {
    let coords: Vec<(i64, i64)> = (0..w).flat_map(|h| (0..w).map(move |x| (h, x))).collect();
    let mut out = Vec::with_capacity(coords.len() * coords.len());
    for a in &coords {
        for b in &coords {
            out.push((a.0 - b.0 + w - 1) * (2 * w - 1) + (a.1 - b.1 + w - 1));
        }
    }
    out
}

/// The shifted-window mask [windows, 1, w^2, w^2]: 0 within a region,
/// -100 across, for a padded grid of `hp` x `wp`.
fn shift_mask(hp: u64, wp: u64, w: u64, shift: u64) -> Vec<f32> {
    let region = |i: u64, n: u64| (i >= n - w) as u64 + (i >= n - shift) as u64;
    let (nh, nw) = (hp / w, wp / w);
    let mut out = Vec::new();
    for wy in 0..nh {
        for wx in 0..nw {
            let ids: Vec<u64> = (0..w * w)
                .map(|t| region(wy * w + t / w, hp) * 3 + region(wx * w + t % w, wp))
                .collect();
            for a in &ids {
                for b in &ids {
                    out.push(if a == b { 0.0 } else { OTHER_REGION });
                }
            }
        }
    }
    out
}

fn fixed(v: &[u64]) -> Vec<Dim> {
    v.iter().map(|&n| Dim::Fixed(n)).collect()
}

impl Swin {
    pub fn load(config: &Json, g: &Graph) -> Result<Swin, Error> {
        let (depths, heads) = (config.u64_list("depths")?, config.u64_list("num_heads")?);
        if depths.is_empty() || depths.len() != heads.len() {
            return Err(Error::Model(
                "config.json: `depths` and `num_heads` differ in length".into(),
            ));
        }
        let base = g.base_prefix("swin", "embeddings.patch_embeddings.projection.weight")?;
        Ok(Swin {
            layers: format!("{base}encoder.layers."),
            base,
            embed_dim: config.u64("embed_dim")?,
            depths,
            heads,
            window: config.u64("window_size")?,
            patch: config.u64_or("patch_size", 4)?,
            channels: config.u64_or("num_channels", 3)?,
            eps: config.f64_or("layer_norm_eps", 1e-5)? as f32,
            act: activation(config.str_or("hidden_act", "gelu")?)?,
        })
    }

    /// The stages alone under `layers`, sized explicitly: `embed_dim`
    /// channels in the first, `depths` blocks and `heads` heads per stage,
    /// windows of `window`, layer norms of `eps`, MLP activation `act`.
    pub fn stages(
        layers: &str,
        embed_dim: u64,
        (depths, heads): (Vec<u64>, Vec<u64>),
        window: u64,
        eps: f32,
        act: UnaryOp,
    ) -> Result<Swin, Error> {
        if depths.is_empty() || depths.len() != heads.len() || window == 0 {
            return Err(Error::Model(format!(
                "Swin stages: depths {depths:?}, heads {heads:?}, window {window}"
            )));
        }
        Ok(Swin {
            base: String::new(),
            layers: layers.to_string(),
            embed_dim,
            depths,
            heads,
            window,
            patch: 1,
            channels: 1,
            eps,
            act,
        })
    }

    /// Channels after the last stage.
    pub fn out_dim(&self) -> u64 {
        self.embed_dim << (self.depths.len() - 1)
    }

    fn name(&self, rel: &str) -> String {
        format!("{}{rel}", self.base)
    }

    /// The pooled features [batch, channels] of images of (height, width).
    pub fn pooled(&self, g: &Graph, (height, width): (usize, usize)) -> Result<Node, Error> {
        let (p, c) = (self.patch, self.channels);
        let (h, w) = (height as u64, width as u64);
        let batch = Dim::Symbolic("batch".into());
        let pixels = g.input(
            "pixel_values",
            Dtype::F32,
            &[batch, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)],
        )?;
        // Pad to whole patches (zeros at the right and bottom).
        let pixels = self.pad(g, pixels, &[c, h, w], 2, h.div_ceil(p) * p)?;
        let (h, w) = (h.div_ceil(p) * p, w);
        let pixels = self.pad(g, pixels, &[c, h, w], 3, w.div_ceil(p) * p)?;
        let (h, w) = (h / p, w.div_ceil(p));
        let x = g.b.reshape(
            pixels,
            &[0, c as i64, h as i64, p as i64, w as i64, p as i64],
        )?;
        let x = g.b.permute(x, &[0, 2, 4, 1, 3, 5])?;
        let x = g.b.reshape(x, &[0, (h * w) as i64, (c * p * p) as i64])?;
        let proj = self.name("embeddings.patch_embeddings.projection");
        let weight = g.b.reshape(
            g.weight(&format!("{proj}.weight"))?,
            &[self.embed_dim as i64, -1],
        )?;
        let mut x =
            g.b.linear(x, weight, Some(g.weight(&format!("{proj}.bias"))?))?;
        if g.has(&self.name("embeddings.norm.weight")) {
            x = g.layer_norm(x, &self.name("embeddings.norm"), self.eps)?;
        }
        let x = self.encode(g, x, (h, w))?;
        let x = g.layer_norm(x, &self.name("layernorm"), self.eps)?;
        g.reduce(ReduceOp::Mean, x, &[1], false)
    }

    /// Every stage over patch embeddings `x` [batch, h*w, embed_dim] of an
    /// `h` x `w` grid: [batch, tokens, out_dim] after the last stage.
    pub fn encode(&self, g: &Graph, x: Node, (h, w): (u64, u64)) -> Result<Node, Error> {
        let (mut x, mut h, mut w) = (x, h, w);
        let mut dim = self.embed_dim;
        for (s, (&depth, &heads)) in self.depths.iter().zip(&self.heads).enumerate() {
            for b in 0..depth {
                let at = format!("{}{s}.blocks.{b}.", self.layers);
                let shift = if b % 2 == 1 { self.window / 2 } else { 0 };
                x = self.block(g, x, &at, (h, w, dim), heads, shift)?;
            }
            if s + 1 < self.depths.len() {
                let at = format!("{}{s}.downsample", self.layers);
                x = self.merge(g, x, &at, (h, w, dim))?;
                (h, w, dim) = (h.div_ceil(2), w.div_ceil(2), dim * 2);
            }
        }
        Ok(x)
    }

    /// `x` (shape `[batch] + rest`) zero-padded along `axis` to `to`.
    fn pad(&self, g: &Graph, x: Node, rest: &[u64], axis: usize, to: u64) -> Result<Node, Error> {
        let len = rest[axis - 1];
        if to <= len {
            return Ok(x);
        }
        let mut shape = vec![Dim::Symbolic("batch".into())];
        shape.extend(fixed(rest));
        shape[axis] = Dim::Fixed(to - len);
        let zeros = g.b.expand(g.scalar(0.0, Dtype::F32)?, &shape)?;
        g.b.concat(&[x, zeros], axis as i32)
    }

    /// One block over `x` [batch, h*w, dim].
    fn block(
        &self,
        g: &Graph,
        x: Node,
        at: &str,
        (h, w, dim): (u64, u64, u64),
        heads: u64,
        shift: u64,
    ) -> Result<Node, Error> {
        // A grid no larger than a window is one window, unshifted.
        let (win, shift) = match h.min(w) <= self.window {
            true => (h.min(w), 0),
            false => (self.window, shift),
        };
        if win != self.window {
            return Err(Error::Unsupported(format!(
                "a stage of {h}x{w} patches is smaller than the {0}x{0} window (transformers' relative \
                 position table would not fit either)",
                self.window
            )));
        }
        let (hp, wp) = (h.div_ceil(win) * win, w.div_ceil(win) * win);
        let (nh, nw, t) = (hp / win, wp / win, win * win);
        let n = g.layer_norm(x, &format!("{at}layernorm_before"), self.eps)?;
        let n = g.b.reshape(n, &[0, h as i64, w as i64, dim as i64])?;
        let n = self.pad(g, n, &[h, w, dim], 1, hp)?;
        let n = self.pad(g, n, &[hp, w, dim], 2, wp)?;
        let n = self.roll(g, n, (hp, wp), shift as i64)?;
        // Windows: [b, nh, win, nw, win, dim] -> [b, windows, t, dim].
        let n = g.b.reshape(
            n,
            &[0, nh as i64, win as i64, nw as i64, win as i64, dim as i64],
        )?;
        let n = g.b.permute(n, &[0, 1, 3, 2, 4, 5])?;
        let n =
            g.b.reshape(n, &[0, (nh * nw) as i64, t as i64, dim as i64])?;
        let d = dim / heads;
        let split = |rel: &str| -> Result<Node, Error> {
            let y = g.linear(n, &format!("{at}attention.self.{rel}"))?;
            let y =
                g.b.reshape(y, &[0, (nh * nw) as i64, t as i64, heads as i64, d as i64])?;
            let y = g.b.permute(y, &[0, 1, 3, 2, 4])?;
            g.b.reshape(y, &[0, (nh * nw * heads) as i64, t as i64, d as i64])
        };
        let bias = self.bias(g, at, win, heads, (hp, wp, shift))?;
        let a = g.b.attention(
            split("query")?,
            split("key")?,
            split("value")?,
            Some(bias),
            crate::graph::AttentionOptions {
                causal: false,
                scale: None,
            },
        )?;
        // [b, windows*heads, t, d] -> [b, windows, t, dim] -> grid.
        let a =
            g.b.reshape(a, &[0, (nh * nw) as i64, heads as i64, t as i64, d as i64])?;
        let a = g.b.permute(a, &[0, 1, 3, 2, 4])?;
        let a =
            g.b.reshape(a, &[0, (nh * nw) as i64, t as i64, dim as i64])?;
        let a = g.linear(a, &format!("{at}attention.output.dense"))?;
        let a = g.b.reshape(
            a,
            &[0, nh as i64, nw as i64, win as i64, win as i64, dim as i64],
        )?;
        let a = g.b.permute(a, &[0, 1, 3, 2, 4, 5])?;
        let a = g.b.reshape(a, &[0, hp as i64, wp as i64, dim as i64])?;
        let a = self.roll(g, a, (hp, wp), -(shift as i64))?;
        let a = g.b.slice(g.b.slice(a, 1, 0, h as i64)?, 2, 0, w as i64)?;
        let x = g.add(x, g.b.reshape(a, &[0, (h * w) as i64, dim as i64])?)?;
        let n = g.layer_norm(x, &format!("{at}layernorm_after"), self.eps)?;
        let i = g.unary(self.act, g.linear(n, &format!("{at}intermediate.dense"))?)?;
        g.add(x, g.linear(i, &format!("{at}output.dense"))?)
    }

    /// torch.roll of `x` [b, hp, wp, dim] by `-shift` on both grid axes.
    fn roll(&self, g: &Graph, x: Node, (hp, wp): (u64, u64), shift: i64) -> Result<Node, Error> {
        if shift == 0 {
            return Ok(x);
        }
        let rows = g.b.constant(&i64_tensor(vec![hp], &roll(hp, shift)))?;
        let cols = g.b.constant(&i64_tensor(vec![wp], &roll(wp, shift)))?;
        g.b.gather(g.b.gather(x, rows, 1)?, cols, 2)
    }

    /// The additive attention bias [1, windows*heads, t, t]: the relative
    /// position bias of every head, plus the region mask when shifted.
    fn bias(
        &self,
        g: &Graph,
        at: &str,
        win: u64,
        heads: u64,
        (hp, wp, shift): (u64, u64, u64),
    ) -> Result<Node, Error> {
        let t = win * win;
        let windows = (hp / win) * (wp / win);
        let table = g.weight(&format!("{at}attention.self.relative_position_bias_table"))?;
        let index =
            g.b.constant(&i64_tensor(vec![t * t], &relative_index(win as i64)))?;
        // [t*t, heads] -> [heads, t, t] -> [1, heads, t, t]
        let bias = g.b.reshape(
            g.b.gather(table, index, 0)?,
            &[t as i64, t as i64, heads as i64],
        )?;
        let bias = g.b.unsqueeze(g.b.permute(bias, &[2, 0, 1])?, 0)?;
        let bias = match shift {
            0 => g.b.expand(bias, &fixed(&[windows, heads, t, t]))?,
            s => {
                let mask = shift_mask(hp, wp, win, s);
                let mask = g.b.constant(&f32_tensor(vec![windows, 1, t, t], &mask))?;
                g.add(bias, mask)?
            }
        };
        g.b.reshape(bias, &[1, (windows * heads) as i64, t as i64, t as i64])
    }

    /// Patch merging: 2x2 neighbours concatenated (transformers' order),
    /// normalised and projected to twice the channels.
    fn merge(
        &self,
        g: &Graph,
        x: Node,
        at: &str,
        (h, w, dim): (u64, u64, u64),
    ) -> Result<Node, Error> {
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        let x = g.b.reshape(x, &[0, h as i64, w as i64, dim as i64])?;
        let x = self.pad(g, x, &[h, w, dim], 1, h2 * 2)?;
        let x = self.pad(g, x, &[h2 * 2, w, dim], 2, w2 * 2)?;
        let every = |n: u64, from: i64| -> Result<Node, Error> {
            let idx: Vec<i64> = (0..n as i64).map(|i| 2 * i + from).collect();
            g.b.constant(&i64_tensor(vec![n], &idx))
        };
        let mut parts = Vec::with_capacity(4);
        for col in 0..2 {
            for row in 0..2 {
                let y = g.b.gather(x, every(h2, row)?, 1)?;
                parts.push(g.b.gather(y, every(w2, col)?, 2)?);
            }
        }
        let x = g.b.concat(&parts, -1)?;
        let x = g.b.reshape(x, &[0, (h2 * w2) as i64, (4 * dim) as i64])?;
        let x = g.layer_norm(x, &format!("{at}.norm"), self.eps)?;
        g.linear(x, &format!("{at}.reduction"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_index_matches_swin() {
        // A 2x2 window: 9 relative offsets, the centre (0, 0) at 4.
        assert_eq!(
            relative_index(2),
            vec![4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]
        );
    }

    #[test]
    fn shift_regions_separate_the_wrapped_tokens() {
        // A 4x4 grid, windows of 2, shift 1: the last window mixes regions.
        let m = shift_mask(4, 4, 2, 1);
        assert_eq!(m.len(), 4 * 16);
        assert!(m[..16].iter().all(|&v| v == 0.0));
        assert!(m[48..].iter().any(|&v| v == OTHER_REGION));
        assert_eq!(roll(4, 1), vec![1, 2, 3, 0]);
    }
}
