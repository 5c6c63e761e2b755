//! Every op of the graph IR on one backend, compared with the reference
//! interpreter (`host::ir::eval`), case by case (tests/op_cases.rs).
//!
//! The backend is `OPS_DEVICE` (default `cpu`; also `openvino`, `cuda:0`,
//! ...) at `OPS_PRECISION` (default `f32`); `OPS_FILTER` keeps only the
//! cases whose name contains it. A backend that cannot be opened is a
//! printed skip, unless `REQUIRE_BACKENDS` names it. Graph I/O stays f32 at
//! every precision: a reduced-precision backend casts internally.
//!
//! Tolerances: float outputs need a cosine similarity of at least 0.99999
//! (f32) or 0.999 (f16, bf16), and a bounded worst error: in f32 every
//! element within 1e-4 of the reference, relative to max(1, |reference|);
//! in f16 (bf16) the largest difference within 1e-2 (3e-2) of
//! max(1, largest |reference|). Integer and bool outputs must be exact,
//! except argmax/top-k indices, which may pick another position whose
//! reference value ties with the expected one within the same tolerance.
//!
//! Known deviations (`KNOWN_DEVIATIONS`): a case that one backend computes
//! otherwise by that backend's documented design, not by our lowering, is
//! named there with its device, precision and reason. It still runs; its
//! result must be exactly the documented deviation, and it is listed as
//! KNOWN with the reason instead of failing. A known case that passes, or
//! deviates in another way, fails the suite. Tolerances stay the same for
//! every case.

#[path = "backend_state.rs"]
mod backend_state;
mod common;
#[path = "op_cases.rs"]
mod op_cases;

use std::sync::Arc;
use std::time::Instant;

use host::backend::{check_inputs, registry, Backend, Device, NamedTensors, Precision};
use host::ir::eval::evaluate;
use host::ir::{DType, Graph, NodeId, Op};
use host::model::Model;
use host::tensor::Tensor;
use op_cases::OpCase;

#[derive(Clone, Copy)]
struct Tolerance {
    max_err: f64,
    min_cos: f64,
    /// Whether the error is relative per element (f32) or to the output's
    /// largest reference magnitude (reduced precision).
    per_element: bool,
    /// Relative difference under which two values tie for argmax/top-k.
    tie: f64,
}

fn tolerance(p: Precision) -> Tolerance {
    match p {
        Precision::F32 => Tolerance {
            max_err: 1e-4,
            min_cos: 0.99999,
            per_element: true,
            tie: 1e-5,
        },
        Precision::F16 => Tolerance {
            max_err: 1e-2,
            min_cos: 0.999,
            per_element: false,
            tie: 1e-2,
        },
        // Int8 quantizes linear weights (activations stay f32): judged as
        // reduced precision, with bf16's bounds.
        Precision::BF16 | Precision::Int8 => Tolerance {
            max_err: 3e-2,
            min_cos: 0.999,
            per_element: false,
            tie: 3e-2,
        },
    }
}

/// A case that one backend computes otherwise than the reference by design.
struct KnownDeviation {
    /// `Backend::device()` and the precision it applies to.
    device: &'static str,
    precision: Precision,
    case: &'static str,
    reason: &'static str,
    /// What the backend computes instead: output `.0` equals input `.1`,
    /// bit for bit.
    identity: (&'static str, &'static str),
}

const KNOWN_DEVIATIONS: &[KnownDeviation] = &[KnownDeviation {
    device: "openvino",
    precision: Precision::F32,
    case: "cast/f32-f16",
    reason: "OpenVINO's CPU plugin treats f16 as a storage type at f32 inference precision: \
             its ConvertPrecision pass turns graph-internal f16 into f32 (also with \
             EXECUTION_MODE_HINT=ACCURACY; only the hint `dynamic` on AVX512-FP16 CPUs keeps it), \
             so the f32->f16->f32 round trip is a no-op Convert pair it removes. \
             A graph output declared f16 is still rounded.",
    identity: ("y", "x"),
}];

/// Every IR op (every `Op` variant, and each op of the unary, binary,
/// compare and reduce families of the op table) has an op case that runs
/// as a plain case: `op_cases::cases()` all run on every backend (cpu and
/// openvino in CI, cuda on the GPU machine), and the one list of
/// exceptions is `KNOWN_DEVIATIONS`, whose cases do not count. Needs no
/// backend.
#[test]
fn every_ir_op_has_an_op_case() {
    let cases = op_cases::cases();
    for k in KNOWN_DEVIATIONS {
        assert!(
            cases.iter().any(|c| c.name == k.case),
            "KNOWN_DEVIATIONS names `{}`, which is not an op case",
            k.case
        );
    }
    let plain: Vec<&OpCase> = cases
        .iter()
        .filter(|c| !KNOWN_DEVIATIONS.iter().any(|k| k.case == c.name))
        .collect();
    let missing = op_cases::coverage::uncovered(&plain);
    assert!(
        missing.is_empty(),
        "IR ops without an op case (add one under tests/op_cases/): {}",
        missing.join(", ")
    );
}

/// The known deviation of `case` on this backend, if any.
fn known_deviation(
    device: &str,
    precision: Precision,
    case: &str,
) -> Option<&'static KnownDeviation> {
    KNOWN_DEVIATIONS
        .iter()
        .find(|k| k.device == device && k.precision == precision && k.case == case)
}

/// Whether the backend's outputs are exactly the known deviation.
fn is_known_deviation(k: &KnownDeviation, case: &OpCase, got: &NamedTensors) -> Result<(), String> {
    let (output, input) = k.identity;
    let find = |list: &NamedTensors, name: &str| {
        list.iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| format!("no tensor `{name}`"))
    };
    if find(got, output)? == find(&case.inputs, input)? {
        Ok(())
    } else {
        Err(format!(
            "not the known deviation: output `{output}` is not input `{input}` unchanged"
        ))
    }
}

/// Worst figures of one case over its float outputs, and what failed.
struct Outcome {
    max_abs: f64,
    max_err: f64,
    min_cos: f64,
    problems: Vec<String>,
}

/// The backend under test (`OPS_DEVICE` at `OPS_PRECISION`) with its
/// device name, or `None` (a printed skip) when it cannot open and is not
/// required.
fn backend_under_test() -> Option<(String, Precision, Arc<dyn Backend>)> {
    let device_name = std::env::var("OPS_DEVICE").unwrap_or_else(|_| "cpu".into());
    let precision: Precision = std::env::var("OPS_PRECISION")
        .unwrap_or_else(|_| "f32".into())
        .parse()
        .unwrap_or_else(|e| panic!("OPS_PRECISION: {e}"));
    let device: Device = device_name
        .parse()
        .unwrap_or_else(|e| panic!("OPS_DEVICE: {e}"));
    let family = device_name.split(':').next().unwrap_or("").to_string();
    match registry::open(&device, precision) {
        Ok(b) => Some((device_name, precision, b)),
        Err(e) if common::required(&family) => {
            panic!("backend `{family}` is required (REQUIRE_BACKENDS) but cannot open: {e}")
        }
        Err(e) => {
            eprintln!("SKIP: backend tests on {device_name} {precision}: {e}");
            None
        }
    }
}

#[test]
fn every_op_matches_the_reference() {
    let Some((device_name, precision, backend)) = backend_under_test() else {
        return;
    };
    let filter = std::env::var("OPS_FILTER").unwrap_or_default();
    let tol = tolerance(precision);
    let started = Instant::now();
    let cases: Vec<OpCase> = op_cases::cases()
        .into_iter()
        .filter(|c| c.name.contains(&filter))
        .collect();
    let device = backend.device();
    let (mut failed, mut known) = (Vec::new(), Vec::new());
    for case in &cases {
        let t = Instant::now();
        let result = run_case(backend.as_ref(), case, tol);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let deviation = known_deviation(&device, precision, &case.name);
        // (status, problem that fails the suite)
        let (status, problem) = match (&result, deviation) {
            (Err(e), _) => ("FAIL", Some(e.clone())),
            (Ok((o, _)), None) if o.problems.is_empty() => ("ok", None),
            (Ok((o, _)), None) => ("FAIL", Some(o.problems.join("; "))),
            (Ok((o, _)), Some(_)) if o.problems.is_empty() => (
                "FAIL",
                Some(format!(
                    "a known deviation on {device} {precision} no longer occurs: \
                     remove it from KNOWN_DEVIATIONS (tests/backend_ops.rs)"
                )),
            ),
            (Ok((o, got)), Some(k)) => match is_known_deviation(k, case, got) {
                Ok(()) => ("KNOWN", None),
                Err(e) => ("FAIL", Some(format!("{}; {e}", o.problems.join("; ")))),
            },
        };
        let line = match &result {
            Ok((o, _)) => format!(
                "{status:<5} {:<44} max-abs {:9.2e}  err {:9.2e}  cos {:.9}  {ms:6.1} ms{}",
                case.name,
                o.max_abs,
                o.max_err,
                o.min_cos,
                o.problems
                    .first()
                    .map(|p| format!("  ({p})"))
                    .unwrap_or_default()
            ),
            Err(e) => format!("{status:<5} {:<44} {e}", case.name),
        };
        println!("{line}");
        if let Some(p) = problem {
            failed.push(format!("{}: {p}", case.name));
        } else if let (Some(k), "KNOWN") = (deviation, status) {
            println!(
                "      known deviation on {device} {precision}: {}",
                k.reason
            );
            known.push(case.name.clone());
        }
    }
    println!(
        "{} of {} op cases passed on {device} {precision} in {:.1} s{}",
        cases.len() - failed.len() - known.len(),
        cases.len(),
        started.elapsed().as_secs_f64(),
        if known.is_empty() {
            String::new()
        } else {
            format!(
                "; {} known deviation(s), see KNOWN_DEVIATIONS: {}",
                known.len(),
                known.join(", ")
            )
        }
    );
    assert!(
        failed.is_empty(),
        "{} op cases failed on {device_name} {precision}:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// A model directory holding the case's weights.
fn model_for(case: &OpCase) -> Result<(tempfile::TempDir, Model), String> {
    model_with(&case.weights)
}

/// A model directory holding `weights` (and an empty config).
fn model_with(weights: &[(String, Tensor)]) -> Result<(tempfile::TempDir, Model), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    std::fs::write(dir.path().join("config.json"), "{}").map_err(|e| e.to_string())?;
    let views = weights
        .iter()
        .map(|(name, t)| {
            let shape = t.shape.iter().map(|&d| d as usize).collect();
            safetensors::tensor::TensorView::new(st_dtype(t.dtype), shape, &t.data)
                .map(|v| (name.clone(), v))
                .map_err(|e| format!("weight `{name}`: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = safetensors::serialize(views, None).map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("model.safetensors"), bytes).map_err(|e| e.to_string())?;
    let path = dir.path().to_str().ok_or("temp dir is not UTF-8")?;
    let model = Model::open(path).map_err(|e| format!("model: {e}"))?;
    Ok((dir, model))
}

fn st_dtype(d: DType) -> safetensors::Dtype {
    match d {
        DType::F32 => safetensors::Dtype::F32,
        DType::F16 => safetensors::Dtype::F16,
        DType::BF16 => safetensors::Dtype::BF16,
        DType::I64 => safetensors::Dtype::I64,
        DType::I32 => safetensors::Dtype::I32,
        DType::U8 => safetensors::Dtype::U8,
        DType::Bool => safetensors::Dtype::BOOL,
    }
}

/// The graph with the operand of every argmax/top-k-indices output added as
/// an extra output (for tie checks), and the extra output's index per
/// original output.
fn with_index_sources(g: &Graph) -> (Graph, Vec<Option<usize>>) {
    let mut aug = g.clone();
    let mut sources = Vec::new();
    for (i, (_, id)) in g.outputs.iter().enumerate() {
        sources.push(match g.node(*id).op {
            Op::ArgMax { x, .. } | Op::TopKIndices { x, .. } => {
                aug.outputs.push((format!("__index_source_{i}"), x));
                Some(aug.outputs.len() - 1)
            }
            _ => None,
        });
    }
    (aug, sources)
}

/// The case's comparison with the reference, and the backend's outputs.
fn run_case(
    backend: &dyn Backend,
    case: &OpCase,
    tol: Tolerance,
) -> Result<(Outcome, NamedTensors), String> {
    let (_dir, model) = model_for(case)?;
    let graph = Arc::new(case.graph.clone());
    let exe = backend
        .compile(graph.clone(), &model)
        .map_err(|e| format!("compile: {e}"))?;
    let (ordered, _) = check_inputs(&graph, case.inputs.clone()).map_err(|e| e.to_string())?;
    let got = exe.run(ordered).map_err(|e| format!("run: {e}"))?;
    let (aug, sources) = with_index_sources(&graph);
    let weight = |name: &str| {
        case.weights
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
    };
    let reference = evaluate(&aug, &case.inputs, &weight).map_err(|e| format!("reference: {e}"))?;
    let mut o = Outcome {
        max_abs: 0.0,
        max_err: 0.0,
        min_cos: 1.0,
        problems: Vec::new(),
    };
    for (i, (name, id)) in graph.outputs.iter().enumerate() {
        let want = &reference[i].1;
        let Some((_, have)) = got.iter().find(|(n, _)| n == name) else {
            o.problems.push(format!("output `{name}` is missing"));
            continue;
        };
        if have.dtype != want.dtype || have.shape != want.shape {
            o.problems.push(format!(
                "output `{name}`: expected {} {:?}, got {} {:?}",
                want.dtype, want.shape, have.dtype, have.shape
            ));
            continue;
        }
        let problem = if want.dtype.is_float() {
            compare_floats(want, have, tol, &mut o)
        } else {
            let source = sources[i].map(|s| &reference[s].1);
            compare_ints(&graph, *id, want, have, source, tol)
        };
        if let Some(p) = problem {
            o.problems.push(format!("output `{name}`: {p}"));
        }
    }
    Ok((o, got))
}

fn compare_floats(want: &Tensor, have: &Tensor, tol: Tolerance, o: &mut Outcome) -> Option<String> {
    let (w, h) = match (want.to_f32("reference"), have.to_f32("backend")) {
        (Ok(w), Ok(h)) => (w, h),
        (Err(e), _) | (_, Err(e)) => return Some(e.to_string()),
    };
    if let Some(i) = h.iter().position(|x| !x.is_finite()) {
        return Some(format!("element {i} is {} (reference {})", h[i], w[i]));
    }
    let scale = w.iter().fold(1f64, |m, &x| m.max((x as f64).abs()));
    let (mut dot, mut nw, mut nh, mut max_abs, mut max_err, mut worst) =
        (0f64, 0f64, 0f64, 0f64, 0f64, 0);
    for (i, (&a, &b)) in w.iter().zip(&h).enumerate() {
        let (a, b) = (a as f64, b as f64);
        dot += a * b;
        nw += a * a;
        nh += b * b;
        let d = (a - b).abs();
        max_abs = max_abs.max(d);
        let err = if tol.per_element {
            d / a.abs().max(1.0)
        } else {
            d / scale
        };
        if err > max_err {
            (max_err, worst) = (err, i);
        }
    }
    let cos = if nw == 0.0 && nh == 0.0 {
        1.0
    } else {
        dot / (nw.sqrt() * nh.sqrt()).max(1e-300)
    };
    o.max_abs = o.max_abs.max(max_abs);
    o.max_err = o.max_err.max(max_err);
    o.min_cos = o.min_cos.min(cos);
    (max_err > tol.max_err || cos < tol.min_cos).then(|| {
        format!(
            "cosine {cos:.9} (min {}), error {max_err:.3e} (max {:.0e}) at element {worst}: expected {}, got {}",
            tol.min_cos, tol.max_err, w[worst], h[worst]
        )
    })
}

/// Exact comparison, except that argmax/top-k indices may differ where the
/// values they point at tie within the tolerance.
fn compare_ints(
    g: &Graph,
    id: NodeId,
    want: &Tensor,
    have: &Tensor,
    source: Option<&Tensor>,
    tol: Tolerance,
) -> Option<String> {
    let (w, h) = match (want.to_i64("reference"), have.to_i64("backend")) {
        (Ok(w), Ok(h)) => (w, h),
        (Err(e), _) | (_, Err(e)) => return Some(e.to_string()),
    };
    // (n, inner, slots per lane) of the indexed axis.
    let lanes = match (&g.node(id).op, source) {
        (Op::ArgMax { axis, .. }, Some(s)) => {
            let n = s.shape.get(*axis).copied().unwrap_or(1) as usize;
            let inner: u64 = s.shape[axis + 1..].iter().product();
            Some((n, inner as usize, 1))
        }
        (Op::TopKIndices { k, .. }, Some(s)) => Some((
            s.shape.last().copied().unwrap_or(1) as usize,
            1,
            *k as usize,
        )),
        _ => None,
    };
    let values = source.and_then(|s| s.to_f32("source").ok());
    let mut mismatches = 0usize;
    let mut first = None;
    for (i, (&a, &b)) in w.iter().zip(&h).enumerate() {
        if a == b {
            continue;
        }
        let tie = match (lanes, &values) {
            (Some((n, inner, slots)), Some(v)) if b >= 0 && (b as usize) < n => {
                let lane = i / slots;
                let (outer, j) = (lane / inner, lane % inner);
                let at = |idx: i64| v[(outer * n + idx as usize) * inner + j] as f64;
                let (va, vb) = (at(a), at(b));
                (va - vb).abs() <= tol.tie * va.abs().max(1.0)
            }
            _ => false,
        };
        if !tie {
            mismatches += 1;
            first.get_or_insert((i, a, b));
        }
    }
    first.map(|(i, a, b)| {
        format!(
            "{mismatches} of {} elements differ; first at {i}: expected {a}, got {b}",
            w.len()
        )
    })
}
