//! Unary ops as ONNX nodes: one node of the op type the op table names
//! (`ir::ops`), or one of the table's multi-node decompositions.

use super::Lowering;
use crate::ir::ops::{OnnxDecomposition, OnnxUnary};
use crate::ir::{DType, UnaryOp};

impl Lowering<'_> {
    pub(super) fn unary(&mut self, op: UnaryOp, x: &str, out: &str, dt: DType) {
        match op.onnx() {
            OnnxUnary::Node(name) => self.node(name, &[x], out, vec![]),
            OnnxUnary::Decomposed(d) => self.decomposed(d, x, out, dt),
        }
    }

    fn decomposed(&mut self, d: OnnxDecomposition, x: &str, out: &str, dt: DType) {
        match d {
            OnnxDecomposition::SqrtReciprocal => {
                let s = self.tmp("Sqrt", &[x], vec![]);
                self.node("Reciprocal", &[&s], out, vec![]);
            }
            OnnxDecomposition::ErfGelu => {
                // x * 0.5 * (1 + erf(x / sqrt(2))): the pattern ORT fuses into Gelu.
                let c = self.scalar(dt, std::f64::consts::SQRT_2);
                let d = self.tmp("Div", &[x, &c], vec![]);
                let e = self.tmp("Erf", &[&d], vec![]);
                self.gelu_tail(dt, x, &e, out);
            }
            OnnxDecomposition::TanhGelu => {
                // 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))
                let x3 = {
                    let x2 = self.tmp("Mul", &[x, x], vec![]);
                    self.tmp("Mul", &[&x2, x], vec![])
                };
                let k = self.scalar(dt, 0.044715);
                let kx3 = self.tmp("Mul", &[&x3, &k], vec![]);
                let inner = self.tmp("Add", &[x, &kx3], vec![]);
                let c = self.scalar(dt, (2.0 / std::f64::consts::PI).sqrt());
                let scaled = self.tmp("Mul", &[&inner, &c], vec![]);
                let t = self.tmp("Tanh", &[&scaled], vec![]);
                self.gelu_tail(dt, x, &t, out);
            }
            OnnxDecomposition::SigmoidMul => {
                let s = self.tmp("Sigmoid", &[x], vec![]);
                self.node("Mul", &[x, &s], out, vec![]);
            }
        }
    }

    /// `out = x * (1 + t) * 0.5`: both GELUs' last steps (`t` = erf or
    /// tanh of the scaled input), in the node order ORT fuses into Gelu.
    fn gelu_tail(&mut self, dt: DType, x: &str, t: &str, out: &str) {
        let one = self.scalar(dt, 1.0);
        let p = self.tmp("Add", &[t, &one], vec![]);
        let m = self.tmp("Mul", &[x, &p], vec![]);
        let half = self.scalar(dt, 0.5);
        self.node("Mul", &[&m, &half], out, vec![]);
    }
}
