//! Conversions between host tensors and ONNX Runtime values.

use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};

use crate::ir::DType;
use crate::tensor::Tensor;

fn shape_i64(t: &Tensor) -> Vec<i64> {
    t.shape.iter().map(|&d| d as i64).collect()
}

fn chunks<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    data.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

/// A host tensor as an owned ONNX Runtime value.
pub(super) fn to_value(t: &Tensor) -> Result<DynValue, String> {
    let s = shape_i64(t);
    let r = match t.dtype {
        DType::F32 => OrtTensor::from_array((
            s,
            chunks::<4>(&t.data)
                .map(f32::from_le_bytes)
                .collect::<Vec<_>>(),
        ))
        .map(|v| v.into_dyn()),
        DType::F16 => OrtTensor::from_array((
            s,
            chunks::<2>(&t.data)
                .map(half::f16::from_le_bytes)
                .collect::<Vec<_>>(),
        ))
        .map(|v| v.into_dyn()),
        DType::BF16 => OrtTensor::from_array((
            s,
            chunks::<2>(&t.data)
                .map(half::bf16::from_le_bytes)
                .collect::<Vec<_>>(),
        ))
        .map(|v| v.into_dyn()),
        DType::I64 => OrtTensor::from_array((
            s,
            chunks::<8>(&t.data)
                .map(i64::from_le_bytes)
                .collect::<Vec<_>>(),
        ))
        .map(|v| v.into_dyn()),
        DType::I32 => OrtTensor::from_array((
            s,
            chunks::<4>(&t.data)
                .map(i32::from_le_bytes)
                .collect::<Vec<_>>(),
        ))
        .map(|v| v.into_dyn()),
        DType::U8 => OrtTensor::from_array((s, t.data.clone())).map(|v| v.into_dyn()),
        DType::Bool => {
            OrtTensor::from_array((s, t.data.iter().map(|&b| b != 0).collect::<Vec<bool>>()))
                .map(|v| v.into_dyn())
        }
    };
    r.map_err(|e| format!("cannot create a {} input: {e}", t.dtype))
}

fn pack<T: Copy, const N: usize>(
    shape: &[i64],
    v: &[T],
    dtype: DType,
    f: impl Fn(T) -> [u8; N],
) -> Tensor {
    Tensor {
        dtype,
        shape: shape.iter().map(|&d| d.max(0) as u64).collect(),
        data: v.iter().flat_map(|&x| f(x)).collect(),
    }
}

/// An ONNX Runtime output as a host tensor.
pub(super) fn from_value(v: &DynValue) -> Result<Tensor, String> {
    let ty = match v.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => return Err(format!("expected a tensor output, got {other:?}")),
    };
    let e = |e: ort::Error| e.to_string();
    Ok(match ty {
        TensorElementType::Float32 => {
            let (s, d) = v.try_extract_tensor::<f32>().map_err(e)?;
            pack(s, d, DType::F32, f32::to_le_bytes)
        }
        TensorElementType::Float16 => {
            let (s, d) = v.try_extract_tensor::<half::f16>().map_err(e)?;
            pack(s, d, DType::F16, half::f16::to_le_bytes)
        }
        TensorElementType::Bfloat16 => {
            let (s, d) = v.try_extract_tensor::<half::bf16>().map_err(e)?;
            pack(s, d, DType::BF16, half::bf16::to_le_bytes)
        }
        TensorElementType::Int64 => {
            let (s, d) = v.try_extract_tensor::<i64>().map_err(e)?;
            pack(s, d, DType::I64, i64::to_le_bytes)
        }
        TensorElementType::Int32 => {
            let (s, d) = v.try_extract_tensor::<i32>().map_err(e)?;
            pack(s, d, DType::I32, i32::to_le_bytes)
        }
        TensorElementType::Uint8 => {
            let (s, d) = v.try_extract_tensor::<u8>().map_err(e)?;
            pack(s, d, DType::U8, |x: u8| [x])
        }
        TensorElementType::Bool => {
            let (s, d) = v.try_extract_tensor::<bool>().map_err(e)?;
            pack(s, d, DType::Bool, |x: bool| [x as u8])
        }
        other => return Err(format!("unsupported output element type {other:?}")),
    })
}

/// The dtype and shape of an ONNX Runtime tensor value.
pub(super) fn value_type(v: &DynValue) -> Result<(DType, Vec<u64>), String> {
    let (ty, shape) = match v.dtype() {
        ValueType::Tensor { ty, shape, .. } => {
            (*ty, shape.iter().map(|&d| d.max(0) as u64).collect())
        }
        other => return Err(format!("expected a tensor output, got {other:?}")),
    };
    let dtype = match ty {
        TensorElementType::Float32 => DType::F32,
        TensorElementType::Float16 => DType::F16,
        TensorElementType::Bfloat16 => DType::BF16,
        TensorElementType::Int64 => DType::I64,
        TensorElementType::Int32 => DType::I32,
        TensorElementType::Uint8 => DType::U8,
        TensorElementType::Bool => DType::Bool,
        other => return Err(format!("unsupported element type {other:?}")),
    };
    Ok((dtype, shape))
}
