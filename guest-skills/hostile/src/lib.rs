//! Test-only skill that misbehaves on purpose, to exercise the sandbox.
//!
//! Each request `{"do": "..."}` picks a behaviour: `loop` (never returns),
//! `memory` (allocates without bound), `huge-graph` (asks for a 10^12-element
//! tensor), `unknown-op` (sends an operation outside the host's op set),
//! `unknown-weight` (names a weight the model lacks), `trap` (panics),
//! `spin` (busy-waits `ms` milliseconds, at most 1000: a slow request for
//! queueing tests), `files` / `network` / `env` (try to read files, open
//! sockets, read the environment; answer `{"denied": ...}` when the sandbox
//! refused all of it), `pipeline` (submits runs of a counter graph ahead of
//! collecting them, and misuses `collect`/`run`; answers what it saw), `ok` (answers `{"ok": true}`, echoing `id` when given).
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
            // Small on purpose: the memory bomb must stop at 32 MiB, the
            // skill's own limit, below any ceiling (tests/sandbox.rs).
            limits: Some(skill_sdk::ResourceNeeds {
                memory_mib: Some(32),
                fuel_per_call: None,
            }),
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
    let what = match v.get("do") {
        None => "ok".to_string(),
        Some(serde_json::Value::String(d)) => d.clone(),
        Some(other) => {
            return Err(Error::InvalidRequest(format!(
                "`do` must be a string, got {other}"
            )))
        }
    };
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
        "pipeline" => pipeline(),
        "files" => {
            // No preopened directories: every path is out of reach.
            let leaks: Vec<String> = ["/", ".", "/etc/hostname", "/proc/self/environ"]
                .iter()
                .filter(|p| std::fs::metadata(p).is_ok() || std::fs::read_dir(p).is_ok())
                .map(|p| p.to_string())
                .collect();
            denied("files", leaks)
        }
        "network" => {
            // The WASI context allows no socket address (nor name lookups).
            let leaks: Vec<String> = ["127.0.0.1:80", "10.0.0.1:443"]
                .iter()
                .filter(|a| {
                    a.parse::<std::net::SocketAddr>().is_ok_and(|addr| {
                        std::net::TcpStream::connect_timeout(
                            &addr,
                            std::time::Duration::from_millis(200),
                        )
                        .is_ok()
                    })
                })
                .map(|a| a.to_string())
                .collect();
            denied("network", leaks)
        }
        "env" => {
            let leaks: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
            denied("env", leaks)
        }
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

/// `{"denied": WHAT}` when nothing leaked, else an `internal` error
/// naming what the sandbox let through.
fn denied(what: &str, leaks: Vec<String>) -> Result<Response, Error> {
    if leaks.is_empty() {
        Ok(Response {
            json: serde_json::json!({ "denied": what }).to_string(),
            tensors: vec![],
        })
    } else {
        Err(Error::Internal(format!("sandbox leak ({what}): {leaks:?}")))
    }
}

/// A session counter `n` (+1 per run, output `n`): four runs submitted
/// before any is collected must still see each other's state in order;
/// a fifth submit, `run` while runs wait and `collect` with nothing
/// waiting are errors, whose kinds are reported.
fn pipeline() -> Result<Response, Error> {
    use skill_sdk::runtime::{compile, Session};
    let b = Builder::new("counter");
    let n = b.state("n", Dtype::F32, &[Dim::Fixed(1)])?;
    let one = b.scalar(1.0, Dtype::F32)?;
    let next = b.binary(skill_sdk::graph::BinaryOp::Add, n, one)?;
    b.update_state("n", next)?;
    b.output("n", next)?;
    let g = compile(b)?;
    let s = Session::new();
    let kind = |r: Result<(), Error>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => {
            let debug = format!("{e:?}");
            let name = debug.split('(').next().unwrap_or("");
            name.trim_start_matches("Error::").to_string()
        }
    };
    let mut submits = Vec::new();
    for _ in 0..5 {
        submits.push(kind(s.submit(&g, &[])));
    }
    let run_while_pending = kind(s.run(&g, &[]).map(|_| ()));
    let mut values = Vec::new();
    for _ in 0..4 {
        let out = s.collect()?;
        let v = out
            .first()
            .map(|o| o.value.data.clone())
            .unwrap_or_default();
        let v: [u8; 4] = v.get(..4).and_then(|b| b.try_into().ok()).unwrap_or([0; 4]);
        values.push(f32::from_le_bytes(v));
    }
    let empty_collect = kind(s.collect().map(|_| ()));
    let json = serde_json::json!({
        "submits": submits,
        "run_while_pending": run_while_pending,
        "values": values,
        "empty_collect": empty_collect,
    });
    Ok(Response {
        json: json.to_string(),
        tensors: vec![],
    })
}

skill_sdk::export_skill!(Hostile);
