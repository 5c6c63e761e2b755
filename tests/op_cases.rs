//! Op-level test cases covering every op of the graph IR, for any backend.
//!
//! [`cases`] returns small f32 graphs built with [`GraphBuilder`], each with
//! seeded random inputs (a xorshift generator seeded from the case name, so
//! a case's data does not depend on the others) and random model weights.
//! Graph inputs and outputs are f32 (or integer/bool); a backend running at
//! reduced precision casts internally. Values that feed integer results
//! (casts to integers, comparisons) sit on grids that f16 and bf16 hold
//! exactly, so integer outputs can be compared exactly at every precision.
//!
//! Included as a module by `tests/backend_ops.rs` (and by any other test
//! that wants the cases): `#[path = "op_cases.rs"] mod op_cases;`.
#![allow(dead_code)]

#[path = "op_cases/attention.rs"]
mod attention;
#[path = "op_cases/composite.rs"]
mod composite;
#[path = "op_cases/coverage.rs"]
pub mod coverage;
#[path = "op_cases/elementwise.rs"]
mod elementwise;
#[path = "op_cases/fused.rs"]
mod fused;
#[path = "op_cases/layout.rs"]
mod layout;
#[path = "op_cases/nn.rs"]
mod nn;

use std::collections::HashMap;
use std::sync::Arc;

use host::backend::NamedTensors;
use host::ir::builder::BuilderLimits;
use host::ir::{DType, Dim, Graph, GraphBuilder, GraphError, NodeId};
use host::tensor::Tensor;

/// One op-level test: a finished graph, its run-time inputs and the model
/// weights it reads.
pub struct OpCase {
    pub name: String,
    pub graph: Graph,
    pub inputs: NamedTensors,
    pub weights: Vec<(String, Tensor)>,
}

/// Every case, in a stable order with unique names.
pub fn cases() -> Vec<OpCase> {
    let built = elementwise::cases()
        .into_iter()
        .chain(nn::cases())
        .chain(layout::cases())
        .chain(composite::cases())
        .chain(fused::cases());
    let all: Vec<OpCase> = built
        .map(|c| c.unwrap_or_else(|e| panic!("an op case does not build: {e}")))
        .collect();
    let mut names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        panic!("op case name `{}` is used twice", w[0]);
    }
    all
}

/// What a case constructor returns.
pub type Built = Result<OpCase, GraphError>;

/// A xorshift64 generator: deterministic, no dependencies.
pub struct Rng(u64);

impl Rng {
    /// Seeded from a name (FNV-1a), so each case has its own stream.
    pub fn from_name(name: &str) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit() as f32
    }

    pub fn floats(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    /// Magnitudes uniform in [lo, hi] with random signs.
    pub fn away_from_zero(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let m = self.uniform(lo, hi);
                if self.next_u64() & 1 == 0 {
                    m
                } else {
                    -m
                }
            })
            .collect()
    }

    /// Integers uniform in [lo, hi].
    pub fn ints(&mut self, n: usize, lo: i64, hi: i64) -> Vec<i64> {
        let span = (hi - lo + 1).max(1) as u64;
        (0..n)
            .map(|_| lo + (self.next_u64() % span) as i64)
            .collect()
    }

    /// Multiples of `step` in [lo, hi] as floats (exact in f16 and bf16 for
    /// small grids).
    pub fn grid(&mut self, n: usize, lo: f32, hi: f32, step: f32) -> Vec<f32> {
        let (a, b) = ((lo / step).ceil() as i64, (hi / step).floor() as i64);
        self.ints(n, a, b)
            .into_iter()
            .map(|i| i as f32 * step)
            .collect()
    }
}

pub fn count(shape: &[u64]) -> usize {
    shape.iter().product::<u64>() as usize
}

pub fn fixed(shape: &[u64]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::Fixed(d)).collect()
}

pub fn sym(name: &str) -> Dim {
    Dim::Sym(name.to_string())
}

pub fn tensor_i32(shape: Vec<u64>, v: &[i64]) -> Tensor {
    Tensor {
        dtype: DType::I32,
        shape,
        data: v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
    }
}

pub fn tensor_u8(shape: Vec<u64>, v: &[i64]) -> Tensor {
    Tensor {
        dtype: DType::U8,
        shape,
        data: v.iter().map(|&x| x as u8).collect(),
    }
}

pub fn tensor_bool(shape: Vec<u64>, v: &[i64]) -> Tensor {
    Tensor {
        dtype: DType::Bool,
        shape,
        data: v.iter().map(|&x| (x != 0) as u8).collect(),
    }
}

/// Integer data as a tensor of `dtype` (i64, i32, u8 or bool).
pub fn int_tensor(dtype: DType, shape: Vec<u64>, v: &[i64]) -> Tensor {
    match dtype {
        DType::I32 => tensor_i32(shape, v),
        DType::U8 => tensor_u8(shape, v),
        DType::Bool => tensor_bool(shape, v),
        _ => Tensor::from_i64(shape, v),
    }
}

/// A weight to create: name, shape and the uniform range of its values.
pub struct WeightSpec<'a>(pub &'a str, pub &'a [u64], pub f32, pub f32);

/// Records one case: the graph builder plus the tensors that go with it.
pub struct Case {
    pub name: String,
    pub b: GraphBuilder,
    pub rng: Rng,
    inputs: NamedTensors,
    weights: Vec<(String, Tensor)>,
}

impl Case {
    pub fn new(name: &str) -> Case {
        Case::with_weights(name, &[])
    }

    /// A case whose model holds random f32 weights as `specs` describe.
    pub fn with_weights(name: &str, specs: &[WeightSpec]) -> Case {
        let mut rng = Rng::from_name(name);
        let weights: Vec<(String, Tensor)> = specs
            .iter()
            .map(|WeightSpec(n, shape, lo, hi)| {
                let v = rng.floats(count(shape), *lo, *hi);
                (n.to_string(), Tensor::from_f32(shape.to_vec(), &v))
            })
            .collect();
        let types: HashMap<String, (DType, Vec<u64>)> = weights
            .iter()
            .map(|(n, t)| (n.clone(), (t.dtype, t.shape.clone())))
            .collect();
        Case {
            name: name.to_string(),
            b: GraphBuilder::new(name, Arc::new(types), BuilderLimits::default()),
            rng,
            inputs: Vec::new(),
            weights,
        }
    }

    /// An input declared with `dims` and fed `t`.
    pub fn input(&mut self, name: &str, dims: Vec<Dim>, t: Tensor) -> Result<NodeId, GraphError> {
        let id = self.b.input(name, t.dtype, dims)?;
        self.inputs.push((name.to_string(), t));
        Ok(id)
    }

    /// A fixed-shape f32 input, uniform in [lo, hi).
    pub fn uniform(
        &mut self,
        name: &str,
        shape: &[u64],
        lo: f32,
        hi: f32,
    ) -> Result<NodeId, GraphError> {
        let v = self.rng.floats(count(shape), lo, hi);
        self.input(name, fixed(shape), Tensor::from_f32(shape.to_vec(), &v))
    }

    /// A fixed-shape f32 input from given values.
    pub fn values(&mut self, name: &str, shape: &[u64], v: &[f32]) -> Result<NodeId, GraphError> {
        self.input(name, fixed(shape), Tensor::from_f32(shape.to_vec(), v))
    }

    /// A fixed-shape integer or bool input, uniform in [lo, hi].
    pub fn ints(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[u64],
        lo: i64,
        hi: i64,
    ) -> Result<NodeId, GraphError> {
        let v = self.rng.ints(count(shape), lo, hi);
        self.input(name, fixed(shape), int_tensor(dtype, shape.to_vec(), &v))
    }

    /// A session state fed `t` (run-time name `state.<name>`).
    pub fn state(&mut self, name: &str, dims: Vec<Dim>, t: Tensor) -> Result<NodeId, GraphError> {
        let id = self.b.state(name, t.dtype, dims)?;
        self.inputs.push((host::ir::state_input_name(name), t));
        Ok(id)
    }

    pub fn weight(&mut self, name: &str) -> Result<NodeId, GraphError> {
        self.b.weight(name)
    }

    pub fn output(&mut self, name: &str, id: NodeId) -> Result<(), GraphError> {
        self.b.output(name, id)
    }

    pub fn finish(self) -> Built {
        Ok(OpCase {
            name: self.name,
            graph: self.b.finish()?,
            inputs: self.inputs,
            weights: self.weights,
        })
    }
}
