//! Conversions between WIT types and host types.

use super::accel::skill::types::{
    Dim as WDim, Dtype, Error as WitError, NamedTensor, Tensor as WTensor,
};
use crate::backend::BackendError;
use crate::ir::{DType, Dim, GraphError};
use crate::tensor::Tensor;

pub(super) fn dtype_in(d: Dtype) -> DType {
    match d {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::Bf16 => DType::BF16,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::U8 => DType::U8,
        Dtype::Boolean => DType::Bool,
    }
}

pub(super) fn dtype_out(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::Bf16,
        DType::I64 => Dtype::I64,
        DType::I32 => Dtype::I32,
        DType::U8 => Dtype::U8,
        DType::Bool => Dtype::Boolean,
    }
}

pub(super) fn dim_in(d: WDim) -> Dim {
    match d {
        WDim::Fixed(n) => Dim::Fixed(n),
        WDim::Symbolic(s) => Dim::Sym(s),
    }
}

pub(super) fn dim_out(d: &Dim) -> WDim {
    match d {
        Dim::Fixed(n) => WDim::Fixed(*n),
        other => WDim::Symbolic(other.to_string()),
    }
}

pub(super) fn tensor_in(t: WTensor) -> Tensor {
    Tensor {
        dtype: dtype_in(t.dtype),
        shape: t.shape,
        data: t.data,
    }
}

pub(super) fn tensor_out(t: Tensor) -> WTensor {
    WTensor {
        dtype: dtype_out(t.dtype),
        shape: t.shape,
        data: t.data,
    }
}

pub(super) fn named_out(list: Vec<(String, Tensor)>) -> Vec<NamedTensor> {
    list.into_iter()
        .map(|(name, t)| NamedTensor {
            name,
            value: tensor_out(t),
        })
        .collect()
}

pub(super) fn graph_error(e: GraphError) -> WitError {
    match e {
        GraphError::TooLarge { .. } => WitError::ResourceExhausted(e.to_string()),
        other => WitError::Graph(other.to_string()),
    }
}

pub(super) fn backend_error(e: BackendError) -> WitError {
    match e {
        BackendError::Graph(g) => graph_error(g),
        BackendError::Input { .. } => WitError::Graph(e.to_string()),
        other => WitError::Backend(other.to_string()),
    }
}
