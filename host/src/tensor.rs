//! Dense host tensors (dtype, shape, little-endian bytes) and their JSON form.

use crate::ir::DType;

/// A dense tensor as it crosses the skill boundary.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

/// Malformed tensors.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TensorError {
    #[error("tensor `{name}`: shape {shape:?} of {dtype} needs {expected} bytes, got {got}")]
    ByteCount {
        name: String,
        shape: Vec<u64>,
        dtype: DType,
        expected: u128,
        got: usize,
    },
    #[error("tensor `{name}`: expected {expected}, got {got}")]
    DType {
        name: String,
        expected: DType,
        got: DType,
    },
}

impl Tensor {
    pub fn numel(&self) -> u128 {
        self.shape
            .iter()
            .fold(1u128, |a, &d| a.saturating_mul(d as u128))
    }

    /// Checks that the byte count matches the shape.
    pub fn check(&self, name: &str) -> Result<(), TensorError> {
        let expected = self.numel().saturating_mul(self.dtype.size() as u128);
        if expected != self.data.len() as u128 {
            return Err(TensorError::ByteCount {
                name: name.to_string(),
                shape: self.shape.clone(),
                dtype: self.dtype,
                expected,
                got: self.data.len(),
            });
        }
        Ok(())
    }

    pub fn from_f32(shape: Vec<u64>, v: &[f32]) -> Self {
        Tensor {
            dtype: DType::F32,
            shape,
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    pub fn from_i64(shape: Vec<u64>, v: &[i64]) -> Self {
        Tensor {
            dtype: DType::I64,
            shape,
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// Values widened to f32 (f16/bf16/f32 only).
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>, TensorError> {
        widen_to_f32(self.dtype, &self.data).ok_or_else(|| TensorError::DType {
            name: name.to_string(),
            expected: DType::F32,
            got: self.dtype,
        })
    }

    /// Values as i64 (integer and bool dtypes).
    pub fn to_i64(&self, name: &str) -> Result<Vec<i64>, TensorError> {
        let c = |n: usize| self.data.chunks_exact(n);
        Ok(match self.dtype {
            DType::I64 => c(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
            DType::I32 => c(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                .collect(),
            DType::U8 | DType::Bool => self.data.iter().map(|&b| b as i64).collect(),
            got => {
                return Err(TensorError::DType {
                    name: name.to_string(),
                    expected: DType::I64,
                    got,
                })
            }
        })
    }

    /// JSON text of the values as nested arrays following the shape.
    /// Floats print in their shortest round-trip form for their own width.
    pub fn to_json(&self, name: &str) -> Result<String, TensorError> {
        self.check(name)?;
        let mut out = String::with_capacity(self.data.len() * 3);
        if self.dtype.is_float() {
            let v = self.to_f32(name)?;
            nest(&mut out, &self.shape, &mut v.iter(), &mut |o, x| {
                push_f32(o, *x)
            });
        } else {
            let v = self.to_i64(name)?;
            nest(&mut out, &self.shape, &mut v.iter(), &mut |o, x| {
                o.push_str(&x.to_string())
            });
        }
        Ok(out)
    }
}

fn nest<'a, T: 'a>(
    out: &mut String,
    shape: &[u64],
    it: &mut impl Iterator<Item = &'a T>,
    put: &mut impl FnMut(&mut String, &T),
) {
    match shape.split_first() {
        None => {
            if let Some(x) = it.next() {
                put(out, x);
            }
        }
        Some((&n, rest)) => {
            out.push('[');
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                nest(out, rest, it, put);
            }
            out.push(']');
        }
    }
}

/// Appends the shortest text that reads back to the same f32 (serde_json
/// formats f32 with its own width); non-finite values become `null`.
fn push_f32(out: &mut String, x: f32) {
    match serde_json::to_string(&x) {
        Ok(s) => out.push_str(&s),
        Err(_) => out.push_str("null"),
    }
}

/// Little-endian values of float dtype `dtype` (f32, f16 or bf16) widened
/// to f32; `None` for other dtypes.
pub fn widen_to_f32(dtype: DType, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_nests_and_keeps_f32_precision() {
        let t = Tensor::from_f32(vec![2, 2], &[0.1, -2.5, 3.0, 1e-8]);
        assert_eq!(t.to_json("t").unwrap(), "[[0.1,-2.5],[3.0,1e-8]]");
        let bad = Tensor {
            dtype: DType::F32,
            shape: vec![3],
            data: vec![0; 4],
        };
        assert!(matches!(bad.check("x"), Err(TensorError::ByteCount { .. })));
    }

    #[test]
    fn half_precision_widens_to_f32() {
        let b: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        assert_eq!(widen_to_f32(DType::BF16, &b), Some(vec![1.5, -2.0]));
        assert_eq!(widen_to_f32(DType::I64, &b), None);
    }
}
