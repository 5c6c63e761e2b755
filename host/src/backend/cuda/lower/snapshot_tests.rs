//! Plan snapshots: representative graphs (an encoder layer, decode steps
//! with KV caches written in place or prepended, prefill attention, conv,
//! reductions and the small element-wise families) lowered at several
//! shapes and precisions, every step written out (kernel name, launch
//! shape, argument list; GEMMs; arena, uploads, downloads) and compared
//! with `testdata/plans.snap`. Refactors of the planner must leave it
//! unchanged; `UPDATE_SNAPSHOTS=1` rewrites it after an intended change.

use std::collections::HashMap;
use std::fmt::Write;

use super::snapshot_graphs::*;
use super::Planner;
use crate::backend::cuda::plan::*;
use crate::backend::Precision;
use crate::ir::shape::Bindings;
use crate::ir::{Graph, NodeId, Op};

/// A buffer reference as text (`a3+256`: arena buffer 3, byte 256).
fn fmt_ref(r: &Ref) -> String {
    let b = match r.buf {
        Buf::Arena(i) => format!("a{i}"),
        Buf::Persistent(i) => format!("p{i}"),
        Buf::External(i) => format!("e{i}"),
    };
    format!("{b}+{}", r.offset)
}

fn fmt_idx(p: &IdxParam) -> String {
    let r = (p.rank.clamp(0, 8)) as usize;
    let tail_default = p.shape[r..].iter().all(|&s| s == 1)
        && [&p.s0, &p.s1, &p.s2]
            .iter()
            .all(|s| s[r..].iter().all(|&x| x == 0));
    format!(
        "idx(r{} n{} {:?} {:?} {:?} {:?}{})",
        p.rank,
        p.n,
        &p.shape[..r],
        &p.s0[..r],
        &p.s1[..r],
        &p.s2[..r],
        if tail_default { "" } else { " !tail" }
    )
}

fn fmt_arg(a: &Arg) -> String {
    match a {
        Arg::Ptr(r) => fmt_ref(r),
        Arg::Null => "null".into(),
        Arg::I32(v) => format!("i32 {v}"),
        Arg::I64(v) => format!("i64 {v}"),
        Arg::F32(v) => format!("f32 {v:?}"),
        Arg::Idx(p) => fmt_idx(p),
        Arg::Attn(p) => format!("{p:?}"),
    }
}

/// Everything a run does with a plan, as text.
fn describe_plan(plan: &Plan) -> String {
    let mut s = String::new();
    for (i, step) in plan.steps.iter().enumerate() {
        match step {
            Step::Kernel {
                launch,
                grid,
                block,
                shared,
            } => {
                let (name, args) = launch.kernel();
                let args: Vec<String> = args.iter().map(fmt_arg).collect();
                let _ = writeln!(
                    s,
                    "  {i}: {name} <{grid}, {block}, {shared}> ({})",
                    args.join(", ")
                );
            }
            Step::Gemm(g) => {
                let _ = writeln!(
                    s,
                    "  {i}: gemm {:?} t{}{} {}x{}x{} a {} {} {} b {} {} {} c {} {} {} batch {}",
                    g.dtype,
                    g.trans_a as u8,
                    g.trans_b as u8,
                    g.m,
                    g.n,
                    g.k,
                    fmt_ref(&g.a),
                    g.lda,
                    g.stride_a,
                    fmt_ref(&g.b),
                    g.ldb,
                    g.stride_b,
                    fmt_ref(&g.c),
                    g.ldc,
                    g.stride_c,
                    g.batch
                );
            }
        }
    }
    for u in &plan.uploads {
        let _ = writeln!(
            s,
            "  upload {} -> {} {:?}",
            u.input,
            fmt_ref(&u.at),
            u.dtype
        );
    }
    for d in &plan.downloads {
        let _ = writeln!(
            s,
            "  download {} <- {} {:?} {:?}/{:?} in_place {:?}",
            d.name,
            fmt_ref(&d.at),
            d.shape,
            d.device_dtype,
            d.dtype,
            d.in_place
        );
    }
    let _ = writeln!(
        s,
        "  arena {} offsets {:?} flag {} externals {:?}",
        plan.arena_bytes,
        plan.offsets,
        fmt_ref(&plan.error_flag),
        plan.externals
    );
    s
}

/// Weight and constant nodes as persistent buffers, in node order.
fn persistent_of(g: &Graph) -> HashMap<NodeId, usize> {
    (g.nodes.iter().enumerate())
        .filter(|(_, n)| matches!(n.op, Op::Weight { .. } | Op::Constant(_)))
        .enumerate()
        .map(|(k, (id, _))| (id as NodeId, k))
        .collect()
}

/// Input positions of the graph's states.
fn states_of(g: &Graph) -> Vec<usize> {
    (g.inputs.iter().enumerate())
        .filter(|(_, &id)| matches!(g.node(id).op, Op::State { .. }))
        .map(|(i, _)| i)
        .collect()
}

fn bind(list: &[(&str, u64)]) -> Bindings {
    list.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Every snapshot case: a title and its plan's description.
fn cases() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |title: String, g: &Graph, p: Precision, b: Bindings, resident: bool| {
        let persistent = persistent_of(g);
        let states = if resident { states_of(g) } else { Vec::new() };
        let plan = Planner::plan_resident(g, p, &b, &persistent, &states).unwrap();
        out.push((title, describe_plan(&plan)));
    };
    let precisions = [Precision::F32, Precision::F16, Precision::BF16];
    let enc = encoder_layer();
    for p in precisions {
        for (batch, seq) in [(2, 12), (1, 3), (2, 4)] {
            let b = bind(&[("batch", batch), ("seq", seq)]);
            add(
                format!("encoder {p:?} batch {batch} seq {seq}"),
                &enc,
                p,
                b,
                false,
            );
        }
    }
    let dec = decode_step();
    for p in precisions {
        for batch in [1, 2, 8, 16, 32] {
            for resident in [true, false] {
                let b = bind(&[("batch", batch)]);
                let title = format!("decode {p:?} batch {batch} resident {resident}");
                add(title, &dec, p, b, resident);
            }
        }
    }
    for rope in [false, true] {
        for p in [Precision::F32, Precision::F16] {
            let title = format!("prepend rope {rope} {p:?}");
            add(title, &prepend_step(rope), p, Bindings::new(), false);
        }
    }
    let pre = prefill_attention();
    for p in precisions {
        for seq in [1, 20, 130] {
            let title = format!("prefill {p:?} seq {seq}");
            add(title, &pre, p, bind(&[("seq", seq)]), false);
        }
    }
    let conv = convs();
    for p in [Precision::F32, Precision::F16] {
        add(format!("conv {p:?}"), &conv, p, bind(&[("len", 11)]), false);
    }
    let misc = reductions_and_elementwise();
    for p in [Precision::F32, Precision::BF16] {
        add(format!("misc {p:?}"), &misc, p, bind(&[("rows", 3)]), false);
    }
    let left = leftovers();
    for p in [Precision::F32, Precision::F16] {
        add(format!("leftovers {p:?}"), &left, p, Bindings::new(), false);
    }
    out
}

/// The committed snapshot's path.
fn snapshot_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backend/cuda/testdata/plans.snap")
}

/// Plans of the representative graphs match the committed snapshot step
/// for step (kernel, launch shape, arguments, GEMMs, buffers).
#[test]
fn plans_match_the_snapshot() {
    let mut text = String::new();
    let mut steps = 0usize;
    for (title, plan) in cases() {
        steps += plan
            .lines()
            .filter(|l| l.trim_start().starts_with(char::is_numeric))
            .count();
        let _ = writeln!(text, "== {title}\n{plan}");
    }
    let path = snapshot_path();
    if std::env::var("UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::write(&path, &text).expect("write the snapshot");
        eprintln!("wrote {} ({steps} steps)", path.display());
        return;
    }
    let want = std::fs::read_to_string(&path).expect("the committed snapshot");
    if want != text {
        let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), text.lines().collect());
        let first = (0..w.len().max(g.len()))
            .find(|&i| w.get(i) != g.get(i))
            .unwrap_or(0);
        panic!(
            "plans differ from {} at line {}:\n want: {}\n  got: {}",
            path.display(),
            first + 1,
            w.get(first).unwrap_or(&"<end>"),
            g.get(first).unwrap_or(&"<end>")
        );
    }
}
