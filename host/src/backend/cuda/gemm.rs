//! GEMM layout analysis: maps a row-major, possibly strided and batched
//! `A [.., m, k] @ B [.., k, n]` onto one cuBLAS strided-batched call, and
//! issues it. Transposed views (a permuted K in attention, `W^T` of a
//! linear layer) become transpose flags instead of copies; a weight shared
//! by every batch row folds the batch into the GEMM's M.

use super::plan::{index_param, GemmStep, Val};

/// How cuBLAS (column-major) reads one row-major matrix view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The view is stored column-major (cuBLAS must transpose its reading).
    pub trans: bool,
    pub ld: i64,
}

/// Layout of a `rows x cols` view with element strides `sr`, `sc`, or `None`
/// when cuBLAS cannot read it in place (broadcast or overlapping strides).
pub fn layout(rows: usize, cols: usize, sr: i64, sc: i64) -> Option<Layout> {
    let (r, c) = (rows as i64, cols as i64);
    if cols == 1 || sc == 1 {
        let ld = if rows == 1 { c.max(1) } else { sr };
        return (ld >= c.max(1)).then_some(Layout { trans: false, ld });
    }
    if rows == 1 || sr == 1 {
        let ld = if cols == 1 { r.max(1) } else { sc };
        return (ld >= r.max(1)).then_some(Layout { trans: true, ld });
    }
    None
}

fn fits(v: i64) -> Option<i32> {
    i32::try_from(v).ok()
}

/// Plans `y = a @ b` for a dense `y`; `None` when the operands need a copy
/// first (non-uniform batch strides or unreadable matrices).
pub fn plan_gemm(a: &Val, b: &Val, y: &Val) -> Option<GemmStep> {
    let (ra, rb, ry) = (a.shape.len(), b.shape.len(), y.shape.len());
    let (m, k, n) = (a.shape[ra - 2], a.shape[ra - 1], b.shape[rb - 1]);
    let la = layout(m, k, a.strides[ra - 2], a.strides[ra - 1])?;
    let lb = layout(k, n, b.strides[rb - 2], b.strides[rb - 1])?;
    let batch_shape = &y.shape[..ry - 2];
    let batch_of = |v: &Val| -> Vec<i64> {
        let r = v.shape.len();
        let view = Val {
            at: v.at,
            dtype: v.dtype,
            shape: v.shape[..r - 2].to_vec(),
            strides: v.strides[..r - 2].to_vec(),
        };
        view.broadcast_strides(batch_shape)
    };
    let (sa, sb, sy) = (batch_of(a), batch_of(b), y.strides[..ry - 2].to_vec());
    let batch: usize = batch_shape.iter().product();
    let (mut rows, mut count, mut stride_a, mut stride_b, mut stride_y) = (m, batch, 0, 0, 0);
    // A weight shared by every batch entry: fold the batch into M when A's
    // rows are evenly spaced across batch entries.
    let shared_b = sb.iter().zip(batch_shape).all(|(&s, &d)| s == 0 || d == 1);
    let mut folded = false;
    if shared_b && !la.trans && batch > 1 {
        let mut shape = batch_shape.to_vec();
        shape.push(m);
        let mut s_rows = sa.clone();
        s_rows.push(la.ld);
        let mut y_rows = sy.clone();
        y_rows.push(n as i64);
        let zeros = vec![0i64; shape.len()];
        if let Some(p) = index_param(&shape, [&s_rows, &y_rows, &zeros]) {
            if p.rank <= 1 && (p.rank == 0 || (p.s0[0] == la.ld && p.s1[0] == n as i64)) {
                rows = m * batch;
                count = 1;
                folded = true;
            }
        }
    }
    if !folded && batch > 1 {
        let p = index_param(batch_shape, [&sa, &sb, &sy])?;
        if p.rank > 1 {
            return None;
        }
        if p.rank == 1 {
            stride_a = p.s0[0];
            stride_b = p.s1[0];
            stride_y = p.s2[0];
        }
    }
    if stride_a < 0 || stride_b < 0 {
        return None;
    }
    // Row-major C = A B is column-major C^T = B^T A^T: cuBLAS's first
    // operand is B, its second A.
    Some(GemmStep {
        dtype: y.dtype,
        trans_a: lb.trans,
        trans_b: la.trans,
        m: fits(n as i64)?,
        n: fits(rows as i64)?,
        k: fits(k as i64)?,
        a: b.at,
        lda: fits(lb.ld)?,
        stride_a: stride_b,
        b: a.at,
        ldb: fits(la.ld)?,
        stride_b: stride_a,
        c: y.at,
        ldc: fits(n as i64)?,
        stride_c: if count > 1 { stride_y } else { (m * n) as i64 },
        batch: fits(count as i64)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::plan::{contiguous_strides, Buf, Ref};
    use super::*;
    use crate::ir::DType;

    fn val(buf: usize, shape: &[usize], strides: Option<Vec<i64>>) -> Val {
        Val {
            at: Ref {
                buf: Buf::Arena(buf),
                offset: 0,
            },
            dtype: DType::F32,
            strides: strides.unwrap_or_else(|| contiguous_strides(shape)),
            shape: shape.to_vec(),
        }
    }

    /// Evaluates a GemmStep on the CPU over flat buffers, exactly as cuBLAS
    /// defines it, so layouts are checked by value, not by field.
    fn run(step: &GemmStep, a: &[f32], b: &[f32], c: &mut [f32]) {
        let at = |buf: &[f32], trans: bool, ld: i32, base: i64, i: i32, j: i32| {
            // Element (i, j) of op(X) where X is column-major with ld.
            let idx = if trans {
                base + j as i64 + i as i64 * ld as i64
            } else {
                base + i as i64 + j as i64 * ld as i64
            };
            buf[idx as usize]
        };
        for p in 0..step.batch {
            for i in 0..step.m {
                for j in 0..step.n {
                    let mut s = 0.0;
                    for l in 0..step.k {
                        s += at(a, step.trans_a, step.lda, p as i64 * step.stride_a, i, l)
                            * at(b, step.trans_b, step.ldb, p as i64 * step.stride_b, l, j);
                    }
                    let idx = p as i64 * step.stride_c + i as i64 + j as i64 * step.ldc as i64;
                    c[idx as usize] = s;
                }
            }
        }
    }

    fn reference(a: &Val, b: &Val, y_shape: &[usize], da: &[f32], db: &[f32]) -> Vec<f32> {
        let ry = y_shape.len();
        let (m, n) = (y_shape[ry - 2], y_shape[ry - 1]);
        let k = a.shape[a.shape.len() - 1];
        let batch_shape = &y_shape[..ry - 2];
        let batch: usize = batch_shape.iter().product();
        let mut full_a = batch_shape.to_vec();
        full_a.extend([m, k]);
        let mut full_b = batch_shape.to_vec();
        full_b.extend([k, n]);
        let sa = a.broadcast_strides(&full_a);
        let sb = b.broadcast_strides(&full_b);
        let cb = contiguous_strides(batch_shape);
        let mut out = vec![0f32; batch * m * n];
        for p in 0..batch {
            let (mut oa, mut ob) = (0i64, 0i64);
            for (d, &len) in batch_shape.iter().enumerate() {
                let c = (p as i64 / cb[d]) % len as i64;
                oa += c * sa[d];
                ob += c * sb[d];
            }
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0;
                    for l in 0..k {
                        s += da[(oa + i as i64 * sa[ry - 2] + l as i64 * sa[ry - 1]) as usize]
                            * db[(ob + l as i64 * sb[ry - 2] + j as i64 * sb[ry - 1]) as usize];
                    }
                    out[p * m * n + i * n + j] = s;
                }
            }
        }
        out
    }

    fn check(a: Val, b: Val, y_shape: &[usize], expect_batch: i32) {
        let da: Vec<f32> = (0..4096)
            .map(|i| ((i * 37 % 101) as f32) * 0.01 - 0.5)
            .collect();
        let db: Vec<f32> = (0..4096)
            .map(|i| ((i * 53 % 97) as f32) * 0.02 - 1.0)
            .collect();
        let y = val(2, y_shape, None);
        let step = plan_gemm(&a, &b, &y).expect("plannable");
        assert_eq!(step.batch, expect_batch);
        // cuBLAS's first operand is B.
        let mut c = vec![0f32; y.numel()];
        run(&step, &db, &da, &mut c);
        let want = reference(&a, &b, y_shape, &da, &db);
        for (g, w) in c.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4, "{g} vs {w}");
        }
    }

    #[test]
    fn plain_and_folded_linear() {
        // [2, 3, 4] @ [4, 5]: shared weight, folded into M = 6.
        check(
            val(0, &[2, 3, 4], None),
            val(1, &[4, 5], None),
            &[2, 3, 5],
            1,
        );
        // x @ W^T with W [5, 4] viewed transposed.
        check(
            val(0, &[2, 3, 4], None),
            val(1, &[4, 5], Some(vec![1, 4])),
            &[2, 3, 5],
            1,
        );
    }

    #[test]
    fn batched_attention_shapes() {
        // q [2, 3, 4, 8] @ k^T where k [2, 3, 6, 8] permuted to [2, 3, 8, 6].
        let kt = val(1, &[2, 3, 8, 6], Some(vec![144, 48, 1, 8]));
        check(val(0, &[2, 3, 4, 8], None), kt, &[2, 3, 4, 6], 6);
        // A batch-broadcast operand: [2, 3, 4] @ [1, 4, 2].
        check(
            val(0, &[2, 3, 4], None),
            val(1, &[1, 4, 2], None),
            &[2, 3, 2],
            1,
        );
        // q from a head split: [b, s, h, d] permuted to [b, h, s, d]:
        // batch axes (b, h) are not uniformly strided: needs a copy.
        let q = val(0, &[2, 3, 4, 8], Some(vec![96, 8, 24, 1]));
        let k = val(1, &[2, 3, 8, 4], None);
        assert!(plan_gemm(&q, &k, &val(2, &[2, 3, 4, 4], None)).is_none());
    }

    #[test]
    fn unreadable_layouts_are_refused() {
        assert_eq!(layout(3, 4, 0, 1), None);
        assert_eq!(layout(3, 4, 4, 0), None);
        assert_eq!(layout(3, 4, 2, 3), None);
        assert_eq!(
            layout(1, 4, 0, 1),
            Some(Layout {
                trans: false,
                ld: 4
            })
        );
        assert_eq!(layout(3, 4, 1, 3), Some(Layout { trans: true, ld: 3 }));
    }
}
