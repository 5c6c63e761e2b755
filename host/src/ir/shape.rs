//! Shape algebra over symbolic dims: broadcasting, reshape inference and
//! evaluation of concrete shapes once symbolic axes are bound.

use std::collections::HashMap;

use super::{Dim, DimExpr, Graph, GraphError, Shape};

/// Canonical product form of one or more dims: `syms... * num / den`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Factors {
    syms: Vec<Dim>,
    num: u128,
    den: u128,
}

impl Factors {
    fn one() -> Self {
        Factors {
            syms: Vec::new(),
            num: 1,
            den: 1,
        }
    }

    fn push(&mut self, d: &Dim) {
        match d {
            Dim::Fixed(n) => self.num = self.num.saturating_mul(*n as u128),
            Dim::Sym(_) | Dim::Window(_) => self.syms.push(d.clone()),
            Dim::Expr(e) => {
                for x in &e.num {
                    self.push(x);
                }
                self.den = self.den.saturating_mul(e.den as u128);
            }
        }
    }

    fn of(dims: &[Dim]) -> Self {
        let mut f = Factors::one();
        for d in dims {
            f.push(d);
        }
        f.normalize();
        f
    }

    fn normalize(&mut self) {
        self.syms.sort_by_key(|d| d.to_string());
        let g = gcd(self.num, self.den);
        if g > 1 {
            self.num /= g;
            self.den /= g;
        }
    }

    fn into_dim(self) -> Dim {
        if self.syms.is_empty() && self.den == 1 {
            return Dim::Fixed(self.num.min(u64::MAX as u128) as u64);
        }
        if self.syms.len() == 1 && self.num == 1 && self.den == 1 {
            return self.syms[0].clone();
        }
        let mut num: Vec<Dim> = self.syms;
        if self.num != 1 {
            num.push(Dim::Fixed(self.num.min(u64::MAX as u128) as u64));
        }
        Dim::Expr(Box::new(DimExpr {
            num,
            den: self.den.min(u64::MAX as u128) as u64,
        }))
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// Whether two dims are certainly the same length.
pub fn same_dim(a: &Dim, b: &Dim) -> bool {
    a == b || Factors::of(std::slice::from_ref(a)) == Factors::of(std::slice::from_ref(b))
}

/// NumPy broadcasting of two shapes. Symbolic axes broadcast only against
/// themselves or a fixed 1.
pub fn broadcast(a: &[Dim], b: &[Dim]) -> Result<Shape, String> {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n {
            Some(&a[i + a.len() - n])
        } else {
            None
        };
        let db = if i + b.len() >= n {
            Some(&b[i + b.len() - n])
        } else {
            None
        };
        let d = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) => {
                if same_dim(x, y) || *y == Dim::Fixed(1) {
                    x.clone()
                } else if *x == Dim::Fixed(1) {
                    y.clone()
                } else {
                    return Err(format!(
                        "shapes {} and {} do not broadcast (axis {i}: {x} vs {y})",
                        super::shape_str(a),
                        super::shape_str(b)
                    ));
                }
            }
            (None, None) => unreachable!("i < n implies one side exists"),
        };
        out.push(d);
    }
    Ok(out)
}

/// Output shape of a reshape with ONNX semantics (0 = copy, -1 = infer).
pub fn reshape(input: &[Dim], spec: &[i64]) -> Result<Shape, String> {
    let mut out: Vec<Option<Dim>> = Vec::with_capacity(spec.len());
    let mut infer_at = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            0 => {
                let d = input.get(i).ok_or_else(|| {
                    format!(
                        "0 at index {i} copies an axis the input (rank {}) lacks",
                        input.len()
                    )
                })?;
                out.push(Some(d.clone()));
            }
            -1 => {
                if infer_at.replace(i).is_some() {
                    return Err("more than one -1 in the target shape".into());
                }
                out.push(None);
            }
            n if n > 0 => out.push(Some(Dim::Fixed(n as u64))),
            n => return Err(format!("invalid length {n} in the target shape")),
        }
    }
    let total = Factors::of(input);
    let known: Vec<Dim> = out.iter().flatten().cloned().collect();
    let given = Factors::of(&known);
    if let Some(at) = infer_at {
        let mut rest = total.clone();
        for s in &given.syms {
            match rest.syms.iter().position(|x| x == s) {
                Some(p) => {
                    rest.syms.remove(p);
                }
                None => {
                    return Err(format!(
                        "cannot infer -1: axis `{s}` of the target is not a factor of the input shape {}",
                        super::shape_str(input)
                    ))
                }
            }
        }
        rest.num = rest.num.saturating_mul(given.den);
        rest.den = rest.den.saturating_mul(given.num);
        rest.normalize();
        if rest.syms.is_empty() && rest.den != 1 {
            return Err(format!(
                "cannot reshape {} into {:?}: element counts do not divide",
                super::shape_str(input),
                spec
            ));
        }
        out[at] = Some(rest.into_dim());
    } else if total.syms == given.syms && total.den == given.den && total.num != given.num {
        return Err(format!(
            "cannot reshape {} into {:?}: element counts differ",
            super::shape_str(input),
            spec
        ));
    }
    Ok(out.into_iter().flatten().collect())
}

/// Product of the fixed parts of a shape (symbolic axes count as 1): a lower
/// bound on the element count, used to reject absurd graphs at build time.
pub fn fixed_elements(shape: &[Dim]) -> u128 {
    let f = Factors::of(shape);
    (f.num / f.den.max(1)).max(1)
}

/// Whether a symbolic dim is a sum (`past+seq`), checked rather than bound.
pub fn is_sum(d: &Dim) -> bool {
    matches!(d, Dim::Sym(s) if s.contains('+'))
}

/// The length of a concat of `dims` along one axis: fixed when all are,
/// else the canonical sum name (`past+seq`, parts sorted, fixed parts added).
pub fn sum_dims(dims: &[Dim]) -> Dim {
    if let Some(total) = dims.iter().map(Dim::fixed).sum::<Option<u64>>() {
        return Dim::Fixed(total);
    }
    let mut parts: Vec<String> = Vec::new();
    let mut fixed = 0u64;
    for d in dims {
        match d {
            Dim::Fixed(n) => fixed += n,
            Dim::Sym(s) => parts.extend(s.split('+').map(str::to_string)),
            other => parts.push(other.to_string()),
        }
    }
    if fixed > 0 {
        parts.push(fixed.to_string());
    }
    parts.sort();
    Dim::Sym(parts.join("+"))
}

/// Bound values of symbolic axes for one run.
pub type Bindings = HashMap<String, u64>;

/// Concrete length of a dim under `b`.
pub fn eval_dim(d: &Dim, b: &Bindings) -> Result<u64, GraphError> {
    match d {
        Dim::Fixed(n) => Ok(*n),
        Dim::Sym(s) if s.contains('+') => {
            let mut total: u64 = 0;
            for part in s.split('+') {
                let v = match part.parse::<u64>() {
                    Ok(n) => n,
                    Err(_) => eval_dim(&Dim::Sym(part.to_string()), b)?,
                };
                total = total.saturating_add(v);
            }
            Ok(total)
        }
        Dim::Window(w) => {
            let len = eval_dim(&w.input, b)?.saturating_add(w.pad);
            if len < w.span || w.stride == 0 {
                return Err(GraphError::Binding(format!(
                    "axis {d}: a length of {len} (padded) is shorter than the window of {}",
                    w.span
                )));
            }
            Ok((len - w.span) / w.stride + 1)
        }
        Dim::Sym(s) => b.get(s).copied().ok_or_else(|| {
            GraphError::Binding(format!("symbolic axis `{s}` is not bound by any input"))
        }),
        Dim::Expr(e) => {
            let mut p: u128 = 1;
            for x in &e.num {
                p = p.saturating_mul(eval_dim(x, b)? as u128);
            }
            if e.den == 0 || !p.is_multiple_of(e.den as u128) {
                return Err(GraphError::Binding(format!(
                    "axis {d} is not a whole number for this input"
                )));
            }
            Ok((p / e.den as u128).min(u64::MAX as u128) as u64)
        }
    }
}

/// Concrete shape under `b`.
pub fn eval_shape(s: &[Dim], b: &Bindings) -> Result<Vec<u64>, GraphError> {
    s.iter().map(|d| eval_dim(d, b)).collect()
}

/// Checks every node of `g` under the bindings: no tensor may exceed
/// `limit` elements. Returns the largest element count seen.
pub fn check_sizes(g: &Graph, b: &Bindings, limit: u64) -> Result<u64, GraphError> {
    for (d, min) in &g.min_lengths {
        let got = eval_dim(d, b)?;
        if got < *min {
            return Err(GraphError::Binding(format!(
                "axis {d} is {got} long; graph `{}` slices it up to {min}",
                g.name
            )));
        }
    }
    let mut largest = 0u64;
    for &i in &g.shape_firsts {
        let n = g.node(i);
        let dims = eval_shape(&n.shape, b)?;
        let count = dims.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128));
        if count > limit as u128 {
            return Err(GraphError::TooLarge {
                graph: g.name.clone(),
                what: format!("node {i} ({}) of shape {:?}", n.op.kind(), dims),
                elements: count,
                limit,
            });
        }
        largest = largest.max(count as u64);
    }
    Ok(largest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Dim {
        Dim::Sym(s.into())
    }

    #[test]
    fn broadcasts_symbolic_and_ones() {
        let a = vec![sym("b"), Dim::Fixed(1), sym("s")];
        let b = vec![Dim::Fixed(4), Dim::Fixed(1)];
        assert_eq!(
            broadcast(&a, &b).unwrap(),
            vec![sym("b"), Dim::Fixed(4), sym("s")]
        );
        assert!(broadcast(&[sym("b")], &[sym("c")]).is_err());
        assert!(broadcast(&[Dim::Fixed(3)], &[Dim::Fixed(4)]).is_err());
    }

    #[test]
    fn reshape_infers_over_symbols() {
        let x = vec![sym("b"), sym("s"), Dim::Fixed(384)];
        let heads = reshape(&x, &[0, 0, 12, -1]).unwrap();
        assert_eq!(
            heads,
            vec![sym("b"), sym("s"), Dim::Fixed(12), Dim::Fixed(32)]
        );
        let back = reshape(&heads, &[0, 0, -1]).unwrap();
        assert_eq!(back, vec![sym("b"), sym("s"), Dim::Fixed(384)]);
        let flat = reshape(&x, &[-1, 384]).unwrap();
        let mut b = Bindings::new();
        b.insert("b".into(), 3);
        b.insert("s".into(), 7);
        assert_eq!(eval_shape(&flat, &b).unwrap(), vec![21, 384]);
        assert!(reshape(&x, &[0, 0, 7, -1]).is_err());
        assert!(reshape(&[Dim::Fixed(6)], &[4]).is_err());
        assert!(reshape(&x, &[-1, -1]).is_err());
    }

    #[test]
    fn sums_of_symbols_evaluate() {
        let d = sum_dims(&[sym("seq"), sym("past")]);
        assert_eq!(d, sym("past+seq"));
        assert_eq!(sum_dims(&[d.clone(), Dim::Fixed(1)]), sym("1+past+seq"));
        let mut b = Bindings::new();
        b.insert("past".into(), 5);
        b.insert("seq".into(), 2);
        assert_eq!(eval_dim(&d, &b).unwrap(), 7);
        assert!(is_sum(&d));
    }

    #[test]
    fn unbound_symbol_is_an_error() {
        assert!(eval_dim(&sym("x"), &Bindings::new()).is_err());
    }
}
