//! Growing a fixed-slot KV cache: a graph that appends empty slots to every
//! layer's keys and values (`k<i>`, `v<i>` [slots, batch, kv_heads,
//! head_dim]), run when sequences joining a running batch need more slots
//! than it has. The other state (`token`) is left as it is.

use skill_sdk::config::Json;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::{Dim, Dtype, Error, Graph};

use crate::arch::DecoderSpec;
use crate::decoder::{dims, sym};

/// The graph taking a cache of `from` slots to `to`.
pub fn build(spec: &DecoderSpec, c: &Json, from: u64, to: u64) -> Result<CompiledGraph, Error> {
    if to <= from {
        return Err(skill_sdk::internal("a cache only grows"));
    }
    let d = dims(spec, c)?;
    let g = Graph::new(&format!("{}-resize-c{from}-c{to}", spec.name).to_lowercase());
    let shape = |slots: u64| {
        [
            Dim::Fixed(slots),
            sym("batch"),
            Dim::Fixed(d.kv_heads),
            Dim::Fixed(d.head_dim),
        ]
    };
    // States first: the empty slots take their batch from them.
    let mut states = Vec::new();
    for i in 0..d.layers {
        for name in [format!("k{i}"), format!("v{i}")] {
            let old = g.b.state(&name, Dtype::F32, &shape(from))?;
            states.push((name, old));
        }
    }
    let zero = g.scalar(0.0, Dtype::F32)?;
    let empty = g.b.expand(zero, &shape(to - from))?;
    for (name, old) in states {
        g.b.update_state(&name, g.b.concat(&[old, empty], 0)?)?;
    }
    g.compile(&[])
}
