//! One data-driven builder for BERT-like encoders, shared by the encoder
//! skills (`text-embedding`, `fill-mask`, `text-classification`,
//! `token-classification`).
//!
//! [`spec`] describes each family (weight names, config keys, positions,
//! relative attention bias, heads); [`Encoder`] reads the model's config
//! against its spec and builds the encoder's graph, [`heads`] the task
//! heads on top, and [`Encoder::inputs`] the tensors a tokenized batch
//! runs with.
//!
//! Graph inputs: `input_ids`, `attention_mask` [batch, sequence] (i64),
//! `token_type_ids` [batch, sequence] when the family has segments,
//! `position_ids` [1, sequence], and `relative_buckets` [sequence,
//! sequence] for families with a relative attention bias (MPNet),
//! `c2p_index`/`p2c_index` [sequence, sequence] for disentangled attention
//! (DeBERTa-v2).

pub mod disentangled;
mod families;
pub mod heads;
mod inputs;
pub mod longformer;
pub mod mobilebert;
pub mod relative;
pub mod spec;
pub mod xlm;

use crate::config::Json;
use crate::graph::{CompareOp, Node, UnaryOp};
use crate::graph_ext::activation;

use crate::{Dim, Dtype, Error, Graph};

use spec::{AttentionKind, Block, BlockSpec, FamilySpec, Layers, Positions, Qkv};

/// The score of a masked (query, key) pair: finite in every float dtype
/// (f16's lowest), so that a row with no key to attend to (padding) stays
/// finite instead of NaN, and exp() of it is 0 as with transformers'
/// `finfo.min`.
pub const MASKED: f64 = -65504.0;

/// An encoder model: its family's spec resolved against its config and
/// weights.
pub struct Encoder {
    pub spec: &'static FamilySpec,
    pub model_type: String,
    /// Prefix of the base model's weights (`bert.`, `question_encoder.`, ``).
    pub base: String,
    pub hidden: u64,
    pub heads: u64,
    pub eps: f32,
    pub act: UnaryOp,
    /// `pooler_hidden_act` (DeBERTa's classifier pooler).
    pub pooler_act: UnaryOp,
    /// Prefixes of the transformer blocks, in the order they run.
    pub blocks: Vec<String>,
    /// The padding token id (RoBERTa-style positions start after it).
    pub pad_id: i64,
    /// Rows of the absolute position table (`max_position_embeddings`
    /// without one).
    pub max_positions: u64,
    /// Whether the model adds absolute position embeddings.
    pub absolute: bool,
    /// Rows of the token-type table (0 without one).
    pub type_rows: u64,
    /// Relative attention buckets (MPNet).
    pub buckets: Option<relative::Buckets>,
    /// Disentangled attention settings (DeBERTa-v2).
    pub disentangled: Option<disentangled::Disentangled>,
    /// MobileBERT's switches.
    pub mobilebert: Option<mobilebert::MobileBert>,
    /// XLM / FlauBERT's switches (norm placement, sequence summary).
    pub xlm: Option<xlm::Xlm>,
    /// Longformer's window (and whether the first token attends globally).
    pub sliding: Option<longformer::Sliding>,
    /// The pooler applies its dense layer and tanh (`classifier_activation`,
    /// MobileBERT's switch; on elsewhere).
    pub classifier_activation: bool,
}

/// A graph with the encoder built into it.
pub struct EncoderGraph {
    pub g: Graph,
    /// The last hidden state [batch, sequence, hidden].
    pub hidden: Node,
    /// `attention_mask` as given (i64 [batch, sequence]).
    pub mask: Node,
    /// `attention_mask > 0` (boolean [batch, sequence]).
    pub keep: Node,
}

fn sym(s: &str) -> Dim {
    Dim::Symbolic(s.into())
}

impl Encoder {
    /// Resolves the model's family (`model_type`) against the weights that
    /// `g` sees. `Unsupported` for families without a spec.
    pub fn load(config: &Json, g: &Graph) -> Result<Encoder, Error> {
        let model_type = config.str_or("model_type", "")?.to_string();
        let spec = spec::family(&model_type).ok_or_else(|| {
            Error::Unsupported(format!(
                "model_type `{model_type}` is not a served encoder (served: {})",
                spec::model_types().join(", ")
            ))
        })?;
        let word = format!("{}{}.weight", spec.body, spec.embeddings.word);
        let base = spec
            .bases
            .iter()
            .find(|b| g.has(&format!("{b}{word}")))
            .ok_or_else(|| {
                Error::Model(format!(
                    "no `{word}` under any of the prefixes {:?}: not a {model_type} checkpoint",
                    spec.bases
                ))
            })?
            .to_string();
        let k = &spec.keys;
        let hidden = config.u64(k.hidden)?;
        let heads = config.u64(k.heads)?;
        let layers = config.u64(k.layers)?;
        if heads == 0 || hidden % heads != 0 {
            return Err(Error::Model(format!(
                "config.json: {} {hidden} is not a multiple of {} {heads}",
                k.hidden, k.heads
            )));
        }
        let eps = match k.eps {
            Some(key) => config.f64_or(key, k.eps_default)?,
            None => k.eps_default,
        } as f32;
        let act = match spec.block {
            Block::Xlm => xlm::Xlm::ffn_act(config)?,
            _ => activation(config.str_or(k.act, k.act_default)?)?,
        };
        let blocks = block_prefixes(spec, config, &base, layers)?;
        let rows = |name: &str| -> Result<u64, Error> {
            let full = format!("{base}{}{name}.weight", spec.body);
            let w = g.weight(&full)?;
            match g.b.info(w)?.shape.first() {
                Some(Dim::Fixed(n)) => Ok(*n),
                _ => Err(Error::Model(format!("`{full}` has no fixed shape"))),
            }
        };
        let absolute = g.has(&format!(
            "{base}{}{}.weight",
            spec.body, spec.embeddings.position
        ));
        let max_positions = match absolute {
            true => rows(spec.embeddings.position)?,
            false => config.u64("max_position_embeddings")?,
        };
        let type_rows = match spec.embeddings.token_type {
            Some(t) if g.has(&format!("{base}{}{t}.weight", spec.body)) => rows(t)?,
            _ => 0,
        };
        let buckets = match spec.attention {
            AttentionKind::Buckets { .. } => Some(relative::Buckets {
                count: config.u64_or("relative_attention_num_buckets", 32)? as i64,
                max_distance: 128,
            }),
            _ => None,
        };
        let disentangled = match spec.attention {
            AttentionKind::Disentangled { .. } => {
                Some(disentangled::Disentangled::from_config(config)?)
            }
            _ => None,
        };
        if !absolute && buckets.is_none() && disentangled.is_none() {
            return Err(Error::Model(format!(
                "no `{base}{}{}.weight`: the model has no positions",
                spec.body, spec.embeddings.position
            )));
        }
        Ok(Encoder {
            spec,
            model_type,
            base,
            hidden,
            heads,
            eps,
            act,
            pooler_act: activation(config.str_or("pooler_hidden_act", "gelu")?)?,
            blocks,
            pad_id: config.u64_or("pad_token_id", 0)? as i64,
            max_positions,
            absolute,
            type_rows,
            buckets,
            disentangled,
            mobilebert: match spec.block {
                Block::MobileBert => Some(mobilebert::MobileBert::from_config(config)?),
                Block::PostNorm(_) | Block::Xlm => None,
            },
            xlm: match spec.block {
                Block::Xlm => Some(xlm::Xlm::from_config(config)?),
                _ => None,
            },
            classifier_activation: config.bool_or("classifier_activation", true)?,
            sliding: match spec.attention {
                AttentionKind::SlidingWindow { .. } => {
                    Some(longformer::Sliding::from_config(config, layers)?)
                }
                _ => None,
            },
        })
    }

    /// The most tokens (special tokens included) one text may have.
    pub fn max_tokens(&self) -> u64 {
        match self.spec.embeddings.positions {
            Positions::FromZero => self.max_positions,
            Positions::AfterPadding => self.max_positions.saturating_sub(self.pad_id as u64 + 1),
        }
    }

    /// The multiple a batch's length must be padded to (Longformer's full
    /// window, as transformers pads it).
    pub fn pad_multiple(&self) -> Option<u32> {
        self.sliding.map(|s| 2 * s.w as u32)
    }

    /// Gives the first token global attention where the family has such a
    /// thing (Longformer), as transformers' sequence classifiers do.
    pub fn global_first_token(&mut self) {
        if let Some(s) = &mut self.sliding {
            s.global_first = true;
        }
    }

    /// Whether the model reads token types (segments of a pair).
    pub fn has_segments(&self) -> bool {
        self.type_rows > 1
    }

    /// An encoder weight's full name.
    pub fn name(&self, rel: &str) -> String {
        format!("{}{}{rel}", self.base, self.spec.body)
    }

    /// A new graph with the encoder's inputs and layers.
    pub fn build(&self, graph_name: &str) -> Result<EncoderGraph, Error> {
        let g = Graph::new(graph_name);
        let ids = self.token_input(&g, "input_ids", sym("batch"))?;
        let mask = self.token_input(&g, "attention_mask", sym("batch"))?;
        let types = match self.has_segments() {
            true => Some(self.token_input(&g, "token_type_ids", sym("batch"))?),
            false => None,
        };
        let pos = match self.absolute {
            true => Some(self.token_input(&g, "position_ids", Dim::Fixed(1))?),
            false => None,
        };
        let mut h = match (self.mobilebert, pos) {
            (Some(m), Some(pos)) => {
                let trigram = match m.trigram {
                    true => Some((
                        g.input("trigram_next", Dtype::I64, &[sym("sequence")])?,
                        g.input("trigram_prev", Dtype::I64, &[sym("sequence")])?,
                    )),
                    false => None,
                };
                self.mb_embed(&g, ids, pos, types, trigram)?
            }
            _ => self.embed(&g, ids, pos, types)?,
        };
        let pad = match self.xlm {
            Some(_) => Some(xlm::padding_multiplier(&g, mask)?),
            None => None,
        };
        if let Some(pad) = pad {
            h = g.mul(h, pad)?;
        }

        let zero = g.scalar(0.0, Dtype::I64)?;
        let keep = g.b.compare(CompareOp::Greater, mask, zero)?;
        // [batch, 1, 1, seq]: which keys each query may attend to.
        let keys = g.b.unsqueeze(g.b.unsqueeze(keep, 1)?, 1)?;
        let bias = match (self.spec.attention, self.disentangled, self.sliding) {
            (AttentionKind::SlidingWindow { .. }, _, Some(sl)) => {
                let first = match self.spec.embeddings.positions {
                    Positions::FromZero => 0,
                    Positions::AfterPadding => self.pad_id + 1,
                };
                let pos =
                    pos.ok_or_else(|| Error::Model("a sliding window needs positions".into()))?;
                Bias::Window(longformer::Window::new(&g, sl, keep, pos, first)?, keys)
            }
            (AttentionKind::Buckets { table }, _, _) => {
                let buckets = g.input(
                    "relative_buckets",
                    Dtype::I64,
                    &[sym("sequence"), sym("sequence")],
                )?;
                Bias::Mask(relative::bias_mask(&g, &self.name(table), buckets, keys)?)
            }
            (
                AttentionKind::Disentangled {
                    table,
                    norm,
                    c2p,
                    p2c,
                    shared,
                },
                Some(d),
                _,
            ) => {
                let proj = match d.share_key {
                    true => disentangled::Projections {
                        c2p: shared.0,
                        p2c: shared.1,
                    },
                    false => disentangled::Projections { c2p, p2c },
                };
                let names = (self.name(table), self.name(norm));
                let ctx = disentangled::Context::new(&g, d, proj, (&names.0, &names.1), self.eps)?;
                Bias::Disentangled(ctx, keys)
            }
            _ => Bias::Mask(keys),
        };
        for (l, prefix) in self.blocks.iter().enumerate() {
            h = match (&self.spec.block, &bias, pad) {
                (Block::MobileBert, Bias::Mask(mask), _) => self.mb_block(&g, h, *mask, prefix)?,
                (Block::Xlm, Bias::Mask(mask), Some(pad)) => {
                    self.xlm_block(&g, h, *mask, pad, prefix, l)?
                }
                (Block::PostNorm(b), _, _) => self.block(&g, h, b, &bias, prefix)?,
                _ => {
                    return Err(Error::Internal(
                        "MobileBERT and XLM blocks take no relative bias".into(),
                    ))
                }
            };
        }
        Ok(EncoderGraph {
            g,
            hidden: h,
            mask,
            keep,
        })
    }

    /// Word, position, segment (and box) embeddings, normalised, then
    /// projected to the hidden width where the family factorises them.
    fn embed(
        &self,
        g: &Graph,
        ids: Node,
        pos: Option<Node>,
        types: Option<Node>,
    ) -> Result<Node, Error> {
        let e = &self.spec.embeddings;
        let table = |rel: &str| g.weight(&format!("{}.weight", self.name(rel)));
        let mut h = g.b.embedding(table(e.word)?, ids)?;
        if let Some(t) = e.token_type.filter(|_| self.type_rows > 0) {
            // One segment: its row is added everywhere.
            let segment = match types {
                Some(types) => g.b.embedding(table(t)?, types)?,
                None => g.b.slice(table(t)?, 0, 0, 1)?,
            };
            h = g.add(h, segment)?;
        }
        if let Some(pos) = pos {
            h = g.add(h, g.b.embedding(table(e.position)?, pos)?)?;
        }
        if let Some([x, y, hh, w]) = e.boxes {
            // The all-zero box: left, upper, right, lower, height, width.
            for rel in [x, y, x, y, hh, w] {
                h = g.add(h, g.b.slice(table(rel)?, 0, 0, 1)?)?;
            }
        }
        let project = e
            .project
            .filter(|p| g.has(&format!("{}.weight", self.name(p))));
        if let Some(p) = project.filter(|_| e.project_before_norm) {
            h = g.linear(h, &self.name(p))?;
        }
        h = g.layer_norm(h, &self.name(e.norm), self.eps)?;
        if let Some(p) = project.filter(|_| !e.project_before_norm) {
            h = g.linear(h, &self.name(p))?;
        }
        Ok(h)
    }

    /// One post-norm transformer block.
    fn block(
        &self,
        g: &Graph,
        h: Node,
        b: &BlockSpec,
        bias: &Bias,
        prefix: &str,
    ) -> Result<Node, Error> {
        let head_dim = self.hidden / self.heads;
        let qkv = self.qkv(g, h, b.qkv, prefix)?;
        let a = match bias {
            Bias::Mask(mask) => g.attention(qkv.0, qkv.1, qkv.2, Some(*mask), false)?,
            Bias::Disentangled(ctx, keys) => {
                ctx.attention(g, prefix, qkv, *keys, self.heads, head_dim)?
            }
            Bias::Window(win, keys) => {
                let global = match (win.s.global_first, self.spec.attention) {
                    (
                        true,
                        AttentionKind::SlidingWindow {
                            global: [gq, gk, gv],
                        },
                    ) => {
                        let proj = |rel: &str| -> Result<Node, Error> {
                            g.split_heads(
                                g.linear(h, &format!("{prefix}{rel}"))?,
                                self.heads,
                                head_dim,
                            )
                        };
                        Some((proj(gq)?, proj(gk)?, proj(gv)?, *keys))
                    }
                    _ => None,
                };
                win.attention(g, qkv, global, head_dim)?
            }
        };
        let a = g.merge_heads(a)?;
        let a = g.linear(a, &format!("{prefix}{}", b.out))?;
        let h = g.layer_norm(g.add(a, h)?, &format!("{prefix}{}", b.attn_norm), self.eps)?;
        let i = g.unary(self.act, g.linear(h, &format!("{prefix}{}", b.ffn_in))?)?;
        let o = g.linear(i, &format!("{prefix}{}", b.ffn_out))?;
        g.layer_norm(g.add(o, h)?, &format!("{prefix}{}", b.ffn_norm), self.eps)
    }

    /// A per-token input [lead, sequence] (i64). Under a sliding window it
    /// is declared [lead, blocks, w] and flattened, so that the sequence is
    /// a whole number of blocks the window can reshape by.
    fn token_input(&self, g: &Graph, name: &str, lead: Dim) -> Result<Node, Error> {
        match self.sliding {
            None => g.input(name, Dtype::I64, &[lead, sym("sequence")]),
            Some(s) => {
                let x = g.input(name, Dtype::I64, &[lead, sym("blocks"), Dim::Fixed(s.w)])?;
                g.b.reshape(x, &[0, -1])
            }
        }
    }

    /// Queries, keys and values [batch, heads, seq, head_dim] of `h`.
    fn qkv(
        &self,
        g: &Graph,
        h: Node,
        layout: Qkv,
        prefix: &str,
    ) -> Result<(Node, Node, Node), Error> {
        let (heads, d) = (self.heads, self.hidden / self.heads);
        match layout {
            Qkv::Separate { query, key, value } => {
                let proj = |rel: &str| -> Result<Node, Error> {
                    g.split_heads(g.linear(h, &format!("{prefix}{rel}"))?, heads, d)
                };
                Ok((proj(query)?, proj(key)?, proj(value)?))
            }
            Qkv::PerHeadFused {
                weight,
                q_bias,
                v_bias,
            } => {
                // [b, s, heads, 3d] -> three [b, heads, s, d]
                let all = g.linear(h, &format!("{prefix}{weight}"))?;
                let all = g.b.reshape(all, &[0, 0, heads as i64, 3 * d as i64])?;
                let part = |i: i64| -> Result<Node, Error> {
                    let x = g.b.slice(all, -1, i * d as i64, (i + 1) * d as i64)?;
                    g.b.permute(x, &[0, 2, 1, 3])
                };
                // A bias [hidden] as [1, heads, 1, d].
                let bias = |rel: &str| -> Result<Node, Error> {
                    let w = g.weight(&format!("{prefix}{rel}"))?;
                    g.b.reshape(w, &[1, heads as i64, 1, d as i64])
                };
                let q = g.add(part(0)?, bias(q_bias)?)?;
                let v = g.add(part(2)?, bias(v_bias)?)?;
                Ok((q, part(1)?, v))
            }
        }
    }
}

/// How a block's attention is biased.
enum Bias {
    /// One mask (boolean or additive) for every layer.
    Mask(Node),
    /// Disentangled position terms, per layer, and the key mask.
    Disentangled(disentangled::Context, Node),
    /// A sliding window (Longformer), and the key mask [batch, 1, 1, seq].
    Window(longformer::Window, Node),
}

/// The block prefixes in run order.
fn block_prefixes(
    spec: &FamilySpec,
    config: &Json,
    base: &str,
    layers: u64,
) -> Result<Vec<String>, Error> {
    let root = format!("{base}{}", spec.body);
    Ok(match spec.layers {
        Layers::PerLayer(p) => (0..layers).map(|l| format!("{root}{p}{l}.")).collect(),
        Layers::Xlm => (0..layers).map(|_| root.clone()).collect(),
        Layers::AlbertGroups => {
            let groups = config.u64_or("num_hidden_groups", 1)?;
            let inner = config.u64_or("inner_group_num", 1)?;
            if groups == 0 || !layers.is_multiple_of(groups) {
                return Err(Error::Model(format!(
                    "config.json: num_hidden_layers {layers} is not a multiple of num_hidden_groups {groups}"
                )));
            }
            let per_group = layers / groups;
            let mut v = Vec::new();
            for l in 0..layers {
                let group = l / per_group;
                for i in 0..inner {
                    v.push(format!(
                        "{root}encoder.albert_layer_groups.{group}.albert_layers.{i}."
                    ));
                }
            }
            v
        }
    })
}
