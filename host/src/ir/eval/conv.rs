//! Reference convolution (f64, one output at a time).

use super::kernels::{Data, Value};
use crate::ir::conv::ConvAttrs;

/// `x` [n, in, *spatial] convolved with `w` [out, in / groups, *kernel].
pub(crate) fn conv(
    x: &Value,
    w: &Value,
    bias: Option<&Value>,
    a: &ConvAttrs,
) -> Result<Value, String> {
    let (xv, wv) = (x.data.floats()?, w.data.floats()?);
    let spatial = x.shape.len().saturating_sub(2);
    if !(1..=2).contains(&spatial) || w.shape.len() != x.shape.len() {
        return Err(format!("conv of x {:?} with w {:?}", x.shape, w.shape));
    }
    // Treat 1-D as 2-D with a height of 1.
    let dims = |s: &[usize]| -> (usize, usize) {
        match s {
            [l] => (1, *l),
            [h, w] => (*h, *w),
            _ => (1, 1),
        }
    };
    let (n, cin, cout, cg) = (x.shape[0], x.shape[1], w.shape[0], w.shape[1]);
    let (h, wd) = dims(&x.shape[2..]);
    let (kh, kw) = dims(&w.shape[2..]);
    let at = |v: &[u64], i: usize| {
        if spatial == 1 {
            if i == 0 {
                1
            } else {
                v[0] as usize
            }
        } else {
            v[i] as usize
        }
    };
    let (sh, sw) = (at(&a.stride, 0), at(&a.stride, 1));
    let (dh, dw) = (at(&a.dilation, 0), at(&a.dilation, 1));
    let pad = |i: usize| -> (usize, usize) {
        match (spatial, i) {
            (1, 0) => (0, 0),
            (1, _) => (a.pad[0].0 as usize, a.pad[0].1 as usize),
            (_, i) => (a.pad[i].0 as usize, a.pad[i].1 as usize),
        }
    };
    let ((ph0, ph1), (pw0, pw1)) = (pad(0), pad(1));
    let groups = a.groups as usize;
    if groups == 0 || cg * groups != cin || cout % groups != 0 {
        return Err(format!(
            "{cin} channels do not split into {groups} groups of {cg}"
        ));
    }
    let oh = (h + ph0 + ph1 - (dh * (kh - 1) + 1)) / sh + 1;
    let ow = (wd + pw0 + pw1 - (dw * (kw - 1) + 1)) / sw + 1;
    let b = bias.map(|b| b.data.floats()).transpose()?;
    let og = cout / groups;
    let mut out = Vec::with_capacity(n * cout * oh * ow);
    for nb in 0..n {
        for co in 0..cout {
            let g = co / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b[co]);
                    for ci in 0..cg {
                        let xc = &xv[((nb * cin + g * cg + ci) * h) * wd..];
                        let wc = &wv[((co * cg + ci) * kh) * kw..];
                        for ky in 0..kh {
                            let iy = (oy * sh + ky * dh) as isize - ph0 as isize;
                            if iy < 0 || iy as usize >= h {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = (ox * sw + kx * dw) as isize - pw0 as isize;
                                if ix < 0 || ix as usize >= wd {
                                    continue;
                                }
                                acc += xc[iy as usize * wd + ix as usize] * wc[ky * kw + kx];
                            }
                        }
                    }
                    out.push(acc);
                }
            }
        }
    }
    let mut shape = vec![n, cout];
    if spatial == 2 {
        shape.push(oh);
    }
    shape.push(ow);
    Value::new(shape, Data::F(out))
}
