//! Test-only skill that misbehaves on purpose, to exercise the sandbox.
//!
//! Each request `{"do": "..."}` picks a behaviour: `loop` (never returns),
//! `memory` (allocates without bound), `huge-graph` (asks for a 10^12-element
//! tensor), `unknown-op` (sends an operation outside the host's op set),
//! `unknown-weight` (names a weight the model lacks), `trap` (panics),
//! `spin` (busy-waits `ms` milliseconds, at most 1000: a slow request for
//! queueing tests), `ok` (answers `{"ok": true}`, echoing `id` when given).
//! `load` succeeds on any model.

use skill_sdk::graph::Builder;
use skill_sdk::{Dim, Dtype, Error, Guest, Response, SkillInfo};

struct Hostile;

impl Guest for Hostile {
    fn describe() -> SkillInfo {
        SkillInfo {
            name: "hostile".into(),
            task: "test-sandbox".into(),
            architectures: vec![],
            request_schema: r#"{"type":"object","properties":{"do":{"type":"string"}}}"#.into(),
            response_schema: r#"{"type":"object"}"#.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn load() -> Result<(), Error> {
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        batch.iter().map(|r| act(r)).collect()
    }
}

fn act(req: &str) -> Result<Response, Error> {
    let v: serde_json::Value =
        serde_json::from_str(req).map_err(|e| Error::InvalidRequest(e.to_string()))?;
    let what = v
        .get("do")
        .and_then(|d| d.as_str())
        .unwrap_or("ok")
        .to_string();
    match what.as_str() {
        "loop" => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 16 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "huge-graph" => {
            let b = Builder::new("huge");
            let x = b.input("x", Dtype::F32, &[Dim::Fixed(1)])?;
            let big = b.expand(x, &[Dim::Fixed(1_000_000), Dim::Fixed(1_000_000)])?;
            b.output("y", big)?;
            skill_sdk::runtime::compile(b)?;
            Err(Error::Internal(
                "the host accepted a 10^12-element graph".into(),
            ))
        }
        "unknown-op" => {
            // The op set is closed (a WIT enum); the nearest a guest gets to an
            // unknown op is a node id the builder never made.
            let b = Builder::new("unknown-op");
            let y = b.unary(skill_sdk::graph::UnaryOp::Exp, 4242)?;
            b.output("y", y)?;
            skill_sdk::runtime::compile(b)?;
            Err(Error::Internal(
                "the host accepted an undefined node".into(),
            ))
        }
        "unknown-weight" => {
            let b = Builder::new("unknown-weight");
            let w = b.weight("no.such.weight")?;
            b.output("y", w)?;
            skill_sdk::runtime::compile(b)?;
            Err(Error::Internal(
                "the host accepted an unknown weight".into(),
            ))
        }
        "trap" => panic!("hostile skill panics on purpose"),
        "spin" => {
            let ms = v.get("ms").and_then(|m| m.as_u64()).unwrap_or(10).min(1000);
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_millis(ms) {
                std::hint::spin_loop();
            }
            Ok(Response {
                json: r#"{"ok":true}"#.into(),
                tensors: vec![],
            })
        }
        _ => {
            let json = match v.get("id") {
                Some(id) => serde_json::json!({ "ok": true, "id": id }).to_string(),
                None => r#"{"ok":true}"#.into(),
            };
            Ok(Response {
                json,
                tensors: vec![],
            })
        }
    }
}

skill_sdk::export_skill!(Hostile);
