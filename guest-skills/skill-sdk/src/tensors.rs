//! Packing and unpacking tensor bytes.

use crate::{Dtype, Error, Tensor};

/// An i64 tensor.
pub fn i64_tensor(shape: Vec<u64>, values: &[i64]) -> Tensor {
    Tensor {
        dtype: Dtype::I64,
        shape,
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// An f32 tensor.
pub fn f32_tensor(shape: Vec<u64>, values: &[f32]) -> Tensor {
    Tensor {
        dtype: Dtype::F32,
        shape,
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Splits an f32 tensor [rows, ...] into one tensor per row.
pub fn split_rows(t: &Tensor) -> Result<Vec<Tensor>, Error> {
    let rows = *t
        .shape
        .first()
        .ok_or_else(|| crate::internal("expected a tensor of rank >= 1"))? as usize;
    if rows == 0 {
        return Ok(Vec::new());
    }
    let row_bytes = t.data.len() / rows;
    if row_bytes * rows != t.data.len() {
        return Err(crate::internal(format!(
            "tensor of {} bytes does not split into {rows} rows",
            t.data.len()
        )));
    }
    Ok(t.data
        .chunks_exact(row_bytes.max(1))
        .map(|c| Tensor {
            dtype: t.dtype,
            shape: t.shape[1..].to_vec(),
            data: c.to_vec(),
        })
        .collect())
}

/// Finds an output by name.
pub fn take(outputs: Vec<crate::NamedTensor>, name: &str) -> Result<Tensor, Error> {
    outputs
        .into_iter()
        .find(|n| n.name == name)
        .map(|n| n.value)
        .ok_or_else(|| crate::internal(format!("graph output `{name}` missing")))
}

/// The values of an i64 tensor.
pub fn i64_values(t: &Tensor) -> Result<Vec<i64>, Error> {
    if t.dtype != Dtype::I64 {
        return Err(crate::internal(format!(
            "expected an i64 tensor, got {:?}",
            t.dtype
        )));
    }
    Ok(t.data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

/// The values of an f32 tensor.
pub fn f32_values(t: &Tensor) -> Result<Vec<f32>, Error> {
    if t.dtype != Dtype::F32 {
        return Err(crate::internal(format!(
            "expected an f32 tensor, got {:?}",
            t.dtype
        )));
    }
    Ok(t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// A boolean tensor (one byte per element).
pub fn bool_tensor(shape: Vec<u64>, values: &[bool]) -> Tensor {
    Tensor {
        dtype: Dtype::Boolean,
        shape,
        data: values.iter().map(|&v| v as u8).collect(),
    }
}
