//! One data-driven builder for encoder-decoder models (T5, mT5, BART,
//! mBART, Pegasus, Blenderbot, Blenderbot-small, LED with Longformer's
//! windowed encoder attention, Whisper with its log-mel convolutional
//! front end), shared by the `text2text-generation` and
//! `automatic-speech-recognition` skills; [`run`] is their generation loop.
//!
//! [`spec`] describes each family; [`Seq2Seq`] reads a model's config
//! against its spec and builds two graphs that share one session:
//!
//! - the **encode** graph runs once per batch: it encodes the inputs and
//!   writes, for every decoder layer, the cross-attention keys and values
//!   (`ck<i>`, `cv<i>` [rows, heads, source, head_dim]) and the source mask
//!   (`cross_mask` [rows, 1, 1, source], boolean) as session state, one row
//!   per decoder row (`rows` [rows] picks the encoder row of each: beams of
//!   one request share an input). Decode steps read that state without
//!   updating it, so it stays where it is (no per-step copy).
//!   Inputs: `input_ids`, `attention_mask` [batch, source] (i64), `rows`,
//!   `positions` [source] (table positions, offset included) or
//!   `buckets` [source, source] (T5); Whisper takes `input_features`
//!   [batch, mels, frames] (f32) and `attention_mask` [batch, frames / 2].
//! - the **decode** graph ([`Step`]) takes one token per row (`input_ids`
//!   [rows, 1]) and keeps the self-attention cache as state `sk<i>`/`sv<i>`,
//!   growing ([rows, heads, past, head_dim]) or in fixed slots ([slots, rows,
//!   heads, head_dim], written with `write-rows` at `cache_slot`, the filled
//!   slots given by `cache_mask` [1, slots]). With `reorder`, `beam_idx`
//!   [rows] first picks each row's cache from the row its beam came from.
//!   Inputs besides: `position` [1] (table families, offset included) or
//!   `buckets` [1, keys] (T5; keys: the cache's entries plus this step's).
//!   Candidates are ranked by log-probability with `logprobs` (beam search
//!   adds them up), else by logit (the same order). Outputs: the `top_k` best log-probabilities of the next
//!   token per row, `top_values` (f32) and `top_indices` (i64) [rows, k],
//!   largest first, and with `logits` the raw `logits` [rows, vocab].
//! - the **join** graph ([`Seq2Seq::join_graph`]) encodes requests that
//!   join a running batch and writes their cross-attention state into the
//!   rows they take (`take` [rows], `rows` [rows] their encoder row), the
//!   source padded to the state's length; decode steps then take per-row
//!   positions and cache masks (`decode.rs`).
//! - the **align** graph (Whisper's word timestamps, [`align`]) runs the
//!   decoder once over whole sequences for chosen cross-attention heads'
//!   probabilities.

#[cfg(feature = "generation")]
mod active;
mod align;
mod decode;
mod families;
#[cfg(feature = "generation")]
mod jobs;
#[cfg(feature = "generation")]
mod joins;
#[cfg(feature = "generation")]
mod rows;
#[cfg(feature = "generation")]
pub mod run;
pub mod spec;

use crate::config::Json;
use crate::encoder::longformer::{Sliding, Window};
use crate::encoder::relative::{bias_mask, Buckets};
use crate::graph::{AttentionOptions, BinaryOp, CompareOp, Node, ReduceOp, UnaryOp};
use crate::graph_ext::activation;
use crate::runtime::CompiledGraph;
use crate::{Dim, Dtype, Error, Graph};

pub use families::{family, model_types, FAMILIES};
use spec::{BlockNames, EncoderInput, FamilySpec, NormKind, NormPlace, Positions};

fn sym(s: &str) -> Dim {
    Dim::Symbolic(s.into())
}

/// How the decoder's self-attention cache is kept between steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cache {
    /// Appended each step (cpu, openvino).
    Growing,
    /// This many slots per row, every step the same shapes (cuda graphs).
    Slots(u64),
}

/// One decode graph's options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Step {
    pub cache: Cache,
    /// Candidates returned per row.
    pub top_k: u32,
    /// Reorder the cache rows first (`beam_idx`).
    pub reorder: bool,
    /// Also return the raw logits.
    pub logits: bool,
    /// Candidates ranked by log-probability (beam search adds them up);
    /// otherwise by logit (same order; greedy and sampling need no more).
    pub logprobs: bool,
    /// Rows at different positions (requests joined a running batch):
    /// per-row positions and cache masks (`decode.rs`).
    pub joins: bool,
}

/// Dimensions read from config.json.
#[derive(Clone, Debug)]
pub struct Dims {
    pub d_model: u64,
    pub heads: u64,
    pub head_dim: u64,
    pub enc_layers: u64,
    pub dec_layers: u64,
    pub vocab: u64,
    /// Rows of the position table (`None`: relative positions, no limit).
    pub max_positions: Option<u64>,
    pub eps: f32,
    /// Mel bins and encoder positions of a log-mel encoder (Whisper): it
    /// takes `2 * positions` frames.
    pub mel: Option<(u64, u64)>,
}

/// An encoder-decoder model: its family's spec resolved against its
/// config and weights.
pub struct Seq2Seq {
    pub spec: &'static FamilySpec,
    pub dims: Dims,
    act: UnaryOp,
    /// Gated feed-forward (`wi_0`, `wi_1`).
    gated: bool,
    embed: String,
    embed_scale: Option<f64>,
    /// T5 scales the decoder output by d_model^-0.5 before a tied head.
    output_scale: Option<f64>,
    buckets: Option<Buckets>,
    /// LED's encoder window (global attention on the first token).
    pub sliding: Option<Sliding>,
    has: std::collections::HashSet<String>,
    /// Fuse projections of one input (q/k/v, cross k/v) into one product:
    /// fewer, larger products, a win on GPUs (CPU runtimes prefer separate).
    pub fuse: bool,
}

impl Seq2Seq {
    /// Reads config.json against the family of its `model_type`.
    pub fn load(config: &Json) -> Result<Seq2Seq, Error> {
        let model_type = config.str_or("model_type", "")?;
        let spec = family(model_type).ok_or_else(|| {
            Error::Unsupported(format!(
                "model_type `{model_type}` is not an encoder-decoder family served here (supported: {})",
                model_types().join(", ")
            ))
        })?;
        let k = &spec.keys;
        let d_model = config.u64(k.d_model)?;
        let heads = config.u64(k.heads)?;
        let enc_layers = config.u64(k.enc_layers)?;
        let dec_layers = config.u64_or(k.dec_layers, enc_layers)?;
        if heads == 0 {
            return Err(Error::Model("config.json: 0 attention heads".into()));
        }
        // One head layout serves both stacks.
        if let Some(enc) = config
            .value
            .get("encoder_attention_heads")
            .and_then(|v| v.as_u64())
        {
            if enc != heads {
                return Err(Error::Unsupported(format!(
                    "config.json: {enc} encoder and {heads} decoder attention heads (they must match)"
                )));
            }
        }
        let mel = match spec.input {
            EncoderInput::Tokens => None,
            EncoderInput::Mel => Some((
                config.u64_or("num_mel_bins", 80)?,
                config.u64_or("max_source_positions", 1500)?,
            )),
        };
        let head_dim = match k.head_dim {
            Some(key) => config.u64(key)?,
            None if d_model % heads == 0 => d_model / heads,
            None => {
                return Err(Error::Model(format!(
                    "config.json: d_model {d_model} is not a multiple of {heads} heads"
                )))
            }
        };
        let max_positions = match k.max_positions {
            Some(key) => Some(config.u64(key)?),
            None => None,
        };
        let eps = match spec.eps {
            Some(key) => config.f64_or(key, spec.eps_default)?,
            None => spec.eps_default,
        } as f32;
        let act_name = config.str_or(spec.act, spec.act_default)?;
        // T5's `feed_forward_proj`: `relu`, `gated-gelu` (gelu_new), ...
        let (gated, act) = match act_name.strip_prefix("gated-") {
            Some("gelu") => (true, UnaryOp::GeluTanh),
            Some(other) => (true, activation(other)?),
            None => (false, activation(act_name)?),
        };
        let has: std::collections::HashSet<String> = crate::model::weights()
            .into_iter()
            .map(|w| w.name)
            .collect();
        let embed = spec
            .embed
            .iter()
            .find(|n| has.contains(**n))
            .ok_or_else(|| {
                Error::Model(format!("no token embeddings (looked for {:?})", spec.embed))
            })?
            .to_string();
        let vocab = crate::model::weights()
            .into_iter()
            .find(|w| w.name == embed)
            .and_then(|w| w.shape.first().copied())
            .ok_or_else(|| Error::Model(format!("`{embed}` has no shape")))?;
        let embed_scale = match spec.scale_embedding {
            Some(default) => config.bool_or("scale_embedding", default)?,
            None => false,
        }
        .then_some((d_model as f64).sqrt());
        let output_scale = match spec.scaled_output {
            true => {
                let scale = match config
                    .value
                    .get("scale_decoder_outputs")
                    .and_then(|v| v.as_bool())
                {
                    Some(s) => s,
                    None => config.bool_or("tie_word_embeddings", true)?,
                };
                scale.then_some((d_model as f64).powf(-0.5))
            }
            false => None,
        };
        let buckets = match spec.positions {
            Positions::RelativeBuckets => Some(Buckets {
                count: config.u64_or("relative_attention_num_buckets", 32)? as i64,
                max_distance: config.u64_or("relative_attention_max_distance", 128)? as i64,
            }),
            Positions::Table { .. } => None,
        };
        let sliding = match spec.window {
            Some(_) => Some(Sliding {
                global_first: true,
                ..Sliding::from_config(config, enc_layers)?
            }),
            None => None,
        };
        Ok(Seq2Seq {
            spec,
            dims: Dims {
                d_model,
                heads,
                head_dim,
                enc_layers,
                dec_layers,
                vocab,
                max_positions,
                eps,
                mel,
            },
            act,
            gated,
            embed,
            embed_scale,
            output_scale,
            buckets,
            sliding,
            has,
            fuse: false,
        })
    }

    /// The relative position buckets (T5), if the family has them.
    pub fn buckets(&self) -> Option<Buckets> {
        self.buckets
    }

    /// Table positions start here (BART's offset of 2).
    pub fn position_offset(&self) -> i64 {
        match self.spec.positions {
            Positions::Table { offset } => offset,
            Positions::RelativeBuckets => 0,
        }
    }

    fn stack(&self, decoder: bool) -> &'static str {
        if decoder {
            self.spec.decoder
        } else {
            self.spec.encoder
        }
    }

    fn block(&self, decoder: bool, i: u64) -> String {
        format!(
            "{}.{}",
            self.stack(decoder),
            self.spec.block.replace("{i}", &i.to_string())
        )
    }

    fn norm(&self, g: &Graph, x: Node, prefix: &str) -> Result<Node, Error> {
        match self.spec.norm_kind {
            NormKind::Layer => g.layer_norm(x, prefix, self.dims.eps),
            NormKind::Rms => {
                g.b.rms_norm(x, g.weight(&format!("{prefix}.weight"))?, self.dims.eps)
            }
        }
    }

    /// Token embeddings (scaled) plus table positions at `positions`.
    fn embed(
        &self,
        g: &Graph,
        ids: Node,
        positions: Option<Node>,
        decoder: bool,
    ) -> Result<Node, Error> {
        let mut x = g.b.embedding(g.weight(&self.embed)?, ids)?;
        if let Some(s) = self.embed_scale {
            x = g.mul(x, g.scalar(s, Dtype::F32)?)?;
        }
        let stack = self.stack(decoder);
        let embed_norm = self
            .spec
            .embed_norm
            .map(|n| format!("{stack}.{n}"))
            .filter(|n| self.has.contains(&format!("{n}.weight")));
        let first = decoder && self.spec.dec_embed_norm_first;
        if let (Some(n), true) = (&embed_norm, first) {
            x = self.norm(g, x, n)?;
        }
        if let Some(p) = positions {
            let table = g.weight(&format!("{stack}.embed_positions.weight"))?;
            x = g.add(x, g.b.embedding(table, p)?)?;
        }
        if let (Some(n), false) = (&embed_norm, first) {
            x = self.norm(g, x, n)?;
        }
        Ok(x)
    }

    fn final_norm(&self, g: &Graph, x: Node, decoder: bool) -> Result<Node, Error> {
        let n = format!("{}.{}", self.stack(decoder), self.spec.final_norm);
        if self.has.contains(&format!("{n}.weight")) {
            self.norm(g, x, &n)
        } else {
            Ok(x)
        }
    }

    fn options(&self) -> AttentionOptions {
        AttentionOptions {
            causal: false,
            scale: self.spec.unscaled_attention.then_some(1.0),
        }
    }

    fn proj(&self, g: &Graph, x: Node, attn: &str, which: usize) -> Result<Node, Error> {
        g.linear(x, &format!("{attn}.{}", self.spec.proj[which]))
    }

    /// Projections `which` of one input `x` under `attn`, fused when asked.
    fn projs(&self, g: &Graph, x: Node, attn: &str, which: &[usize]) -> Result<Vec<Node>, Error> {
        let names: Vec<String> = which
            .iter()
            .map(|&j| format!("{attn}.{}", self.spec.proj[j]))
            .collect();
        match self.fuse {
            true => g.fused_linear(x, &names.iter().map(String::as_str).collect::<Vec<_>>()),
            false => names.iter().map(|n| g.linear(x, n)).collect(),
        }
    }

    fn heads(&self, g: &Graph, x: Node) -> Result<Node, Error> {
        g.split_heads(x, self.dims.heads, self.dims.head_dim)
    }

    /// A residual sub-layer: pre- or post-norm around `f`.
    fn sublayer(
        &self,
        g: &Graph,
        x: Node,
        norm: &str,
        f: impl FnOnce(Node) -> Result<Node, Error>,
    ) -> Result<Node, Error> {
        match self.spec.norm {
            NormPlace::Pre => {
                let y = f(self.norm(g, x, norm)?)?;
                g.add(x, y)
            }
            NormPlace::Post => {
                let y = f(x)?;
                self.norm(g, g.add(x, y)?, norm)
            }
        }
    }

    fn ffn(&self, g: &Graph, x: Node, p: &str, names: &BlockNames) -> Result<Node, Error> {
        let h = if self.gated {
            let a = g.linear(x, &format!("{p}.{}_0", names.ffn_in))?;
            let b = g.linear(x, &format!("{p}.{}_1", names.ffn_in))?;
            g.mul(g.unary(self.act, a)?, b)?
        } else {
            g.unary(self.act, g.linear(x, &format!("{p}.{}", names.ffn_in))?)?
        };
        g.linear(h, &format!("{p}.{}", names.ffn_out))
    }

    /// Builds and compiles the encode graph.
    pub fn encode_graph(&self) -> Result<CompiledGraph, Error> {
        let g = Graph::new(&format!(
            "{}-encode{}",
            self.spec.model_types[0],
            if self.fuse { "-fused" } else { "" }
        ));
        self.encode_into(&g, false)?;
        g.compile(&[])
    }

    /// Whether requests may join a running batch ([`Seq2Seq::join_graph`]):
    /// not under a windowed encoder (LED) nor for audio input (Whisper).
    pub fn joinable(&self) -> bool {
        self.sliding.is_none() && self.dims.mel.is_none()
    }

    /// The join graph: encodes the requests joining a running batch, their
    /// source padded to the state's length (`cross`), and writes their
    /// cross-attention state into the decoder rows `take` [rows] (boolean)
    /// marks, row `r` from encoder row `rows[r]`; other rows keep theirs.
    pub fn join_graph(&self) -> Result<CompiledGraph, Error> {
        if !self.joinable() {
            return Err(Error::Unsupported(format!(
                "{}: requests cannot join a running batch",
                self.spec.model_types[0]
            )));
        }
        let g = Graph::new(&format!(
            "{}-join{}",
            self.spec.model_types[0],
            if self.fuse { "-fused" } else { "" }
        ));
        self.encode_into(&g, true)?;
        g.compile(&[])
    }

    /// The encode graph's nodes and state updates; with `merge`, the join
    /// graph's (the source axis is the state's own, `cross`).
    fn encode_into(&self, g: &Graph, merge: bool) -> Result<(), Error> {
        let source = match merge {
            true => "cross",
            false => "source",
        };
        // Per-token inputs: [batch, source], or [batch, blocks, w] under a
        // window (the source padded to whole windows), flattened here.
        let token_input = |name: &str, lead: Dim| -> Result<Node, Error> {
            match self.sliding {
                None => g.input(name, Dtype::I64, &[lead, sym(source)]),
                Some(s) => {
                    let x = g.input(name, Dtype::I64, &[lead, sym("blocks"), Dim::Fixed(s.w)])?;
                    g.b.reshape(x, &[0, -1])
                }
            }
        };
        if let Some((bins, positions)) = self.dims.mel {
            return self.encode_mel(g, bins, positions);
        }
        let ids = token_input("input_ids", sym("batch"))?;
        let mask = token_input("attention_mask", sym("batch"))?;
        let rows = g.input("rows", Dtype::I64, &[sym("rows")])?;
        let keep =
            g.b.compare(CompareOp::Greater, mask, g.scalar(0.0, Dtype::I64)?)?;
        // [batch, 1, 1, source]
        let keys = g.b.unsqueeze(g.b.unsqueeze(keep, 1)?, 1)?;
        let x = match (self.sliding, self.spec.window) {
            (Some(s), Some(names)) => {
                let positions = token_input("positions", Dim::Fixed(1))?;
                let win = Window::new(g, s, keep, positions, 0)?;
                let x = self.embed(g, ids, Some(positions), false)?;
                self.encoder_blocks(g, x, |h, attn| {
                    let heads = |n: &str| self.heads(g, g.linear(h, &format!("{attn}.{n}"))?);
                    let [q, k, v] = names.local;
                    let [gq, gk, gv] = names.global;
                    let global = (heads(gq)?, heads(gk)?, heads(gv)?, keys);
                    let local = (heads(q)?, heads(k)?, heads(v)?);
                    let o = win.attention(g, local, Some(global), self.dims.head_dim)?;
                    g.linear(g.merge_heads(o)?, &format!("{attn}.{}", names.out))
                })?
            }
            _ => {
                let (positions, attn_mask) = match self.buckets {
                    Some(_) => {
                        let buckets =
                            g.input("buckets", Dtype::I64, &[sym(source), sym(source)])?;
                        let table = format!(
                            "{}.{}.relative_attention_bias",
                            self.block(false, 0),
                            self.spec.enc_block.attn
                        );
                        (None, bias_mask(g, &table, buckets, keys)?)
                    }
                    None => (
                        Some(g.input("positions", Dtype::I64, &[sym(source)])?),
                        keys,
                    ),
                };
                let x = self.embed(g, ids, positions, false)?;
                self.encoder_blocks(g, x, |h, attn| {
                    let qkv = self.projs(g, h, attn, &[0, 1, 2])?;
                    let q = self.heads(g, qkv[0])?;
                    let k = self.heads(g, qkv[1])?;
                    let v = self.heads(g, qkv[2])?;
                    let o = g.b.attention(q, k, v, Some(attn_mask), self.options())?;
                    self.proj(g, g.merge_heads(o)?, attn, 3)
                })?
            }
        };
        let take = match merge {
            true => Some(g.input("take", Dtype::Boolean, &[sym("rows")])?),
            false => None,
        };
        self.cross_state(g, x, keys, rows, take)
    }

    /// Whisper's encoder: `input_features` [batch, bins, 2 * positions]
    /// through two GELU convolutions, plus the position table, then the
    /// blocks (no mask: every frame counts, silence included).
    /// `attention_mask` [batch, positions] (ones) gives the cross mask.
    fn encode_mel(&self, g: &Graph, bins: u64, positions: u64) -> Result<(), Error> {
        let feats = g.input(
            "input_features",
            Dtype::F32,
            &[sym("batch"), Dim::Fixed(bins), Dim::Fixed(2 * positions)],
        )?;
        let mask = g.input(
            "attention_mask",
            Dtype::I64,
            &[sym("batch"), Dim::Fixed(positions)],
        )?;
        let rows = g.input("rows", Dtype::I64, &[sym("rows")])?;
        let enc = self.spec.encoder;
        let mut x = feats;
        for (name, stride) in [("conv1", 1), ("conv2", 2)] {
            let at = format!("{enc}.{name}");
            let bias = match self.has.contains(&format!("{at}.bias")) {
                true => Some(g.weight(&format!("{at}.bias"))?),
                false => None,
            };
            let opts = crate::graph::ConvOptions {
                stride: vec![stride],
                padding: vec![(1, 1)],
                dilation: vec![1],
                groups: 1,
            };
            x =
                g.b.conv(x, g.weight(&format!("{at}.weight"))?, bias, &opts)?;
            x = g.unary(UnaryOp::Gelu, x)?;
        }
        let x = g.b.permute(x, &[0, 2, 1])?;
        let x = g.add(x, g.weight(&format!("{enc}.embed_positions.weight"))?)?;
        let x = self.encoder_blocks(g, x, |h, attn| {
            let qkv = self.projs(g, h, attn, &[0, 1, 2])?;
            let q = self.heads(g, qkv[0])?;
            let k = self.heads(g, qkv[1])?;
            let v = self.heads(g, qkv[2])?;
            let o = g.b.attention(q, k, v, None, self.options())?;
            self.proj(g, g.merge_heads(o)?, attn, 3)
        })?;
        let keep =
            g.b.compare(CompareOp::Greater, mask, g.scalar(0.0, Dtype::I64)?)?;
        let keys = g.b.unsqueeze(g.b.unsqueeze(keep, 1)?, 1)?;
        self.cross_state(g, x, keys, rows, None)
    }

    /// The encoder blocks over embeddings `x` (self-attention by `attend`,
    /// given a block's normalised input and attention prefix) and the
    /// final norm.
    fn encoder_blocks(
        &self,
        g: &Graph,
        mut x: Node,
        attend: impl Fn(Node, &str) -> Result<Node, Error>,
    ) -> Result<Node, Error> {
        let names = self.spec.enc_block;
        for i in 0..self.dims.enc_layers {
            let p = self.block(false, i);
            let attn = format!("{p}.{}", names.attn);
            x = self.sublayer(g, x, &format!("{p}.{}", names.attn_norm), |h| {
                attend(h, &attn)
            })?;
            x = self.sublayer(g, x, &format!("{p}.{}", names.ffn_norm), |h| {
                self.ffn(g, h, &p, &names)
            })?;
        }
        self.final_norm(g, x, false)
    }

    /// Writes the cross-attention keys and values of every decoder layer,
    /// and the source mask `keys` [batch, 1, 1, source], as session state,
    /// one row per decoder row (`rows`: its encoder row); with `take`
    /// [rows], only into the rows it marks (the others keep their state).
    fn cross_state(
        &self,
        g: &Graph,
        x: Node,
        keys: Node,
        rows: Node,
        take: Option<Node>,
    ) -> Result<(), Error> {
        // [rows, 1, 1, 1]
        let take = match take {
            Some(t) => Some(g.b.reshape(t, &[-1, 1, 1, 1])?),
            None => None,
        };
        let write = |name: &str, dtype: Dtype, shape: &[Dim], new: Node| -> Result<(), Error> {
            let old = g.b.state(name, dtype, shape)?;
            let new = g.b.gather(new, rows, 0)?;
            let next = match (take, dtype) {
                // (take and new) or (not take and old), as
                // not(not(take and new) and not(not take and old)): ONNX
                // Runtime has no boolean `Where`.
                (Some(t), Dtype::Boolean) => {
                    let not = |x: Node| g.unary(UnaryOp::Not, x);
                    let a = g.b.logical_and(t, new)?;
                    let b = g.b.logical_and(not(t)?, old)?;
                    not(g.b.logical_and(not(a)?, not(b)?)?)?
                }
                (Some(t), _) => g.b.select(t, new, old)?,
                (None, _) => new,
            };
            g.b.update_state(name, next)
        };
        let dec = self.spec.dec_block;
        let cross_shape = [
            sym("rows"),
            Dim::Fixed(self.dims.heads),
            sym("cross"),
            Dim::Fixed(self.dims.head_dim),
        ];
        for i in 0..self.dims.dec_layers {
            let attn = format!("{}.{}", self.block(true, i), dec.cross);
            let kv = self.projs(g, x, &attn, &[1, 2])?;
            for (t, name) in [(kv[0], format!("ck{i}")), (kv[1], format!("cv{i}"))] {
                write(&name, Dtype::F32, &cross_shape, self.heads(g, t)?)?;
            }
        }
        let mask_shape = [sym("rows"), Dim::Fixed(1), Dim::Fixed(1), sym("cross")];
        write("cross_mask", Dtype::Boolean, &mask_shape, keys)
    }
}

/// log(softmax(x)) over the last axis, as x - max - log(sum(exp(x - max))).
fn log_softmax(g: &Graph, x: Node) -> Result<Node, Error> {
    let max = g.reduce(ReduceOp::Max, x, &[-1], true)?;
    let z = g.b.binary(BinaryOp::Sub, x, max)?;
    let sum = g.reduce(ReduceOp::Sum, g.unary(UnaryOp::Exp, z)?, &[-1], true)?;
    g.b.binary(BinaryOp::Sub, z, g.unary(UnaryOp::Log, sum)?)
}
