//! int8 linear layers for ONNX Runtime (`--precision int8` on cpu).
//!
//! The host quantizes a model's weights when a graph is compiled, from the
//! checkpoint's f32/f16/bf16 safetensors: no offline step and no file on
//! disk. Each quantized weight is kept once per model ([`Cache`]) and shared
//! by every graph of the model (a decoder's step graphs). On ONNX Runtime the
//! graphs read it in place: each int8 weight, and each unquantized weight an
//! int8 graph still reads, is an in-memory external-data file of its own
//! ([`MemoryFile`]), so no session copies it and the f32 copy of the whole
//! checkpoint that f32 sessions read is not made.
//!
//! **Weights:** symmetric int8 with one scale per output channel (a row of
//! the `[out, in]` weight): `scale = max|w| / 127`, `q = round(w / scale)`
//! (ties to even), stored transposed `[in, out]` as ONNX `MatMulInteger`
//! reads it.
//!
//! **Activations:** quantized at run time per row (each token's vector),
//! symmetric: `s = max|row| / 127`, `x_q = clip(round(x / s), ±127)`, held
//! as uint8 with zero point 128 so that ONNX Runtime runs its u8 × s8
//! integer GEMM (`MatMulInteger`, VNNI where the CPU has it); the product is
//! rescaled to f32: `y = (x_q · w_q) · s · w_scale + bias`. Per row rather
//! than per tensor (`DynamicQuantizeLinear`): a request's numbers do not
//! depend on the rest of its batch or on padding, and on all-MiniLM-L6-v2
//! the mean cosine to f32 is 0.9967 at any batch size, where one scale per
//! tensor gave 0.9960 alone and 0.9943 in batches of 32.
//!
//! **Which layers:** every `linear` whose weight is a model weight, except
//! those whose input is an activation's output (a unary op such as GELU or
//! ReLU) or a gated product (SwiGLU's `silu(gate) * up`): the MLP's down
//! projection. Their inputs have heavy tails that 255 levels resolve
//! poorly (measured on all-MiniLM-L6-v2 with per-tensor scales: quantizing
//! them too dropped the mean cosine to f32 from 0.996 to 0.993). Everything
//! else (attention scores, norms, softmax, embeddings, convolutions) stays
//! f32.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use onnx_protobuf::TensorProto;

use super::lower::{Attr, Lowering};
use super::{external_initializer, raw_initializer, EmitError, ExternalLocation};
use crate::ir::{BinaryOp, DType, Dim, Graph, NodeId, Op};

/// A weight quantized per output channel.
#[derive(Debug)]
pub struct QuantizedWeight {
    /// `[in, out]` row-major, int8 as two's-complement bytes.
    pub q: Arc<[u8]>,
    /// One per output channel.
    pub scales: Vec<f32>,
    pub inputs: usize,
    pub outputs: usize,
}

/// The quantized weights of one model, by weight name.
#[derive(Default)]
pub struct Cache {
    weights: Mutex<HashMap<String, Arc<QuantizedWeight>>>,
    /// Unquantized weights int8 graphs read (in the checkpoint's dtype),
    /// each copied once from the model's files.
    plain: Mutex<HashMap<String, Arc<[u8]>>>,
}

impl Cache {
    /// Weight `name` quantized, computed on first use from `values`
    /// (`[outputs, inputs]`, as f32).
    fn get_or_quantize(
        &self,
        name: &str,
        outputs: usize,
        inputs: usize,
        values: impl FnOnce() -> Option<Vec<f32>>,
    ) -> Option<Arc<QuantizedWeight>> {
        let mut map = self.weights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = map.get(name) {
            return Some(w.clone());
        }
        let w = Arc::new(quantize_rows(&values()?, outputs, inputs));
        map.insert(name.to_string(), w.clone());
        Some(w)
    }

    /// The bytes of weight `name`, copied from the model's files on first
    /// use.
    fn plain(&self, model: &crate::model::Model, name: &str) -> Option<Arc<[u8]>> {
        let mut map = self.plain.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get(name) {
            return Some(b.clone());
        }
        let b: Arc<[u8]> = Arc::from(model.weights.bytes(name)?);
        map.insert(name.to_string(), b.clone());
        Some(b)
    }
}

/// An in-memory external-data file an emitted graph reads.
#[derive(Clone)]
pub struct MemoryFile {
    pub name: String,
    pub bytes: Arc<[u8]>,
}

/// Quantizes `w` (`[outputs, inputs]` row-major) per output row.
pub fn quantize_rows(w: &[f32], outputs: usize, inputs: usize) -> QuantizedWeight {
    let mut q = vec![0u8; outputs * inputs];
    let mut scales = Vec::with_capacity(outputs);
    for (o, row) in w.chunks_exact(inputs.max(1)).take(outputs).enumerate() {
        let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if amax > 0.0 && amax.is_finite() {
            amax / 127.0
        } else {
            1.0
        };
        for (i, v) in row.iter().enumerate() {
            q[i * outputs + o] = (v / scale).round_ties_even().clamp(-127.0, 127.0) as i8 as u8;
        }
        scales.push(scale);
    }
    QuantizedWeight {
        q: Arc::from(q),
        scales,
        inputs,
        outputs,
    }
}

/// A linear layer to quantize: its input, weight node, weight name and bias.
pub struct QuantLinear {
    pub x: NodeId,
    pub weight: NodeId,
    pub name: String,
    pub bias: Option<NodeId>,
}

/// Node `id` as a linear layer to quantize, if the rules above allow it.
pub fn quantizable(g: &Graph, id: NodeId, flavor: Flavor) -> Option<QuantLinear> {
    let Op::Linear { x, weight, bias } = &g.node(id).op else {
        return None;
    };
    let w = g.node(*weight);
    let Op::Weight { name } = &w.op else {
        return None;
    };
    if w.shape.len() != 2 || !w.dtype.is_float() {
        return None;
    }
    let activation = matches!(
        &g.node(*x).op,
        Op::Unary(..) | Op::Binary(BinaryOp::Mul, ..)
    );
    match activation && flavor == Flavor::RowInt8 {
        true => None,
        false => Some(QuantLinear {
            x: *x,
            weight: *weight,
            name: name.clone(),
            bias: *bias,
        }),
    }
}

/// How a backend runs int8 linear layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// ONNX Runtime: inputs quantized per row at run time, integer GEMM
    /// (`MatMulInteger`); layers fed by activations stay f32.
    RowInt8,
    /// OpenVINO: every linear layer's weight as int8 with its scales
    /// (`DequantizeLinear` on the constant), which the plugin keeps
    /// compressed and multiplies with activations it quantizes itself
    /// (dynamic quantization, in groups along the input axis).
    CompressedWeights,
}

/// The weights of a model, as the emitter needs them to quantize.
pub struct Source<'a> {
    pub model: &'a crate::model::Model,
    pub flavor: Flavor,
    /// The in-memory files the graph reads (ONNX Runtime's flavor).
    files: RefCell<Vec<MemoryFile>>,
}

impl<'a> Source<'a> {
    pub fn new(model: &'a crate::model::Model, flavor: Flavor) -> Self {
        Source {
            model,
            flavor,
            files: RefCell::new(Vec::new()),
        }
    }

    /// Whether weights are read from in-memory files of their own.
    pub fn in_memory(&self) -> bool {
        self.flavor == Flavor::RowInt8
    }

    /// The in-memory files the emitted graph reads.
    pub fn into_files(self) -> Vec<MemoryFile> {
        self.files.into_inner()
    }

    /// The file name of weight `name` (`prefix` `weight` or `int8`), unique
    /// per weight of the model.
    fn file_name(&self, prefix: &str, name: &str) -> Option<String> {
        let e = self.model.weights.index.get(name)?;
        Some(format!("{prefix}-{}-{}.bin", e.file, e.offset))
    }

    /// Records `bytes` as in-memory file `file` (once).
    fn share(&self, file: &str, bytes: Arc<[u8]>) -> ExternalLocation {
        let mut files = self.files.borrow_mut();
        if !files.iter().any(|f| f.name == file) {
            files.push(MemoryFile {
                name: file.to_string(),
                bytes: bytes.clone(),
            });
        }
        ExternalLocation {
            location: file.to_string(),
            offset: 0,
            length: bytes.len() as u64,
        }
    }

    /// Where unquantized weight `name` is read from: an in-memory file of
    /// its own.
    pub fn locate_plain(&self, name: &str) -> Option<ExternalLocation> {
        let file = self.file_name("weight", name)?;
        let bytes = self.model.int8.plain(self.model, name)?;
        Some(self.share(&file, bytes))
    }

    /// Weight `name` of `[outputs, inputs]` quantized.
    fn weight(
        &self,
        graph: &str,
        name: &str,
        outputs: usize,
        inputs: usize,
    ) -> Result<Arc<QuantizedWeight>, EmitError> {
        let missing = || EmitError::MissingWeight {
            graph: graph.to_string(),
            name: name.to_string(),
        };
        let values = || {
            let dtype = self.model.weights.index.get(name)?.dtype;
            let bytes = self.model.weights.bytes(name)?;
            crate::tensor::widen_to_f32(dtype, bytes).filter(|v| v.len() == outputs * inputs)
        };
        self.model
            .int8
            .get_or_quantize(name, outputs, inputs, values)
            .ok_or_else(missing)
    }
}

/// Emits quantized linear `id` (`quantizable` said yes) into `low`, its
/// int8 weight, scales and zero points into `inits`.
pub(super) fn lower_linear(
    g: &Graph,
    id: NodeId,
    lin: &QuantLinear,
    src: &Source,
    low: &mut Lowering,
    inits: &mut Vec<TensorProto>,
) -> Result<(), EmitError> {
    let shape = &g.node(lin.weight).shape;
    let (outputs, inputs) = match shape.as_slice() {
        [Dim::Fixed(o), Dim::Fixed(i)] => (*o as usize, *i as usize),
        _ => {
            return Err(EmitError::Unsupported {
                graph: g.name.clone(),
                message: format!("int8 weight `{}` is not a fixed 2-D matrix", lin.name),
            })
        }
    };
    let w = src.weight(&g.name, &lin.name, outputs, inputs)?;
    let (wq, ws, wz) = (
        format!("{}.int8", lin.name),
        format!("{}.int8_scale", lin.name),
        format!("{}.int8_zero", lin.name),
    );
    if !inits.iter().any(|t| t.name == wq) {
        let scales: Vec<u8> = w.scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        let dims = [inputs as i64, outputs as i64];
        match src.in_memory() {
            true => {
                let file =
                    src.file_name("int8", &lin.name)
                        .ok_or_else(|| EmitError::MissingWeight {
                            graph: g.name.clone(),
                            name: lin.name.clone(),
                        })?;
                let loc = src.share(&file, w.q.clone());
                let shape = [Dim::Fixed(inputs as u64), Dim::Fixed(outputs as u64)];
                let mut t = external_initializer(&wq, DType::U8, &shape, &loc);
                t.data_type = onnx_protobuf::tensor_proto::DataType::INT8 as i32;
                inits.push(t);
            }
            false => inits.push(int8_initializer(&wq, &dims, w.q.to_vec())),
        }
        inits.push(raw_initializer(&ws, DType::F32, &[outputs as i64], scales));
        inits.push(int8_initializer(&wz, &[outputs as i64], vec![0; outputs]));
    }
    let x = low.v(lin.x);
    let out = low.v(id);
    // The product goes to `out`, or to a temp the bias is added to.
    let y = match lin.bias {
        Some(_) => low.fresh("linear"),
        None => out.clone(),
    };
    match src.flavor {
        Flavor::RowInt8 => {
            let (xq, row_scale) = quantize_rows_at_run_time(&x, low, inits);
            let mm = low.tmp("MatMulInteger", &[&xq, &wq, ZERO_POINT, &wz], vec![]);
            let to_f32 = vec![("to", Attr::Int(super::onnx_type(DType::F32) as i64))];
            let f = low.tmp("Cast", &[&mm], to_f32);
            let rows = low.tmp("Mul", &[&f, &row_scale], vec![]);
            low.node("Mul", &[&rows, &ws], &y, vec![]);
        }
        Flavor::CompressedWeights => {
            let axis = vec![("axis", Attr::Int(1))];
            let w = low.tmp("DequantizeLinear", &[&wq, &ws, &wz], axis);
            low.node("MatMul", &[&x, &w], &y, vec![]);
        }
    }
    if let Some(b) = lin.bias {
        low.node("Add", &[&y, &low.v(b)], &out, vec![]);
    }
    Ok(())
}

/// Names of the constants the run-time quantization reads.
const ZERO_POINT: &str = "int8.zero_point";
const LEVELS: &str = "int8.levels";
const SMALLEST: &str = "int8.smallest";
const LOW: &str = "int8.low";
const HIGH: &str = "int8.high";
const OFFSET: &str = "int8.offset";
const AXES: &str = "int8.last_axis";

/// Quantizes activation `x` per row (its last axis) to int8 held as uint8
/// with zero point 128: `q = clip(round(x / s), -127, 127) + 128` with
/// `s = max|row| / 127`. Returns `q` and `s` (`[..., 1]`).
fn quantize_rows_at_run_time(
    x: &str,
    low: &mut Lowering,
    inits: &mut Vec<TensorProto>,
) -> (String, String) {
    if !inits.iter().any(|t| t.name == ZERO_POINT) {
        let f = |v: f32| v.to_le_bytes().to_vec();
        inits.push(raw_initializer(ZERO_POINT, DType::U8, &[], vec![128]));
        inits.push(raw_initializer(LEVELS, DType::F32, &[], f(127.0)));
        inits.push(raw_initializer(
            SMALLEST,
            DType::F32,
            &[],
            f(f32::MIN_POSITIVE),
        ));
        inits.push(raw_initializer(LOW, DType::F32, &[], f(-127.0)));
        inits.push(raw_initializer(HIGH, DType::F32, &[], f(127.0)));
        inits.push(raw_initializer(OFFSET, DType::F32, &[], f(128.0)));
        let axes = (-1i64).to_le_bytes().to_vec();
        inits.push(raw_initializer(AXES, DType::I64, &[1], axes));
    }
    let abs = low.tmp("Abs", &[x], vec![]);
    let amax = low.tmp("ReduceMax", &[&abs, AXES], vec![("keepdims", Attr::Int(1))]);
    let s = low.tmp("Div", &[&amax, LEVELS], vec![]);
    let s = low.tmp("Max", &[&s, SMALLEST], vec![]);
    let scaled = low.tmp("Div", &[x, &s], vec![]);
    let rounded = low.tmp("Round", &[&scaled], vec![]);
    let clipped = low.tmp("Clip", &[&rounded, LOW, HIGH], vec![]);
    let shifted = low.tmp("Add", &[&clipped, OFFSET], vec![]);
    let q = low.tmp(
        "Cast",
        &[&shifted],
        vec![("to", Attr::Int(super::onnx_type(DType::U8) as i64))],
    );
    (q, s)
}

fn int8_initializer(name: &str, dims: &[i64], bytes: Vec<u8>) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.data_type = onnx_protobuf::tensor_proto::DataType::INT8 as i32;
    t.dims = dims.to_vec();
    t.raw_data = bytes;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_quantize_symmetrically_and_transpose() {
        // Two output rows of three inputs.
        let w = [1.0, -0.5, 0.25, 0.0, 0.0, 0.0];
        let q = quantize_rows(&w, 2, 3);
        assert_eq!(q.scales, vec![1.0 / 127.0, 1.0]);
        // [in, out]: input i of output o at i * 2 + o.
        let values: Vec<i8> = q.q.iter().map(|&b| b as i8).collect();
        assert_eq!(values, vec![127, 0, -64, 0, 32, 0]);
    }
}
