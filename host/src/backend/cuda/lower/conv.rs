//! Convolutions (`conv`): one thread per output element, summing its
//! window in f32 (a direct kernel: correct for every stride, padding,
//! dilation and group count; the models that need speed here are few).

use super::grid::{elementwise_grid, BLOCK};
use super::{PlanError, Planner};
use crate::backend::cuda::launch::{ConvDims, Launch};
use crate::backend::cuda::plan::*;
use crate::ir::conv::ConvAttrs;
use crate::ir::{DType, NodeId};

impl Planner<'_> {
    pub(super) fn conv(
        &mut self,
        x: NodeId,
        weight: NodeId,
        bias: Option<NodeId>,
        a: &ConvAttrs,
        dt: DType,
        shape: Vec<usize>,
    ) -> Result<Val, PlanError> {
        let xv = self.val(x)?;
        let x = self.contiguous(xv)?;
        let wv = self.val(weight)?;
        let w = self.contiguous(wv)?;
        let b = match bias {
            Some(b) => {
                let bv = self.val(b)?;
                Some(self.contiguous(bv)?)
            }
            None => None,
        };
        let spatial = x.shape.len().saturating_sub(2);
        // 1-D as 2-D with a height of 1.
        let hw = |s: &[usize]| -> (i64, i64) {
            match s {
                [l] => (1, *l as i64),
                [h, w] => (*h as i64, *w as i64),
                _ => (1, 1),
            }
        };
        let two = |v: &[u64]| -> (i64, i64) {
            match v {
                [l] => (1, *l as i64),
                [h, w] => (*h as i64, *w as i64),
                _ => (1, 1),
            }
        };
        if !(1..=2).contains(&spatial) {
            return Err(self.err(format!("conv over {spatial} spatial axes")));
        }
        let (h, wd) = hw(&x.shape[2..]);
        let (kh, kw) = hw(&w.shape[2..]);
        let (oh, ow) = hw(&shape[2..]);
        let (sh, sw) = two(&a.stride);
        let (dh, dw) = two(&a.dilation);
        let pads: Vec<u64> = a.pad.iter().map(|p| p.0).collect();
        let (ph, pw) = match pads.as_slice() {
            [l] => (0, *l as i64),
            [h, w] => (*h as i64, *w as i64),
            _ => (0, 0),
        };
        let y = self.fresh(dt, shape);
        let n = y.numel();
        if n == 0 {
            return Ok(y);
        }
        self.use_val(&x);
        self.use_val(&w);
        if let Some(b) = &b {
            self.use_val(b);
        }
        let dims = ConvDims {
            batch: x.shape[0] as i64,
            in_channels: x.shape[1] as i64,
            out_channels: y.shape[1] as i64,
            groups: a.groups as i64,
            h,
            w: wd,
            out_h: oh,
            out_w: ow,
            kernel_h: kh,
            kernel_w: kw,
            stride_h: sh,
            stride_w: sw,
            pad_h: ph,
            pad_w: pw,
            dilation_h: dh,
            dilation_w: dw,
        };
        let launch = Launch::Conv {
            dt,
            dims,
            x: x.at,
            w: w.at,
            bias: b.map(|b| b.at),
            y: y.at,
        };
        self.kernel(launch, elementwise_grid(n), BLOCK, 0);
        Ok(y)
    }
}
