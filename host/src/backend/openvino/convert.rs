//! Conversions between host tensors and OpenVINO tensors.

use openvino::{ElementType, Shape, Tensor as OvTensor};

use crate::ir::DType;
use crate::tensor::Tensor;

fn element(d: DType) -> ElementType {
    match d {
        DType::F32 => ElementType::F32,
        DType::F16 => ElementType::F16,
        DType::BF16 => ElementType::Bf16,
        DType::I64 => ElementType::I64,
        DType::I32 => ElementType::I32,
        DType::U8 => ElementType::U8,
        DType::Bool => ElementType::Boolean,
    }
}

fn dtype(e: ElementType) -> Result<DType, String> {
    Ok(match e {
        ElementType::F32 => DType::F32,
        ElementType::F16 => DType::F16,
        ElementType::Bf16 => DType::BF16,
        ElementType::I64 => DType::I64,
        ElementType::I32 => DType::I32,
        ElementType::U8 => DType::U8,
        ElementType::Boolean => DType::Bool,
        other => return Err(format!("unsupported OpenVINO element type {other}")),
    })
}

/// A host tensor copied into a new OpenVINO tensor (a scalar as [1]: the
/// C API makes no rank-0 shapes, and the emitted model takes scalars so).
pub(super) fn to_tensor(t: &Tensor) -> Result<OvTensor, String> {
    let mut dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    if dims.is_empty() {
        dims.push(1);
    }
    let shape = Shape::new(&dims).map_err(|e| e.to_string())?;
    let mut ov = OvTensor::new(element(t.dtype), &shape).map_err(|e| e.to_string())?;
    let dst = ov.get_raw_data_mut().map_err(|e| e.to_string())?;
    if dst.len() != t.data.len() {
        return Err(format!(
            "tensor of {} bytes for {} bytes of data",
            dst.len(),
            t.data.len()
        ));
    }
    dst.copy_from_slice(&t.data);
    Ok(ov)
}

/// An OpenVINO tensor copied into a host tensor.
pub(super) fn from_tensor(ov: &OvTensor) -> Result<Tensor, String> {
    let d = dtype(ov.get_element_type().map_err(|e| e.to_string())?)?;
    let shape = ov.get_shape().map_err(|e| e.to_string())?;
    let dims = shape
        .get_dimensions()
        .iter()
        .map(|&x| x.max(0) as u64)
        .collect();
    let data = ov.get_raw_data().map_err(|e| e.to_string())?.to_vec();
    Ok(Tensor {
        dtype: d,
        shape: dims,
        data,
    })
}
