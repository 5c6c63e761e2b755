//! Values, index arithmetic (broadcasting, strided walks) and the
//! element-wise and data-movement kernels of the reference interpreter.

use crate::ir::{BinaryOp, CompareOp, DType, UnaryOp};

/// Element storage: floats as f64, integers and bools as i64.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Data {
    F(Vec<f64>),
    I(Vec<i64>),
}

impl Data {
    pub(crate) fn len(&self) -> usize {
        match self {
            Data::F(v) => v.len(),
            Data::I(v) => v.len(),
        }
    }

    /// The elements at `idx`, in order. Indices come from shapes the
    /// caller has checked against this data's length.
    pub(crate) fn pick(&self, idx: &[usize]) -> Data {
        match self {
            Data::F(v) => Data::F(idx.iter().map(|&i| v[i]).collect()),
            Data::I(v) => Data::I(idx.iter().map(|&i| v[i]).collect()),
        }
    }

    pub(crate) fn floats(&self) -> Result<&[f64], String> {
        match self {
            Data::F(v) => Ok(v),
            Data::I(_) => Err("expected a floating-point operand, got integers".into()),
        }
    }

    pub(crate) fn ints(&self) -> Result<&[i64], String> {
        match self {
            Data::I(v) => Ok(v),
            Data::F(_) => Err("expected an integer or bool operand, got floats".into()),
        }
    }
}

/// A concrete tensor value: row-major data of `shape`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Value {
    pub(crate) shape: Vec<usize>,
    pub(crate) data: Data,
}

impl Value {
    /// A value whose data length matches its shape.
    pub(crate) fn new(shape: Vec<usize>, data: Data) -> Result<Value, String> {
        if numel(&shape) != data.len() {
            return Err(format!(
                "internal: shape {shape:?} needs {} elements, got {}",
                numel(&shape),
                data.len()
            ));
        }
        Ok(Value { shape, data })
    }

    fn reshaped(&self, shape: Vec<usize>) -> Result<Value, String> {
        Value::new(shape, self.data.clone())
    }
}

pub(crate) fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        st[i] = st[i + 1] * shape[i + 1];
    }
    st
}

/// Flat source indices of a row-major walk over `shape` that moves `st[ax]`
/// source elements per step along axis `ax`, starting at `base`.
pub(crate) fn strided_index(shape: &[usize], st: &[usize], base: usize) -> Vec<usize> {
    let n = numel(shape);
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let mut idx = vec![0usize; shape.len()];
    let mut cur = base;
    for _ in 0..n {
        out.push(cur);
        for ax in (0..shape.len()).rev() {
            idx[ax] += 1;
            cur += st[ax];
            if idx[ax] < shape[ax] {
                break;
            }
            cur -= st[ax] * idx[ax];
            idx[ax] = 0;
        }
    }
    out
}

/// NumPy broadcasting of two concrete shapes.
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let n = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        if i + s.len() >= n {
            s[i + s.len() - n]
        } else {
            1
        }
    };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            (x, y) => Err(format!(
                "shapes {a:?} and {b:?} do not broadcast (axis {i}: {x} vs {y})"
            )),
        })
        .collect()
}

/// For each element of a tensor of shape `out`, the flat index of the
/// element of a tensor of shape `inp` that NumPy broadcasting reads.
/// `inp` must broadcast to `out`.
pub(crate) fn broadcast_index(out: &[usize], inp: &[usize]) -> Vec<usize> {
    let off = out.len().saturating_sub(inp.len());
    let mut st = vec![0usize; out.len()];
    let mut s = 1;
    for (i, &d) in inp.iter().enumerate().rev() {
        if let Some(slot) = st.get_mut(i + off) {
            *slot = if d == 1 { 0 } else { s };
        }
        s *= d;
    }
    strided_index(out, &st, 0)
}

/// `x` broadcast to `shape`.
fn broadcast_to(x: &Value, shape: &[usize]) -> Data {
    x.data.pick(&broadcast_index(shape, &x.shape))
}

/// An op of the table in `ir::ops` over each element.
pub(crate) fn unary(op: UnaryOp, x: &Value) -> Result<Value, String> {
    let data = match &x.data {
        Data::I(v) => {
            let f = op
                .eval_int()
                .ok_or_else(|| format!("{op:?} needs a floating-point operand"))?;
            Data::I(v.iter().map(|&a| f(a)).collect())
        }
        Data::F(v) => {
            let f = op
                .eval_float()
                .ok_or_else(|| format!("{op:?} needs a bool operand"))?;
            Data::F(v.iter().map(|&a| f(a)).collect())
        }
    };
    Value::new(x.shape.clone(), data)
}

/// Applies `f` to the broadcast pairs of `a` and `b`.
fn zip<T: Copy, U>(
    a: &Value,
    av: &[T],
    b: &Value,
    bv: &[T],
    f: impl Fn(T, T) -> Result<U, String>,
) -> Result<(Vec<usize>, Vec<U>), String> {
    let shape = broadcast_shapes(&a.shape, &b.shape)?;
    let (ia, ib) = (
        broadcast_index(&shape, &a.shape),
        broadcast_index(&shape, &b.shape),
    );
    let out = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| f(av[i], bv[j]))
        .collect::<Result<_, _>>()?;
    Ok((shape, out))
}

pub(crate) fn binary(op: BinaryOp, a: &Value, b: &Value) -> Result<Value, String> {
    let (shape, data) = match (&a.data, &b.data) {
        (Data::F(x), Data::F(y)) => {
            let f = op.eval_float();
            let (s, v) = zip(a, x, b, y, |p, q| Ok(f(p, q)))?;
            (s, Data::F(v))
        }
        (Data::I(x), Data::I(y)) => {
            let (s, v) = zip(a, x, b, y, op.eval_int())?;
            (s, Data::I(v))
        }
        _ => return Err("operands mix float and integer data".into()),
    };
    Value::new(shape, data)
}

pub(crate) fn compare(op: CompareOp, a: &Value, b: &Value) -> Result<Value, String> {
    fn cmp<T: PartialOrd>(op: CompareOp, p: T, q: T) -> Result<i64, String> {
        Ok(op.holds(p.partial_cmp(&q)) as i64)
    }
    let (shape, v) = match (&a.data, &b.data) {
        (Data::F(x), Data::F(y)) => zip(a, x, b, y, |p, q| cmp(op, p, q))?,
        (Data::I(x), Data::I(y)) => zip(a, x, b, y, |p, q| cmp(op, p, q))?,
        _ => return Err("operands mix float and integer data".into()),
    };
    Value::new(shape, Data::I(v))
}

pub(crate) fn and(a: &Value, b: &Value) -> Result<Value, String> {
    let (x, y) = (a.data.ints()?, b.data.ints()?);
    let (shape, v) = zip(a, x, b, y, |p, q| Ok((p != 0 && q != 0) as i64))?;
    Value::new(shape, Data::I(v))
}

pub(crate) fn select(cond: &Value, a: &Value, b: &Value) -> Result<Value, String> {
    let shape = broadcast_shapes(&cond.shape, &broadcast_shapes(&a.shape, &b.shape)?)?;
    let c = cond.data.ints()?;
    let ic = broadcast_index(&shape, &cond.shape);
    let (pa, pb) = (broadcast_to(a, &shape), broadcast_to(b, &shape));
    let data = match (pa, pb) {
        (Data::F(x), Data::F(y)) => Data::F(
            ic.iter()
                .enumerate()
                .map(|(o, &i)| if c[i] != 0 { x[o] } else { y[o] })
                .collect(),
        ),
        (Data::I(x), Data::I(y)) => Data::I(
            ic.iter()
                .enumerate()
                .map(|(o, &i)| if c[i] != 0 { x[o] } else { y[o] })
                .collect(),
        ),
        _ => return Err("branches mix float and integer data".into()),
    };
    Value::new(shape, data)
}

/// ONNX Cast: floats to integers truncate toward zero; anything to bool is
/// `!= 0`. Narrowing to the target width happens when the node is rounded.
pub(crate) fn cast(x: &Value, to: DType) -> Result<Value, String> {
    let data = match (&x.data, to) {
        (Data::F(v), DType::Bool) => Data::I(v.iter().map(|&a| (a != 0.0) as i64).collect()),
        (Data::F(v), t) if t.is_float() => Data::F(v.clone()),
        (Data::F(v), _) => Data::I(v.iter().map(|&a| a.trunc() as i64).collect()),
        (Data::I(v), t) if t.is_float() => Data::F(v.iter().map(|&a| a as f64).collect()),
        (Data::I(v), _) => Data::I(v.clone()),
    };
    Value::new(x.shape.clone(), data)
}

/// ONNX Reshape: 0 copies the input's axis, -1 is inferred.
pub(crate) fn reshape(x: &Value, spec: &[i64]) -> Result<Value, String> {
    let mut shape = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        shape.push(match s {
            0 => *x
                .shape
                .get(i)
                .ok_or_else(|| format!("0 at index {i} copies an axis {:?} lacks", x.shape))?,
            -1 if infer.is_none() => {
                infer = Some(i);
                1
            }
            n if n > 0 => n as usize,
            n => return Err(format!("invalid target length {n} in {spec:?}")),
        });
    }
    let (total, known) = (numel(&x.shape), numel(&shape));
    if let Some(i) = infer {
        if known == 0 || total % known != 0 {
            return Err(format!(
                "cannot infer -1 reshaping {:?} into {spec:?}",
                x.shape
            ));
        }
        shape[i] = total / known;
    }
    if numel(&shape) != total {
        return Err(format!("cannot reshape {:?} into {spec:?}", x.shape));
    }
    x.reshaped(shape)
}

pub(crate) fn permute(x: &Value, perm: &[usize]) -> Result<Value, String> {
    let mut seen = vec![false; x.shape.len()];
    let ok = perm.len() == x.shape.len()
        && perm
            .iter()
            .all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true));
    if !ok {
        return Err(format!("{perm:?} is not a permutation of {:?}", x.shape));
    }
    let st = strides(&x.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let pst: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    Value::new(shape.clone(), x.data.pick(&strided_index(&shape, &pst, 0)))
}

/// Elements `start..end` of `axis`; both ends clamp to the axis length.
pub(crate) fn slice(x: &Value, axis: usize, start: i64, end: i64) -> Result<Value, String> {
    let len = *x
        .shape
        .get(axis)
        .ok_or_else(|| format!("axis {axis} is out of range for {:?}", x.shape))?;
    if start < 0 || end < start {
        return Err(format!("need 0 <= start <= end, got {start}..{end}"));
    }
    let (s, e) = (
        (start as u64).min(len as u64) as usize,
        (end as u64).min(len as u64) as usize,
    );
    let st = strides(&x.shape);
    let mut shape = x.shape.clone();
    shape[axis] = e - s;
    Value::new(
        shape.clone(),
        x.data.pick(&strided_index(&shape, &st, s * st[axis])),
    )
}

pub(crate) fn concat(xs: &[&Value], axis: usize) -> Result<Value, String> {
    let first = xs.first().ok_or("needs at least one operand")?;
    if axis >= first.shape.len() {
        return Err(format!("axis {axis} is out of range for {:?}", first.shape));
    }
    let mut shape = first.shape.clone();
    shape[axis] = 0;
    for x in xs {
        let same = x.shape.len() == first.shape.len()
            && (0..x.shape.len()).all(|i| i == axis || x.shape[i] == first.shape[i]);
        if !same {
            return Err(format!(
                "{:?} and {:?} differ outside axis {axis}",
                first.shape, x.shape
            ));
        }
        shape[axis] += x.shape[axis];
    }
    let (outer, inner) = (numel(&shape[..axis]), numel(&shape[axis + 1..]));
    // Flat (part, index) pairs in output order.
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(numel(&shape));
    for o in 0..outer {
        for (p, x) in xs.iter().enumerate() {
            let chunk = x.shape[axis] * inner;
            order.extend((0..chunk).map(|i| (p, o * chunk + i)));
        }
    }
    let data = match &first.data {
        Data::F(_) => {
            let parts = xs
                .iter()
                .map(|x| x.data.floats())
                .collect::<Result<Vec<_>, _>>()?;
            Data::F(order.iter().map(|&(p, i)| parts[p][i]).collect())
        }
        Data::I(_) => {
            let parts = xs
                .iter()
                .map(|x| x.data.ints())
                .collect::<Result<Vec<_>, _>>()?;
            Data::I(order.iter().map(|&(p, i)| parts[p][i]).collect())
        }
    };
    Value::new(shape, data)
}

pub(crate) fn unsqueeze(x: &Value, axis: usize) -> Result<Value, String> {
    if axis > x.shape.len() {
        return Err(format!("axis {axis} is out of range for {:?}", x.shape));
    }
    let mut shape = x.shape.clone();
    shape.insert(axis, 1);
    x.reshaped(shape)
}

pub(crate) fn squeeze(x: &Value, axis: usize) -> Result<Value, String> {
    if x.shape.get(axis) != Some(&1) {
        return Err(format!("axis {axis} of {:?} is not 1", x.shape));
    }
    let mut shape = x.shape.clone();
    shape.remove(axis);
    x.reshaped(shape)
}

/// `x` broadcast to exactly `target`.
pub(crate) fn expand(x: &Value, target: &[usize]) -> Result<Value, String> {
    if broadcast_shapes(&x.shape, target)? != target {
        return Err(format!("{:?} does not expand to {target:?}", x.shape));
    }
    Value::new(target.to_vec(), broadcast_to(x, target))
}

/// ONNX Gather along `axis`; negative indices count from the end.
/// `x` with rows `start..` of axis 0 replaced by `update`, `start` clamped
/// so that the rows fit.
pub(crate) fn write_rows(x: &Value, update: &Value, start: &Value) -> Result<Value, String> {
    let rows = *x.shape.first().ok_or("x has no axis 0")? as i64;
    let new = *update.shape.first().ok_or("update has no axis 0")? as i64;
    if new > rows {
        return Err(format!(
            "update has {new} rows, more than x's {rows}: {:?} into {:?}",
            update.shape, x.shape
        ));
    }
    let at = *start.data.ints()?.first().ok_or("start is empty")?;
    let at = at.clamp(0, rows - new);
    let head = slice(x, 0, 0, at)?;
    let tail = slice(x, 0, at + new, rows)?;
    concat(&[&head, update, &tail], 0)
}

pub(crate) fn gather(x: &Value, indices: &Value, axis: usize) -> Result<Value, String> {
    let n = *x
        .shape
        .get(axis)
        .ok_or_else(|| format!("axis {axis} is out of range for {:?}", x.shape))?;
    let idx = indices
        .data
        .ints()?
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + n as i64 } else { i };
            if j < 0 || j >= n as i64 {
                Err(format!(
                    "index {i} is out of range for axis {axis} of length {n}"
                ))
            } else {
                Ok(j as usize)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (outer, inner) = (numel(&x.shape[..axis]), numel(&x.shape[axis + 1..]));
    let mut src = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &j in &idx {
            let base = (o * n + j) * inner;
            src.extend(base..base + inner);
        }
    }
    let mut shape = x.shape[..axis].to_vec();
    shape.extend(&indices.shape);
    shape.extend(&x.shape[axis + 1..]);
    Value::new(shape, x.data.pick(&src))
}

/// The error function to about 1e-15: its everywhere-convergent series
/// `erf(x) = 2/sqrt(pi) e^{-x^2} sum 2^n x^{2n+1} / (1*3*...*(2n+1))`,
/// whose terms are all positive (no cancellation); |erf| = 1 in f64 past 6.
pub(crate) fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a >= 6.0 {
        return x.signum();
    }
    let (mut term, mut sum) = (a, a);
    for n in 1..1000 {
        term *= 2.0 * a * a / (2 * n + 1) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    let r = 2.0 / std::f64::consts::PI.sqrt() * (-a * a).exp() * sum;
    r.min(1.0).copysign(x)
}
