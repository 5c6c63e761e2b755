//! Hostile skills: each misbehaviour gives a typed error, the instance is
//! replaced, and the host then serves a normal request. Skill-declared
//! limits: a declaration lowers a limit below the operator's ceiling, one
//! above it gets the ceiling (and a warning), none gets the defaults.

mod common;

use std::sync::Arc;

use common::*;
use host::backend::{registry, Precision};
use host::runner::Runner;
use host::sandbox::limits::{DEFAULT_FUEL_PER_CALL, DEFAULT_MEMORY_BYTES};
use host::sandbox::{Sandbox, SandboxError, SandboxLimits, SkillContext};

fn hostile() -> Option<Runner> {
    if !available("cpu") {
        return None;
    }
    // Small budgets keep the test fast: ~0.1 s of guest CPU, 64 MiB memory.
    let limits = SandboxLimits {
        memory_bytes: 64 << 20,
        fuel_per_call: 3_000_000_000,
        ..SandboxLimits::default()
    };
    let sb = Arc::new(Sandbox::new(limits).expect("engine"));
    let devices = registry::parse_list("cpu").unwrap();
    let skill = skill("hostile");
    let model = fixture("tiny-bert");
    Some(
        Runner::open(
            sb,
            skill.to_str().unwrap(),
            model.to_str().unwrap(),
            &devices,
            Precision::F32,
        )
        .expect("load"),
    )
}

fn ask(r: &mut Runner, what: &str) -> Result<String, (String, String)> {
    let req = serde_json::json!({ "do": what }).to_string();
    let mut out = r.handle(&[req]);
    assert_eq!(out.len(), 1);
    out.remove(0)
        .map(|o| o.to_json_line().unwrap())
        .map_err(|e| (e.kind.to_string(), e.message))
}

fn assert_serves(r: &mut Runner) {
    let ok = ask(r, "ok").expect("the host must serve after a hostile request");
    assert_eq!(ok, r#"{"ok":true,"device":"cpu","precision":"f32"}"#);
}

#[test]
fn infinite_loop_is_stopped_by_the_cpu_budget() {
    let Some(mut r) = hostile() else { return };
    let (kind, msg) = ask(&mut r, "loop").unwrap_err();
    assert_eq!(kind, "resource-exhausted", "{msg}");
    assert!(msg.contains("CPU budget"), "{msg}");
    assert_serves(&mut r);
    assert_eq!(r.traps, 1);
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let Some(mut r) = hostile() else { return };
    let (kind, msg) = ask(&mut r, "memory").unwrap_err();
    assert_eq!(kind, "resource-exhausted", "{msg}");
    assert!(msg.contains("memory limit"), "{msg}");
    assert_serves(&mut r);
}

#[test]
fn huge_tensor_graph_is_refused_before_allocation() {
    let Some(mut r) = hostile() else { return };
    let (kind, msg) = ask(&mut r, "huge-graph").unwrap_err();
    assert_eq!(kind, "resource-exhausted", "{msg}");
    assert!(msg.contains("1000000000000 elements"), "{msg}");
    assert_serves(&mut r);
}

#[test]
fn undefined_node_is_a_graph_error() {
    let Some(mut r) = hostile() else { return };
    let (kind, msg) = ask(&mut r, "unknown-op").unwrap_err();
    assert_eq!(kind, "graph", "{msg}");
    assert!(msg.contains("unknown node id 4242"), "{msg}");
    assert_serves(&mut r);
}

#[test]
fn unknown_weight_is_a_graph_error() {
    let Some(mut r) = hostile() else { return };
    let (kind, msg) = ask(&mut r, "unknown-weight").unwrap_err();
    assert_eq!(kind, "graph", "{msg}");
    assert!(msg.contains("unknown weight `no.such.weight`"), "{msg}");
    assert_serves(&mut r);
}

#[test]
fn panicking_skill_traps_and_is_replaced() {
    let Some(mut r) = hostile() else { return };
    let (kind, msg) = ask(&mut r, "trap").unwrap_err();
    assert_eq!(kind, "internal", "{msg}");
    assert!(msg.contains("trapped"), "{msg}");
    assert_serves(&mut r);
}

#[test]
fn a_batch_mixing_good_and_bad_json_keeps_order() {
    let Some(mut r) = hostile() else { return };
    let batch = vec![
        r#"{"do":"ok"}"#.to_string(),
        "not json".to_string(),
        "[1]".to_string(),
        r#"{"do":"ok"}"#.to_string(),
    ];
    let out = r.handle(&batch);
    assert!(out[0].is_ok() && out[3].is_ok());
    assert_eq!(out[1].as_ref().unwrap_err().kind, "invalid-request");
    assert_eq!(out[2].as_ref().unwrap_err().kind, "invalid-request");
}

#[test]
fn second_load_uses_the_compiled_component_cache() {
    let dir = tempfile::tempdir().unwrap();
    let sb =
        Sandbox::with_cache_dir(SandboxLimits::default(), Some(dir.path().to_path_buf())).unwrap();
    let first = sb.load("hostile", &skill("hostile")).unwrap();
    assert!(!first.from_cache);
    let second = sb.load("hostile", &skill("hostile")).unwrap();
    assert!(
        second.from_cache,
        "the second load must deserialize the cached artifact"
    );
    let corrupt = std::fs::read_dir(dir.path().join("components"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&corrupt, b"not a compiled component").unwrap();
    let third = sb.load("hostile", &skill("hostile")).unwrap();
    assert!(
        !third.from_cache,
        "a corrupt cache entry is recompiled, not trusted"
    );
}

#[test]
fn a_file_that_is_not_a_component_is_a_load_error() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"\0asm garbage").unwrap();
    let sb = Sandbox::with_cache_dir(SandboxLimits::default(), None).unwrap();
    let e = sb.load("bogus", &bogus).err().expect("must fail");
    assert!(e.to_string().contains("not a valid component"), "{e}");
}

#[test]
fn submitted_runs_keep_state_order_and_misuse_is_an_error() {
    let Some(mut r) = hostile() else { return };
    let out = ask(&mut r, "pipeline").expect("pipeline");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Four may wait; the fifth submit is refused and leaves the rest intact.
    assert_eq!(
        v["submits"],
        serde_json::json!(["ok", "ok", "ok", "ok", "ResourceExhausted"]),
        "{out}"
    );
    assert_eq!(v["run_while_pending"], "InvalidRequest", "{out}");
    assert_eq!(
        v["values"],
        serde_json::json!([1.0, 2.0, 3.0, 4.0]),
        "{out}"
    );
    assert_eq!(v["empty_collect"], "InvalidRequest", "{out}");
    assert_serves(&mut r);
}

/// Hostile declares 32 MiB of memory (and no fuel).
const HOSTILE_MIB: usize = 32;

/// A hostile instance (no model: its memory bomb needs none) under the
/// ceiling `limits`; the bomb's error, and the instance's usage and grant.
fn bomb(limits: SandboxLimits) -> (SandboxError, host::sandbox::Usage, host::sandbox::Granted) {
    let sb = Sandbox::with_cache_dir(limits, None).expect("engine");
    let c = sb.load("hostile", &skill("hostile")).expect("load");
    let mut inst = sb
        .instantiate(&c, Arc::new(SkillContext::empty()))
        .expect("instantiate");
    let granted = inst.granted();
    assert_eq!(sb.granted(&c.digest), Some(granted));
    let e = inst
        .handle(&[r#"{"do":"memory"}"#.to_string()])
        .expect_err("the memory bomb must trap");
    (e, inst.usage(), granted)
}

#[test]
fn a_declared_memory_limit_below_the_ceiling_stops_the_memory_bomb() {
    // The ceiling (512 MiB) is far above what hostile declares.
    let (e, usage, granted) = bomb(SandboxLimits::default());
    assert_eq!(granted.memory_bytes.declared, Some(HOSTILE_MIB << 20));
    assert_eq!(granted.memory_bytes.granted, HOSTILE_MIB << 20);
    assert!(!granted.memory_bytes.capped);
    assert!(
        matches!(&e, SandboxError::Memory { limit_mib, .. } if *limit_mib == HOSTILE_MIB),
        "{e}"
    );
    assert_eq!(usage.memory_limit_bytes, HOSTILE_MIB << 20);
    // The bomb grows by 16 MiB: stopped at its own limit, not the ceiling.
    assert!(
        usage.peak_memory_bytes <= HOSTILE_MIB << 20 && usage.peak_memory_bytes > 4 << 20,
        "{usage:?}"
    );
    // No fuel declared: the default.
    assert_eq!(granted.fuel_per_call.declared, None);
    assert_eq!(granted.fuel_per_call.granted, DEFAULT_FUEL_PER_CALL);
}

#[test]
fn a_declaration_above_the_ceiling_is_granted_the_ceiling_and_reported() {
    let ceiling = SandboxLimits {
        memory_bytes: 16 << 20,
        ..SandboxLimits::default()
    };
    let (e, usage, granted) = bomb(ceiling);
    assert_eq!(granted.memory_bytes.declared, Some(HOSTILE_MIB << 20));
    assert_eq!(granted.memory_bytes.granted, 16 << 20);
    assert!(granted.memory_bytes.capped);
    let w = granted.warnings("hostile");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("declared 32 MiB of memory, above the ceiling of 16 MiB"),
        "{w:?}"
    );
    assert!(
        matches!(&e, SandboxError::Memory { limit_mib: 16, .. }),
        "{e}"
    );
    assert!(usage.peak_memory_bytes <= 16 << 20, "{usage:?}");
}

#[test]
fn an_undeclared_skill_gets_the_defaults_under_a_higher_ceiling() {
    let ceiling = SandboxLimits {
        memory_bytes: 1024 << 20,
        fuel_per_call: 4 * DEFAULT_FUEL_PER_CALL,
        ..SandboxLimits::default()
    };
    let sb = Sandbox::with_cache_dir(ceiling, None).expect("engine");
    for (name, memory) in [
        ("image-classification", DEFAULT_MEMORY_BYTES),
        ("text-embedding", 256 << 20),
    ] {
        let c = sb.load(name, &skill(name)).expect("load");
        let inst = sb
            .instantiate(&c, Arc::new(SkillContext::empty()))
            .expect("instantiate");
        let g = inst.granted();
        assert_eq!(g.memory_bytes.granted, memory, "{name}: {g:?}");
        assert_eq!(g.fuel_per_call.granted, DEFAULT_FUEL_PER_CALL, "{name}");
        assert!(!g.memory_bytes.capped && !g.fuel_per_call.capped, "{name}");
        assert_eq!(inst.usage().memory_limit_bytes, memory, "{name}");
        assert_eq!(inst.usage().fuel_limit_per_call, DEFAULT_FUEL_PER_CALL);
    }
}
