//! The `conv` op: PyTorch's `Conv1d` / `Conv2d` (a cross-correlation) with
//! stride, zero padding, dilation and groups. A symbolic spatial length
//! gives a symbolic output length ([`Dim::Window`]), so audio of any
//! length runs through strided convolutions.

use super::builder::{GraphBuilder, R};
use super::shape::same_dim;
use super::{shape_str, Dim, NodeId, Op, WindowDim};

/// Options of one convolution, one entry per spatial axis.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ConvAttrs {
    pub stride: Vec<u64>,
    /// Zeros before and after each spatial axis.
    pub pad: Vec<(u64, u64)>,
    pub dilation: Vec<u64>,
    pub groups: u64,
}

impl GraphBuilder {
    /// `x` [batch, in, *spatial] (one or two spatial axes) convolved with
    /// `weight` [out, in / groups, *kernel] (fixed), plus `bias` [out].
    pub fn conv(&mut self, x: NodeId, weight: NodeId, bias: Option<NodeId>, a: ConvAttrs) -> R {
        const OP: &str = "conv";
        let nx = self.float(OP, x)?.clone();
        let nw = self.float(OP, weight)?.clone();
        self.same_dtype(OP, &nx, &nw)?;
        let rank = nx.shape.len();
        let spatial = rank.saturating_sub(2);
        if !(3..=4).contains(&rank) || nw.shape.len() != rank {
            return Err(self.err(
                OP,
                format!(
                    "expected x [batch, in, len] or [batch, in, h, w] and a weight of the same rank, got x {} and weight {}",
                    shape_str(&nx.shape),
                    shape_str(&nw.shape)
                ),
            ));
        }
        let ws: Vec<u64> = match nw.shape.iter().map(Dim::fixed).collect::<Option<Vec<_>>>() {
            Some(v) => v,
            None => {
                return Err(self.err(
                    OP,
                    format!(
                        "the weight {} must have a fixed shape",
                        shape_str(&nw.shape)
                    ),
                ))
            }
        };
        let groups = a.groups;
        let valid = a.stride.len() == spatial
            && a.pad.len() == spatial
            && a.dilation.len() == spatial
            && a.stride.iter().chain(&a.dilation).all(|&v| v >= 1)
            && groups >= 1
            && ws[0].is_multiple_of(groups);
        if !valid {
            return Err(self.err(
                OP,
                format!(
                    "need one stride, padding pair and dilation (each >= 1) per spatial axis ({spatial}) and groups >= 1 dividing the {} outputs, got {a:?}",
                    ws[0]
                ),
            ));
        }
        let channels = Dim::Fixed(ws[1] * groups);
        if !same_dim(&nx.shape[1], &channels) {
            return Err(self.err(
                OP,
                format!(
                    "x {} has {} channels, weight {} with {groups} groups expects {channels}",
                    shape_str(&nx.shape),
                    nx.shape[1],
                    shape_str(&nw.shape)
                ),
            ));
        }
        if let Some(b) = bias {
            let nb = self.get(b)?.clone();
            self.same_dtype(OP, &nx, &nb)?;
            if nb.shape != [Dim::Fixed(ws[0])] {
                return Err(self.err(
                    OP,
                    format!("bias must be [{}], got {}", ws[0], shape_str(&nb.shape)),
                ));
            }
        }
        let mut shape = vec![nx.shape[0].clone(), Dim::Fixed(ws[0])];
        for i in 0..spatial {
            let span = a.dilation[i] * (ws[2 + i] - 1) + 1;
            let pad = a.pad[i].0 + a.pad[i].1;
            let out = match &nx.shape[2 + i] {
                // Stride 1 and "same" padding keep the length exactly.
                d if a.stride[i] == 1 && pad + 1 == span => d.clone(),
                Dim::Fixed(len) if len + pad >= span => Dim::Fixed((len + pad - span) / a.stride[i] + 1),
                Dim::Fixed(len) => {
                    return Err(self.err(
                        OP,
                        format!("spatial axis {i} of {len} (padded by {pad}) is shorter than the kernel's {span}"),
                    ))
                }
                // The length depends on `pad - span` only, so windows are
                // kept in one canonical form (pad 0 or span 1): a 3x3 conv
                // with padding 1 and a 1x1 conv without, both of stride 2,
                // give the same dim (a ResNet block and its shortcut).
                d => Dim::Window(Box::new(WindowDim {
                    input: d.clone(),
                    pad: pad.saturating_sub(span - 1),
                    span: span.saturating_sub(pad).max(1),
                    stride: a.stride[i],
                })),
            };
            shape.push(out);
        }
        self.push(
            Op::Conv {
                x,
                weight,
                bias,
                attrs: a,
            },
            nx.dtype,
            shape,
        )
    }
}
