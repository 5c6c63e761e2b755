//! Neural-network kernels of the reference interpreter: matrix products,
//! normalisations, softmax, attention, reductions, argmax and top-k.

use super::kernels::{broadcast_index, broadcast_shapes, numel, permute, Data, Value};
use crate::ir::ReduceOp;

/// The score added where attention is not allowed (f16's lowest finite
/// value, as the ONNX lowering adds it).
const MASKED_SCORE: f64 = -65504.0;

/// `(outer, n, inner)` of `shape` around `axis`: element `(o, i, j)` is at
/// `(o * n + i) * inner + j`.
fn lanes(shape: &[usize], axis: usize) -> Result<(usize, usize, usize), String> {
    let n = *shape
        .get(axis)
        .ok_or_else(|| format!("axis {axis} is out of range for {shape:?}"))?;
    Ok((numel(&shape[..axis]), n, numel(&shape[axis + 1..])))
}

/// Applies `f` to every lane of floats along `axis`, in place.
fn map_lanes(
    x: &Value,
    axis: usize,
    mut f: impl FnMut(&mut [f64]) -> Result<(), String>,
) -> Result<Value, String> {
    let v = x.data.floats()?;
    let (outer, n, inner) = lanes(&x.shape, axis)?;
    let mut out = v.to_vec();
    let mut lane = vec![0f64; n];
    for o in 0..outer {
        for j in 0..inner {
            let at = |i: usize| (o * n + i) * inner + j;
            for (i, l) in lane.iter_mut().enumerate() {
                *l = v[at(i)];
            }
            f(&mut lane)?;
            for (i, l) in lane.iter().enumerate() {
                out[at(i)] = *l;
            }
        }
    }
    Value::new(x.shape.clone(), Data::F(out))
}

/// A float matrix product with NumPy batch broadcasting (rank >= 2).
pub(crate) fn matmul(a: &Value, b: &Value) -> Result<Value, String> {
    let (x, y) = (a.data.floats()?, b.data.floats()?);
    let (ra, rb) = (a.shape.len(), b.shape.len());
    if ra < 2 || rb < 2 || a.shape[ra - 1] != b.shape[rb - 2] {
        return Err(format!(
            "cannot multiply {:?} by {:?}: need rank >= 2 and matching inner axes",
            a.shape, b.shape
        ));
    }
    let (m, k, n) = (a.shape[ra - 2], a.shape[ra - 1], b.shape[rb - 1]);
    let batch = broadcast_shapes(&a.shape[..ra - 2], &b.shape[..rb - 2])?;
    let (ia, ib) = (
        broadcast_index(&batch, &a.shape[..ra - 2]),
        broadcast_index(&batch, &b.shape[..rb - 2]),
    );
    let mut out = vec![0f64; numel(&batch) * m * n];
    for (bi, (&pa, &pb)) in ia.iter().zip(&ib).enumerate() {
        let (xa, yb) = (&x[pa * m * k..][..m * k], &y[pb * k * n..][..k * n]);
        let o = &mut out[bi * m * n..][..m * n];
        for i in 0..m {
            for p in 0..k {
                let s = xa[i * k + p];
                for j in 0..n {
                    o[i * n + j] += s * yb[p * n + j];
                }
            }
        }
    }
    let mut shape = batch;
    shape.extend([m, n]);
    Value::new(shape, Data::F(out))
}

/// `x @ weight^T + bias` with `weight` `[out, in]`.
pub(crate) fn linear(x: &Value, weight: &Value, bias: Option<&Value>) -> Result<Value, String> {
    let (xv, w) = (x.data.floats()?, weight.data.floats()?);
    let (&[outs, ins], Some(&last)) = (weight.shape.as_slice(), x.shape.last()) else {
        return Err(format!(
            "expected weight [out, in] and x [..., in], got {:?} and {:?}",
            weight.shape, x.shape
        ));
    };
    if last != ins {
        return Err(format!(
            "x {:?} has {last} features, weight {:?} expects {ins}",
            x.shape, weight.shape
        ));
    }
    let b = match bias {
        Some(b) if b.shape != [outs] => {
            return Err(format!("bias must be [{outs}], got {:?}", b.shape))
        }
        Some(b) => Some(b.data.floats()?),
        None => None,
    };
    let rows = numel(&x.shape) / ins.max(1);
    let mut out = Vec::with_capacity(rows * outs);
    for r in 0..rows {
        let row = &xv[r * ins..][..ins];
        for o in 0..outs {
            let dot: f64 = row
                .iter()
                .zip(&w[o * ins..][..ins])
                .map(|(p, q)| p * q)
                .sum();
            out.push(dot + b.map_or(0.0, |b| b[o]));
        }
    }
    let mut shape = x.shape.clone();
    if let Some(l) = shape.last_mut() {
        *l = outs;
    }
    Value::new(shape, Data::F(out))
}

/// A `[width]` parameter of a normalisation over the last axis.
fn norm_param<'a>(x: &Value, p: &'a Value, what: &str) -> Result<&'a [f64], String> {
    let last = x.shape.last().copied().unwrap_or(1);
    if p.shape != [last] {
        return Err(format!("{what} must be [{last}], got {:?}", p.shape));
    }
    p.data.floats()
}

/// `(x - mean) / sqrt(var + eps) * scale + bias` over the last axis
/// (population variance).
pub(crate) fn layer_norm(
    x: &Value,
    scale: &Value,
    bias: Option<&Value>,
    eps: f64,
) -> Result<Value, String> {
    let s = norm_param(x, scale, "scale")?;
    let b = bias.map(|b| norm_param(x, b, "bias")).transpose()?;
    let axis = x
        .shape
        .len()
        .checked_sub(1)
        .ok_or("x must have rank >= 1")?;
    map_lanes(x, axis, |lane| {
        let n = lane.len() as f64;
        let mean = lane.iter().sum::<f64>() / n;
        let var = lane.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let den = (var + eps).sqrt();
        for (i, v) in lane.iter_mut().enumerate() {
            *v = (*v - mean) / den * s[i] + b.map_or(0.0, |b| b[i]);
        }
        Ok(())
    })
}

/// `x / sqrt(mean(x^2) + eps) * scale` over the last axis.
pub(crate) fn rms_norm(x: &Value, scale: &Value, eps: f64) -> Result<Value, String> {
    let s = norm_param(x, scale, "scale")?;
    let axis = x
        .shape
        .len()
        .checked_sub(1)
        .ok_or("x must have rank >= 1")?;
    map_lanes(x, axis, |lane| {
        let ms = lane.iter().map(|v| v * v).sum::<f64>() / lane.len() as f64;
        let den = (ms + eps).sqrt();
        for (i, v) in lane.iter_mut().enumerate() {
            *v = *v / den * s[i];
        }
        Ok(())
    })
}

/// Rotary embedding of the first `r` elements (cos's last axis) of x's last
/// axis: `x * cos + rotate(x) * sin`, rotate pairing i with i + r/2 (or 2i
/// with 2i+1 when `interleaved`) as (-second, first).
pub(crate) fn rotary(
    x: &Value,
    cos: &Value,
    sin: &Value,
    interleaved: bool,
) -> Result<Value, String> {
    let (Some(&d), Some(&r)) = (x.shape.last(), cos.shape.last()) else {
        return Err("x and cos must have rank >= 1".into());
    };
    if sin.shape != cos.shape || r % 2 != 0 || r > d {
        return Err(format!(
            "cos {:?} and sin {:?} must match with an even last axis <= {d}",
            cos.shape, sin.shape
        ));
    }
    let mut target = x.shape.clone();
    if let Some(last) = target.last_mut() {
        *last = r;
    }
    if broadcast_shapes(&target, &cos.shape)? != target {
        return Err(format!(
            "cos {:?} does not broadcast to {target:?}",
            cos.shape
        ));
    }
    let at = broadcast_index(&target, &cos.shape);
    let (xv, c, s) = (x.data.floats()?, cos.data.floats()?, sin.data.floats()?);
    let mut out = xv.to_vec();
    for row in 0..numel(&x.shape) / d.max(1) {
        let base = row * d;
        for j in 0..r {
            let partner = match (interleaved, j) {
                (true, j) if j % 2 == 0 => -xv[base + j + 1],
                (true, j) => xv[base + j - 1],
                (false, j) if j < r / 2 => -xv[base + j + r / 2],
                (false, j) => xv[base + j - r / 2],
            };
            let k = at[row * r + j];
            out[base + j] = xv[base + j] * c[k] + partner * s[k];
        }
    }
    Value::new(x.shape.clone(), Data::F(out))
}

fn softmax_lane(lane: &mut [f64]) {
    let max = lane.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in lane.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in lane.iter_mut() {
        *v /= sum;
    }
}

pub(crate) fn softmax(x: &Value, axis: usize) -> Result<Value, String> {
    map_lanes(x, axis, |lane| {
        softmax_lane(lane);
        Ok(())
    })
}

/// `x / max(||x||_2, eps)` along `axis`.
pub(crate) fn l2_normalize(x: &Value, axis: usize, eps: f64) -> Result<Value, String> {
    map_lanes(x, axis, |lane| {
        let norm = lane.iter().map(|v| v * v).sum::<f64>().sqrt().max(eps);
        for v in lane.iter_mut() {
            *v /= norm;
        }
        Ok(())
    })
}

/// Scaled dot-product attention over `q` `[b, h, sq, d]`, `k` `[b, kvh, sk,
/// d]`, `v` `[b, kvh, sk, dv]` (batch 1 of k/v broadcasts). Query head `i`
/// reads kv head `i / (h / kvh)`. A float mask is added to the scores; where
/// a bool mask is false or the causal rule (`j <= i + sk - sq`) fails,
/// [`MASKED_SCORE`] is added.
pub(crate) fn attention(
    q: &Value,
    k: &Value,
    v: &Value,
    mask: Option<&Value>,
    causal: bool,
    scale: f64,
) -> Result<Value, String> {
    let (qv, kv, vv) = (q.data.floats()?, k.data.floats()?, v.data.floats()?);
    let (&[b, h, sq, d], &[bk, kvh, sk, dk], &[bv, kvh2, sk2, dv]) =
        (q.shape.as_slice(), k.shape.as_slice(), v.shape.as_slice())
    else {
        return Err(format!(
            "q, k, v must be rank 4, got {:?} {:?} {:?}",
            q.shape, k.shape, v.shape
        ));
    };
    let kv_batch_ok = (bk == b || bk == 1) && bv == bk;
    if !kv_batch_ok || dk != d || kvh2 != kvh || sk2 != sk || kvh == 0 || h % kvh != 0 {
        return Err(format!(
            "q {:?}, k {:?}, v {:?} disagree (batch, head_dim, kv heads dividing heads, seq_k)",
            q.shape, k.shape, v.shape
        ));
    }
    let rep = h / kvh;
    let scores_shape = [b, h, sq, sk];
    let mask = match mask {
        Some(m) => {
            if broadcast_shapes(&m.shape, &scores_shape)? != scores_shape {
                return Err(format!(
                    "mask {:?} does not broadcast to scores {scores_shape:?}",
                    m.shape
                ));
            }
            Some((broadcast_index(&scores_shape, &m.shape), &m.data))
        }
        None => None,
    };
    let mut out = vec![0f64; b * h * sq * dv];
    let mut s = vec![0f64; sk];
    for bi in 0..b {
        let kb = if bk == 1 { 0 } else { bi };
        for hi in 0..h {
            let kh = hi / rep;
            let kbase = (kb * kvh + kh) * sk;
            for i in 0..sq {
                let qrow = &qv[((bi * h + hi) * sq + i) * d..][..d];
                let row = ((bi * h + hi) * sq + i) * sk;
                for (j, sj) in s.iter_mut().enumerate() {
                    let krow = &kv[(kbase + j) * d..][..d];
                    let mut score = qrow.iter().zip(krow).map(|(x, y)| x * y).sum::<f64>() * scale;
                    let mut allowed = !causal || (j as i64) <= i as i64 + sk as i64 - sq as i64;
                    match &mask {
                        Some((idx, Data::F(m))) => score += m[idx[row + j]],
                        Some((idx, Data::I(m))) => allowed &= m[idx[row + j]] != 0,
                        None => {}
                    }
                    if !allowed {
                        score += MASKED_SCORE;
                    }
                    *sj = score;
                }
                softmax_lane(&mut s);
                let o = &mut out[((bi * h + hi) * sq + i) * dv..][..dv];
                for (j, p) in s.iter().enumerate() {
                    let vrow = &vv[(kbase + j) * dv..][..dv];
                    for (oc, x) in o.iter_mut().zip(vrow) {
                        *oc += p * x;
                    }
                }
            }
        }
    }
    Value::new(vec![b, h, sq, dv], Data::F(out))
}

/// Sum/mean/max/min over `axes` (sorted, distinct).
pub(crate) fn reduce(
    op: ReduceOp,
    x: &Value,
    axes: &[usize],
    keep_dims: bool,
) -> Result<Value, String> {
    let rank = x.shape.len();
    if axes.is_empty() || axes.windows(2).any(|w| w[0] >= w[1]) || axes.iter().any(|&a| a >= rank) {
        return Err(format!(
            "axes {axes:?} are not distinct sorted axes of {:?}",
            x.shape
        ));
    }
    // Kept axes first, reduced axes last: each group is then contiguous.
    let kept: Vec<usize> = (0..rank).filter(|a| !axes.contains(a)).collect();
    let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
    let moved = permute(x, &perm)?;
    let group = numel(&axes.iter().map(|&a| x.shape[a]).collect::<Vec<_>>());
    let groups = numel(&kept.iter().map(|&a| x.shape[a]).collect::<Vec<_>>());
    if group == 0 && !op.empty_axis() {
        return Err(format!("{op:?} over an empty axis of {:?}", x.shape));
    }
    let data = match &moved.data {
        Data::F(v) => {
            let f = op.eval_float();
            Data::F((0..groups).map(|g| f(&v[g * group..][..group])).collect())
        }
        Data::I(v) => {
            let f = op.eval_int();
            Data::I((0..groups).map(|g| f(&v[g * group..][..group])).collect())
        }
    };
    let shape = (0..rank)
        .filter_map(|a| match (axes.contains(&a), keep_dims) {
            (false, _) => Some(x.shape[a]),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    Value::new(shape, data)
}

/// Values widened for ordering (integers compare exactly below 2^53).
fn ordered(x: &Value) -> Vec<f64> {
    match &x.data {
        Data::F(v) => v.clone(),
        Data::I(v) => v.iter().map(|&a| a as f64).collect(),
    }
}

/// Index of the first maximum along `axis`.
pub(crate) fn argmax(x: &Value, axis: usize, keep_dims: bool) -> Result<Value, String> {
    let v = ordered(x);
    let (outer, n, inner) = lanes(&x.shape, axis)?;
    if n == 0 {
        return Err(format!("argmax over an empty axis of {:?}", x.shape));
    }
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for j in 0..inner {
            let mut best = 0usize;
            for i in 1..n {
                if v[(o * n + i) * inner + j] > v[(o * n + best) * inner + j] {
                    best = i;
                }
            }
            out.push(best as i64);
        }
    }
    let mut shape = x.shape.clone();
    if keep_dims {
        shape[axis] = 1;
    } else {
        shape.remove(axis);
    }
    Value::new(shape, Data::I(out))
}

/// The `k` largest along the last axis, sorted descending, ties to the lower
/// index: (values, i64 indices).
pub(crate) fn top_k(x: &Value, k: usize) -> Result<(Value, Value), String> {
    let n = *x.shape.last().ok_or("x must have rank >= 1")?;
    if k == 0 || k > n {
        return Err(format!("k = {k} must be in 1..={n}"));
    }
    let v = ordered(x);
    let rows = numel(&x.shape) / n;
    let mut idx = Vec::with_capacity(rows * k);
    let mut order: Vec<usize> = Vec::with_capacity(n);
    for r in 0..rows {
        let row = &v[r * n..][..n];
        order.clear();
        order.extend(0..n);
        // A stable sort keeps equal values in index order.
        order.sort_by(|&a, &b| {
            row[b]
                .partial_cmp(&row[a])
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        idx.extend(order[..k].iter().map(|&i| r * n + i));
    }
    let mut shape = x.shape.clone();
    if let Some(l) = shape.last_mut() {
        *l = k;
    }
    let positions = Data::I(idx.iter().map(|&i| (i % n) as i64).collect());
    Ok((
        Value::new(shape.clone(), x.data.pick(&idx))?,
        Value::new(shape, positions)?,
    ))
}
