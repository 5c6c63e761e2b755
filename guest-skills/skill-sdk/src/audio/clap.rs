//! CLAP (transformers' `ClapModel`): an HTSAT audio tower and a RoBERTa
//! text tower, each projected (linear, `projection_hidden_act`, linear)
//! into a shared space and L2-normalised, as `get_audio_features` /
//! `get_text_features` return them.
//!
//! Audio graph: `input_features` [batch, channels, width, mels] (the
//! extractor's dB spectrogram with its frames already resized to the
//! tower's `width`, [`super::clap_features::resize_frames`]) -> the
//! per-mel batch norm; the spectrogram folded into a `spec_size` square
//! image (`freq_ratio` slices of the time axis stacked along frequency);
//! patches (a reshape and a linear layer: patch size equals stride); with
//! `enable_fusion`, channels 1-3 (three chunks) patched by `mel_conv2d` side
//! by side and merged into the whole-clip patches by the attentional
//! feature fusion block (1x1 convolutions as linear layers, batch norms as
//! affine maps); the Swin stages ([`crate::vision::swin::Swin`]); the final
//! norm, averaged over every token; the projection.
//!
//! Text graph: the encoder inputs (`skill_sdk::encoder`, family
//! `clap_text_model`) -> the pooler (tanh of a dense layer on `<s>`) -> the
//! projection. With [`Output::Logits`] the text side is also multiplied by
//! exp(`logit_scale_a`), so a dot product is `logits_per_audio`.

use crate::config::Json;
use crate::encoder::Encoder;
use crate::graph::{Node, ReduceOp, UnaryOp};
use crate::graph_ext::activation;
pub use crate::vision::clip::Output;
use crate::vision::swin::Swin;
use crate::{Dim, Dtype, Error, Graph};

/// The audio encoder's weights.
const AUDIO: &str = "audio_model.audio_encoder.";
/// PyTorch's BatchNorm2d epsilon (CLAP's batch norms keep the default).
const BN_EPS: f64 = 1e-5;

/// The HTSAT audio tower's geometry.
#[derive(Clone, Debug)]
pub struct AudioTower {
    pub spec_size: u64,
    pub mel_bins: u64,
    pub patch: u64,
    pub embed_dim: u64,
    pub hidden: u64,
    pub fusion: bool,
    pub eps: f32,
    depths: Vec<u64>,
    heads: Vec<u64>,
    window: u64,
    act: UnaryOp,
}

impl AudioTower {
    /// `spec_size / num_mel_bins`: time slices stacked along frequency.
    pub fn freq_ratio(&self) -> u64 {
        self.spec_size / self.mel_bins
    }

    /// Frames the tower takes (`spec_size * freq_ratio`).
    pub fn width(&self) -> u64 {
        self.spec_size * self.freq_ratio()
    }

    fn read(j: &Json) -> Result<AudioTower, Error> {
        let bad = |what: String| Error::Model(format!("{}: {what}", j.file));
        // An int or a pair of equal ints.
        let square = |key: &str, default: u64| -> Result<u64, Error> {
            match j.value.get(key) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(serde_json::Value::Array(_)) => match j.u64_list(key)?.as_slice() {
                    [a, b] if a == b => Ok(*a),
                    other => Err(Error::Unsupported(format!(
                        "{}: `{key}` {other:?} (only square patches are served)",
                        j.file
                    ))),
                },
                Some(_) => j.u64(key),
            }
        };
        let (patch, stride) = (square("patch_size", 4)?, square("patch_stride", 4)?);
        if patch != stride || patch == 0 {
            return Err(Error::Unsupported(format!(
                "{}: patch_size {patch} with patch_stride {stride} (overlapping patches) is not served",
                j.file
            )));
        }
        let fusion = j.bool_or("enable_fusion", false)?;
        if fusion && j.str_or("fusion_type", "aff_2d")? == "channel_map" {
            return Err(Error::Unsupported(format!(
                "{}: fusion_type `channel_map` (transformers cannot run it either)",
                j.file
            )));
        }
        if j.u64_or("patch_embed_input_channels", 1)? != 1
            || !j.bool_or("flatten_patch_embeds", true)?
        {
            return Err(Error::Unsupported(format!(
                "{}: patch_embed_input_channels other than 1 or unflattened patches",
                j.file
            )));
        }
        let t = AudioTower {
            spec_size: j.u64_or("spec_size", 256)?,
            mel_bins: j.u64_or("num_mel_bins", 64)?,
            patch,
            embed_dim: j.u64_or("patch_embeds_hidden_size", 96)?,
            hidden: j.u64_or("hidden_size", 768)?,
            fusion,
            eps: j.f64_or("layer_norm_eps", 1e-5)? as f32,
            depths: j.u64_list("depths")?,
            heads: j.u64_list("num_attention_heads")?,
            window: j.u64_or("window_size", 8)?,
            act: activation(j.str_or("hidden_act", "gelu")?)?,
        };
        let ratio = t.spec_size.checked_div(t.mel_bins).unwrap_or(0);
        if ratio == 0 || !t.spec_size.is_multiple_of(ratio) || t.spec_size / ratio != t.mel_bins {
            return Err(bad(format!(
                "spec_size {} does not fold {} mel bins",
                t.spec_size, t.mel_bins
            )));
        }
        let grid = t.spec_size / t.patch;
        if !t.spec_size.is_multiple_of(t.patch) || grid == 0 || t.depths.len() > 8 {
            return Err(bad(format!(
                "spec_size {} and patch {} do not make a patch grid",
                t.spec_size, t.patch
            )));
        }
        let out = t.embed_dim << (t.depths.len().max(1) - 1);
        if out != t.hidden {
            return Err(bad(format!(
                "hidden_size {} is not the last stage's width {out}",
                t.hidden
            )));
        }
        Ok(t)
    }
}

/// A CLAP model's towers.
pub struct Clap {
    /// The text tower (a RoBERTa encoder under `text_model.`).
    pub text: Encoder,
    pub audio: AudioTower,
    /// `projection_hidden_act` of both projections.
    pub act: UnaryOp,
}

impl Clap {
    pub fn load(config: &Json) -> Result<Clap, Error> {
        let mt = config.str_or("model_type", "")?;
        if mt != "clap" {
            return Err(Error::Unsupported(format!("model_type `{mt}` is not CLAP")));
        }
        let section = |k: &str| -> Result<Json, Error> {
            let mut value = config
                .value
                .get(k)
                .cloned()
                .ok_or_else(|| Error::Model(format!("config.json: `{k}` is missing")))?;
            if let Some(m) = value.as_object_mut() {
                m.entry("model_type").or_insert("clap_text_model".into());
            }
            Ok(Json {
                file: format!("config.json {k}"),
                value,
            })
        };
        let mut text = section("text_config")?;
        text.value["model_type"] = "clap_text_model".into();
        let probe = Graph::new("clap-probe");
        Ok(Clap {
            text: Encoder::load(&text, &probe)?,
            audio: AudioTower::read(&section("audio_config")?)?,
            act: activation(config.str_or("projection_hidden_act", "relu")?)?,
        })
    }

    /// linear1, activation, linear2 of `prefix`, L2-normalised.
    fn project(&self, g: &Graph, x: Node, prefix: &str) -> Result<Node, Error> {
        let h = g.unary(self.act, g.linear(x, &format!("{prefix}.linear1"))?)?;
        let y = g.linear(h, &format!("{prefix}.linear2"))?;
        g.b.l2_normalize(y, -1, 1e-12)
    }

    /// The text graph (see the module docs).
    pub fn text_graph(&self, output: Output) -> Result<(Graph, Node), Error> {
        let e = self.text.build("clap-text")?;
        let pooled = self.text.pooler(&e.g, e.hidden)?;
        let unit = self.project(&e.g, pooled, "text_projection")?;
        let out = match output {
            Output::Features => unit,
            Output::Logits => {
                let scale = e.g.unary(UnaryOp::Exp, e.g.weight("logit_scale_a")?)?;
                e.g.mul(unit, scale)?
            }
        };
        Ok((e.g, out))
    }

    /// The audio graph over features of `channels` channels.
    pub fn audio_graph(&self, channels: u64) -> Result<(Graph, Node), Error> {
        let t = &self.audio;
        let want = if t.fusion { 4 } else { 1 };
        if channels != want {
            return Err(Error::Unsupported(format!(
                "the feature extractor gives {channels} mel channel(s) (its `truncation`); this model \
                 (enable_fusion {}) takes {want}; transformers fails on this pairing too",
                t.fusion
            )));
        }
        let g = Graph::new("clap-audio");
        let (r, f, w) = (t.freq_ratio() as i64, t.mel_bins as i64, t.width() as i64);
        let c = channels as i64;
        let feats = g.input(
            "input_features",
            Dtype::F32,
            &[
                Dim::Symbolic("batch".into()),
                Dim::Fixed(channels),
                Dim::Fixed(t.width()),
                Dim::Fixed(t.mel_bins),
            ],
        )?;
        let x = batch_norm(&g, feats, &format!("{AUDIO}batch_norm"))?;
        // [b, c, w, f] -> [b, c*r, w/r, f] -> [b, c*r, f, w/r] -> [b, c, r*f, w/r]
        let x = g.b.reshape(x, &[0, c * r, w / r, f])?;
        let x = g.b.permute(x, &[0, 1, 3, 2])?;
        let img = g.b.reshape(x, &[0, c, r * f, w / r])?;
        let side = t.spec_size as i64;
        let (p, grid) = (t.patch as i64, (t.spec_size / t.patch) as i64);
        let proj = format!("{AUDIO}patch_embed.proj");
        let whole = patches(&g, g.b.slice(img, 1, 0, 1)?, (1, side, side), (p, p), &proj)?;
        let x = match t.fusion {
            false => whole,
            true => {
                let local = g.b.slice(img, 1, 1, 4)?;
                let conv = format!("{AUDIO}patch_embed.mel_conv2d");
                let local = patches(&g, local, (3, side, side), (p, 3 * p), &conv)?;
                // [b, h, 3, w3, d] -> [b, h, 3*w3, d], then zeros (or a cut)
                // to the whole clip's width.
                let w3 = side / (3 * p);
                let local = g.b.reshape(local, &[0, grid, 3 * w3, t.embed_dim as i64])?;
                let local = fit_width(&g, local, 3 * w3, grid, (grid, t.embed_dim))?;
                aff(
                    &g,
                    whole,
                    local,
                    &format!("{AUDIO}patch_embed.fusion_model"),
                )?
            }
        };
        let mut x = g.b.reshape(x, &[0, grid * grid, t.embed_dim as i64])?;
        let norm = format!("{AUDIO}patch_embed.norm");
        if g.has(&format!("{norm}.weight")) {
            x = g.layer_norm(x, &norm, t.eps)?;
        }
        let swin = Swin::stages(
            &format!("{AUDIO}layers."),
            t.embed_dim,
            (t.depths.clone(), t.heads.clone()),
            t.window,
            t.eps,
            t.act,
        )?;
        let x = swin.encode(&g, x, (grid as u64, grid as u64))?;
        let x = g.layer_norm(x, &format!("{AUDIO}norm"), t.eps)?;
        let pooled = g.reduce(ReduceOp::Mean, x, &[1], false)?;
        let out = self.project(&g, pooled, "audio_projection")?;
        Ok((g, out))
    }
}

/// Non-overlapping `kh` x `kw` patches of `x` [b, c, h, w] (columns past
/// the last whole patch dropped, as a convolution without padding does)
/// through the convolution weight `{prefix}.weight` [d, 1, kh, kw] shared
/// by the `c` channels: [b, h/kh, c, w/kw, d] (c = 1: [b, h/kh, w/kw, d]).
fn patches(
    g: &Graph,
    x: Node,
    (c, h, w): (i64, i64, i64),
    (kh, kw): (i64, i64),
    prefix: &str,
) -> Result<Node, Error> {
    let (gh, gw) = (h / kh, w / kw);
    let x = match gw * kw < w {
        true => g.b.slice(x, 3, 0, gw * kw)?,
        false => x,
    };
    let x = g.b.reshape(x, &[0, c, gh, kh, gw, kw])?;
    let x = g.b.permute(x, &[0, 2, 1, 4, 3, 5])?;
    let shape: Vec<i64> = match c {
        1 => vec![0, gh, gw, kh * kw],
        _ => vec![0, gh, c, gw, kh * kw],
    };
    let x = g.b.reshape(x, &shape)?;
    let weight =
        g.b.reshape(g.weight(&format!("{prefix}.weight"))?, &[-1, kh * kw])?;
    let bias = format!("{prefix}.bias");
    let bias = match g.has(&bias) {
        true => Some(g.weight(&bias)?),
        false => None,
    };
    g.b.linear(x, weight, bias)
}

/// `x` [b, h, width, d] zero-padded (or cut) on the right to `to` columns
/// (`torch.nn.functional.pad` with a non-negative or negative amount).
fn fit_width(g: &Graph, x: Node, width: i64, to: i64, (h, d): (i64, u64)) -> Result<Node, Error> {
    match width.cmp(&to) {
        std::cmp::Ordering::Equal => Ok(x),
        std::cmp::Ordering::Greater => g.b.slice(x, 2, 0, to),
        std::cmp::Ordering::Less => {
            let shape = [
                Dim::Symbolic("batch".into()),
                Dim::Fixed(h as u64),
                Dim::Fixed((to - width) as u64),
                Dim::Fixed(d),
            ];
            let zeros = g.b.expand(g.scalar(0.0, Dtype::F32)?, &shape)?;
            g.b.concat(&[x, zeros], 2)
        }
    }
}

/// A BatchNorm2d in evaluation over the last axis of `x`:
/// `(x - mean) / sqrt(var + eps) * weight + bias`, folded into one scale
/// and one shift (constants the backends fold).
fn batch_norm(g: &Graph, x: Node, prefix: &str) -> Result<Node, Error> {
    let w = |n: &str| g.weight(&format!("{prefix}.{n}"));
    let var = g.add(w("running_var")?, g.scalar(BN_EPS, Dtype::F32)?)?;
    let scale = g.div(w("weight")?, g.unary(UnaryOp::Sqrt, var)?)?;
    let shift = g.b.binary(
        crate::graph::BinaryOp::Sub,
        w("bias")?,
        g.mul(w("running_mean")?, scale)?,
    )?;
    g.add(g.mul(x, scale)?, shift)
}

/// A 1x1 convolution (`{prefix}.weight` [out, in, 1, 1]) over the last axis.
fn pointwise(g: &Graph, x: Node, prefix: &str) -> Result<Node, Error> {
    let weight =
        g.b.reshape(g.weight(&format!("{prefix}.weight"))?, &[0, -1])?;
    let bias = g.weight(&format!("{prefix}.bias"))?;
    g.b.linear(x, weight, Some(bias))
}

/// conv, BN, ReLU, conv, BN (channels last) at `{prefix}.{first}..`.
fn attention_branch(g: &Graph, x: Node, prefix: &str, first: usize) -> Result<Node, Error> {
    let at = |k: usize| format!("{prefix}.{}", first + k);
    let y = batch_norm(g, pointwise(g, x, &at(0))?, &at(1))?;
    let y = g.unary(UnaryOp::Relu, y)?;
    batch_norm(g, pointwise(g, y, &at(3))?, &at(4))
}

/// The attentional feature fusion of the whole clip's patches `x` and the
/// chunks' `residual` (both [b, h, w, d]): `2 x a + 2 residual (1 - a)`,
/// `a` the sigmoid of a per-position and a global (mean) branch.
fn aff(g: &Graph, x: Node, residual: Node, prefix: &str) -> Result<Node, Error> {
    let sum = g.add(x, residual)?;
    let local = attention_branch(g, sum, &format!("{prefix}.local_att"), 0)?;
    let mean = g.reduce(ReduceOp::Mean, sum, &[1, 2], true)?;
    let global = attention_branch(g, mean, &format!("{prefix}.global_att"), 1)?;
    let a = g.unary(UnaryOp::Sigmoid, g.add(local, global)?)?;
    let two = g.scalar(2.0, Dtype::F32)?;
    let one = g.scalar(1.0, Dtype::F32)?;
    let keep = g.mul(g.mul(two, x)?, a)?;
    let rest = g.b.binary(crate::graph::BinaryOp::Sub, one, a)?;
    g.add(keep, g.mul(g.mul(two, residual)?, rest)?)
}

/// Everything a CLAP skill loads: the feature extractor, the tokenizer and
/// both towers' graphs compiled for `output`.
pub struct Loaded {
    pub clap: Clap,
    pub features: super::clap_features::ClapFeatures,
    pub tokenizer: crate::tokenizer::Tokenizer,
    pub audio: crate::runtime::CompiledGraph,
    pub text: crate::runtime::CompiledGraph,
}

impl Loaded {
    /// Reads the model's config and extractor, opens its tokenizer and
    /// compiles both towers; their outputs are named `name`.
    pub fn open(output: Output, name: &str) -> Result<Loaded, Error> {
        let clap = Clap::load(&Json::config()?)?;
        Loaded::with(clap, output, name)
    }

    /// [`Loaded::open`] for an already parsed model.
    pub fn with(clap: Clap, output: Output, name: &str) -> Result<Loaded, Error> {
        let features = super::clap_features::ClapFeatures::read()?;
        if features.n_mels as u64 != clap.audio.mel_bins {
            return Err(Error::Model(format!(
                "preprocessor_config.json: feature_size {} but the audio tower takes {} mel bins",
                features.n_mels, clap.audio.mel_bins
            )));
        }
        if features.frames() as u64 > clap.audio.width() {
            return Err(Error::Model(format!(
                "the extractor gives {} frames; the audio tower takes at most {} (transformers \
                 refuses this too)",
                features.frames(),
                clap.audio.width()
            )));
        }
        let tokenizer = crate::tokenizer::Tokenizer::open(crate::tokenizer::TokenizerOptions {
            max_length: Some(clap.text.max_tokens() as u32),
            add_special_tokens: true,
            pad_to_multiple_of: None,
            with_offsets: false,
        })?;
        let (g, out) = clap.audio_graph(features.channels() as u64)?;
        let audio = g.compile(&[(name, out)])?;
        let (g, out) = clap.text_graph(output)?;
        let text = g.compile(&[(name, out)])?;
        Ok(Loaded {
            clap,
            features,
            tokenizer,
            audio,
            text,
        })
    }

    /// The audio graph's input for clips at the extractor's rate.
    pub fn audio_inputs(&self, clips: &[&[f32]]) -> Result<Vec<crate::NamedTensor>, Error> {
        let width = self.clap.audio.width() as usize;
        let mut values = Vec::new();
        for clip in clips {
            let f = self.features.features(clip)?;
            values.extend(super::clap_features::resize_frames(&f, width));
        }
        let shape = vec![
            clips.len() as u64,
            self.features.channels() as u64,
            width as u64,
            self.clap.audio.mel_bins,
        ];
        Ok(vec![crate::NamedTensor {
            name: "input_features".into(),
            value: crate::tensors::f32_tensor(shape, &values),
        }])
    }
}
