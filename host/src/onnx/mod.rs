//! Emits a validated [`Graph`] as an ONNX model (opset 18).
//!
//! Weights are not copied into the protobuf: each weight becomes an
//! initializer whose `external_data` points at its byte range inside the
//! model's safetensors file, so a backend reads (or maps) the bytes straight
//! from the model. High-level ops (attention, gelu, rms-norm, l2-normalize)
//! are lowered to standard ONNX ops that every ONNX consumer accepts; the
//! runtimes' own graph optimizers fuse the common patterns again.

mod lower;
pub mod quantize;
mod write_rows;

use onnx_protobuf::{
    tensor_proto, tensor_shape_proto, type_proto, GraphProto, ModelProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use protobuf::Message;

use crate::ir::{DType, Dim, Graph};

/// Where a weight's bytes live: a file name relative to the emitted model,
/// and a byte range inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalLocation {
    pub location: String,
    pub offset: u64,
    pub length: u64,
}

/// Emission failures.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("ONNX emission of graph `{graph}`: weight `{name}` has no known location in the model's files")]
    MissingWeight { graph: String, name: String },
    #[error("ONNX emission of graph `{graph}`: {message}")]
    Unsupported { graph: String, message: String },
    #[error("ONNX emission: protobuf encoding failed: {0}")]
    Encode(String),
}

/// ONNX element type code of a dtype.
pub fn onnx_type(d: DType) -> i32 {
    use tensor_proto::DataType as T;
    let t = match d {
        DType::F32 => T::FLOAT,
        DType::F16 => T::FLOAT16,
        DType::BF16 => T::BFLOAT16,
        DType::I64 => T::INT64,
        DType::I32 => T::INT32,
        DType::U8 => T::UINT8,
        DType::Bool => T::BOOL,
    };
    t as i32
}

fn value_info(name: &str, dtype: DType, shape: &[Dim]) -> ValueInfoProto {
    let dims = shape
        .iter()
        .map(|d| {
            let mut dim = tensor_shape_proto::Dimension::new();
            dim.value = match d {
                Dim::Fixed(n) => Some(tensor_shape_proto::dimension::Value::DimValue(*n as i64)),
                Dim::Sym(s) => Some(tensor_shape_proto::dimension::Value::DimParam(s.clone())),
                Dim::Expr(_) | Dim::Window(_) => None,
            };
            dim
        })
        .collect();
    let mut tshape = TensorShapeProto::new();
    tshape.dim = dims;
    let mut tt = type_proto::Tensor::new();
    tt.elem_type = onnx_type(dtype);
    tt.shape = protobuf::MessageField::some(tshape);
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(tt));
    let mut vi = ValueInfoProto::new();
    vi.name = name.to_string();
    vi.type_ = protobuf::MessageField::some(ty);
    vi
}

fn external_initializer(
    name: &str,
    dtype: DType,
    shape: &[Dim],
    loc: &ExternalLocation,
) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.data_type = onnx_type(dtype);
    t.dims = shape
        .iter()
        .map(|d| d.fixed().unwrap_or(0) as i64)
        .collect();
    t.data_location = protobuf::EnumOrUnknown::new(tensor_proto::DataLocation::EXTERNAL);
    let entry = |k: &str, v: String| {
        let mut e = StringStringEntryProto::new();
        e.key = k.to_string();
        e.value = v;
        e
    };
    t.external_data = vec![
        entry("location", loc.location.clone()),
        entry("offset", loc.offset.to_string()),
        entry("length", loc.length.to_string()),
    ];
    t
}

/// Raw-data initializer.
pub(crate) fn raw_initializer(
    name: &str,
    dtype: DType,
    dims: &[i64],
    bytes: Vec<u8>,
) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.data_type = onnx_type(dtype);
    t.dims = dims.to_vec();
    t.raw_data = bytes;
    t
}

/// Emits `g` as serialized ONNX bytes. `locate` maps a weight name to its
/// external byte range.
pub fn emit(
    g: &Graph,
    locate: &dyn Fn(&str) -> Option<ExternalLocation>,
) -> Result<Vec<u8>, EmitError> {
    emit_with(g, locate, false)
}

/// As [`emit`]; with `scalars_as_vectors`, rank-0 graph inputs and outputs
/// are declared as one-element vectors (for runtimes whose API cannot make
/// rank-0 tensors: OpenVINO's C API).
pub fn emit_with(
    g: &Graph,
    locate: &dyn Fn(&str) -> Option<ExternalLocation>,
    scalars_as_vectors: bool,
) -> Result<Vec<u8>, EmitError> {
    emit_inner(g, locate, scalars_as_vectors, None)
}

/// The linear layers of `g` to quantize, by node, and the weights only
/// they read (not emitted in f32).
fn int8_plan(
    g: &Graph,
    flavor: quantize::Flavor,
) -> (
    std::collections::HashMap<u32, quantize::QuantLinear>,
    std::collections::HashSet<u32>,
) {
    let linears: std::collections::HashMap<u32, quantize::QuantLinear> = (0..g.nodes.len() as u32)
        .filter_map(|id| quantize::quantizable(g, id, flavor).map(|q| (id, q)))
        .collect();
    let mut read_in_f32 = std::collections::HashSet::new();
    for (id, node) in g.nodes.iter().enumerate() {
        let skip = linears.get(&(id as u32)).map(|q| q.weight);
        for o in node.op.operands() {
            if Some(o) != skip {
                read_in_f32.insert(o);
            }
        }
    }
    for (_, o) in &g.outputs {
        read_in_f32.insert(*o);
    }
    let int8_only = linears
        .values()
        .map(|q| q.weight)
        .filter(|w| !read_in_f32.contains(w))
        .collect();
    (linears, int8_only)
}

fn emit_inner(
    g: &Graph,
    locate: &dyn Fn(&str) -> Option<ExternalLocation>,
    scalars_as_vectors: bool,
    int8: Option<&quantize::Source>,
) -> Result<Vec<u8>, EmitError> {
    let vector = [Dim::Fixed(1)];
    let mut graph = GraphProto::new();
    graph.name = g.name.clone();
    let mut low = lower::Lowering::new(g);
    let (linears, int8_only) = match int8 {
        Some(src) => int8_plan(g, src.flavor),
        None => Default::default(),
    };
    for (id, node) in g.nodes.iter().enumerate() {
        if let (Some(src), Some(lin)) = (int8, linears.get(&(id as u32))) {
            quantize::lower_linear(g, id as u32, lin, src, &mut low, &mut graph.initializer)?;
            continue;
        }
        match &node.op {
            crate::ir::Op::Weight { .. } if int8_only.contains(&(id as u32)) => {}
            crate::ir::Op::Input { .. } | crate::ir::Op::State { .. } => {
                let name = g.input_name(id as u32);
                if scalars_as_vectors && node.shape.is_empty() {
                    graph.input.push(value_info(&name, node.dtype, &vector));
                    low.scalar_in(id as u32, &name);
                    continue;
                }
                graph.input.push(value_info(&name, node.dtype, &node.shape));
                low.name_value(id as u32, name);
            }
            crate::ir::Op::Weight { name } => {
                let loc = locate(name).ok_or_else(|| EmitError::MissingWeight {
                    graph: g.name.clone(),
                    name: name.clone(),
                })?;
                graph
                    .initializer
                    .push(external_initializer(name, node.dtype, &node.shape, &loc));
                low.name_value(id as u32, name.clone());
            }
            _ => low.lower(id as u32)?,
        }
    }
    for (name, id) in &g.outputs {
        let n = g.node(*id);
        if scalars_as_vectors && n.shape.is_empty() {
            low.scalar_out(*id, name);
            graph.output.push(value_info(name, n.dtype, &vector));
            continue;
        }
        low.identity(*id, name);
        graph.output.push(value_info(name, n.dtype, &n.shape));
    }
    let (nodes, inits) = low.finish();
    graph.node = nodes;
    graph.initializer.extend(inits);

    let mut model = ModelProto::new();
    model.ir_version = 8;
    model.producer_name = "host".into();
    model.producer_version = env!("CARGO_PKG_VERSION").into();
    let mut opset = OperatorSetIdProto::new();
    opset.domain = String::new();
    opset.version = 18;
    model.opset_import = vec![opset];
    model.graph = protobuf::MessageField::some(graph);
    model
        .write_to_bytes()
        .map_err(|e| EmitError::Encode(e.to_string()))
}

/// The file name under which weight file `i` of a model is referenced by
/// emitted models (`weights<i>.safetensors`).
pub fn weight_file_name(i: usize) -> String {
    format!("weights{i}.safetensors")
}

/// Emits `g` with its weights pointing into the model's safetensors files,
/// named by [`weight_file_name`].
pub fn emit_for_model(
    g: &Graph,
    model: &crate::model::Model,
    scalars_as_vectors: bool,
) -> Result<Vec<u8>, EmitError> {
    emit_with(g, &locator(model), scalars_as_vectors)
}

/// Where the model's weights live, named by [`weight_file_name`].
fn locator(model: &crate::model::Model) -> impl Fn(&str) -> Option<ExternalLocation> + '_ {
    |name: &str| {
        let e = model.weights.index.get(name)?;
        Some(ExternalLocation {
            location: weight_file_name(e.file),
            offset: e.offset,
            length: e.length,
        })
    }
}

/// As [`emit_for_model`], with linear layers in int8 the way `flavor`
/// says ([`quantize`]); the quantized weights are kept in the model. With
/// ONNX Runtime's flavor every weight is read from an in-memory file of its
/// own, returned with the model (the model's whole files are not read).
pub fn emit_for_model_int8(
    g: &Graph,
    model: &crate::model::Model,
    flavor: quantize::Flavor,
    scalars_as_vectors: bool,
) -> Result<(Vec<u8>, Vec<quantize::MemoryFile>), EmitError> {
    let src = quantize::Source::new(model, flavor);
    let onnx = match src.in_memory() {
        true => emit_inner(g, &|n| src.locate_plain(n), scalars_as_vectors, Some(&src))?,
        false => emit_inner(g, &locator(model), scalars_as_vectors, Some(&src))?,
    };
    Ok((onnx, src.into_files()))
}

/// Indices of the model's weight files that `g` references, ascending.
pub fn used_weight_files(g: &Graph, model: &crate::model::Model) -> Vec<usize> {
    let mut v: Vec<usize> = g
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            crate::ir::Op::Weight { name } => model.weights.index.get(name).map(|e| e.file),
            _ => None,
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}
