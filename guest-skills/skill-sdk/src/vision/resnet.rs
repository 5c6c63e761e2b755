//! ResNet backbones as data (DETR's convolutional encoder): the timm layout
//! (`conv1`/`bn1`, `layer{s}.{i}.conv{k}`, `downsample.{0,1}`) and the
//! transformers `ResNetBackbone` layout (`embedder.embedder`,
//! `encoder.stages.{s}.layers.{i}.layer.{k}`, `shortcut`) resolve to one
//! structure: a 7x7/2 stem, a 3x3/2 max-pool, and stages of basic or
//! bottleneck blocks, read from the weights (kernel sizes, block counts)
//! and the config (where the stride goes).
//!
//! Batch norm is frozen (transformers' `DetrFrozenBatchNorm2d`): after each
//! convolution `x * scale + shift` per channel, with `scale = weight *
//! rsqrt(running_var + 1e-5)` and `shift = bias - running_mean * scale`,
//! computed from the weights inside the graph (constant-folded by the
//! backends). Max-pooling follows a ReLU, so its windows are built from
//! one-hot depthwise convolutions (zero padding cannot win over values
//! >= 0) and element-wise maxima: no pooling op is needed.
//!
//! Layout: channels first, [batch, channels, height, width], symbolic
//! height and width.

use crate::config::Json;
use crate::graph::{BinaryOp, ConvOptions, Node, UnaryOp};
use crate::tensors::f32_tensor;
use crate::{Dim, Dtype, Error, Graph};

/// transformers' frozen batch norm epsilon.
const BN_EPS: f64 = 1e-5;

/// One convolution and its frozen batch norm.
#[derive(Clone, Debug)]
struct ConvBn {
    conv: String,
    bn: String,
    stride: u32,
    relu: bool,
}

/// One residual block.
#[derive(Clone, Debug)]
struct Block {
    convs: Vec<ConvBn>,
    shortcut: Option<ConvBn>,
}

/// Weight naming of one checkpoint layout.
struct Layout {
    stem: (&'static str, &'static str),
    stage: fn(usize) -> String,
    block: fn(usize) -> String,
    conv: fn(usize) -> (String, String),
    shortcut: (&'static str, &'static str),
}

static TIMM: Layout = Layout {
    stem: ("conv1", "bn1"),
    stage: |s| format!("layer{}.", s + 1),
    block: |i| format!("{i}."),
    conv: |k| (format!("conv{}", k + 1), format!("bn{}", k + 1)),
    shortcut: ("downsample.0", "downsample.1"),
};

static NATIVE: Layout = Layout {
    stem: (
        "embedder.embedder.convolution",
        "embedder.embedder.normalization",
    ),
    stage: |s| format!("encoder.stages.{s}."),
    block: |i| format!("layers.{i}."),
    conv: |k| {
        (
            format!("layer.{k}.convolution"),
            format!("layer.{k}.normalization"),
        )
    },
    shortcut: ("shortcut.convolution", "shortcut.normalization"),
};

/// A ResNet backbone resolved against its weights.
#[derive(Debug)]
pub struct ResNet {
    stem: ConvBn,
    blocks: Vec<Block>,
    /// Channels of the last feature map.
    pub channels: u64,
    /// How many stride-2 steps lie between the pixels and the feature map.
    pub halvings: u32,
}

/// Output channels of a convolution weight [out, in, kh, kw].
fn conv_shape(g: &Graph, name: &str) -> Result<[u64; 4], Error> {
    let w = g.weight(&format!("{name}.weight"))?;
    match g.b.info(w)?.shape.as_slice() {
        [Dim::Fixed(o), Dim::Fixed(i), Dim::Fixed(kh), Dim::Fixed(kw)] => Ok([*o, *i, *kh, *kw]),
        other => Err(Error::Model(format!(
            "`{name}.weight`: expected a 2-D convolution kernel, got {other:?}"
        ))),
    }
}

impl ResNet {
    /// Finds the backbone under `bases` (the first holding a stem in either
    /// layout). `native` is the transformers ResNet config when the
    /// checkpoint uses it (`use_timm_backbone: false`), `None` for timm.
    /// `last_stage` (1-based) ends the network early (out_features /
    /// out_indices); `None` keeps every stage.
    pub fn load(
        g: &Graph,
        bases: &[String],
        native: Option<&Json>,
        last_stage: Option<usize>,
    ) -> Result<(ResNet, String), Error> {
        let layout = match native {
            Some(_) => &NATIVE,
            None => &TIMM,
        };
        let base = bases
            .iter()
            .find(|b| g.has(&format!("{b}{}.weight", layout.stem.0)))
            .ok_or_else(|| {
                Error::Model(format!(
                    "no ResNet stem `{}.weight` under {bases:?}: the backbone's layout is not supported",
                    layout.stem.0
                ))
            })?
            .clone();
        let (first_stride, in_bottleneck) = match native {
            Some(c) => {
                if c.str_or("hidden_act", "relu")? != "relu" {
                    return Err(Error::Unsupported(
                        "ResNet backbones with an activation other than relu".into(),
                    ));
                }
                (
                    if c.bool_or("downsample_in_first_stage", false)? {
                        2
                    } else {
                        1
                    },
                    c.bool_or("downsample_in_bottleneck", false)?,
                )
            }
            None => (1, false),
        };
        let at = |rel: &str| format!("{base}{rel}");
        let stem = ConvBn {
            conv: at(layout.stem.0),
            bn: at(layout.stem.1),
            stride: 2,
            relu: true,
        };
        let mut blocks = Vec::new();
        let mut channels = conv_shape(g, &stem.conv)?[0];
        let mut halvings = 2;
        let mut s = 0;
        while g.has(&format!(
            "{}.weight",
            at(&format!(
                "{}{}{}",
                (layout.stage)(s),
                (layout.block)(0),
                (layout.conv)(0).0
            ))
        )) && last_stage.is_none_or(|l| s < l)
        {
            let stride = if s == 0 { first_stride } else { 2 };
            if stride == 2 {
                halvings += 1;
            }
            let mut i = 0;
            loop {
                let prefix = at(&format!("{}{}", (layout.stage)(s), (layout.block)(i)));
                if !g.has(&format!("{prefix}{}.weight", (layout.conv)(0).0)) {
                    break;
                }
                let block_stride = if i == 0 { stride } else { 1 };
                let mut convs = Vec::new();
                let mut k = 0;
                while g.has(&format!("{prefix}{}.weight", (layout.conv)(k).0)) {
                    let (conv, bn) = (layout.conv)(k);
                    convs.push(ConvBn {
                        conv: format!("{prefix}{conv}"),
                        bn: format!("{prefix}{bn}"),
                        stride: 1,
                        relu: true,
                    });
                    k += 1;
                }
                // The stride sits on the first 3x3 convolution (timm,
                // transformers' default) or the first 1x1
                // (`downsample_in_bottleneck`).
                let strided = match in_bottleneck {
                    true => Some(0),
                    false => convs
                        .iter()
                        .map(|c| conv_shape(g, &c.conv).map(|s| s[2] > 1))
                        .collect::<Result<Vec<_>, _>>()?
                        .iter()
                        .position(|&big| big),
                };
                if let (Some(p), true) = (strided, block_stride == 2) {
                    convs[p].stride = 2;
                }
                if let Some(last) = convs.last_mut() {
                    last.relu = false;
                    channels = conv_shape(g, &last.conv)?[0];
                }
                let sc = format!("{prefix}{}", layout.shortcut.0);
                let shortcut = g.has(&format!("{sc}.weight")).then(|| ConvBn {
                    conv: sc,
                    bn: format!("{prefix}{}", layout.shortcut.1),
                    stride: block_stride,
                    relu: false,
                });
                blocks.push(Block { convs, shortcut });
                i += 1;
            }
            s += 1;
        }
        if blocks.is_empty() {
            return Err(Error::Model(format!(
                "the ResNet backbone under `{base}` has no stages"
            )));
        }
        Ok((
            ResNet {
                stem,
                blocks,
                channels,
                halvings,
            },
            base,
        ))
    }

    /// The last feature map [batch, channels, h, w] of `pixels` [batch, 3,
    /// height, width].
    pub fn features(&self, g: &Graph, pixels: Node) -> Result<Node, Error> {
        let x = conv_bn(g, pixels, &self.stem)?;
        let mut x = max_pool_3x3_s2(g, x, conv_shape(g, &self.stem.conv)?[0])?;
        for b in &self.blocks {
            let mut y = x;
            for c in &b.convs {
                y = conv_bn(g, y, c)?;
            }
            let short = match &b.shortcut {
                Some(s) => conv_bn(g, x, s)?,
                None => x,
            };
            x = g.unary(UnaryOp::Relu, g.add(y, short)?)?;
        }
        Ok(x)
    }
}

/// A convolution (padding kernel / 2) and its frozen batch norm, then ReLU
/// when asked.
fn conv_bn(g: &Graph, x: Node, c: &ConvBn) -> Result<Node, Error> {
    let [out, _, kh, kw] = conv_shape(g, &c.conv)?;
    let weight = g.weight(&format!("{}.weight", c.conv))?;
    let bias_name = format!("{}.bias", c.conv);
    let bias = match g.has(&bias_name) {
        true => Some(g.weight(&bias_name)?),
        false => None,
    };
    let (ph, pw) = ((kh / 2) as u32, (kw / 2) as u32);
    let y = g.b.conv(
        x,
        weight,
        bias,
        &ConvOptions {
            stride: vec![c.stride, c.stride],
            padding: vec![(ph, ph), (pw, pw)],
            dilation: vec![1, 1],
            groups: 1,
        },
    )?;
    let per_channel = |rel: &str| -> Result<Node, Error> {
        g.b.reshape(g.weight(&format!("{}.{rel}", c.bn))?, &[out as i64, 1, 1])
    };
    let eps = g.scalar(BN_EPS, Dtype::F32)?;
    let scale = g.mul(
        per_channel("weight")?,
        g.unary(UnaryOp::Rsqrt, g.add(per_channel("running_var")?, eps)?)?,
    )?;
    let shift = g.b.binary(
        BinaryOp::Sub,
        per_channel("bias")?,
        g.mul(per_channel("running_mean")?, scale)?,
    )?;
    let y = g.add(g.mul(y, scale)?, shift)?;
    match c.relu {
        true => g.unary(UnaryOp::Relu, y),
        false => Ok(y),
    }
}

/// `nn.MaxPool2d(3, stride 2, padding 1)` of `x` [batch, channels, h, w]
/// with values >= 0 (after a ReLU): the maximum over three one-hot
/// depthwise taps along the width (stride 2), then along the height.
fn max_pool_3x3_s2(g: &Graph, x: Node, channels: u64) -> Result<Node, Error> {
    let mut x = x;
    for axis in [3usize, 2] {
        let mut best: Option<Node> = None;
        for tap in 0..3 {
            let mut kernel = vec![0f32; channels as usize * 3];
            for c in 0..channels as usize {
                kernel[c * 3 + tap] = 1.0;
            }
            let shape = match axis {
                3 => vec![channels, 1, 1, 3],
                _ => vec![channels, 1, 3, 1],
            };
            let weight = g.b.constant(&f32_tensor(shape, &kernel))?;
            let (stride, padding) = match axis {
                3 => (vec![1, 2], vec![(0, 0), (1, 1)]),
                _ => (vec![2, 1], vec![(1, 1), (0, 0)]),
            };
            let y = g.b.conv(
                x,
                weight,
                None,
                &ConvOptions {
                    stride,
                    padding,
                    dilation: vec![1, 1],
                    groups: channels as u32,
                },
            )?;
            best = Some(match best {
                Some(b) => g.b.binary(BinaryOp::Maximum, b, y)?,
                None => y,
            });
        }
        x = best.ok_or_else(|| crate::internal("max-pool taps"))?;
    }
    Ok(x)
}

/// Picks every 2^`halvings`-th row and column of `mask` [batch, 1, height,
/// width] with the same stride-2 chain as the backbone, so the result has
/// the feature map's symbolic size.
pub fn sample_mask(g: &Graph, mask: Node, halvings: u32) -> Result<Node, Error> {
    let one = g.b.constant(&f32_tensor(vec![1, 1, 1, 1], &[1.0]))?;
    let mut m = mask;
    for _ in 0..halvings {
        m = g.b.conv(
            m,
            one,
            None,
            &ConvOptions {
                stride: vec![2, 2],
                padding: vec![(0, 0), (0, 0)],
                dilation: vec![1, 1],
                groups: 1,
            },
        )?;
    }
    Ok(m)
}
